#include "node/stats.hpp"

#include <charconv>
#include <sstream>
#include <string_view>

namespace shoal::node {

namespace {

using json = nlohmann::json;
using reader = std::function<bool(const stats_snapshot&, std::vector<stat_sample>&)>;

// -- descriptor makers: one per kind of source ---------------------------------

/// One value of the node.
template <class F>
stat_descriptor node_stat(const char* metric, stat_kind kind, const char* unit, const char* help,
                          const char* path, F value) {
  return {metric,
          kind,
          unit,
          help,
          {},
          path,
          [value](const stats_snapshot& s, std::vector<stat_sample>& out) {
            out.push_back({{}, stat_value{value(s)}});
            return true;
          }};
}

/// One value per configured tier (label tier; JSON tiers[name]).
template <class F>
stat_descriptor tier_stat(const char* metric, stat_kind kind, const char* unit, const char* help,
                          const char* path, F value) {
  return {metric,
          kind,
          unit,
          help,
          {"tier"},
          path,
          [value](const stats_snapshot& s, std::vector<stat_sample>& out) {
            for (size_t i = 0; i < s.tiers.size(); ++i)
              out.push_back({{s.tiers[i].name}, stat_value{value(s, i)}});
            return true;
          }};
}

/// One value per tier with an engine (label tier; JSON engines[tier]).
template <class F>
stat_descriptor engine_stat(const char* metric, stat_kind kind, const char* unit, const char* help,
                            const char* path, F value) {
  return {metric,
          kind,
          unit,
          help,
          {"tier"},
          path,
          [value](const stats_snapshot& s, std::vector<stat_sample>& out) {
            for (const auto& e : s.engines)
              out.push_back({{e.tier}, stat_value{value(e)}});
            return true;
          }};
}

/// A value of the memory pool (when the node has one).
template <class F>
stat_descriptor memory_stat(const char* metric, stat_kind kind, const char* help, const char* path,
                            F value) {
  return {metric,
          kind,
          "bytes",
          help,
          {},
          path,
          [value](const stats_snapshot& s, std::vector<stat_sample>& out) {
            if (s.memory)
              out.push_back({{}, stat_value{value(*s.memory)}});
            return true; // "memory": {} without a pool
          }};
}

/// A value of the federation bridge (with federation on).
template <class F>
stat_descriptor fed_stat(const char* metric, stat_kind kind, const char* unit, const char* help,
                         const char* path, F value) {
  return {metric,
          kind,
          unit,
          help,
          {},
          path,
          [value](const stats_snapshot& s, std::vector<stat_sample>& out) {
            if (!s.fed)
              return false;
            out.push_back({{}, stat_value{value(*s.fed, *s.digest)}});
            return true;
          }};
}

/// A value of SONA's loops (/metrics only, when SONA answered).
template <class F>
stat_descriptor learn_stat(const char* metric, stat_kind kind, const char* unit, const char* help,
                           F value) {
  return {metric,
          kind,
          unit,
          help,
          {},
          nullptr,
          [value](const stats_snapshot& s, std::vector<stat_sample>& out) {
            if (!s.learn)
              return false;
            out.push_back({{}, stat_value{static_cast<double>(value(*s.learn))}});
            return true;
          }};
}

uint64_t tier_at(const std::vector<uint64_t>& v, size_t i) {
  return i < v.size() ? v[i] : 0;
}

std::string hex_id(uint64_t x) {
  return proto::format_request_id(x);
}

constexpr auto counter = stat_kind::counter;
constexpr auto gauge = stat_kind::gauge;

std::vector<stat_descriptor> make_table() {
  using S = const stats_snapshot&;
  using E = const actors::engine_stats&;
  using M = const actors::memory_stats&;
  using F = const federation::federation_stats&;
  using D = const proto::router_digest&;
  using L = const actors::learn_status&;
  std::vector<stat_descriptor> t;

  // -- the node --------------------------------------------------------------------
  t.push_back(node_stat(nullptr, gauge, "", "The node's name (node.name).", "node",
                        [](S s) { return s.node; }));
  t.push_back(node_stat(nullptr, gauge, "seconds", "Time since the node started.", "uptime_s",
                        [](S s) { return (s.now_ms - s.telemetry.started_ms) / 1e3; }));
  t.push_back(node_stat(nullptr, counter, "requests", "Routed requests.", "requests",
                        [](S s) { return s.telemetry.n_routed; }));

  // -- routing -----------------------------------------------------------------------
  t.push_back(tier_stat(nullptr, gauge, "", "The tier's name.", "tiers[name].name",
                        [](S s, size_t i) { return s.tiers[i].name; }));
  t.push_back(tier_stat(nullptr, gauge, "1", "The tier's cost, quality units.", "tiers[name].cost",
                        [](S s, size_t i) { return s.tiers[i].cost; }));
  t.push_back(tier_stat(nullptr, gauge, "1", "The tier's model size, millions of parameters.",
                        "tiers[name].params_m", [](S s, size_t i) { return s.tiers[i].params_m; }));
  t.push_back(tier_stat("shoal_route_requests_total", counter, "requests",
                        "Routed requests by chosen tier.", "tiers[name].routed",
                        [](S s, size_t i) { return tier_at(s.telemetry.tier_routed, i); }));
  t.push_back(tier_stat(nullptr, gauge, "1", "Share of routed requests that went to the tier.",
                        "tiers[name].share", [](S s, size_t i) {
                          const auto& te = s.telemetry;
                          return te.n_routed > 0
                                   ? double(tier_at(te.tier_routed, i)) / double(te.n_routed)
                                   : 0.0;
                        }));
  t.push_back(tier_stat("shoal_feedback_total", counter, "requests", "Feedback accepted, by tier.",
                        "tiers[name].feedback",
                        [](S s, size_t i) { return tier_at(s.telemetry.tier_feedback, i); }));
  t.push_back(tier_stat("shoal_feedback_quality_sum", counter, "1",
                        "Sum of feedback quality, by tier.", nullptr, [](S s, size_t i) {
                          return i < s.telemetry.tier_quality_sum.size()
                                   ? s.telemetry.tier_quality_sum[i]
                                   : 0.0;
                        }));
  t.push_back(tier_stat(nullptr, gauge, "1", "Mean feedback quality of the tier.",
                        "tiers[name].mean_quality", [](S s, size_t i) {
                          uint64_t fb = tier_at(s.telemetry.tier_feedback, i);
                          return fb > 0 ? s.telemetry.tier_quality_sum[i] / double(fb) : 0.0;
                        }));
  t.push_back(node_stat(nullptr, counter, "requests", "Feedback accepted.", "feedback",
                        [](S s) { return s.telemetry.n_feedback; }));
  t.push_back(node_stat("shoal_reward_sum", counter, "1",
                        "Sum of reward (quality minus tier cost).", nullptr,
                        [](S s) { return s.telemetry.reward_sum; }));
  t.push_back(
    node_stat(nullptr, gauge, "1", "Mean reward of the feedback accepted.", "mean_reward", [](S s) {
      const auto& te = s.telemetry;
      return te.n_feedback > 0 ? te.reward_sum / double(te.n_feedback) : 0.0;
    }));
  t.push_back(node_stat("shoal_patterns", gauge, "patterns", "Patterns in the router's bank.",
                        "patterns", [](S s) { return s.router.n_patterns; }));
  t.push_back(node_stat("shoal_patterns_created_total", counter, "patterns",
                        "Patterns created by routed requests.", "new_patterns",
                        [](S s) { return s.telemetry.n_new_patterns; }));
  t.push_back(node_stat("shoal_route_latency_seconds", stat_kind::histogram, "seconds",
                        "Time from request parsed to routing decision.", nullptr, [](S s) {
                          const auto& te = s.telemetry;
                          stat_histogram h{{}, te.latency_count, te.latency_sum_s};
                          for (size_t i = 0; i < te.bucket_le_s.size(); ++i)
                            h.buckets.emplace_back(te.bucket_le_s[i], te.bucket_counts[i]);
                          return h;
                        }));
  t.push_back(node_stat(nullptr, counter, "requests", "Route latency observations.",
                        "route_latency_ms.count", [](S s) { return s.telemetry.latency_count; }));
  t.push_back(node_stat(
    nullptr, gauge, "milliseconds", "Mean route latency.", "route_latency_ms.mean", [](S s) {
      const auto& te = s.telemetry;
      return te.latency_count > 0 ? 1e3 * te.latency_sum_s / double(te.latency_count) : 0.0;
    }));
  for (auto [path, q] : {std::pair{"route_latency_ms.p50", &proto::telemetry_snapshot::p50_s},
                         std::pair{"route_latency_ms.p90", &proto::telemetry_snapshot::p90_s},
                         std::pair{"route_latency_ms.p99", &proto::telemetry_snapshot::p99_s},
                         std::pair{"route_latency_ms.p999", &proto::telemetry_snapshot::p999_s}})
    t.push_back(node_stat(nullptr, gauge, "milliseconds", "Route latency percentile.", path,
                          [q](S s) { return 1e3 * (s.telemetry.*q); }));
  t.push_back(node_stat(nullptr, counter, "", "Pattern index rebuilds from LMDB.", "index_rebuilds",
                        [](S s) { return s.router.n_index_rebuilds; }));

  // -- the witness log ---------------------------------------------------------------
  t.push_back(node_stat("shoal_witness_records_total", counter, "records",
                        "Witness records committed to LMDB.", "witness.records",
                        [](S s) { return s.witness.n_records; }));
  t.push_back(node_stat("shoal_witness_pending", gauge, "records",
                        "Witness records waiting for their transaction.", "witness.pending",
                        [](S s) { return s.witness.n_pending; }));
  t.push_back(node_stat("shoal_witness_transactions_total", counter, "transactions",
                        "Witness write transactions.", "witness.transactions",
                        [](S s) { return s.witness.n_transactions; }));
  t.push_back(node_stat(nullptr, counter, "records", "Feedback joined to witness records.",
                        "witness.feedback_joined", [](S s) { return s.witness.n_feedback; }));
  t.push_back(node_stat("shoal_witness_write_errors_total", counter, "transactions",
                        "Failed witness transactions.", "witness.write_errors",
                        [](S s) { return s.witness.n_errors; }));
  t.push_back(node_stat("shoal_witness_archived_total", counter, "records",
                        "Witness records moved from LMDB to archive segments.", "witness.archived",
                        [](S s) { return s.witness.n_archived; }));
  t.push_back(node_stat("shoal_witness_archive_segments_total", counter, "segments",
                        "Witness archive segments written.", "witness.archive_segments",
                        [](S s) { return s.witness.n_archive_files; }));

  // -- HTTP ----------------------------------------------------------------------------
  t.push_back(node_stat("shoal_http_requests_total", counter, "requests", "HTTP requests answered.",
                        "http.requests", [](S s) { return s.http_requests; }));
  t.push_back({"shoal_http_errors_total",
               counter,
               "requests",
               "HTTP error responses by error code.",
               {"code"},
               "http.errors{}",
               [](S s, std::vector<stat_sample>& out) {
                 for (const auto& [code, n] : s.http_errors)
                   out.push_back({{code}, stat_value{n}});
                 return true;
               }});

  // -- federation ----------------------------------------------------------------------
  t.push_back(node_stat(nullptr, gauge, "1", "Whether federation is on.", "federation.enabled",
                        [](S s) { return s.fed.has_value(); }));
  t.push_back(fed_stat("shoal_federation_connected", gauge, "1",
                       "1 when connected to a NATS server.", "federation.connected",
                       [](F f, D) { return f.connected; }));
  t.push_back(fed_stat(nullptr, gauge, "", "This node's federation id.", "federation.node_id",
                       [](F f, D) { return hex_id(f.node_id); }));
  t.push_back(fed_stat(nullptr, gauge, "", "This node's Ed25519 public key, hex.",
                       "federation.public_key", [](F f, D) { return f.public_key; }));
  t.push_back(fed_stat(nullptr, gauge, "1", "Whether the JetStream pattern stream is usable.",
                       "federation.stream_ready", [](F f, D) { return f.stream_ready; }));
  t.push_back(fed_stat(nullptr, gauge, "", "The NATS server connected to.", "federation.server",
                       [](F f, D) { return f.url; }));
  t.push_back(fed_stat("shoal_federation_stream_sequence", gauge, "1",
                       "Last JetStream sequence of the pattern stream received.",
                       "federation.stream_seq", [](F f, D) { return f.stream_seq; }));
  t.push_back(fed_stat(nullptr, gauge, "1",
                       "Last stream sequence the router committed with its patterns.",
                       "federation.stream_seq_stored", [](F, D d) { return d.stream_seq; }));
  t.push_back(fed_stat("shoal_federation_batches_sent_total", counter, "batches",
                       "Delta batches published.", "federation.batches_sent",
                       [](F f, D) { return f.batches_sent; }));
  t.push_back(fed_stat("shoal_federation_deltas_sent_total", counter, "deltas",
                       "Pattern deltas published.", "federation.deltas_sent",
                       [](F f, D) { return f.deltas_sent; }));
  t.push_back(fed_stat(nullptr, counter, "batches", "Publications that failed.",
                       "federation.publish_errors", [](F f, D) { return f.publish_errors; }));
  t.push_back(fed_stat(nullptr, counter, "batches", "Peers' delta batches received.",
                       "federation.batches_received", [](F f, D) { return f.batches_received; }));
  t.push_back(fed_stat("shoal_federation_deltas_merged_total", counter, "deltas",
                       "Peers' deltas that changed a pattern here.", "federation.deltas_merged",
                       [](F f, D) { return f.deltas_merged; }));
  t.push_back(fed_stat(nullptr, counter, "deltas", "Peers' deltas already known or superseded.",
                       "federation.deltas_stale", [](F f, D) { return f.deltas_stale; }));
  t.push_back(fed_stat(nullptr, counter, "patterns", "Patterns created from peers' deltas.",
                       "federation.patterns_created", [](F f, D) { return f.patterns_created; }));
  t.push_back(fed_stat(nullptr, gauge, "deltas",
                       "Contributions held until their pattern is announced.", "federation.orphans",
                       [](F, D d) { return d.orphans; }));
  t.push_back(fed_stat("shoal_federation_republishes_total", counter, "1",
                       "Times this node republished its contributions (anti-entropy, resync).",
                       "federation.republishes", [](F f, D) { return f.republishes; }));
  t.push_back(fed_stat(nullptr, counter, "1", "Resyncs this node asked its peers for.",
                       "federation.resyncs_requested", [](F f, D) { return f.resyncs_requested; }));
  t.push_back(fed_stat(
    "shoal_federation_propagation_seconds", stat_kind::histogram, "seconds",
    "Lag from the oldest change in a peer's batch to its merge here (assumes "
    "synchronised clocks).",
    nullptr, [](F f, D) {
      stat_histogram h{{}, f.lag.count(), f.lag.sum_ns() / 1e9};
      for (double le : {0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0})
        h.buckets.emplace_back(le, f.lag.cumulative_le(le * 1e9));
      return h;
    }));
  for (auto [path, q] : {std::pair{"federation.propagation_ms.p50", 0.5},
                         std::pair{"federation.propagation_ms.p99", 0.99}})
    t.push_back(fed_stat(nullptr, gauge, "milliseconds", "Propagation lag percentile.", path,
                         [q](F f, D) { return f.lag.quantile(q) / 1e6; }));
  t.push_back(fed_stat(nullptr, counter, "batches", "Batches behind the propagation figures.",
                       "federation.propagation_ms.batches", [](F f, D) { return f.lag.count(); }));
  t.push_back({"shoal_federation_dropped_total",
               counter,
               "messages",
               "Federation messages dropped, by reason.",
               {"reason"},
               "federation.dropped{}",
               [](S s, std::vector<stat_sample>& out) {
                 if (!s.fed)
                   return false;
                 const auto& f = *s.fed;
                 for (auto [reason, n] : {std::pair{"untrusted", f.dropped_untrusted},
                                          std::pair{"bad_signature", f.dropped_bad_signature},
                                          std::pair{"malformed", f.dropped_malformed},
                                          std::pair{"oversized", f.dropped_oversized},
                                          std::pair{"invalid", f.dropped_invalid}})
                   out.push_back({{reason}, stat_value{n}});
                 return true;
               }});
  // What each origin contributed to this node's bank, and the peers heard from.
  using origin_field = uint64_t proto::origin_summary::*;
  for (auto [path, field, hex] :
       {std::tuple{"federation.origins[node].contributions", &proto::origin_summary::count, false},
        std::tuple{"federation.origins[node].max_version", &proto::origin_summary::max_version,
                   false},
        std::tuple{"federation.origins[node].hash", &proto::origin_summary::hash, true}})
    t.push_back({nullptr,
                 gauge,
                 "",
                 "Per origin node: its contributions here.",
                 {"node"},
                 path,
                 [field = origin_field(field), hex = hex](S s, std::vector<stat_sample>& out) {
                   if (!s.fed)
                     return false;
                   for (const auto& o : s.digest->origins)
                     out.push_back({{hex_id(o.node)},
                                    hex ? stat_value{hex_id(o.*field)} : stat_value{o.*field}});
                   return true;
                 }});
  t.push_back({nullptr,
               gauge,
               "",
               "Per peer heard from: its id, last contact and patterns.",
               {"name"},
               "federation.peers[name]",
               [](S s, std::vector<stat_sample>& out) {
                 if (!s.fed)
                   return false;
                 for (const auto& p : s.fed->peers)
                   out.push_back({{p.name}, stat_value{p.name}});
                 return true;
               }});
  for (auto [path, which] : {std::pair{"federation.peers[name].node", 0},
                             std::pair{"federation.peers[name].last_seen_ms", 1},
                             std::pair{"federation.peers[name].patterns", 2}})
    t.push_back({nullptr,
                 gauge,
                 "",
                 "Per peer heard from: its id, last contact and patterns.",
                 {"name"},
                 path,
                 [which = which](S s, std::vector<stat_sample>& out) {
                   if (!s.fed)
                     return false;
                   for (const auto& p : s.fed->peers)
                     out.push_back({{p.name},
                                    which == 0   ? stat_value{hex_id(p.node)}
                                    : which == 1 ? stat_value{p.last_seen_ms}
                                                 : stat_value{p.last.n_patterns}});
                   return true;
                 }});

  // -- engines (names after vLLM's) --------------------------------------------------
  t.push_back(
    engine_stat(nullptr, gauge, "", "The tier.", "engines[tier].tier", [](E e) { return e.tier; }));
  t.push_back(engine_stat("shoal_engine_requests_running", gauge, "sequences",
                          "Sequences in the running batch.", "engines[tier].running",
                          [](E e) { return e.running; }));
  t.push_back(engine_stat("shoal_engine_requests_waiting", gauge, "sequences",
                          "Sequences queued for a batch slot.", "engines[tier].waiting",
                          [](E e) { return e.waiting; }));
  t.push_back(engine_stat("shoal_engine_requests_total", counter, "requests",
                          "Generation requests submitted.", "engines[tier].requests",
                          [](E e) { return e.requests; }));
  t.push_back(engine_stat("shoal_engine_requests_refused_total", counter, "requests",
                          "Generation requests refused (bad parameters, context overflow).",
                          "engines[tier].refused", [](E e) { return e.refused; }));
  t.push_back(engine_stat("shoal_engine_requests_cancelled_total", counter, "requests",
                          "Sequences cancelled because their client left.",
                          "engines[tier].cancelled", [](E e) { return e.cancelled; }));
  t.push_back(engine_stat("shoal_engine_prompt_tokens_total", counter, "tokens",
                          "Prompt tokens prefilled.", "engines[tier].prompt_tokens",
                          [](E e) { return e.prompt_tokens; }));
  t.push_back(engine_stat("shoal_engine_prompt_cached_tokens_total", counter, "tokens",
                          "Prompt tokens taken from the prefix cache instead of prefilled.",
                          "engines[tier].cached_tokens", [](E e) { return e.cached_tokens; }));
  t.push_back(engine_stat("shoal_kv_pages_recent", gauge, "pages",
                          "KV pages in the recent (F16) tier.", "engines[tier].kv.pages_recent",
                          [](E e) { return e.kv.pages_recent; }));
  t.push_back(engine_stat("shoal_kv_pages_old", gauge, "pages",
                          "KV pages in the old (quantized) tier.", "engines[tier].kv.pages_old",
                          [](E e) { return e.kv.pages_old; }));
  t.push_back(engine_stat("shoal_kv_pages_free", gauge, "pages",
                          "Recent-tier KV pages the memory budget still has room for (shared by "
                          "all tiers: each tier's figure assumes the room goes to it).",
                          nullptr, [](E e) -> uint64_t {
                            return e.kv.page_bytes_recent == 0 || e.budget_limit < e.budget_used
                                     ? 0
                                     : (e.budget_limit - e.budget_used) / e.kv.page_bytes_recent;
                          }));
  t.push_back(engine_stat("shoal_kv_pages_cached", gauge, "pages",
                          "KV pages no sequence uses, kept for prefix hits (evictable).",
                          "engines[tier].kv.pages_cached", [](E e) { return e.kv.pages_cached; }));
  for (auto [path, field] :
       {std::pair{"engines[tier].kv.bytes_cached", &engine::kv_pool_stats::bytes_cached},
        std::pair{"engines[tier].kv.bytes_recent", &engine::kv_pool_stats::bytes_recent},
        std::pair{"engines[tier].kv.bytes_old", &engine::kv_pool_stats::bytes_old},
        std::pair{"engines[tier].kv.page_bytes_recent", &engine::kv_pool_stats::page_bytes_recent},
        std::pair{"engines[tier].kv.page_bytes_old", &engine::kv_pool_stats::page_bytes_old}})
    t.push_back(engine_stat(nullptr, gauge, "bytes", "KV cache bytes of the tier.", path,
                            [field = field](E e) { return uint64_t(e.kv.*field); }));
  t.push_back(engine_stat("shoal_kv_bytes_per_token_recent", gauge, "bytes",
                          "Bytes of KV cache per token in the recent tier (all layers, K and V).",
                          nullptr,
                          [](E e) { return double(e.kv.page_bytes_recent) / e.kv.page_tokens; }));
  t.push_back(engine_stat("shoal_kv_bytes_per_token_old", gauge, "bytes",
                          "Bytes of KV cache per token in the old tier (all layers, K and V).",
                          nullptr,
                          [](E e) { return double(e.kv.page_bytes_old) / e.kv.page_tokens; }));
  t.push_back(engine_stat("shoal_kv_prefix_hits_total", counter, "pages",
                          "Prompt pages found in the prefix cache.", "engines[tier].kv.prefix_hits",
                          [](E e) { return e.kv.prefix_hits; }));
  t.push_back(engine_stat("shoal_kv_prefix_misses_total", counter, "pages",
                          "Prompt pages looked up and not found.", "engines[tier].kv.prefix_misses",
                          [](E e) { return e.kv.prefix_misses; }));
  t.push_back(engine_stat("shoal_kv_evictions_total", counter, "pages",
                          "Cached KV pages freed to make room within the budget.",
                          "engines[tier].kv.evictions", [](E e) { return e.kv.evictions; }));
  t.push_back(engine_stat("shoal_kv_migrations_total", counter, "pages",
                          "KV pages moved to the old tier.", "engines[tier].kv.migrations",
                          [](E e) { return e.kv.migrations; }));
  t.push_back(engine_stat(nullptr, counter, "pages", "KV pages copied on write.",
                          "engines[tier].kv.copies", [](E e) { return e.kv.copies; }));
  t.push_back(engine_stat(nullptr, counter, "pages", "KV page allocations the budget refused.",
                          "engines[tier].kv.alloc_failures",
                          [](E e) { return e.kv.alloc_failures; }));
  t.push_back(engine_stat("shoal_kv_spills_total", counter, "pages",
                          "Evicted KV pages sealed and written to LMDB (kv_spill).",
                          "engines[tier].kv.spills", [](E e) { return e.kv.spills; }));
  t.push_back(engine_stat("shoal_kv_restores_total", counter, "pages",
                          "Spilled KV pages read back for a prompt prefix.",
                          "engines[tier].kv.restores", [](E e) { return e.kv.restores; }));
  t.push_back(engine_stat(nullptr, counter, "pages", "KV pages that could not be spilled.",
                          "engines[tier].kv.spill_failures",
                          [](E e) { return e.kv.spill_failures; }));
  t.push_back(engine_stat("shoal_engine_generation_tokens_total", counter, "tokens",
                          "Tokens generated.", "engines[tier].generated_tokens",
                          [](E e) { return e.generated_tokens; }));
  t.push_back(engine_stat("shoal_engine_steps_total", counter, "steps",
                          "Forward passes (batched steps).", "engines[tier].steps",
                          [](E e) { return e.steps; }));
  t.push_back(engine_stat("shoal_engine_prefill_seconds_total", counter, "seconds",
                          "Time spent in steps that prefilled prompt tokens.",
                          "engines[tier].prefill_seconds", [](E e) { return e.prefill_seconds; }));
  t.push_back(engine_stat("shoal_engine_decode_seconds_total", counter, "seconds",
                          "Time spent in decode-only steps.", "engines[tier].decode_seconds",
                          [](E e) { return e.decode_seconds; }));
  t.push_back(engine_stat(nullptr, gauge, "bytes", "The node's memory budget in use (all uses).",
                          "engines[tier].memory_budget.used_bytes",
                          [](E e) { return e.budget_used; }));
  t.push_back(engine_stat(nullptr, gauge, "bytes", "The node's memory budget.",
                          "engines[tier].memory_budget.limit_bytes",
                          [](E e) { return e.budget_limit; }));

  // -- the memory pool ---------------------------------------------------------------
  t.push_back(memory_stat("shoal_memory_budget_bytes", gauge,
                          "The node's memory budget (KV pages, adapters, router weights).",
                          "memory.limit_bytes", [](M m) { return m.limit_bytes; }));
  t.push_back(memory_stat(nullptr, gauge, "Bytes reserved from the memory budget.",
                          "memory.used_bytes", [](M m) { return m.used_bytes; }));
  t.push_back({"shoal_memory_used_bytes",
               gauge,
               "bytes",
               "Bytes reserved from the memory budget, by use.",
               {"use"},
               "memory.used_by{}",
               [](S s, std::vector<stat_sample>& out) {
                 if (!s.memory)
                   return false; // "memory": {} comes from the other entries
                 const auto& m = *s.memory;
                 for (auto [use, n] :
                      {std::pair{"kv", m.kv_bytes}, std::pair{"adapters", m.adapter_bytes},
                       std::pair{"router", m.router_bytes}})
                   out.push_back({{use}, stat_value{n}});
                 return true;
               }});
  t.push_back(memory_stat("shoal_memory_pressure_total", counter,
                          "Times a tier found no KV memory after evicting its own cached pages.",
                          "memory.pressure_events", [](M m) { return m.pressure_events; }));
  t.push_back(memory_stat(nullptr, counter, "Trim requests the pool sent to engines.",
                          "memory.trims", [](M m) { return m.trims; }));
  t.push_back(memory_stat("shoal_memory_trimmed_bytes_total", counter,
                          "Cached KV bytes other tiers freed at the memory pool's request.",
                          "memory.trimmed_bytes", [](M m) { return m.trimmed_bytes; }));

  // -- SONA's loops (the figures of GET /v1/learn/status) ------------------------------
  t.push_back(learn_stat("shoal_sona_v2_ready", gauge, "1",
                         "1 when a trained router v2 routes, else 0.",
                         [](L l) { return l.v2_ready ? 1 : 0; }));
  t.push_back(learn_stat("shoal_sona_model_version", gauge, "1",
                         "Background runs behind the routing model.",
                         [](L l) { return l.model_version; }));
  t.push_back(learn_stat("shoal_sona_instant_steps_total", counter, "steps",
                         "Instant-loop steps (one per feedback).",
                         [](L l) { return l.instant_steps; }));
  t.push_back(learn_stat("shoal_sona_instant_loss", gauge, "1",
                         "Mean loss of the last 100 instant steps.",
                         [](L l) { return l.instant_loss; }));
  t.push_back(learn_stat("shoal_sona_trajectories_pending", gauge, "trajectories",
                         "Router v2 decisions waiting for feedback.",
                         [](L l) { return l.pending; }));
  t.push_back(learn_stat("shoal_sona_trajectories_dropped_total", counter, "trajectories",
                         "Decisions the full trajectory ring refused (no instant step for them).",
                         [](L l) { return l.dropped; }));
  t.push_back(learn_stat("shoal_sona_background_runs_total", counter, "runs",
                         "Background-loop training runs.", [](L l) { return l.background_runs; }));
  t.push_back(learn_stat("shoal_sona_background_last_duration_seconds", gauge, "seconds",
                         "Duration of the last background run.",
                         [](L l) { return l.background_ms / 1e3; }));
  t.push_back(learn_stat("shoal_sona_background_last_loss", gauge, "1",
                         "Mean training loss of the last run.",
                         [](L l) { return l.background_loss; }));
  t.push_back(learn_stat("shoal_sona_task_boundaries_total", counter, "1",
                         "EWC++ task boundaries detected.", [](L l) { return l.task_boundaries; }));
  t.push_back(learn_stat("shoal_sona_deep_runs_total", counter, "runs",
                         "Deep-loop consolidation runs.", [](L l) { return l.deep_runs; }));
  t.push_back(learn_stat("shoal_sona_scoped_adapters", gauge, "adapters",
                         "Scopes with their own MicroLoRA adapter.",
                         [](L l) { return l.scoped_adapters; }));
  t.push_back(learn_stat("shoal_sona_adapter_refusals_total", counter, "adapters",
                         "Scoped adapters the memory budget refused.",
                         [](L l) { return l.adapter_refusals; }));

  t.push_back(node_stat("shoal_start_time_seconds", gauge, "seconds",
                        "Node start time, seconds since the epoch.", nullptr,
                        [](S s) { return s.telemetry.started_ms / 1e3; }));
  return t;
}

// -- /v1/stats -----------------------------------------------------------------------

json to_json(const stat_value& v) {
  return std::visit(
    [](const auto& x) -> json {
      if constexpr (std::is_same_v<std::decay_t<decltype(x)>, stat_histogram>)
        return {{"count", x.count}, {"sum", x.sum}};
      else
        return x;
    },
    v);
}

/// Walks `path` from `root`, creating containers; `labels` fill the
/// bracket segments. Returns the leaf's parent and the leaf's name, or
/// null when `labels` is empty while the path needs one (containers only).
std::pair<json*, std::string> place(json& root, std::string_view path,
                                    const std::vector<std::string>* labels) {
  json* at = &root;
  size_t next_label = 0;
  while (true) {
    size_t dot = path.find('.');
    std::string_view seg = path.substr(0, dot);
    const bool leaf = dot == std::string_view::npos;
    size_t open = seg.find_first_of("[{");
    if (open == std::string_view::npos) {
      if (leaf)
        return {at, std::string(seg)};
      at = &(*at)[std::string(seg)];
      if (at->is_null())
        *at = json::object();
    } else {
      std::string name(seg.substr(0, open));
      const bool array = seg[open] == '[';
      json& c = (*at)[name];
      if (c.is_null())
        c = array ? json::array() : json::object();
      if (labels == nullptr || next_label >= labels->size())
        return {nullptr, {}};
      const std::string& key = (*labels)[next_label++];
      if (array) {
        std::string field(seg.substr(open + 1, seg.size() - open - 2));
        json* elem = nullptr;
        for (auto& e : c)
          if (e.value(field, std::string()) == key)
            elem = &e;
        if (elem == nullptr) {
          c.push_back({{field, key}});
          elem = &c.back();
        }
        at = elem;
      } else {
        if (leaf)
          return {&c, key};
        at = &c[key];
        if (at->is_null())
          *at = json::object();
      }
      if (leaf)
        return {at, {}}; // an array element itself: its key field is its value
    }
    path.remove_prefix(dot + 1);
  }
}

// -- /metrics --------------------------------------------------------------------------

void write_value(std::ostringstream& out, const stat_value& v) {
  std::visit(
    [&out](const auto& x) {
      using T = std::decay_t<decltype(x)>;
      if constexpr (std::is_same_v<T, bool>)
        out << (x ? 1 : 0);
      else if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, stat_histogram>)
        out << 0; // not a number: such entries have no metric name
      else
        out << x;
    },
    v);
}

std::string label_set(const std::string& node, const stat_descriptor& d,
                      const std::vector<std::string>& values, const char* extra_name = nullptr,
                      const std::string& extra_value = {}) {
  std::string s = "{node=\"" + node + "\"";
  for (size_t i = 0; i < d.labels.size() && i < values.size(); ++i)
    s += std::string(",") + d.labels[i] + "=\"" + values[i] + "\"";
  if (extra_name != nullptr)
    s += std::string(",") + extra_name + "=\"" + extra_value + "\"";
  return s + "}";
}

const char* type_name(stat_kind k) {
  switch (k) {
    case stat_kind::counter:
      return "counter";
    case stat_kind::gauge:
      return "gauge";
    case stat_kind::histogram:
      return "histogram";
  }
  return "untyped";
}

} // namespace

const std::vector<stat_descriptor>& stats_table() {
  static const std::vector<stat_descriptor> table = make_table();
  return table;
}

nlohmann::json render_stats_json(const stats_snapshot& s) {
  json root = json::object();
  std::vector<stat_sample> samples;
  for (const auto& d : stats_table()) {
    if (d.json == nullptr)
      continue;
    samples.clear();
    if (!d.read(s, samples))
      continue;
    if (samples.empty()) {
      place(root, d.json, nullptr); // the containers, empty
      continue;
    }
    for (const auto& x : samples) {
      auto [parent, leaf] = place(root, d.json, &x.labels);
      if (parent != nullptr && !leaf.empty())
        (*parent)[leaf] = to_json(x.value);
    }
  }
  return root;
}

std::string render_metrics(const stats_snapshot& s) {
  std::ostringstream out;
  out.precision(17);
  std::vector<stat_sample> samples;
  for (const auto& d : stats_table()) {
    if (d.metric == nullptr)
      continue;
    samples.clear();
    if (!d.read(s, samples) || samples.empty())
      continue;
    out << "# HELP " << d.metric << ' ' << d.help << "\n# TYPE " << d.metric << ' '
        << type_name(d.kind) << '\n';
    for (const auto& x : samples) {
      if (const auto* h = std::get_if<stat_histogram>(&x.value)) {
        for (const auto& [le, n] : h->buckets) {
          // The shortest text that reads back as the same double ("0.0005").
          char le_text[32];
          auto end =
            std::to_chars(le_text, le_text + sizeof le_text, le, std::chars_format::general).ptr;
          out << d.metric << "_bucket"
              << label_set(s.node, d, x.labels, "le", std::string(le_text, end)) << ' ' << n
              << '\n';
        }
        out << d.metric << "_bucket" << label_set(s.node, d, x.labels, "le", "+Inf") << ' '
            << h->count << '\n';
        out << d.metric << "_sum" << label_set(s.node, d, x.labels) << ' ' << h->sum << '\n';
        out << d.metric << "_count" << label_set(s.node, d, x.labels) << ' ' << h->count << '\n';
        continue;
      }
      out << d.metric << label_set(s.node, d, x.labels) << ' ';
      write_value(out, x.value);
      out << '\n';
    }
  }
  return out.str();
}

} // namespace shoal::node
