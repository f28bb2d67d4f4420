#include "kernels/matmul.hpp"

#include "kernels/f16.hpp"
#include "kernels/quant.hpp"

#include <doctest/doctest.h>

#include <array>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace shoal::kernels;

namespace {

/// Input families of the variant checks (as vector.test.cpp): random, zeros,
/// large magnitudes, denormals.
enum class family { random, zeros, large, denormal };
const family families[] = {family::random, family::zeros, family::large, family::denormal};

std::vector<float> make(family f, size_t n, std::mt19937& rng, float scale = 1) {
  std::normal_distribution<float> g(0, 1);
  std::vector<float> v(n);
  for (float& e : v) {
    switch (f) {
      case family::random:
        e = g(rng) * scale;
        break;
      case family::zeros:
        e = 0;
        break;
      case family::large:
        e = g(rng) * 1e17f;
        break;
      case family::denormal:
        e = g(rng) * 1e-39f;
        break;
    }
  }
  return v;
}

/// Accumulates squared errors against a reference; `bound` checks one value
/// within an absolute error.
struct error_sum {
  double err = 0, ref = 0;
  size_t over = 0;
  void add(double got, double want, double bound) {
    if (!(std::abs(got - want) <= bound))
      ++over;
    err += (got - want) * (got - want);
    ref += want * want;
  }
  double nmse() const { return ref > 0 ? err / ref : err; }
};

/// Random bytes with finite f16 scales: arbitrary quants (all 6-bit scales,
/// mins and codes occur), scales in [2^-12, 2^-4).
template <class B>
std::vector<B> random_blocks(size_t n, std::mt19937& rng) {
  std::vector<B> v(n);
  for (auto& b : v) {
    auto* p = reinterpret_cast<uint8_t*>(&b);
    for (size_t i = 0; i < sizeof(B); ++i)
      p[i] = static_cast<uint8_t>(rng());
    std::uniform_real_distribution<float> u(-12, -4);
    b.d = fp32_to_fp16(std::exp2(u(rng)));
    if constexpr (requires { b.dmin; })
      b.dmin = fp32_to_fp16(std::exp2(u(rng)));
  }
  return v;
}

/// The f32 values of quantized blocks (quant.hpp's dequantizers).
template <class B>
std::vector<float> dequant(const std::vector<B>& b) {
  constexpr bool legacy = std::is_same_v<B, block_q8_0> || std::is_same_v<B, block_q4_0>;
  std::vector<float> y(b.size() * (legacy ? 32 : 256));
  if constexpr (std::is_same_v<B, block_q8_0>)
    dequantize_q8_0(b, y);
  else if constexpr (std::is_same_v<B, block_q4_0>)
    dequantize_q4_0(b, y);
  else if constexpr (std::is_same_v<B, block_q4_k>)
    dequantize_q4_k(b, y);
  else if constexpr (std::is_same_v<B, block_q6_k>)
    dequantize_q6_k(b, y);
  else
    dequantize_q8_k(b, y);
  return y;
}

/// Exact (double) Y[b, r] = Σ W[r, i] X[b, i] and Σ |W||X| per output.
void exact(size_t rows, size_t batch, size_t cols, const std::vector<float>& w,
           const std::vector<float>& x, std::vector<double>& y, std::vector<double>& mag) {
  y.assign(rows * batch, 0);
  mag.assign(rows * batch, 0);
  for (size_t b = 0; b < batch; ++b)
    for (size_t r = 0; r < rows; ++r) {
      double s = 0, m = 0;
      for (size_t i = 0; i < cols; ++i) {
        double p = double(w[r * cols + i]) * x[b * cols + i];
        s += p;
        m += std::abs(p);
      }
      y[b * rows + r] = s;
      mag[b * rows + r] = m;
    }
}

const size_t shapes[][3] = { // rows, batch, cols (a multiple of 256)
  {1, 1, 256},  {3, 1, 256},  {4, 1, 512},  {5, 2, 256}, {9, 3, 768},
  {16, 4, 256}, {7, 5, 1024}, {33, 8, 512}, {2, 9, 256}};
/// More shapes for 32-element blocks: odd block counts (288 columns = 9
/// blocks, as in the 15M stories shape), down to one block.
/// Batches of panel_min_batch and more take the VNNI prefill path (16-row
/// panels, 8-column tiles, partial panels and column tails).
const size_t legacy_shapes[][3] = {{4, 1, 288}, {5, 4, 288},   {8, 8, 32},    {3, 5, 96},
                                   {9, 1, 32},  {33, 40, 288}, {16, 32, 256}, {70, 35, 512},
                                   {1, 33, 64}, {129, 64, 96}};

} // namespace

TEST_CASE("weight types carry ggml's ids, block sizes and row bytes") {
  CHECK(static_cast<uint32_t>(weight_type::q4_0) == 2);
  CHECK(static_cast<uint32_t>(weight_type::q8_0) == 8);
  CHECK(static_cast<uint32_t>(weight_type::q4_k) == 12);
  CHECK(static_cast<uint32_t>(weight_type::q6_k) == 14);
  CHECK(static_cast<uint32_t>(weight_type::bf16) == 30);
  CHECK(weight_type_from_id(14) == weight_type::q6_k);
  CHECK_FALSE(weight_type_from_id(13).has_value()); // Q5_K: not computed here
  CHECK(row_bytes(weight_type::f32, 4096) == 16384);
  CHECK(row_bytes(weight_type::f16, 4096) == 8192);
  CHECK(row_bytes(weight_type::bf16, 4096) == 8192);
  CHECK(row_bytes(weight_type::q8_0, 4096) == 128 * 34);
  CHECK(row_bytes(weight_type::q4_0, 4096) == 128 * 18);
  CHECK(row_bytes(weight_type::q4_k, 4096) == 16 * 144);
  CHECK(row_bytes(weight_type::q6_k, 4096) == 16 * 210);
  CHECK(to_string(weight_type::q4_k) == "Q4_K");
  CHECK(matmul_scratch_bytes(weight_type::f16, 4096, 8) == 0);
  CHECK(matmul_scratch_bytes(weight_type::q4_0, 4096, 2) >= 2 * 128 * 34);
  CHECK(matmul_scratch_bytes(weight_type::q6_k, 4096, 2) >= 2 * 16 * 292);
}

TEST_CASE("float matmul: every variant matches the exact product") {
  std::mt19937 rng(41);
  const size_t col_sizes[] = {1, 7, 8, 15, 16, 17, 33, 100, 256, 1000};
  for (const char* fmt : {"f32", "f16", "bf16"}) {
    CAPTURE(fmt);
    std::string f = fmt;
    const auto& k16 = f == "f16" ? matmul_f16_kernel() : matmul_bf16_kernel();
    auto variants32 = matmul_f32_kernel().runnable();
    auto variants16 = k16.runnable();
    size_t n_variants = f == "f32" ? variants32.size() : variants16.size();
    for (size_t v = 0; v < n_variants; ++v) {
      std::string name = f == "f32" ? variants32[v].first : variants16[v].first;
      CAPTURE(name);
      error_sum err;
      for (family fam : families) {
        if (f == "f16" && fam == family::large)
          continue; // |w| > 65504 is Inf in f16
        for (const auto& s : shapes)
          for (size_t cols : col_sizes) {
            size_t rows = s[0], batch = s[1];
            auto wf = make(fam, rows * cols, rng);
            auto x = make(fam, batch * cols, rng);
            std::vector<uint16_t> wh(wf.size());
            for (size_t i = 0; i < wf.size(); ++i) {
              wh[i] = f == "f16" ? fp32_to_fp16(wf[i]) : fp32_to_bf16(wf[i]);
              if (f != "f32")
                wf[i] = f == "f16" ? fp16_to_fp32(wh[i]) : bf16_to_fp32(wh[i]);
            }
            std::vector<double> want, mag;
            exact(rows, batch, cols, wf, x, want, mag);
            std::vector<float> y(rows * batch, -1.0f);
            if (f == "f32")
              variants32[v].second(rows, batch, cols, y.data(), rows, wf.data(), x.data());
            else
              variants16[v].second(rows, batch, cols, y.data(), rows, wh.data(), x.data());
            for (size_t i = 0; i < y.size(); ++i)
              err.add(y[i], want[i], (cols + 1) * 0x1p-23 * mag[i] + 1e-45);
          }
      }
      CHECK(err.over == 0);
      CHECK(err.nmse() <= matmul_variant_nmse);
    }
  }
}

namespace {

/// Checks every variant of a quantized kernel: the scalar variant against
/// the exact product of the dequantized blocks (both sides), every other
/// variant against the scalar variant. Returns nothing; CHECKs inside.
template <class WB, class XB, class Kernel, class MakeW>
void check_quant_variants(const Kernel& k, size_t block, MakeW make_w) {
  std::mt19937 rng(43);
  auto variants = k.runnable();
  REQUIRE(variants.size() >= 1);
  REQUIRE(variants[0].first == "scalar");
  for (const auto& [name, fn] : variants) {
    CAPTURE(name);
    error_sum vs_exact, vs_scalar;
    std::vector<std::array<size_t, 3>> all;
    for (const auto& s : shapes)
      all.push_back({s[0], s[1], s[2]});
    if (block == 32)
      for (const auto& s : legacy_shapes)
        all.push_back({s[0], s[1], s[2]});
    for (family fam : {family::random, family::zeros, family::large, family::denormal})
      for (const auto& s : all) {
        size_t rows = s[0], batch = s[1], cols = s[2], nb = cols / block;
        std::vector<WB> w = make_w(rows * nb, fam, rng);
        std::vector<XB> xq(batch * nb);
        // Q8_0 stores its scale amax/127 in f16 (max 65504): "large" activations
        // are as large as that allows; Q8_K's f32 scale takes 1e17.
        constexpr bool q8_0 = std::is_same_v<XB, block_q8_0>;
        auto x = fam == family::large && q8_0 ? make(family::random, batch * cols, rng, 5e5f)
                                              : make(fam, batch * cols, rng);
        if constexpr (q8_0)
          quantize_q8_0(x, xq);
        else
          quantize_q8_k(x, xq);
        std::vector<double> want, mag;
        exact(rows, batch, cols, dequant(w), dequant(xq), want, mag);
        std::vector<float> y(rows * batch, -1.0f), ref(rows * batch, -2.0f);
        fn(rows, batch, nb, y.data(), rows, w.data(), xq.data());
        variants[0].second(rows, batch, nb, ref.data(), rows, w.data(), xq.data());
        for (size_t i = 0; i < y.size(); ++i) {
          // f32 rounding of the block scales, the block terms and their sum
          double bound = (double(nb) + 16) * 0x1p-22 * mag[i] + 1e-30;
          vs_exact.add(y[i], want[i], bound);
          vs_scalar.add(y[i], ref[i], bound);
        }
      }
    CHECK(vs_exact.over == 0);
    CHECK(vs_scalar.over == 0);
    CHECK(vs_exact.nmse() <= matmul_variant_nmse);
    CHECK(vs_scalar.nmse() <= matmul_variant_nmse);
  }
}

/// Q8_0/Q4_0 blocks of `wf` (ggml's reference quantizers).
template <class WB>
std::vector<WB> legacy_weights(const std::vector<float>& wf) {
  std::vector<WB> w(wf.size() / 32);
  if constexpr (std::is_same_v<WB, block_q8_0>)
    quantize_q8_0(wf, w);
  else
    quantize_q4_0(wf, w);
  return w;
}

/// Q8_0/Q4_0 weights quantized from a family, so large and denormal inputs
/// give the blocks those inputs really produce.
template <class WB>
std::vector<WB> family_weights(size_t n_blocks, family fam, std::mt19937& rng) {
  auto w = legacy_weights<WB>(make(fam == family::large ? family::random : fam, n_blocks * 32, rng,
                                   fam == family::large ? 6e4f / 4 : 1.0f));
  if constexpr (std::is_same_v<WB, block_q8_0>)
    if (fam == family::random) // ggml never writes -128; a file may
      w[0].qs[3] = -128;
  return w;
}

template <class WB>
std::vector<WB> k_weights(size_t n_blocks, family fam, std::mt19937& rng) {
  auto w = random_blocks<WB>(n_blocks, rng);
  if (fam == family::zeros)
    for (auto& b : w)
      b.d = 0;
  if (fam == family::large)
    for (auto& b : w)
      b.d = fp32_to_fp16(60000.0f);
  if (fam == family::denormal)
    for (auto& b : w)
      b.d = 1; // the smallest f16 subnormal
  return w;
}

} // namespace

TEST_CASE("matmul_q8_0: scalar matches the exact block product, every variant the scalar") {
  check_quant_variants<block_q8_0, block_q8_0>(matmul_q8_0_kernel(), 32,
                                               family_weights<block_q8_0>);
}

TEST_CASE("matmul_q4_0: scalar matches the exact block product, every variant the scalar") {
  check_quant_variants<block_q4_0, block_q8_0>(matmul_q4_0_kernel(), 32,
                                               family_weights<block_q4_0>);
}

TEST_CASE("matmul_q4_k: scalar matches the exact block product, every variant the scalar") {
  check_quant_variants<block_q4_k, block_q8_k>(matmul_q4_k_kernel(), 256, k_weights<block_q4_k>);
}

TEST_CASE("matmul_q6_k: scalar matches the exact block product, every variant the scalar") {
  check_quant_variants<block_q6_k, block_q8_k>(matmul_q6_k_kernel(), 256, k_weights<block_q6_k>);
}

TEST_CASE("the VNNI variants exist exactly when the CPU has AVX512-VNNI") {
  bool has = false;
  for (const auto& v : matmul_q4_0_kernel().variants())
    has = has || v.name == "avx512vnni";
  CHECK(has == (cpu().avx512vnni && cpu().level >= isa::avx512));
}

namespace {

/// A weight matrix of `type` made from f32 values `wf` [rows, cols], and
/// its dequantized values (what the kernels really multiply).
struct test_weights {
  std::vector<std::byte> bytes;
  std::vector<float> deq;
  weight_view view;
};

test_weights make_weights(weight_type type, size_t rows, size_t cols, std::mt19937& rng) {
  test_weights t;
  auto wf = make(family::random, rows * cols, rng, 0.05f);
  t.bytes.resize(rows * row_bytes(type, cols));
  auto put = [&](const auto& v) { std::memcpy(t.bytes.data(), v.data(), t.bytes.size()); };
  auto put_blocks = [&](const auto& blocks) {
    put(blocks);
    t.deq = dequant(blocks);
  };
  switch (type) {
    case weight_type::f32:
      put(wf);
      t.deq = wf;
      break;
    case weight_type::f16:
    case weight_type::bf16: {
      std::vector<uint16_t> h(wf.size());
      t.deq.resize(wf.size());
      for (size_t i = 0; i < wf.size(); ++i) {
        h[i] = type == weight_type::f16 ? fp32_to_fp16(wf[i]) : fp32_to_bf16(wf[i]);
        t.deq[i] = type == weight_type::f16 ? fp16_to_fp32(h[i]) : bf16_to_fp32(h[i]);
      }
      put(h);
      break;
    }
    case weight_type::q8_0:
      put_blocks(legacy_weights<block_q8_0>(wf));
      break;
    case weight_type::q4_0:
      put_blocks(legacy_weights<block_q4_0>(wf));
      break;
    case weight_type::q4_k:
      put_blocks(random_blocks<block_q4_k>(wf.size() / 256, rng));
      break;
    case weight_type::q6_k:
      put_blocks(random_blocks<block_q6_k>(wf.size() / 256, rng));
      break;
  }
  t.view = {t.bytes.data(), type, rows, cols};
  return t;
}

/// Weights, activations [batch, cols] and scratch for a gemm call.
struct gemm_case {
  test_weights w;
  std::vector<float> x;
  std::vector<std::byte> scratch;
  gemm_case(weight_type type, size_t rows, size_t cols, size_t batch, std::mt19937& rng)
    : w(make_weights(type, rows, cols, rng)), x(make(family::random, batch * cols, rng)),
      scratch(matmul_scratch_bytes(type, cols, batch)) {}
};

const weight_type all_types[] = {weight_type::f32,  weight_type::f16,  weight_type::bf16,
                                 weight_type::q8_0, weight_type::q4_0, weight_type::q4_k,
                                 weight_type::q6_k};

} // namespace

TEST_CASE("gemm: quantized activations stay within the stated NMSE of the f32 product") {
  std::mt19937 rng(47);
  for (weight_type type : all_types) {
    CAPTURE(to_string(type));
    size_t rows = 64, cols = 1024, batch = 3;
    gemm_case t(type, rows, cols, batch, rng);
    auto& [w, x, scratch] = t;
    std::vector<float> y(rows * batch);
    REQUIRE(gemm(y, w.view, x, batch, scratch, nullptr) == matmul_status::ok);
    std::vector<double> want, mag;
    exact(rows, batch, cols, w.deq, x, want, mag);
    error_sum err;
    for (size_t i = 0; i < y.size(); ++i)
      err.add(y[i], want[i], 1e30);
    double bound = type == weight_type::q8_0 || type == weight_type::q4_0   ? matmul_q8_0_act_nmse
                   : type == weight_type::q4_k || type == weight_type::q6_k ? matmul_q8_k_act_nmse
                                                                            : matmul_variant_nmse;
    MESSAGE(to_string(type), " NMSE vs f32 product: ", err.nmse());
    CHECK(err.nmse() <= bound);
  }
}

TEST_CASE("gemm gives the same bits for any pool and equals gemv row by row") {
  std::mt19937 rng(53);
  serial_pool serial;
  worker_pool two(2), three(3);
  thread_pool* pools[] = {&serial, &two, &three};
  for (weight_type type : all_types) {
    CAPTURE(to_string(type));
    size_t rows = 300, cols = 512, batch = 5;
    gemm_case t(type, rows, cols, batch, rng);
    auto& [w, x, scratch] = t;
    std::vector<float> base(rows * batch);
    REQUIRE(gemm(base, w.view, x, batch, scratch, nullptr) == matmul_status::ok);
    for (thread_pool* p : pools) {
      std::vector<float> y(rows * batch, -1.0f);
      REQUIRE(gemm(y, w.view, x, batch, scratch, p) == matmul_status::ok);
      CHECK(std::memcmp(y.data(), base.data(), y.size() * sizeof(float)) == 0);
    }
    for (size_t b = 0; b < batch; ++b) {
      std::vector<float> y(rows);
      REQUIRE(gemv(y, w.view, std::span<const float>(x).subspan(b * cols, cols), scratch, &two)
              == matmul_status::ok);
      CHECK(std::memcmp(y.data(), base.data() + b * rows, rows * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("gemm rejects bad shapes, columns, types and small scratch without writing") {
  std::mt19937 rng(59);
  auto w = make_weights(weight_type::q4_0, 8, 64, rng);
  std::vector<float> x(64, 1.0f), y(8, 7.0f);
  std::vector<std::byte> scratch(matmul_scratch_bytes(weight_type::q4_0, 64, 1));
  CHECK(gemv(y, w.view, x, std::span(scratch).first(scratch.size() - 1), nullptr)
        == matmul_status::small_scratch);
  CHECK(gemv(y, w.view, std::span<const float>(x).first(63), scratch, nullptr)
        == matmul_status::bad_shape);
  CHECK(gemv(std::span(y).first(7), w.view, x, scratch, nullptr) == matmul_status::bad_shape);
  weight_view odd = w.view;
  odd.cols = 48;
  CHECK(gemv(y, odd, std::span<const float>(x).first(48), scratch, nullptr)
        == matmul_status::bad_cols);
  weight_view unknown = w.view;
  unknown.type = static_cast<weight_type>(13);
  CHECK(gemv(y, unknown, x, scratch, nullptr) == matmul_status::bad_type);
  for (float v : y)
    CHECK(v == 7.0f);
  CHECK(to_string(matmul_status::small_scratch).find("scratch") != std::string_view::npos);
  // Empty shapes are fine; zero columns give zeros.
  weight_view empty{nullptr, weight_type::f32, 3, 0};
  std::vector<float> y3(3, 5.0f);
  CHECK(gemv(y3, empty, {}, {}, nullptr) == matmul_status::ok);
  CHECK(y3 == std::vector<float>(3, 0.0f));
}
