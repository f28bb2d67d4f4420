#pragma once
/// @file Learning kernels: MicroLoRA (rank 1–8 adapter, forward and SGD /
/// reward-scaled update of BOTH factors), the FastGRNN cell (forward and
/// one-step backward), online EWC++ (Fisher EMA, penalty, preconditioned
/// gradient, consolidation), iterative hard thresholding, and k-means++
/// seeding with Lloyd iterations.
///
/// Each dispatched kernel has a scalar reference and AVX2 / AVX-512 variants
/// picked by the registry (registry.hpp); `*_kernel()` exposes the variants to
/// tests and benchmarks. Pure functions over caller-owned memory: no
/// allocation (stack buffers of at most 64 bytes), no I/O, no locks;
/// thread-safe as long as no two calls write the same memory. Preconditions
/// (`@pre`) are not checked: breaking one is undefined behaviour.
///
/// Layout rule: every low-rank factor is stored as r contiguous ROWS of
/// length d (row-major [r, d]), so every pass over it is unit-stride. A
/// matrix that maps the rank space back to d dimensions (LoRA's B, FastGRNN's
/// W1 and U1) is therefore stored TRANSPOSED: `bt` holds Bᵀ, i.e. column k
/// of B is bt[k·d .. k·d + d).
///
/// Accuracy (learn.test.cpp checks every variant with these numbers): every
/// variant accumulates in f32, the SIMD ones in another order than the
/// sequential scalar reference; the SIMD FastGRNN evaluates exp with a
/// degree-7 polynomial after range reduction (relative error ≤ 2^-22 before
/// f32 rounding). Against a double-precision evaluation of the same formula,
/// the NMSE of every output (y, updated A and B, h', every gradient, the
/// Fisher, the preconditioned gradient, the EWC penalty) is ≤
/// `learn_nmse_bound` on random, zero, large-magnitude and denormal inputs.
/// Non-finite inputs give unspecified (usually NaN) outputs.

#include "kernels/registry.hpp"

#include <cstddef>
#include <cstdint>
#include <span>

namespace shoal::kernels {

/// NMSE bound of every learning kernel variant (and the scalar reference)
/// against a double-precision evaluation of its formula.
inline constexpr double learn_nmse_bound = 1e-10;

// ---- MicroLoRA -------------------------------------------------------------

/// Largest MicroLoRA rank (per-rank partial sums live in registers / a
/// 32-byte stack array).
inline constexpr size_t micro_lora_max_rank = 8;

/// y = x + scale · B (A x);  a = A [r, d], bt = Bᵀ [r, d]. y may equal x.
using micro_lora_forward_t = void(size_t d, size_t r, float* y, const float* x, const float* a,
                                  const float* bt, float scale) noexcept;
/// With u = A x and v = Bᵀ g from the values on entry:
///   A[k,:] -= step · scale · v[k] · x,   Bᵀ[k,:] -= step · scale · u[k] · g.
using micro_lora_update_t = void(size_t d, size_t r, float* a, float* bt, const float* x,
                                 const float* g, float scale, float step) noexcept;

/// MicroLoRA forward: y = x + (α/r) · B (A x) (LoRA, Hu et al. 2021, applied
/// to one d-dimensional activation with an identity base map).
/// @param y  [d] output; may be the same array as x (in place), no other overlap.
/// @param x  [d] input.
/// @param a  A, [r, d] row-major (the down-projection).
/// @param bt Bᵀ, [r, d] row-major (B is [d, r]; see the layout rule above).
/// @param alpha LoRA scaling α; the effective scale is α/r.
/// r is a.size() / x.size(). @pre 1 ≤ r ≤ micro_lora_max_rank;
/// a.size() == bt.size() == r·d; y.size() == d. d == 0 is a no-op.
/// Cost: 4·r·d flops; d = 256, r = 2 targets ≤ 60 ns (bench/learn_bench.cpp).
/// Speed: keep x, y, a, bt (and g for the update) 64-byte aligned with rows
/// of d a multiple of 16 floats: unaligned rows split every AVX-512 load over
/// two cache lines (the update runs ~1.5× slower). Thread-safe (pure).
void micro_lora_forward(std::span<float> y, std::span<const float> x, std::span<const float> a,
                        std::span<const float> bt, float alpha) noexcept;

/// One SGD step on BOTH factors for a loss L with upstream gradient
/// g = ∂L/∂y at input x. With s = α/r, u = A x and v = Bᵀ g, all taken from
/// the values on entry (a simultaneous step), it applies exactly
///   ∂L/∂A = s · v xᵀ      A ← A − lr · s · v xᵀ
///   ∂L/∂B = s · g uᵀ      B ← B − lr · s · g uᵀ   (stored as Bᵀ[k,:] −= lr·s·u[k]·g).
/// Note the LoRA initialisation B = 0 gives ∂L/∂A = 0 on the first step: A
/// starts learning once B is non-zero. (RuVector's MicroLoRA only ever
/// updates B, and not along the gradient; both factors learn here.)
/// @param a  A [r, d], updated in place.  @param bt Bᵀ [r, d], updated in place.
/// @param x  [d] the forward input.  @param g [d] ∂L/∂y.
/// @param alpha α (scale α/r as in the forward).  @param lr learning rate.
/// @pre as micro_lora_forward; x and g do not overlap a or bt.
/// Cost: 8·r·d flops; d = 256, r = 2 targets ≤ 120 ns. Thread-safe for
/// distinct (a, bt).
void micro_lora_update(std::span<float> a, std::span<float> bt, std::span<const float> x,
                       std::span<const float> g, float alpha, float lr) noexcept;

/// Reward-scaled update (REINFORCE, Williams 1992): gradient ASCENT on
/// advantage · log π, where `score` = ∂ log π(action | y) / ∂y is the
/// gradient of the log-probability of the action taken w.r.t. the adapter's
/// output and `advantage` = reward − baseline (the caller keeps the
/// baseline, e.g. a running mean of rewards). Exactly
///   θ ← θ + lr · advantage · ∂(scoreᵀ y)/∂θ   for θ ∈ {A, B},
/// i.e. micro_lora_update with g = score and lr replaced by −lr·advantage
/// (same values on entry, same rounding). A negative advantage pushes away
/// from the action; zero leaves A and B unchanged. (RuVector's
/// adapt_with_reward skips non-positive rewards and clamps at 2; here the
/// caller scales.) @pre as micro_lora_update. Thread-safe for distinct (a, bt).
void micro_lora_update_reward(std::span<float> a, std::span<float> bt, std::span<const float> x,
                              std::span<const float> score, float alpha, float lr,
                              float advantage) noexcept;

// ---- FastGRNN --------------------------------------------------------------

/// Sizes of a FastGRNN cell and the layout of its flat parameter vector
/// (Kusupati et al., NeurIPS 2018, "FastGRNN: A Fast, Accurate, Stable and
/// Tiny Kilobyte Sized Gated Recurrent Neural Network"). Low-rank weights
/// W = W1 W2 ([n_h, n_x]) and U = U1 U2 ([n_h, n_h]):
///   pre = W1 (W2 x) + U1 (U2 h)
///   z   = σ(pre + b_z),   h̃ = tanh(pre + b_h)
///   h'  = (ζ (1 − z) + ν) ⊙ h̃ + z ⊙ h,   ζ = σ(zeta_raw), ν = σ(nu_raw).
/// The parameters (and their gradients, same layout) are one float array:
///   [ W1ᵀ [r_w, n_h] | W2 [r_w, n_x] | U1ᵀ [r_u, n_h] | U2 [r_u, n_h]
///     | b_z [n_h] | b_h [n_h] | zeta_raw | nu_raw ]
/// so SGD, EWC++ and hard thresholding run over it (or its sub-spans)
/// directly. A full-rank W is W1 = I with r_w = n_h. Sparsity (the paper's
/// IHT) is the caller's: after an SGD step apply `hard_threshold` to the
/// W1ᵀ / W2 / U1ᵀ / U2 sub-spans (or keep a fixed support by zeroing the
/// same entries of the gradient).
struct fastgrnn_shape {
  size_t n_x = 0; ///< input size
  size_t n_h = 0; ///< hidden size
  size_t r_w = 1; ///< rank of W = W1 W2 (≥ 1)
  size_t r_u = 1; ///< rank of U = U1 U2 (≥ 1)

  /// Offsets (in floats) of each block in the parameter vector.
  size_t w1t() const noexcept { return 0; }
  size_t w2() const noexcept { return r_w * n_h; }
  size_t u1t() const noexcept { return w2() + r_w * n_x; }
  size_t u2() const noexcept { return u1t() + r_u * n_h; }
  size_t b_z() const noexcept { return u2() + r_u * n_h; }
  size_t b_h() const noexcept { return b_z() + n_h; }
  size_t zeta() const noexcept { return b_h() + n_h; }
  size_t nu() const noexcept { return zeta() + 1; }
  /// Floats in the parameter (and gradient) vector.
  size_t n_params() const noexcept { return nu() + 1; }
  /// Floats the forward saves for the backward: [W2 x | U2 h | z | h̃].
  size_t cache_size() const noexcept { return r_w + r_u + 2 * n_h; }
  /// Floats of scratch the backward needs.
  size_t work_size() const noexcept { return n_h + r_w + r_u; }
};

using fastgrnn_forward_t = void(const fastgrnn_shape* s, float* h_out, float* cache,
                                const float* params, const float* x, const float* h) noexcept;
using fastgrnn_backward_t = void(const fastgrnn_shape* s, float* dh, float* dx, float* grads,
                                 float* work, const float* params, const float* cache,
                                 const float* x, const float* h, const float* dh_out) noexcept;

/// One FastGRNN step h' = cell(x, h) (formulas at fastgrnn_shape).
/// @param h_out [n_h] h'; may be the same array as h, no other overlap.
/// @param cache [cache_size()] written: what fastgrnn_backward needs (pass
///        scratch when only the forward is wanted).
/// @param params [n_params()] (layout at fastgrnn_shape).
/// @param x [n_x]; @param h [n_h] the previous hidden state.
/// @pre spans of those sizes, n_h ≥ 1, r_w ≥ 1, r_u ≥ 1.
/// Thread-safe (pure).
void fastgrnn_forward(const fastgrnn_shape& s, std::span<float> h_out, std::span<float> cache,
                      std::span<const float> params, std::span<const float> x,
                      std::span<const float> h) noexcept;

/// Backward of one step: given dh_out = ∂L/∂h' and the forward's cache (of
/// the same x, h, params), ADDS ∂L/∂θ to `grads` (same layout as params, so
/// BPTT accumulates over steps) and WRITES dh = ∂L/∂h and, unless dx is
/// empty, dx = ∂L/∂x (the formulas are in learn.cpp at the scalar reference;
/// learn.test.cpp checks them against finite differences).
/// @param dh [n_h]; may be the same array as dh_out, must not overlap h.
/// @param dx [n_x] or empty.  @param grads [n_params()], accumulated.
/// @param work [work_size()] scratch.
/// @pre the cache comes from fastgrnn_forward with these s, params, x, h.
/// Thread-safe for distinct outputs.
void fastgrnn_backward(const fastgrnn_shape& s, std::span<float> dh, std::span<float> dx,
                       std::span<float> grads, std::span<float> work, std::span<const float> params,
                       std::span<const float> cache, std::span<const float> x,
                       std::span<const float> h, std::span<const float> dh_out) noexcept;

/// Iterative hard thresholding (IHT, as FastGRNN's sparse training): keeps
/// the `keep` entries of largest magnitude and sets the rest to +0. Ties at
/// the threshold keep the lowest indices, so exactly min(keep, number of
/// non-zeros) entries stay non-zero. NaNs count as largest. O(32·n): a
/// binary search over the magnitudes' bit patterns, no scratch, not
/// dispatched (a training-time pass, not a hot path). Thread-safe.
void hard_threshold(std::span<float> w, size_t keep) noexcept;

// ---- online EWC++ ----------------------------------------------------------
// Elastic weight consolidation (Kirkpatrick et al. 2017, PNAS) in its online
// form EWC++ (Chaudhry et al. 2018, "Riemannian Walk for Incremental
// Learning"): one diagonal Fisher kept as an exponential moving average of
// squared gradients, one anchor θ* moved by `ewc_consolidate` at the end of a
// task. All spans are [n] over the same flat parameter vector.

using ewc_fisher_t = void(size_t n, float* fisher, const float* g, float gamma) noexcept;
/// Returns λ/2 Σ F_i (θ_i − θ*_i)²; adds λ F ⊙ (θ − θ*) to grad unless null.
using ewc_penalty_t = float(size_t n, float* grad, const float* fisher, const float* theta,
                            const float* anchor, float lambda) noexcept;
using ewc_precondition_t = void(size_t n, float* g, const float* fisher, float lambda) noexcept;

/// F ← γ F + (1 − γ) g² element-wise (the EWC++ Fisher EMA; g is the
/// gradient of one sample or mini-batch of the negative log-likelihood).
/// @param gamma in [0, 1]; e.g. 0.99. @pre fisher.size() == g.size().
void ewc_update_fisher(std::span<float> fisher, std::span<const float> g, float gamma) noexcept;

/// The EWC penalty λ/2 Σ_i F_i (θ_i − θ*_i)² (f32 sum; relative error ≤
/// n·2^-23 since every term is ≥ 0).
/// @pre fisher, theta, anchor of equal size.
float ewc_penalty(std::span<const float> fisher, std::span<const float> theta,
                  std::span<const float> anchor, float lambda) noexcept;

/// Adds the penalty's gradient λ F ⊙ (θ − θ*) to `grad` and returns the
/// penalty (as ewc_penalty). @pre all four spans of equal size.
float ewc_penalty_grad(std::span<float> grad, std::span<const float> fisher,
                       std::span<const float> theta, std::span<const float> anchor,
                       float lambda) noexcept;

/// Gradient projection, the soft form: g_i ← g_i / (1 + λ F_i). Directions
/// the old tasks found important (high Fisher) are damped, unimportant ones
/// (F ≈ 0) pass unchanged: a diagonal natural-gradient-style preconditioner
/// with the Fisher as the metric (as in Riemannian Walk). It SCALES each
/// coordinate; it does not remove components along eigen-directions.
/// @pre g.size() == fisher.size(); λ ≥ 0.
void ewc_precondition(std::span<float> g, std::span<const float> fisher, float lambda) noexcept;

/// Consolidate at the end of a task: θ* ← θ. @pre same size, no overlap.
void ewc_consolidate(std::span<float> anchor, std::span<const float> theta) noexcept;

// ---- k-means++ -------------------------------------------------------------

/// Deterministic random numbers for k-means++ (SplitMix64, Steele et al.
/// 2014): the same seed gives the same sequence on every platform.
struct kmeans_rng {
  uint64_t state = 0;
  uint64_t next() noexcept;
  /// Uniform in [0, 1), 53 random bits.
  double uniform() noexcept;
};

/// Outcome of Lloyd iterations.
struct kmeans_result {
  size_t iterations = 0;  ///< centroid updates performed (≤ max_iter)
  bool converged = false; ///< the last assignment pass changed nothing
  double inertia = 0;     ///< Σ_i ‖x_i − c_{assign[i]}‖² (each term with l2sq)
};

/// Floats of scratch kmeans_seed_pp / kmeans_lloyd / kmeans_pp need:
/// max(n, k·dim + 3·k).
size_t kmeans_scratch_size(size_t n, size_t k, size_t dim) noexcept;

/// k-means++ seeding (Arthur & Vassilvitskii 2007, "k-means++: The
/// Advantages of Careful Seeding"): the first centroid is a uniformly chosen
/// point, each next one a point drawn with probability ∝ D(x)², its squared
/// distance (l2sq) to the nearest centroid chosen so far. If every point
/// already coincides with a centroid (fewer than k distinct points), the
/// next is drawn uniformly. k = centroids.size() / dim.
/// @param centroids [k, dim] written.  @param data [n, dim] row-major.
/// @param rng advanced (deterministic given its state).
/// @param scratch ≥ kmeans_scratch_size(n, k, dim) floats.
/// @pre dim ≥ 1, 1 ≤ k ≤ n, data finite. Thread-safe for distinct outputs.
void kmeans_seed_pp(std::span<float> centroids, std::span<const float> data, size_t dim,
                    kmeans_rng& rng, std::span<float> scratch) noexcept;

/// Lloyd's iterations from the given centroids: assign every point to its
/// nearest centroid (argmin ‖c‖² − 2 x·c through dot_rows; ties to the lower
/// index), recompute each centroid as the mean of its points (f32 sums; a
/// cluster that lost every point keeps its centroid), and repeat until an
/// assignment pass changes nothing or max_iter updates were done. On return
/// the assignments are those of the returned centroids.
/// @param centroids [k, dim] in: the seeds, out: the final centroids.
/// @param assign [n] out: cluster of each point, in [0, k).
/// @pre as kmeans_seed_pp; assign.size() == n.
kmeans_result kmeans_lloyd(std::span<float> centroids, std::span<uint32_t> assign,
                           std::span<const float> data, size_t dim, size_t max_iter,
                           std::span<float> scratch) noexcept;

/// kmeans_seed_pp then kmeans_lloyd.
kmeans_result kmeans_pp(std::span<float> centroids, std::span<uint32_t> assign,
                        std::span<const float> data, size_t dim, size_t max_iter, kmeans_rng& rng,
                        std::span<float> scratch) noexcept;

// ---- the dispatched kernels behind the functions above ---------------------
const kernel<micro_lora_forward_t>& micro_lora_forward_kernel();
const kernel<micro_lora_update_t>& micro_lora_update_kernel();
const kernel<fastgrnn_forward_t>& fastgrnn_forward_kernel();
const kernel<fastgrnn_backward_t>& fastgrnn_backward_kernel();
const kernel<ewc_fisher_t>& ewc_fisher_kernel();
const kernel<ewc_penalty_t>& ewc_penalty_kernel();
const kernel<ewc_precondition_t>& ewc_precondition_kernel();

} // namespace shoal::kernels
