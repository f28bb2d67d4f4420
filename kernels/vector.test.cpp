#include "kernels/vector.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

using namespace shoal::kernels;

TEST_CASE("dot matches the scalar reference for lengths off the SIMD width") {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1, 1);
  for (size_t n : {0u, 1u, 7u, 8u, 31u, 33u, 384u, 1000u}) {
    std::vector<float> a(n), b(n);
    for (size_t i = 0; i < n; ++i) {
      a[i] = u(rng);
      b[i] = u(rng);
    }
    double ref = 0, mag = 0;
    for (size_t i = 0; i < n; ++i) {
      ref += static_cast<double>(a[i]) * b[i];
      mag += std::abs(static_cast<double>(a[i]) * b[i]);
    }
    CHECK(std::abs(dot(a, b) - ref) <= 1e-6 * (mag + 1));
    CHECK(std::abs(dot_ref(a, b) - ref) <= 1e-5 * (mag + 1));
  }
}

TEST_CASE("normalize gives unit norm and leaves zero vectors alone") {
  std::vector<float> x{3, 4};
  CHECK(normalize(x) == doctest::Approx(5));
  CHECK(x[0] == doctest::Approx(0.6));
  CHECK(x[1] == doctest::Approx(0.8));
  std::vector<float> z(5, 0.0f);
  CHECK(normalize(z) == 0);
  for (float v : z)
    CHECK(v == 0);
}

TEST_CASE("all_finite rejects NaN and infinities") {
  std::vector<float> x{1, 2, 3};
  CHECK(all_finite(x));
  x[1] = std::numeric_limits<float>::quiet_NaN();
  CHECK_FALSE(all_finite(x));
  x[1] = std::numeric_limits<float>::infinity();
  CHECK_FALSE(all_finite(x));
}
