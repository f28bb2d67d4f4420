/// @file Google Benchmark cases of the learning kernels, every runnable
/// variant next to its scalar reference in one run (names
/// `<kernel>/<variant>/<size>`):
///   MicroLoRA_forward, MicroLoRA_update   d = 256, r = 1, 2, 4, 8
///   FastGRNN_forward, FastGRNN_backward  one step, 32 → 64, ranks 8 / 8
///   EWC_penalty_grad                     65,536 parameters (penalty + gradient)
///   kmeans_pp                            10,000 × 64 points, k = 16 (dispatched
///                                        l2sq / dot_rows, active variants only)
///
/// The MicroLoRA cases run fixed batches (1000 calls per repetition, 300
/// repetitions) and report only aggregates: the median and p99 over the
/// batches of the per-call time, the same statistic bench/learning_peer.mjs
/// computes for @ruvector/learning-wasm (bench/learning_peer.sh prints both
/// side by side).
///
/// Run: `build/bench/shoal_kernels_bench --benchmark_filter='MicroLoRA|FastGRNN|EWC|kmeans'`

#include "kernels/learn.hpp"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <new>
#include <random>
#include <string>
#include <vector>

using namespace shoal::kernels;

namespace {

/// 64-byte aligned storage (a cache line, one AVX-512 vector): the layout
/// learn.hpp recommends; std::vector's 16-byte alignment splits every
/// AVX-512 load over two cache lines (MicroLoRA update ~1.5× slower).
template <class T>
struct aligned64 {
  using value_type = T;
  aligned64() = default;
  template <class U>
  aligned64(const aligned64<U>&) noexcept {}
  T* allocate(size_t n) {
    return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{64}));
  }
  void deallocate(T* p, size_t) noexcept { ::operator delete (p, std::align_val_t{64}); }
  bool operator==(const aligned64&) const noexcept { return true; }
};
using floats = std::vector<float, aligned64<float>>;

floats uniform_floats(size_t n, uint32_t seed, float amp = 1) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-amp, amp);
  floats v(n);
  for (float& x : v)
    x = u(rng);
  return v;
}

/// Nearest-rank 99th percentile of the repetitions' per-call times.
double p99(const std::vector<double>& v) {
  if (v.empty())
    return 0;
  std::vector<double> s(v);
  std::sort(s.begin(), s.end());
  const size_t rank = (99 * s.size() + 99) / 100; // ceil(0.99 n)
  return s[std::clamp<size_t>(rank, 1, s.size()) - 1];
}

/// Registers `body(state, fn)` as "<name>/<variant>/<size>" for every
/// runnable variant of `k`; `batched` gives the MicroLoRA batch settings.
template <class Fn, class Body>
void add_variants(const std::string& name, const kernel<Fn>& k, const std::string& size,
                  bool batched, Body body) {
  for (const auto& [variant, fn] : k.runnable()) {
    Fn* f = fn;
    auto* b = benchmark::RegisterBenchmark((name + "/" + variant + "/" + size).c_str(),
                                           [f, body](benchmark::State& st) { body(st, f); });
    if (batched)
      b->Iterations(1000)
        ->Repetitions(300)
        ->ComputeStatistics("p99", p99)
        ->ReportAggregatesOnly(true);
  }
}

void register_micro_lora() {
  constexpr size_t d = 256;
  for (size_t r : {size_t{1}, size_t{2}, size_t{4}, size_t{8}}) {
    const auto size = "d256_r" + std::to_string(r);
    auto x = uniform_floats(d, 1), g = uniform_floats(d, 2, 0.1f);
    auto a = uniform_floats(r * d, 3, 0.1f), bt = uniform_floats(r * d, 4, 0.1f);
    const float scale = 1.0f / float(r);
    add_variants("MicroLoRA_forward", micro_lora_forward_kernel(), size, true,
                 [=](benchmark::State& st, micro_lora_forward_t* f) {
                   floats y(d);
                   for (auto _ : st) {
                     f(d, r, y.data(), x.data(), a.data(), bt.data(), scale);
                     benchmark::DoNotOptimize(y.data());
                     benchmark::ClobberMemory();
                   }
                 });
    add_variants("MicroLoRA_update", micro_lora_update_kernel(), size, true,
                 [=](benchmark::State& st, micro_lora_update_t* f) {
                   floats aa = a, bb = bt;
                   float lr = 1e-3f; // alternating sign keeps the factors bounded
                   for (auto _ : st) {
                     f(d, r, aa.data(), bb.data(), x.data(), g.data(), scale, lr);
                     lr = -lr;
                     benchmark::ClobberMemory();
                   }
                 });
  }
}

void register_fastgrnn() {
  const fastgrnn_shape s{32, 64, 8, 8};
  const auto size = "32x64_r8";
  auto params = uniform_floats(s.n_params(), 5, 0.3f);
  auto x = uniform_floats(s.n_x, 6), h = uniform_floats(s.n_h, 7), go = uniform_floats(s.n_h, 8);
  add_variants("FastGRNN_forward", fastgrnn_forward_kernel(), size, false,
               [=](benchmark::State& st, fastgrnn_forward_t* f) {
                 floats out(s.n_h), cache(s.cache_size());
                 for (auto _ : st) {
                   f(&s, out.data(), cache.data(), params.data(), x.data(), h.data());
                   benchmark::DoNotOptimize(out.data());
                   benchmark::ClobberMemory();
                 }
               });
  add_variants("FastGRNN_backward", fastgrnn_backward_kernel(), size, false,
               [=](benchmark::State& st, fastgrnn_backward_t* f) {
                 floats out(s.n_h), cache(s.cache_size()), work(s.work_size());
                 floats grads(s.n_params(), 0.0f), dh(s.n_h), dx(s.n_x);
                 fastgrnn_forward(s, out, cache, params, x, h);
                 for (auto _ : st) {
                   f(&s, dh.data(), dx.data(), grads.data(), work.data(), params.data(),
                     cache.data(), x.data(), h.data(), go.data());
                   benchmark::DoNotOptimize(dh.data());
                   benchmark::ClobberMemory();
                 }
               });
}

void register_ewc() {
  constexpr size_t n = 65536;
  auto fisher = uniform_floats(n, 9), theta = uniform_floats(n, 10), anchor = uniform_floats(n, 11);
  for (float& f : fisher)
    f = std::abs(f);
  add_variants("EWC_penalty_grad", ewc_penalty_kernel(), "65536", false,
               [=](benchmark::State& st, ewc_penalty_t* f) {
                 floats grad(n, 0.0f);
                 float lambda = 1e-3f; // alternating sign keeps grad bounded
                 for (auto _ : st) {
                   benchmark::DoNotOptimize(
                     f(n, grad.data(), fisher.data(), theta.data(), anchor.data(), lambda));
                   lambda = -lambda;
                 }
                 // reads F, θ, θ*, grad; writes grad
                 st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(5 * n * sizeof(float)));
               });
}

void register_kmeans() {
  constexpr size_t n = 10000, dim = 64, k = 16;
  // 16 blobs (σ = 1) around centers in [-5, 5]^64
  auto centers = uniform_floats(k * dim, 12, 5);
  floats data(n * dim);
  std::mt19937 rng(13);
  std::normal_distribution<float> g(0, 1);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < dim; ++j)
      data[i * dim + j] = centers[(i % k) * dim + j] + g(rng);
  benchmark::RegisterBenchmark("kmeans_pp/active/10000x64_k16", [=](benchmark::State& st) {
    floats centroids(k * dim), scratch(kmeans_scratch_size(n, k, dim));
    std::vector<uint32_t> assign(n);
    size_t iters = 0;
    for (auto _ : st) {
      kmeans_rng r{42};
      iters = kmeans_pp(centroids, assign, data, dim, 50, r, scratch).iterations;
      benchmark::DoNotOptimize(centroids.data());
    }
    st.counters["lloyd_iters"] = double(iters);
  })->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("kmeans_seed_pp/active/10000x64_k16", [=](benchmark::State& st) {
    floats centroids(k * dim), scratch(kmeans_scratch_size(n, k, dim));
    for (auto _ : st) {
      kmeans_rng r{42};
      kmeans_seed_pp(centroids, data, dim, r, scratch);
      benchmark::DoNotOptimize(centroids.data());
    }
  })->Unit(benchmark::kMillisecond);
}

const bool registered = [] {
  register_micro_lora();
  register_fastgrnn();
  register_ewc();
  register_kmeans();
  return true;
}();

} // namespace
