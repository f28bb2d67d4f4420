/// @file Google Benchmark cases of the vector and NN kernels: every runnable
/// variant of each kernel next to its scalar reference, in one run (names
/// `<kernel>/<variant>/<size>`, registered in that order so the report lists
/// them side by side). Counters: bytes/s of input read (`bytes_per_second`)
/// and, for attention, tokens/s.
///
/// Run: `build/bench/shoal_kernels_bench --benchmark_filter='dot|attention'`
/// (add `--benchmark_repetitions=5 --benchmark_report_aggregates_only` for
/// medians on a shared machine).

#include "kernels/f16.hpp"
#include "kernels/nn.hpp"
#include "kernels/quant.hpp"
#include "kernels/vector.hpp"

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace shoal::kernels;

namespace {

std::vector<float> random_floats(size_t n, uint32_t seed, float amp = 1) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-amp, amp);
  std::vector<float> v(n);
  for (float& x : v)
    x = u(rng);
  return v;
}

/// Registers `body(state, fn)` as "<name>/<variant>/<size>" for every
/// runnable variant of `k` (scalar first: the registry lists it first).
template <class Fn, class Body>
void add_variants(const std::string& name, const kernel<Fn>& k, const std::string& size,
                  Body body) {
  for (const auto& [variant, fn] : k.runnable()) {
    Fn* f = fn;
    benchmark::RegisterBenchmark((name + "/" + variant + "/" + size).c_str(),
                                 [f, body](benchmark::State& st) { body(st, f); });
  }
}

// ---- vector kernels -------------------------------------------------------

void register_vector() {
  for (size_t n : {size_t{384}, size_t{4096}}) {
    auto a = random_floats(n, 1), b = random_floats(n, 2);
    const auto sz = std::to_string(n);
    auto pair = [a, b, n](benchmark::State& st, dot_f32_t* f) {
      for (auto _ : st)
        benchmark::DoNotOptimize(f(a.data(), b.data(), n));
      st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(2 * n * sizeof(float)));
    };
    add_variants("dot_f32", dot_f32_kernel(), sz, pair);
    add_variants("l2sq_f32", l2sq_f32_kernel(), sz, pair);
    add_variants("cosine_f32", cosine_f32_kernel(), sz, pair);

    std::vector<uint16_t> h(n);
    for (size_t i = 0; i < n; ++i)
      h[i] = fp32_to_fp16(a[i]);
    add_variants("dot_f16", dot_f16_kernel(), sz, [h, b, n](benchmark::State& st, dot_f16_t* f) {
      for (auto _ : st)
        benchmark::DoNotOptimize(f(h.data(), b.data(), n));
      st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(6 * n));
    });

    std::vector<int8_t> ia(n), ib(n);
    for (size_t i = 0; i < n; ++i) {
      ia[i] = static_cast<int8_t>(std::lround(a[i] * 127));
      ib[i] = static_cast<int8_t>(std::lround(b[i] * 127));
    }
    add_variants("dot_i8", dot_i8_kernel(), sz, [ia, ib, n](benchmark::State& st, dot_i8_t* f) {
      for (auto _ : st)
        benchmark::DoNotOptimize(f(ia.data(), ib.data(), n));
      st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(2 * n));
    });

    // One query against 256 rows ([256, n] row-major, 0.4 / 4 MiB).
    constexpr size_t rows = 256;
    auto m = random_floats(rows * n, 3);
    add_variants("dot_rows_f32", dot_rows_f32_kernel(), sz + "x256",
                 [a, m, n](benchmark::State& st, dot_rows_t* f) {
                   std::vector<float> out(rows);
                   for (auto _ : st) {
                     f(rows, n, out.data(), a.data(), m.data());
                     benchmark::DoNotOptimize(out.data());
                     benchmark::ClobberMemory();
                   }
                   st.SetBytesProcessed(int64_t(st.iterations())
                                        * int64_t((rows + 1) * n * sizeof(float)));
                 });
  }
}

// ---- element-wise NN kernels ---------------------------------------------

void register_nn_elementwise() {
  // Hidden sizes of a 7B llama: 4096 (RMSNorm, softmax over a 4096-token
  // row) and 11008 (SwiGLU in the feed-forward).
  for (size_t n : {size_t{4096}, size_t{11008}}) {
    auto x = random_floats(n, 4, 4), w = random_floats(n, 5);
    const auto sz = std::to_string(n);
    const auto bytes = int64_t(n * sizeof(float));
    add_variants("rms_norm", rms_norm_kernel(), sz,
                 [x, w, n, bytes](benchmark::State& st, rms_norm_t* f) {
                   std::vector<float> y(n);
                   for (auto _ : st) {
                     f(n, y.data(), x.data(), w.data(), 1e-5f);
                     benchmark::DoNotOptimize(y.data());
                     benchmark::ClobberMemory();
                   }
                   st.SetBytesProcessed(int64_t(st.iterations()) * 2 * bytes);
                 });
    add_variants("softmax", softmax_kernel(), sz,
                 [x, n, bytes](benchmark::State& st, softmax_t* f) {
                   std::vector<float> y(n);
                   for (auto _ : st) {
                     f(n, y.data(), x.data(), 0.125f);
                     benchmark::DoNotOptimize(y.data());
                     benchmark::ClobberMemory();
                   }
                   st.SetBytesProcessed(int64_t(st.iterations()) * bytes);
                 });
    add_variants("silu", silu_kernel(), sz, [x, n, bytes](benchmark::State& st, silu_t* f) {
      std::vector<float> y(n);
      for (auto _ : st) {
        f(n, y.data(), x.data());
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
      }
      st.SetBytesProcessed(int64_t(st.iterations()) * bytes);
    });
    add_variants("swiglu", swiglu_kernel(), sz,
                 [x, w, n, bytes](benchmark::State& st, swiglu_t* f) {
                   std::vector<float> y(n);
                   for (auto _ : st) {
                     f(n, y.data(), x.data(), w.data());
                     benchmark::DoNotOptimize(y.data());
                     benchmark::ClobberMemory();
                   }
                   st.SetBytesProcessed(int64_t(st.iterations()) * 2 * bytes);
                 });
  }
  // RoPE of a 7B llama's query at one position: 32 heads of 128.
  constexpr size_t heads = 32, head_dim = 128;
  auto q = random_floats(heads * head_dim, 6);
  std::vector<float> table(rope_table_size(head_dim));
  rope_table(table, head_dim, 1000, {});
  add_variants("rope", rope_kernel(), "32x128", [q, table](benchmark::State& st, rope_t* f) {
    auto x = q;
    for (auto _ : st) {
      f(heads, head_dim, head_dim, x.data(), table.data());
      benchmark::ClobberMemory();
    }
    st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(heads * head_dim * sizeof(float)));
  });
}

// ---- attention over pages -------------------------------------------------

/// A sequence of `n_tokens` tokens of 8 kv heads × 128 in pages of 16,
/// optionally in two tiers (the oldest `n_old` tokens in `old_k`/`old_v`
/// pages, the rest in `k`/`v` pages).
struct paged_kv {
  static constexpr size_t kv_heads = 8, head_dim = 128, row = kv_heads * head_dim;
  std::vector<std::vector<std::byte>> store;
  std::vector<std::vector<const std::byte*>> pages; // k0, v0, k1, v1
  std::vector<kv_segment> segments;
  size_t bytes_read = 0; // K and V bytes of one kv head over all tokens

  static void encode(kv_type t, const float* x, std::byte* dst) {
    switch (t) {
      case kv_type::f32:
        std::memcpy(dst, x, row * 4);
        break;
      case kv_type::f16:
        for (size_t i = 0; i < row; ++i) {
          uint16_t h = fp32_to_fp16(x[i]);
          std::memcpy(dst + 2 * i, &h, 2);
        }
        break;
      case kv_type::q8_0: {
        std::vector<block_q8_0> b(row / 32);
        quantize_q8_0({x, row}, b);
        std::memcpy(dst, b.data(), b.size() * sizeof(block_q8_0));
        break;
      }
      case kv_type::q4_0: {
        std::vector<block_q4_0> b(row / 32);
        quantize_q4_0({x, row}, b);
        std::memcpy(dst, b.data(), b.size() * sizeof(block_q4_0));
        break;
      }
    }
  }

  void add_tier(kv_page_layout l, size_t n, uint32_t seed) {
    l.row_elems = row;
    auto x = random_floats(row, seed);
    std::vector<const std::byte*> kp, vp;
    for (size_t t0 = 0; t0 < n; t0 += l.page_tokens) {
      std::vector<std::byte> k(l.k_page_bytes()), v(l.v_page_bytes());
      for (size_t s = 0; s < l.page_tokens; ++s) {
        x[(t0 + s) % row] += 0.5f; // rows differ a little; content does not matter here
        encode(l.k_type, x.data(), k.data() + s * l.k_row_bytes());
        encode(l.v_type, x.data(), v.data() + s * l.v_row_bytes());
      }
      store.push_back(std::move(k)); // moving a vector keeps its buffer
      kp.push_back(store.back().data());
      store.push_back(std::move(v));
      vp.push_back(store.back().data());
    }
    pages.push_back(std::move(kp));
    pages.push_back(std::move(vp));
    bytes_read += n * (row_bytes(l.k_type, head_dim) + row_bytes(l.v_type, head_dim));
  }

  void finish(const std::vector<kv_page_layout>& layouts, const std::vector<size_t>& counts) {
    for (size_t i = 0; i < layouts.size(); ++i) {
      kv_page_layout l = layouts[i];
      l.row_elems = row;
      segments.push_back({l, pages[2 * i], pages[2 * i + 1], counts[i]});
    }
  }
};

void register_attention() {
  struct config {
    const char* name;
    kv_type old_k, old_v, k, v;
    size_t n_old;
  };
  const config configs[] = {
    {"f32", kv_type::f32, kv_type::f32, kv_type::f32, kv_type::f32, 0},
    {"f16", kv_type::f16, kv_type::f16, kv_type::f16, kv_type::f16, 0},
    {"q8_0", kv_type::q8_0, kv_type::q8_0, kv_type::q8_0, kv_type::q8_0, 0},
    {"q4_0", kv_type::q4_0, kv_type::q4_0, kv_type::q4_0, kv_type::q4_0, 0},
    {"q8_0+f16", kv_type::q8_0, kv_type::q8_0, kv_type::f16, kv_type::f16, 3584},
    {"q4_0+f16", kv_type::q4_0, kv_type::q4_0, kv_type::f16, kv_type::f16, 3584},
  };
  for (size_t n_tokens : {size_t{512}, size_t{4096}})
    for (const config& c : configs) {
      auto kv = std::make_shared<paged_kv>();
      const size_t n_old = c.n_old * n_tokens / 4096;
      std::vector<kv_page_layout> layouts;
      std::vector<size_t> counts;
      if (n_old > 0) {
        layouts.push_back({16, 0, c.old_k, c.old_v});
        counts.push_back(n_old);
        kv->add_tier(layouts.back(), n_old, 7);
      }
      layouts.push_back({16, 0, c.k, c.v});
      counts.push_back(n_tokens - n_old);
      kv->add_tier(layouts.back(), n_tokens - n_old, 8);
      kv->finish(layouts, counts);
      auto q = random_floats(paged_kv::head_dim, 9);
      add_variants(std::string("attention_") + c.name, attention_paged_kernel(),
                   std::to_string(n_tokens),
                   [kv, q, n_tokens](benchmark::State& st, attention_paged_t* f) {
                     std::vector<float> out(paged_kv::head_dim);
                     const float scale = 1.0f / std::sqrt(float(paged_kv::head_dim));
                     for (auto _ : st) {
                       f(kv->segments.size(), paged_kv::head_dim, out.data(), q.data(),
                         kv->segments.data(), 3, scale);
                       benchmark::DoNotOptimize(out.data());
                       benchmark::ClobberMemory();
                     }
                     st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(kv->bytes_read));
                     st.counters["tokens/s"] = benchmark::Counter(
                       double(st.iterations()) * double(n_tokens), benchmark::Counter::kIsRate);
                   });
    }
}

const bool registered = [] {
  register_vector();
  register_nn_elementwise();
  register_attention();
  return true;
}();

} // namespace
