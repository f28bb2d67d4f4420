#pragma once
/// @file The node's statistics, declared once: one descriptor table (name,
/// kind, unit, help, labels, place in /v1/stats, accessor) that renders both
/// `GET /v1/stats` (JSON) and `GET /metrics` (Prometheus text format 0.0.4),
/// and that the telemetry snapshot (a later issue) reads too. A new counter
/// is one entry in stats.cpp's table.
///
/// Metric names follow Prometheus' conventions (base units in the name,
/// `_total` for counters; names after vLLM's where one exists); every
/// series carries the label node="<node.name>" first.
///
/// Thread-safety: the table is immutable; rendering is pure over a
/// snapshot, callable from any thread.

#include "actors/actors.hpp"
#include "actors/engine.hpp"
#include "actors/memory.hpp"
#include "federation/bridge.hpp"
#include "proto/interfaces.hpp"
#include "proto/messages.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace shoal::node {

struct node_config;

/// Everything the table reads, collected from the actors in one pass
/// (gateway: one request to each, bounded by http.request_timeout_ms).
struct stats_snapshot {
  std::string node;                       ///< node.name
  std::vector<router::tier_config> tiers; ///< the configured tiers, in index order
  int64_t now_ms = 0;                     ///< when collected, UTC ms
  proto::router_stats router;
  proto::witness_stats witness;
  proto::telemetry_snapshot telemetry;
  std::optional<federation::federation_stats> fed; ///< with federation on
  std::optional<proto::router_digest> digest;      ///< with federation on
  std::vector<actors::engine_stats> engines;       ///< one per tier with a model
  std::optional<actors::memory_stats> memory;      ///< with a memory pool
  std::optional<actors::learn_status> learn;       ///< /metrics only; when SONA answered
  uint64_t http_requests = 0;                      ///< responses sent
  std::map<std::string, uint64_t> http_errors;     ///< error responses by code
};

/// A Prometheus histogram's state: cumulative counts per upper bound.
struct stat_histogram {
  std::vector<std::pair<double, uint64_t>> buckets; ///< (le, cumulative count), ascending le
  uint64_t count = 0;                               ///< observations (the +Inf bucket)
  double sum = 0;                                   ///< their sum, in the metric's unit
};

/// One value: integers stay integers in JSON; bools render 1/0 in /metrics.
using stat_value = std::variant<uint64_t, int64_t, double, bool, std::string, stat_histogram>;

/// One series of a family: its label values (in the descriptor's order) and value.
struct stat_sample {
  std::vector<std::string> labels;
  stat_value value;
};

enum class stat_kind { counter, gauge, histogram };

/// One statistic: where it shows and how to read it.
struct stat_descriptor {
  /// Prometheus family name, or nullptr: shown in /v1/stats only.
  const char* metric;
  stat_kind kind;
  /// Base unit of the values: "requests", "seconds", "bytes", "tokens", "1"
  /// (a ratio or flag), "" for text.
  const char* unit;
  const char* help;
  /// Prometheus label names, in the order of stat_sample::labels.
  std::vector<const char*> labels;
  /// Place in /v1/stats, or nullptr: shown in /metrics only. Dotted path;
  /// "name[key]" is an array of objects told apart by their field `key`,
  /// "name{}" an object keyed by label value; each takes the next label.
  const char* json;
  /// Appends the samples. @returns false when the statistic does not apply
  /// to this node (e.g. federation off): nothing is shown. When it applies
  /// with no samples, /v1/stats still shows its (empty) containers.
  std::function<bool(const stats_snapshot&, std::vector<stat_sample>&)> read;
};

/// The table, in /metrics order.
const std::vector<stat_descriptor>& stats_table();

/// `GET /v1/stats`: every descriptor with a JSON place.
nlohmann::json render_stats_json(const stats_snapshot& s);

/// `GET /metrics`: every descriptor with a metric name, Prometheus text
/// format 0.0.4 (HELP and TYPE once per family).
std::string render_metrics(const stats_snapshot& s);

} // namespace shoal::node
