#include "node/evaluator.hpp"

#include <xxhash.h>

#include <algorithm>
#include <cmath>

namespace shoal::node {

evaluator::evaluator(evaluator_config cfg, std::vector<actors::tier_config> tiers)
  : cfg_(cfg), tiers_(std::move(tiers)), rng_(cfg.seed) {
  double lo = 1e300, hi = 0;
  for (const auto& t : tiers_) {
    lo = std::min(lo, std::max(t.params_m, 1e-9));
    hi = std::max(hi, std::max(t.params_m, 1e-9));
  }
  for (const auto& t : tiers_)
    ability_.push_back(hi > lo ? std::log(std::max(t.params_m, 1e-9) / lo) / std::log(hi / lo)
                               : 0.5);
}

double evaluator::difficulty(const std::string& domain) const {
  uint64_t h = XXH3_64bits_withSeed(domain.data(), domain.size(), cfg_.seed);
  double u = static_cast<double>(h >> 11) * 0x1.0p-53;
  return cfg_.difficulty_min + u * (cfg_.difficulty_max - cfg_.difficulty_min);
}

double evaluator::mean_quality(const std::string& domain, uint32_t tier) const {
  double d = difficulty(domain);
  return 1.0 / (1.0 + std::exp(-cfg_.slope * (ability_[tier] - d)));
}

double evaluator::expected_reward(const std::string& domain, uint32_t tier) const {
  return mean_quality(domain, tier) - tiers_[tier].cost;
}

std::pair<double, uint32_t> evaluator::oracle(const std::string& domain) const {
  std::pair<double, uint32_t> best{-1e300, 0};
  for (uint32_t t = 0; t < tiers_.size(); ++t)
    best = std::max(best, {expected_reward(domain, t), t},
                    [](auto& a, auto& b) { return a.first < b.first; });
  return best;
}

double evaluator::draw_quality(const std::string& domain, uint32_t tier) {
  double mu = std::clamp(mean_quality(domain, tier), 1e-6, 1 - 1e-6);
  std::gamma_distribution<double> ga(mu * cfg_.concentration, 1.0);
  std::gamma_distribution<double> gb((1 - mu) * cfg_.concentration, 1.0);
  double x = ga(rng_), y = gb(rng_);
  double q = x / (x + y);
  return std::isfinite(q) ? std::clamp(q, 0.0, 1.0) : mu;
}

} // namespace shoal::node
