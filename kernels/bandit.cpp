#include "kernels/bandit.hpp"

#include <cmath>

namespace shoal::kernels {

namespace {

double normal_cdf(double z) {
  return 0.5 * std::erfc(-z / std::sqrt(2.0));
}

} // namespace

uint32_t thompson_choose(std::span<const tier_posterior> post, std::span<const double> costs,
                         std::mt19937_64& rng, double scale) {
  uint32_t best = 0;
  double best_score = -1e300;
  for (uint32_t t = 0; t < post.size(); ++t) {
    std::normal_distribution<double> draw(post[t].mean, scale * std::sqrt(post[t].variance));
    double s = draw(rng) - costs[t];
    if (s > best_score) {
      best_score = s;
      best = t;
    }
  }
  return best;
}

double choice_confidence(std::span<const tier_posterior> post, std::span<const double> costs,
                         uint32_t chosen) {
  double p = 1;
  double mc = post[chosen].mean - costs[chosen];
  for (uint32_t t = 0; t < post.size(); ++t) {
    if (t == chosen)
      continue;
    double d = mc - (post[t].mean - costs[t]);
    double sd = std::sqrt(post[chosen].variance + post[t].variance);
    p *= sd > 0 ? normal_cdf(d / sd) : (d >= 0 ? 1.0 : 0.0);
  }
  return p;
}

} // namespace shoal::kernels
