// shoal_consolidation_bench: the deep loop's pattern-bank consolidation
// (pattern_bank::consolidate) on a bank of random unit patterns, with and
// without near-duplicates, over a real LMDB store. Reports the median and
// the worst of --repeats runs per stage (reading centroids, k-means++,
// near-duplicate search, HNSW index edits) as one Markdown table. The router
// actor takes the snapshot (prepare_consolidation) and applies the plan
// (apply_consolidation) on its own thread, and plans on a detached one: the
// "router thread" column (snapshot + apply) is how long routing waits during
// a deep run at once, the total how long the run takes. Moving the merge
// survivors in the index also runs on the router, after the run, in slices
// of 64 between routing requests (~10 ms each): its own column, in the total.
// --spread makes each near-duplicate the copy of a distinct pattern, so
// every merge survivor moves in the index (by default they are all near
// one pattern: a single survivor moves, the index edits are removals).
#include "router/pattern_bank.hpp"
#include "router/testing.hpp"
#include "store/environment.hpp"

#include <CLI/CLI.hpp>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using namespace shoal;
using namespace shoal::router;
namespace fs = std::filesystem;

namespace {

struct run_times {
  double total = 0, read = 0, kmeans = 0, pairs = 0, index = 0;
  double snapshot = 0, apply = 0; // the router thread's share
  double reindex = 0;             // moving survivors, sliced between messages
  uint64_t merged = 0;
  uint32_t k = 0, iterations = 0;
};

run_times run_once(const fs::path& dir, uint32_t dim, int n, int n_dups, bool spread,
                   std::mt19937& rng) {
  fs::remove_all(dir);
  auto env = store::environment::open({dir});
  if (!env)
    throw std::runtime_error("LMDB: " + env.err().message);
  router::router_config rc = testing::fine_patterns();
  rc.index.initial_capacity = static_cast<uint32_t>(n);
  auto bank = router::pattern_bank::open(dim, rc, *env);
  if (!bank)
    throw std::runtime_error("pattern bank: " + bank.err().message);
  std::vector<float> last;
  std::vector<std::vector<float>> originals; // --spread: one near-duplicate each
  for (int i = 0; i < n; ++i) {
    proto::pattern_record r;
    r.id = static_cast<uint64_t>(i + 1);
    // Near-duplicates: within ~0.97 cosine of an earlier pattern.
    const float jitter = 0.2f / std::sqrt(float(dim));
    if (i < n - n_dups)
      r.centroid = testing::unit(rng, dim);
    else if (spread)
      r.centroid =
        testing::jitter(originals[size_t(i - (n - n_dups)) % originals.size()], rng, jitter);
    else
      r.centroid = testing::jitter(last, rng, jitter);
    if (spread && i < n - n_dups)
      originals.push_back(r.centroid);
    if (i < n - n_dups && i % 7 == 0)
      last = r.centroid;
    r.tiers.resize(rc.tiers.size());
    r.created_ms = r.updated_ms = 1000;
    if (auto err = (*bank)->insert(r))
      throw std::runtime_error("insert: " + err.message);
  }
  if (auto err = (*bank)->checkpoint(2000))
    throw std::runtime_error("checkpoint: " + err.message);
  // The deep loop's three steps, as the router runs them (planning would be
  // on another thread there; here it is timed between the two).
  using clock = std::chrono::steady_clock;
  auto ms_between = [](clock::time_point a, clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  auto t0 = clock::now();
  auto plan = (*bank)->prepare_consolidation(router::consolidation_config{}, 3000);
  if (!plan)
    throw std::runtime_error("prepare_consolidation: " + plan.err().message);
  auto t1 = clock::now();
  router::pattern_bank::plan_consolidation(**plan);
  auto t2 = clock::now();
  auto s = (*bank)->apply_consolidation(**plan);
  plan->reset();
  auto t3 = clock::now();
  if (!s)
    throw std::runtime_error("apply_consolidation: " + s.err().message);
  if (auto err = (*bank)->reindex_moved((*bank)->reindex_pending()))
    throw std::runtime_error("reindex_moved: " + err.message);
  auto t4 = clock::now();
  run_times out{ms_between(t0, t4), double(s->read_ms), double(s->kmeans_ms), double(s->merge_ms),
                double(s->index_ms)};
  out.snapshot = ms_between(t0, t1);
  out.apply = ms_between(t2, t3);
  out.reindex = ms_between(t3, t4);
  out.merged = s->merged;
  out.k = s->clusters;
  out.iterations = s->iterations;
  return out;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"Pattern-bank consolidation (SONA deep loop) time"};
  int n = 100'000, dups = 10'000, repeats = 3;
  uint32_t dim = 384;
  app.add_option("--patterns", n, "patterns in the bank");
  app.add_option("--duplicates", dups, "of them near-duplicates (second row)");
  app.add_option("--dim", dim, "embedding dimension");
  app.add_option("--repeats", repeats, "runs per row (median and worst reported)");
  bool spread = false;
  app.add_flag("--spread", spread,
               "near-duplicates of distinct patterns (many merge survivors move in the index) "
               "instead of all near the same few");
  CLI11_PARSE(app, argc, argv);
  auto dir = fs::temp_directory_path() / ("shoal-consolidation-bench-" + std::to_string(getpid()));
  std::mt19937 rng(28);
  std::printf("| bank | runs | total median | worst | router thread: snapshot + apply (worst) "
              "| survivors re-indexed (router, in slices of 64) | read | k-means (k, iterations) "
              "| pair search | index removals | merged "
              "|\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  try {
    for (int d : {0, dups}) {
      std::vector<run_times> runs;
      for (int i = 0; i < repeats; ++i)
        runs.push_back(run_once(dir, dim, n, d, spread, rng));
      std::sort(runs.begin(), runs.end(),
                [](const run_times& a, const run_times& b) { return a.total < b.total; });
      const auto& m = runs[runs.size() / 2];
      // The router thread's stall: its own median and worst, not the total's run.
      std::vector<double> stall;
      for (const auto& r : runs)
        stall.push_back(r.snapshot + r.apply);
      std::sort(stall.begin(), stall.end());
      std::printf("| %d × %u, %d near-duplicates | %d | %.0f ms | %.0f ms | %.1f ms (%.1f ms) "
                  "| %.0f ms | %.0f ms | %.0f ms (%u, %u) | %.0f ms | %.0f ms | %llu |\n",
                  n, dim, d, repeats, m.total, runs.back().total, stall[stall.size() / 2],
                  stall.back(), m.reindex, m.read, m.kmeans, m.k, m.iterations, m.pairs, m.index,
                  static_cast<unsigned long long>(m.merged));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shoal_consolidation_bench: %s\n", e.what());
    fs::remove_all(dir);
    return 1;
  }
  fs::remove_all(dir);
  return 0;
}
