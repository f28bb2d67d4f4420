#pragma once
/// @file Matrix kernels of the forward pass: GEMV y = W·x (decode) and
/// small-batch GEMM Y = X·Wᵀ (prefill, batched decode; batch 1..~64) for
/// weights in F32, F16, BF16, Q8_0, Q4_0, Q4_K and Q6_K, split over rows on a
/// caller-provided thread pool (parallel.hpp).
///
/// Caveats first:
///  - Layout is ggml's: W is row-major [rows, cols], each row a contiguous
///    sequence of blocks (row_bytes(type, cols) bytes, no padding), exactly
///    as a GGUF tensor of shape ne = {cols, rows} lies in the file.
///  - Quantized weights use quantized activations, as ggml does: x is first
///    quantized to Q8_0 (for Q8_0 and Q4_0 weights; ggml vec_dot_q8_0_q8_0,
///    vec_dot_q4_0_q8_0) or to Q8_K (for Q4_K and Q6_K; ggml
///    vec_dot_q4_K_q8_K, vec_dot_q6_K_q8_K), then dotted in integers per
///    block and scaled in f32. F32/F16/BF16 weights use the f32 activations
///    directly (more accurate than ggml, which rounds x to f16/bf16).
///  - The quantized activations live in caller-provided scratch
///    (`matmul_scratch_bytes`); the kernels never allocate.
///  - Shapes are checked (a `matmul_status` names the problem); NaN/Inf in
///    the inputs propagate into y, nothing else is checked.
///
/// Accuracy (matmul.test.cpp checks each number):
///  - Every SIMD variant against the scalar variant of the same kernel: both
///    compute the same exact integer block sums (or the same products for the
///    float formats) and differ only in the f32 summation order; NMSE ≤
///    `matmul_variant_nmse` and each output within (n_terms+1)·2^-23·Σ|terms|.
///  - Float formats against the exact (double) product of the stored weights
///    and x: NMSE ≤ `matmul_variant_nmse`.
///  - Quantized formats against the exact product of the dequantized weights
///    and the original f32 x (i.e. the activation quantization error): NMSE ≤
///    `matmul_q8_0_act_nmse` (Q8_0, Q4_0) and `matmul_q8_k_act_nmse` (Q4_K,
///    Q6_K), for activations with roughly Gaussian blocks (ratio of block
///    maximum to RMS ≲ 4); outliers within a block raise the error (the step is
///    amax/127).
///
/// Thread-safety: every function is pure over its arguments; concurrent calls
/// are fine if their outputs and scratch do not overlap.

#include "kernels/blocks.hpp"
#include "kernels/parallel.hpp"
#include "kernels/registry.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace shoal::kernels {

/// Weight formats, numbered as GGUF / ggml `ggml_type` ids.
enum class weight_type : uint32_t {
  f32 = 0,
  f16 = 1,
  q4_0 = 2,
  q8_0 = 8,
  q4_k = 12,
  q6_k = 14,
  bf16 = 30,
};

/// "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K", "Q6_K" (ggml's names).
std::string_view to_string(weight_type type) noexcept;

/// The weight type with GGUF/ggml type id `id`; nullopt for ids this module
/// does not compute with (Q5_K, IQ*, ...).
std::optional<weight_type> weight_type_from_id(uint32_t id) noexcept;

/// Elements per block: 1 (F32, F16, BF16), 32 (Q8_0, Q4_0), 256 (Q4_K, Q6_K).
size_t block_elems(weight_type type) noexcept;

/// Bytes per block: 4, 2, 2, 34, 18, 144, 210 (same order as above).
size_t block_bytes(weight_type type) noexcept;

/// Bytes of one row of `cols` elements. @pre cols % block_elems(type) == 0.
size_t row_bytes(weight_type type, size_t cols) noexcept;

/// A weight matrix of any format, not owned (e.g. a tensor in a mapped GGUF).
struct weight_view {
  const void* data =
    nullptr; ///< [rows, row_bytes(type, cols)] bytes, row-major; aligned to 4 bytes (F32) or 2 (others)
  weight_type type = weight_type::f32;
  size_t rows = 0; ///< output features (ggml ne[1])
  size_t cols = 0; ///< input features (ggml ne[0]); a multiple of block_elems(type)
};

/// Outcome of `gemv` / `gemm`.
enum class matmul_status : uint8_t {
  ok = 0,
  bad_type,      ///< weight_view::type is not one of weight_type's values
  bad_cols,      ///< cols is not a multiple of block_elems(type)
  bad_shape,     ///< x, y or the weight pointer do not match rows/cols/n_batch
  small_scratch, ///< scratch smaller than matmul_scratch_bytes(...)
};

/// "ok", "unknown weight type", ... (one line, no trailing period).
std::string_view to_string(matmul_status status) noexcept;

/// Scratch bytes `gemv`/`gemm` need for `n_batch` activation rows of `cols`
/// elements against weights of `type`: the quantized activations (Q8_0: 34
/// bytes per 32 elements, Q8_K: 292 per 256) plus 64 bytes of alignment
/// slack; 0 for F32/F16/BF16 (any span, even empty, will do).
size_t matmul_scratch_bytes(weight_type type, size_t cols, size_t n_batch) noexcept;

/// y = W·x: y[r] = Σ_c W[r, c]·x[c].
/// @param y [w.rows] outputs. @param x [w.cols] activations.
/// @param scratch at least matmul_scratch_bytes(w.type, w.cols, 1) bytes, any
///        alignment; overwritten. @param pool threads to split rows over
///        (nullptr = the calling thread only).
/// Returns ok, or why nothing was computed. Same as gemm with n_batch = 1.
matmul_status gemv(std::span<float> y, const weight_view& w, std::span<const float> x,
                   std::span<std::byte> scratch, thread_pool* pool) noexcept;

/// Activation rows from which the AVX512-VNNI Q8_0/Q4_0 kernels repack
/// 16-row weight panels (prefill): one vpdpbusd then advances 16 rows.
inline constexpr size_t panel_min_batch = 32;

/// Y = X·Wᵀ: y[b·rows + r] = Σ_c W[r, c]·x[b·cols + c] for b < n_batch.
/// @param y [n_batch, w.rows] row-major. @param x [n_batch, w.cols] row-major.
/// @param scratch at least matmul_scratch_bytes(w.type, w.cols, n_batch).
/// Rows are cut into a few chunks per pool thread (multiples of 16 rows, at
/// least ~64 KiB of weight bytes × n_batch each); each chunk runs the active
/// variant of the format's kernel over all n_batch activation rows, in tiles
/// of a few weight rows × a few activation rows, so the weights stream from
/// memory once per call whatever n_batch is. Activation quantization runs on
/// the pool too when n_batch >= 4. The result does not depend on the pool;
/// gemm's row b equals gemv of x row b bit for bit, except that for
/// n_batch >= panel_min_batch the AVX512-VNNI Q8_0/Q4_0 variant switches to
/// its prefill (panel) path, which agrees within f32 rounding.
/// Cost (this machine, 4096 × 4096, one core): GEMV runs at the memory
/// bandwidth for every format (see bench/gemv_bench.cpp); GEMM is compute
/// bound, ~100 GFLOP/s per core for Q4_0/Q8_0 at batch 8-32 (AVX512-VNNI),
/// ~170 GFLOP/s on the panel path (110M-shape prefill of 512 tokens).
matmul_status gemm(std::span<float> y, const weight_view& w, std::span<const float> x,
                   size_t n_batch, std::span<std::byte> scratch, thread_pool* pool) noexcept;

// ---- accuracy bounds (see the file comment; the tests use these numbers) ----

/// SIMD variant vs scalar variant, and float formats vs the exact product.
inline constexpr double matmul_variant_nmse = 1e-10;
/// Q8_0/Q4_0 weights: result vs dequantized W times the unquantized x.
inline constexpr double matmul_q8_0_act_nmse = 1e-4;
/// Q4_K/Q6_K weights: result vs dequantized W times the unquantized x.
inline constexpr double matmul_q8_k_act_nmse = 1e-4;

// ---- the dispatched kernels ------------------------------------------------
// Raw variants: Y[b, r] for r < n_rows, b < n_batch, written to
// y[b·ldy + r]; W row r at w + r·n_cols (float formats) or w + r·n_blocks
// (quantized), activation row b at x + b·n_cols or x + b·n_blocks. Every
// variant of a kernel gives the same result up to f32 summation order.

/// F32 weights, f32 activations.
using matmul_f32_t = void(size_t n_rows, size_t n_batch, size_t n_cols, float* y, size_t ldy,
                          const float* w, const float* x) noexcept;
/// F16 or BF16 weights (raw bits), f32 activations.
using matmul_f16_t = void(size_t n_rows, size_t n_batch, size_t n_cols, float* y, size_t ldy,
                          const uint16_t* w, const float* x) noexcept;
/// Q8_0 weights, Q8_0 activations (ggml vec_dot_q8_0_q8_0). @pre activation
/// quants in [-127, 127], as quantize_q8_0 writes (weights may hold -128).
using matmul_q8_0_t = void(size_t n_rows, size_t n_batch, size_t n_blocks, float* y, size_t ldy,
                           const block_q8_0* w, const block_q8_0* x) noexcept;
/// Q4_0 weights, Q8_0 activations (ggml vec_dot_q4_0_q8_0).
using matmul_q4_0_t = void(size_t n_rows, size_t n_batch, size_t n_blocks, float* y, size_t ldy,
                           const block_q4_0* w, const block_q8_0* x) noexcept;
/// Q4_K weights, Q8_K activations (ggml vec_dot_q4_K_q8_K).
using matmul_q4_k_t = void(size_t n_rows, size_t n_batch, size_t n_blocks, float* y, size_t ldy,
                           const block_q4_k* w, const block_q8_k* x) noexcept;
/// Q6_K weights, Q8_K activations (ggml vec_dot_q6_K_q8_K).
using matmul_q6_k_t = void(size_t n_rows, size_t n_batch, size_t n_blocks, float* y, size_t ldy,
                           const block_q6_k* w, const block_q8_k* x) noexcept;

/// Variants: scalar, avx2, avx512.
const kernel<matmul_f32_t>& matmul_f32_kernel();
const kernel<matmul_f16_t>& matmul_f16_kernel();
const kernel<matmul_f16_t>& matmul_bf16_kernel();
/// Variants: scalar, avx2, avx512, and avx512vnni where the CPU has
/// AVX512-VNNI (registered only then).
const kernel<matmul_q8_0_t>& matmul_q8_0_kernel();
const kernel<matmul_q4_0_t>& matmul_q4_0_kernel();
/// Variants: scalar, avx2, avx512.
const kernel<matmul_q4_k_t>& matmul_q4_k_kernel();
const kernel<matmul_q6_k_t>& matmul_q6_k_kernel();

} // namespace shoal::kernels
