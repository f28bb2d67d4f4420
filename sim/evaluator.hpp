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
///   - latency (optional, off by default): every domain also has a hidden
///     answer length n(d) in [answer_tokens_min, answer_tokens_max] tokens
///     (hashed like d); tier t decodes at ms_per_token_t = largest_ms_per_token
///     * params_t / params_max, so it answers in lat(d, t) = n(d) *
///     ms_per_token_t ms. A request with a latency budget b ms (0 = none)
///     that tier t overruns gets an answer cut at the budget: its mean quality
///     is mu(d, t) * min(1, b / lat(d, t)). Without budgets, or with
///     largest_ms_per_token = 0, nothing changes;
///   - sampling (optional, off by default): every domain also has a hidden
///     best temperature T*(d) in [0.2, 1] and top-p P*(d) in [0.8, 1] (hashed
///     like d); an answer sampled at (T, P) — OpenAI's defaults (1, 1) when
///     the request leaves them — has its mean quality multiplied by
///     f = exp(-s * (((T - T*) / 0.4)^2 + ((P - P*) / 0.1)^2)), s =
///     sampling_sensitivity. With s = 0 sampling changes nothing;
///   - completion length: a request's answer takes n(d) * exp(0.3 z) tokens,
///     z standard normal (draw_completion_tokens; its own random stream, so
///     drawing lengths leaves the quality draws as they were);
///   - reward = quality - cost_t; the oracle knows d (and n(d), T*, P*) and
///     picks argmax_t mu(d, t, b) - cost_t with the best sampling of the
///     router's grid (evaluator_config::grid_temperatures, grid_top_ps:
///     router v2's learn::sampling_temperatures, sampling_top_ps), so its
///     expected reward per request is max_t mu(d, t, b) f* - cost_t.
/// Deterministic for a given seed and sequence of calls; not thread-safe.

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace shoal::sim {

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
  /// Decode time per output token of the largest tier, ms; smaller tiers
  /// scale by their size. Default: 0 (no latency model: budgets are ignored).
  double largest_ms_per_token = 0;
  /// Range of the hidden answer length per domain, tokens. Default: [50, 500].
  double answer_tokens_min = 50;
  double answer_tokens_max = 500;
  /// How much sampling away from a domain's best temperature and top-p
  /// costs (s above). Default: 0 (sampling does not matter).
  double sampling_sensitivity = 0;
  /// The sampling grid the oracle chooses from: router v2's
  /// (learn::sampling_temperatures, sampling_top_ps; sim/evaluator.test.cpp
  /// checks they agree).
  std::vector<double> grid_temperatures{0.2, 0.5, 0.8, 1.0};
  std::vector<double> grid_top_ps{0.8, 0.9, 0.95, 1.0};
};

/// What the evaluator knows of a tier.
struct tier_profile {
  std::string name;
  double cost = 0;     ///< subtracted from quality; [0, 1]
  double params_m = 0; ///< model size, millions of parameters (sets its ability)
};

/// Profiles of any range of tier descriptions with `name`, `cost` and
/// `params_m` (e.g. router::tier_config).
template <class Range>
std::vector<tier_profile> profiles_of(const Range& tiers) {
  std::vector<tier_profile> out;
  for (const auto& t : tiers)
    out.push_back({t.name, t.cost, t.params_m});
  return out;
}

/// How a replay gives its requests latency budgets (for the latency model).
struct latency_budgets {
  /// Share of requests with a budget. Default: 0 (none).
  double share = 0;
  /// Budgets are log-uniform in [min_ms, max_ms]. Default: [300, 10000].
  double min_ms = 300, max_ms = 10000;
};

/// The latency budget of request `i`, ms (0: none): with probability
/// b.share, log-uniform in [b.min_ms, b.max_ms]. A pure function of
/// (seed, i), so every run and every router sees the same budgets.
double latency_budget(const latency_budgets& b, uint64_t seed, uint64_t i);

class evaluator {
public:
  evaluator(evaluator_config cfg, std::vector<tier_profile> tiers);

  /// Hidden difficulty of a domain.
  double difficulty(const std::string& domain) const;

  /// Hidden answer length of a domain, tokens.
  double answer_tokens(const std::string& domain) const;

  /// Time tier t takes to answer on a domain, ms (0 without a latency model).
  double latency_ms(const std::string& domain, uint32_t tier) const;

  /// Mean quality mu(d, t, b) of tier t on a domain under a latency budget
  /// of `budget_ms` (0: none), sampled at `temperature` and `top_p`
  /// (negative: left unset, OpenAI's default 1).
  double mean_quality(const std::string& domain, uint32_t tier, double budget_ms = 0,
                      double temperature = -1, double top_p = -1) const;

  /// Expected reward mu - cost of tier t on a domain (budget and sampling as above).
  double expected_reward(const std::string& domain, uint32_t tier, double budget_ms = 0,
                         double temperature = -1, double top_p = -1) const;

  /// The oracle's expected reward on a domain (budget as above; the best
  /// sampling of the grid), and its tier.
  std::pair<double, uint32_t> oracle(const std::string& domain, double budget_ms = 0) const;

  /// The sampling factor f(T, P) in (0, 1] of a domain (1 with sensitivity 0).
  double sampling_factor(const std::string& domain, double temperature, double top_p) const;
  /// The hidden best temperature and top-p of a domain.
  std::pair<double, double> best_sampling(const std::string& domain) const;

  /// Draws an observed quality in [0, 1] for tier t on a domain (budget and sampling as above).
  double draw_quality(const std::string& domain, uint32_t tier, double budget_ms = 0,
                      double temperature = -1, double top_p = -1);

  /// Draws the completion length of an answer on a domain, tokens (>= 1).
  uint32_t draw_completion_tokens(const std::string& domain);

  const std::vector<tier_profile>& tiers() const noexcept { return tiers_; }

private:
  evaluator_config cfg_;
  std::vector<tier_profile> tiers_;
  std::vector<double> ability_;
  std::vector<double> ms_per_token_;
  std::mt19937_64 rng_;
  std::mt19937_64 length_rng_; ///< completion lengths: apart from the quality draws
};

} // namespace shoal::sim
