#pragma once
/// @file The client commands. `shoal replay`: replays a JSONL file of prompts ({id, text, domain})
/// against a running node, sends the evaluator's feedback for every routed
/// request, and prints a learning curve (mean reward and regret per window
/// against the oracle), tier usage and latency percentiles.
///
/// Two worlds judge the answers (`replay_options::evaluator`):
///   - "simulated": sim/evaluator.hpp's documented synthetic world (quality
///     from hidden per-domain difficulty, Beta noise);
///   - "reference": what the node's real tier models do on the evaluation
///     split (sim/quality_table.hpp): feedback is the tier's measured
///     quality on that very prompt, a tier's cost is λ × its mean ms per
///     answer, and the oracle is per prompt. The prompts are the table's
///     documents (models/eval.jsonl: {id, prompt, reference, domain}); the
///     node's tier costs should be the same λ × ms (the replay prints both
///     and warns when they differ).

#include "sim/evaluator.hpp"

#include <cstdint>
#include <string>

namespace shoal::sim {

struct replay_options {
  std::string url = "http://127.0.0.1:8080"; ///< the node's HTTP address
  std::string prompts = "prompts.jsonl";     ///< JSONL: {"id", "text", "domain"} per line
  uint64_t limit = 0;                        ///< requests to send; 0 = every prompt once
  uint64_t offset = 0;                       ///< prompts to skip first
  double rate = 0;                           ///< requests/s; 0 = as fast as the node answers
  uint32_t concurrency = 1;                  ///< parallel connections
  uint64_t window = 1000;                    ///< requests per learning-curve row
  std::string curve_out;                     ///< if set, the curve is also written here as CSV
  /// If set, one CSV row per request: request, prompt id, domain, tier,
  /// quality, reward, expected, oracle (for bench/ to compute AIQ, APGR...).
  std::string requests_out;
  uint32_t by_domain = 0; ///< if > 0, print this many domains ranked by regret
  evaluator_config eval;
  /// "simulated" or "reference".
  std::string evaluator = "simulated";
  /// Reference world: the quality table cache (built through the node when
  /// missing or stale, with a progress bar).
  std::string table = "data/quality-table.json";
  /// Reference world: λ, quality units per ms of a tier's mean answer time.
  double lambda = 0;
  /// Request order: 0 = file order; else a seeded shuffle of the prompts.
  uint64_t order_seed = 0;
  /// Latency budgets sent with the requests (latency_budget_ms) and judged
  /// by the evaluator's latency model (eval.largest_ms_per_token).
  latency_budgets budgets;
};

/// Runs the replay. Returns the process exit code (0 ok, 1 failure) after
/// printing the report to stdout and errors to stderr.
int run_replay(const replay_options& opts);

/// `shoal quality-table`: builds (or reuses) the reference world's table
/// for the documents at `docs` through the node at `url`, with a progress
/// line, and prints one row per tier (quality, ROUGE-L, ms and tokens per
/// answer). Returns the process exit code.
int run_quality_table(const std::string& url, const std::string& docs, const std::string& table);

/// `shoal learn status` (loop empty) and `shoal learn trigger <loop>`
/// against the node at `url`: prints the node's /v1/learn/status JSON, or
/// the error it answered. Returns the process exit code.
int run_learn(const std::string& url, const std::string& loop);

} // namespace shoal::sim
