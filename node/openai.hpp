#pragma once
/// @file The OpenAI-compatible API (OpenAI's REST reference, 2024-2025
/// shapes; the `openai` npm client works unchanged):
///   POST /v1/completions       prompt -> text (stream: SSE "data: {...}" chunks, then [DONE])
///   POST /v1/chat/completions  messages -> assistant message (stream: chat.completion.chunk)
///   POST /v1/embeddings        input -> vectors ("hashing" = the router's embedder,
///                              a tier name = mean-pooled final hidden state of its model)
///   GET  /v1/models            the tiers, plus "auto"
/// `model: "auto"` asks the router for the tier (the decision is recorded
/// like /v1/route's, and the response's `id` carries its request id for
/// /v1/feedback); an explicit tier name bypasses the router. Extensions
/// for "auto": `session_id` (router v2 follows the conversation) and
/// `latency_budget_ms` (the client's budget for the answer, which router v2
/// weighs; a positive number up to 86400000, or 0 for none).
/// Sampling: temperature, top_p, max_tokens / max_completion_tokens, stop,
/// seed, presence_penalty, frequency_penalty, logprobs / top_logprobs, plus
/// llama.cpp-server extensions top_k, min_p, repeat_penalty, ignore_eos.
/// Errors use OpenAI's shape {"error": {"message", "type", "param", "code"}}:
/// 400 invalid_request_error (bad fields, context_length_exceeded), 404
/// model_not_found, 503 when the engine does not answer. A client that
/// disconnects mid-stream cancels its sequence (the KV cache is freed at the
/// engine's next step).
/// Thread-safety: handlers run on httplib's worker threads; the state is
/// immutable after construction.

#include "actors/engine.hpp"
#include "actors/sessions.hpp"
#include "engine/chat_template.hpp"
#include "engine/embedder.hpp"
#include "node/config.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include <memory>
#include <optional>
#include <vector>

namespace httplib {
class Server;
}

namespace shoal::node {

/// A tier as the API sees it.
struct api_tier {
  std::string name;
  actors::engine_actor engine; ///< null for a routing-only tier
  std::shared_ptr<const engine::tokenizer> tokenizer;
  engine::chat_format chat = engine::chat_format::chatml;
  uint32_t n_ctx = 0;
  std::string model_file;
  std::string fingerprint; ///< engine::model::fingerprint() in hex: the weights' identity
  std::string weight_type; ///< e.g. "F16", "Q8_0"
};

class openai_api {
public:
  /// @param sessions the session index requests with a `session_id` update
  ///        (nullptr: session_id is refused).
  /// @param sona receives the usage of answers to routed (`model: "auto"`)
  ///        requests (null: nobody).
  openai_api(caf::actor_system& sys, const node_config& cfg, std::vector<api_tier> tiers,
             actors::router_actor router, const engine::embedder& embedder,
             std::shared_ptr<actors::session_index> sessions, actors::sona_actor sona = {});
  ~openai_api();

  /// Registers the endpoints on `server`. `this` must outlive the server.
  void install(httplib::Server& server);

  struct impl;

private:
  std::unique_ptr<impl> impl_;
};

} // namespace shoal::node
