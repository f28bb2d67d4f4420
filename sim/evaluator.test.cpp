#include "sim/evaluator.hpp"

#include "learn/router_v2.hpp"
#include "router/pattern_bank.hpp"

#include <doctest/doctest.h>

using namespace shoal::sim;
namespace router = shoal::router;

TEST_CASE("the evaluator is seeded, and bigger tiers do better on harder domains") {
  router::router_config rc;
  rc.tiers = router::demo_tiers();
  evaluator a({}, profiles_of(rc.tiers)), b({}, profiles_of(rc.tiers));
  CHECK(a.difficulty("libs") == b.difficulty("libs"));
  CHECK(a.draw_quality("libs", 2) == b.draw_quality("libs", 2));
  evaluator_config other;
  other.seed = 7;
  CHECK(evaluator(other, profiles_of(rc.tiers)).difficulty("libs") != a.difficulty("libs"));
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
  router::router_config rc;
  rc.tiers = router::demo_tiers();
  evaluator e({}, profiles_of(rc.tiers));
  double sum = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i)
    sum += e.draw_quality("games", 1);
  CHECK(sum / n == doctest::Approx(e.mean_quality("games", 1)).epsilon(0.02));
}

TEST_CASE("latency budgets: the given share of requests, log-uniform in range, fixed by seed") {
  latency_budgets b;
  b.share = 0.4;
  b.min_ms = 100;
  b.max_ms = 10000;
  int with = 0, below_1s = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    double ms = latency_budget(b, 7, i);
    CHECK(ms == latency_budget(b, 7, i));
    if (ms == 0)
      continue;
    ++with;
    CHECK(ms >= 100);
    CHECK(ms <= 10000);
    below_1s += ms < 1000;
  }
  CHECK(with == doctest::Approx(0.4 * n).epsilon(0.05));
  CHECK(below_1s == doctest::Approx(0.5 * with).epsilon(0.05)); // 1 s is the log midpoint
  CHECK(latency_budget({}, 7, 3) == 0);                         // share 0: no budgets
}

TEST_CASE("a latency budget cuts the answers of tiers that overrun it") {
  router::router_config rc;
  rc.tiers = router::demo_tiers();
  evaluator plain({}, profiles_of(rc.tiers));
  evaluator_config c;
  c.largest_ms_per_token = 20;
  evaluator timed(c, profiles_of(rc.tiers));
  // Without a budget, or without a latency model, nothing changes.
  for (uint32_t t = 0; t < 4; ++t) {
    CHECK(timed.mean_quality("games", t) == plain.mean_quality("games", t));
    CHECK(plain.mean_quality("games", t, 10) == plain.mean_quality("games", t));
    CHECK(plain.latency_ms("games", t) == 0);
  }
  const double n = timed.answer_tokens("games");
  CHECK(n >= c.answer_tokens_min);
  CHECK(n <= c.answer_tokens_max);
  CHECK(timed.latency_ms("games", 3) == doctest::Approx(20 * n));
  CHECK(timed.latency_ms("games", 2) == doctest::Approx(20 * n * 110 / 260));
  // A budget of half the largest tier's time halves its mean quality; a
  // budget it meets leaves it alone.
  const double lat = timed.latency_ms("games", 3);
  CHECK(timed.mean_quality("games", 3, lat / 2)
        == doctest::Approx(timed.mean_quality("games", 3) / 2));
  CHECK(timed.mean_quality("games", 3, lat) == timed.mean_quality("games", 3));
  // Under a budget only the two smallest tiers meet, the oracle takes one of them.
  auto [best, tier] = timed.oracle("games", timed.latency_ms("games", 1));
  CHECK(tier <= 1);
  CHECK(best
        == doctest::Approx(timed.expected_reward("games", tier, timed.latency_ms("games", 1))));
  // Draws follow the cut mean.
  double sum = 0;
  for (int i = 0; i < 20000; ++i)
    sum += timed.draw_quality("games", 3, lat / 4);
  CHECK(sum / 20000 == doctest::Approx(timed.mean_quality("games", 3, lat / 4)).epsilon(0.03));
}

TEST_CASE("the oracle's sampling grid is router v2's") {
  evaluator_config c;
  CHECK(c.grid_temperatures
        == std::vector<double>(shoal::learn::sampling_temperatures.begin(),
                               shoal::learn::sampling_temperatures.end()));
  CHECK(c.grid_top_ps
        == std::vector<double>(shoal::learn::sampling_top_ps.begin(),
                               shoal::learn::sampling_top_ps.end()));
}
