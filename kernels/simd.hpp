#pragma once
/// @file Internal: per-ISA vector operations for kernel bodies written once.
/// A kernel file defines its SIMD bodies in an `.inc` file written against
/// the ops below (`S::load`, `S::fmadd`, ...) and includes it once per ISA
/// inside `SHOAL_BEGIN_AVX2 ... SHOAL_END_TARGET` (namespace `avx2`, with
/// `using S = ops_avx2;`) and `SHOAL_BEGIN_AVX512 ...` (namespace `avx512`).
/// The pragma regions give every function there, templates included, the
/// target's instructions without raising the whole binary's baseline.

#if defined(__x86_64__)
// GCC 12's AVX-512 headers start some intrinsics from _mm512_undefined_*,
// which -Wuninitialized reports at the header's lines (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstddef>
#include <cstdint>

#define SHOAL_BEGIN_AVX2 _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c\")")
#define SHOAL_BEGIN_AVX512                                                                         \
  _Pragma("GCC push_options")                                                                      \
    _Pragma("GCC target(\"avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl\")")
#define SHOAL_END_TARGET _Pragma("GCC pop_options")

namespace shoal::kernels {

SHOAL_BEGIN_AVX2
/// 8 f32 lanes.
struct ops_avx2 {
  using vf = __m256;
  static constexpr size_t width = 8;
  static vf zero() { return _mm256_setzero_ps(); }
  static vf set1(float x) { return _mm256_set1_ps(x); }
  static vf load(const float* p) { return _mm256_loadu_ps(p); }
  static vf load_f16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static void store(float* p, vf v) { _mm256_storeu_ps(p, v); }
  static vf add(vf a, vf b) { return _mm256_add_ps(a, b); }
  static vf sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
  static vf mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
  static vf fmadd(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
  static float hsum(vf v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
  }
};
SHOAL_END_TARGET

SHOAL_BEGIN_AVX512
/// 16 f32 lanes.
struct ops_avx512 {
  using vf = __m512;
  static constexpr size_t width = 16;
  static vf zero() { return _mm512_setzero_ps(); }
  static vf set1(float x) { return _mm512_set1_ps(x); }
  static vf load(const float* p) { return _mm512_loadu_ps(p); }
  static vf load_f16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static void store(float* p, vf v) { _mm512_storeu_ps(p, v); }
  static vf add(vf a, vf b) { return _mm512_add_ps(a, b); }
  static vf sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
  static vf mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
  static vf fmadd(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
  static float hsum(vf v) { return _mm512_reduce_add_ps(v); }
};
SHOAL_END_TARGET

} // namespace shoal::kernels
#endif

/// The built-in variants of a kernel for `kernel<Fn>`'s initializer list:
/// the scalar reference `ref`, then `avx2::name` and `avx512::name` (the
/// bodies a file defines in its target regions).
#if defined(__x86_64__)
#define SHOAL_VARIANTS(ref, name)                                                                  \
  {"scalar", ::shoal::kernels::isa::scalar, ref},                                                  \
    {"avx2", ::shoal::kernels::isa::avx2, avx2::name}, {                                           \
    "avx512", ::shoal::kernels::isa::avx512, avx512::name                                          \
  }
#else
#define SHOAL_VARIANTS(ref, name)                                                                  \
  { "scalar", ::shoal::kernels::isa::scalar, ref }
#endif
