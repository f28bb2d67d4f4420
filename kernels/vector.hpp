#pragma once
/// @file Vector kernels: dot product, squared L2 distance and cosine over f32
/// (dot also f16·f32 and int8·int8), one query against n rows, normalisation,
/// per-vector int8 quantization. Each dispatched kernel has a scalar
/// reference and AVX2 / AVX-512 variants picked by the registry
/// (registry.hpp); `*_kernel()` exposes the variants to tests and benchmarks.
/// Pure functions: no allocation, no I/O, no locks; thread-safe.
///
/// Accuracy: every variant accumulates in f32 (the SIMD ones in another order
/// than the sequential scalar reference), so against the exact (double) sum
/// each result lies within the worst-case bound (n+1)·2^-23·Σ|a_i b_i|, and
/// the NMSE over random, zero, large (1e17), denormal and cancelling inputs
/// is ≤ 1e-10 (vector.test.cpp checks both for every variant).

#include "kernels/registry.hpp"

#include <cstddef>
#include <cstdint>
#include <span>

namespace shoal::kernels {

using dot_f32_t = float(const float* a, const float* b, size_t n) noexcept;
using dot_f16_t = float(const uint16_t* a, const float* b, size_t n) noexcept;
using dot_i8_t = int32_t(const int8_t* a, const int8_t* b, size_t n) noexcept;
/// out[r] = Σ_i q[i] · rows[r·dim + i] for r < n_rows (rows row-major, [n_rows, dim]).
using dot_rows_t = void(size_t n_rows, size_t dim, float* out, const float* q,
                        const float* rows) noexcept;

/// Σ a[i]·b[i]. @pre a.size() == b.size().
float dot(std::span<const float> a, std::span<const float> b) noexcept;
/// Σ (a[i]-b[i])². @pre a.size() == b.size().
float l2sq(std::span<const float> a, std::span<const float> b) noexcept;
/// a·b / (|a| |b|), in [-1, 1]; 0 when either vector is zero. @pre same size.
float cosine(std::span<const float> a, std::span<const float> b) noexcept;
/// Σ a[i]·b[i] with a in IEEE half (f16.hpp). @pre a.size() == b.size().
float dot_f16(std::span<const uint16_t> a, std::span<const float> b) noexcept;
/// Exact Σ a[i]·b[i] of int8 vectors (no overflow for n < 2^17). All variants
/// give the same result. @pre a.size() == b.size().
int32_t dot_i8(std::span<const signed char> a, std::span<const signed char> b) noexcept;
/// One query against n rows: out[r] = dot(q, rows[r]) with rows [out.size(), q.size()]
/// row-major. @pre rows.size() == out.size() * q.size().
void dot_rows(std::span<float> out, std::span<const float> q, std::span<const float> rows) noexcept;

/// Scalar reference of `dot` (sequential f32 accumulation).
float dot_ref(std::span<const float> a, std::span<const float> b) noexcept;
/// Scalar reference of `dot_i8`.
int32_t dot_i8_ref(std::span<const signed char> a, std::span<const signed char> b) noexcept;

/// Scales x in place to unit L2 norm. Returns the norm before scaling; a zero
/// (or non-finite) vector is left unchanged and its norm returned.
float normalize(std::span<float> x) noexcept;

/// Whether every element is finite (no NaN, no ±Inf).
bool all_finite(std::span<const float> x) noexcept;

/// Per-vector symmetric int8 scalar quantization: scale = max_i |x[i]| / 127,
/// q[i] = round(x[i] / scale) in [-127, 127]; returns scale (0 for a zero
/// vector, then q is all zero). Error bound: |x[i] - scale*q[i]| <= scale/2.
/// Dequantize with x[i] ≈ scale*q[i]. @pre q.size() == x.size(), x finite.
/// Used for stored embeddings (4× smaller than f32). Thread-safe (pure).
float quantize_i8(std::span<const float> x, std::span<signed char> q) noexcept;

/// The dispatched kernels (variants, active choice) behind the functions above.
const kernel<dot_f32_t>& dot_f32_kernel();
const kernel<dot_f32_t>& l2sq_f32_kernel();
const kernel<dot_f32_t>& cosine_f32_kernel();
const kernel<dot_f16_t>& dot_f16_kernel();
const kernel<dot_i8_t>& dot_i8_kernel();
const kernel<dot_rows_t>& dot_rows_f32_kernel();

} // namespace shoal::kernels
