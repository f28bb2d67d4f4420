#pragma once
/// @file How the field judges routers, on quality–cost points.
///
/// A router run at one cost weight λ gives one point (cost, quality): the
/// mean cost (ms per answer of the tiers it chose) and the mean quality of
/// its answers. Sweeping λ traces its curve. Following RouterBench (Hu et
/// al. 2024, arXiv 2403.12031, §3):
///   - a router's curve is the upper convex hull of its points made
///     non-decreasing (a router can always be mixed with its own cheaper
///     configurations, so any point under a chord is reachable);
///   - the Zero router is that hull over the fixed tiers' points: the best a
///     random mix of fixed models reaches without looking at the request;
///   - AIQ (average improvement in quality) = 1/(c_max − c_min) ∫ R̃(c) dc
///     over the fixed tiers' cost range [c_min, c_max], R̃ the hull of the
///     router's points and the cheapest tier's (every router can send a
///     share of requests to the cheapest tier without looking at them),
///     flat beyond its dearest point.
/// Following RouteLLM (Ong et al. 2024, arXiv 2406.18665, §5.1), with weak =
/// the cheapest tier and strong = the dearest:
///   - PGR(c) = (R̃(c) − q_weak) / (q_strong − q_weak), cost normalised to
///     x = (c − c_weak) / (c_strong − c_weak) in [0, 1] (RouteLLM's "share of
///     calls to the strong model", generalised to more than two tiers);
///   - APGR = ∫₀¹ PGR(x) dx; CPT(p) = the smallest x with PGR(x) ≥ p (nullopt
///     if the curve never reaches it).
/// Thread-safety: pure functions.

#include <optional>
#include <vector>

namespace shoal::sim {

/// One (cost, quality) point.
struct qc_point {
  double cost = 0;
  double quality = 0;
};

/// The non-decreasing upper convex hull of `points`, by rising cost: its
/// vertices. Empty for no points.
std::vector<qc_point> upper_hull(std::vector<qc_point> points);

/// The hull's quality at cost c: linear between vertices, flat before the
/// first and after the last (0 for an empty hull).
double hull_quality(const std::vector<qc_point>& hull, double c);

/// RouterBench's AIQ of a router's points over [c_min, c_max] (the fixed
/// tiers' range); `floor` is the cheapest tier's point. 0 if c_max <= c_min.
double aiq(std::vector<qc_point> points, const qc_point& floor, double c_min, double c_max);

/// RouteLLM's figures of a router's points between a weak and a strong tier.
struct gap_recovery {
  double apgr = 0;
  std::optional<double> cpt50, cpt80; ///< share of the weak→strong cost span, [0, 1]
};
gap_recovery gap_recovered(std::vector<qc_point> points, const qc_point& weak,
                           const qc_point& strong);

} // namespace shoal::sim
