#pragma once
/// @file Log-bucketed latency histogram with bounded relative error, for
/// percentiles (p50/p90/p99/p999) and Prometheus histogram export.
///
/// Buckets are geometric with ratio 2^(1/8) (~9% wide) from 100 ns to ~1.7e3 s:
/// a reported percentile is the upper edge of its bucket, so it overstates the
/// true value by at most 9%. Not thread-safe (each owner keeps its own).

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace shoal::core {

class latency_histogram {
public:
  static constexpr size_t n_buckets = 8 * 34;
  static constexpr double min_ns = 100;

  /// Records one observation in nanoseconds.
  void observe(uint64_t ns) noexcept;

  /// The q-quantile in nanoseconds (q in [0, 1]); 0 when empty.
  double quantile(double q) const noexcept;

  uint64_t count() const noexcept { return count_; }
  /// Sum of observations, nanoseconds.
  double sum_ns() const noexcept { return sum_ns_; }

  /// Cumulative count of observations <= `le_ns` (bucket-resolution).
  uint64_t cumulative_le(double le_ns) const noexcept;

  /// The observations recorded since `earlier`, a snapshot of this
  /// histogram (for the distribution over an interval). @pre earlier is a
  /// past copy of *this.
  latency_histogram since(const latency_histogram& earlier) const noexcept;

  /// Upper edge of bucket i, ns.
  static double upper_edge(size_t i) noexcept;

private:
  std::array<uint64_t, n_buckets> buckets_{};
  uint64_t count_ = 0;
  double sum_ns_ = 0;
};

} // namespace shoal::core
