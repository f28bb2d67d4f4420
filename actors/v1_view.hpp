#pragma once
/// @file Router v1's route result (router/) as router v2 (learn/) reads it:
/// the one place the two modules' types meet.
///
/// Thread-safety: pure; the view points into `r`, which must outlive it.

#include "learn/router_v2.hpp"
#include "router/pattern_bank.hpp"

#include <algorithm>

namespace shoal::actors {

/// The view of `r` router v2 decides and learns from.
inline learn::router_v1_view v1_view(const router::route_result& r) {
  learn::router_v1_view v;
  v.tier = r.tier;
  v.confidence = r.confidence;
  for (size_t i = 0; i < std::min(v.neighbor_sims.size(), r.neighbors.size()); ++i)
    v.neighbor_sims[i] = r.neighbors[i].similarity;
  v.mean_quality = r.mean_quality;
  v.var_quality = r.var_quality;
  v.evidence = r.evidence;
  return v;
}

} // namespace shoal::actors
