#pragma once
/// @file Neural-network kernels of the llama forward pass: RMSNorm, RoPE,
/// softmax, SiLU / SwiGLU, and attention of one query head over a paged KV
/// cache whose pages hold F32, F16, Q8_0 or Q4_0 rows.
///
/// Each dispatched kernel has a scalar reference and AVX2 / AVX-512 variants
/// picked by the registry (registry.hpp); `*_kernel()` exposes the variants to
/// tests and benchmarks. Pure functions: no allocation (stack buffers of at
/// most a few KiB), no I/O, no locks; thread-safe. Preconditions (`@pre`) are
/// not checked: breaking one is undefined behaviour.
///
/// Accuracy (nn.test.cpp checks every variant against a double-precision
/// reference with these numbers):
///   - the SIMD variants compute exp with a range reduction to [-ln2/2, ln2/2]
///     and a degree-7 polynomial (truncation 5e-9 relative; the rest is f32
///     rounding), the scalar reference with std::exp;
///   - rms_norm, softmax, silu, swiglu, rope: NMSE ≤ `nn_nmse_bound` (1e-12)
///     against the exact result, every variant and the scalar reference
///     (subnormal outputs: `nn_subnormal_abs_bound`);
///   - attention over pages: NMSE ≤ `attention_nmse_bound` (1e-10) against a
///     double-precision softmax-attention over the DEQUANTIZED rows, i.e. the
///     kernel adds only f32 rounding. Against the original f32 values the
///     storage type dominates: see `attention_q8_0_nmse_bound` and the others.
/// Non-finite inputs (NaN, ±Inf where not stated otherwise) give unspecified
/// (usually NaN) outputs.

#include "kernels/registry.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace shoal::kernels {

/// NMSE bound of rms_norm, rope, softmax, silu and swiglu (every variant)
/// against the exact (double) result on finite inputs.
inline constexpr double nn_nmse_bound = 1e-12;
/// Where outputs are subnormal (|y| < 2^-126, e.g. silu of a subnormal x) the
/// format itself has only absolute precision 2^-149, so the bound there is
/// absolute: |y - exact| ≤ 2^-148 (two subnormal ulps).
inline constexpr double nn_subnormal_abs_bound = 0x1p-148;
/// NMSE bound of attention_paged (every variant) against a double-precision
/// reference over the dequantized K/V rows (random data, head_dim 32..256,
/// up to 1000 tokens, scale 1/sqrt(head_dim)).
inline constexpr double attention_nmse_bound = 1e-10;
/// NMSE of attention_paged against the ORIGINAL f32 K/V when every row is
/// stored in F16 / Q8_0 / Q4_0 (the keys' type decides; K and V ~ N(0, 1),
/// head_dim 128, 512 tokens, scale 1/sqrt(128)). The storage error
/// dominates: Q8_0 rounds to amax/254 per block, Q4_0 to amax/16. Measured
/// (nn.test.cpp): f16 7e-8, q8_0 5e-5, q4_0 1.3e-2; each bound has ~5× margin.
inline constexpr double attention_f16_nmse_bound = 1e-6;
inline constexpr double attention_q8_0_nmse_bound = 3e-4;
inline constexpr double attention_q4_0_nmse_bound = 6e-2;

// ---- RMSNorm -------------------------------------------------------------

/// y[i] = x[i] / sqrt(mean(x²) + eps) * w[i]  (w == nullptr: no weight).
using rms_norm_t = void(size_t n, float* y, const float* x, const float* w, float eps) noexcept;

/// RMSNorm of one row: y = x / sqrt(Σx²/n + eps) ⊙ w, as ggml_rms_norm followed
/// by ggml_mul with the weight (llama's attn_norm / ffn_norm / output_norm;
/// eps from `llama.attention.layer_norm_rms_epsilon`, typically 1e-5 or 1e-6).
/// Source: Zhang & Sennrich 2019, "Root Mean Square Layer Normalization".
/// @param y [n] output; may be the same array as x (in place), no other overlap.
/// @param x [n]; @param w [n] weights, or empty for no weight.
/// Σx² accumulates in f32 (the scalar reference in double): finite for
/// Σx² < FLT_MAX. @pre y.size() == x.size(); w empty or w.size() == x.size();
/// eps > 0. n == 0 is a no-op.
void rms_norm(std::span<float> y, std::span<const float> x, std::span<const float> w,
              float eps) noexcept;

// ---- RoPE ----------------------------------------------------------------

/// Rotary position embedding parameters (llama style). Angles: pair i of the
/// rotated dims turns by  angle_i = (pos / linear_factor) · θ_i  with
/// θ_i = base_eff^(-2i / n_dims),  base_eff = base · ntk_factor^(n_dims / (n_dims - 2)).
struct rope_params {
  /// Dims rotated at the start of each head (even, ≤ head_dim); the rest are
  /// left untouched (partial rotary). 0 = all of head_dim. Default: 0.
  size_t n_dims = 0;
  /// θ base, GGUF `llama.rope.freq_base`. Default: 10000 (RoFormer, LLaMA 1/2).
  float base = 10000.0f;
  /// Linear scaling ("position interpolation", Chen et al. 2023,
  /// arXiv:2306.15595): positions are divided by this factor; ggml's
  /// freq_scale = 1 / linear_factor, GGUF `llama.rope.scaling.factor` with
  /// type linear. Default: 1 (none).
  float linear_factor = 1.0f;
  /// NTK-aware scaling (bloc97, reddit r/LocalLLaMA 2023, "NTK-Aware Scaled
  /// RoPE allows LLaMA models to have extended (8k+) context size without any
  /// fine-tuning"; formula as in YaRN, Peng et al. 2023, arXiv:2309.00071,
  /// §3.1): base_eff = base · s^(d/(d-2)) with d = n_dims. Default: 1 (none).
  float ntk_factor = 1.0f;
  /// Per-pair divisors of the angle, [n_dims / 2] (angle_i = t·θ_i / f_i):
  /// Llama 3.1's "llama3" rope scaling, stored in GGUF as the F32 tensor
  /// rope_freqs.weight (ggml_rope_ext's freq_factors). nullptr = none. Not
  /// owned: must outlive every call that uses these parameters.
  const float* freq_factors = nullptr;
};

/// Floats of a RoPE table for `n_dims` rotated dims: 2·n_dims.
inline constexpr size_t rope_table_size(size_t n_dims) noexcept {
  return 2 * n_dims;
}

/// Rotates adjacent pairs (x[2i], x[2i+1]) of dims [0, n_dims) of each of
/// n_heads rows (row stride head_dim) by the precomputed table:
///   table[2i] = table[2i+1] = cos(angle_i),
///   table[n_dims + 2i] = -sin(angle_i), table[n_dims + 2i + 1] = +sin(angle_i),
/// so  x'[2i] = x[2i]·cos - x[2i+1]·sin,  x'[2i+1] = x[2i]·sin + x[2i+1]·cos.
using rope_t = void(size_t n_heads, size_t head_dim, size_t n_dims, float* x,
                    const float* table) noexcept;

/// Fills the RoPE table of one position (layout at `rope_t`); angles and their
/// cos/sin in double, rounded once to f32. Callers applying RoPE to many
/// layers at the same position can compute it once (e.g. per decode step).
/// @param table [rope_table_size(n_dims)]; @pre n_dims even, n_dims ≥ 2,
/// base > 0, linear_factor > 0, ntk_factor > 0. Pure, thread-safe.
void rope_table(std::span<float> table, size_t n_dims, double pos, const rope_params& p) noexcept;

/// Applies llama-style RoPE at position `pos` to x = [n_heads, head_dim]
/// (one head: n_heads = 1), in place: pairs (x[2i], x[2i+1]) of the first
/// n_dims dims of each head rotate by angle_i (see `rope_params`). This is
/// RoFormer's rotation (Su et al. 2021, arXiv:2104.09864, eq. 34) on adjacent
/// pairs, ggml_rope mode 0 (GGML_ROPE_TYPE_NORM, used for LLAMA); NeoX-style
/// models rotate (x[i], x[i + d/2]) instead and are not covered here.
/// Angles are computed in double (ggml uses f32), so results agree with
/// llama.cpp to f32 rounding of the angle: ~pos·1e-7 rad.
/// @pre x.size() == n_heads·head_dim; n_heads > 0; effective n_dims even
/// and ≤ head_dim; the parameter preconditions of `rope_table`.
void rope(std::span<float> x, size_t n_heads, size_t pos, const rope_params& p) noexcept;

/// NeoX-style RoPE (GPT-NeoX; ggml_rope mode GGML_ROPE_TYPE_NEOX, used by
/// Qwen2 among others): pair i of each head is (x[i], x[i + n_dims/2]) for
/// i < n_dims/2, rotated by angle_i of the same table as `rope_t` (cos at
/// table[2i], sin at table[n_dims + 2i + 1]). In place on x = [n_heads,
/// head_dim]. Scalar (not dispatched): it runs once per token and head.
/// @pre n_dims even, ≤ head_dim; table [rope_table_size(n_dims)].
void rope_neox(size_t n_heads, size_t head_dim, size_t n_dims, float* x,
               const float* table) noexcept;

// ---- softmax, SiLU, SwiGLU -----------------------------------------------

/// y = softmax(scale · x).
using softmax_t = void(size_t n, float* y, const float* x, float scale) noexcept;

/// Numerically stable softmax of one row: y[i] = exp(s·x[i] - m) / Σ_j exp(s·x[j] - m)
/// with m = max_j s·x[j]. Entries equal to -Inf (masked) give exactly 0.
/// When every entry is -Inf (or n == 0) the row is all zeros — it sums to 0,
/// not 1 (ggml would produce NaN): callers masking a whole row get no
/// attention instead of NaNs. Otherwise Σy = 1 within n·2^-23.
/// @param y [n] output, may be the same array as x. @param scale s, applied
/// before the max (e.g. 1/sqrt(head_dim) on raw scores). @pre y.size() ==
/// x.size(), scale > 0 and finite; no NaN or +Inf in x.
void softmax(std::span<float> y, std::span<const float> x, float scale = 1.0f) noexcept;

/// y[i] = silu(x[i]).
using silu_t = void(size_t n, float* y, const float* x) noexcept;
/// out[i] = silu(gate[i]) · up[i].
using swiglu_t = void(size_t n, float* out, const float* gate, const float* up) noexcept;

/// SiLU (swish-1): y = x / (1 + exp(-x)) (Elfwing et al. 2017; ggml_silu).
/// Large negative x gives -0, large positive x gives x. @param y [n], may be
/// the same array as x. @pre y.size() == x.size().
void silu(std::span<float> y, std::span<const float> x) noexcept;

/// SwiGLU of llama's feed-forward: out[i] = silu(gate[i]) · up[i] (Shazeer
/// 2020, "GLU Variants Improve Transformer"; ggml_swiglu / silu(ffn_gate) ⊙ ffn_up).
/// @param out [n], may be the same array as gate or up. @pre all sizes equal.
void swiglu(std::span<float> out, std::span<const float> gate, std::span<const float> up) noexcept;

// ---- attention over a paged KV cache -------------------------------------

/// Storage type of KV-cache rows. Values are ggml_type ids (GGUF): a page row
/// of type T has exactly the bytes of a ggml row of that type.
enum class kv_type : uint8_t {
  f32 = 0,  ///< 4 bytes per element (reference and tests)
  f16 = 1,  ///< IEEE half, 2 bytes per element
  q4_0 = 2, ///< block_q4_0 (blocks.hpp): 18 bytes per 32 elements
  q8_0 = 8, ///< block_q8_0 (blocks.hpp): 34 bytes per 32 elements
};

/// "f32", "f16", "q4_0" or "q8_0".
const char* to_string(kv_type t) noexcept;
/// The type named "f32", "f16", "q8_0" or "q4_0" (to_string's names); nullopt otherwise.
std::optional<kv_type> parse_kv_type(std::string_view name) noexcept;
/// The type of a stored code (its ggml_type id, as records keep it); nullopt
/// for any code that is no kv_type (damaged or foreign data).
std::optional<kv_type> kv_type_from_code(uint8_t code) noexcept;

/// Bytes of `n_elems` consecutive elements of type t: 4n (f32), 2n (f16),
/// n/32·34 (q8_0), n/32·18 (q4_0). @pre n_elems % 32 == 0 for quantized types.
constexpr size_t row_bytes(kv_type t, size_t n_elems) noexcept {
  switch (t) {
    case kv_type::f32:
      return 4 * n_elems;
    case kv_type::f16:
      return 2 * n_elems;
    case kv_type::q8_0:
      return n_elems / 32 * 34;
    case kv_type::q4_0:
      return n_elems / 32 * 18;
  }
  return 0;
}

/// Layout of the pages of one sequence's KV cache for one layer (vLLM's
/// PagedAttention, Kwon et al. 2023, with ggml row types). K and V live in
/// separate pages; each page holds `page_tokens` consecutive tokens:
///
///   K page bytes:  [page_tokens][k_row]  with k_row = row_bytes(k_type, row_elems)
///   token t of the sequence is in page t / page_tokens, slot s = t % page_tokens,
///   at byte offset s · k_row of that page;
///   a row is [n_kv_heads, head_dim] elements (row_elems = n_kv_heads · head_dim),
///   kv head h starting at element h · head_dim, i.e. at byte offset
///   row_bytes(k_type, h · head_dim) within the row (quantized rows: blocks
///   never straddle heads because head_dim % 32 == 0).
///   V pages: the same with v_type.
///
/// A page is `page_bytes` long; slots past the sequence's last token are
/// never read. Page pointers must be aligned to 4 bytes (f32 rows; 2 bytes
/// suffice for the other types).
struct kv_page_layout {
  /// Tokens per page. Default: 16 (vLLM's default block size). > 0.
  size_t page_tokens = 16;
  /// Elements per token row: n_kv_heads · head_dim. A multiple of 32 for
  /// quantized types.
  size_t row_elems = 0;
  /// Storage type of key rows. Default: f16.
  kv_type k_type = kv_type::f16;
  /// Storage type of value rows (may differ from k_type). Default: f16.
  kv_type v_type = kv_type::f16;

  size_t k_row_bytes() const noexcept { return row_bytes(k_type, row_elems); }
  size_t v_row_bytes() const noexcept { return row_bytes(v_type, row_elems); }
  size_t k_page_bytes() const noexcept { return page_tokens * k_row_bytes(); }
  size_t v_page_bytes() const noexcept { return page_tokens * v_row_bytes(); }
};

/// The kv head a query head reads under grouped-query attention (Ainslie et
/// al. 2023, arXiv:2305.13245; llama.cpp broadcasts K/V the same way): query
/// heads [g·r, (g+1)·r) share kv head g, r = n_heads / n_kv_heads.
/// @pre n_kv_heads > 0, n_heads % n_kv_heads == 0, q_head < n_heads.
constexpr size_t gqa_kv_head(size_t q_head, size_t n_heads, size_t n_kv_heads) noexcept {
  return q_head / (n_heads / n_kv_heads);
}

/// A run of consecutive tokens of one sequence stored in pages of one layout
/// (a tier of the KV cache: e.g. older tokens in Q8_0 pages, recent tokens in
/// F16 pages). The segment's token j is in page j / page_tokens, slot
/// j % page_tokens (a segment starts at slot 0 of its first page).
struct kv_segment {
  kv_page_layout layout;
  /// Page pointers in token order; ⌈n_tokens / page_tokens⌉ of each are read.
  std::span<const std::byte* const> k_pages;
  std::span<const std::byte* const> v_pages;
  /// Tokens in this segment (0 allowed).
  size_t n_tokens = 0;
};

/// out = Σ_t softmax_t(scale · q·K_t) · V_t over every token of the segments,
/// for kv head `kv_head` (raw kernel; see `attention_paged`).
using attention_paged_t = void(size_t n_segments, size_t head_dim, float* out, const float* q,
                               const kv_segment* segments, size_t kv_head, float scale) noexcept;

/// Attention of ONE query head over a sequence's paged KV cache:
///   out[d] = Σ_t p_t · V_t[kv_head·head_dim + d],
///   p = softmax_t(scale · Σ_d q[d] · K_t[kv_head·head_dim + d]),
/// t over every token of every segment, with K_t / V_t token t's rows
/// dequantized exactly as ggml does (q8_0: d·q; q4_0: d·(q-8); f16: exact).
/// One pass over the pages with an online softmax (running max and sum,
/// rescaling the output accumulator when the max grows: Milakov &
/// Gimelshein 2018, arXiv:1805.02867; FlashAttention, Dao et al. 2022),
/// carried across segments; no causal mask (every token given is visible);
/// `out` doubles as the accumulator, a stack buffer holds the scores of up to
/// 64 tokens. Quantized keys are dotted block by block (int8 → f32, scale
/// applied per block), quantized values accumulated the same way: q is not
/// quantized (unlike ggml's vec_dot_q8_0_q8_0), so only f32 rounding is added.
/// @param out [head_dim] f32 output (must not overlap q or the pages); all
///        zeros when there are no tokens.
/// @param q [head_dim] the query head, already RoPE'd.
/// @param segments the sequence's tiers in token order.
/// @param kv_head the kv head (`gqa_kv_head`). @param scale usually 1/sqrt(head_dim).
/// @pre q.size() == out.size() == head_dim; in every segment
/// (kv_head+1)·head_dim ≤ row_elems, enough pages, pointers aligned as
/// `kv_page_layout` says; head_dim % 32 == 0 if any type is quantized.
/// Accuracy: `attention_nmse_bound`. Thread-safe (pure).
void attention_paged(std::span<float> out, std::span<const float> q,
                     std::span<const kv_segment> segments, size_t kv_head, float scale) noexcept;

/// The same over one segment (all pages of one layout).
void attention_paged(std::span<float> out, std::span<const float> q,
                     std::span<const std::byte* const> k_pages,
                     std::span<const std::byte* const> v_pages, size_t n_tokens,
                     const kv_page_layout& layout, size_t kv_head, float scale) noexcept;

/// The dispatched kernels (variants, active choice) behind the functions above.
const kernel<rms_norm_t>& rms_norm_kernel();
const kernel<rope_t>& rope_kernel();
const kernel<softmax_t>& softmax_kernel();
const kernel<silu_t>& silu_kernel();
const kernel<swiglu_t>& swiglu_kernel();
const kernel<attention_paged_t>& attention_paged_kernel();

} // namespace shoal::kernels
