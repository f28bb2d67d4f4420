#pragma once
/// @file Vector kernels over f32 spans: dot product, squared L2 norm,
/// normalisation. Each has a scalar reference (`*_ref`) and a dispatched entry
/// point that uses AVX2+FMA when the CPU has it (detected once at first use;
/// the binary itself only assumes baseline x86-64). Pure functions: no
/// allocation, no I/O, no locks; thread-safe.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace shoal::kernels {

/// Dot product sum_i a[i]*b[i]. @pre a.size() == b.size().
/// Accumulates in f32 with 4×8 lanes on AVX2 (result differs from the scalar
/// reference by rounding only: relative error ≤ 1e-5 for n ≤ 4096 on
/// same-sign data). Thread-safe (pure).
float dot(std::span<const float> a, std::span<const float> b) noexcept;

/// Scalar reference of `dot` (sequential f32 accumulation).
float dot_ref(std::span<const float> a, std::span<const float> b) noexcept;

/// Scales x in place to unit L2 norm. Returns the norm before scaling; a zero
/// (or non-finite) vector is left unchanged and its norm returned.
float normalize(std::span<float> x) noexcept;

/// Whether every element is finite (no NaN, no ±Inf).
bool all_finite(std::span<const float> x) noexcept;

/// Name of the variant `dot` dispatches to on this CPU ("avx2" or "scalar").
std::string_view dot_variant() noexcept;

/// Per-vector symmetric int8 scalar quantization: scale = max_i |x[i]| / 127,
/// q[i] = round(x[i] / scale) in [-127, 127]; returns scale (0 for a zero
/// vector, then q is all zero). Error bound: |x[i] - scale*q[i]| <= scale/2.
/// Dequantize with x[i] ≈ scale*q[i]. @pre q.size() == x.size(), x finite.
/// Used for stored embeddings (4× smaller than f32). Thread-safe (pure).
float quantize_i8(std::span<const float> x, std::span<signed char> q) noexcept;

/// Exact integer dot product sum_i a[i]*b[i] of int8 vectors (no overflow for
/// n < 2^17). AVX2 when the CPU has it, else scalar; both give the same
/// result. @pre a.size() == b.size(). Thread-safe (pure).
int32_t dot_i8(std::span<const signed char> a, std::span<const signed char> b) noexcept;

/// Scalar reference of `dot_i8`.
int32_t dot_i8_ref(std::span<const signed char> a, std::span<const signed char> b) noexcept;

} // namespace shoal::kernels
