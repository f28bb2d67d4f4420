#include "kernels/vector.hpp"

#include <doctest/doctest.h>

#include <algorithm>
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

TEST_CASE("dot_i8 equals the scalar reference exactly, including extremes and tails") {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> u(-127, 127);
  for (size_t n : {0u, 1u, 15u, 16u, 31u, 32u, 33u, 384u, 1001u}) {
    std::vector<signed char> a(n), b(n);
    for (size_t i = 0; i < n; ++i) {
      a[i] = static_cast<signed char>(u(rng));
      b[i] = static_cast<signed char>(u(rng));
    }
    CHECK(dot_i8(a, b) == dot_i8_ref(a, b));
    // Largest magnitudes: every product is 127*127 or -127*127.
    std::vector<signed char> hi(n, 127), lo(n, -127);
    CHECK(dot_i8(hi, hi) == static_cast<int32_t>(127 * 127 * n));
    CHECK(dot_i8(hi, lo) == -static_cast<int32_t>(127 * 127 * n));
  }
}

TEST_CASE("quantize_i8 round trip stays within half a step, and keeps cosine") {
  std::mt19937 rng(5);
  std::normal_distribution<float> g(0, 1);
  std::vector<float> x(384), y(384);
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = g(rng);
    y[i] = x[i] + 0.5f * g(rng);
  }
  normalize(x);
  normalize(y);
  std::vector<signed char> qx(384), qy(384);
  float sx = quantize_i8(x, qx), sy = quantize_i8(y, qy);
  REQUIRE(sx > 0);
  for (size_t i = 0; i < x.size(); ++i)
    CHECK(std::abs(x[i] - sx * qx[i]) <= sx / 2 * 1.0001f);
  float approx = sx * sy * static_cast<float>(dot_i8(qx, qy));
  CHECK(std::abs(approx - dot(x, y)) < 0.01f);

  std::vector<float> zeros(10, 0.0f);
  std::vector<signed char> qz(10, 3);
  CHECK(quantize_i8(zeros, qz) == 0.0f);
  CHECK(std::all_of(qz.begin(), qz.end(), [](signed char v) { return v == 0; }));
}
