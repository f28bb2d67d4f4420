#pragma once
/// @file The protocols between Shoal's actors, in one place: the messages
/// each actor takes and answers, and the value types that cross between
/// modules that may not know each other (actors/ and federation/ meet only
/// here; node/ wires them at start).
///
/// Typed actor handles (CAF 0.17.6 `typed_actor`): the compiler checks every
/// message sent through them and every reply's type. An actor's full
/// interface may extend the part declared here (a handle of the full
/// interface converts to this part). Local-only payloads are allowed as
/// unsafe message types next to their declaration, with the reason.

#include "proto/records.hpp"
#include "proto/wire.hpp"

#include "proto/messages.hpp"

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <cstdint>
#include <vector>

namespace shoal::proto {

// -- router <-> federation bridge ----------------------------------------------

/// router -> bridge: (publish_atom, std::vector<proto::pattern_delta>,
///                   int64_t changed_us: UTC µs of the oldest change among them)
using publish_atom = caf::atom_constant<caf::atom("publish")>;
/// bridge -> router: (merge_atom, proto::delta_batch, uint64_t stream_seq) -> merge result
using merge_atom = caf::atom_constant<caf::atom("merge")>;
/// bridge -> router: (republish_atom): queue every own contribution again
using republish_atom = caf::atom_constant<caf::atom("republish")>;
/// bridge -> router: (digest_atom) -> router_digest
using digest_atom = caf::atom_constant<caf::atom("digest")>;
/// bridge -> router: (link_atom, bool up): whether deltas can be published
using link_atom = caf::atom_constant<caf::atom("link")>;
/// node -> router: (federate_atom, bridge_actor, uint32 batch_max, uint32 delay_ms)
using federate_atom = caf::atom_constant<caf::atom("federate")>;

/// What the router holds, for digests and /v1/stats.
struct router_digest {
  uint64_t n_patterns = 0;
  uint64_t stream_seq = 0;
  uint64_t orphans = 0;
  std::vector<origin_summary> origins;
};

/// Outcome of merging a batch of peers' deltas into a pattern bank.
struct merge_stats {
  uint64_t applied = 0;  ///< contributions that changed a pattern
  uint64_t stale = 0;    ///< contributions already known or superseded
  uint64_t created = 0;  ///< patterns created from announcements
  uint64_t orphaned = 0; ///< contributions held until their pattern is announced
  uint64_t dropped = 0;  ///< dropped for lack of room (max_orphans, max_patterns)
};

/// The federation bridge as the router and the gateway see it
/// (federation/bridge.hpp implements it, with its own timers and NATS
/// callbacks on top).
using bridge_actor = caf::typed_actor<
  /// The router's changed patterns, to publish; UTC µs of the oldest change.
  caf::reacts_to<publish_atom, std::vector<pattern_delta>, int64_t>>;

/// The router as the federation bridge sees it (actors/actors.hpp's
/// router_actor extends it with the node's own messages).
using router_federation = caf::typed_actor<
  /// A peer's delta batch and its stream sequence: merged into the bank.
  caf::replies_to<merge_atom, delta_batch, uint64_t>::with<merge_stats>,
  /// Queue every own contribution again (anti-entropy, resync).
  caf::reacts_to<republish_atom>,
  /// What the bank holds per origin, for digests.
  caf::replies_to<digest_atom>::with<router_digest>,
  /// Whether deltas can be published now.
  caf::reacts_to<link_atom, bool>,
  /// Counters for the bridge's telemetry.
  caf::replies_to<stats_atom>::with<router_stats>,
  /// The bridge attaches itself: batches of at most `max` deltas, sent
  /// `delay_ms` after the first change.
  caf::reacts_to<federate_atom, bridge_actor, uint32_t, uint32_t>>;

} // namespace shoal::proto

// Local only (router <-> bridge on one node; the wire carries envelopes).
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::proto::router_digest)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::proto::merge_stats)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::proto::delta_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<shoal::proto::pattern_delta>)
// A handle, passed once at start (node -> router); never serialized.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::proto::bridge_actor)
