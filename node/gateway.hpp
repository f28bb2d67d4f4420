#pragma once
/// @file HTTP gateway: the node's JSON API (cpp-httplib server).
///
/// Endpoints:
///   POST /v1/route     {text | embedding, session_id?, user?, latency_budget_ms?}
///                      -> routing decision
///   POST /v1/feedback  {request_id, quality in [0, 1]}        -> learning update
///   GET  /v1/stats     counters, per-tier usage, latency percentiles, federation (JSON)
///   GET  /metrics      Prometheus text exposition format 0.0.4, `shoal_*` names
///   GET  /healthz      {"status": "ok"}
///   OpenAI-compatible /v1/completions, /v1/chat/completions, /v1/embeddings,
///   /v1/models: see node/openai.hpp.
/// Errors: 4xx/5xx with {"error": {"code", "message"}}; nothing is stored for a
/// rejected request. Handlers run on httplib's worker threads: they parse and
/// validate, then hand over to the actors and wait for the answer (at most
/// http.request_timeout_ms; then 503 unavailable).

#include "actors/actors.hpp"
#include "actors/memory.hpp"
#include "federation/bridge.hpp"
#include "engine/embedder.hpp"
#include "node/config.hpp"
#include "node/openai.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include <memory>
#include <string>

namespace shoal::node {

/// Handles of the actors the gateway talks to.
struct gateway_actors {
  actors::router_actor router;
  actors::sona_actor sona;
  actors::witness_actor witness;
  actors::telemetry_actor telemetry;
  federation::bridge_handle bridge; ///< federation bridge; null when federation is off
  std::vector<api_tier> tiers;      ///< the OpenAI API's view of the tiers (engines)
  std::shared_ptr<actors::session_index> sessions; ///< conversations named by session_id
  actors::memory_actor memory;                     ///< the memory pool (budget across tiers)
};

class gateway {
public:
  gateway(caf::actor_system& sys, const node_config& cfg, gateway_actors actors);
  ~gateway();

  /// Binds the listening socket. Returns the bound port. Errors: unavailable
  /// (the address cannot be bound; context http.port).
  core::result<int> bind();

  /// Serves until `stop` is called (blocks the calling thread).
  void serve();

  /// Stops serving: no new connections; in-flight requests finish and idle
  /// keep-alive connections are closed. Thread-safe.
  void stop();

  struct impl;

private:
  std::unique_ptr<impl> impl_;
};

} // namespace shoal::node
