#pragma once
/// @file The replay evaluator: a documented, seeded simulation of answer
/// quality, standing in for a judge of real model answers.
///
/// Model (all parameters in `evaluator_config`):
///   - every domain has a hidden difficulty d, drawn uniformly from
///     [difficulty_min, difficulty_max] by hashing (seed, domain name);
///   - tier t has an ability a_t = ln(params_t / params_min) / ln(params_max /
///     params_min) in [0, 1] (its size on a log scale; 0.5 when all are equal);
///   - the mean quality of tier t on difficulty d is
///     mu(d, t) = 1 / (1 + exp(-slope * (a_t - d)));
///   - an observed quality is drawn from Beta(mu * kappa, (1 - mu) * kappa),
///     kappa = concentration (mean mu, variance mu (1 - mu) / (kappa + 1));
///   - reward = quality - cost_t; the oracle knows d and picks
///     argmax_t mu(d, t) - cost_t, so its expected reward per domain is
///     max_t mu(d, t) - cost_t.
/// Deterministic for a given seed and sequence of calls; not thread-safe.

#include "actors/pattern_bank.hpp"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace shoal::node {

struct evaluator_config {
  /// Seed of domain difficulties and quality draws. Default: 42.
  uint64_t seed = 42;
  /// Range of hidden domain difficulty. Default: [-0.75, 0.75], where each of
  /// the four default tiers is the best choice for some domains.
  double difficulty_min = -0.75;
  double difficulty_max = 0.75;
  /// Steepness of mean quality in (ability - difficulty). Default: 6.
  double slope = 6;
  /// Beta concentration kappa of quality draws (higher = less noise). Default: 8.
  double concentration = 8;
};

class evaluator {
public:
  evaluator(evaluator_config cfg, std::vector<actors::tier_config> tiers);

  /// Hidden difficulty of a domain.
  double difficulty(const std::string& domain) const;

  /// Mean quality mu(d, t) of tier t on a domain.
  double mean_quality(const std::string& domain, uint32_t tier) const;

  /// Expected reward mu - cost of tier t on a domain.
  double expected_reward(const std::string& domain, uint32_t tier) const;

  /// The oracle's expected reward on a domain, and its tier.
  std::pair<double, uint32_t> oracle(const std::string& domain) const;

  /// Draws an observed quality in [0, 1] for tier t on a domain.
  double draw_quality(const std::string& domain, uint32_t tier);

  const std::vector<actors::tier_config>& tiers() const noexcept { return tiers_; }

private:
  evaluator_config cfg_;
  std::vector<actors::tier_config> tiers_;
  std::vector<double> ability_;
  std::mt19937_64 rng_;
};

} // namespace shoal::node
