#include "kernels/vector.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace shoal::kernels {

float dot_ref(std::span<const float> a, std::span<const float> b) noexcept {
  float s = 0;
  for (size_t i = 0; i < a.size(); ++i)
    s += a[i] * b[i];
  return s;
}

int32_t dot_i8_ref(std::span<const signed char> a, std::span<const signed char> b) noexcept {
  int32_t s = 0;
  for (size_t i = 0; i < a.size(); ++i)
    s += int32_t{a[i]} * int32_t{b[i]};
  return s;
}

namespace {

#if defined(__x86_64__)
/// int8 dot: sign-extend 16 bytes to 16-bit lanes, multiply-add pairs into
/// 32-bit lanes (exact), two accumulators.
__attribute__((target("avx2"))) int32_t dot_i8_avx2(const signed char* a, const signed char* b,
                                                    size_t n) noexcept {
  __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i a0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i)));
    __m256i b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i)));
    __m256i a1 =
      _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i + 16)));
    __m256i b1 =
      _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i + 16)));
    s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(a0, b0));
    s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(a1, b1));
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

__attribute__((target("avx2,fma"))) float dot_avx2(const float* a, const float* b,
                                                   size_t n) noexcept {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8)
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  float r = _mm_cvtss_f32(h);
  for (; i < n; ++i)
    r += a[i] * b[i];
  return r;
}
#endif

float dot_scalar(const float* a, const float* b, size_t n) noexcept {
  return dot_ref({a, n}, {b, n});
}

int32_t dot_i8_scalar(const signed char* a, const signed char* b, size_t n) noexcept {
  return dot_i8_ref({a, n}, {b, n});
}

using dot_fn = float (*)(const float*, const float*, size_t) noexcept;
using dot_i8_fn = int32_t (*)(const signed char*, const signed char*, size_t) noexcept;

struct dispatch {
  dot_fn dot = dot_scalar;
  dot_i8_fn dot_i8 = dot_i8_scalar;
  std::string_view name = "scalar";
  dispatch() noexcept {
    // SHOAL_KERNELS=scalar forces the reference path (used by tests).
    const char* force = std::getenv("SHOAL_KERNELS");
    if (force != nullptr && std::strcmp(force, "scalar") == 0)
      return;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      dot = dot_avx2;
      dot_i8 = dot_i8_avx2;
      name = "avx2";
    }
#endif
  }
};

const dispatch& chosen() noexcept {
  static const dispatch d;
  return d;
}

} // namespace

float dot(std::span<const float> a, std::span<const float> b) noexcept {
  return chosen().dot(a.data(), b.data(), a.size());
}

int32_t dot_i8(std::span<const signed char> a, std::span<const signed char> b) noexcept {
  return chosen().dot_i8(a.data(), b.data(), a.size());
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

std::string_view dot_variant() noexcept {
  return chosen().name;
}

float normalize(std::span<float> x) noexcept {
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
