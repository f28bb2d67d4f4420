#pragma once
/// @file The federation bridge's decisions and bookkeeping, without NATS or
/// an actor (federation/bridge.cpp is the shell that owns the connection and
/// the timers): which inbound messages to accept, how merge results and drops
/// are counted, when to republish this node's contributions, what telemetry
/// to send.
///
/// The checks on an inbound envelope, in order:
///   1. its signer is trusted and its signature verifies (signing.hpp);
///   2. messages this node signed itself (its own digest and telemetry coming
///      back on core NATS) are ignored, neither accepted nor counted;
///   3. the payload decodes as the envelope's kind and names the node that
///      signed it (a node cannot speak for another);
///   4. a delta batch has this node's embedding dimension and tier count.
/// Statistics inside a batch (non-finite values, impossible sums) are the
/// router's to check when it merges (router/crdt.hpp).
///
/// Thread-safety: free functions are pure (any thread); a bridge_ledger is a
/// plain value owned by one thread (the bridge actor).

#include "core/error.hpp"
#include "core/histogram.hpp"
#include "crypto/trust_list.hpp"
#include "federation/anti_entropy.hpp"
#include "proto/interfaces.hpp"
#include "proto/messages.hpp"
#include "proto/wire.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace shoal::federation {

/// A peer as last seen through its telemetry.
struct peer_info {
  std::string name;         ///< its signer name in the trust list
  uint64_t node = 0;        ///< its node id (crypto::key_id of its key)
  int64_t last_seen_ms = 0; ///< UTC ms when its last report arrived here
  proto::telemetry_report last;
};

/// Bridge counters for /v1/stats and /metrics (request with stats_atom).
/// All counts are since the bridge started.
struct federation_stats {
  bool connected = false;
  bool stream_ready = false;
  std::string url; ///< connected server
  uint64_t node_id = 0;
  std::string public_key; ///< hex
  uint64_t batches_sent = 0, deltas_sent = 0, publish_errors = 0;
  uint64_t batches_received = 0, deltas_merged = 0, deltas_stale = 0;
  uint64_t patterns_created = 0, orphaned = 0;
  uint64_t republishes = 0, resyncs_requested = 0, reconnects = 0;
  uint64_t dropped_untrusted = 0, dropped_bad_signature = 0, dropped_malformed = 0;
  uint64_t dropped_oversized = 0, dropped_invalid = 0;
  uint64_t stream_seq = 0; ///< last stream sequence handed to the router
  /// Propagation lag of peers' batches, ns: from the oldest change in a
  /// batch at its sender to its merge here (since start; assumes
  /// synchronised clocks, exact on one host).
  core::latency_histogram lag;
  std::vector<peer_info> peers;
};

/// This node as inbound messages are checked against it.
struct node_shape {
  uint64_t id = 0;      ///< this node's id (crypto::identity::id())
  uint32_t dim = 0;     ///< embedding dimension of its patterns
  uint32_t n_tiers = 0; ///< number of tiers in a pattern's contribution
};

/// Why an inbound message was dropped; each reason has its counter in
/// federation_stats (dropped_<reason>). The values cross from NATS
/// callbacks to the bridge as ints: keep them stable.
enum class drop_reason : int {
  oversized = 0,     ///< larger than federation.max_message_bytes (before decoding)
  malformed = 1,     ///< the envelope or its payload does not decode, or names another node
  untrusted = 2,     ///< the signer is not in federation.trusted
  bad_signature = 3, ///< the signature is missing or does not verify
  invalid = 4,       ///< a delta batch this node cannot merge (claimed node, shape, statistics)
};

/// Key under which drops of this reason are rate-limited in the log
/// ("oversized", "malformed", "signature" for untrusted and bad_signature,
/// "invalid"). Pure.
const char* log_kind(drop_reason r) noexcept;

/// Checks a decoded delta batch before it goes to the router: it must name
/// `sender` (the node whose signature it carries) and have `self`'s dimension
/// and tier count. @returns no error, or errc::invalid_argument whose message
/// names both sides ("batch claims node A but is signed by node B"; "batch
/// has dimension D and T tiers; this node uses D' and T'") and whose context
/// is "node" or "dim". Pure.
core::error check_batch(const proto::delta_batch& b, uint64_t sender, const node_shape& self);

/// An inbound message that passed every check.
struct inbound_message {
  uint64_t sender = 0; ///< the signer's node id
  std::string signer;  ///< the signer's name in the trust list
  std::variant<proto::delta_batch, proto::digest, proto::resync_request, proto::telemetry_report>
    body;
};

/// The outcome of check_inbound: exactly one of `accepted`, `own`, `dropped`.
struct inbound_verdict {
  std::optional<inbound_message> accepted; ///< set when every check passed
  bool own = false;                        ///< signed by this node: ignore silently
  std::optional<drop_reason> dropped;      ///< set when refused
  /// When dropped: one line for the log naming the problem, e.g. "dropped
  /// a message: untrusted signer 'eve'", "dropped a delta batch: batch has
  /// dimension 8 ...".
  std::string problem;
};

/// Runs the checks of this file's header on `e`. Pure (keys are read only);
/// costs one Ed25519 verification and one decode.
inbound_verdict check_inbound(const proto::envelope& e, const crypto::trust_list& trusted,
                              const node_shape& self);

/// Whether a resync request asks this node to republish: addressed to it or
/// to every node (target 0), and sent less than 60 s from `now_ms`, before
/// or after (so a replayed old request does nothing). UTC ms. Pure.
bool resync_applies(const proto::resync_request& r, uint64_t self_id, int64_t now_ms) noexcept;

/// This node's entry among `origins` (a digest's per-origin summaries), or
/// an all-zero summary for `self_id` when it has none. Pure.
proto::origin_summary own_summary(const std::vector<proto::origin_summary>& origins,
                                  uint64_t self_id);

/// Allows at most one republish per second (a full republish costs a walk
/// over the pattern bank and a burst of batches). Times are UTC ms; the
/// first republish is always allowed. Plain value; one thread.
class republish_limiter {
public:
  /// @returns true, and records `now_ms`, when no republish was recorded in
  /// the second before `now_ms`; false otherwise (records nothing).
  bool admit(int64_t now_ms) noexcept;

  /// Records a republish that happened regardless of the limit (after a
  /// lost batch), so the next one waits a second from it.
  void record(int64_t now_ms) noexcept;

private:
  std::optional<int64_t> last_ms_; ///< UTC ms of the last republish
};

/// Cuts `deltas` into batches whose estimated encoded size stays within
/// `limit_bytes` (at least one delta a batch, so a single larger delta goes
/// alone). Each batch copies `header` (node, name, dim, tiers, changed_us)
/// and gets the next sequence from `next_seq` (incremented per batch);
/// `sent_ms` is set to `now_ms`. The deltas keep their order. Pure apart
/// from `next_seq`; moves out of `deltas`.
std::vector<proto::delta_batch> cut_batches(std::vector<proto::pattern_delta>& deltas,
                                            const proto::delta_batch& header, int64_t limit_bytes,
                                            uint64_t& next_seq, int64_t now_ms);

/// The bridge's bookkeeping: counters, the highest stream sequence seen,
/// anti-entropy views of each peer and the republish limit. The bridge
/// actor feeds it what happens and acts on what it returns; it does no I/O.
/// Plain value; one thread (the bridge actor).
class bridge_ledger {
public:
  /// @param self this node; @param digest_interval_ms federation.digest_interval_ms;
  /// @param start_seq last stream sequence merged before this start.
  bridge_ledger(node_shape self, uint32_t digest_interval_ms, uint64_t start_seq);

  /// The counters (the bridge also sets its connection fields and counts
  /// what it publishes).
  federation_stats& stats() noexcept { return st_; }
  const federation_stats& stats() const noexcept { return st_; }

  /// A snapshot for /v1/stats: the counters with stream_seq set to the
  /// highest stream sequence received.
  federation_stats snapshot() const;

  /// Notes a stream sequence received (0, core NATS, changes nothing).
  void saw(uint64_t seq) noexcept;

  /// Forgets the sequences received (the stream was recreated: read it
  /// from the start).
  void reset_seen() noexcept { seen_seq_ = 0; }

  /// Checks `e` (check_inbound) and counts a drop under its reason.
  inbound_verdict check(const proto::envelope& e, const crypto::trust_list& trusted);

  /// Counts a message dropped before decoding (oversized, malformed).
  void count_drop(drop_reason r) noexcept;

  /// Counts a batch handed to the router.
  void count_batch_received() noexcept { ++st_.batches_received; }

  /// Adds the router's merge result of a peer's batch to the counters and,
  /// when `changed_us` (the batch's oldest change, UTC µs; 0 = unknown) is
  /// known, its propagation lag to `now_us` into stats().lag (ns; a clock
  /// behind counts as 0).
  void count_merge(const proto::merge_stats& m, int64_t changed_us, int64_t now_us);

  /// Remembers this node's own summary from the router's digest (compared
  /// with peers' digests in on_digest).
  void set_own(const proto::router_digest& rd);

  /// Takes a peer's digest (on_peer_digest of anti_entropy.hpp).
  /// @returns why to republish ("peer B holds a different set of them",
  /// "peer B stays behind"), or nothing. The caller still asks admit_republish.
  std::optional<std::string> on_digest(uint64_t sender, const proto::digest& d, int64_t now_ms);

  /// Whether a republish may go now (republish_limiter); counts it when so.
  bool admit_republish(int64_t now_ms) noexcept;

  /// Counts a republish that goes regardless of the limit.
  void force_republish(int64_t now_ms) noexcept;

  /// Records a peer's telemetry (`signer`: its trust-list name) as its
  /// entry in stats().peers, seen at `now_ms` (UTC ms).
  void note_peer(const std::string& signer, const proto::telemetry_report& t, int64_t now_ms);

  /// Sum of the dropped_* counters.
  uint64_t n_dropped() const noexcept;

  /// This node's telemetry report: the router's counters `rs` and the
  /// bridge's; `name` is node.name, `now_ms` UTC ms.
  proto::telemetry_report telemetry(const proto::router_stats& rs, const std::string& name,
                                    int64_t now_ms) const;

private:
  node_shape self_;
  uint32_t digest_interval_ms_;
  federation_stats st_;
  uint64_t seen_seq_;                   ///< highest stream sequence received
  proto::origin_summary mine_;          ///< own contributions at the last digest
  std::map<uint64_t, peer_view> views_; ///< by peer node id
  republish_limiter limiter_;
};

} // namespace shoal::federation
