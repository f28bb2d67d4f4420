#include "federation/anti_entropy.hpp"

#include <doctest/doctest.h>

using namespace shoal::federation;
using shoal::proto::origin_summary;

namespace {
constexpr uint64_t self_id = 7;
constexpr uint32_t interval_ms = 1000;
} // namespace

TEST_CASE("anti-entropy: a peer in sync, or catching up, is left alone") {
  peer_view v;
  origin_summary mine{self_id, 10, 40, 0xabc};
  CHECK(on_peer_digest(v, mine, mine, 0, interval_ms) == repair::none);
  // Behind but moving (deltas in flight): no republish, however long.
  for (uint64_t seen = 30; seen < 40; ++seen)
    CHECK(on_peer_digest(v, mine, {self_id, 8, seen, 1}, 1000 * seen, interval_ms) == repair::none);
  // A node with no contributions has nothing to repair.
  peer_view fresh;
  CHECK(on_peer_digest(fresh, {self_id, 0, 0, 0}, {self_id, 0, 0, 0}, 0, interval_ms)
        == repair::none);
}

TEST_CASE("anti-entropy: a peer stuck behind for two digests gets a republish") {
  peer_view v;
  origin_summary mine{self_id, 10, 40, 0xabc};
  origin_summary stuck{self_id, 9, 35, 0x1};
  CHECK(on_peer_digest(v, mine, stuck, 0, interval_ms) == repair::none);    // first sight
  CHECK(on_peer_digest(v, mine, stuck, 1000, interval_ms) == repair::none); // did not move: 1
  CHECK(on_peer_digest(v, mine, stuck, 2000, interval_ms) == repair::stays_behind);
  CHECK(v.next_republish_ms == 2000 + 2 * interval_ms);
}

TEST_CASE("anti-entropy: same max version with another set is repaired, with backoff") {
  peer_view v;
  origin_summary mine{self_id, 10, 40, 0xabc};
  origin_summary other_set{self_id, 9, 40, 0xdef};
  CHECK(on_peer_digest(v, mine, other_set, 0, interval_ms) == repair::different_set);
  CHECK(v.backoff_ms == 2000);
  // Within the backoff: nothing; after it: again, with the backoff doubled.
  CHECK(on_peer_digest(v, mine, other_set, 1999, interval_ms) == repair::none);
  CHECK(on_peer_digest(v, mine, other_set, 2000, interval_ms) == repair::different_set);
  CHECK(v.backoff_ms == 4000);
  // The backoff stops growing at an hour.
  for (int i = 0; i < 30; ++i)
    on_peer_digest(v, mine, other_set, v.next_republish_ms, interval_ms);
  CHECK(v.backoff_ms == 3'600'000);
  // In sync again: the backoff resets, so the next divergence is repaired at once.
  CHECK(on_peer_digest(v, mine, mine, v.next_republish_ms - 1, interval_ms) == repair::none);
  CHECK(v.backoff_ms == 0);
  CHECK(on_peer_digest(v, mine, other_set, 0, interval_ms) == repair::different_set);
}
