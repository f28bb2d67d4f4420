#pragma once
/// @file The NATS bridge: shares this node's pattern deltas with its peers and
/// merges theirs (DESIGN.md, Federation; NATS.c 3.4.1 with JetStream).
///
/// Subjects, with C = `federation.cluster` and N = `node.name`:
///   shoal.C.patterns.N   this node's signed delta batches; kept by the
///                        JetStream stream SHOAL_C (file storage, limits from
///                        the config), which peers consume in order
///   shoal.C.digest       signed anti-entropy digests (core NATS)
///   shoal.C.resync       signed requests to republish (core NATS)
///   shoal.C.telemetry.N  signed counters (core NATS)
///
/// Delivery: the bridge reads the stream with an ordered consumer from the
/// sequence after the last one merged (persisted with the patterns), so a new
/// node replays the whole stream and a returning one what it missed, then
/// stays on live delivery. Anti-entropy: each node publishes per-origin
/// summaries of what it holds (count, max version, XOR hash); an origin that
/// sees a peer hold a different set of its contributions at the same max
/// version, or stay behind it across two digests, republishes everything it
/// contributed. A node that finds the stream has discarded messages it never
/// saw asks every node to republish. The merge itself is a CRDT
/// (router/crdt.hpp), so repeats and reordering are harmless.
///
/// With NATS down the node keeps serving and learning: the router keeps its
/// changed contributions in its outbox (one entry per pattern, so the queue is
/// bounded by the bank) and the bridge asks for them again on reconnect.
///
/// Trust: every message must be signed by a signer in `federation.trusted`;
/// untrusted, badly signed, malformed, oversized or semantically invalid
/// (dimension, tier count, non-finite or impossible statistics) messages are
/// dropped, counted by reason, and logged at most once per second. The
/// checks, the counters (federation_stats) and the republish limit are plain
/// code in federation/bridge_logic.hpp; this file's actor is the NATS shell.
///
/// Threading: NATS callbacks run on the library's threads; they only decode
/// the envelope and hand it to the bridge actor (detached: it makes blocking
/// JetStream API calls).

#include "core/error.hpp"
#include "proto/interfaces.hpp"
#include "federation/bridge_logic.hpp"
#include "federation/signing.hpp"
#include "proto/wire.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace shoal::federation {

/// Federation configuration (config keys `federation.*`, documented in
/// node/config.cpp; `validate` below checks them together).
struct federation_config {
  bool enabled = false;                       ///< config federation.enabled
  std::string cluster = "shoal";              ///< config federation.cluster
  std::string urls = "nats://127.0.0.1:4222"; ///< config federation.urls
  bool ignore_discovered_servers = false;     ///< config federation.ignore_discovered_servers
  std::string jetstream_domain;               ///< config federation.jetstream_domain
  /// config federation.user, federation.password, federation.token
  std::string user, password, token;
  bool tls = false; ///< config federation.tls
  /// config federation.tls_ca, federation.tls_cert, federation.tls_key
  std::string tls_ca, tls_cert, tls_key;
  std::string key_file;                      ///< config federation.key_file
  std::string trusted;                       ///< config federation.trusted
  uint32_t batch_max = 2000;                 ///< config federation.batch_max
  uint32_t batch_delay_ms = 2;               ///< config federation.batch_delay_ms
  uint32_t reconnect_wait_ms = 100;          ///< config federation.reconnect_wait_ms
  uint32_t reconnect_max_ms = 5000;          ///< config federation.reconnect_max_ms
  uint64_t stream_max_bytes = 1ull << 30;    ///< config federation.stream_max_bytes
  uint32_t stream_max_age_s = 7 * 24 * 3600; ///< config federation.stream_max_age_s
  uint32_t stream_replicas = 1;              ///< config federation.stream_replicas
  uint32_t digest_interval_ms = 30000;       ///< config federation.digest_interval_ms
  uint32_t telemetry_interval_ms = 10000;    ///< config federation.telemetry_interval_ms
  uint64_t max_message_bytes = 4u << 20;     ///< config federation.max_message_bytes
};

/// Everything the bridge needs to start.
struct bridge_args {
  federation_config cfg;
  std::string node_name;
  crypto::identity self;
  crypto::trust_list trusted;
  proto::router_federation router;
  uint32_t dim = 0;
  uint32_t n_tiers = 0;
  uint64_t start_seq = 0; ///< last stream sequence merged before this start
};

/// Checks the config (when enabled): URLs present, node and cluster names
/// usable as subject tokens, user and password together, TLS files present,
/// trust list parses. @returns no error, or `errc::invalid_argument` whose
/// context is the offending key (e.g. "federation.urls").
core::error validate(const federation_config& cfg, const std::string& node_name);

/// Spawns the bridge (detached) and attaches it to the router. It connects in
/// the background: the node serves whether or not NATS is up.
/// The bridge as the node sees it: what the router sends (proto's
/// bridge_actor) and its counters for /v1/stats and /metrics.
using bridge_handle =
  proto::bridge_actor::extend<caf::replies_to<proto::stats_atom>::with<federation_stats>>;

bridge_handle spawn_bridge(caf::actor_system& sys, bridge_args args);

} // namespace shoal::federation

// Local only: envelopes go from the NATS callbacks to the bridge actor of
// the same process (the wire carries their Cap'n Proto bytes), statistics
// to the gateway; never serialized by CAF.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::proto::envelope)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::federation::federation_stats)
