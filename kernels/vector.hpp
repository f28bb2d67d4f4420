#pragma once
/// @file Vector kernels over f32 spans: dot product, squared L2 norm,
/// normalisation. Each has a scalar reference (`*_ref`) and a dispatched entry
/// point that uses AVX2+FMA when the CPU has it (detected once at first use;
/// the binary itself only assumes baseline x86-64). Pure functions: no
/// allocation, no I/O, no locks; thread-safe.

#include <cstddef>
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

} // namespace shoal::kernels
