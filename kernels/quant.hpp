#pragma once
/// @file Quantization in ggml's block layouts (blocks.hpp): Q8_0 and Q4_0
/// quantize/dequantize with bytes identical to llama.cpp's reference
/// quantizer, Q8_K activations, and Q4_K/Q5_K/Q6_K dequantization exactly as
/// ggml computes it.
///
/// Caveats first:
///  - Inputs must be finite (no NaN/Inf); lengths must be whole blocks
///    (n % 32 == 0 for Q8_0/Q4_0, n % 256 == 0 for the K formats). Neither is
///    checked: a kernel never asserts on caller data.
///  - Spans: `x` is the input, `y` the output; y must hold exactly the
///    blocks/elements x implies (y.size() == x.size()/32 etc.).
///  - Pure functions: no allocation, no I/O, no locks; thread-safe.
///
/// Source of every format: ggml `ggml-common.h` (layouts) and
/// `ggml-quants.c` (quantize_row_*_ref, dequantize_row_*), llama.cpp release
/// as shipped in node-llama-cpp 3.22.1 (commit de3ff81). Test vectors made
/// with that code live in kernels/testdata/.

#include "kernels/blocks.hpp"

#include <cstddef>
#include <cstdint>
#include <span>

namespace shoal::kernels {

// ---- Q8_0 / Q4_0 ----------------------------------------------------------

/// Quantizes to Q8_0: per block of 32, d = amax/127 (f32), id = 1/d (0 when
/// d == 0), q[i] = roundf(x[i]*id) (half away from zero), stored d = f16(d).
/// Bytes identical to ggml `quantize_row_q8_0_ref`. A block with amax below
/// ~3.7e-37 (1/d overflows) gets q = 0, as ggml's reference on x86.
/// Round trip: |x - d̂·q| ≤ d/2 + 127·|d - d̂| ≤ amax/254 + amax·2^-11 (d̂ = f16(d)).
/// @param x [n] floats, n % 32 == 0. @param y [n/32] blocks.
void quantize_q8_0(std::span<const float> x, std::span<block_q8_0> y) noexcept;

/// Quantizes to Q4_0: per block of 32, m = the first element of largest
/// magnitude (signed), d = m/-8, id = 1/d (0 when d == 0),
/// q = min(15, trunc(x*id + 8.5)), element j in the low nibble of byte j,
/// element j+16 in the high nibble; stored d = f16(d). Bytes identical to
/// ggml `quantize_row_q4_0_ref`. Round trip: |x - d̂·(q-8)| ≤ |d| + 8·|d - d̂|
/// ≤ amax/8 + amax·2^-11 (|d| only where q clamps at 15, i.e. x ≈ -m; |d|/2
/// elsewhere).
/// @param x [n] floats, n % 32 == 0. @param y [n/32] blocks.
void quantize_q4_0(std::span<const float> x, std::span<block_q4_0> y) noexcept;

/// Quantizes to Q8_K (activations for K-quant dot products): per block of
/// 256, m = first element of largest magnitude, iscale = -127/m,
/// q = min(127, round-half-even(iscale*x)), d = 1/iscale (f32), bsums[j] =
/// Σ q[16j..16j+15]. Bytes identical to ggml `quantize_row_q8_K_ref`,
/// including bsums; a zero block (or one whose iscale overflows) is all
/// zeros (ggml leaves bsums unwritten there). Round trip: |x - d·q| ≤ |d|/2.
/// @param x [n] floats, n % 256 == 0. @param y [n/256] blocks.
void quantize_q8_k(std::span<const float> x, std::span<block_q8_k> y) noexcept;

/// y[32b + i] = f16→f32(d) * q[i]. Exactly ggml `dequantize_row_q8_0`.
/// @param x [n/32] blocks. @param y [n] floats.
void dequantize_q8_0(std::span<const block_q8_0> x, std::span<float> y) noexcept;

/// y[32b + j] = ((qs[j] & 15) - 8) * d, y[32b + j + 16] = ((qs[j] >> 4) - 8) * d.
/// Exactly ggml `dequantize_row_q4_0`. @param x [n/32] blocks. @param y [n] floats.
void dequantize_q4_0(std::span<const block_q4_0> x, std::span<float> y) noexcept;

/// y = d * q (f32 d). Exactly ggml `dequantize_row_q8_K`.
/// @param x [n/256] blocks. @param y [n] floats.
void dequantize_q8_k(std::span<const block_q8_k> x, std::span<float> y) noexcept;

// ---- K-quants -------------------------------------------------------------

/// Q4_K → f32, bit-exact with ggml `dequantize_row_q4_K`: per sub-block j
/// of 32, y = (d·sc_j)·q - dmin·m_j (two f32 products, one subtraction,
/// no fused multiply-add), sc_j/m_j the 6-bit values of ggml
/// `get_scale_min_k4`. @param x [n/256] blocks. @param y [n] floats.
void dequantize_q4_k(std::span<const block_q4_k> x, std::span<float> y) noexcept;

/// Q5_K → f32, bit-exact with ggml `dequantize_row_q5_K` (as Q4_K with a
/// fifth bit from qh). @param x [n/256] blocks. @param y [n] floats.
void dequantize_q5_k(std::span<const block_q5_k> x, std::span<float> y) noexcept;

/// Q6_K → f32, bit-exact with ggml `dequantize_row_q6_K`: per sub-block j of
/// 16, y = (d·scales_j)·(q - 32). @param x [n/256] blocks. @param y [n] floats.
void dequantize_q6_k(std::span<const block_q6_k> x, std::span<float> y) noexcept;

} // namespace shoal::kernels
