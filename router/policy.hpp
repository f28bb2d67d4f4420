#pragma once
/// @file Router v1's routing policy, pure: pools the quality observations of
/// a query's neighbouring patterns into a posterior per tier and chooses a
/// tier by Thompson sampling (kernels/bandit.hpp). The pattern bank finds
/// the neighbours; this decides.
///
/// Model (Gaussian posteriors of each tier's expected quality):
///   - priors as pseudo-observations: `prior` observations of a uniform
///     quality (mean 1/2, variance 1/12), and up to `global_prior`
///     observations distributed like the tier's quality over the whole bank
///     (empirical Bayes; never more than were really observed);
///   - neighbour i (similarity s_i, nearest s_1) adds its observations with
///     weight w_i = (max(0, s_i) / s_1)^p, p = similarity_power: similarities
///     relative to the nearest neighbour's, so sparse regions of embedding
///     space still pool their neighbours' evidence;
///   - posterior of tier t: mean S_t/N_t, variance max(Q_t/N_t - mean², 1e-4)/N_t
///     over the pooled weighted count N, sum S and sum of squares Q;
///   - choice: argmax_t (draw_t - cost_t), draws scaled by `exploration`
///     (1: Thompson, 0: greedy), and the probability that it is the best.
///
/// Thread-safety: none (scratch buffers); one per owner thread.

#include "kernels/bandit.hpp"
#include "proto/records.hpp"

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace shoal::router {

using kernels::choice_confidence;
using kernels::thompson_choose;
using kernels::tier_posterior;

/// Pooled (weighted) quality observations of one tier.
struct tier_evidence {
  double n = 0;  ///< weighted count
  double s = 0;  ///< weighted sum of quality
  double s2 = 0; ///< weighted sum of squared quality

  void add(double w, const proto::tier_stat& x) noexcept {
    n += w * static_cast<double>(x.count);
    s += w * x.sum_quality;
    s2 += w * x.sum_quality2;
  }

  /// Posterior of the expected quality. @pre n > 0.
  tier_posterior posterior() const noexcept;
};

/// The policy's parameters (config keys router.prior, router.global_prior,
/// router.similarity_power, router.exploration; see the file comment).
struct policy_config {
  double prior = 1;
  double global_prior = 20;
  double similarity_power = 4;
  double exploration = 1;
};

/// One neighbouring pattern as the policy sees it.
struct policy_neighbor {
  float similarity = 0;                                 ///< cosine similarity to the query
  const std::vector<proto::tier_stat>* tiers = nullptr; ///< [n_tiers]; null: no statistics
};

/// What the policy decided for one query.
struct policy_decision {
  uint32_t tier = 0;          ///< the tier to serve
  double confidence = 0;      ///< P(tier is the best), normal approximation
  double expected_reward = 0; ///< posterior mean quality − cost of the tier
  /// Per tier [n_tiers], what the decision pooled (router v2 reads them):
  /// the posterior mean quality and its variance (neighbours and priors),
  /// and the neighbours' weighted observation count (priors excluded).
  std::vector<double> mean_quality, var_quality, evidence;
};

class routing_policy {
public:
  /// @param costs [n_tiers] each tier's cost, quality units.
  routing_policy(policy_config cfg, std::vector<double> costs);

  /// Decides for a query. @param neighbors nearest first (may be empty);
  /// @param global [n_tiers] the whole bank's statistics per tier;
  /// @param rng the owner's generator (Thompson draws). Fills `out`
  /// (its vectors are reused: no allocation once they have grown).
  void decide(std::span<const policy_neighbor> neighbors, std::span<const proto::tier_stat> global,
              std::mt19937_64& rng, policy_decision& out);

  const std::vector<double>& costs() const noexcept { return costs_; }
  size_t n_tiers() const noexcept { return costs_.size(); }

private:
  policy_config cfg_;
  std::vector<double> costs_;
  std::vector<tier_evidence> ev_;    // scratch
  std::vector<tier_posterior> post_; // scratch
};

} // namespace shoal::router
