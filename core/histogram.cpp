#include "core/histogram.hpp"

#include <algorithm>
#include <cmath>

namespace shoal::core {

double latency_histogram::upper_edge(size_t i) noexcept {
  return min_ns * std::exp2(static_cast<double>(i + 1) / 8.0);
}

void latency_histogram::observe(uint64_t ns) noexcept {
  size_t i = 0;
  if (static_cast<double>(ns) > min_ns)
    i = static_cast<size_t>(std::ceil(8.0 * std::log2(static_cast<double>(ns) / min_ns))) - 1;
  i = std::min(i, n_buckets - 1);
  // Guard rounding at bucket edges.
  while (i + 1 < n_buckets && static_cast<double>(ns) > upper_edge(i))
    ++i;
  ++buckets_[i];
  ++count_;
  sum_ns_ += static_cast<double>(ns);
}

double latency_histogram::quantile(double q) const noexcept {
  if (count_ == 0)
    return 0;
  auto rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_)));
  rank = std::clamp<uint64_t>(rank, 1, count_);
  uint64_t seen = 0;
  for (size_t i = 0; i < n_buckets; ++i) {
    seen += buckets_[i];
    if (seen >= rank)
      return upper_edge(i);
  }
  return upper_edge(n_buckets - 1);
}

latency_histogram latency_histogram::since(const latency_histogram& earlier) const noexcept {
  latency_histogram d;
  for (size_t i = 0; i < n_buckets; ++i)
    d.buckets_[i] = buckets_[i] - std::min(buckets_[i], earlier.buckets_[i]);
  d.count_ = count_ - std::min(count_, earlier.count_);
  d.sum_ns_ = sum_ns_ - earlier.sum_ns_;
  return d;
}

uint64_t latency_histogram::cumulative_le(double le_ns) const noexcept {
  uint64_t c = 0;
  for (size_t i = 0; i < n_buckets && upper_edge(i) <= le_ns * 1.0000001; ++i)
    c += buckets_[i];
  return c;
}

} // namespace shoal::core
