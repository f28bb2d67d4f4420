#pragma once
/// @file Bandit choices over per-arm normal posteriors: Thompson sampling
/// and the probability that a chosen arm is the best. Router v1 (the
/// pattern bank's policy) and router v2 (learn/) both decide with these.
///
/// Source: Thompson (1933); Russo et al., "A Tutorial on Thompson Sampling"
/// (2018), Gaussian posteriors. The confidence is the product of pairwise
/// normal probabilities, an approximation that ignores the correlation of
/// the comparisons (exact for two arms).
///
/// Thread-safety: pure functions; `thompson_choose` draws from the caller's
/// generator (one per thread).

#include <cstdint>
#include <random>
#include <span>

namespace shoal::kernels {

/// Posterior of one arm's (tier's) expected reward: normal with this mean
/// and variance (of the mean, not of single observations). The default is
/// the uniform prior's moments on [0, 1].
struct tier_posterior {
  double mean = 0.5;
  double variance = 1.0 / 12;
};

/// Thompson choice: the index of argmax_t (draw_t − cost_t), draw_t ~
/// N(mean_t, (scale·sd_t)²). @param post [n_arms]; @param costs [n_arms]
/// (same units as the means). @param scale multiplies each posterior's
/// standard deviation (1 = Thompson, 0 = greedy). @pre post non-empty,
/// costs.size() >= post.size().
uint32_t thompson_choose(std::span<const tier_posterior> post, std::span<const double> costs,
                         std::mt19937_64& rng, double scale = 1);

/// P(arm `chosen` has the highest mean − cost), the normal approximation
/// above; in [0, 1]. @pre chosen < post.size() <= costs.size().
double choice_confidence(std::span<const tier_posterior> post, std::span<const double> costs,
                         uint32_t chosen);

} // namespace shoal::kernels
