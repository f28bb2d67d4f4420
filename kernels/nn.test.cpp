#include "kernels/nn.hpp"

#include "kernels/f16.hpp"
#include "kernels/quant.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace shoal::kernels;

namespace {

constexpr float inf = std::numeric_limits<float>::infinity();

/// Normalised mean squared error Σ(got-want)² / Σwant² over many outputs.
struct nmse_sum {
  double err = 0, ref = 0;
  void add(double got, double want) {
    err += (got - want) * (got - want);
    ref += want * want;
  }
  double nmse() const { return ref > 0 ? err / ref : err; }
};

/// Input families of the element-wise checks.
enum class family { random, zeros, large, denormal };
const family families[] = {family::random, family::zeros, family::large, family::denormal};
const char* name(family f) {
  switch (f) {
    case family::random:
      return "random";
    case family::zeros:
      return "zeros";
    case family::large:
      return "large";
    case family::denormal:
      return "denormal";
  }
  return "?";
}

/// Lengths around every SIMD width (8, 16) and a hidden-state size.
const size_t lengths[] = {0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 384, 4097};

/// `large` is 1e17 (Σx² of 4097 of them still fits f32); `random` spans
/// [-amp, amp].
std::vector<float> make(family f, size_t n, std::mt19937& rng, float amp = 4) {
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> v(n);
  for (float& x : v) {
    switch (f) {
      case family::random:
        x = amp * u(rng);
        break;
      case family::zeros:
        x = 0;
        break;
      case family::large:
        x = 1e17f * u(rng);
        break;
      case family::denormal:
        x = 1e-39f * u(rng);
        break;
    }
  }
  return v;
}

double silu_exact(double x) {
  return x / (1 + std::exp(-x));
}

} // namespace

// ---- RMSNorm -------------------------------------------------------------

TEST_CASE("rms_norm: every variant matches the exact result within nn_nmse_bound") {
  std::mt19937 rng(3);
  for (const auto& [vname, fn] : rms_norm_kernel().runnable()) {
    CAPTURE(vname);
    for (family f : families) {
      CAPTURE(std::string(name(f)));
      nmse_sum e;
      for (size_t n : lengths) {
        CAPTURE(n);
        auto x = make(f, n, rng);
        auto w = make(family::random, n, rng, 1);
        double ss = 0;
        for (float v : x)
          ss += double(v) * v;
        const float eps = 1e-5f;
        const double k = n > 0 ? 1 / std::sqrt(ss / double(n) + eps) : 0;
        std::vector<float> y(n, -1.0f), y_nw(n, -1.0f);
        fn(n, y.data(), x.data(), w.data(), eps);
        fn(n, y_nw.data(), x.data(), nullptr, eps);
        for (size_t i = 0; i < n; ++i) {
          e.add(y[i], x[i] * k * w[i]);
          e.add(y_nw[i], x[i] * k);
        }
        // In place gives the same bits as out of place.
        std::vector<float> in_place = x;
        fn(n, in_place.data(), in_place.data(), w.data(), eps);
        CHECK(in_place == y);
      }
      CHECK(e.nmse() <= nn_nmse_bound);
    }
  }
}

TEST_CASE("rms_norm: output has unit RMS without weight, and zeros stay zero") {
  std::mt19937 rng(4);
  auto x = make(family::random, 4096, rng);
  std::vector<float> y(x.size());
  rms_norm(y, x, {}, 1e-6f);
  double ss = 0;
  for (float v : y)
    ss += double(v) * v;
  CHECK(std::sqrt(ss / double(y.size())) == doctest::Approx(1).epsilon(1e-5));
  std::vector<float> z(33, 0.0f), out(33, 1.0f);
  rms_norm(out, z, {}, 1e-5f);
  CHECK(std::all_of(out.begin(), out.end(), [](float v) { return v == 0; }));
}

// ---- RoPE ----------------------------------------------------------------

namespace {

/// Exact RoPE of one head by the definition (angles in double).
std::vector<double> rope_exact(const std::vector<float>& x, size_t head_dim, size_t n_dims,
                               double pos, double base, double linear, double ntk) {
  const double d = double(n_dims);
  const double b = base * std::pow(ntk, d / (d - 2));
  std::vector<double> y(x.begin(), x.end());
  for (size_t h = 0; h < x.size() / head_dim; ++h)
    for (size_t i = 0; i < n_dims / 2; ++i) {
      const double angle = pos / linear * std::pow(b, -2.0 * double(i) / d);
      const double a = x[h * head_dim + 2 * i], c = x[h * head_dim + 2 * i + 1];
      y[h * head_dim + 2 * i] = a * std::cos(angle) - c * std::sin(angle);
      y[h * head_dim + 2 * i + 1] = a * std::sin(angle) + c * std::cos(angle);
    }
  return y;
}

double dot_d(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i)
    s += double(a[i]) * b[i];
  return s;
}

} // namespace

TEST_CASE("rope: every variant matches the exact rotation by the table, tails untouched") {
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> angle(-100, 100);
  for (const auto& [vname, fn] : rope_kernel().runnable()) {
    CAPTURE(vname);
    nmse_sum e;
    for (size_t head_dim : {2u, 6u, 16u, 18u, 34u, 64u, 128u, 130u})
      for (size_t n_dims : {size_t{2}, (head_dim / 2) & ~size_t{1}, head_dim})
        for (size_t n_heads : {1u, 3u}) {
          if (n_dims % 2 != 0 || n_dims == 0)
            continue;
          CAPTURE(head_dim);
          CAPTURE(n_dims);
          std::vector<double> ang(n_dims / 2);
          std::vector<float> table(rope_table_size(n_dims));
          for (size_t i = 0; i < n_dims / 2; ++i) {
            ang[i] = angle(rng);
            table[2 * i] = table[2 * i + 1] = float(std::cos(ang[i]));
            table[n_dims + 2 * i] = -float(std::sin(ang[i]));
            table[n_dims + 2 * i + 1] = float(std::sin(ang[i]));
          }
          auto x = make(family::random, n_heads * head_dim, rng);
          auto y = x;
          fn(n_heads, head_dim, n_dims, y.data(), table.data());
          for (size_t h = 0; h < n_heads; ++h) {
            const float* r = x.data() + h * head_dim;
            const float* o = y.data() + h * head_dim;
            for (size_t i = 0; i < n_dims / 2; ++i) {
              const double c = table[2 * i], s = table[n_dims + 2 * i + 1];
              e.add(o[2 * i], r[2 * i] * c - r[2 * i + 1] * s);
              e.add(o[2 * i + 1], r[2 * i] * s + r[2 * i + 1] * c);
            }
            for (size_t i = n_dims; i < head_dim; ++i)
              CHECK(o[i] == r[i]);
          }
        }
    CHECK(e.nmse() <= nn_nmse_bound);
  }
}

TEST_CASE("rope: matches the definition with base, partial dims, linear and NTK scaling") {
  std::mt19937 rng(6);
  struct cfg {
    size_t head_dim, n_dims, pos;
    rope_params p;
  };
  const cfg cfgs[] = {
    {128, 0, 1, {}},
    {128, 0, 4095, {}},
    {64, 32, 77, {32, 10000, 1, 1}},
    {80, 0, 300, {0, 500000, 1, 1}},  // LLaMA-3 base
    {128, 0, 8000, {0, 10000, 4, 1}}, // linear ×4
    {128, 0, 8000, {0, 10000, 1, 8}}, // NTK-aware ×8
    {256, 0, 1234, {0, 10000, 2, 2}}, // both; more dims than rope()'s slice
    {256, 200, 999, {200, 1e6f, 1, 1}},
  };
  for (const cfg& c : cfgs) {
    CAPTURE(c.head_dim);
    CAPTURE(c.pos);
    const size_t n_heads = 3;
    auto x = make(family::random, n_heads * c.head_dim, rng);
    auto y = x;
    rope(y, n_heads, c.pos, c.p);
    const size_t nd = c.p.n_dims == 0 ? c.head_dim : c.p.n_dims;
    auto want =
      rope_exact(x, c.head_dim, nd, double(c.pos), c.p.base, c.p.linear_factor, c.p.ntk_factor);
    nmse_sum e;
    for (size_t i = 0; i < y.size(); ++i)
      e.add(y[i], want[i]);
    CHECK(e.nmse() <= nn_nmse_bound);
    // rope_table gives the same numbers as rope() applies.
    std::vector<float> table(rope_table_size(nd));
    rope_table(table, nd, double(c.pos), c.p);
    auto z = x;
    rope_kernel().get()(n_heads, c.head_dim, nd, z.data(), table.data());
    CHECK(z == y);
  }
}

TEST_CASE("rope: position 0 is the identity and every pair keeps its norm") {
  std::mt19937 rng(7);
  auto x = make(family::random, 4 * 128, rng);
  auto y = x;
  rope(y, 4, 0, {});
  CHECK(y == x);
  for (size_t pos : {1u, 17u, 1000u, 100000u}) {
    y = x;
    rope(y, 4, pos, {0, 10000, 1, 2});
    for (size_t i = 0; i < x.size(); i += 2) {
      const double before = std::hypot(double(x[i]), double(x[i + 1]));
      const double after = std::hypot(double(y[i]), double(y[i + 1]));
      CHECK(after == doctest::Approx(before).epsilon(1e-6));
    }
  }
}

TEST_CASE("rope: q·k after rotation depends only on the position difference") {
  std::mt19937 rng(8);
  auto q = make(family::random, 128, rng, 1);
  auto k = make(family::random, 128, rng, 1);
  const double mag = std::sqrt(dot_d(q, q) * dot_d(k, k));
  for (const rope_params& p :
       {rope_params{}, rope_params{0, 10000, 4, 1}, rope_params{64, 10000, 1, 8}})
    for (size_t delta : {0u, 1u, 5u, 300u}) {
      auto rq = q, rk = k;
      rope(rq, 1, 7 + delta, p);
      rope(rk, 1, 7, p);
      const double near = dot_d(rq, rk);
      for (size_t shift : {1u, 100u, 2000u}) {
        auto sq = q, sk = k;
        rope(sq, 1, 7 + delta + shift, p);
        rope(sk, 1, 7 + shift, p);
        // f32 rounding of each rotated element: ~1e-7 relative per pair.
        CHECK(std::abs(dot_d(sq, sk) - near) <= 1e-5 * mag);
      }
    }
  // Linear scaling: position 2p with factor 2 equals position p unscaled.
  auto a = q, b = q;
  rope(a, 1, 2 * 333, {0, 10000, 2, 1});
  rope(b, 1, 333, {});
  CHECK(a == b);
}

// ---- softmax, SiLU, SwiGLU -----------------------------------------------

TEST_CASE("softmax: every variant matches the exact result, and masked entries are 0") {
  std::mt19937 rng(9);
  std::uniform_int_distribution<int> coin(0, 3);
  for (const auto& [vname, fn] : softmax_kernel().runnable()) {
    CAPTURE(vname);
    nmse_sum e;
    for (float amp : {1e-39f, 1.0f, 10.0f, 80.0f, 1e30f})
      for (float scale : {1.0f, 0.125f})
        for (bool masked : {false, true})
          for (size_t n : lengths) {
            CAPTURE(n);
            auto x = make(family::random, n, rng, amp);
            if (masked)
              for (float& v : x)
                if (coin(rng) == 0)
                  v = -inf;
            double m = -INFINITY, sum = 0;
            for (float v : x)
              m = std::max(m, double(scale) * v);
            std::vector<double> want(n, 0.0);
            if (m > -INFINITY) {
              for (size_t i = 0; i < n; ++i)
                sum += want[i] = std::exp(double(scale) * x[i] - m);
              for (double& v : want)
                v /= sum;
            }
            std::vector<float> y(n, -1.0f);
            fn(n, y.data(), x.data(), scale);
            double total = 0;
            for (size_t i = 0; i < n; ++i) {
              e.add(y[i], want[i]);
              total += y[i];
              if (x[i] == -inf)
                CHECK(y[i] == 0.0f);
              CHECK(y[i] >= 0.0f);
            }
            if (m > -INFINITY)
              CHECK(std::abs(total - 1) <= double(n) * 0x1p-23);
            auto in_place = x;
            fn(n, in_place.data(), in_place.data(), scale);
            CHECK(in_place == y);
          }
    CHECK(e.nmse() <= nn_nmse_bound);
  }
}

TEST_CASE("softmax: a fully masked row is all zeros and equal scores are uniform") {
  for (const auto& [vname, fn] : softmax_kernel().runnable()) {
    CAPTURE(vname);
    for (size_t n : {1u, 5u, 16u, 37u}) {
      std::vector<float> x(n, -inf), y(n, 7.0f);
      fn(n, y.data(), x.data(), 1.0f);
      CHECK(std::all_of(y.begin(), y.end(), [](float v) { return v == 0; }));
      std::vector<float> flat(n, 3.5f);
      fn(n, y.data(), flat.data(), 0.5f);
      for (float v : y)
        CHECK(v == doctest::Approx(1.0 / double(n)).epsilon(1e-6));
    }
  }
  std::vector<float> none;
  softmax(none, none); // n == 0: no-op
}

TEST_CASE("silu and swiglu: every variant matches the exact result") {
  std::mt19937 rng(10);
  auto silu_v = silu_kernel().runnable();
  auto swiglu_v = swiglu_kernel().runnable();
  REQUIRE(silu_v.size() == swiglu_v.size());
  for (size_t v = 0; v < silu_v.size(); ++v) {
    CAPTURE(silu_v[v].first);
    REQUIRE(silu_v[v].first == swiglu_v[v].first);
    for (family f : {family::random, family::zeros, family::denormal}) {
      CAPTURE(std::string(name(f)));
      nmse_sum es, eg;
      for (float amp : {1.0f, 8.0f, 30.0f, 120.0f, 1e17f})
        for (size_t n : lengths) {
          auto g = make(f, n, rng, amp), u = make(family::random, n, rng, 2);
          std::vector<float> y(n), o(n);
          silu_v[v].second(n, y.data(), g.data());
          swiglu_v[v].second(n, o.data(), g.data(), u.data());
          for (size_t i = 0; i < n; ++i) {
            if (f == family::denormal) { // subnormal outputs: absolute bound
              CHECK(std::abs(y[i] - silu_exact(g[i])) <= nn_subnormal_abs_bound);
              CHECK(std::abs(o[i] - silu_exact(g[i]) * u[i]) <= nn_subnormal_abs_bound);
              continue;
            }
            es.add(y[i], silu_exact(g[i]));
            eg.add(o[i], silu_exact(g[i]) * u[i]);
          }
          auto in_place = g;
          silu_v[v].second(n, in_place.data(), in_place.data());
          CHECK(in_place == y);
          in_place = u;
          swiglu_v[v].second(n, in_place.data(), g.data(), in_place.data());
          CHECK(in_place == o);
        }
      CHECK(es.nmse() <= nn_nmse_bound);
      CHECK(eg.nmse() <= nn_nmse_bound);
    }
    // Saturation: large negative → -0 or a tiny negative, large positive → x.
    std::vector<float> ext{-1e30f, -200.0f, 200.0f, 1e30f, 0.0f}, y(5);
    silu_v[v].second(5, y.data(), ext.data());
    CHECK(y[0] == 0.0f);
    CHECK(y[1] <= 0.0f);
    CHECK(y[1] > -1e-30f);
    CHECK(y[2] == 200.0f);
    CHECK(y[3] == 1e30f);
    CHECK(y[4] == 0.0f);
  }
}

// ---- attention over a paged KV cache -------------------------------------

namespace {

/// One tier of a sequence's KV cache built from f32 rows: pages allocated
/// one by one (not contiguous, as from a page pool), rows encoded in the
/// layout's types with quant.hpp / f16.hpp, and the values the kernel will
/// see (dequantized) kept for the reference.
struct paged_tier {
  kv_page_layout layout;
  size_t n_tokens = 0;
  std::vector<std::vector<std::byte>> k_store, v_store;
  std::vector<const std::byte*> k_pages, v_pages;
  std::vector<float> k_seen, v_seen; // [n_tokens, row_elems] dequantized

  kv_segment segment() const { return {layout, k_pages, v_pages, n_tokens}; }
};

/// Encodes `n` floats as type t at dst; writes what decoding gives to seen.
void encode(kv_type t, const float* x, size_t n, std::byte* dst, float* seen) {
  switch (t) {
    case kv_type::f32:
      std::memcpy(dst, x, 4 * n);
      std::copy(x, x + n, seen);
      break;
    case kv_type::f16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h = fp32_to_fp16(x[i]);
        std::memcpy(dst + 2 * i, &h, 2);
        seen[i] = fp16_to_fp32(h);
      }
      break;
    case kv_type::q8_0: {
      std::vector<block_q8_0> b(n / 32);
      quantize_q8_0({x, n}, b);
      std::memcpy(dst, b.data(), row_bytes(t, n));
      dequantize_q8_0(b, {seen, n});
      break;
    }
    case kv_type::q4_0: {
      std::vector<block_q4_0> b(n / 32);
      quantize_q4_0({x, n}, b);
      std::memcpy(dst, b.data(), row_bytes(t, n));
      dequantize_q4_0(b, {seen, n});
      break;
    }
  }
}

/// Tokens [t0, t0 + n) of k and v ([*, row_elems] f32) as pages of `layout`.
paged_tier make_tier(const std::vector<float>& k, const std::vector<float>& v, size_t t0, size_t n,
                     kv_page_layout layout) {
  paged_tier p;
  p.layout = layout;
  p.n_tokens = n;
  const size_t re = layout.row_elems;
  p.k_seen.resize(n * re);
  p.v_seen.resize(n * re);
  const size_t n_pages = (n + layout.page_tokens - 1) / layout.page_tokens;
  for (size_t pg = 0; pg < n_pages; ++pg) {
    // Unused slots of the last page hold garbage bytes the kernel must not read.
    p.k_store.emplace_back(layout.k_page_bytes(), std::byte{0xFF});
    p.v_store.emplace_back(layout.v_page_bytes(), std::byte{0xFF});
    p.k_pages.push_back(p.k_store.back().data());
    p.v_pages.push_back(p.v_store.back().data());
  }
  for (size_t t = 0; t < n; ++t) {
    const size_t pg = t / layout.page_tokens, slot = t % layout.page_tokens;
    encode(layout.k_type, &k[(t0 + t) * re], re, p.k_store[pg].data() + slot * layout.k_row_bytes(),
           &p.k_seen[t * re]);
    encode(layout.v_type, &v[(t0 + t) * re], re, p.v_store[pg].data() + slot * layout.v_row_bytes(),
           &p.v_seen[t * re]);
  }
  return p;
}

/// Softmax attention in double over rows given as pointers to the head's
/// first element: out = Σ softmax(scale q·k_t) v_t.
std::vector<double> attention_exact(const std::vector<float>& q,
                                    const std::vector<const float*>& ks,
                                    const std::vector<const float*>& vs, double scale) {
  const size_t hd = q.size();
  std::vector<double> s(ks.size()), out(hd, 0.0);
  double m = -INFINITY, sum = 0;
  for (size_t t = 0; t < ks.size(); ++t) {
    double d = 0;
    for (size_t i = 0; i < hd; ++i)
      d += double(q[i]) * ks[t][i];
    s[t] = scale * d;
    m = std::max(m, s[t]);
  }
  for (size_t t = 0; t < ks.size(); ++t) {
    const double p = std::exp(s[t] - m);
    sum += p;
    for (size_t i = 0; i < hd; ++i)
      out[i] += p * vs[t][i];
  }
  for (double& o : out)
    o = sum > 0 ? o / sum : 0;
  return out;
}

/// A sequence of `n_tokens` random K/V rows ([n_tokens, n_kv_heads·head_dim])
/// split into tiers by `cuts` (tier i = tokens [cuts[i], cuts[i+1])) with one
/// layout each, and the reference over what the kernel sees and over the
/// original values.
struct paged_case {
  size_t head_dim, n_kv_heads, kv_head;
  std::vector<float> q, k, v;
  std::vector<paged_tier> tiers;
  std::vector<kv_segment> segments;

  paged_case(std::mt19937& rng, size_t hd, size_t n_kv, size_t kvh, size_t n_tokens,
             const std::vector<size_t>& cuts, const std::vector<kv_page_layout>& layouts,
             float key_amp = 1)
    : head_dim(hd), n_kv_heads(n_kv), kv_head(kvh) {
    std::normal_distribution<float> g(0, 1);
    q.resize(hd);
    k.resize(n_tokens * n_kv * hd);
    v.resize(k.size());
    for (float& x : q)
      x = g(rng);
    for (float& x : k)
      x = key_amp * g(rng);
    for (float& x : v)
      x = g(rng);
    for (size_t i = 0; i < layouts.size(); ++i) {
      kv_page_layout l = layouts[i];
      l.row_elems = n_kv * hd;
      const size_t end = i + 1 < cuts.size() ? cuts[i + 1] : n_tokens;
      tiers.push_back(make_tier(k, v, cuts[i], end - cuts[i], l));
    }
    for (const paged_tier& t : tiers)
      segments.push_back(t.segment());
  }

  float scale() const { return 1.0f / std::sqrt(float(head_dim)); }

  /// Reference over the dequantized rows (seen = true) or the originals.
  std::vector<double> exact(bool seen) const {
    std::vector<const float*> ks, vs;
    size_t t_global = 0;
    const size_t re = n_kv_heads * head_dim;
    for (const paged_tier& t : tiers)
      for (size_t j = 0; j < t.n_tokens; ++j, ++t_global) {
        ks.push_back((seen ? &t.k_seen[j * re] : &k[t_global * re]) + kv_head * head_dim);
        vs.push_back((seen ? &t.v_seen[j * re] : &v[t_global * re]) + kv_head * head_dim);
      }
    return attention_exact(q, ks, vs, scale());
  }

  std::vector<float> run(attention_paged_t* fn) const {
    std::vector<float> out(head_dim, -7.0f);
    fn(segments.size(), head_dim, out.data(), q.data(), segments.data(), kv_head, scale());
    return out;
  }

  /// Runs fn and adds its error against the reference over the dequantized rows.
  void add_error(nmse_sum& e, attention_paged_t* fn) const {
    auto out = run(fn);
    auto want = exact(true);
    for (size_t i = 0; i < head_dim; ++i)
      e.add(out[i], want[i]);
  }
};

kv_page_layout lay(size_t page_tokens, kv_type k, kv_type v) {
  return {page_tokens, 0, k, v};
}

} // namespace

TEST_CASE("attention_paged: every variant matches the exact result over F32 and F16 pages") {
  std::mt19937 rng(11);
  const kv_type plain[] = {kv_type::f32, kv_type::f16};
  for (const auto& [vname, fn] : attention_paged_kernel().runnable()) {
    CAPTURE(vname);
    nmse_sum e;
    for (kv_type kt : plain)
      for (kv_type vt : plain)
        for (size_t hd : {8u, 40u, 64u, 128u, 256u})
          for (size_t pt : {1u, 7u, 16u, 100u})
            for (size_t n : {1u, 2u, 15u, 16u, 17u, 65u, 200u}) {
              CAPTURE(hd);
              CAPTURE(pt);
              CAPTURE(n);
              paged_case(rng, hd, 3, 2, n, {0}, {lay(pt, kt, vt)}, 2).add_error(e, fn);
            }
    CHECK(e.nmse() <= attention_nmse_bound);
  }
}

TEST_CASE("attention_paged: two tiers (Q8_0/Q4_0 old pages, F16 recent) match the reference") {
  std::mt19937 rng(12);
  struct tiering {
    kv_page_layout old_pages, recent_pages;
  };
  const tiering tierings[] = {
    {lay(16, kv_type::q8_0, kv_type::q8_0), lay(16, kv_type::f16, kv_type::f16)},
    {lay(16, kv_type::q4_0, kv_type::q4_0), lay(16, kv_type::f16, kv_type::f16)},
    {lay(32, kv_type::q8_0, kv_type::q4_0), lay(8, kv_type::f16, kv_type::f32)},
    {lay(5, kv_type::q4_0, kv_type::q8_0), lay(16, kv_type::f32, kv_type::f16)},
  };
  for (const auto& [vname, fn] : attention_paged_kernel().runnable()) {
    CAPTURE(vname);
    for (const tiering& tr : tierings) {
      CAPTURE(std::string(to_string(tr.old_pages.k_type)));
      CAPTURE(std::string(to_string(tr.old_pages.v_type)));
      nmse_sum seen;
      for (size_t hd : {32u, 64u, 128u})
        for (size_t n_old : {0u, 1u, 16u, 40u, 300u})
          for (size_t n_recent : {0u, 3u, 64u}) {
            if (n_old + n_recent == 0)
              continue;
            paged_case(rng, hd, 2, 1, n_old + n_recent, {0, n_old}, {tr.old_pages, tr.recent_pages},
                       2)
              .add_error(seen, fn);
          }
      CHECK(seen.nmse() <= attention_nmse_bound);
    }
  }
}

TEST_CASE("attention_paged: one token returns its value and no tokens give zeros") {
  std::mt19937 rng(13);
  const kv_type types[] = {kv_type::f32, kv_type::f16, kv_type::q8_0, kv_type::q4_0};
  for (const auto& [vname, fn] : attention_paged_kernel().runnable()) {
    CAPTURE(vname);
    for (kv_type kt : types)
      for (kv_type vt : types) {
        paged_case c(rng, 64, 2, 1, 1, {0}, {lay(16, kt, vt)});
        auto out = c.run(fn);
        const float* v = &c.tiers[0].v_seen[64];
        for (size_t i = 0; i < 64; ++i)
          CHECK(out[i] == doctest::Approx(v[i]).epsilon(1e-6));
      }
    // Empty segments only: all zeros.
    paged_case c(rng, 32, 1, 0, 0, {0, 0},
                 {lay(16, kv_type::f16, kv_type::f16), lay(16, kv_type::q8_0, kv_type::q8_0)});
    auto out = c.run(fn);
    CHECK(std::all_of(out.begin(), out.end(), [](float x) { return x == 0; }));
    out.assign(32, 1.0f);
    fn(0, 32, out.data(), c.q.data(), nullptr, 0, 1.0f);
    CHECK(std::all_of(out.begin(), out.end(), [](float x) { return x == 0; }));
  }
}

TEST_CASE("attention_paged: grouped-query attention reads the kv head of each query head") {
  const size_t n_heads = 8, n_kv = 2, hd = 32, n_tokens = 50;
  CHECK(gqa_kv_head(0, n_heads, n_kv) == 0);
  CHECK(gqa_kv_head(3, n_heads, n_kv) == 0);
  CHECK(gqa_kv_head(4, n_heads, n_kv) == 1);
  CHECK(gqa_kv_head(7, n_heads, n_kv) == 1);
  CHECK(gqa_kv_head(5, 32, 32) == 5);
  std::mt19937 rng(14);
  paged_case c(rng, hd, n_kv, 0, n_tokens, {0}, {lay(16, kv_type::f16, kv_type::f16)});
  // Value rows: every element of kv head g is g + 1, so any softmax weights
  // give out = g + 1 for the head read.
  for (size_t t = 0; t < n_tokens; ++t)
    for (size_t g = 0; g < n_kv; ++g)
      for (size_t i = 0; i < hd; ++i)
        c.v[(t * n_kv + g) * hd + i] = float(g + 1);
  c.tiers[0] = make_tier(c.k, c.v, 0, n_tokens, c.tiers[0].layout);
  c.segments = {c.tiers[0].segment()};
  paged_case r(rng, hd, n_kv, 0, n_tokens, {0}, {lay(16, kv_type::q8_0, kv_type::f16)}, 3);
  for (const auto& [vname, fn] : attention_paged_kernel().runnable()) {
    CAPTURE(vname);
    for (size_t h = 0; h < n_heads; ++h) {
      c.kv_head = r.kv_head = gqa_kv_head(h, n_heads, n_kv);
      for (float x : c.run(fn))
        CHECK(x == doctest::Approx(double(c.kv_head + 1)).epsilon(1e-6));
      // Random rows: the output is the attention of that head's keys and
      // values, far from the other head's.
      nmse_sum same, diff;
      r.add_error(same, fn);
      auto out = r.run(fn);
      r.kv_head = 1 - r.kv_head;
      auto other = r.exact(true);
      for (size_t i = 0; i < hd; ++i)
        diff.add(out[i], other[i]);
      CHECK(same.nmse() <= attention_nmse_bound);
      CHECK(diff.nmse() > 0.01);
    }
  }
}

TEST_CASE("attention_paged: quantized pages stay within the stated error of the f32 originals") {
  // All tokens in quantized pages, keys and values N(0, 1), head_dim 128,
  // 512 tokens: the error is the storage type's, not the kernel's.
  struct expect {
    kv_type k, v;
    double bound;
  };
  const expect cases[] = {
    {kv_type::f16, kv_type::f16, attention_f16_nmse_bound},
    {kv_type::q8_0, kv_type::q8_0, attention_q8_0_nmse_bound},
    {kv_type::q4_0, kv_type::q4_0, attention_q4_0_nmse_bound},
    {kv_type::q8_0, kv_type::f16, attention_q8_0_nmse_bound},
    {kv_type::q4_0, kv_type::q8_0, attention_q4_0_nmse_bound},
  };
  std::mt19937 rng(15);
  for (const expect& x : cases) {
    CAPTURE(std::string(to_string(x.k)));
    CAPTURE(std::string(to_string(x.v)));
    nmse_sum e;
    for (int rep = 0; rep < 8; ++rep) {
      paged_case c(rng, 128, 2, 1, 512, {0}, {lay(16, x.k, x.v)});
      std::vector<float> out(128);
      attention_paged(out, c.q, c.segments, c.kv_head, c.scale());
      auto want = c.exact(false);
      for (size_t i = 0; i < 128; ++i)
        e.add(out[i], want[i]);
    }
    CHECK(e.nmse() <= x.bound);
  }
}

TEST_CASE("KV types read back from their stored codes, and other codes are none") {
  for (kv_type t : {kv_type::f32, kv_type::f16, kv_type::q4_0, kv_type::q8_0})
    CHECK(kv_type_from_code(static_cast<uint8_t>(t)) == t);
  for (uint8_t bad : {3, 7, 9, 255})
    CHECK_FALSE(kv_type_from_code(bad));
}
