#pragma once
/// @file The client commands. `shoal replay`: replays a JSONL file of prompts ({id, text, domain})
/// against a running node, sends the evaluator's feedback for every routed
/// request, and prints a learning curve (mean reward and regret per window
/// against the oracle), tier usage and latency percentiles.

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
  uint32_t by_domain = 0;                    ///< if > 0, print this many domains ranked by regret
  evaluator_config eval;
  /// Latency budgets sent with the requests (latency_budget_ms) and judged
  /// by the evaluator's latency model (eval.largest_ms_per_token).
  latency_budgets budgets;
};

/// Runs the replay. Returns the process exit code (0 ok, 1 failure) after
/// printing the report to stdout and errors to stderr.
int run_replay(const replay_options& opts);

/// `shoal learn status` (loop empty) and `shoal learn trigger <loop>`
/// against the node at `url`: prints the node's /v1/learn/status JSON, or
/// the error it answered. Returns the process exit code.
int run_learn(const std::string& url, const std::string& loop);

} // namespace shoal::sim
