#include "router/pattern_bank.hpp"
#include "router/testing.hpp"

#include "kernels/vector.hpp"
#include "proto/error.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <random>

namespace fs = std::filesystem;
using namespace shoal;
using namespace shoal::router;
using namespace shoal::router::testing;

TEST_CASE("the router's regret falls on a small seeded bandit") {
  // 6 contexts (clusters in embedding space), 4 tiers with the default costs;
  // each context has a different best tier. Quality ~ Bernoulli(p[c][t]).
  const uint32_t dim = 64;
  router_config cfg;
  cfg.seed = 11;
  cfg.new_pattern_threshold = 0.9; // jittered queries join their context's pattern
  auto bank = pattern_bank::open(dim, cfg, nullptr);
  REQUIRE(bank);
  std::mt19937 rng(5);
  std::vector<std::vector<float>> centers;
  for (int c = 0; c < 6; ++c)
    centers.push_back(unit(rng, dim));
  const double p[6][4] = {{0.9, 0.92, 0.93, 0.94}, {0.2, 0.8, 0.85, 0.9},   {0.1, 0.3, 0.9, 0.95},
                          {0.1, 0.2, 0.4, 0.95},   {0.6, 0.62, 0.63, 0.64}, {0.3, 0.7, 0.72, 0.74}};
  std::vector<double> best(6, -1);
  for (int c = 0; c < 6; ++c)
    for (int t = 0; t < 4; ++t)
      best[c] = std::max(best[c], p[c][t] - cfg.tiers[t].cost);
  std::uniform_int_distribution<int> pick(0, 5);
  std::uniform_real_distribution<double> u(0, 1);
  const int n = 3000, window = 500;
  double first = 0, last = 0;
  for (int i = 0; i < n; ++i) {
    int c = pick(rng);
    auto q = jitter(centers[c], rng, 0.02f);
    auto r = (*bank)->route(q, i);
    double regret = best[c] - (p[c][r.tier] - cfg.tiers[r.tier].cost);
    if (i < window)
      first += regret;
    if (i >= n - window)
      last += regret;
    double quality = u(rng) < p[c][r.tier] ? 1.0 : 0.0;
    REQUIRE_FALSE((*bank)->learn(r.pattern_id, r.tier, quality, i));
  }
  first /= window;
  last /= window;
  MESSAGE("mean regret first window " << first << ", last window " << last);
  CHECK(last < 0.5 * first);
  CHECK(last < 0.04);
}

TEST_CASE("pattern index is rebuilt from LMDB after its file is deleted") {
  auto dir = temp_dir("rebuild");
  const uint32_t dim = 32;
  std::mt19937 rng(9);
  std::vector<std::vector<float>> qs;
  for (int i = 0; i < 100; ++i)
    qs.push_back(unit(rng, dim));
  std::vector<uint64_t> ids;
  {
    auto env = store::environment::open({dir});
    REQUIRE(env);
    auto bank = pattern_bank::open(dim, fine_patterns(), *env);
    REQUIRE(bank);
    for (auto& q : qs)
      ids.push_back((*bank)->route(q, 1).pattern_id);
    REQUIRE_FALSE((*bank)->learn(ids[3], 2, 0.75, 2));
    REQUIRE_FALSE((*bank)->checkpoint(3));
  }
  for (bool remove_file : {false, true}) {
    if (remove_file)
      fs::remove(dir / "patterns.hnsw");
    auto env = store::environment::open({dir});
    REQUIRE(env);
    auto bank = pattern_bank::open(dim, fine_patterns(), *env);
    REQUIRE(bank);
    CHECK((*bank)->rebuilt_index() == remove_file);
    CHECK((*bank)->size() == 100);
    auto rec = (*bank)->record(ids[3]);
    CHECK(rec.tiers[2].count == 1);
    CHECK(rec.tiers[2].sum_quality == doctest::Approx(0.75));
    // Searching with a stored query finds its own pattern again.
    auto r = (*bank)->route(qs[42], 4);
    CHECK_FALSE(r.new_pattern);
    CHECK(r.pattern_id == ids[42]);
  }
  fs::remove_all(dir);
}

TEST_CASE("patterns flushed without a checkpoint survive a restart") {
  auto dir = temp_dir("flush");
  std::mt19937 rng(4);
  {
    auto env = store::environment::open({dir});
    auto bank = pattern_bank::open(16, fine_patterns(), *env);
    REQUIRE(bank);
    REQUIRE_FALSE((*bank)->checkpoint(1)); // index file with 0 patterns
    for (int i = 0; i < 10; ++i)
      (*bank)->route(unit(rng, 16), 1);
    REQUIRE_FALSE((*bank)->flush()); // no new index file: it is stale now
  }
  auto env = store::environment::open({dir});
  auto bank = pattern_bank::open(16, fine_patterns(), *env);
  REQUIRE(bank);
  CHECK((*bank)->size() == 10);
  CHECK((*bank)->rebuilt_index());
  fs::remove_all(dir);
}

TEST_CASE("centroids keep full f32 precision in LMDB although the index stores int8") {
  auto dir = temp_dir("exact");
  std::mt19937 rng(6);
  std::vector<std::vector<float>> qs;
  std::vector<uint64_t> ids;
  {
    auto env = store::environment::open({dir});
    auto bank = pattern_bank::open(24, fine_patterns(), *env);
    REQUIRE(bank);
    for (int i = 0; i < 5; ++i) {
      qs.push_back(unit(rng, 24));
      ids.push_back((*bank)->route(qs.back(), 1).pattern_id);
      REQUIRE_FALSE((*bank)->index_pending());
    }
    REQUIRE_FALSE((*bank)->flush());
    // A learn after the flush rewrites the record from LMDB, still exact.
    REQUIRE_FALSE((*bank)->learn(ids[2], 1, 0.5, 2));
    REQUIRE_FALSE((*bank)->checkpoint(3));
  }
  auto env = store::environment::open({dir});
  auto bank = pattern_bank::open(24, fine_patterns(), *env);
  REQUIRE(bank);
  for (size_t i = 0; i < qs.size(); ++i)
    CHECK((*bank)->record(ids[i]).centroid == qs[i]);
  CHECK((*bank)->record(ids[2]).tiers[1].count == 1);
  fs::remove_all(dir);
}

TEST_CASE("a stored pattern with another dimension is refused with a clear error") {
  auto dir = temp_dir("dim");
  {
    auto env = store::environment::open({dir});
    auto bank = pattern_bank::open(16, fine_patterns(), *env);
    std::mt19937 rng(1);
    (*bank)->route(unit(rng, 16), 1);
    REQUIRE_FALSE((*bank)->flush());
  }
  auto env = store::environment::open({dir});
  auto bank = pattern_bank::open(32, fine_patterns(), *env);
  REQUIRE_FALSE(bank);
  CHECK(bank.err().message.find("dimension 16") != std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("pattern bank: the memory budget caps new patterns, requests then join their nearest") {
  const uint32_t dim = 32;
  router_config cfg;
  cfg.new_pattern_threshold = 0.99; // distinct queries would all found patterns
  auto bank = pattern_bank::open(dim, cfg, nullptr);
  REQUIRE(bank);
  auto budget = std::make_shared<core::memory_budget>(3 * (*bank)->pattern_bytes());
  REQUIRE_FALSE((*bank)->set_budget(budget));
  std::mt19937 rng(3);
  for (int i = 0; i < 10; ++i) {
    auto r = (*bank)->route(unit(rng, dim), i);
    CHECK(r.new_pattern == (i < 3));
  }
  CHECK((*bank)->size() == 3);
  CHECK((*bank)->budget_refusals() == 7);
  CHECK(budget->used(core::memory_budget::use::router) == 3 * (*bank)->pattern_bytes());
  CHECK(budget->used() <= budget->limit());
  // A bank holding more than a new budget allows is refused clearly.
  auto small = std::make_shared<core::memory_budget>(2 * (*bank)->pattern_bytes());
  auto err = (*bank)->set_budget(small);
  REQUIRE(err);
  CHECK(err.message.find("stored patterns need") != std::string::npos);
  bank->reset();
  CHECK(budget->used() == 0); // the bank gave its bytes back
}
