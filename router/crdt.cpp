#include "router/crdt.hpp"

#include "core/error.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>

namespace shoal::router {

bool supersedes(const proto::contribution& a, const proto::contribution& b) noexcept {
  if (a.version != b.version)
    return a.version > b.version;
  auto key = [](const proto::tier_stat& t) {
    return std::make_tuple(t.count, t.sum_quality, t.sum_quality2);
  };
  return std::lexicographical_compare(
    b.tiers.begin(), b.tiers.end(), a.tiers.begin(), a.tiers.end(),
    [&](const auto& x, const auto& y) { return key(x) < key(y); });
}

bool join(std::vector<proto::contribution>& set, const proto::contribution& c) {
  auto it = std::lower_bound(set.begin(), set.end(), c.node,
                             [](const proto::contribution& x, uint64_t n) { return x.node < n; });
  if (it == set.end() || it->node != c.node) {
    set.insert(it, c);
    return true;
  }
  if (!supersedes(c, *it))
    return false;
  *it = c;
  return true;
}

bool join(std::vector<proto::contribution>& set, std::span<const proto::contribution> other) {
  bool changed = false;
  for (const auto& c : other)
    changed |= join(set, c);
  return changed;
}

core::error validate(const proto::contribution& c, size_t n_tiers) {
  if (c.version == 0)
    return core::error(errc::invalid_argument, "contribution has version 0");
  if (c.tiers.size() != n_tiers)
    return core::error(errc::invalid_argument, "contribution has " + std::to_string(c.tiers.size())
                                                 + " tiers, expected " + std::to_string(n_tiers));
  for (size_t t = 0; t < c.tiers.size(); ++t) {
    const auto& s = c.tiers[t];
    if (!std::isfinite(s.sum_quality) || !std::isfinite(s.sum_quality2))
      return core::error(errc::invalid_argument,
                         "tier " + std::to_string(t) + " has a non-finite sum");
    if (s.count > (uint64_t{1} << 53))
      return core::error(errc::invalid_argument,
                         "tier " + std::to_string(t) + " has an implausible count");
    double n = static_cast<double>(s.count);
    double tol = 1e-9 * (1 + n);
    if (s.sum_quality < -tol || s.sum_quality2 < -tol || s.sum_quality > n + tol
        || s.sum_quality2 > s.sum_quality + tol)
      return core::error(errc::invalid_argument,
                         "tier " + std::to_string(t)
                           + " has sums impossible for qualities in [0, 1]");
  }
  return {};
}

void add_tiers(std::vector<proto::tier_stat>& into, const std::vector<proto::tier_stat>& from) {
  for (size_t t = 0; t < into.size() && t < from.size(); ++t) {
    into[t].sum_quality += from[t].sum_quality;
    into[t].sum_quality2 += from[t].sum_quality2;
    into[t].count += from[t].count;
  }
}

void sub_tiers(std::vector<proto::tier_stat>& into, const std::vector<proto::tier_stat>& from) {
  for (size_t t = 0; t < into.size() && t < from.size(); ++t) {
    into[t].sum_quality -= from[t].sum_quality;
    into[t].sum_quality2 -= from[t].sum_quality2;
    into[t].count -= std::min(into[t].count, from[t].count);
  }
}

} // namespace shoal::router
