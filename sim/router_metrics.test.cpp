#include "sim/router_metrics.hpp"

#include <doctest/doctest.h>

using namespace shoal::sim;

TEST_CASE("router metrics: the non-decreasing upper hull drops points under a chord or dominated") {
  auto h = upper_hull({{1, 1}, {2.5, 2}, {4, 3.4}, {2, 3}, {3, 3.5}});
  REQUIRE(h.size() == 3);
  CHECK(h[0].cost == 1);
  CHECK(h[1].cost == 2);
  CHECK(h[2].cost == 3); // (2.5, 2) under the chord, (4, 3.4) dearer and worse
  auto line = upper_hull({{1, 1}, {2, 2}, {3, 3}});
  CHECK(line.size() == 2); // a collinear middle point adds nothing
  CHECK(upper_hull({}).empty());
  CHECK(hull_quality(h, 0.5) == 1);                  // flat before the first vertex
  CHECK(hull_quality(h, 1.5) == doctest::Approx(2)); // on the chord (1,1)-(2,3)
  CHECK(hull_quality(h, 10) == 3.5);                 // flat after the last
}

TEST_CASE("router metrics: AIQ of the Zero router and of a router above it (RouterBench)") {
  const qc_point weak{0, 0}, strong{10, 1};
  // The Zero router: mixes of the two fixed tiers, the chord between them.
  CHECK(aiq({weak, strong}, weak, 0, 10) == doctest::Approx(0.5));
  // One point at (5, 0.8): the chord from the cheapest tier to it, then flat.
  CHECK(aiq({{5, 0.8}}, weak, 0, 10) == doctest::Approx((5 * 0.4 + 5 * 0.8) / 10));
  // A point under the Zero router's chord adds nothing to it.
  CHECK(aiq({weak, strong, {5, 0.3}}, weak, 0, 10) == doctest::Approx(0.5));
  CHECK(aiq({weak}, weak, 3, 3) == 0);
}

TEST_CASE("router metrics: APGR and CPT between the weak and the strong tier (RouteLLM)") {
  const qc_point weak{0, 0.2}, strong{10, 0.6};
  auto zero = gap_recovered({weak, strong}, weak, strong);
  CHECK(zero.apgr == doctest::Approx(0.5));
  REQUIRE(zero.cpt50);
  REQUIRE(zero.cpt80);
  CHECK(*zero.cpt50 == doctest::Approx(0.5));
  CHECK(*zero.cpt80 == doctest::Approx(0.8));
  // (5, 0.52) recovers 80% of the gap at half the cost: PGR = 1.6 x up to x = 0.5.
  auto r = gap_recovered({{5, 0.52}}, weak, strong);
  CHECK(r.apgr == doctest::Approx(0.6));
  CHECK(*r.cpt50 == doctest::Approx(0.3125));
  CHECK(*r.cpt80 == doctest::Approx(0.5));
  // A router that never recovers 80% has no CPT(80%).
  auto low = gap_recovered({{5, 0.44}}, weak, strong);
  CHECK(low.cpt50);
  CHECK_FALSE(low.cpt80);
}
