#include "router/policy.hpp"

#include <algorithm>
#include <cmath>

namespace shoal::router {

namespace {

/// Floor of the per-observation variance, so a few identical observations
/// do not make a posterior collapse.
constexpr double min_variance = 1e-4;

} // namespace

tier_posterior tier_evidence::posterior() const noexcept {
  double mean = s / n;
  double var = std::max(s2 / n - mean * mean, min_variance);
  return {mean, var / n};
}

routing_policy::routing_policy(policy_config cfg, std::vector<double> costs)
  : cfg_(cfg), costs_(std::move(costs)), ev_(costs_.size()), post_(costs_.size()) {}

void routing_policy::decide(std::span<const policy_neighbor> neighbors,
                            std::span<const proto::tier_stat> global, std::mt19937_64& rng,
                            policy_decision& out) {
  const size_t n_tiers = costs_.size();
  // Priors as pseudo-observations: uniform quality, and the bank-wide
  // distribution of each tier's quality.
  for (size_t t = 0; t < n_tiers; ++t) {
    ev_[t] = {cfg_.prior, cfg_.prior / 2, cfg_.prior / 3};
    if (t < global.size() && global[t].count > 0) {
      // At most as many pseudo-observations as were really observed: a tier
      // tried once must not look known.
      double n = static_cast<double>(global[t].count);
      ev_[t].add(std::min(cfg_.global_prior, n) / n, global[t]);
    }
  }
  out.evidence.assign(n_tiers, 0.0);
  const double sim_top =
    neighbors.empty() ? 1.0 : std::max(1e-6, double(neighbors.front().similarity));
  for (const auto& nb : neighbors) {
    if (nb.tiers == nullptr)
      continue;
    double w =
      std::pow(std::max(0.0, static_cast<double>(nb.similarity)) / sim_top, cfg_.similarity_power);
    for (size_t t = 0; t < n_tiers; ++t) {
      ev_[t].add(w, (*nb.tiers)[t]);
      out.evidence[t] += w * static_cast<double>((*nb.tiers)[t].count);
    }
  }
  for (size_t t = 0; t < n_tiers; ++t)
    post_[t] = ev_[t].posterior();
  out.tier = thompson_choose(post_, costs_, rng, cfg_.exploration);
  out.confidence = choice_confidence(post_, costs_, out.tier);
  out.expected_reward = post_[out.tier].mean - costs_[out.tier];
  out.mean_quality.resize(n_tiers);
  out.var_quality.resize(n_tiers);
  for (size_t t = 0; t < n_tiers; ++t) {
    out.mean_quality[t] = post_[t].mean;
    out.var_quality[t] = post_[t].variance;
  }
}

} // namespace shoal::router
