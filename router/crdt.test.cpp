#include "router/crdt.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <random>

using shoal::proto::contribution;
using set_t = std::vector<contribution>;
namespace fed = shoal::router;

namespace {

bool same(const set_t& a, const set_t& b) {
  if (a.size() != b.size())
    return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].node != b[i].node || a[i].version != b[i].version
        || a[i].tiers.size() != b[i].tiers.size())
      return false;
    for (size_t t = 0; t < a[i].tiers.size(); ++t)
      if (a[i].tiers[t].count != b[i].tiers[t].count
          || a[i].tiers[t].sum_quality != b[i].tiers[t].sum_quality
          || a[i].tiers[t].sum_quality2 != b[i].tiers[t].sum_quality2)
        return false;
  }
  return true;
}

/// A random replica state: contributions from up to 4 origins with small
/// versions, so equal (origin, version) pairs with different statistics occur.
set_t random_set(std::mt19937_64& rng) {
  set_t s;
  std::uniform_int_distribution<int> n(0, 4), node(1, 4), version(1, 4), count(0, 3);
  for (int i = n(rng); i > 0; --i) {
    contribution c{static_cast<uint64_t>(node(rng)), static_cast<uint64_t>(version(rng)), {}};
    for (int t = 0; t < 2; ++t) {
      uint64_t k = static_cast<uint64_t>(count(rng));
      c.tiers.push_back({0.5 * static_cast<double>(k), 0.25 * static_cast<double>(k), k});
    }
    fed::join(s, c);
  }
  return s;
}

set_t joined(set_t a, const set_t& b) {
  fed::join(a, b);
  return a;
}

} // namespace

TEST_CASE("join keeps the highest version per origin") {
  set_t s;
  CHECK(fed::join(s, contribution{2, 5, {{1, 1, 1}}}));
  CHECK(fed::join(s, contribution{1, 1, {{0, 0, 0}}}));
  CHECK_FALSE(fed::join(s, contribution{2, 4, {{9, 9, 9}}})); // an old version: no change
  CHECK(fed::join(s, contribution{2, 6, {{2, 2, 2}}}));
  REQUIRE(s.size() == 2);
  CHECK(s[0].node == 1);
  CHECK(s[1].version == 6);
  CHECK(s[1].tiers[0].count == 2);
}

TEST_CASE("join is idempotent, commutative and associative (property test)") {
  std::mt19937_64 rng(20261123);
  for (int trial = 0; trial < 2000; ++trial) {
    auto a = random_set(rng), b = random_set(rng), c = random_set(rng);
    CHECK(same(joined(a, a), a));
    CHECK(same(joined(a, b), joined(b, a)));
    CHECK(same(joined(joined(a, b), c), joined(a, joined(b, c))));
    // Re-delivery of anything already merged changes nothing.
    auto ab = joined(a, b);
    CHECK_FALSE(fed::join(ab, std::span<const contribution>(b)));
  }
}

TEST_CASE("any delivery order of the same contributions gives the same state") {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    auto msgs = random_set(rng);
    auto more = random_set(rng);
    msgs.insert(msgs.end(), more.begin(), more.end());
    msgs.insert(msgs.end(), more.begin(), more.end()); // duplicates
    set_t first;
    fed::join(first, std::span<const contribution>(msgs));
    for (int p = 0; p < 10; ++p) {
      std::shuffle(msgs.begin(), msgs.end(), rng);
      set_t s;
      fed::join(s, std::span<const contribution>(msgs));
      CHECK(same(s, first));
    }
  }
}

TEST_CASE("validate rejects what no quality in [0, 1] can produce") {
  CHECK_FALSE(fed::validate(contribution{1, 1, {{1.5, 1.25, 2}, {0, 0, 0}}}, 2));
  CHECK(fed::validate(contribution{1, 1, {{1.5, 1.25, 2}}}, 2)); // wrong tier count
  CHECK(fed::validate(contribution{1, 1, {{std::nan(""), 0, 1}, {0, 0, 0}}}, 2));
  CHECK(fed::validate(contribution{1, 1, {{HUGE_VAL, 0, 1}, {0, 0, 0}}}, 2));
  CHECK(fed::validate(contribution{1, 1, {{3, 1, 2}, {0, 0, 0}}}, 2));            // sum > count
  CHECK(fed::validate(contribution{1, 1, {{1, 1.5, 2}, {0, 0, 0}}}, 2));          // sum2 > sum
  CHECK(fed::validate(contribution{1, 1, {{-1, 0, 2}, {0, 0, 0}}}, 2));           // negative
  CHECK(fed::validate(contribution{1, 0, {{0, 0, 0}, {0, 0, 0}}}, 2));            // version 0
  CHECK(fed::validate(contribution{1, 1, {{0, 0, ~uint64_t{0}}, {0, 0, 0}}}, 2)); // count
}
