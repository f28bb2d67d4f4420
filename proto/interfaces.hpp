#pragma once
/// @file The protocols between Shoal's actors, in one place: the messages
/// each actor takes and answers, and the value types that cross between
/// modules that may not know each other (actors/ and federation/ meet only
/// here; node/ wires them at start).
///
/// CAF 0.17.6, dynamically typed actors: each protocol is written below as
/// (atom, arguments...) -> answer. Local-only payloads that are shared
/// pointers are allowed as unsafe message types next to their declaration,
/// with the reason.

#include "proto/records.hpp"
#include "proto/wire.hpp"

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>

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
/// node -> router: (federate_atom, caf::actor bridge, uint32 batch_max, uint32 delay_ms)
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

} // namespace shoal::proto

// Local only (router <-> bridge on one node; the wire carries envelopes).
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::proto::router_digest)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::proto::merge_stats)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::proto::delta_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<shoal::proto::pattern_delta>)
