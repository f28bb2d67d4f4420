#include "router/policy.hpp"

#include <doctest/doctest.h>

using namespace shoal::router;
using shoal::proto::tier_stat;

namespace {

/// `n` observations of quality `q` (all equal).
tier_stat observed(uint64_t n, double q) {
  return {q * static_cast<double>(n), q * q * static_cast<double>(n), n};
}

policy_config greedy() {
  policy_config c;
  c.exploration = 0; // greedy on the posterior mean: deterministic
  return c;
}

} // namespace

TEST_CASE("policy: with nothing known, the priors decide and the cheapest tier wins") {
  routing_policy p(greedy(), {0.0, 0.1, 0.2});
  std::mt19937_64 rng(1);
  policy_decision d;
  std::vector<tier_stat> global(3);
  p.decide({}, global, rng, d);
  CHECK(d.tier == 0);
  for (size_t t = 0; t < 3; ++t) {
    CHECK(d.mean_quality[t] == doctest::Approx(0.5)); // uniform prior
    CHECK(d.evidence[t] == 0);
  }
  CHECK(d.expected_reward == doctest::Approx(0.5));
}

TEST_CASE("policy: neighbours' observations move the choice to the tier that earns most") {
  routing_policy p(greedy(), {0.0, 0.1, 0.2});
  std::mt19937_64 rng(2);
  std::vector<tier_stat> nearest{observed(20, 0.2), observed(20, 0.5), observed(20, 0.95)};
  std::vector<policy_neighbor> nb{{0.9f, &nearest}};
  std::vector<tier_stat> global(3);
  policy_decision d;
  p.decide(nb, global, rng, d);
  CHECK(d.tier == 2); // 0.95 - 0.2 beats 0.5 - 0.1 and 0.2 - 0
  CHECK(d.confidence > 0.99);
  CHECK(d.evidence[2] == doctest::Approx(20));
  CHECK(d.mean_quality[2] > 0.9);
  CHECK(d.expected_reward == doctest::Approx(d.mean_quality[2] - 0.2));
}

TEST_CASE("policy: far neighbours weigh (s / s_nearest)^p, unknown ones nothing") {
  policy_config c = greedy();
  c.similarity_power = 2;
  routing_policy p(c, {0.0, 0.0});
  std::mt19937_64 rng(3);
  std::vector<tier_stat> a{observed(10, 0.9), observed(0, 0)};
  std::vector<tier_stat> b{observed(10, 0.1), observed(0, 0)};
  std::vector<policy_neighbor> nb{{0.8f, &a}, {0.4f, &b}, {0.3f, nullptr}};
  std::vector<tier_stat> global(2);
  policy_decision d;
  p.decide(nb, global, rng, d);
  // weight of b: (0.4 / 0.8)^2 = 0.25.
  CHECK(d.evidence[0] == doctest::Approx(10 + 2.5));
  CHECK(d.evidence[1] == 0);
  // A negative similarity weighs nothing.
  std::vector<policy_neighbor> opposite{{0.8f, &a}, {-0.5f, &b}};
  p.decide(opposite, global, rng, d);
  CHECK(d.evidence[0] == doctest::Approx(10));
}

TEST_CASE("policy: the bank-wide prior counts at most what was observed") {
  policy_config c = greedy();
  c.prior = 1;
  c.global_prior = 20;
  routing_policy p(c, {0.0, 0.0});
  std::mt19937_64 rng(4);
  policy_decision d;
  // Tier 1 tried once with quality 1: the prior holds 1 pseudo-observation
  // of it, not 20 (mean (1/2 + 1) / 2), and the neighbourless decision
  // still favours it only mildly.
  std::vector<tier_stat> global{observed(100, 0.6), observed(1, 1.0)};
  p.decide({}, global, rng, d);
  CHECK(d.mean_quality[1] == doctest::Approx(0.75));
  // Tier 0's 100 observations give 20 pseudo-observations at 0.6.
  CHECK(d.mean_quality[0] == doctest::Approx((0.5 + 20 * 0.6) / 21));
  CHECK(d.tier == 1);
  CHECK(d.confidence < 0.9);
}

TEST_CASE("policy: Thompson draws explore, in proportion to the uncertainty") {
  routing_policy p({}, {0.0, 0.0}); // exploration 1
  std::mt19937_64 rng(5);
  std::vector<tier_stat> global(2);
  std::vector<tier_stat> unsure{observed(2, 0.55), observed(2, 0.45)};
  std::vector<tier_stat> sure{observed(500, 0.55), observed(500, 0.45)};
  int picks_unsure = 0, picks_sure = 0;
  policy_decision d;
  for (int i = 0; i < 1000; ++i) {
    std::vector<policy_neighbor> a{{1.0f, &unsure}}, b{{1.0f, &sure}};
    p.decide(a, global, rng, d);
    picks_unsure += d.tier == 1;
    p.decide(b, global, rng, d);
    picks_sure += d.tier == 1;
  }
  CHECK(picks_unsure > 100); // the worse-looking tier is still tried
  CHECK(picks_sure < 20);    // but not once the evidence is strong
}
