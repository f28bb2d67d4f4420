#pragma once
/// @file Message types exchanged between Shoal's actors, and their atoms.
/// All types are plain values with `inspect` overloads (CAF 0.17 style), so
/// they can be copied into messages and, later, cross nodes.

#include <caf/atom.hpp>
#include <caf/meta/type_name.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace shoal::proto {

// -- atoms (CAF 0.17: at most 10 characters) --------------------------------

using route_atom = caf::atom_constant<caf::atom("route")>;
using feedback_atom = caf::atom_constant<caf::atom("feedback")>;
using learn_atom = caf::atom_constant<caf::atom("learn")>;
using record_atom = caf::atom_constant<caf::atom("record")>;
using stats_atom = caf::atom_constant<caf::atom("stats")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using flush_atom = caf::atom_constant<caf::atom("flush")>;
using close_atom = caf::atom_constant<caf::atom("close")>;
using lookup_atom = caf::atom_constant<caf::atom("lookup")>;
using observe_atom = caf::atom_constant<caf::atom("observe")>;
/// (usage_atom, request_id, prompt_tokens, completion_tokens): what a routed
/// request's answer used, from the node's own engine (SONA's context head).
using usage_atom = caf::atom_constant<caf::atom("usage")>;
/// (archive_atom) -> witness_archive_result: the witness log moves records
/// older than its retention to the archive (the deep loop asks).
using archive_atom = caf::atom_constant<caf::atom("archive")>;

// -- routing -----------------------------------------------------------------

/// One neighbouring pattern used by a routing decision.
struct neighbor {
  uint64_t pattern_id = 0;
  float similarity = 0; ///< cosine similarity in [-1, 1]
};

/// Latency breakdown of one routed request, nanoseconds.
struct latency_ns {
  uint64_t embed = 0;  ///< text -> embedding (0 when the client sent an embedding)
  uint64_t search = 0; ///< nearest-pattern search in the HNSW index
  uint64_t decide = 0; ///< tier choice (posterior sampling) and bookkeeping
  uint64_t total = 0;  ///< request parsed -> decision made, incl. queueing
};

/// A routing query as the gateway hands it to the router actor.
struct route_query {
  std::vector<float> embedding; ///< [dim] f32, L2-normalised by the gateway
  std::string session_id;       ///< optional, "" when absent
  std::string user;             ///< optional, "" when absent
  uint32_t text_bytes = 0;      ///< length of the routed text, 0 for embeddings
  uint64_t embed_ns = 0;        ///< time the gateway spent embedding
  int64_t start_ns = 0;         ///< steady-clock ns when the request was parsed
  /// The client's latency budget for the answer, ms; 0 = none. Router v2
  /// sees it (as min(1, budget / sona.latency_budget_max_ms)).
  double latency_budget_ms = 0;
  /// The client's own sampling, when it set it; negative: left to the node
  /// (router v2 then chooses from its grid).
  double temperature = -1, top_p = -1;
};

/// Largest latency budget a request may give, ms (one day).
inline constexpr double max_latency_budget_ms = 86'400'000;

/// Why `ms` is not a valid latency budget ("" when it is: 0 for none, or a
/// finite number in (0, max_latency_budget_ms]).
inline std::string check_latency_budget(double ms) {
  if (ms == 0 || (ms > 0 && ms <= max_latency_budget_ms)) // false for NaN
    return {};
  return "latency_budget_ms must be a number of milliseconds in (0, 86400000], or 0 for none";
}

/// The router's answer: which model tier should serve the request.
struct route_decision {
  uint64_t request_id = 0; ///< node-unique, time-ordered id (see make_request_id)
  int64_t time_ms = 0;     ///< UTC ms since the Unix epoch
  uint32_t tier = 0;       ///< index into the configured tiers
  std::string tier_name;
  double confidence = 0;      ///< posterior probability that `tier` is the best, [0, 1]
  double expected_reward = 0; ///< posterior mean quality minus tier cost
  uint64_t pattern_id = 0;    ///< pattern the request was assigned to
  bool new_pattern = false;   ///< whether the request created that pattern
  std::vector<neighbor> neighbors;
  latency_ns latency;
  /// Sampling to serve with: router v2's choice, or the client's own value;
  /// negative when neither (router v2 off and the client left it).
  double temperature = -1, top_p = -1;
  /// Router v2's context bucket: the tokens (prompt + completion) the
  /// request is expected to need, a power of two in [256, 32768]; 0 = no
  /// prediction (router v2 off or not trained yet).
  uint32_t context_tokens = 0;
};

/// What the witness log keeps of a routed request.
struct witness_entry {
  route_decision decision;
  std::vector<float> embedding; ///< [dim] f32
  std::string session_id;
  std::string user;
  uint32_t text_bytes = 0;
  bool has_feedback = false;
  double quality = 0;
  int64_t feedback_ms = 0;
  double latency_budget_ms = 0;                      ///< the query's latency budget (0: none)
  uint32_t prompt_tokens = 0, completion_tokens = 0; ///< usage from the feedback (0: not reported)
};

/// Feedback on a routed request: the observed quality of the answer.
struct feedback {
  uint64_t request_id = 0;
  double quality = 0; ///< in [0, 1]
  int64_t time_ms = 0;
  /// Tokens the answer used, when the client reports them (0: not reported):
  /// the context bucket head learns from prompt + completion.
  uint32_t prompt_tokens = 0, completion_tokens = 0;
};

/// A learning step for the router: one observation of a tier on a pattern.
struct learn_update {
  uint64_t pattern_id = 0;
  uint32_t tier = 0;
  double quality = 0; ///< in [0, 1]
};

/// Router state for /v1/stats and /metrics.
struct router_stats {
  uint64_t n_patterns = 0;
  uint64_t n_routed = 0;
  uint64_t n_learned = 0;
  uint64_t n_index_rebuilds = 0;
};

/// Witness state for /v1/stats and /metrics.
struct witness_stats {
  uint64_t n_records = 0;       ///< records committed to LMDB in total
  uint64_t n_pending = 0;       ///< records buffered, not yet committed
  uint64_t n_transactions = 0;  ///< write transactions committed
  uint64_t n_feedback = 0;      ///< feedback joined to records
  uint64_t n_errors = 0;        ///< failed writes
  uint64_t n_archived = 0;      ///< records moved to the archive by this process
  uint64_t n_archive_files = 0; ///< archive segments written by this process
};

/// What one archiving run of the witness log did.
struct witness_archive_result {
  uint64_t records = 0;  ///< records moved out of LMDB
  uint64_t files = 0;    ///< segments written
  int64_t cutoff_ms = 0; ///< records routed before this (UTC ms) were due; 0: archiving off
};

// -- inspect overloads --------------------------------------------------------

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, neighbor& x) {
  return f(caf::meta::type_name("neighbor"), x.pattern_id, x.similarity);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, latency_ns& x) {
  return f(caf::meta::type_name("latency_ns"), x.embed, x.search, x.decide, x.total);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, route_query& x) {
  return f(caf::meta::type_name("route_query"), x.embedding, x.session_id, x.user, x.text_bytes,
           x.embed_ns, x.start_ns, x.latency_budget_ms, x.temperature, x.top_p);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, route_decision& x) {
  return f(caf::meta::type_name("route_decision"), x.request_id, x.time_ms, x.tier, x.tier_name,
           x.confidence, x.expected_reward, x.pattern_id, x.new_pattern, x.neighbors, x.latency,
           x.temperature, x.top_p, x.context_tokens);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, witness_entry& x) {
  return f(caf::meta::type_name("witness_entry"), x.decision, x.embedding, x.session_id, x.user,
           x.text_bytes, x.has_feedback, x.quality, x.feedback_ms, x.latency_budget_ms,
           x.prompt_tokens, x.completion_tokens);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, feedback& x) {
  return f(caf::meta::type_name("feedback"), x.request_id, x.quality, x.time_ms, x.prompt_tokens,
           x.completion_tokens);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, learn_update& x) {
  return f(caf::meta::type_name("learn_update"), x.pattern_id, x.tier, x.quality);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, router_stats& x) {
  return f(caf::meta::type_name("router_stats"), x.n_patterns, x.n_routed, x.n_learned,
           x.n_index_rebuilds);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, witness_stats& x) {
  return f(caf::meta::type_name("witness_stats"), x.n_records, x.n_pending, x.n_transactions,
           x.n_feedback, x.n_errors, x.n_archived, x.n_archive_files);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, witness_archive_result& x) {
  return f(caf::meta::type_name("witness_archive_result"), x.records, x.files, x.cutoff_ms);
}

/// Formats a request id as 16 lowercase hex digits (the API's form).
std::string format_request_id(uint64_t id);

/// Parses 16 hex digits; returns false on anything else.
bool parse_request_id(std::string_view text, uint64_t& id);

} // namespace shoal::proto

namespace shoal::proto {

using subscribe_atom = caf::atom_constant<caf::atom("subscribe")>;

/// Telemetry counters and latency summary, for /v1/stats and /metrics.
struct telemetry_snapshot {
  int64_t started_ms = 0;                             ///< node start, UTC ms
  uint64_t n_routed = 0;                              ///< routed requests
  uint64_t n_new_patterns = 0;                        ///< requests that created a pattern
  std::vector<uint64_t> tier_routed;                  ///< [n_tiers] routed per tier
  uint64_t n_feedback = 0;                            ///< feedback accepted
  std::vector<uint64_t> tier_feedback;                ///< [n_tiers]
  std::vector<double> tier_quality_sum;               ///< [n_tiers] sum of quality
  double reward_sum = 0;                              ///< sum of quality - tier cost
  uint64_t latency_count = 0;                         ///< route latency observations
  double latency_sum_s = 0;                           ///< their sum, seconds
  double p50_s = 0, p90_s = 0, p99_s = 0, p999_s = 0; ///< route latency, seconds
  std::vector<double> bucket_le_s;                    ///< Prometheus bucket edges, seconds
  std::vector<uint64_t> bucket_counts;                ///< cumulative counts per edge
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, telemetry_snapshot& x) {
  return f(caf::meta::type_name("telemetry_snapshot"), x.started_ms, x.n_routed, x.n_new_patterns,
           x.tier_routed, x.n_feedback, x.tier_feedback, x.tier_quality_sum, x.reward_sum,
           x.latency_count, x.latency_sum_s, x.p50_s, x.p90_s, x.p99_s, x.p999_s, x.bucket_le_s,
           x.bucket_counts);
}

} // namespace shoal::proto
