#include "kernels/vector.hpp"

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

namespace {

#if defined(__x86_64__)
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

using dot_fn = float (*)(const float*, const float*, size_t) noexcept;

struct dispatch {
  dot_fn dot = dot_scalar;
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
