// The pattern bank as a federation replica: deltas out, merges in.
#include "router/pattern_bank.hpp"
#include "router/testing.hpp"
#include "proto/error.hpp"

#include <doctest/doctest.h>

#include <cmath>

using namespace shoal;
using namespace shoal::router;
using namespace shoal::router::testing;

namespace {

constexpr uint32_t dim = 32;

std::unique_ptr<pattern_bank> replica(uint64_t node_id,
                                      std::shared_ptr<store::environment> env = nullptr) {
  auto b = open_replica(dim, node_id, std::move(env));
  REQUIRE(b);
  return std::move(*b);
}

/// Routes `n` random queries on `b` and gives each decision a quality.
void learn_some(pattern_bank& b, std::mt19937& rng, int n) {
  std::uniform_real_distribution<double> q(0, 1);
  for (int i = 0; i < n; ++i) {
    auto r = b.route(unit(rng, dim), 1000 + i);
    REQUIRE_FALSE(b.learn(r.pattern_id, r.tier, q(rng), 1000 + i));
    REQUIRE_FALSE(b.index_pending());
  }
}

/// Ships every pending delta of `from` to `to`.
merge_stats ship(pattern_bank& from, uint64_t from_id, pattern_bank& to) {
  auto r = ship_deltas(from, from_id, to, 5000);
  REQUIRE(r);
  return *r;
}

bool same_totals(const pattern_bank& a, uint64_t a_id, const pattern_bank& b) {
  auto sa = a.summarize(), sb = b.summarize();
  if (sa.size() != sb.size())
    return false;
  for (size_t i = 0; i < sa.size(); ++i)
    if (sa[i].node != sb[i].node || sa[i].count != sb[i].count || sa[i].hash != sb[i].hash)
      return false;
  (void)a_id;
  return a.size() == b.size();
}

std::vector<proto::tier_stat> total_by_key(const pattern_bank& b, uint64_t origin,
                                           uint64_t origin_id) {
  return b.total(b.find(origin, origin_id));
}

} // namespace

TEST_CASE("two replicas exchanging deltas converge to the same statistics") {
  std::mt19937 rng(3);
  auto a = replica(101), b = replica(202);
  learn_some(*a, rng, 40);
  learn_some(*b, rng, 30);
  auto ab = ship(*a, 101, *b);
  CHECK(ab.created == 40); // every pattern of A is announced with its centroid
  auto ba = ship(*b, 202, *a);
  CHECK(ba.created == 30);
  CHECK(a->size() == 70);
  // B learns on a pattern A created: A's copy of it pools both contributions.
  auto a_pattern = b->find(101, 1);
  REQUIRE(a_pattern != 0);
  REQUIRE_FALSE(b->learn(a_pattern, 2, 0.9, 6000));
  ship(*b, 202, *a);
  auto ta = a->total(1), tb = b->total(a_pattern);
  REQUIRE(ta.size() == 4);
  for (size_t t = 0; t < 4; ++t) {
    CHECK(ta[t].count == tb[t].count);
    CHECK(ta[t].sum_quality == doctest::Approx(tb[t].sum_quality));
  }
  CHECK(same_totals(*a, 101, *b));
  // Re-delivering everything changes nothing.
  a->republish_all();
  auto again = ship(*a, 101, *b);
  CHECK(again.applied == 0);
  CHECK(again.created == 0);
  CHECK(again.stale == 40);
}

TEST_CASE("a merged pattern is found by routing on the receiving replica") {
  std::mt19937 rng(4);
  auto a = replica(1), b = replica(2);
  auto q = unit(rng, dim);
  auto r = a->route(q, 1);
  REQUIRE_FALSE(a->learn(r.pattern_id, 3, 1.0, 1));
  ship(*a, 1, *b);
  auto rb = b->route(q, 2);
  CHECK_FALSE(rb.new_pattern);
  CHECK(rb.pattern_id == b->find(1, r.pattern_id));
  REQUIRE_FALSE(rb.neighbors.empty());
  CHECK(rb.neighbors.front().similarity > 0.98);
}

TEST_CASE("a contribution that arrives before its pattern's announcement is held, then applied") {
  std::mt19937 rng(5);
  auto a = replica(1), b = replica(2), c = replica(3);
  learn_some(*a, rng, 1);
  auto from_a = a->take_deltas(100); // what the stream holds of A
  REQUIRE(b->merge(1, from_a, 5));
  REQUIRE_FALSE(b->learn(b->find(1, 1), 0, 0.5, 10));
  auto from_b = b->take_deltas(100);
  auto held = c->merge(2, from_b, 20);
  REQUIRE(held);
  CHECK(held->orphaned == 1);
  CHECK(c->orphans() == 1);
  CHECK(c->size() == 0);
  REQUIRE(c->merge(1, from_a, 30)); // A's announcement reaches C late
  CHECK(c->orphans() == 0);
  auto tc = total_by_key(*c, 1, 1);
  REQUIRE(tc.size() == 4);
  CHECK(tc[0].count == b->total(b->find(1, 1))[0].count);
}

TEST_CASE("a hostile batch changes nothing and names its problem") {
  std::mt19937 rng(6);
  auto a = replica(1), b = replica(2);
  learn_some(*a, rng, 3);
  auto good = a->take_deltas(100);
  REQUIRE(b->merge(1, good, 1));
  auto before = b->summarize();
  auto check_rejected = [&](std::vector<proto::pattern_delta> d, uint64_t sender,
                            const char* needle) {
    auto r = b->merge(sender, d, 2);
    REQUIRE_FALSE(r);
    CHECK(r.err().message.find(needle) != std::string::npos);
    auto after = b->summarize();
    REQUIRE(after.size() == before.size());
    for (size_t i = 0; i < after.size(); ++i)
      CHECK(after[i].hash == before[i].hash);
  };
  auto nan = good;
  nan[1].contrib.version += 10;
  nan[1].contrib.tiers[0].sum_quality = std::nan("");
  check_rejected(nan, 1, "non-finite");
  auto wrong_dim = good;
  wrong_dim[0].contrib.version += 10;
  wrong_dim[0].centroid.resize(dim + 1, 0.0f);
  check_rejected(wrong_dim, 1, "dimension");
  auto impossible = good;
  impossible[0].contrib.version += 10;
  impossible[0].contrib.tiers[1] = {5, 1, 2};
  check_rejected(impossible, 1, "impossible");
  auto spoofed = good; // contributions in another node's name
  check_rejected(spoofed, 7, "another node");
  check_rejected(good, 2, "own");
  // Replayed old versions are accepted as messages but change nothing.
  auto old = good;
  for (auto& d : old)
    d.contrib.version -= 1;
  auto r = b->merge(1, old, 3);
  REQUIRE(r);
  CHECK(r->applied == 0);
  CHECK(r->stale == 3);
}

TEST_CASE("merged contributions and the stream position survive a restart") {
  auto dir = temp_dir("fed-restart");
  std::mt19937 rng(8);
  auto a = replica(1);
  learn_some(*a, rng, 5);
  std::vector<proto::origin_summary> before;
  {
    auto env = store::environment::open({dir});
    REQUIRE(env);
    auto b = replica(2, *env);
    learn_some(*b, rng, 2);
    ship(*a, 1, *b);
    b->set_stream_seq(77);
    before = b->summarize();
    REQUIRE_FALSE(b->checkpoint(10));
  }
  auto env = store::environment::open({dir});
  REQUIRE(env);
  auto b = replica(2, *env);
  CHECK(b->stream_seq() == 77);
  CHECK(b->size() == 7);
  auto after = b->summarize();
  REQUIRE(after.size() == before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    CHECK(after[i].count == before[i].count);
    CHECK(after[i].hash == before[i].hash);
  }
  // This node's clock continues above its stored versions.
  auto r = b->route(unit(rng, dim), 11);
  REQUIRE_FALSE(b->learn(r.pattern_id, 0, 0.5, 11));
  auto d = b->take_deltas(100);
  REQUIRE_FALSE(d.empty());
  for (const auto& s : before)
    if (s.node == 2)
      CHECK(d.back().contrib.version > s.max_version);
  std::filesystem::remove_all(dir);
}
