// The pattern bank's consolidation (SONA's deep loop): categories, merging
// near-duplicates, pruning, persistence, the memory budget, federation.
#include "router/pattern_bank.hpp"
#include "router/testing.hpp"

#include "kernels/vector.hpp"
#include "proto/error.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <set>

namespace fs = std::filesystem;
using namespace shoal;
using namespace shoal::router;
using namespace shoal::router::testing;

namespace {

constexpr uint32_t dim = 32;
constexpr int64_t day_ms = 86'400'000;

/// A unit vector at exactly cosine `cos` from unit vector `c`.
std::vector<float> near(const std::vector<float>& c, std::mt19937& rng, float cos) {
  auto u = unit(rng, static_cast<uint32_t>(c.size()));
  float d = kernels::dot(u, c);
  for (size_t i = 0; i < u.size(); ++i)
    u[i] -= d * c[i];
  kernels::normalize(u);
  float s = std::sqrt(1 - cos * cos);
  std::vector<float> v(c.size());
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = cos * c[i] + s * u[i];
  kernels::normalize(v);
  return v;
}

/// Routes `q` (it must found a new pattern) and learns `qualities` on `tier`.
uint64_t found(pattern_bank& b, const std::vector<float>& q, int64_t now_ms, uint32_t tier = 0,
               std::vector<double> qualities = {}) {
  auto r = b.route(q, now_ms);
  REQUIRE(r.new_pattern);
  REQUIRE_FALSE(b.index_pending());
  for (double x : qualities)
    REQUIRE_FALSE(b.learn(r.pattern_id, tier, x, now_ms));
  return r.pattern_id;
}

uint64_t count_of(const std::vector<proto::tier_stat>& tiers) {
  uint64_t n = 0;
  for (const auto& t : tiers)
    n += t.count;
  return n;
}

consolidation_config deep_defaults() {
  return consolidation_config{};
}

} // namespace

TEST_CASE("consolidation: separable clusters become categories that survive a reopen") {
  auto dir = temp_dir("consolidate-categories");
  std::mt19937 rng(21);
  std::vector<std::vector<float>> centers;
  for (int c = 0; c < 4; ++c)
    centers.push_back(unit(rng, dim));
  std::vector<std::vector<uint64_t>> groups(4);
  std::map<uint64_t, uint32_t> before;
  {
    auto env = store::environment::open({dir});
    REQUIRE(env);
    auto bank = pattern_bank::open(dim, fine_patterns(), *env);
    REQUIRE(bank);
    auto& b = **bank;
    CHECK(b.categories().empty());
    for (int i = 0; i < 25; ++i)
      for (int c = 0; c < 4; ++c) // members ~0.72 apart: no near-duplicates
        groups[c].push_back(found(b, near(centers[c], rng, 0.85f), 1000));
    CHECK(b.category(groups[0][0]) == pattern_bank::no_category);
    auto cfg = deep_defaults();
    cfg.clusters = 4;
    auto s = b.consolidate(cfg, 2000);
    REQUIRE(s);
    CHECK(s->clusters == 4);
    CHECK(s->merged == 0);
    CHECK(s->pruned == 0);
    CHECK(s->patterns_after == 100);
    CHECK(b.categories().size() == 4);
    std::set<uint32_t> seen;
    for (const auto& g : groups) {
      uint32_t cat = b.category(g.front());
      CHECK(cat != pattern_bank::no_category);
      for (uint64_t id : g)
        CHECK(b.category(id) == cat);
      seen.insert(cat);
    }
    CHECK(seen.size() == 4);
    for (const auto& g : groups)
      for (uint64_t id : g)
        before[id] = b.category(id);
    REQUIRE_FALSE(b.checkpoint(3000));
  }
  auto env = store::environment::open({dir});
  REQUIRE(env);
  auto bank = pattern_bank::open(dim, fine_patterns(), *env);
  REQUIRE(bank);
  auto& b = **bank;
  for (const auto& [id, cat] : before)
    CHECK(b.category(id) == cat);
  // A pattern created since joins the category of its region.
  uint64_t fresh = found(b, near(centers[2], rng, 0.85f), 4000);
  CHECK(b.category(fresh) == before[groups[2][0]]);
  // Consolidating again (another seed) keeps the ids of the same regions.
  auto cfg = deep_defaults();
  cfg.clusters = 4;
  cfg.seed = 99;
  auto s = b.consolidate(cfg, 5000);
  REQUIRE(s);
  CHECK(s->categories_kept == 4);
  for (const auto& [id, cat] : before)
    CHECK(b.category(id) == cat);
  fs::remove_all(dir);
}

TEST_CASE("consolidation: two near-duplicates merge with summed statistics and survive a reopen") {
  auto dir = temp_dir("consolidate-merge");
  std::mt19937 rng(22);
  auto cp = unit(rng, dim);
  auto cq = near(cp, rng, 0.97f);
  uint64_t p = 0, q = 0;
  std::vector<float> expect(dim);
  std::vector<proto::tier_stat> sum;
  size_t n_before = 0;
  {
    auto env = store::environment::open({dir});
    REQUIRE(env);
    auto bank = pattern_bank::open(dim, fine_patterns(), *env);
    REQUIRE(bank);
    auto& b = **bank;
    p = found(b, cp, 1000, 1, {0.9, 0.8, 1.0, 0.7, 0.6});
    for (int i = 0; i < 12; ++i)
      found(b, unit(rng, dim), 1000, 2, {0.5, 0.5, 0.5});
    REQUIRE_FALSE(b.checkpoint(1500));     // P's centroid is read back from LMDB...
    q = found(b, cq, 1600, 1, {0.2, 0.4}); // ...Q's is not flushed yet
    REQUIRE_FALSE(b.learn(q, 3, 0.3, 1700));
    sum = b.total(p);
    router::add_tiers(sum, b.total(q));
    for (size_t i = 0; i < dim; ++i) // weights 1 + observations: 6 and 4
      expect[i] = 6 * cp[i] + 4 * cq[i];
    kernels::normalize(expect);
    n_before = b.size();
    auto s = b.consolidate(deep_defaults(), 2000);
    REQUIRE(s);
    CHECK(s->merged == 1);
    CHECK(s->pruned == 0);
    CHECK(s->patterns_before == n_before);
    CHECK(s->patterns_after == n_before - 1);
    CHECK(b.size() == n_before - 1);
    CHECK(b.record(q).id == 0); // Q is gone; P has both statistics
    auto t = b.total(p);
    REQUIRE(t.size() == 4);
    for (size_t i = 0; i < 4; ++i) {
      CHECK(t[i].count == sum[i].count);
      CHECK(t[i].sum_quality == doctest::Approx(sum[i].sum_quality));
      CHECK(t[i].sum_quality2 == doctest::Approx(sum[i].sum_quality2));
    }
    CHECK(kernels::dot(b.record(p).centroid, expect) > 0.99999f);
    // Routing finds the survivor at its new centroid.
    auto r = b.route(expect, 2100);
    CHECK_FALSE(r.new_pattern);
    CHECK(r.pattern_id == p);
    REQUIRE_FALSE(b.checkpoint(2200));
  }
  auto env = store::environment::open({dir});
  REQUIRE(env);
  auto gone = (*env)->get(store::table::patterns, store::u64_key(q));
  REQUIRE(gone);
  CHECK_FALSE(gone->has_value()); // erased from LMDB
  auto bank = pattern_bank::open(dim, fine_patterns(), *env);
  REQUIRE(bank);
  auto& b = **bank;
  CHECK_FALSE(b.rebuilt_index()); // the index file was saved after the merge
  CHECK(b.size() == n_before - 1);
  auto rec = b.record(p);
  for (size_t i = 0; i < 4; ++i)
    CHECK(rec.tiers[i].count == sum[i].count);
  CHECK(rec.hits == 3); // P's founding query, Q's, and the query routed to P after the merge
  CHECK(kernels::dot(rec.centroid, expect) > 0.99999f);
  // Q's query finds the survivor as its nearest pattern.
  auto r = b.route(cq, 3000);
  REQUIRE_FALSE(r.neighbors.empty());
  CHECK(r.neighbors.front().pattern_id == p);
  fs::remove_all(dir);
}

/// Founds P and a near-duplicate Q among 12 others, and applies a planned
/// consolidation that merges Q into P without moving P in the index yet.
/// Returns P and its pre-merge centroid.
std::pair<uint64_t, std::vector<float>> merge_one_pair(pattern_bank& b, std::mt19937& rng) {
  auto cp = unit(rng, dim);
  const uint64_t p = found(b, cp, 1000, 1, {0.9, 0.8});
  found(b, near(cp, rng, 0.97f), 1000, 1, {0.2, 0.4});
  for (int i = 0; i < 12; ++i)
    found(b, unit(rng, dim), 1000, 2, {0.5, 0.5, 0.5});
  auto plan = b.prepare_consolidation(deep_defaults(), 2000);
  REQUIRE(plan);
  pattern_bank::plan_consolidation(**plan);
  auto st = b.apply_consolidation(**plan);
  REQUIRE(st);
  REQUIRE(st->merged == 1);
  return {p, cp};
}

TEST_CASE("consolidation: a checkpoint moves the merge survivors still queued, so the saved index "
          "has them") {
  auto dir = temp_dir("consolidate-checkpoint-moves");
  std::mt19937 rng(26);
  auto env = store::environment::open({dir});
  REQUIRE(env);
  auto bank = pattern_bank::open(dim, fine_patterns(), *env);
  REQUIRE(bank);
  auto& b = **bank;
  auto [p, cp] = merge_one_pair(b, rng);
  CHECK(b.reindex_pending() == 1); // P waits to move to its merged centroid
  const auto merged = b.record(p).centroid;
  const float pre_merge = kernels::dot(merged, cp); // P's vector in the index until it moves
  REQUIRE(pre_merge < 0.999f);
  REQUIRE_FALSE(b.checkpoint(2100));
  CHECK(b.reindex_pending() == 0); // moved before the index file was saved
  bank->reset();
  // Reopened from the saved index (not rebuilt): P is at its merged centroid.
  auto again = pattern_bank::open(dim, fine_patterns(), *env);
  REQUIRE(again);
  CHECK_FALSE((*again)->rebuilt_index());
  auto r = (*again)->route(merged, 2200);
  REQUIRE_FALSE(r.neighbors.empty());
  CHECK(r.neighbors.front().pattern_id == p);
  CHECK(r.neighbors.front().similarity > (1.0f + pre_merge) / 2);
  again->reset();
  fs::remove_all(dir);
}

TEST_CASE("consolidation: a survivor whose move the memory budget refuses stays queued until there "
          "is room") {
  std::mt19937 rng(27);
  auto bank = pattern_bank::open(dim, fine_patterns(), nullptr);
  REQUIRE(bank);
  auto& b = **bank;
  const uint64_t p = merge_one_pair(b, rng).first;
  REQUIRE(b.reindex_pending() == 1);
  // A budget with no byte to spare: the move (a fresh index slot) is refused.
  auto full = std::make_shared<core::memory_budget>(b.size() * b.pattern_bytes()
                                                    + b.index_removed() * b.index_slot_bytes()
                                                    + b.categories().size() * (4 + 4 * (dim + 1)));
  REQUIRE_FALSE(b.set_budget(full));
  REQUIRE(full->used() == full->limit());
  const uint64_t refusals = b.budget_refusals();
  REQUIRE_FALSE(b.reindex_moved(8));
  CHECK(b.reindex_pending() == 1); // still queued, not dropped
  CHECK(b.budget_refusals() == refusals + 1);
  CHECK(full->used() == full->limit());
  // With room, it moves and its slot is reserved.
  auto roomy = std::make_shared<core::memory_budget>(full->limit() + b.index_slot_bytes());
  REQUIRE_FALSE(b.set_budget(roomy));
  REQUIRE_FALSE(b.reindex_moved(8));
  CHECK(b.reindex_pending() == 0);
  CHECK(roomy->used() == roomy->limit());
  auto r = b.route(b.record(p).centroid, 2100);
  REQUIRE_FALSE(r.neighbors.empty());
  CHECK(r.neighbors.front().pattern_id == p);
}

TEST_CASE(
  "consolidation: a stale pattern with few observations is pruned, a well-observed old one stays") {
  auto dir = temp_dir("consolidate-prune");
  std::mt19937 rng(23);
  uint64_t old_poor = 0, old_rich = 0, young_poor = 0;
  const int64_t now = 40 * day_ms;
  {
    auto env = store::environment::open({dir});
    REQUIRE(env);
    auto bank = pattern_bank::open(dim, fine_patterns(), *env);
    REQUIRE(bank);
    auto& b = **bank;
    old_poor = found(b, unit(rng, dim), 1000, 0, {0.5, 0.5});                // 2 < 3 observations
    old_rich = found(b, unit(rng, dim), 1000, 0, {0.5, 0.5, 0.5, 0.5, 0.5}); // 5
    young_poor = found(b, unit(rng, dim), now - 2 * day_ms); // recent, 0 observations
    // A pattern hit recently is not stale even with few observations.
    uint64_t hit = found(b, unit(rng, dim), 1000);
    auto r = b.route(b.record(hit).centroid, now - day_ms);
    REQUIRE(r.pattern_id == hit);
    REQUIRE_FALSE(b.flush());
    auto s = b.consolidate(deep_defaults(), now);
    REQUIRE(s);
    CHECK(s->pruned == 1);
    CHECK(s->merged == 0);
    CHECK(b.size() == 3);
    CHECK(b.record(old_poor).id == 0);
    CHECK(b.record(old_rich).id == old_rich);
    CHECK(b.record(young_poor).id == young_poor);
    CHECK(b.record(hit).id == hit);
    REQUIRE_FALSE(b.flush()); // no checkpoint: the old index file is now stale
  }
  auto env = store::environment::open({dir});
  REQUIRE(env);
  auto bank = pattern_bank::open(dim, fine_patterns(), *env);
  REQUIRE(bank);
  auto& b = **bank;
  CHECK(b.size() == 3);
  CHECK(b.record(old_poor).id == 0);
  CHECK(b.record(old_rich).tiers[0].count == 5);
  // min_observations 0 prunes nothing.
  auto cfg = deep_defaults();
  cfg.min_observations = 0;
  auto s = b.consolidate(cfg, 400 * day_ms);
  REQUIRE(s);
  CHECK(s->pruned == 0);
  fs::remove_all(dir);
}

TEST_CASE("consolidation: the memory budget gets the bytes of removed patterns back") {
  std::mt19937 rng(24);
  auto bank = pattern_bank::open(dim, fine_patterns(), nullptr);
  REQUIRE(bank);
  auto& b = **bank;
  const uint64_t pb = b.pattern_bytes();
  auto budget = std::make_shared<core::memory_budget>(64 * pb);
  REQUIRE_FALSE(b.set_budget(budget));
  using use = core::memory_budget::use;
  for (int i = 0; i < 10; ++i) {
    auto c = unit(rng, dim);
    found(b, c, 1000, 0, {0.5, 0.5, 0.5});
    found(b, near(c, rng, 0.97f), 1000, 0, {0.5, 0.5, 0.5}); // its near-duplicate
  }
  for (int i = 0; i < 5; ++i)
    found(b, unit(rng, dim), 1000); // stale by `now`, no observations
  CHECK(budget->used(use::router) == 25 * pb);
  // Too little room for the working memory: refused, nothing changes.
  auto tight = std::make_shared<core::memory_budget>(26 * pb);
  REQUIRE_FALSE(b.set_budget(tight));
  auto refused = b.consolidate(deep_defaults(), 40 * day_ms);
  REQUIRE_FALSE(refused);
  CHECK(refused.err().code == errc::unavailable);
  CHECK(b.size() == 25);
  CHECK(tight->used(use::router) == 25 * pb);
  REQUIRE_FALSE(b.set_budget(budget));
  auto s = b.consolidate(deep_defaults(), 40 * day_ms);
  REQUIRE(s);
  CHECK(s->merged == 10);
  CHECK(s->pruned == 5);
  CHECK(b.size() == 10);
  // The 15 removed patterns give their statistics back; their index slots
  // stay (removed, until a rebuild), and so do the old slots of merge
  // survivors moved to their merged centroid.
  CHECK(s->released_bytes == 15 * b.stats_bytes());
  const uint64_t slot = b.index_slot_bytes();
  CHECK(b.index_removed() >= 15);
  uint64_t table = b.categories().size() * (4 + 4 * (dim + 1));
  CHECK(budget->used(use::router) == 10 * pb + b.index_removed() * slot + table);
  bank->reset();
  CHECK(budget->used() == 0);
}

TEST_CASE("consolidation: invalid settings are refused and change nothing") {
  std::mt19937 rng(25);
  auto bank = pattern_bank::open(dim, fine_patterns(), nullptr);
  REQUIRE(bank);
  found(**bank, unit(rng, dim), 1);
  using tweak = void (*)(consolidation_config&);
  for (tweak bad :
       std::initializer_list<tweak>{[](consolidation_config& c) { c.merge_similarity = 0; },
                                    [](consolidation_config& c) { c.merge_similarity = 1.5; },
                                    [](consolidation_config& c) { c.max_iterations = 0; },
                                    [](consolidation_config& c) { c.stale_days = 0; },
                                    [](consolidation_config& c) { c.clusters = 70000; }}) {
    auto cfg = deep_defaults();
    bad(cfg);
    auto s = (*bank)->consolidate(cfg, 100 * day_ms);
    REQUIRE_FALSE(s);
    CHECK(s.err().code == errc::invalid_argument);
  }
  CHECK((*bank)->size() == 1);
  CHECK((*bank)->categories().empty());
}

namespace {

std::unique_ptr<pattern_bank> replica(uint64_t node_id,
                                      std::shared_ptr<store::environment> env = nullptr) {
  auto b = open_replica(dim, node_id, std::move(env));
  REQUIRE(b);
  return std::move(*b);
}

void ship(pattern_bank& from, uint64_t from_id, pattern_bank& to, int64_t now_ms) {
  REQUIRE(ship_deltas(from, from_id, to, now_ms));
}

/// Sum of every tier's count over the patterns with these global keys.
uint64_t fleet_count(const pattern_bank& b,
                     const std::vector<std::pair<uint64_t, uint64_t>>& keys) {
  uint64_t n = 0;
  for (auto [node, id] : keys)
    n += count_of(b.total(b.find(node, id)));
  return n;
}

bool same_origin(const pattern_bank& a, const pattern_bank& b, uint64_t node) {
  proto::origin_summary sa, sb;
  for (const auto& s : a.summarize())
    if (s.node == node)
      sa = s;
  for (const auto& s : b.summarize())
    if (s.node == node)
      sb = s;
  return sa.count == sb.count && sa.hash == sb.hash && sa.max_version == sb.max_version;
}

} // namespace

TEST_CASE(
  "consolidation: a federated bank removes only its own unshared patterns and peers converge") {
  std::mt19937 rng(26);
  auto a = replica(1), b = replica(2);
  auto cp = unit(rng, dim), cr = unit(rng, dim), ct = unit(rng, dim);
  // On A: P and Q (A's own), R (A's, B will contribute) and S (A's own, more
  // observations than R), U (A's own) near T (created by B).
  uint64_t p = found(*a, cp, 1000, 0, {0.9, 0.9, 0.9, 0.9});
  uint64_t q = found(*a, near(cp, rng, 0.97f), 1000, 0, {0.1, 0.1, 0.1});
  uint64_t r = found(*a, cr, 1000, 1, {0.5, 0.5, 0.5});
  uint64_t s = found(*a, near(cr, rng, 0.97f), 1000, 1, {0.6, 0.6, 0.6, 0.6, 0.6, 0.6});
  uint64_t u = found(*a, near(ct, rng, 0.97f), 1000, 2, {0.7, 0.7, 0.7, 0.7, 0.7});
  // On B: T, and V (stale, never observed: prunable but not A's to prune).
  uint64_t t = found(*b, ct, 1000, 2, {0.3, 0.3, 0.3});
  uint64_t v = found(*b, unit(rng, dim), 1000);
  ship(*a, 1, *b, 2000);
  ship(*b, 2, *a, 2000);
  REQUIRE_FALSE(b->learn(b->find(1, r), 1, 1.0, 3000)); // B contributes to R
  ship(*b, 2, *a, 3000);
  const std::vector<std::pair<uint64_t, uint64_t>> keys = {{1, p}, {1, q}, {1, r}, {1, s},
                                                           {1, u}, {2, t}, {2, v}};
  const uint64_t observed = fleet_count(*a, keys);
  REQUIRE(observed == fleet_count(*b, keys));
  auto t_centroid = a->record(a->find(2, t)).centroid;
  auto r_total = a->total(r);
  router::add_tiers(r_total, a->total(s));

  auto cfg = deep_defaults();
  cfg.clusters = 1; // seven patterns: one cluster, so the pairs meet whatever the seeding
  auto st = a->consolidate(cfg, 40 * day_ms);
  REQUIRE(st);
  CHECK(st->merged == 3); // Q into P; S into R; U into T
  CHECK(st->pruned == 0);
  CHECK(st->kept_shared == 1); // V: stale and unobserved, but B's
  CHECK(st->retired == 3);     // all three were announced to B
  CHECK(a->size() == 4);
  CHECK(a->find(1, q) == 0);
  CHECK(a->find(1, s) == 0); // S had more observations, but R carries B's
  CHECK(a->find(1, u) == 0);
  CHECK(a->find(2, v) != 0);
  auto rt = a->total(r);
  for (size_t i = 0; i < 4; ++i)
    CHECK(rt[i].count == r_total[i].count);
  // A peer-created survivor keeps its creator's centroid.
  CHECK(a->record(a->find(2, t)).centroid == t_centroid);
  CHECK(fleet_count(*a, keys) == observed);

  // B learns the merges as A's new contributions: nothing counted twice.
  ship(*a, 1, *b, 4000);
  CHECK(fleet_count(*b, keys) == observed);
  CHECK(count_of(b->total(b->find(1, q))) == 0);
  CHECK(count_of(b->total(b->find(1, p))) == count_of(a->total(p)));
  CHECK(same_origin(*a, *b, 1)); // digests agree on A's contributions
  CHECK(same_origin(*a, *b, 2));
  // Re-delivering everything (anti-entropy) changes nothing on B.
  a->republish_all();
  auto again = b->merge(1, a->take_deltas(1'000'000), 4500);
  REQUIRE(again);
  CHECK(again->applied == 0);

  // B still has Q and learns on it: A revives Q with B's contribution.
  REQUIRE_FALSE(b->learn(b->find(1, q), 0, 0.4, 5000));
  ship(*b, 2, *a, 5000);
  CHECK(a->find(1, q) == q);
  CHECK(a->retired() == 2);
  CHECK(count_of(a->total(q)) == 1);
  CHECK(a->record(q).tiers[0].count == 0); // A's own contribution stays moved to P
  CHECK(same_origin(*a, *b, 1));
  CHECK(same_origin(*a, *b, 2));
  auto found_q = a->route(a->record(q).centroid, 5100);
  CHECK(found_q.pattern_id == q);
}

TEST_CASE("consolidation: retirements survive a restart and keep the digest") {
  auto dir = temp_dir("consolidate-retired");
  std::mt19937 rng(27);
  std::vector<proto::origin_summary> before;
  uint64_t p = 0, q = 0, pending = 0;
  {
    auto env = store::environment::open({dir});
    REQUIRE(env);
    auto a = replica(1, *env);
    auto cp = unit(rng, dim);
    p = found(*a, cp, 1000, 0, {0.9, 0.9, 0.9, 0.9});
    q = found(*a, near(cp, rng, 0.97f), 1000, 0, {0.1, 0.1, 0.1}); // not prunable
    a->take_deltas(1'000'000);                                     // P and Q are announced
    REQUIRE_FALSE(a->checkpoint(1500));
    // A pattern created after the last announcement and pruned: simply erased.
    pending = found(*a, unit(rng, dim), 1000);
    auto st = a->consolidate(deep_defaults(), 40 * day_ms);
    REQUIRE(st);
    CHECK(st->merged == 1);
    CHECK(st->pruned == 1);
    CHECK(st->retired == 1);
    CHECK(a->retired() == 1);
    auto d = a->take_deltas(1'000'000);
    bool zero_for_q = false;
    for (const auto& x : d) {
      CHECK(x.origin_id != pending); // never announced, never mentioned
      if (x.origin_id == q)
        zero_for_q = count_of(x.contrib.tiers) == 0 && x.centroid.empty();
    }
    CHECK(zero_for_q);
    before = a->summarize();
    REQUIRE_FALSE(a->checkpoint(2000));
  }
  auto env = store::environment::open({dir});
  REQUIRE(env);
  auto a = replica(1, *env);
  CHECK(a->size() == 1);
  CHECK(a->retired() == 1);
  CHECK_FALSE(a->rebuilt_index());
  CHECK(a->find(1, q) == 0);
  auto after = a->summarize();
  REQUIRE(after.size() == before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    CHECK(after[i].count == before[i].count);
    CHECK(after[i].hash == before[i].hash);
  }
  // A republish carries the retirement again, so a peer that missed it catches up.
  a->republish_all();
  bool has_q = false;
  for (const auto& x : a->take_deltas(1'000'000))
    has_q |= x.origin_id == q && count_of(x.contrib.tiers) == 0;
  CHECK(has_q);
  // New ids never reuse a retired or erased one.
  auto r = a->route(unit(rng, dim), 3000);
  CHECK(r.pattern_id > std::max({p, q, pending}));
  fs::remove_all(dir);
}

TEST_CASE("consolidation: what changes while the plan is computed is kept") {
  // The router's deep loop: snapshot, plan (on another thread), apply; the
  // bank routes and learns in between.
  std::mt19937 rng(29);
  auto bank = pattern_bank::open(dim, fine_patterns(), nullptr);
  REQUIRE(bank);
  auto& b = **bank;
  auto cp = unit(rng, dim), cr = unit(rng, dim), cy = unit(rng, dim);
  auto cq = near(cp, rng, 0.97f), cs = near(cr, rng, 0.97f);
  uint64_t p = found(b, cp, 1000, 0, {0.9, 0.9, 0.9, 0.9, 0.9});
  // Old but observed enough (min_observations 3) not to be pruned.
  uint64_t q = found(b, cq, 1000, 0, {0.1, 0.1, 0.1});
  uint64_t r = found(b, cr, 1000, 1, {0.5, 0.5, 0.5, 0.5});
  uint64_t s = found(b, cs, 1000, 1, {0.6, 0.6, 0.6});
  uint64_t x = found(b, unit(rng, dim), 1000); // stale, unobserved: pruned
  uint64_t y = found(b, cy, 1000);             // likewise, but hit meanwhile
  for (int i = 0; i < 8; ++i)
    found(b, unit(rng, dim), 1000, 2, {0.5, 0.5, 0.5});
  const size_t n_before = b.size();

  auto plan = b.prepare_consolidation(deep_defaults(), 40 * day_ms);
  REQUIRE(plan);
  // Not planned yet: refused, nothing changes.
  auto early = b.apply_consolidation(**plan);
  REQUIRE_FALSE(early);
  CHECK(early.err().code == errc::invalid_argument);
  pattern_bank::plan_consolidation(**plan);
  // Meanwhile: Q (to be merged into P) is learned on, Y is hit, N is created.
  REQUIRE_FALSE(b.learn(q, 3, 0.25, 40 * day_ms + 1));
  auto hit = b.route(cy, 40 * day_ms + 2);
  REQUIRE_FALSE(hit.new_pattern);
  REQUIRE(hit.pattern_id == y);
  uint64_t n_new = found(b, unit(rng, dim), 40 * day_ms + 3, 1, {0.4});
  auto sum = b.total(p);
  router::add_tiers(sum, b.total(q));

  auto st = b.apply_consolidation(**plan);
  REQUIRE(st);
  CHECK(st->merged == 2); // Q into P, S into R
  CHECK(st->pruned == 1); // X; Y was hit after the snapshot
  CHECK(st->patterns_before == n_before);
  CHECK(st->patterns_after == n_before + 1 - 3);
  CHECK(b.record(q).id == 0);
  CHECK(b.record(s).id == 0);
  CHECK(b.record(x).id == 0);
  CHECK(b.record(y).id == y);
  // Statistics are summed at apply time: Q's late observation is in P's.
  auto t = b.total(p);
  for (size_t i = 0; i < t.size(); ++i)
    CHECK(t[i].count == sum[i].count);
  CHECK(t[3].count == 1);
  CHECK(count_of(b.total(r)) == 7);
  // Removed patterns are never found again; every pattern has a category,
  // the one created meanwhile included.
  for (const auto& c : {cp, cq, cr, cs})
    for (const auto& nb : b.route(c, 40 * day_ms + 5).neighbors) {
      CHECK(nb.pattern_id != q);
      CHECK(nb.pattern_id != s);
      CHECK(nb.pattern_id != x);
    }
  // The survivors move in the index in slices, after the apply.
  CHECK(b.reindex_pending() == 2);
  REQUIRE_FALSE(b.reindex_moved(1));
  CHECK(b.reindex_pending() == 1);
  REQUIRE_FALSE(b.reindex_moved(8));
  CHECK(b.reindex_pending() == 0);
  for (uint64_t id : {p, r}) {
    auto moved = b.route(b.record(id).centroid, 40 * day_ms + 6);
    CHECK_FALSE(moved.new_pattern);
    CHECK(moved.pattern_id == id);
    REQUIRE_FALSE(moved.neighbors.empty());
    CHECK(moved.neighbors.front().similarity > 0.98f);
  }
  CHECK(b.category(n_new) != pattern_bank::no_category);
  CHECK(b.category(y) != pattern_bank::no_category);
  CHECK(b.category(p) != pattern_bank::no_category);
  // A plan applies once, and only to its own bank.
  auto twice = b.apply_consolidation(**plan);
  REQUIRE_FALSE(twice);
  CHECK(twice.err().code == errc::invalid_argument);
  auto other = pattern_bank::open(dim, fine_patterns(), nullptr);
  REQUIRE(other);
  auto foreign = (*other)->prepare_consolidation(deep_defaults(), 40 * day_ms);
  REQUIRE(foreign);
  pattern_bank::plan_consolidation(**foreign);
  auto refused = b.apply_consolidation(**foreign);
  REQUIRE_FALSE(refused);
  CHECK(refused.err().code == errc::invalid_argument);
}
