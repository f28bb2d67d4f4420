#include "kernels/bandit.hpp"

#include <doctest/doctest.h>

#include <vector>

using namespace shoal::kernels;

TEST_CASE("thompson_choose prefers the tier with the best expected reward") {
  std::mt19937_64 rng(3);
  std::vector<tier_posterior> post{{0.1, 0.001}, {0.9, 0.0001}, {0.95, 0.0005}};
  std::vector<double> costs{0.0, 0.0, 0.2};
  int wins[3] = {};
  for (int i = 0; i < 1000; ++i)
    ++wins[thompson_choose(post, costs, rng)];
  CHECK(wins[1] > 950);
  CHECK(choice_confidence(post, costs, 1) > 0.99);
  CHECK(choice_confidence(post, costs, 0) < 0.01);
}

TEST_CASE("two equal posteriors split the choice and each has confidence one half") {
  std::mt19937_64 rng(5);
  std::vector<tier_posterior> post{{0.5, 0.01}, {0.5, 0.01}};
  std::vector<double> costs{0.0, 0.0};
  int wins[2] = {};
  for (int i = 0; i < 2000; ++i)
    ++wins[thompson_choose(post, costs, rng)];
  CHECK(wins[0] > 850);
  CHECK(wins[1] > 850);
  CHECK(choice_confidence(post, costs, 0) == doctest::Approx(0.5));
  // Greedy (scale 0) with zero variance: the cost decides.
  std::vector<tier_posterior> sure{{0.6, 0.0}, {0.7, 0.0}};
  std::vector<double> cost2{0.0, 0.2};
  CHECK(thompson_choose(sure, cost2, rng, 0) == 0);
  CHECK(choice_confidence(sure, cost2, 0) == 1.0);
  CHECK(choice_confidence(sure, cost2, 1) == 0.0);
}
