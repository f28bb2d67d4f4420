#include "sim/evaluator.hpp"

#include <xxhash.h>

#include <algorithm>
#include <cmath>

namespace shoal::sim {

evaluator::evaluator(evaluator_config cfg, std::vector<tier_profile> tiers)
  : cfg_(cfg), tiers_(std::move(tiers)), rng_(cfg.seed), length_rng_(cfg.seed ^ 0x6c656e677468ull) {
  double lo = 1e300, hi = 0;
  for (const auto& t : tiers_) {
    lo = std::min(lo, std::max(t.params_m, 1e-9));
    hi = std::max(hi, std::max(t.params_m, 1e-9));
  }
  for (const auto& t : tiers_) {
    ability_.push_back(hi > lo ? std::log(std::max(t.params_m, 1e-9) / lo) / std::log(hi / lo)
                               : 0.5);
    ms_per_token_.push_back(cfg_.largest_ms_per_token * std::max(t.params_m, 1e-9) / hi);
  }
}

namespace {

/// A uniform draw in [0, 1) fixed by (seed, domain).
double domain_uniform(const std::string& domain, uint64_t seed) {
  uint64_t h = XXH3_64bits_withSeed(domain.data(), domain.size(), seed);
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

} // namespace

double latency_budget(const latency_budgets& b, uint64_t seed, uint64_t i) {
  if (!(b.share > 0))
    return 0;
  const uint64_t key[2] = {i, 0x6c6174656e6379ull}; // "latency"
  uint64_t h1 = XXH3_64bits_withSeed(key, sizeof key, seed);
  uint64_t h2 = XXH3_64bits_withSeed(&h1, sizeof h1, seed);
  double u1 = static_cast<double>(h1 >> 11) * 0x1.0p-53;
  double u2 = static_cast<double>(h2 >> 11) * 0x1.0p-53;
  if (u1 >= b.share)
    return 0;
  const double lo = std::log(b.min_ms), hi = std::log(std::max(b.min_ms, b.max_ms));
  return std::exp(lo + u2 * (hi - lo));
}

double evaluator::difficulty(const std::string& domain) const {
  double u = domain_uniform(domain, cfg_.seed);
  return cfg_.difficulty_min + u * (cfg_.difficulty_max - cfg_.difficulty_min);
}

double evaluator::answer_tokens(const std::string& domain) const {
  // A second hash of the domain (salted seed): independent of the difficulty.
  double u = domain_uniform(domain, cfg_.seed ^ 0x9e3779b97f4a7c15ull);
  return cfg_.answer_tokens_min + u * (cfg_.answer_tokens_max - cfg_.answer_tokens_min);
}

double evaluator::latency_ms(const std::string& domain, uint32_t tier) const {
  return ms_per_token_[tier] > 0 ? answer_tokens(domain) * ms_per_token_[tier] : 0;
}

std::pair<double, double> evaluator::best_sampling(const std::string& domain) const {
  // Third and fourth hashes of the domain: independent of d and n(d).
  double ut = domain_uniform(domain, cfg_.seed ^ 0x74656d70ull);
  double up = domain_uniform(domain, cfg_.seed ^ 0x746f7070ull);
  return {0.2 + 0.8 * ut, 0.8 + 0.2 * up};
}

double evaluator::sampling_factor(const std::string& domain, double temperature,
                                  double top_p) const {
  if (!(cfg_.sampling_sensitivity > 0))
    return 1;
  const auto [t_best, p_best] = best_sampling(domain);
  const double dt = ((temperature < 0 ? 1.0 : temperature) - t_best) / 0.4;
  const double dp = ((top_p < 0 ? 1.0 : top_p) - p_best) / 0.1;
  return std::exp(-cfg_.sampling_sensitivity * (dt * dt + dp * dp));
}

double evaluator::mean_quality(const std::string& domain, uint32_t tier, double budget_ms,
                               double temperature, double top_p) const {
  double d = difficulty(domain);
  double mu = 1.0 / (1.0 + std::exp(-cfg_.slope * (ability_[tier] - d)));
  double lat = latency_ms(domain, tier);
  if (budget_ms > 0 && lat > budget_ms)
    mu *= budget_ms / lat; // the answer is cut at the budget
  return mu * sampling_factor(domain, temperature, top_p);
}

double evaluator::expected_reward(const std::string& domain, uint32_t tier, double budget_ms,
                                  double temperature, double top_p) const {
  return mean_quality(domain, tier, budget_ms, temperature, top_p) - tiers_[tier].cost;
}

std::pair<double, uint32_t> evaluator::oracle(const std::string& domain, double budget_ms) const {
  // The factor does not depend on the tier: the best grid sampling is best for all.
  double f = 0, t_best = -1, p_best = -1;
  if (cfg_.sampling_sensitivity > 0)
    for (double t : cfg_.grid_temperatures)
      for (double p : cfg_.grid_top_ps)
        if (double g = sampling_factor(domain, t, p); g > f) {
          f = g;
          t_best = t;
          p_best = p;
        }
  std::pair<double, uint32_t> best{-1e300, 0};
  for (uint32_t t = 0; t < tiers_.size(); ++t)
    best = std::max(best, {expected_reward(domain, t, budget_ms, t_best, p_best), t},
                    [](auto& a, auto& b) { return a.first < b.first; });
  return best;
}

uint32_t evaluator::draw_completion_tokens(const std::string& domain) {
  std::normal_distribution<double> z(0.0, 1.0);
  return static_cast<uint32_t>(
    std::max(1.0, std::round(answer_tokens(domain) * std::exp(0.3 * z(length_rng_)))));
}

double evaluator::draw_quality(const std::string& domain, uint32_t tier, double budget_ms,
                               double temperature, double top_p) {
  double mu = std::clamp(mean_quality(domain, tier, budget_ms, temperature, top_p), 1e-6, 1 - 1e-6);
  std::gamma_distribution<double> ga(mu * cfg_.concentration, 1.0);
  std::gamma_distribution<double> gb((1 - mu) * cfg_.concentration, 1.0);
  double x = ga(rng_), y = gb(rng_);
  double q = x / (x + y);
  return std::isfinite(q) ? std::clamp(q, 0.0, 1.0) : mu;
}

} // namespace shoal::sim
