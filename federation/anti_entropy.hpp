#pragma once
/// @file Anti-entropy: what a node does when a peer's digest shows how that
/// peer sees this node's own contributions (DESIGN.md, Federation). The
/// pattern stream carries every delta, but a delta can be lost (a publish
/// that failed, a stream that was purged): digests (per origin: count, max
/// version, XOR hash of (origin, pattern, version)) let each node notice
/// that a peer lacks some of its contributions and republish them.
///
/// The rule, per peer:
///   - the peer holds this node's max version but another count or hash:
///     it holds a different set of them -> republish;
///   - the peer is behind this node's max version and did not move for two
///     digests: the deltas were lost, not in flight -> republish;
///   - in sync: nothing, and the peer's backoff resets.
/// A republish for a peer backs off exponentially (2 digest intervals,
/// doubling, at most 1 h) so a peer it cannot bring in sync (e.g. one at
/// router.max_patterns) does not cost a full republish every two digests.
///
/// Thread-safety: plain values; owned by the bridge actor.

#include "proto/wire.hpp"

#include <cstdint>

namespace shoal::federation {

/// How one peer saw this node's contributions in its last digests.
struct peer_view {
  uint64_t max_version = 0;      ///< the peer's view of this node's max version
  uint64_t behind_rounds = 0;    ///< digests in a row it stayed behind without moving
  int64_t backoff_ms = 0;        ///< current republish backoff for this peer (0: none)
  int64_t next_republish_ms = 0; ///< UTC ms before which no republish for it
};

/// Why a digest calls for a republish.
enum class repair { none, different_set, stays_behind };

/// Updates `v` with a peer's digest and decides. @param mine this node's
/// own contributions now; @param theirs the peer's summary of them (node
/// = this node; all zero when the peer knows none). @param now_ms UTC ms;
/// @param digest_interval_ms federation.digest_interval_ms.
/// @returns the reason to republish now, or repair::none (also while the
/// peer's backoff lasts). Pure apart from `v`.
repair on_peer_digest(peer_view& v, const proto::origin_summary& mine,
                      const proto::origin_summary& theirs, int64_t now_ms,
                      uint32_t digest_interval_ms);

} // namespace shoal::federation
