#include "kernels/vector.hpp"

#include "kernels/f16.hpp"

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

// ---- every variant against the scalar reference ---------------------------
namespace {

/// Input families of the variant checks: random, zeros, large magnitudes
/// (products near 1e34, sums still finite), denormals, mixed signs with
/// cancellation.
enum class family { random, zeros, large, denormal, cancel };

std::vector<float> make(family f, size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    switch (f) {
      case family::random:
        v[i] = u(rng);
        break;
      case family::zeros:
        v[i] = 0;
        break;
      case family::large:
        v[i] = u(rng) * 1e17f;
        break;
      case family::denormal:
        v[i] = u(rng) * 1e-39f;
        break;
      case family::cancel:
        v[i] = (i % 2 ? -1.0f : 1.0f) * (1 + u(rng) * 1e-3f);
        break;
    }
  }
  return v;
}

const size_t lengths[] = {0, 1, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 127, 384, 1000, 4097};
const family families[] = {family::random, family::zeros, family::large, family::denormal,
                           family::cancel};

/// Checks `got` against the double-precision reference `ref` with magnitude
/// `mag` = Σ|a_i b_i|: within the worst-case f32 summation bound
/// n·2^-23·mag, and accumulates squared errors for the NMSE check.
struct error_sum {
  double err = 0, ref = 0;
  void add(double got, double want, double mag, size_t n) {
    CHECK(std::abs(got - want) <= (static_cast<double>(n) + 1) * 0x1p-23 * mag + 1e-45);
    err += (got - want) * (got - want);
    ref += want * want;
  }
  double nmse() const { return ref > 0 ? err / ref : 0; }
};

} // namespace

TEST_CASE("dot, l2sq, cosine and dot_f16: every variant agrees with the reference") {
  std::mt19937 rng(17);
  for (const auto& [name, fn] : dot_f32_kernel().runnable()) {
    auto l2 = l2sq_f32_kernel().runnable();
    CAPTURE(name);
    error_sum dot_err, l2_err, cos_err, f16_err;
    for (family f : families)
      for (size_t n : lengths) {
        CAPTURE(n);
        auto a = make(f, n, rng), b = make(f, n, rng);
        std::vector<uint16_t> h(n);
        double d = 0, mag = 0, l = 0, lmag = 0, aa = 0, bb = 0, dh = 0, hmag = 0;
        for (size_t i = 0; i < n; ++i) {
          h[i] = fp32_to_fp16(a[i]);
          d += double(a[i]) * b[i];
          mag += std::abs(double(a[i]) * b[i]);
          double diff = double(a[i]) - b[i];
          l += diff * diff;
          lmag += 2 * (double(a[i]) * a[i] + double(b[i]) * b[i]);
          aa += double(a[i]) * a[i];
          bb += double(b[i]) * b[i];
          dh += double(fp16_to_fp32(h[i])) * b[i];
          hmag += std::abs(double(fp16_to_fp32(h[i])) * b[i]);
        }
        dot_err.add(fn(a.data(), b.data(), n), d, mag, n);
        for (const auto& [lname, lfn] : l2)
          if (lname == name)
            l2_err.add(lfn(a.data(), b.data(), n), l, lmag, n);
        for (const auto& [cname, cfn] : cosine_f32_kernel().runnable())
          if (cname == name && f == family::random && n > 0)
            cos_err.add(cfn(a.data(), b.data(), n), d / std::sqrt(aa * bb), 1.0, n);
        for (const auto& [hname, hfn] : dot_f16_kernel().runnable())
          if (hname == name && f != family::large) // |x| > 65504 is Inf in f16
            f16_err.add(hfn(h.data(), b.data(), n), dh, hmag, n);
      }
    CHECK(dot_err.nmse() <= 1e-10);
    CHECK(l2_err.nmse() <= 1e-10);
    CHECK(cos_err.nmse() <= 1e-10);
    CHECK(f16_err.nmse() <= 1e-10);
  }
}

TEST_CASE("cosine is 0 for a zero vector and ±1 for parallel vectors") {
  for (const auto& [name, fn] : cosine_f32_kernel().runnable()) {
    CAPTURE(name);
    std::vector<float> a{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17};
    std::vector<float> neg(a.size()), zero(a.size(), 0.0f);
    for (size_t i = 0; i < a.size(); ++i)
      neg[i] = -2 * a[i];
    CHECK(fn(a.data(), a.data(), a.size()) == doctest::Approx(1).epsilon(1e-6));
    CHECK(fn(a.data(), neg.data(), a.size()) == doctest::Approx(-1).epsilon(1e-6));
    CHECK(fn(a.data(), zero.data(), a.size()) == 0);
  }
}

TEST_CASE("dot_rows: every variant equals one dot per row") {
  std::mt19937 rng(23);
  for (const auto& [name, fn] : dot_rows_f32_kernel().runnable()) {
    CAPTURE(name);
    for (size_t rows : {0u, 1u, 3u, 4u, 5u, 9u, 64u})
      for (size_t dim : {1u, 7u, 16u, 17u, 384u}) {
        auto q = make(family::random, dim, rng);
        auto m = make(family::random, rows * dim, rng);
        std::vector<float> out(rows, -1.0f);
        fn(rows, dim, out.data(), q.data(), m.data());
        for (size_t r = 0; r < rows; ++r) {
          double want = 0, mag = 0;
          for (size_t i = 0; i < dim; ++i) {
            want += double(q[i]) * m[r * dim + i];
            mag += std::abs(double(q[i]) * m[r * dim + i]);
          }
          CHECK(std::abs(out[r] - want) <= (dim + 1) * 0x1p-23 * mag);
        }
      }
  }
}

TEST_CASE("dot_i8: every variant equals the reference exactly") {
  std::mt19937 rng(29);
  std::uniform_int_distribution<int> u(-128, 127);
  for (const auto& [name, fn] : dot_i8_kernel().runnable()) {
    CAPTURE(name);
    for (size_t n : lengths) {
      std::vector<int8_t> a(n), b(n);
      for (size_t i = 0; i < n; ++i) {
        a[i] = static_cast<int8_t>(u(rng));
        b[i] = static_cast<int8_t>(u(rng));
      }
      int32_t want = 0;
      for (size_t i = 0; i < n; ++i)
        want += int32_t{a[i]} * b[i];
      CHECK(fn(a.data(), b.data(), n) == want);
      std::vector<int8_t> lo(n, -128);
      CHECK(fn(lo.data(), lo.data(), n) == static_cast<int32_t>(128 * 128 * n));
    }
  }
}
