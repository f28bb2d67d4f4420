// shoal_consolidation_bench: the deep loop's pattern-bank consolidation
// (pattern_bank::consolidate) on a bank of random unit patterns, with and
// without near-duplicates, over a real LMDB store. Reports the median and
// the worst of --repeats runs per stage (reading centroids, k-means++,
// near-duplicate search, HNSW rebuild) as one Markdown table. The router
// actor runs consolidation on its own thread: the total is how long routing
// waits during a deep run.
#include "actors/pattern_bank.hpp"
#include "actors/testing.hpp"
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
using namespace shoal::actors;
namespace fs = std::filesystem;

namespace {

struct run_times {
  double total = 0, read = 0, kmeans = 0, pairs = 0, index = 0;
  uint64_t merged = 0;
  uint32_t k = 0, iterations = 0;
};

run_times run_once(const fs::path& dir, uint32_t dim, int n, int n_dups, std::mt19937& rng) {
  fs::remove_all(dir);
  auto env = store::environment::open({dir});
  if (!env)
    throw std::runtime_error("LMDB: " + to_string(env.error()));
  router_config rc = testing::fine_patterns();
  rc.index.initial_capacity = static_cast<uint32_t>(n);
  auto bank = pattern_bank::open(dim, rc, *env);
  if (!bank)
    throw std::runtime_error("pattern bank: " + to_string(bank.error()));
  std::vector<float> last;
  for (int i = 0; i < n; ++i) {
    proto::pattern_record r;
    r.id = static_cast<uint64_t>(i + 1);
    // Near-duplicates: within ~0.97 cosine of an earlier pattern.
    r.centroid = i < n - n_dups ? testing::unit(rng, dim) : testing::jitter(last, rng, 0.2f / std::sqrt(float(dim)));
    if (i < n - n_dups && i % 7 == 0)
      last = r.centroid;
    r.tiers.resize(rc.tiers.size());
    r.created_ms = r.updated_ms = 1000;
    if (auto err = (*bank)->insert(r))
      throw std::runtime_error("insert: " + to_string(err));
  }
  if (auto err = (*bank)->checkpoint(2000))
    throw std::runtime_error("checkpoint: " + to_string(err));
  auto t0 = std::chrono::steady_clock::now();
  auto s = (*bank)->consolidate(consolidation_config{}, 3000);
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (!s)
    throw std::runtime_error("consolidate: " + to_string(s.error()));
  return {ms, double(s->read_ms), double(s->kmeans_ms), double(s->merge_ms), double(s->index_ms),
          s->merged, s->clusters, s->iterations};
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
  CLI11_PARSE(app, argc, argv);
  auto dir = fs::temp_directory_path() / ("shoal-consolidation-bench-" + std::to_string(getpid()));
  std::mt19937 rng(28);
  std::printf("| bank | runs | total median | worst | read | k-means (k, iterations) | pair "
              "search | index rebuild | merged |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  try {
    for (int d : {0, dups}) {
      std::vector<run_times> runs;
      for (int i = 0; i < repeats; ++i)
        runs.push_back(run_once(dir, dim, n, d, rng));
      std::sort(runs.begin(), runs.end(),
                [](const run_times& a, const run_times& b) { return a.total < b.total; });
      const auto& m = runs[runs.size() / 2];
      std::printf("| %d × %u, %d near-duplicates | %d | %.0f ms | %.0f ms | %.0f ms | %.0f ms (%u, "
                  "%u) | %.0f ms | %.0f ms | %llu |\n",
                  n, dim, d, repeats, m.total, runs.back().total, m.read, m.kmeans, m.k,
                  m.iterations, m.pairs, m.index, static_cast<unsigned long long>(m.merged));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shoal_consolidation_bench: %s\n", e.what());
    fs::remove_all(dir);
    return 1;
  }
  fs::remove_all(dir);
  return 0;
}
