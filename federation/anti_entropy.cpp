#include "federation/anti_entropy.hpp"

#include <algorithm>

namespace shoal::federation {

namespace {

/// Longest republish backoff for one peer.
constexpr int64_t max_backoff_ms = 3'600'000;

} // namespace

repair on_peer_digest(peer_view& v, const proto::origin_summary& mine,
                      const proto::origin_summary& theirs, int64_t now_ms,
                      uint32_t digest_interval_ms) {
  repair why = repair::none;
  const bool in_sync = theirs.max_version == mine.max_version && theirs.count == mine.count
                       && theirs.hash == mine.hash;
  if (in_sync) {
    v.backoff_ms = 0;
    v.next_republish_ms = 0;
  }
  if (theirs.max_version == mine.max_version && mine.max_version > 0) {
    v.behind_rounds = 0;
    if (!in_sync)
      why = repair::different_set;
  } else if (theirs.max_version < mine.max_version) {
    // Behind: in flight, or lost. Lost when it does not move for two digests.
    v.behind_rounds = theirs.max_version == v.max_version ? v.behind_rounds + 1 : 0;
    if (v.behind_rounds >= 2) {
      v.behind_rounds = 0;
      why = repair::stays_behind;
    }
  }
  v.max_version = theirs.max_version;
  if (why == repair::none || now_ms < v.next_republish_ms)
    return repair::none;
  v.backoff_ms = v.backoff_ms == 0 ? 2 * static_cast<int64_t>(digest_interval_ms)
                                   : std::min<int64_t>(2 * v.backoff_ms, max_backoff_ms);
  v.next_republish_ms = now_ms + v.backoff_ms;
  return why;
}

} // namespace shoal::federation
