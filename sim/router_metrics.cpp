#include "sim/router_metrics.hpp"

#include <algorithm>

namespace shoal::sim {

namespace {

/// Cross product of (b − a) × (c − a): > 0 when c is left of a→b.
double cross(const qc_point& a, const qc_point& b, const qc_point& c) {
  return (b.cost - a.cost) * (c.quality - a.quality) - (b.quality - a.quality) * (c.cost - a.cost);
}

/// ∫ of the hull over [a, b]: trapezoids between the vertices (exact, the
/// hull being piecewise linear).
double integrate(const std::vector<qc_point>& hull, double a, double b) {
  std::vector<double> xs = {a, b};
  for (const auto& p : hull)
    xs.push_back(p.cost);
  std::sort(xs.begin(), xs.end());
  double area = 0;
  double prev = a;
  for (double x : xs) {
    if (x <= a || x > b)
      continue;
    area += (x - prev) * (hull_quality(hull, prev) + hull_quality(hull, x)) / 2;
    prev = x;
  }
  if (prev < b)
    area += (b - prev) * (hull_quality(hull, prev) + hull_quality(hull, b)) / 2;
  return area;
}

} // namespace

std::vector<qc_point> upper_hull(std::vector<qc_point> points) {
  std::sort(points.begin(), points.end(), [](const qc_point& a, const qc_point& b) {
    return a.cost < b.cost || (a.cost == b.cost && a.quality > b.quality);
  });
  std::vector<qc_point> hull;
  for (const auto& p : points) {
    if (!hull.empty() && p.quality <= hull.back().quality)
      continue; // costs no less and is no better: dominated (non-decreasing hull)
    while (hull.size() >= 2 && cross(hull[hull.size() - 2], hull.back(), p) >= 0)
      hull.pop_back(); // the last vertex lies under the chord to p
    hull.push_back(p);
  }
  return hull;
}

double hull_quality(const std::vector<qc_point>& hull, double c) {
  if (hull.empty())
    return 0;
  if (c <= hull.front().cost)
    return hull.front().quality;
  for (size_t i = 1; i < hull.size(); ++i)
    if (c <= hull[i].cost) {
      const auto& a = hull[i - 1];
      const auto& b = hull[i];
      return a.quality + (c - a.cost) / (b.cost - a.cost) * (b.quality - a.quality);
    }
  return hull.back().quality;
}

double aiq(std::vector<qc_point> points, const qc_point& floor, double c_min, double c_max) {
  if (!(c_max > c_min))
    return 0;
  points.push_back(floor);
  return integrate(upper_hull(std::move(points)), c_min, c_max) / (c_max - c_min);
}

gap_recovery gap_recovered(std::vector<qc_point> points, const qc_point& weak,
                           const qc_point& strong) {
  gap_recovery g;
  const double span = strong.cost - weak.cost, gap = strong.quality - weak.quality;
  if (!(span > 0) || !(gap > 0))
    return g;
  points.push_back(weak);
  const auto hull = upper_hull(std::move(points));
  g.apgr = (integrate(hull, weak.cost, strong.cost) / span - weak.quality) / gap;
  // CPT: the hull is non-decreasing, so the first x reaching p is found by
  // bisection on [0, 1].
  auto pgr = [&](double x) {
    return (hull_quality(hull, weak.cost + x * span) - weak.quality) / gap;
  };
  auto cpt = [&](double p) -> std::optional<double> {
    if (pgr(1.0) < p)
      return std::nullopt;
    double lo = 0, hi = 1;
    for (int i = 0; i < 60; ++i) {
      const double mid = (lo + hi) / 2;
      (pgr(mid) >= p ? hi : lo) = mid;
    }
    return hi;
  };
  g.cpt50 = cpt(0.5);
  g.cpt80 = cpt(0.8);
  return g;
}

} // namespace shoal::sim
