#include "kernels/vector.hpp"

#include "kernels/f16.hpp"
#include "kernels/simd.hpp"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace shoal::kernels {

namespace {

float finish_cosine(float ab, float aa, float bb) noexcept {
  if (!(aa > 0) || !(bb > 0))
    return 0;
  float c = ab / (std::sqrt(aa) * std::sqrt(bb));
  return std::clamp(c, -1.0f, 1.0f);
}

// ---- scalar references ---------------------------------------------------

float dot_f32_scalar(const float* a, const float* b, size_t n) noexcept {
  float s = 0;
  for (size_t i = 0; i < n; ++i)
    s += a[i] * b[i];
  return s;
}

float l2sq_f32_scalar(const float* a, const float* b, size_t n) noexcept {
  float s = 0;
  for (size_t i = 0; i < n; ++i)
    s += (a[i] - b[i]) * (a[i] - b[i]);
  return s;
}

float cosine_f32_scalar(const float* a, const float* b, size_t n) noexcept {
  float ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < n; ++i) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return finish_cosine(ab, aa, bb);
}

float dot_f16_scalar(const uint16_t* a, const float* b, size_t n) noexcept {
  float s = 0;
  for (size_t i = 0; i < n; ++i)
    s += fp16_to_fp32(a[i]) * b[i];
  return s;
}

int32_t dot_i8_scalar(const int8_t* a, const int8_t* b, size_t n) noexcept {
  int32_t s = 0;
  for (size_t i = 0; i < n; ++i)
    s += int32_t{a[i]} * int32_t{b[i]};
  return s;
}

void dot_rows_f32_scalar(size_t n_rows, size_t dim, float* out, const float* q,
                         const float* rows) noexcept {
  for (size_t r = 0; r < n_rows; ++r)
    out[r] = dot_f32_scalar(q, rows + r * dim, dim);
}

} // namespace

// ---- SIMD bodies, once per ISA ------------------------------------------
#if defined(__x86_64__)
SHOAL_BEGIN_AVX2
namespace avx2 {
using S = ops_avx2;
#include "kernels/vector_simd.inc"

/// int8 dot: sign-extend 16 bytes to 16-bit lanes, multiply-add pairs into
/// 32-bit lanes (exact), two accumulators.
int32_t dot_i8(const int8_t* a, const int8_t* b, size_t n) noexcept {
  __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
  size_t i = 0;
  auto load16 = [](const int8_t* p) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  };
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(load16(a + i), load16(b + i)));
    s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(load16(a + i + 16), load16(b + i + 16)));
  }
  __m256i s = _mm256_add_epi32(s0, s1);
  __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(1, 0, 3, 2)));
  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(2, 3, 0, 1)));
  int32_t r = _mm_cvtsi128_si32(h);
  for (; i < n; ++i)
    r += int32_t{a[i]} * int32_t{b[i]};
  return r;
}
} // namespace avx2
SHOAL_END_TARGET

SHOAL_BEGIN_AVX512
namespace avx512 {
using S = ops_avx512;
#include "kernels/vector_simd.inc"

/// int8 dot: 32 bytes sign-extended to 16-bit lanes per step, madd into
/// 32-bit lanes (exact).
int32_t dot_i8(const int8_t* a, const int8_t* b, size_t n) noexcept {
  __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
  size_t i = 0;
  auto load32 = [](const int8_t* p) {
    return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  };
  for (; i + 64 <= n; i += 64) {
    s0 = _mm512_add_epi32(s0, _mm512_madd_epi16(load32(a + i), load32(b + i)));
    s1 = _mm512_add_epi32(s1, _mm512_madd_epi16(load32(a + i + 32), load32(b + i + 32)));
  }
  for (; i + 32 <= n; i += 32)
    s0 = _mm512_add_epi32(s0, _mm512_madd_epi16(load32(a + i), load32(b + i)));
  int32_t r = _mm512_reduce_add_epi32(_mm512_add_epi32(s0, s1));
  for (; i < n; ++i)
    r += int32_t{a[i]} * int32_t{b[i]};
  return r;
}
} // namespace avx512
SHOAL_END_TARGET
#endif

namespace {

/// Random inputs of an embedding's size (384) for `registry::tune`.
struct bench_inputs {
  static constexpr size_t n = 384, rows = 64;
  std::vector<float> a, b, m;
  std::vector<uint16_t> h;
  std::vector<int8_t> ia, ib;
  bench_inputs() : a(n), b(n), m(n * rows), h(n), ia(n), ib(n) {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-1, 1);
    for (size_t i = 0; i < n; ++i) {
      a[i] = u(rng);
      b[i] = u(rng);
      h[i] = fp32_to_fp16(u(rng));
      ia[i] = static_cast<int8_t>(rng() % 255 - 127);
      ib[i] = static_cast<int8_t>(rng() % 255 - 127);
    }
    for (float& x : m)
      x = u(rng);
  }
};

const bench_inputs& inputs() {
  static const bench_inputs in;
  return in;
}

} // namespace

const kernel<dot_f32_t>& dot_f32_kernel() {
  static const kernel<dot_f32_t> k{"dot_f32",
                                   "float(const float*,const float*,size_t)",
                                   {SHOAL_VARIANTS(dot_f32_scalar, dot_f32)},
                                   [](dot_f32_t* f) {
                                     const auto& in = inputs();
                                     return bench_ns(
                                       [&] { bench_keep(f(in.a.data(), in.b.data(), in.n)); });
                                   }};
  return k;
}

const kernel<dot_f32_t>& l2sq_f32_kernel() {
  static const kernel<dot_f32_t> k{"l2sq_f32",
                                   "float(const float*,const float*,size_t)",
                                   {SHOAL_VARIANTS(l2sq_f32_scalar, l2sq_f32)},
                                   [](dot_f32_t* f) {
                                     const auto& in = inputs();
                                     return bench_ns(
                                       [&] { bench_keep(f(in.a.data(), in.b.data(), in.n)); });
                                   }};
  return k;
}

const kernel<dot_f32_t>& cosine_f32_kernel() {
  static const kernel<dot_f32_t> k{"cosine_f32",
                                   "float(const float*,const float*,size_t)",
                                   {SHOAL_VARIANTS(cosine_f32_scalar, cosine_f32)},
                                   [](dot_f32_t* f) {
                                     const auto& in = inputs();
                                     return bench_ns(
                                       [&] { bench_keep(f(in.a.data(), in.b.data(), in.n)); });
                                   }};
  return k;
}

const kernel<dot_f16_t>& dot_f16_kernel() {
  static const kernel<dot_f16_t> k{"dot_f16",
                                   "float(const uint16_t*,const float*,size_t)",
                                   {SHOAL_VARIANTS(dot_f16_scalar, dot_f16)},
                                   [](dot_f16_t* f) {
                                     const auto& in = inputs();
                                     return bench_ns(
                                       [&] { bench_keep(f(in.h.data(), in.b.data(), in.n)); });
                                   }};
  return k;
}

const kernel<dot_i8_t>& dot_i8_kernel() {
  static const kernel<dot_i8_t> k{"dot_i8",
                                  "int32_t(const int8_t*,const int8_t*,size_t)",
                                  {SHOAL_VARIANTS(dot_i8_scalar, dot_i8)},
                                  [](dot_i8_t* f) {
                                    const auto& in = inputs();
                                    return bench_ns(
                                      [&] { bench_keep(f(in.ia.data(), in.ib.data(), in.n)); });
                                  }};
  return k;
}

const kernel<dot_rows_t>& dot_rows_f32_kernel() {
  static const kernel<dot_rows_t> k{"dot_rows_f32",
                                    "void(size_t,size_t,float*,const float*,const float*)",
                                    {SHOAL_VARIANTS(dot_rows_f32_scalar, dot_rows_f32)},
                                    [](dot_rows_t* f) {
                                      const auto& in = inputs();
                                      float out[bench_inputs::rows];
                                      return bench_ns([&] {
                                        f(in.rows, in.n, out, in.a.data(), in.m.data());
                                        bench_keep(out[0]);
                                      });
                                    }};
  return k;
}

void register_vector_kernels() {
  dot_f32_kernel();
  l2sq_f32_kernel();
  cosine_f32_kernel();
  dot_f16_kernel();
  dot_i8_kernel();
  dot_rows_f32_kernel();
}

float dot(std::span<const float> a, std::span<const float> b) noexcept {
  return dot_f32_kernel().get()(a.data(), b.data(), a.size());
}

float l2sq(std::span<const float> a, std::span<const float> b) noexcept {
  return l2sq_f32_kernel().get()(a.data(), b.data(), a.size());
}

float cosine(std::span<const float> a, std::span<const float> b) noexcept {
  return cosine_f32_kernel().get()(a.data(), b.data(), a.size());
}

float dot_f16(std::span<const uint16_t> a, std::span<const float> b) noexcept {
  return dot_f16_kernel().get()(a.data(), b.data(), a.size());
}

int32_t dot_i8(std::span<const signed char> a, std::span<const signed char> b) noexcept {
  return dot_i8_kernel().get()(reinterpret_cast<const int8_t*>(a.data()),
                               reinterpret_cast<const int8_t*>(b.data()), a.size());
}

void dot_rows(std::span<float> out, std::span<const float> q,
              std::span<const float> rows) noexcept {
  dot_rows_f32_kernel().get()(out.size(), q.size(), out.data(), q.data(), rows.data());
}

float dot_ref(std::span<const float> a, std::span<const float> b) noexcept {
  return dot_f32_scalar(a.data(), b.data(), a.size());
}

int32_t dot_i8_ref(std::span<const signed char> a, std::span<const signed char> b) noexcept {
  return dot_i8_scalar(reinterpret_cast<const int8_t*>(a.data()),
                       reinterpret_cast<const int8_t*>(b.data()), a.size());
}

float quantize_i8(std::span<const float> x, std::span<signed char> q) noexcept {
  float amax = 0;
  for (float v : x)
    amax = std::max(amax, std::fabs(v));
  if (!(amax > 0)) {
    std::fill(q.begin(), q.end(), static_cast<signed char>(0));
    return 0;
  }
  float scale = amax / 127.0f;
  float inv = 127.0f / amax;
  for (size_t i = 0; i < x.size(); ++i)
    q[i] = static_cast<signed char>(std::clamp(std::lround(x[i] * inv), -127L, 127L));
  return scale;
}

float normalize(std::span<float> x) noexcept {
  // Sum of squares in double: a norm feeds every stored embedding, and the
  // cost is one pass over a few hundred floats.
  double ss = 0;
  for (float v : x)
    ss += static_cast<double>(v) * v;
  auto norm = static_cast<float>(std::sqrt(ss));
  if (!(norm > 0) || !std::isfinite(norm))
    return norm;
  float inv = 1.0f / norm;
  for (float& v : x)
    v *= inv;
  return norm;
}

bool all_finite(std::span<const float> x) noexcept {
  for (float v : x)
    if (!std::isfinite(v))
      return false;
  return true;
}

} // namespace shoal::kernels
