#pragma once
/// @file Helpers shared by the actors module's tests (not part of the library).

#include "router/pattern_bank.hpp"
#include "kernels/testing.hpp"
#include "kernels/vector.hpp"

#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace shoal::router::testing {

inline std::filesystem::path temp_dir(const char* name) {
  auto p = std::filesystem::temp_directory_path()
           / (std::string("shoal-") + name + "-" + std::to_string(std::random_device{}()));
  std::filesystem::remove_all(p);
  return p;
}

using kernels::testing::unit;

/// Router config where every random query founds its own pattern.
inline router_config fine_patterns() {
  router_config cfg;
  cfg.new_pattern_threshold = 0.99; // similarities are int8-approximate (±0.01)
  return cfg;
}

/// A context near `center`: center + noise, renormalised.
inline std::vector<float> jitter(const std::vector<float>& center, std::mt19937& rng,
                                 float amount) {
  auto v = center;
  std::normal_distribution<float> n(0, amount);
  for (auto& x : v)
    x += n(rng);
  kernels::normalize(v);
  return v;
}

/// A bank as one node of a federation sees it (tests): fine patterns, node
/// id and exploration seed `node_id`, changed contributions tracked.
inline core::result<std::unique_ptr<pattern_bank>>
open_replica(uint32_t dim, uint64_t node_id, std::shared_ptr<store::environment> env = nullptr) {
  auto cfg = fine_patterns();
  cfg.node_id = node_id;
  cfg.seed = node_id;
  auto b = pattern_bank::open(dim, cfg, std::move(env));
  if (b)
    (*b)->track_deltas(true);
  return b;
}

/// Hands every pending delta of `from` (node `from_id`) to `to` and indexes
/// what it merged.
inline core::result<merge_stats> ship_deltas(pattern_bank& from, uint64_t from_id, pattern_bank& to,
                                             int64_t now_ms) {
  auto d = from.take_deltas(1'000'000);
  auto r = to.merge(from_id, d, now_ms);
  if (!r)
    return r;
  if (auto err = to.index_pending())
    return err;
  return r;
}

} // namespace shoal::router::testing
