#pragma once
/// @file Router v2's model (issue 7, first part: the model, its gradient and
/// its checkpoint; the learning loops and the actor wiring come next).
///
/// Per routing decision (one turn of a session):
///   e' = e + (α/r)·B·A·e                MicroLoRA on the query embedding
///                                       (the instant loop adapts A and B)
///   u  = [e'; extras]                   extras: the pattern bank's top-4
///                                       neighbour similarities, router v1's
///                                       posterior mean quality per tier and
///                                       log(1 + its evidence count)/4 per
///                                       tier, log(1 + prompt tokens)/8, the
///                                       latency budget and memory pressure
///                                       (both in [0, 1])
///   z  = P·u + b_p                      learned projection to n_x
///   h  = FastGRNN(z, h_prev)            over the turns of the session
///                                       (Kusupati et al., NeurIPS 2018; low-
///                                       rank W and U: kernels/learn.hpp)
///   q  = m + H·h + b_q                  predicted reward per tier: a learned
///                                       correction of m, router v1's
///                                       estimate (`neighbor_rewards`)
///   tier = argmax_t (q_t − cost_t);  confidence = softmax((q − cost)/τ)[tier]
///   δT = G_T·h + b_T,  δP = G_P·h + b_P  reward adjustment per temperature
///                                       and per top-p of the sampling grid
///                                       (sampling_temperatures, sampling_top_ps)
///   c  = softmax(C·[h; e'; ℓ] + b_c)    context bucket: the probability that
///                                       the request's prompt + completion
///                                       needs bucket k (context_buckets),
///                                       from the session state, the adapted
///                                       embedding and ℓ = log(1 + prompt
///                                       tokens)/8
/// Below `confidence_threshold` the caller falls back to router v1.
///
/// Training signal (contextual bandit: only the chosen arm's reward is
/// seen): the reward of tier a sampled at grid temperature i and top-p j is
/// modelled as r̂ = q_a + δT_i + δP_j (a sampling choice left to the client
/// drops its term), and L = w · (r̂ − r)² + β · CE(c, k*), with w =
/// min(1/π_b, w_max) the importance weight of the behaviour policy that made
/// the choice (trajectories collected by an earlier policy; π_b the joint
/// probability of tier and sampling) and k* the bucket the request's
/// observed tokens needed (the term drops when they are unknown). The
/// context target is seen whatever was chosen (full information): no weight.
/// The cross-entropy trains C and b_c only: carried into the shared layers
/// it pulled the representation the tier head reads towards answer lengths
/// (bench/sona_learning.cpp: with β = 1, v2 fell to 87% of the oracle for
/// a while in the default world). β = 1: the head's gradients are small
/// next to Adam's ε (router_v2_trainer_config::adam_eps), and with β = 0.1
/// it learned too slowly to beat the most frequent bucket in 4,000 requests.
///
/// All parameters live in one flat vector (EWC++ and checkpoints see one
/// vector): [A | Bᵀ | P | b_p | FastGRNN cell | H | b_q | G_T | b_T | G_P |
/// b_P | C | b_c], A and Bᵀ as kernels/learn.hpp's MicroLoRA layout ([r, E]
/// each).
///
/// Thread-safety: none (a model belongs to one thread; the background loop
/// trains a copy and swaps it in).

#include "core/error.hpp"
#include "kernels/bandit.hpp"
#include "kernels/learn.hpp"
#include "kernels/vector.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace shoal::learn {

/// The sampling grid router v2 chooses from when a request leaves
/// temperature or top_p to the node. Index 3 of each is OpenAI's default
/// (1, 1): what is served before the model learned otherwise.
inline constexpr std::array<double, 4> sampling_temperatures{0.2, 0.5, 0.8, 1.0};
inline constexpr std::array<double, 4> sampling_top_ps{0.8, 0.9, 0.95, 1.0};
inline constexpr uint8_t default_sampling_index = 3;
/// No sampling choice recorded (the client's value was off the grid, or unknown).
inline constexpr uint8_t no_choice = 0xff;
/// Context buckets, tokens (prompt + completion): bucket k holds requests
/// needing at most context_buckets[k]; the last also holds anything longer.
inline constexpr std::array<uint32_t, 8> context_buckets{256,  512,  1024,  2048,
                                                         4096, 8192, 16384, 32768};
/// The bucket of a request that needed `tokens` (prompt + completion).
uint8_t context_bucket_index(double tokens);
/// The grid index of a client's sampling value: the exact match (within
/// 1e-3), else no_choice.
uint8_t sampling_index(std::span<const double> grid, double value);

struct router_v2_config {
  uint32_t embed_dim = 384; ///< E, the hashing embedder's dimension
  uint32_t n_tiers = 4;
  uint32_t proj = 32;              ///< n_x, the cell's input size
  uint32_t hidden = 32;            ///< n_h
  uint32_t rank_w = 8, rank_u = 8; ///< FastGRNN's low ranks
  uint32_t lora_rank = 2;          ///< MicroLoRA rank (1-8)
  float lora_alpha = 2.0f;
  float temperature = 0.05f; ///< τ of the confidence softmax, reward units
  float max_importance = 20; ///< w_max
  uint64_t seed = 1;
};

/// A scoped MicroLoRA adapter (RuVector learning-wasm's scoped adapters):
/// one per scope — a category of the pattern bank (its k-means++ cluster at
/// the last deep run, pattern_bank::category) — blended with the model's
/// own adapter, the category-wide fallback:
///   e' = e + s·[(1 − w)·B A e + w·B_c A_c e],   w = min(steps / 10, 1),
/// so a scope with little feedback leans on the shared adapter. Scoped
/// adapters learn in the instant loop only (the background loop trains the
/// shared one). Layout as the model's: A and Bᵀ, [r, E] each.
struct scoped_adapter {
  std::vector<float> a, bt;
  uint64_t steps = 0; ///< instant steps taken in this scope
  float weight() const noexcept { return std::min(1.0f, static_cast<float>(steps) / 10.0f); }
  /// A new adapter of rank r over E: A small random (seeded by the scope), B = 0.
  static scoped_adapter make(uint32_t rank, uint32_t embed_dim, uint64_t seed);
};

/// Scope → adapter; the router reads an immutable snapshot (swapped in by SONA).
using scoped_adapters = std::unordered_map<uint32_t, scoped_adapter>;
inline constexpr uint32_t no_scope = 0xffff'ffffu;

/// Router v2's latency-budget input for a request's budget `budget_ms`
/// (0: none): min(1, budget_ms / max_ms) in (0, 1], 1 for none.
inline float latency_budget_input(double budget_ms, double max_ms) {
  return budget_ms > 0 && max_ms > 0 ? static_cast<float>(std::min(1.0, budget_ms / max_ms)) : 1.0f;
}

/// The inputs of one decision besides the recurrent state.
struct router_v2_input {
  std::span<const float> embedding;     ///< [E], L2-normalised
  std::span<const float> neighbor_sims; ///< up to 4, best first (missing: 0)
  /// [n_tiers] router v1's posterior mean quality per tier (pattern_bank::route_result::mean_quality); empty = 0
  std::span<const float> neighbor_rewards;
  float prompt_tokens = 0;
  float latency_budget = 1;  ///< [0, 1]: 1 = no constraint
  float memory_pressure = 0; ///< [0, 1]: used / limit of the memory budget
  /// [n_tiers] the neighbours' weighted observation count per tier
  /// (pattern_bank::route_result::evidence), fed as log(1 + n)/4; empty = 0
  std::span<const float> neighbor_counts;
  /// The request's scoped adapter (null: the shared adapter alone).
  const scoped_adapter* scope = nullptr;
};

/// What the backward needs from one forward.
struct router_v2_trace {
  std::vector<float> e, e2, u, z, h_prev, h, cell_cache,
    q;                       ///< e: the embedding, e2: after the adapter
  std::vector<float> scoped; ///< e + s·B_c A_c e of the scoped adapter (when one was blended)
  float scope_weight = 0;    ///< w of the blend; 0 without a scoped adapter
  std::vector<float> dt, dp; ///< δT, δP: reward adjustment per grid temperature, top-p
  std::vector<float> ctx;    ///< context bucket probabilities
};

/// What one decision led to: the arm taken, its reward, the probability the
/// behaviour policy gave that arm, and the request's observed context.
struct router_v2_outcome {
  uint32_t tier = 0;
  float reward = 0;
  float behaviour_prob = 1;        ///< π_b(tier, sampling): joint over what the router chose
  uint8_t temperature = no_choice; ///< index into sampling_temperatures
  uint8_t top_p = no_choice;       ///< index into sampling_top_ps
  float context_tokens = 0;        ///< prompt + completion tokens; 0: unknown
};

class router_v2_model {
public:
  static constexpr size_t n_neighbors = 4;
  explicit router_v2_model(router_v2_config cfg);

  const router_v2_config& config() const noexcept { return cfg_; }
  size_t n_extras() const noexcept { return n_neighbors + 2 * size_t{cfg_.n_tiers} + 3; }
  static constexpr size_t n_temperatures = sampling_temperatures.size();
  static constexpr size_t n_top_ps = sampling_top_ps.size();
  static constexpr size_t n_contexts = context_buckets.size();
  /// β: weight of the context head's cross-entropy in the loss.
  static constexpr float context_weight = 1.0f;
  /// Inputs of the context head: h, e' and ℓ.
  size_t context_inputs() const noexcept { return size_t{cfg_.hidden} + cfg_.embed_dim + 1; }
  size_t n_params() const noexcept { return theta_.size(); }
  std::span<float> params() noexcept { return theta_; }
  std::span<const float> params() const noexcept { return theta_; }
  size_t hidden() const noexcept { return cfg_.hidden; }

  /// q (predicted reward per tier) for one turn; `trace` receives what
  /// backward() needs, including h (the next turn's h_prev). Without
  /// `context`, the context head is skipped (trace.ctx empty): backward()
  /// then needs an outcome without context_tokens.
  /// @pre embedding of size E; h_prev of size hidden() (zeros for a new session).
  void forward(const router_v2_input& in, std::span<const float> h_prev, router_v2_trace& trace,
               bool context = true) const;
  /// Parameters before the context head: the only ones the reward r̂
  /// depends on (EWC++'s Fisher is zero beyond them).
  size_t n_reward_params() const noexcept { return off_c(); }

  /// The tier maximising q − cost, and its confidence.
  struct decision {
    uint32_t tier = 0;
    float confidence = 0;
  };
  decision decide(std::span<const float> q, std::span<const double> costs) const;

  /// r̂ = q_a + δT_i + δP_j of the traced forward for an outcome.
  static float predicted(const router_v2_trace& trace, const router_v2_outcome& o);

  /// The loss w·(r̂ − r)² + β·CE of the traced forward, its gradient ADDED
  /// to `grad` (size n_params(); one step of the recurrence: h_prev is
  /// treated as an input). Returns the loss.
  /// With `context_loss`, the β·CE part is also stored there.
  float backward(const router_v2_trace& trace, const router_v2_outcome& o, std::span<float> grad,
                 float* context_loss = nullptr) const;
  /// ADDS dq·∂r̂/∂θ of the traced forward to `grad`, plus the gradient of
  /// dctx·CE w.r.t. the context head when dctx > 0 and the context is
  /// known (backward's chain;
  /// with dq = 1, dctx = 0 the per-sample Jacobian row the Fisher is built
  /// from).
  void backprop(const router_v2_trace& trace, const router_v2_outcome& o, float dq,
                std::span<float> grad, float dctx = 0) const;

  /// The context head's prediction: the bucket with the highest probability.
  static uint8_t context_choice(const router_v2_trace& trace);

  /// The instant loop's step (per request, when its feedback arrives): the
  /// loss gradient is carried back to the adapted embedding e' only (heads,
  /// cell and projection stay fixed: the background loop trains them) and
  /// one SGD step moves BOTH MicroLoRA factors along it
  /// (kernels::micro_lora_update). Returns the loss before the step.
  /// With a scoped adapter blended in the forward (trace.scope_weight = w),
  /// the shared adapter moves by lr·(1 − w) and `scope` by lr·w (exact SGD
  /// on the blend), and scope->steps grows by one.
  float instant_step(const router_v2_trace& trace, const router_v2_outcome& o, float lr,
                     scoped_adapter* scope = nullptr);

  /// Layout version of params() that checkpoints record: 1 had the
  /// parameters up to b_q, 2 adds the sampling and context heads.
  static constexpr uint32_t checkpoint_version = 2;
  /// A model from a checkpoint's parts (config(), params() and
  /// checkpoint_version when it was saved; the stored format is proto's
  /// router_v2_checkpoint). A version-1 checkpoint restores with the later
  /// heads new: δ = 0, a uniform context distribution.
  /// Errors (corrupt_data): unknown version, sizes out of range, a
  /// parameter count the config and version do not give.
  static core::result<router_v2_model> restore(uint32_t version, const router_v2_config& cfg,
                                               std::span<const float> params);

private:
  size_t off_a() const noexcept { return 0; }
  size_t off_bt() const noexcept { return size_t{cfg_.lora_rank} * cfg_.embed_dim; }
  size_t off_p() const noexcept { return off_bt() + size_t{cfg_.lora_rank} * cfg_.embed_dim; }
  size_t n_u() const noexcept { return cfg_.embed_dim + n_extras(); }
  size_t off_bp() const noexcept { return off_p() + size_t{cfg_.proj} * n_u(); }
  size_t off_cell() const noexcept { return off_bp() + cfg_.proj; }
  size_t off_h() const noexcept { return off_cell() + cell_.n_params(); }
  size_t off_bq() const noexcept { return off_h() + size_t{cfg_.n_tiers} * cfg_.hidden; }
  size_t off_gt() const noexcept { return off_bq() + cfg_.n_tiers; }
  size_t off_bt_head() const noexcept { return off_gt() + n_temperatures * cfg_.hidden; }
  size_t off_gp() const noexcept { return off_bt_head() + n_temperatures; }
  size_t off_bp_head() const noexcept { return off_gp() + n_top_ps * cfg_.hidden; }
  size_t off_c() const noexcept { return off_bp_head() + n_top_ps; }
  size_t off_bc() const noexcept { return off_c() + n_contexts * context_inputs(); }
  size_t off_end() const noexcept { return off_bc() + n_contexts; }
  /// The gradient w.r.t. h of dq·r̂ (and dctx·CE), the heads' own gradients
  /// ADDED to g; returns dh in `dh`.
  void backprop_heads(const router_v2_trace& tr, const router_v2_outcome& o, float dq, float dctx,
                      float* g, std::vector<float>& dh) const;

  router_v2_config cfg_;
  kernels::fastgrnn_shape cell_;
  std::vector<float> theta_;
};

/// One recorded decision with its outcome: what the background loop trains on.
struct router_v2_trajectory {
  std::vector<float> embedding;        ///< [E]
  std::vector<float> neighbor_sims;    ///< ≤ 4
  std::vector<float> neighbor_rewards; ///< [n_tiers]
  std::vector<float> neighbor_counts;  ///< [n_tiers]
  float prompt_tokens = 0, latency_budget = 1, memory_pressure = 0;
  std::vector<float> h_prev;       ///< [hidden] the session state before the turn
  uint32_t scope = no_scope;       ///< the scoped adapter's scope (instant loop only)
  uint32_t tier = 0;               ///< the tier taken
  float reward = 0;                ///< the observed quality of the taken tier
  float behaviour_prob = 1;        ///< π_b(tier, sampling) of the policy that took it
  uint8_t temperature = no_choice; ///< grid index served (no_choice: off the grid)
  uint8_t top_p = no_choice;       ///< grid index served (no_choice: off the grid)
  float context_tokens = 0;        ///< prompt + completion tokens (0: not reported)

  router_v2_input input() const {
    return {embedding,      neighbor_sims,   neighbor_rewards, prompt_tokens,
            latency_budget, memory_pressure, neighbor_counts};
  }
  router_v2_outcome outcome() const {
    return {tier, reward, behaviour_prob, temperature, top_p, context_tokens};
  }
};

/// Router v1's decision for a query as router v2 reads it (the router actor
/// fills it from the pattern bank's route_result; actors/v1_view.hpp). The
/// spans point into the caller's result and must outlive this view.
struct router_v1_view {
  uint32_t tier = 0;     ///< v1's choice
  double confidence = 0; ///< P(v1's choice is the best tier)
  std::array<float, router_v2_model::n_neighbors> neighbor_sims{}; ///< best first, 0 = none
  std::span<const double> mean_quality; ///< [n_tiers] posterior mean quality
  std::span<const double> var_quality;  ///< [n_tiers] its variance
  std::span<const double> evidence;     ///< [n_tiers] pooled observation count (priors excluded)
};

/// Router v2's inputs taken from router v1's route of the same query.
struct router_v2_features {
  std::array<float, router_v2_model::n_neighbors> sims{}; ///< top neighbours' similarities
  std::vector<float> rewards;                             ///< [n_tiers] v1's posterior mean quality
  std::vector<float> counts; ///< [n_tiers] v1's pooled observation count
  void assign(const router_v1_view& r);
  router_v2_input input(std::span<const float> embedding, float prompt_tokens, float latency_budget,
                        float memory_pressure) const {
    return {embedding, sims, rewards, prompt_tokens, latency_budget, memory_pressure, counts};
  }
};

/// Router v2's sampling choice: per parameter, ε-greedy over the learned
/// adjustments (the greedy arm is the default (1, 1) until an adjustment
/// beats it, and stays the default while the model is untrained), with the
/// probability of each draw for importance weights. The caller keeps a
/// client's own value instead where the client set one.
struct router_v2_sampling {
  uint8_t temperature = default_sampling_index;
  uint8_t top_p = default_sampling_index;
  float prob_temperature = 1, prob_top_p = 1; ///< π_b of each draw
};
/// @param explore ε, clamped to [0, 1].
router_v2_sampling router_v2_sample(const router_v2_trace& tr, bool ready, float explore,
                                    std::mt19937_64& rng);

/// Router v2's decision for one query.
struct router_v2_choice {
  uint32_t tier = 0;        ///< the tier to serve
  double confidence = 0;    ///< P(tier is the best) under the posterior that chose it
  float behaviour_prob = 1; ///< π_b(tier) for importance weights (≥ 0.05)
  bool by_v2 = false;       ///< false: router v1's choice stood (fallback)
  uint32_t greedy_tier = 0; ///< argmax (q − cost): what the model alone prefers
};

/// Decides with a traced forward `tr` of `model` on the features of `r`:
/// Thompson sampling over v1's posteriors with their means replaced by v2's
/// predictions q (a corrected mean, v1's variance), so v2 explores where v1
/// is unsure and exploits what it learned. Falls back to v1's own choice
/// (r.tier) while `ready` is false (no background pass trained the model
/// yet) or when v2's confidence is below `threshold`.
/// @pre r.var_quality.size() == tr.q.size() == costs.size().
router_v2_choice router_v2_choose(const router_v1_view& r, const router_v2_trace& tr,
                                  std::span<const double> costs, bool ready, double threshold,
                                  std::mt19937_64& rng);

/// The background loop's trainer: mini-batch SGD on the importance-weighted
/// bandit loss with online EWC++ (Chaudhry et al. 2018): the Fisher is an
/// EMA of the mini-batches' mean (∂q_a/∂θ)² — the Fisher of the Gaussian
/// reward model, which unlike the squared loss gradient does not vanish as
/// a task is learned. A task boundary — at the start of a pass, the
/// trajectories new to it predicted `boundary_ratio` times worse
/// (unweighted squared error) than the model fitted the newest ones at the
/// end of the last pass, i.e. the data changed — moves the anchor θ* to the
/// weights learned so far and freezes their importance with it (online
/// EWC, Schwarz et al. 2018: F* ← γ_task·F* + F). The penalty
/// λ/2·Σ F*(θ − θ*)² then holds the weights that mattered for earlier tasks
/// near θ* while the running Fisher goes on to measure the new task
/// (kernels/learn.hpp: ewc_update_fisher, ewc_penalty, ewc_consolidate).
/// Trains its own copy; the caller swaps it in.
struct router_v2_trainer_config {
  /// Step size. With Adam (Kingma & Ba, 2015) the per-parameter step is
  /// lr·m̂/(√v̂ + ε); the moments persist across passes, like the Fisher.
  /// Without Adam: plain SGD, θ ← θ − lr·g.
  float lr = 0.01f;
  bool adam = true;
  /// Adam's ε is large on purpose: a parameter whose gradient stays below
  /// ε steps like SGD (lr/ε·g) instead of a full lr-sized normalised step,
  /// so weights the current task does not push do not random-walk away
  /// from what EWC++ protects. With ε = 1e-8 the EWC++ test's forgetting
  /// was not halved; with 1e-2 it is, and the learning benchmark's latency
  /// world is learned as fast (bench/sona_learning.cpp, --adam-eps).
  float beta1 = 0.9f, beta2 = 0.999f, adam_eps = 1e-2f;
  uint32_t batch = 32;
  uint32_t epochs = 1;
  bool ewc = true;
  float ewc_lambda = 10.0f;
  float fisher_gamma = 0.99f;
  uint32_t fisher_every = 4;    ///< the Fisher is estimated on every n-th sample
  float boundary_ratio = 1.5f;  ///< newest error / last fit error that marks a new task
  uint32_t boundary_warmup = 1; ///< passes before boundaries are looked for
  float task_gamma = 0.5f;      ///< γ_task: weight of older tasks' importance in F*
};

class router_v2_trainer {
public:
  router_v2_trainer(router_v2_model start, router_v2_trainer_config cfg);

  struct pass_stats {
    float mean_loss = 0;         ///< the reward loss w·(r̂ − r)² per trajectory
    float mean_context_loss = 0; ///< the context head's β·CE per trajectory
    float mean_penalty = 0;
    uint32_t batches = 0, boundaries = 0;
  };
  /// One pass (cfg.epochs epochs) over the trajectories, in order, oldest
  /// first; the last `n_new` of them arrived since the previous pass (by
  /// default all): the task-boundary test looks at (up to 1024 of the newest
  /// of) them. With n_new = 0 nothing is new: no boundary test, and the
  /// last fit stays the reference.
  pass_stats train(std::span<const router_v2_trajectory> data, size_t n_new = SIZE_MAX);
  /// Marks a task boundary now: θ* ← θ.
  void consolidate();

  const router_v2_model& model() const noexcept { return model_; }
  std::span<const float> fisher() const noexcept { return fisher_; }
  std::span<const float> anchor() const noexcept { return anchor_; }

private:
  router_v2_model model_;
  router_v2_trainer_config cfg_;
  /// Mean unweighted (q_a − r)² of the model on the last min(n_new, 1024)
  /// of `data`.
  double recent_error(std::span<const router_v2_trajectory> data, size_t n_new);

  std::vector<float> fisher_, anchor_, grad_, sample_, sq_;
  std::vector<float> fisher_star_; ///< F*: the importance frozen at the anchor
  double fit_error_ = 0;           ///< recent_error at the end of the last pass
  uint64_t passes_ = 0;
  std::vector<float> adam_m_, adam_v_; ///< Adam's first and second moments
  uint64_t adam_t_ = 0;                ///< Adam steps taken
  bool anchored_ = false;              ///< the penalty applies once a first task was consolidated
  router_v2_trace trace_;
};

} // namespace shoal::learn
