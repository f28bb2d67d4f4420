#pragma once
/// @file Quantization in ggml's block layouts (blocks.hpp) and f16/bf16 row
/// conversions: Q8_0 and Q4_0 quantize with bytes identical to llama.cpp's
/// reference quantizer; Q8_K activations likewise; Q8_0, Q4_0, Q8_K, Q4_K,
/// Q5_K and Q6_K dequantize bit-exactly as ggml; simple (not ggml's) Q4_K,
/// Q5_K and Q6_K quantizers for tests and random-weight model files.
///
/// Caveats first:
///  - Inputs must be finite (no NaN/Inf) and, for the quantizers, of
///    magnitude ≤ 5e5 (Q4_0's scale amax/8 overflows f16 above 8·65504;
///    ggml's reference then stores an Inf scale, and so do we; Q8_0 allows
///    8e6, the K formats more). Lengths must be whole blocks:
///    n % 32 == 0 for Q8_0/Q4_0, n % 256 == 0 for Q8_K and the K-quants.
///    None of this is checked: a kernel never asserts on caller data.
///  - Spans: `x` is the input, `y` the output, and y must hold exactly what x
///    implies (y.size() == x.size()/32 blocks, or x.size()*32 floats, ...).
///    Input and output must not overlap.
///  - Pure functions: no allocation, no I/O, no locks; thread-safe.
///  - Every dispatched kernel has a scalar reference and AVX2 / AVX-512
///    variants (registry.hpp). All variants give the SAME bits as the scalar
///    reference (bound: bit-exact, NMSE 0), tested in quant.test.cpp; the
///    floating-point results rely on no fused multiply-add being formed, which
///    holds because the project compiles in ISO mode (-std=c++20 implies
///    -ffp-contract=off).
///
/// Round-trip bounds (x̂ = dequantize(quantize(x)), per element, for inputs
/// within the caveats; d̂ = f16(d); amax = max |x| of the block;
/// |d - d̂| ≤ max(|d|·2^-11, 2^-25)):
///   Q8_0   |x - x̂| ≤ d/2 + 127·|d - d̂|, d = amax/127          (≈ amax/254)
///   Q4_0   |x - x̂| ≤ |d| + 8·|d - d̂|, |d| = amax/8            (≈ amax/8;
///          |d|/2 except where q clamps at 15, i.e. x ≈ -m)
///   Q8_K   |x - x̂| ≤ |d|/2 (f32 d = amax/127, no f16 rounding)
///   Q4_K   |x - x̂| ≤ s/2 with the effective step s = d̂·sc ≤ (r + dmin̂)/15 + d̂
///   Q5_K   as Q4_K with /31
///   Q6_K   |x - x̂| ≤ s/2 with s = d̂·sc ≤ amax_j/31 + d̂
/// (r = max - min(0, min) of the 32-element sub-block, amax_j the 16-element
/// sub-block's; d̂, dmin̂ ≈ the super-block's largest needed step / 63, resp.
/// 127 for Q6_K). Add f32 rounding: 2^-22·amax for Q8_0/Q4_0/Q8_K, 2^-20·amax
/// (of the super-block) for the K formats.
/// On N(0,1) rows of 4096 the NMSE (Σ(x-x̂)²/Σx²) is at most
/// `nmse_gaussian_*` below; quant.test.cpp checks both kinds of bound.
/// f16: |x - x̂| ≤ 2^-11|x| for 2^-14 ≤ |x| ≤ 65504 (2^-25 absolute below);
/// bf16: |x - x̂| ≤ 2^-8|x| (normal range).
///
/// Sources: ggml `ggml-common.h` (layouts) and `ggml-quants.c`
/// (quantize_row_*_ref, dequantize_row_*), `ggml.c` (ggml_fp32_to_fp16_row,
/// ggml_fp32_to_bf16_row_ref), llama.cpp release v0.5.0 (commit de3ff81) as
/// shipped in node-llama-cpp 3.22.1; its outputs on fixed inputs are committed
/// in kernels/testdata/ with the script that produced them.

#include "kernels/blocks.hpp"
#include "kernels/registry.hpp"

#include <cstddef>
#include <cstdint>
#include <span>

namespace shoal::kernels {

/// NMSE bounds of the round trips on N(0,1) data (see the file comment).
inline constexpr double nmse_gaussian_q8_0 = 5e-5;
inline constexpr double nmse_gaussian_q4_0 = 1.2e-2;
inline constexpr double nmse_gaussian_q8_k = 8e-5;
inline constexpr double nmse_gaussian_q4_k = 1e-2;
inline constexpr double nmse_gaussian_q5_k = 3e-3;
inline constexpr double nmse_gaussian_q6_k = 8e-4;

// ---- raw kernel signatures (count first, output second; n = elements) -----

using quantize_q8_0_t = void(size_t n, block_q8_0* y, const float* x) noexcept;
using quantize_q4_0_t = void(size_t n, block_q4_0* y, const float* x) noexcept;
using quantize_q8_k_t = void(size_t n, block_q8_k* y, const float* x) noexcept;
using dequantize_q8_0_t = void(size_t n, float* y, const block_q8_0* x) noexcept;
using dequantize_q4_0_t = void(size_t n, float* y, const block_q4_0* x) noexcept;
using dequantize_q8_k_t = void(size_t n, float* y, const block_q8_k* x) noexcept;
using dequantize_q4_k_t = void(size_t n, float* y, const block_q4_k* x) noexcept;
using dequantize_q5_k_t = void(size_t n, float* y, const block_q5_k* x) noexcept;
using dequantize_q6_k_t = void(size_t n, float* y, const block_q6_k* x) noexcept;
/// f32 → 16-bit (f16 or bf16 bits); any n.
using convert_to_16_t = void(size_t n, uint16_t* y, const float* x) noexcept;
/// 16-bit (f16 or bf16 bits) → f32; any n.
using convert_from_16_t = void(size_t n, float* y, const uint16_t* x) noexcept;

// ---- Q8_0 / Q4_0 ----------------------------------------------------------

/// Quantizes to Q8_0: per block of 32, d = amax/127 (f32), id = 1/d (0 when
/// d == 0), q[i] = roundf(x[i]*id) (half away from zero), stored d = f16(d).
/// Bytes identical to ggml `quantize_row_q8_0_ref`. A block with amax below
/// ~3.7e-37 (1/d overflows) gets q = 0, as ggml's reference does on x86.
/// @param x [n] floats, n % 32 == 0. @param y [n/32] blocks.
void quantize_q8_0(std::span<const float> x, std::span<block_q8_0> y) noexcept;

/// Quantizes to Q4_0: per block of 32, m = the first element of largest
/// magnitude (signed), d = m/-8, id = 1/d (0 when d == 0),
/// q = min(15, trunc(x*id + 8.5)), element j in the low nibble of byte j,
/// element j+16 in the high nibble; stored d = f16(d). Bytes identical to
/// ggml `quantize_row_q4_0_ref` (including q = 0 when 1/d overflows).
/// @param x [n] floats, n % 32 == 0. @param y [n/32] blocks.
void quantize_q4_0(std::span<const float> x, std::span<block_q4_0> y) noexcept;

/// y[32b + i] = q[i] * f16→f32(d). Exactly ggml `dequantize_row_q8_0`.
/// @param x [n/32] blocks. @param y [n] floats.
void dequantize_q8_0(std::span<const block_q8_0> x, std::span<float> y) noexcept;

/// y[32b + j] = ((qs[j] & 15) - 8) * d, y[32b + j + 16] = ((qs[j] >> 4) - 8) * d.
/// Exactly ggml `dequantize_row_q4_0`. @param x [n/32] blocks. @param y [n] floats.
void dequantize_q4_0(std::span<const block_q4_0> x, std::span<float> y) noexcept;

// ---- Q8_K (activations for K-quant dot products) ---------------------------

/// Quantizes to Q8_K: per block of 256, m = first element of largest
/// magnitude, iscale = -127/m, q = min(127, round-half-even(iscale*x)),
/// d = 1/iscale (f32), bsums[j] = Σ q[16j..16j+15]. Bytes identical to ggml
/// `quantize_row_q8_K_ref`, bsums included; a zero block gets d = 0, q = 0,
/// bsums = 0 (ggml leaves bsums unwritten there), a block whose iscale
/// overflows (amax < ~3.7e-37) q = 0, bsums = 0, d = ±0 as ggml on x86.
/// @param x [n] floats, n % 256 == 0. @param y [n/256] blocks.
void quantize_q8_k(std::span<const float> x, std::span<block_q8_k> y) noexcept;

/// y = d * q. Exactly ggml `dequantize_row_q8_K`.
/// @param x [n/256] blocks. @param y [n] floats.
void dequantize_q8_k(std::span<const block_q8_k> x, std::span<float> y) noexcept;

// ---- K-quants -------------------------------------------------------------

/// Q4_K → f32, bit-exact with ggml `dequantize_row_q4_K`: per sub-block j
/// of 32, y = (d·sc_j)·q - dmin·m_j (f32 products, one subtraction, no fused
/// multiply-add), sc_j/m_j the 6-bit values of ggml `get_scale_min_k4`.
/// Any finite d/dmin (negative too). @param x [n/256] blocks. @param y [n] floats.
void dequantize_q4_k(std::span<const block_q4_k> x, std::span<float> y) noexcept;

/// Q5_K → f32, bit-exact with ggml `dequantize_row_q5_K` (as Q4_K with a
/// fifth bit: sub-block j's from bit j of qh[l]). @param x [n/256] blocks.
/// @param y [n] floats.
void dequantize_q5_k(std::span<const block_q5_k> x, std::span<float> y) noexcept;

/// Q6_K → f32, bit-exact with ggml `dequantize_row_q6_K`: per sub-block j of
/// 16, y = (d·scales_j)·(q - 32). @param x [n/256] blocks. @param y [n] floats.
void dequantize_q6_k(std::span<const block_q6_k> x, std::span<float> y) noexcept;

/// Simple Q4_K quantizer (NOT ggml's bytes: ggml searches scales with
/// make_qkx2_quants; this one is plain min/max): per 32-element sub-block,
/// lo = min(0, min x), hi = max x; dmin = f16 rounded UP of max_j(-lo_j)/63,
/// m_j = ceil(-lo_j/dmin); d = f16 rounded up of the largest needed step/63,
/// sc_j = ceil(step_j/d) with step_j = (hi_j + dmin·m_j)/15; q = round to
/// nearest of (x + dmin·m_j)/(d·sc_j), clamped to [0, 15]. Bound in the file
/// comment. Scalar only (for tests and writing model files, not hot paths).
/// @param x [n] floats, n % 256 == 0, |x| ≤ 5e5. @param y [n/256] blocks.
void quantize_q4_k(std::span<const float> x, std::span<block_q4_k> y) noexcept;

/// Simple Q5_K quantizer: as `quantize_q4_k` with 5-bit q (steps /31).
/// @param x [n] floats, n % 256 == 0, |x| ≤ 5e5. @param y [n/256] blocks.
void quantize_q5_k(std::span<const float> x, std::span<block_q5_k> y) noexcept;

/// Simple Q6_K quantizer (not ggml's make_qx_quants search): per 16-element
/// sub-block, step_j = amax_j/31; d = f16 rounded up of max_j step_j/127,
/// scales_j = ceil(step_j/d) (≤ 127), q - 32 = round(x/(d·scales_j)) clamped
/// to [-32, 31]. Scalar only.
/// @param x [n] floats, n % 256 == 0, |x| ≤ 5e5. @param y [n/256] blocks.
void quantize_q6_k(std::span<const float> x, std::span<block_q6_k> y) noexcept;

// ---- f16 / bf16 rows --------------------------------------------------------

/// f32 → IEEE half bits, round to nearest even, overflow → ±Inf, NaN stays
/// NaN; bit-exact with f16.hpp `fp32_to_fp16` and ggml
/// `ggml_fp32_to_fp16_row` (finite and infinite inputs; ggml's NaN payloads
/// are not specified). @param x [n] floats. @param y [n] f16 bits.
void convert_f32_to_f16(std::span<const float> x, std::span<uint16_t> y) noexcept;

/// IEEE half bits → f32 (exact; NaN stays NaN, quieted). Bit-exact with
/// f16.hpp `fp16_to_fp32` and ggml `ggml_fp16_to_fp32_row`.
/// @param x [n] f16 bits. @param y [n] floats.
void convert_f16_to_f32(std::span<const uint16_t> x, std::span<float> y) noexcept;

/// f32 → bfloat16 bits, round to nearest even, NaN → quiet NaN (high half |
/// 0x40); bit-exact with f16.hpp `fp32_to_bf16` and ggml
/// `ggml_fp32_to_bf16_row_ref` (no flush of subnormals).
/// @param x [n] floats. @param y [n] bf16 bits.
void convert_f32_to_bf16(std::span<const float> x, std::span<uint16_t> y) noexcept;

/// bfloat16 bits → f32 (exact: the bits shifted up by 16).
/// @param x [n] bf16 bits. @param y [n] floats.
void convert_bf16_to_f32(std::span<const uint16_t> x, std::span<float> y) noexcept;

// ---- the dispatched kernels behind the functions above ----------------------
// Variants "scalar", "avx2", "avx512"; benchmarks on 4096-element rows.

const kernel<quantize_q8_0_t>& quantize_q8_0_kernel();
const kernel<quantize_q4_0_t>& quantize_q4_0_kernel();
const kernel<quantize_q8_k_t>& quantize_q8_k_kernel();
const kernel<dequantize_q8_0_t>& dequantize_q8_0_kernel();
const kernel<dequantize_q4_0_t>& dequantize_q4_0_kernel();
const kernel<dequantize_q8_k_t>& dequantize_q8_k_kernel();
const kernel<dequantize_q4_k_t>& dequantize_q4_k_kernel();
const kernel<dequantize_q5_k_t>& dequantize_q5_k_kernel();
const kernel<dequantize_q6_k_t>& dequantize_q6_k_kernel();
const kernel<convert_to_16_t>& convert_f32_to_f16_kernel();
const kernel<convert_from_16_t>& convert_f16_to_f32_kernel();
const kernel<convert_to_16_t>& convert_f32_to_bf16_kernel();
const kernel<convert_from_16_t>& convert_bf16_to_f32_kernel();

} // namespace shoal::kernels
