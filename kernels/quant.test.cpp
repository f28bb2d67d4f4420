#include "kernels/quant.hpp"

#include "kernels/f16.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

using namespace shoal::kernels;

namespace {

// ---- llama.cpp test vectors (kernels/testdata/ggml_vectors.txt) ------------

/// The records of ggml_vectors.txt by name (see make_ggml_vectors.py for the
/// format and the inputs).
const std::map<std::string, std::vector<uint8_t>>& ggml_vectors() {
  static const auto records = [] {
    std::map<std::string, std::vector<uint8_t>> out;
    std::ifstream in(SHOAL_KERNELS_TESTDATA "/ggml_vectors.txt");
    REQUIRE_MESSAGE(in.good(), "cannot open " SHOAL_KERNELS_TESTDATA "/ggml_vectors.txt");
    std::string tok;
    while (in >> tok) {
      if (tok[0] == '#') {
        std::getline(in, tok);
        continue;
      }
      size_t n = 0;
      in >> n;
      std::vector<uint8_t>& bytes = out[tok];
      std::string hex;
      while (bytes.size() < n && in >> hex)
        for (size_t i = 0; i + 1 < hex.size(); i += 2)
          bytes.push_back(static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
      REQUIRE(bytes.size() == n);
    }
    return out;
  }();
  return records;
}

/// Record `name` as an array of T.
template <class T>
std::vector<T> record(const std::string& name) {
  const auto& all = ggml_vectors();
  auto it = all.find(name);
  REQUIRE_MESSAGE(it != all.end(), "no record " << name);
  REQUIRE(it->second.size() % sizeof(T) == 0);
  std::vector<T> v(it->second.size() / sizeof(T));
  std::memcpy(v.data(), it->second.data(), it->second.size());
  return v;
}

/// Index of the first element whose bytes differ, or -1.
template <class T>
long first_difference(const std::vector<T>& a, const std::vector<T>& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0)
      return static_cast<long>(i);
  return -1;
}

/// Checks `got` equals `want` byte for byte, naming the first differing element.
template <class T>
void check_same_bytes(const std::vector<T>& got, const std::vector<T>& want, const char* what) {
  long i = first_difference(got, want);
  CHECK_MESSAGE(i == -1, what << ": first difference at element " << i);
}

// ---- inputs ------------------------------------------------------------------

/// Families of quantizer inputs: every block of a family may use another scale.
enum class family { normal, zeros, equal, large, huge, tiny, denormal, ties, mixed };
const family families[] = {family::normal,   family::zeros, family::equal,
                           family::large,    family::huge,  family::tiny,
                           family::denormal, family::ties,  family::mixed};

std::vector<float> make(family f, size_t n, std::mt19937& rng) {
  std::normal_distribution<float> g(0, 1);
  std::uniform_int_distribution<int> k(-127, 126), e(-30, 5);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    switch (f) {
      case family::normal:
        v[i] = g(rng);
        break;
      case family::zeros:
        v[i] = 0;
        break;
      case family::equal:
        v[i] = -2.75f;
        break;
      case family::large:
        v[i] = g(rng) * 1e4f;
        break;
      case family::huge:
        v[i] = g(rng) * 5e4f;
        break; // within the |x| ≤ 5e5 caveat
      case family::tiny:
        v[i] = g(rng) * 1e-30f;
        break;
      case family::denormal:
        v[i] = g(rng) * 1e-40f;
        break;
      // amax 127 per 32 (d = 1): x = k + 0.5 are ties of roundf/rint.
      case family::ties:
        v[i] = i % 32 == 0 ? 127.0f : static_cast<float>(k(rng)) + 0.5f;
        break;
      case family::mixed:
        v[i] = g(rng) * std::pow(10.0f, static_cast<float>(e(rng)));
        break;
    }
  }
  // Denormals next to a normal maximum, and ±m ties, in the normal family.
  if (f == family::normal && n >= 64) {
    for (size_t i = 32; i < 64; ++i)
      v[i] = g(rng) * 1e-39f;
    v[40] = 1.0f;
    v[3] = 2.5f;
    v[20] = -2.5f;
  }
  return v;
}

/// Random block bytes with finite f16 scales at `scale_offsets` (d, dmin).
template <class Block>
std::vector<Block> random_blocks(size_t count, std::initializer_list<size_t> scale_offsets,
                                 std::mt19937& rng) {
  std::vector<Block> blocks(count);
  std::normal_distribution<float> g(0, 1);
  std::uniform_int_distribution<int> byte(0, 255), e(-20, 10);
  auto* raw = reinterpret_cast<uint8_t*>(blocks.data());
  for (size_t i = 0; i < count * sizeof(Block); ++i)
    raw[i] = static_cast<uint8_t>(byte(rng));
  for (size_t b = 0; b < count; ++b)
    for (size_t off : scale_offsets) {
      uint16_t h = fp32_to_fp16(g(rng) * std::ldexp(1.0f, e(rng)));
      std::memcpy(raw + b * sizeof(Block) + off, &h, 2);
    }
  return blocks;
}

/// max |x| over [p, p+n).
float abs_max(const float* p, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; ++i)
    m = std::max(m, std::fabs(p[i]));
  return m;
}

/// Σ(x-y)² / Σx².
double nmse(const std::vector<float>& x, const std::vector<float>& y) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    err += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    ref += double(x[i]) * x[i];
  }
  return ref > 0 ? err / ref : 0;
}

/// Bound on |d - f16(d)|.
float f16_error(float d) {
  return std::max(std::fabs(d) * 0x1p-11f, 0x1p-25f);
}

/// NMSE of dequantize(quantize(x)) through the public functions.
template <class Block, class Quantize, class Dequantize>
double round_trip_nmse(const std::vector<float>& x, Quantize quantize, Dequantize dequantize) {
  constexpr size_t per_block =
    std::is_same_v<Block, block_q8_0> || std::is_same_v<Block, block_q4_0> ? 32 : 256;
  std::vector<Block> q(x.size() / per_block);
  std::vector<float> back(x.size());
  quantize(x, std::span<Block>(q));
  dequantize(std::span<const Block>(q), back);
  return nmse(x, back);
}

std::vector<float> gaussian_row(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0, 1);
  std::vector<float> x(n);
  for (float& v : x)
    v = g(rng);
  return x;
}

} // namespace

// ---- acceptance: llama.cpp's bytes ----------------------------------------------

TEST_CASE("q8_0 and q4_0 bytes equal llama.cpp's reference quantizer") {
  auto x = record<float>("legacy.input.f32");
  auto want8 = record<block_q8_0>("q8_0.ggml");
  auto want4 = record<block_q4_0>("q4_0.ggml");
  REQUIRE(want8.size() == x.size() / 32);
  for (const auto& [name, fn] : quantize_q8_0_kernel().runnable()) {
    CAPTURE(name);
    std::vector<block_q8_0> got(want8.size());
    fn(x.size(), got.data(), x.data());
    check_same_bytes(got, want8, "q8_0 block");
  }
  for (const auto& [name, fn] : quantize_q4_0_kernel().runnable()) {
    CAPTURE(name);
    std::vector<block_q4_0> got(want4.size());
    fn(x.size(), got.data(), x.data());
    check_same_bytes(got, want4, "q4_0 block");
  }
  std::vector<block_q8_0> got8(want8.size());
  std::vector<block_q4_0> got4(want4.size());
  quantize_q8_0(x, got8);
  quantize_q4_0(x, got4);
  check_same_bytes(got8, want8, "quantize_q8_0");
  check_same_bytes(got4, want4, "quantize_q4_0");
}

TEST_CASE("q8_k bytes (bsums included) equal llama.cpp's reference quantizer") {
  auto x = record<float>("q8_k.input.f32");
  auto want = record<block_q8_k>("q8_k.ggml");
  REQUIRE(want.size() == x.size() / 256);
  for (const auto& [name, fn] : quantize_q8_k_kernel().runnable()) {
    CAPTURE(name);
    std::vector<block_q8_k> got(want.size());
    fn(x.size(), got.data(), x.data());
    check_same_bytes(got, want, "q8_k block");
  }
}

TEST_CASE("k-quant dequantization matches ggml") {
  auto q4 = record<block_q4_k>("q4_k.blocks");
  auto q5 = record<block_q5_k>("q5_k.blocks");
  auto q6 = record<block_q6_k>("q6_k.blocks");
  auto want4 = record<uint32_t>("q4_k.ggml.f32"), want5 = record<uint32_t>("q5_k.ggml.f32"),
       want6 = record<uint32_t>("q6_k.ggml.f32");
  // Compared as bit patterns: -0 and +0 differ, as they would in ggml.
  auto run = [](auto fn, const auto& blocks) {
    std::vector<uint32_t> y(blocks.size() * 256);
    fn(y.size(), reinterpret_cast<float*>(y.data()), blocks.data());
    return y;
  };
  for (const auto& [name, fn] : dequantize_q4_k_kernel().runnable()) {
    CAPTURE(name);
    check_same_bytes(run(fn, q4), want4, "q4_k element");
  }
  for (const auto& [name, fn] : dequantize_q5_k_kernel().runnable()) {
    CAPTURE(name);
    check_same_bytes(run(fn, q5), want5, "q5_k element");
  }
  for (const auto& [name, fn] : dequantize_q6_k_kernel().runnable()) {
    CAPTURE(name);
    check_same_bytes(run(fn, q6), want6, "q6_k element");
  }
}

TEST_CASE("f16 and bf16 row conversions match ggml") {
  auto x = record<float>("conv.input.f32");
  auto want_h = record<uint16_t>("f16.ggml"), want_b = record<uint16_t>("bf16.ggml");
  auto h_all = record<uint16_t>("f16_all.input");
  auto want_all = record<uint32_t>("f16_all.ggml.f32");
  for (const auto& [name, fn] : convert_f32_to_f16_kernel().runnable()) {
    CAPTURE(name);
    std::vector<uint16_t> got(x.size());
    fn(x.size(), got.data(), x.data());
    check_same_bytes(got, want_h, "f16");
  }
  for (const auto& [name, fn] : convert_f32_to_bf16_kernel().runnable()) {
    CAPTURE(name);
    std::vector<uint16_t> got(x.size());
    fn(x.size(), got.data(), x.data());
    check_same_bytes(got, want_b, "bf16");
  }
  for (const auto& [name, fn] : convert_f16_to_f32_kernel().runnable()) {
    CAPTURE(name);
    std::vector<uint32_t> got(h_all.size());
    fn(h_all.size(), reinterpret_cast<float*>(got.data()), h_all.data());
    check_same_bytes(got, want_all, "f16 -> f32");
  }
}

// ---- every variant against the scalar reference ------------------------------

TEST_CASE("every quantizer variant gives the scalar reference's bytes") {
  std::mt19937 rng(29);
  auto q8 = quantize_q8_0_kernel().runnable();
  auto q4 = quantize_q4_0_kernel().runnable();
  auto qk = quantize_q8_k_kernel().runnable();
  REQUIRE(q8.front().first == "scalar");
  REQUIRE(q4.front().first == "scalar");
  REQUIRE(qk.front().first == "scalar");
  for (family f : families) {
    for (size_t blocks : {1u, 2u, 3u, 5u, 17u, 128u}) {
      CAPTURE(static_cast<int>(f));
      CAPTURE(blocks);
      auto x = make(f, blocks * 32, rng);
      std::vector<block_q8_0> ref8(blocks), got8(blocks);
      std::vector<block_q4_0> ref4(blocks), got4(blocks);
      q8.front().second(x.size(), ref8.data(), x.data());
      q4.front().second(x.size(), ref4.data(), x.data());
      for (const auto& [name, fn] : q8) {
        CAPTURE(name);
        fn(x.size(), got8.data(), x.data());
        check_same_bytes(got8, ref8, "q8_0 block");
      }
      for (const auto& [name, fn] : q4) {
        CAPTURE(name);
        fn(x.size(), got4.data(), x.data());
        check_same_bytes(got4, ref4, "q4_0 block");
      }
    }
    for (size_t blocks : {1u, 2u, 3u, 16u}) {
      CAPTURE(blocks);
      auto x = make(f, blocks * 256, rng);
      std::vector<block_q8_k> ref(blocks), got(blocks);
      qk.front().second(x.size(), ref.data(), x.data());
      for (const auto& [name, fn] : qk) {
        CAPTURE(name);
        std::memset(got.data(), 0xA5, got.size() * sizeof(block_q8_k)); // every byte written
        fn(x.size(), got.data(), x.data());
        check_same_bytes(got, ref, "q8_k block");
      }
    }
  }
}

namespace {

/// Every variant of `k` on `blocks` gives the scalar variant's bits.
template <class Kernel, class Block>
void check_dequantizer(const Kernel& k, const std::vector<Block>& blocks, size_t per_block) {
  auto variants = k.runnable();
  REQUIRE(variants.front().first == "scalar");
  size_t n = blocks.size() * per_block;
  std::vector<uint32_t> ref(n), got(n);
  variants.front().second(n, reinterpret_cast<float*>(ref.data()), blocks.data());
  for (const auto& [name, fn] : variants) {
    CAPTURE(name);
    fn(n, reinterpret_cast<float*>(got.data()), blocks.data());
    check_same_bytes(got, ref, "element");
  }
}

} // namespace

TEST_CASE("every dequantizer variant equals the scalar reference bit for bit") {
  std::mt19937 rng(31);
  for (size_t count : {1u, 2u, 3u, 7u, 33u}) {
    CAPTURE(count);
    check_dequantizer(dequantize_q8_0_kernel(), random_blocks<block_q8_0>(count, {0}, rng), 32);
    check_dequantizer(dequantize_q4_0_kernel(), random_blocks<block_q4_0>(count, {0}, rng), 32);
    check_dequantizer(dequantize_q4_k_kernel(), random_blocks<block_q4_k>(count, {0, 2}, rng), 256);
    check_dequantizer(dequantize_q5_k_kernel(), random_blocks<block_q5_k>(count, {0, 2}, rng), 256);
    check_dequantizer(dequantize_q6_k_kernel(), random_blocks<block_q6_k>(count, {208}, rng), 256);
    // Q8_K's d is an f32: give it a finite random value.
    auto k8 = random_blocks<block_q8_k>(count, {}, rng);
    std::normal_distribution<float> g(0, 1);
    for (auto& b : k8)
      b.d = g(rng) * 1e-2f;
    check_dequantizer(dequantize_q8_k_kernel(), k8, 256);
  }
}

TEST_CASE("f16 and bf16 conversion variants equal f16.hpp bit for bit (NaN, odd lengths)") {
  // Every 16-bit pattern, NaNs included, both ways.
  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); ++i)
    all[i] = static_cast<uint16_t>(i);
  std::vector<uint32_t> want_h(all.size()), want_b(all.size()), got(all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    want_h[i] = std::bit_cast<uint32_t>(fp16_to_fp32(all[i]));
    want_b[i] = std::bit_cast<uint32_t>(bf16_to_fp32(all[i]));
  }
  for (const auto& [name, fn] : convert_f16_to_f32_kernel().runnable()) {
    CAPTURE(name);
    fn(all.size(), reinterpret_cast<float*>(got.data()), all.data());
    check_same_bytes(got, want_h, "f16 -> f32");
  }
  for (const auto& [name, fn] : convert_bf16_to_f32_kernel().runnable()) {
    CAPTURE(name);
    fn(all.size(), reinterpret_cast<float*>(got.data()), all.data());
    check_same_bytes(got, want_b, "bf16 -> f32");
  }
  // Random 32-bit patterns (NaNs, Infs, denormals) and values near f16
  // ties, at lengths off every SIMD width.
  std::mt19937 rng(37);
  for (size_t n : {0u, 1u, 7u, 8u, 15u, 16u, 17u, 31u, 33u, 1000u, 4097u}) {
    CAPTURE(n);
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i)
      x[i] = i % 3 == 0 ? std::bit_cast<float>(static_cast<uint32_t>(rng()))
                        : fp16_to_fp32(static_cast<uint16_t>(rng()))
                            * (1 + static_cast<float>(rng() % 3) * 0x1p-11f);
    std::vector<uint16_t> ref_h(n), ref_b(n), out(n);
    for (size_t i = 0; i < n; ++i) {
      ref_h[i] = fp32_to_fp16(x[i]);
      ref_b[i] = fp32_to_bf16(x[i]);
    }
    for (const auto& [name, fn] : convert_f32_to_f16_kernel().runnable()) {
      CAPTURE(name);
      fn(n, out.data(), x.data());
      check_same_bytes(out, ref_h, "f32 -> f16");
    }
    for (const auto& [name, fn] : convert_f32_to_bf16_kernel().runnable()) {
      CAPTURE(name);
      fn(n, out.data(), x.data());
      check_same_bytes(out, ref_b, "f32 -> bf16");
    }
  }
}

// ---- round-trip bounds ---------------------------------------------------------

TEST_CASE("q8_0, q4_0 and q8_k round trips stay within the stated bounds") {
  std::mt19937 rng(41);
  for (family f : families) {
    if (f == family::denormal)
      continue; // 1/d overflows: q = 0 by design (ggml's), no error bound
    CAPTURE(static_cast<int>(f));
    auto x = make(f, 4096, rng);
    std::vector<float> back(x.size());
    std::vector<block_q8_0> q8(x.size() / 32);
    std::vector<block_q4_0> q4(x.size() / 32);
    std::vector<block_q8_k> qk(x.size() / 256);
    quantize_q8_0(x, q8);
    dequantize_q8_0(q8, back);
    for (size_t b = 0; b < q8.size(); ++b) {
      float amax = abs_max(&x[32 * b], 32), d = amax / 127;
      if (amax < 1e-36f)
        continue;
      for (size_t i = 32 * b; i < 32 * b + 32; ++i)
        CHECK(std::fabs(x[i] - back[i]) <= d / 2 + 127 * f16_error(d) + amax * 0x1p-22f);
    }
    quantize_q4_0(x, q4);
    dequantize_q4_0(q4, back);
    for (size_t b = 0; b < q4.size(); ++b) {
      float amax = abs_max(&x[32 * b], 32), d = amax / 8;
      if (amax < 1e-36f)
        continue;
      for (size_t i = 32 * b; i < 32 * b + 32; ++i)
        CHECK(std::fabs(x[i] - back[i]) <= d + 8 * f16_error(d) + amax * 0x1p-22f);
    }
    quantize_q8_k(x, qk);
    dequantize_q8_k(qk, back);
    for (size_t b = 0; b < qk.size(); ++b) {
      float amax = abs_max(&x[256 * b], 256);
      if (amax < 1e-36f)
        continue;
      CHECK(std::fabs(qk[b].d) <= amax / 127 * (1 + 0x1p-20f));
      for (size_t i = 256 * b; i < 256 * b + 256; ++i)
        CHECK(std::fabs(x[i] - back[i]) <= std::fabs(qk[b].d) / 2 + amax * 0x1p-22f);
    }
  }
  auto x = gaussian_row(4096, 43);
  CHECK(round_trip_nmse<block_q8_0>(x, quantize_q8_0, dequantize_q8_0) <= nmse_gaussian_q8_0);
  CHECK(round_trip_nmse<block_q4_0>(x, quantize_q4_0, dequantize_q4_0) <= nmse_gaussian_q4_0);
  CHECK(round_trip_nmse<block_q8_k>(x, quantize_q8_k, dequantize_q8_k) <= nmse_gaussian_q8_k);
}

namespace {

/// Checks the K-quant round trip: per element |x - x̂| ≤ s/2 with s bounded
/// by `max_step(sub-block)` (in terms of the block's stored d/dmin).
template <class Block, class Quantize, class Dequantize, class Step>
void check_k_round_trip(const std::vector<float>& x, Quantize quantize, Dequantize dequantize,
                        size_t sub, Step max_step) {
  std::vector<Block> q(x.size() / 256);
  std::vector<float> back(x.size());
  quantize(x, std::span<Block>(q));
  dequantize(std::span<const Block>(q), back);
  for (size_t b = 0; b < q.size(); ++b) {
    float amax = abs_max(&x[256 * b], 256);
    for (size_t j = 256 * b; j < 256 * b + 256; j += sub) {
      float s = max_step(q[b], &x[j]);
      for (size_t i = j; i < j + sub; ++i)
        CHECK(std::fabs(x[i] - back[i]) <= s / 2 + amax * 0x1p-20f);
    }
  }
}

/// Largest step of a Q4_K/Q5_K sub-block of 32: (r + dmin̂)/levels + d̂.
template <class Block>
auto min_max_step(float levels) {
  return [levels](const Block& b, const float* x) {
    float lo = 0, hi = x[0];
    for (size_t i = 0; i < 32; ++i) {
      lo = std::min(lo, x[i]);
      hi = std::max(hi, x[i]);
    }
    return (hi - lo + fp16_to_fp32(b.dmin)) / levels + fp16_to_fp32(b.d);
  };
}

} // namespace

TEST_CASE("q4_k, q5_k and q6_k simple quantizers round-trip within the stated bounds") {
  std::mt19937 rng(47);
  auto q6_step = [](const block_q6_k& b, const float* x) {
    return abs_max(x, 16) / 31 + fp16_to_fp32(b.d);
  };
  for (family f : families) {
    CAPTURE(static_cast<int>(f));
    auto x = make(f, 2048, rng);
    if (f == family::equal) // all positive too
      std::fill(x.begin() + 1024, x.end(), 3.5f);
    check_k_round_trip<block_q4_k>(x, quantize_q4_k, dequantize_q4_k, 32,
                                   min_max_step<block_q4_k>(15));
    check_k_round_trip<block_q5_k>(x, quantize_q5_k, dequantize_q5_k, 32,
                                   min_max_step<block_q5_k>(31));
    check_k_round_trip<block_q6_k>(x, quantize_q6_k, dequantize_q6_k, 16, q6_step);
  }
  auto x = gaussian_row(4096, 53);
  CHECK(round_trip_nmse<block_q4_k>(x, quantize_q4_k, dequantize_q4_k) <= nmse_gaussian_q4_k);
  CHECK(round_trip_nmse<block_q5_k>(x, quantize_q5_k, dequantize_q5_k) <= nmse_gaussian_q5_k);
  CHECK(round_trip_nmse<block_q6_k>(x, quantize_q6_k, dequantize_q6_k) <= nmse_gaussian_q6_k);
}

TEST_CASE("f16 and bf16 row round trips stay within half an ulp") {
  auto x = gaussian_row(4097, 59);
  x[0] = 65504;
  x[1] = 1e-6f; // f16 subnormal
  std::vector<uint16_t> h(x.size());
  std::vector<float> back(x.size());
  convert_f32_to_f16(x, h);
  convert_f16_to_f32(h, back);
  for (size_t i = 0; i < x.size(); ++i)
    CHECK(std::fabs(x[i] - back[i]) <= std::max(std::fabs(x[i]) * 0x1p-11f, 0x1p-25f));
  convert_f32_to_bf16(x, h);
  convert_bf16_to_f32(h, back);
  for (size_t i = 0; i < x.size(); ++i)
    CHECK(std::fabs(x[i] - back[i]) <= std::fabs(x[i]) * 0x1p-8f);
}
