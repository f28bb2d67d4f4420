/// @file Google Benchmark cases of the matrix kernels (kernels/matmul.hpp),
/// with the memory bandwidth they are bound by measured in the same run.
///
///   mem_read/<size>/threads:<t>           streaming read (sum) of a buffer:
///                                         256 MiB = DRAM (beyond the LLC),
///                                         16 MiB = last-level cache
///   mem_read_prefetch/256MiB/threads:<t>  the same with software prefetch
///                                         4 KiB ahead, as the kernels do
///   gemv/<type>/threads:<t>/cold          4096 × 4096 GEMV through `gemv`,
///                                         cycling over copies of the matrix
///                                         that together exceed 256 MiB, so
///                                         every call streams its weights
///                                         from DRAM (decode's situation)
///   gemv/<type>/threads:<t>/hot           the same matrix every call (it
///                                         stays in the LLC when it fits)
///   gemm/<type>/batch:<b>/threads:<t>     Y = X·Wᵀ, batch 8 and 32, Q4_0/Q8_0
///   matmul_kernel/<type>/<variant>        every runnable variant of the raw
///                                         kernel, 1024 × 4096 GEMV, hot
///   pool_run/threads:2/tasks:2            one fork-join of empty tasks on
///                                         the worker_pool (hand-off cost)
///
/// `bytes_per_second` counts weight bytes (row_bytes × rows per call), so a
/// GEMV's figure compares directly with mem_read's; the label names the
/// active variant. Threads: 1 = the calling thread, 2 = a worker_pool of 2.
///
/// Run: `build/bench/shoal_kernels_bench --benchmark_filter='mem_read|gemv|gemm'
///   --benchmark_repetitions=5 --benchmark_report_aggregates_only` (medians).

#include "kernels/f16.hpp"
#include "kernels/matmul.hpp"
#include "kernels/parallel.hpp"
#include "kernels/quant.hpp"

#include <benchmark/benchmark.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace shoal::kernels;

namespace {

constexpr size_t dim = 4096;
constexpr size_t cold_bytes = size_t{256} << 20;

const weight_type all_types[] = {weight_type::f32,  weight_type::f16,  weight_type::bf16,
                                 weight_type::q8_0, weight_type::q4_0, weight_type::q4_k,
                                 weight_type::q6_k};

/// 64-byte aligned heap bytes.
struct aligned_bytes {
  struct free_deleter {
    void operator()(void* p) const noexcept { std::free(p); }
  };
  std::unique_ptr<std::byte, free_deleter> p;
  size_t size = 0;
  explicit aligned_bytes(size_t n)
    : p(static_cast<std::byte*>(std::aligned_alloc(64, (n + 63) / 64 * 64))), size(n) {}
  std::byte* data() const { return p.get(); }
};

thread_pool* pool_of(size_t threads) {
  static worker_pool two(2);
  return threads <= 1 ? nullptr : &two;
}

// ---- memory bandwidth reference --------------------------------------------

#if defined(__x86_64__)
/// Sum of 64-bit words, four 256-bit accumulators; @pre n % 128 == 0.
/// `prefetch`: also prefetch 4 KiB ahead, as the matrix kernels do.
template <bool prefetch>
__attribute__((target("avx2"))) uint64_t read_sum(const std::byte* p, size_t n) {
  const auto* v = reinterpret_cast<const __m256i*>(p);
  __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
  for (size_t i = 0; i < n / 32; i += 4) {
    if constexpr (prefetch) {
      _mm_prefetch(reinterpret_cast<const char*>(v + i) + 4096, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(v + i) + 4096 + 64, _MM_HINT_T0);
    }
    a = _mm256_add_epi64(a, _mm256_load_si256(v + i));
    b = _mm256_add_epi64(b, _mm256_load_si256(v + i + 1));
    c = _mm256_add_epi64(c, _mm256_load_si256(v + i + 2));
    d = _mm256_add_epi64(d, _mm256_load_si256(v + i + 3));
  }
  a = _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d));
  uint64_t o[4];
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), a);
  return o[0] + o[1] + o[2] + o[3];
}
#else
template <bool prefetch>
uint64_t read_sum(const std::byte* p, size_t n) {
  uint64_t s = 0;
  for (size_t i = 0; i < n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    s += w;
  }
  return s;
}
#endif

template <bool prefetch>
void mem_read(benchmark::State& st, size_t bytes, size_t threads) {
  aligned_bytes buf(bytes);
  std::memset(buf.data(), 1, bytes);
  thread_pool* pool = pool_of(threads);
  uint64_t sums[2] = {0, 0};
  for (auto _ : st) {
    parallel_for(pool, threads, [&](size_t t) {
      index_range r = split_range(bytes, threads, t, 128);
      sums[t] += read_sum<prefetch>(buf.data() + r.begin, r.size());
    });
    benchmark::DoNotOptimize(sums);
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(bytes));
}

// ---- matrices ----------------------------------------------------------------

/// One 4096 × 4096 matrix of `type` (quantized from N(0, 0.02²) values; K
/// formats as ggml's layout with random codes and finite scales), plus the
/// copies that make the cold set. Built once per type, kept for the run.
struct matrix_set {
  size_t bytes = 0; // one matrix
  std::vector<aligned_bytes> copies;
};

std::vector<std::byte> make_matrix(weight_type type) {
  std::mt19937 rng(static_cast<uint32_t>(type) + 1);
  std::normal_distribution<float> g(0, 0.02f);
  std::vector<float> wf(dim * dim);
  for (float& v : wf)
    v = g(rng);
  std::vector<std::byte> out(dim * row_bytes(type, dim));
  auto* o = out.data();
  switch (type) {
    case weight_type::f32:
      std::memcpy(o, wf.data(), out.size());
      break;
    case weight_type::f16:
    case weight_type::bf16: {
      auto* h = reinterpret_cast<uint16_t*>(o);
      for (size_t i = 0; i < wf.size(); ++i)
        h[i] = type == weight_type::f16 ? fp32_to_fp16(wf[i]) : fp32_to_bf16(wf[i]);
      break;
    }
    case weight_type::q8_0:
      quantize_q8_0(wf, {reinterpret_cast<block_q8_0*>(o), wf.size() / 32});
      break;
    case weight_type::q4_0:
      quantize_q4_0(wf, {reinterpret_cast<block_q4_0*>(o), wf.size() / 32});
      break;
    case weight_type::q4_k:
    case weight_type::q6_k: {
      size_t bb = block_bytes(type);
      for (size_t i = 0; i < out.size(); ++i)
        o[i] = static_cast<std::byte>(rng());
      for (size_t b = 0; b < out.size() / bb; ++b) { // finite f16 scales
        uint16_t d = fp32_to_fp16(1e-3f);
        size_t at = type == weight_type::q4_k ? 0 : offsetof(block_q6_k, d);
        std::memcpy(o + b * bb + at, &d, 2);
        if (type == weight_type::q4_k)
          std::memcpy(o + b * bb + 2, &d, 2);
      }
      break;
    }
  }
  return out;
}

const matrix_set& matrices(weight_type type) {
  static std::map<weight_type, matrix_set> cache;
  auto it = cache.find(type);
  if (it != cache.end())
    return it->second;
  matrix_set& m = cache[type];
  auto one = make_matrix(type);
  m.bytes = one.size();
  size_t n_copies = (cold_bytes + m.bytes - 1) / m.bytes + 1;
  for (size_t i = 0; i < n_copies; ++i) {
    m.copies.emplace_back(m.bytes);
    std::memcpy(m.copies.back().data(), one.data(), m.bytes);
  }
  return m;
}

std::string active_variant(weight_type type) {
  switch (type) {
    case weight_type::f32:
      return matmul_f32_kernel().active_name();
    case weight_type::f16:
      return matmul_f16_kernel().active_name();
    case weight_type::bf16:
      return matmul_bf16_kernel().active_name();
    case weight_type::q8_0:
      return matmul_q8_0_kernel().active_name();
    case weight_type::q4_0:
      return matmul_q4_0_kernel().active_name();
    case weight_type::q4_k:
      return matmul_q4_k_kernel().active_name();
    case weight_type::q6_k:
      return matmul_q6_k_kernel().active_name();
  }
  return "?";
}

void matmul_case(benchmark::State& st, weight_type type, size_t batch, size_t threads, bool cold) {
  const matrix_set& m = matrices(type);
  std::mt19937 rng(7);
  std::normal_distribution<float> g(0, 1);
  std::vector<float> x(batch * dim), y(batch * dim);
  for (float& v : x)
    v = g(rng);
  std::vector<std::byte> scratch(matmul_scratch_bytes(type, dim, batch));
  thread_pool* pool = pool_of(threads);
  size_t n = cold ? m.copies.size() : 1, i = 0;
  for (auto _ : st) {
    weight_view w{m.copies[i].data(), type, dim, dim};
    if (gemm(y, w, x, batch, scratch, pool) != matmul_status::ok) {
      st.SkipWithError("gemm failed");
      break;
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
    i = i + 1 == n ? 0 : i + 1;
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(m.bytes));
  if (batch > 1)
    st.counters["GFLOP/s"] = benchmark::Counter(
      double(st.iterations()) * 2e-9 * double(dim * dim * batch), benchmark::Counter::kIsRate);
  st.SetLabel(active_variant(type));
}

/// Every runnable variant of the raw kernel on the first 1024 rows, one
/// activation row, hot: the SIMD variants next to the scalar reference.
template <class Fn, class W, class X>
void add_kernel_variants(const kernel<Fn>& k, weight_type type) {
  for (const auto& [variant, fn] : k.runnable()) {
    Fn* f = fn;
    std::string name = "matmul_kernel/" + std::string(to_string(type)) + "/" + variant;
    benchmark::RegisterBenchmark(name.c_str(), [f, type](benchmark::State& st) {
      const matrix_set& m = matrices(type);
      constexpr size_t rows = 1024;
      size_t n_per_row = block_elems(type) == 1 ? dim : dim / block_elems(type);
      std::vector<float> xf(dim, 0.5f), y(rows);
      std::vector<std::byte> xq(std::max<size_t>(matmul_scratch_bytes(type, dim, 1), 1));
      if constexpr (std::is_same_v<X, block_q8_0>)
        quantize_q8_0(xf, {reinterpret_cast<block_q8_0*>(xq.data()), dim / 32});
      else if constexpr (std::is_same_v<X, block_q8_k>)
        quantize_q8_k(xf, {reinterpret_cast<block_q8_k*>(xq.data()), dim / 256});
      const X* x = std::is_same_v<X, float> ? reinterpret_cast<const X*>(xf.data())
                                            : reinterpret_cast<const X*>(xq.data());
      const W* w = reinterpret_cast<const W*>(m.copies[0].data());
      for (auto _ : st) {
        f(rows, 1, n_per_row, y.data(), rows, w, x);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
      }
      st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(rows * row_bytes(type, dim)));
    });
  }
}

/// Cost of one fork-join on the pool of 2 with empty tasks: the overhead a
/// decode step pays per parallel kernel call.
void pool_run(benchmark::State& st) {
  thread_pool* pool = pool_of(2);
  std::atomic<size_t> sink{0};
  for (auto _ : st)
    parallel_for(pool, 2, [&](size_t t) { sink.fetch_add(t, std::memory_order_relaxed); });
  benchmark::DoNotOptimize(sink.load());
}

const bool registered = [] {
  benchmark::RegisterBenchmark("pool_run/threads:2/tasks:2", pool_run)->UseRealTime();
  for (size_t mib : {256, 16})
    for (size_t t : {1, 2}) {
      std::string name = "mem_read/" + std::to_string(mib) + "MiB/threads:" + std::to_string(t);
      benchmark::RegisterBenchmark(name.c_str(), [mib, t](benchmark::State& st) {
        mem_read<false>(st, mib << 20, t);
      })->UseRealTime();
    }
  for (size_t t : {1, 2})
    benchmark::RegisterBenchmark(("mem_read_prefetch/256MiB/threads:" + std::to_string(t)).c_str(),
                                 [t](benchmark::State& st) { mem_read<true>(st, 256 << 20, t); })
      ->UseRealTime();
  for (weight_type type : all_types)
    for (size_t t : {1, 2})
      for (bool cold : {true, false}) {
        std::string name = "gemv/" + std::string(to_string(type)) + "/threads:" + std::to_string(t)
                           + (cold ? "/cold" : "/hot");
        benchmark::RegisterBenchmark(name.c_str(), [type, t, cold](benchmark::State& st) {
          matmul_case(st, type, 1, t, cold);
        })->UseRealTime();
      }
  for (weight_type type : {weight_type::q4_0, weight_type::q8_0})
    for (size_t batch : {8, 32})
      for (size_t t : {1, 2}) {
        std::string name = "gemm/" + std::string(to_string(type))
                           + "/batch:" + std::to_string(batch) + "/threads:" + std::to_string(t);
        benchmark::RegisterBenchmark(name.c_str(), [type, batch, t](benchmark::State& st) {
          matmul_case(st, type, batch, t, false);
        })->UseRealTime();
      }
  add_kernel_variants<matmul_f32_t, float, float>(matmul_f32_kernel(), weight_type::f32);
  add_kernel_variants<matmul_f16_t, uint16_t, float>(matmul_f16_kernel(), weight_type::f16);
  add_kernel_variants<matmul_f16_t, uint16_t, float>(matmul_bf16_kernel(), weight_type::bf16);
  add_kernel_variants<matmul_q8_0_t, block_q8_0, block_q8_0>(matmul_q8_0_kernel(),
                                                             weight_type::q8_0);
  add_kernel_variants<matmul_q4_0_t, block_q4_0, block_q8_0>(matmul_q4_0_kernel(),
                                                             weight_type::q4_0);
  add_kernel_variants<matmul_q4_k_t, block_q4_k, block_q8_k>(matmul_q4_k_kernel(),
                                                             weight_type::q4_k);
  add_kernel_variants<matmul_q6_k_t, block_q6_k, block_q8_k>(matmul_q6_k_kernel(),
                                                             weight_type::q6_k);
  return true;
}();

} // namespace
