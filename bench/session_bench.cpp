/// @file shoal_session_bench: the in-process benchmarks of issue 6 (sessions,
/// KV cache, memory pool), each next to a reference measured in the same run
/// (absolute times drift on a shared machine; the ratios do not).
///
/// sessions   A memory-only actors::session_index filled with N sessions
///            (default 10,000 and 100,000): UUID-shaped ids (36 characters),
///            one turn each with a random unit 384-d embedding, users of ~10
///            sessions each. Timed one call at a time (steady_clock around
///            each call; its ~20 ns cost is in every row alike); look-ups
///            of random ids, each id first copied (untimed) into a buffer,
///            hot in the cache as a just-parsed request's id would be:
///              find(id)         the shared, immutable record (a pointer, no
///                               copy); target p99 ≤ 2 µs
///              ref map::find    std::unordered_map<std::string, uint32_t>
///                               ::find of the same keys: the hash-table floor
///              ref map+copy     unordered_map<std::string, session>::find and
///                               a copy of the session (what find cost when it
///                               returned a copy)
///              find + writer    find while another thread records turns of
///                               random sessions (10,000 turns/s; a node
///                               records one per completion)
///              by_user          a random user's ~10 sessions, sorted
///              similar k=5      an EXACT scan: a dot product with every
///                               session's context, then a partial sort
///              ref dot scan     the same exact scan with kernels::dot over
///                               one contiguous matrix, then a partial sort
///            and, once, the memory latency: a dependent read of a random
///            cache line of 256 MiB (what each cache miss of a cold look-up
///            costs).
///            Median, p99 and p99.9 (nearest rank) of the single calls.
/// kv         On a 110M-shape model (llama2.c stories110M: 12 layers, 12
///            heads of head_dim 64, so the old tier really quantizes; the
///            15M shape's head_dim 48 would keep it F16), random Q4_0 weights
///            written to a temporary file unless --model names one:
///              decode           context::eval of one token at a time into a
///                               kv_cache over a kv_pool (default tiers, 1
///                               GiB budget) plus migrate(), as the scheduler
///                               steps; 1 thread; tokens/s
///              KV only / token  the same steps without the forward pass:
///                               reserve(n+1), append, migrate()
///              migrate          migrate(true) of 64 F16 pages filled with
///                               random rows, to Q8_0 and to Q4_0 (K and V)
///              ref kernels      convert_f16_to_f32 + quantize of the same
///                               rows from one contiguous buffer
///              ref memcpy       memcpy of the same F16 bytes
///              page alloc       reserve + append of 16 tokens (one F16
///                               page, 576 KiB at this shape) into a fresh
///                               sequence, 128 pages per repetition, then
///                               the sequence is dropped: without a budget;
///                               with a budget that has room; with a full
///                               budget, so that every page evicts a cached
///                               one first (prefix caching on)
///              ref new+zero     operator new of the same bytes, zeroed (as
///                               the pool allocates), 128 then deleted
///              ref ring         the same, each new buffer replacing the
///                               oldest of 128 (the eviction pattern)
///            The page alloc rows run twice: with glibc's defaults (as the
///            node runs), where freed pages may go back to the OS and be
///            faulted in again, and with malloc keeping freed memory
///            (mallopt: mmap threshold 32 MiB, trim threshold 1 GiB), which
///            leaves the pool's own cost; each row gives its page faults.
///            Migration: median and p99 of the repetitions; allocation: of
///            single pages. Throughput from the median; GB/s of F16 bytes.
///
/// Output: Markdown tables (bench/harness.hpp) on stdout; progress and errors
/// on stderr (exit code 1 on an error; CLI11's codes on a bad option).
#include "actors/sessions.hpp"
#include "bench/harness.hpp"
#include "engine/model.hpp"
#include "engine/model_writer.hpp"
#include "kernels/blocks.hpp"
#include "kernels/quant.hpp"
#include "kernels/vector.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <new>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <malloc.h>       // mallopt (glibc)
#include <sys/resource.h> // getrusage
#include <unistd.h>       // getpid

using namespace shoal;
using namespace shoal::bench;
namespace fs = std::filesystem;

namespace {

/// Keeps the optimiser from dropping a result.
volatile uint64_t sink = 0;

constexpr size_t embedding_dim = 384;
constexpr size_t sessions_per_user = 10;

/// Minor page faults of this process so far (first touches of memory).
long minor_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

/// Times `op(i)` for i in [0, n), one call at a time; samples in ns.
template <class Op>
std::vector<double> time_each(size_t n, Op&& op) {
  std::vector<double> ns(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t t0 = now_ns();
    op(i);
    ns[i] = double(now_ns() - t0);
  }
  return ns;
}

/// Times `op(key)` for the ids[order[i]], one call at a time. The key is
/// copied into a reused buffer first, untimed: a request's id arrives hot
/// in the cache (just parsed), not as a cold string of a large table.
template <class Op>
std::vector<double> time_lookups(const std::vector<std::string>& ids,
                                 const std::vector<uint32_t>& order, Op&& op) {
  std::vector<double> ns(order.size());
  std::string key;
  for (size_t i = 0; i < order.size(); ++i) {
    key = ids[order[i]];
    const int64_t t0 = now_ns();
    op(key);
    ns[i] = double(now_ns() - t0);
  }
  return ns;
}

/// A latency row: median and p99 from the harness, p99.9 in the notes.
void print_latency(const std::string& name, const std::vector<double>& ns, const std::string& notes,
                   double target_p99_ns = 0) {
  auto sorted = ns;
  std::sort(sorted.begin(), sorted.end());
  const auto s = summarize(sorted);
  std::string text = "p99.9 " + fmt_time(percentile(sorted, 0.999));
  if (target_p99_ns > 0)
    text += s.p99_ns <= target_p99_ns ? "; target p99 ≤ " + fmt_time(target_p99_ns) + ": met"
                                      : "; target p99 ≤ " + fmt_time(target_p99_ns) + ": MISSED";
  if (!notes.empty())
    text += "; " + notes;
  print_row(name, s, 0, "", text);
}

std::vector<float> random_unit(std::mt19937_64& rng) {
  std::normal_distribution<float> g;
  std::vector<float> v(embedding_dim);
  double norm = 0;
  for (auto& x : v) {
    x = g(rng);
    norm += double(x) * x;
  }
  for (auto& x : v)
    x = static_cast<float>(x / std::sqrt(norm));
  return v;
}

/// 36 characters, UUID-shaped: what clients usually send as a session id
/// (longer than std::string's inline buffer, as real ids are).
std::string uuid_like(std::mt19937_64& rng) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string s(36, '-');
  for (size_t i = 0; i < s.size(); ++i)
    if (i != 8 && i != 13 && i != 18 && i != 23)
      s[i] = hex[rng() & 15];
  return s;
}

void bench_sessions(size_t n, size_t n_samples) {
  std::fprintf(stderr, "session_bench: filling an index with %zu sessions\n", n);
  auto opened = actors::session_index::open(nullptr, nullptr);
  if (!opened)
    throw std::runtime_error("session index: " + opened.err().message);
  auto index = *opened;
  std::mt19937_64 rng(n);
  const size_t n_users = std::max<size_t>(1, n / sessions_per_user);
  std::vector<std::string> ids(n), users(n_users);
  for (size_t u = 0; u < n_users; ++u)
    users[u] = "user-" + std::to_string(u);
  const int64_t t0_ms = 1'700'000'000'000;
  for (size_t i = 0; i < n; ++i) {
    ids[i] = uuid_like(rng);
    index->record_turn(ids[i], users[rng() % n_users], random_unit(rng), {"demo-tiny", 40, 3},
                       t0_ms + static_cast<int64_t>(i));
  }
  if (index->size() != n)
    throw std::runtime_error("session index holds " + std::to_string(index->size())
                             + " sessions, expected " + std::to_string(n));
  std::unordered_map<std::string, uint32_t> ref_keys;
  std::unordered_map<std::string, actors::session> ref_sessions;
  for (size_t i = 0; i < n; ++i) {
    ref_keys.emplace(ids[i], static_cast<uint32_t>(i));
    ref_sessions.emplace(ids[i], *index->find(ids[i]));
  }
  std::vector<uint32_t> order(n_samples);
  for (auto& o : order)
    o = static_cast<uint32_t>(rng() % n);

  const std::string size = std::to_string(n / 1000) + "K";
  auto find = [&](const std::string& key) {
    auto s = index->find(key);
    sink = sink + s->turns;
  };
  auto find_ns = time_lookups(ids, order, find);
  print_latency("find(id), " + size + " sessions", find_ns, "", 2000);
  auto ref_ns = time_lookups(
    ids, order, [&](const std::string& key) { sink = sink + ref_keys.find(key)->second; });
  print_latency("ref: unordered_map<string, uint32_t>::find, " + size, ref_ns,
                "the hash-table floor");
  auto copy_ns = time_lookups(ids, order, [&](const std::string& key) {
    actors::session s = ref_sessions.find(key)->second;
    sink = sink + s.turns;
  });
  print_latency("ref: unordered_map<string, session>::find + copy, " + size, copy_ns,
                "what find cost when it returned a copy");

  // A writer recording turns of random sessions at a steady rate.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> n_written{0};
  constexpr int64_t writer_period_ns = 100'000; // 10,000 turns/s
  std::thread writer([&] {
    std::mt19937_64 wrng(n + 1);
    const auto e = random_unit(wrng);
    int64_t next = now_ns();
    while (!stop.load(std::memory_order_relaxed)) {
      const size_t i = wrng() % n;
      index->record_turn(ids[i], "", e, {"demo-tiny", 60, 4}, t0_ms);
      n_written.fetch_add(1, std::memory_order_relaxed);
      next += writer_period_ns;
      while (now_ns() < next && !stop.load(std::memory_order_relaxed))
        std::this_thread::yield();
    }
  });
  const int64_t w0 = now_ns();
  auto contended_ns = time_lookups(ids, order, find);
  const double w_s = double(now_ns() - w0) / 1e9;
  stop = true;
  writer.join();
  char rate[64];
  std::snprintf(rate, sizeof rate, "writer: %.0f turns/s", double(n_written.load()) / w_s);
  print_latency("find(id) + 1 writer thread, " + size, contended_ns, rate, 2000);

  const size_t n_user_samples = std::min<size_t>(n_samples, 20'000);
  size_t n_found = 0;
  auto user_ns = time_each(n_user_samples, [&](size_t i) {
    auto v = index->by_user(users[order[i] % n_users]);
    n_found += v.size();
  });
  char per_user[64];
  std::snprintf(per_user, sizeof per_user, "%.1f sessions per call",
                double(n_found) / double(n_user_samples));
  print_latency("by_user, " + size, user_ns, per_user);

  const size_t n_similar = std::max<size_t>(50, 10'000'000 / n);
  std::vector<std::vector<float>> queries;
  for (size_t i = 0; i < n_similar; ++i)
    queries.push_back(random_unit(rng));
  auto similar_ns = time_each(n_similar, [&](size_t i) {
    auto v = index->similar(queries[i], 5);
    sink = sink + v.size();
  });
  print_latency("similar(k=5), " + size, similar_ns,
                "exact scan of all " + std::to_string(n) + " contexts (384-d)");
  // The same exact scan over one contiguous matrix with the SIMD dot kernel.
  std::vector<float> matrix;
  matrix.reserve(n * embedding_dim);
  for (const auto& [id, s] : ref_sessions)
    matrix.insert(matrix.end(), s.context.begin(), s.context.end());
  std::vector<std::pair<float, uint32_t>> scored(n);
  auto scan_ns = time_each(n_similar, [&](size_t i) {
    for (size_t r = 0; r < n; ++r)
      scored[r] = {kernels::dot(queries[i], {matrix.data() + r * embedding_dim, embedding_dim}),
                   static_cast<uint32_t>(r)};
    std::partial_sort(scored.begin(), scored.begin() + 5, scored.end(),
                      [](const auto& a, const auto& b) { return a.first > b.first; });
    sink = sink + scored[0].second;
  });
  print_latency("ref: kernels::dot scan of a contiguous matrix, top 5, " + size, scan_ns,
                "the exact-scan floor");
}

/// The machine's floor for a look-up whose data is not cached: one read of a
/// random cache line of a 256 MiB buffer, each read's address taken from
/// the previous one (a random cycle, Sattolo's algorithm), so reads cannot
/// overlap.
void bench_memory_latency(size_t n_samples) {
  struct alignas(64) line {
    uint64_t next;
  };
  const size_t n = (size_t(256) << 20) / sizeof(line);
  std::vector<line> lines(n);
  std::vector<uint32_t> perm(n);
  for (size_t i = 0; i < n; ++i)
    perm[i] = static_cast<uint32_t>(i);
  std::mt19937_64 rng(11);
  for (size_t i = n - 1; i > 0; --i)
    std::swap(perm[i], perm[rng() % i]);
  for (size_t i = 0; i < n; ++i)
    lines[perm[i]].next = perm[(i + 1) % n];
  uint64_t at = perm[0];
  auto ns = time_each(n_samples, [&](size_t) { at = lines[at].next; });
  sink = sink + at;
  print_latency("ref: one random read of 256 MiB (memory latency)", ns,
                "what a cold look-up pays per dependent miss");
}

// ---- KV cache -------------------------------------------------------------------

/// Deletes a file when it goes out of scope (the generated model).
struct temp_file {
  fs::path path;
  ~temp_file() {
    std::error_code ec;
    if (!path.empty())
      fs::remove(path, ec);
  }
};

/// Random F16 rows of `n` channels to fill K/V rows with (values ~ N(0, 1)).
class row_source {
public:
  row_source(size_t n, size_t n_rows) : n_(n), bits_(n * n_rows) {
    std::mt19937_64 rng(7);
    std::normal_distribution<float> g;
    std::vector<float> f(bits_.size());
    for (auto& x : f)
      x = g(rng);
    kernels::convert_f32_to_f16(f, bits_);
  }
  /// Row i (cycling), 2n bytes.
  const uint16_t* row(size_t i) const noexcept {
    return bits_.data() + (i % (bits_.size() / n_)) * n_;
  }

private:
  size_t n_;
  std::vector<uint16_t> bits_;
};

/// A throughput row: samples are times of `items` items each; GB/s from
/// `bytes_per_item` (0 = not shown).
void print_throughput(const std::string& name, const std::vector<double>& ns, size_t items,
                      const std::string& unit, double bytes_per_item, const std::string& notes) {
  const auto s = summarize(ns);
  const double per_s = double(items) * 1e9 / s.median_ns;
  std::string text;
  if (bytes_per_item > 0) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.2f GB/s", per_s * bytes_per_item / 1e9);
    text = buf;
  }
  if (!notes.empty())
    text += (text.empty() ? "" : "; ") + notes;
  print_row(name, s, per_s, unit, text);
}

core::result<std::shared_ptr<const engine::model>> kv_model(const std::string& path,
                                                            temp_file& tmp) {
  if (!path.empty())
    return engine::model::load(path);
  auto spec = *engine::random_model_preset("110M");
  spec.weight_type = 2; // Q4_0, as the demo-110m tier
  tmp.path =
    fs::temp_directory_path() / ("shoal-session-bench-" + std::to_string(::getpid()) + ".gguf");
  std::fprintf(stderr, "session_bench: writing a random 110M Q4_0 model to %s\n", tmp.path.c_str());
  if (auto ok = engine::write_random_model(spec, tmp.path.string()); !ok)
    return ok.err();
  return engine::model::load(tmp.path.string());
}

engine::kv_tier_config no_sharing() {
  engine::kv_tier_config c;
  c.prefix_caching = false;
  return c;
}

/// Per-token decode (forward pass + migrate) and the KV-only share of it.
void bench_decode(const std::shared_ptr<const engine::model>& m, size_t n_tokens, size_t reps) {
  const auto& hp = m->hparams();
  auto budget = std::make_shared<core::memory_budget>(uint64_t(1) << 30);
  engine::kv_pool pool(hp, engine::kv_tier_config{}, budget);
  engine::context ctx(m, 1, nullptr);
  std::vector<float> logits(hp.n_vocab);
  std::mt19937 rng(3);
  auto token = [&] { return static_cast<int32_t>(300 + rng() % (hp.n_vocab - 300)); };
  auto step = [&](engine::kv_cache& cache) {
    const int32_t id = token();
    if (auto ok = ctx.eval(cache, {&id, 1}, logits); !ok)
      throw std::runtime_error("decode: " + ok.err().message);
    cache.migrate();
  };
  { // warm-up
    engine::kv_cache warm(pool, n_tokens);
    for (int i = 0; i < 8; ++i)
      step(warm);
  }
  std::fprintf(stderr, "session_bench: decoding %zu tokens\n", n_tokens);
  engine::kv_cache cache(pool, n_tokens);
  auto decode_ns = time_each(n_tokens, [&](size_t) { step(cache); });
  const auto d = summarize(decode_ns);
  print_row("decode: eval 1 token + migrate, " + std::to_string(n_tokens) + " tokens", d,
            1e9 / d.mean_ns, "tokens", "1 thread; forward pass included");

  std::vector<double> kv_ns;
  for (size_t r = 0; r < reps; ++r) {
    engine::kv_cache c(pool, n_tokens);
    auto ns = time_each(n_tokens, [&](size_t t) {
      const int32_t id = token();
      if (auto ok = c.reserve(t + 1); !ok)
        throw std::runtime_error("reserve: " + ok.err().message);
      c.append({&id, 1});
      c.migrate();
    });
    kv_ns.insert(kv_ns.end(), ns.begin(), ns.end());
  }
  const auto k = summarize(kv_ns);
  char share[96];
  std::snprintf(share, sizeof share, "no forward pass; %.3f%% of a decode step (means)",
                100 * k.mean_ns / d.mean_ns);
  print_row("KV only: reserve + append + migrate, per token", k, 1e9 / k.mean_ns, "tokens", share);
}

/// Samples (ns) of single operations and the minor page faults they took.
struct timed {
  std::vector<double> ns;
  long faults = 0;
};

/// Page allocation: reserve + append of one page's tokens into fresh
/// sequences, `n_pages` per repetition; one sample per page.
timed page_alloc(const engine::llama_hparams& hp, engine::kv_tier_config cfg,
                 std::shared_ptr<core::memory_budget> budget, size_t n_pages, size_t reps,
                 bool warm) {
  engine::kv_pool pool(hp, cfg, std::move(budget));
  const size_t pt = cfg.page_tokens;
  std::vector<int32_t> ids(pt);
  int32_t next_id = 300; // distinct tokens: no prefix hits, new page names
  timed out;
  for (size_t r = 0; r < reps + (warm ? 1 : 0); ++r) {
    engine::kv_cache cache(pool, n_pages * pt);
    const long f0 = minor_faults();
    auto s = time_each(n_pages, [&](size_t p) {
      for (auto& id : ids)
        id = next_id++;
      if (auto ok = cache.reserve((p + 1) * pt); !ok)
        throw std::runtime_error("reserve: " + ok.err().message);
      cache.append(ids);
    });
    if (!warm || r > 0) {
      out.faults += minor_faults() - f0;
      out.ns.insert(out.ns.end(), s.begin(), s.end());
    }
  }
  return out;
}

/// The page allocation rows under the allocator's current settings
/// (`regime` names them).
void bench_page_alloc(const engine::llama_hparams& hp, size_t n_pages, size_t reps,
                      const std::string& regime) {
  const engine::kv_pool probe(hp, no_sharing(), nullptr);
  const size_t bytes = probe.page_bytes(false);
  const size_t n = n_pages * reps;
  auto row = [&](const std::string& name, const timed& t, const std::string& notes) {
    char faults[48];
    std::snprintf(faults, sizeof faults, "%.0f page faults/page", double(t.faults) / double(n));
    print_throughput(name + ", " + regime, t.ns, 1, "pages", double(bytes),
                     std::string(faults) + "; " + notes);
  };
  row("page alloc, no budget", page_alloc(hp, no_sharing(), nullptr, n_pages, reps, false),
      "prefix caching off");
  auto roomy = std::make_shared<core::memory_budget>(uint64_t(4) * n_pages * bytes);
  row("page alloc, budget with room", page_alloc(hp, no_sharing(), roomy, n_pages, reps, false),
      "prefix caching off");
  // Exactly n_pages fit: after the warm-up repetition every page held by
  // the cache must be evicted (least recently released first) to make room.
  auto full = std::make_shared<core::memory_budget>(uint64_t(n_pages) * bytes);
  row("page alloc, full budget (evicts a cached page each)",
      page_alloc(hp, engine::kv_tier_config{}, full, n_pages, reps, true), "prefix caching on");
  timed ref;
  std::vector<std::byte*> held(n_pages);
  for (size_t r = 0; r <= reps; ++r) { // the last round stays for the ring below
    const long f0 = minor_faults();
    auto s = time_each(n_pages,
                       [&](size_t p) { held[p] = new (std::align_val_t{64}) std::byte[bytes](); });
    if (r == reps)
      break;
    ref.faults += minor_faults() - f0;
    for (auto* p : held)
      ::operator delete[](p, std::align_val_t{64});
    ref.ns.insert(ref.ns.end(), s.begin(), s.end());
  }
  row("ref: new + zero of the page bytes", ref,
      std::to_string(n_pages) + " then delete; " + std::to_string(bytes) + " bytes a page");
  // The eviction pattern without the pool: a ring of n_pages buffers, each
  // new one replacing the oldest (deleted first, as an evicted page is).
  timed ring;
  for (size_t r = 0; r < reps; ++r) {
    const long f0 = minor_faults();
    auto s = time_each(n_pages, [&](size_t p) {
      ::operator delete[](held[p], std::align_val_t{64});
      held[p] = new (std::align_val_t{64}) std::byte[bytes]();
    });
    ring.faults += minor_faults() - f0;
    ring.ns.insert(ring.ns.end(), s.begin(), s.end());
  }
  for (auto* p : held)
    ::operator delete[](p, std::align_val_t{64});
  row("ref: delete the oldest + new + zero", ring, "a ring of " + std::to_string(n_pages));
}

/// migrate(true) of `n_pages` random F16 pages to `type` (K and V), per
/// repetition; and the references over the same bytes.
void bench_migrate(const engine::llama_hparams& hp, size_t n_pages, size_t reps) {
  const size_t n_kv = hp.n_embd_kv();
  const row_source rows(n_kv, 257);
  for (auto type : {kernels::kv_type::q8_0, kernels::kv_type::q4_0}) {
    engine::kv_tier_config cfg = no_sharing();
    cfg.recent_tokens = 0;
    cfg.old_k_type = cfg.old_v_type = type;
    engine::kv_pool pool(hp, cfg, nullptr);
    if (pool.config().old_k_type != type)
      throw std::runtime_error("the model's head_dim " + std::to_string(hp.head_dim)
                               + " is not a multiple of 32: the old tier stays F16");
    const size_t n_tokens = n_pages * cfg.page_tokens;
    std::vector<int32_t> ids(n_tokens, 300);
    std::vector<double> ns;
    long faults = 0;
    for (size_t r = 0; r < reps; ++r) {
      engine::kv_cache cache(pool, n_tokens);
      if (auto ok = cache.reserve(n_tokens); !ok)
        throw std::runtime_error("reserve: " + ok.err().message);
      size_t k = r;
      for (size_t t = 0; t < n_tokens; ++t)
        for (size_t l = 0; l < hp.n_layer; ++l) {
          std::memcpy(cache.k_row(l, t), rows.row(k++), 2 * n_kv);
          std::memcpy(cache.v_row(l, t), rows.row(k++), 2 * n_kv);
        }
      cache.append(ids);
      const long f0 = minor_faults();
      const int64_t t0 = now_ns();
      const size_t moved = cache.migrate(true);
      ns.push_back(double(now_ns() - t0));
      faults += minor_faults() - f0;
      if (moved != n_pages)
        throw std::runtime_error("migrate moved " + std::to_string(moved) + " of "
                                 + std::to_string(n_pages) + " pages");
    }
    const double page_f16 = double(pool.page_bytes(false));
    char ratio[128];
    std::snprintf(ratio, sizeof ratio,
                  "%zu pages per repetition; page %.0f -> %.0f KiB; %.0f page faults/page", n_pages,
                  page_f16 / 1024, double(pool.page_bytes(true)) / 1024,
                  double(faults) / double(n_pages * reps));
    print_throughput(std::string("migrate F16 -> ") + kernels::to_string(type), ns, n_pages,
                     "pages", page_f16, ratio);

    // Reference: the conversion kernels alone over the same rows, contiguous.
    const size_t n_rows = n_tokens * hp.n_layer * 2;
    std::vector<uint16_t> src(n_rows * n_kv);
    for (size_t i = 0; i < n_rows; ++i)
      std::memcpy(src.data() + i * n_kv, rows.row(i), 2 * n_kv);
    std::vector<float> tmp(n_kv);
    std::vector<std::byte> dst(n_rows * kernels::row_bytes(type, n_kv));
    const size_t dst_row = kernels::row_bytes(type, n_kv);
    std::vector<double> kns;
    for (size_t r = 0; r < reps; ++r) {
      const int64_t t0 = now_ns();
      for (size_t i = 0; i < n_rows; ++i) {
        kernels::convert_f16_to_f32({src.data() + i * n_kv, n_kv}, tmp);
        std::byte* out = dst.data() + i * dst_row;
        if (type == kernels::kv_type::q8_0)
          kernels::quantize_q8_0(tmp, {reinterpret_cast<kernels::block_q8_0*>(out), n_kv / 32});
        else
          kernels::quantize_q4_0(tmp, {reinterpret_cast<kernels::block_q4_0*>(out), n_kv / 32});
      }
      kns.push_back(double(now_ns() - t0));
      sink = sink + static_cast<uint64_t>(dst[r % dst.size()]);
    }
    print_throughput(std::string("ref: f16->f32 + quantize ") + kernels::to_string(type)
                       + " kernels",
                     kns, n_pages, "pages", page_f16, "same rows, one contiguous buffer");
  }
  // Reference: memcpy of the same F16 bytes.
  const engine::kv_pool probe(hp, no_sharing(), nullptr);
  const size_t bytes = n_pages * probe.page_bytes(false);
  std::vector<std::byte> a(bytes, std::byte{1}), b(bytes, std::byte{0});
  std::vector<double> ns;
  for (size_t r = 0; r < reps; ++r) {
    const int64_t t0 = now_ns();
    std::memcpy(b.data(), a.data(), bytes);
    ns.push_back(double(now_ns() - t0));
    sink = sink + static_cast<uint64_t>(b[r % bytes]);
  }
  print_throughput("ref: memcpy of the F16 bytes", ns, n_pages, "pages",
                   double(probe.page_bytes(false)), std::to_string(bytes >> 20) + " MiB");
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"Sessions, KV cache and memory pool benchmarks of issue 6 (Markdown tables)"};
  std::vector<std::string> sections{"sessions", "kv"};
  std::vector<size_t> sizes{10'000, 100'000};
  size_t samples = 200'000, decode_tokens = 384, alloc_pages = 128, migrate_pages = 64, reps = 20;
  std::string model;
  app.add_option("--sections", sections, "What to run: sessions, kv (comma-separated)")
    ->delimiter(',')
    ->check(CLI::IsMember({"sessions", "kv"}))
    ->capture_default_str();
  app.add_option("--sizes", sizes, "Sessions in the index, comma-separated")
    ->delimiter(',')
    ->check(CLI::Range(size_t(100), size_t(10'000'000)))
    ->capture_default_str();
  app.add_option("--samples", samples, "Timed find() calls per size")
    ->check(CLI::Range(size_t(1000), size_t(100'000'000)))
    ->capture_default_str();
  app.add_option("--model", model, "GGUF for the KV benchmarks (default: a random 110M Q4_0)")
    ->check(CLI::ExistingFile);
  app.add_option("--decode-tokens", decode_tokens, "Tokens decoded one at a time")
    ->check(CLI::Range(size_t(16), size_t(4096)))
    ->capture_default_str();
  app.add_option("--alloc-pages", alloc_pages, "Pages allocated per repetition")
    ->check(CLI::Range(size_t(1), size_t(4096)))
    ->capture_default_str();
  app.add_option("--migrate-pages", migrate_pages, "Pages migrated per repetition")
    ->check(CLI::Range(size_t(1), size_t(4096)))
    ->capture_default_str();
  app.add_option("-r,--repetitions", reps, "Repetitions of the KV benchmarks")
    ->check(CLI::Range(size_t(2), size_t(10'000)))
    ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  auto wants = [&](const char* s) {
    return std::find(sections.begin(), sections.end(), s) != sections.end();
  };

  try {
    if (wants("sessions")) {
      std::printf("### Session index (memory only, %zu find samples per size, 1 reader thread)\n\n",
                  samples);
      print_header();
      for (size_t n : sizes)
        bench_sessions(n, samples);
      bench_memory_latency(samples);
      std::printf("\n");
    }
    if (wants("kv")) {
      temp_file tmp;
      auto m = kv_model(model, tmp);
      if (!m)
        throw std::runtime_error(m.err().message);
      const auto& hp = (*m)->hparams();
      std::printf("### KV cache (%s: %u layers, %u KV heads x head_dim %u, %s weights; "
                  "%zu repetitions)\n\n",
                  model.empty() ? "random 110M" : fs::path(model).filename().c_str(), hp.n_layer,
                  hp.n_head_kv, hp.head_dim, std::string((*m)->weight_type_name()).c_str(), reps);
      print_header();
      bench_decode(*m, decode_tokens, reps);
      bench_migrate(hp, migrate_pages, reps);
      bench_page_alloc(hp, alloc_pages, reps, "glibc defaults");
      // glibc gives freed memory back to the OS (trim, munmap) and faults it
      // in again on the next touch; with both thresholds raised malloc keeps
      // it, leaving the cost of the pool and of zeroing the bytes.
      mallopt(M_MMAP_THRESHOLD, 32 << 20);
      mallopt(M_TRIM_THRESHOLD, 1 << 30);
      bench_page_alloc(hp, alloc_pages, reps, "malloc keeps memory");
      std::printf("\n");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "session_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
