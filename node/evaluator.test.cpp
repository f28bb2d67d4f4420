#include "node/evaluator.hpp"

#include <doctest/doctest.h>

using namespace shoal::node;

TEST_CASE("the evaluator is seeded, and bigger tiers do better on harder domains") {
  shoal::actors::router_config rc;
  evaluator a({}, rc.tiers), b({}, rc.tiers);
  CHECK(a.difficulty("libs") == b.difficulty("libs"));
  CHECK(a.draw_quality("libs", 2) == b.draw_quality("libs", 2));
  evaluator_config other;
  other.seed = 7;
  CHECK(evaluator(other, rc.tiers).difficulty("libs") != a.difficulty("libs"));
  for (const char* d : {"libs", "games", "science", "devel"}) {
    for (uint32_t t = 1; t < 4; ++t)
      CHECK(a.mean_quality(d, t) > a.mean_quality(d, t - 1));
    auto [best, tier] = a.oracle(d);
    for (uint32_t t = 0; t < 4; ++t)
      CHECK(a.expected_reward(d, t) <= best);
    double q = a.draw_quality(d, tier);
    CHECK(q >= 0);
    CHECK(q <= 1);
  }
}

TEST_CASE("quality draws average to the model's mean quality") {
  shoal::actors::router_config rc;
  evaluator e({}, rc.tiers);
  double sum = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i)
    sum += e.draw_quality("games", 1);
  CHECK(sum / n == doctest::Approx(e.mean_quality("games", 1)).epsilon(0.02));
}
