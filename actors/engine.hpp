#pragma once
/// @file The engine actor: one per model tier. It owns the tier's model,
/// tokenizer, thread pool and continuous-batching scheduler, and runs on its
/// own thread (detached): between two forward passes it takes in new
/// requests and cancellations, so requests join and leave the running batch
/// at every step.
///
/// Message interface (CAF 0.17, dynamically typed):
///   (generate_atom, generation_job_ptr) -> void   events go to job->stream
///   (embed_atom, std::string text)      -> std::vector<float> | invalid_argument
///   (stats_atom)                        -> engine_stats
///   (trim_atom, uint64_t bytes)         -> uint64_t  frees cached KV pages (memory pool)
///   (policy_atom[, engine::kv_policy])  -> engine::kv_policy  read / change the KV tier policy
/// Results of a generation flow through a `generation_stream`, a small
/// thread-safe queue the HTTP thread reads (so that tokens stream without a
/// message round trip per token); the reader cancels through it too.

#include "engine/model.hpp"
#include "proto/messages.hpp"
#include "engine/scheduler.hpp"
#include "engine/tokenizer.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/atom.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace shoal::actors {

using generate_atom = caf::atom_constant<caf::atom("generate")>;
using embed_atom = caf::atom_constant<caf::atom("embed")>;
using step_atom = caf::atom_constant<caf::atom("step")>;
/// The memory pool's messages (actors/memory.hpp); trim and policy go to
/// engines too.
using register_atom = caf::atom_constant<caf::atom("register")>;
using policy_atom = caf::atom_constant<caf::atom("policy")>;
using pressure_atom = caf::atom_constant<caf::atom("pressure")>;
using trim_atom = caf::atom_constant<caf::atom("trim")>;

/// One generation's events, from the engine actor (writer) to one reader.
/// Thread-safe: one writer and one reader thread.
class generation_stream {
public:
  /// Engine side: the request was accepted with this many prompt tokens,
  /// or refused (nothing will follow).
  void accept(uint32_t prompt_tokens);
  void refuse(std::string message);
  /// Engine side: one step's event (the last one has finish != none or an error).
  void push(engine::sequence_event e);

  /// Reader side: waits for the verdict. nullopt = accepted (prompt tokens
  /// via prompt_tokens()), else the refusal message; timeout -> "timeout".
  std::optional<std::string> wait_accepted(std::chrono::milliseconds timeout);
  uint32_t prompt_tokens() const noexcept { return prompt_tokens_; }
  /// Reader side: the next event, or nullopt after `timeout`.
  std::optional<engine::sequence_event> next(std::chrono::milliseconds timeout);
  /// Reader side: the client is gone; the engine drops the sequence at its
  /// next step and frees its KV cache.
  void cancel() noexcept { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const noexcept { return cancelled_.load(std::memory_order_relaxed); }

private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<engine::sequence_event> events_;
  int verdict_ = 0; ///< 0 pending, 1 accepted, -1 refused
  std::string refusal_;
  uint32_t prompt_tokens_ = 0;
  std::atomic<bool> cancelled_{false};
};

/// A generation request addressed to an engine actor.
struct generation_job {
  uint64_t id = 0;
  engine::generation_request request;
  std::shared_ptr<generation_stream> stream = std::make_shared<generation_stream>();
};
using generation_job_ptr = std::shared_ptr<generation_job>;

/// An engine actor's counters.
struct engine_stats {
  std::string tier;
  uint64_t running = 0, waiting = 0;
  uint64_t requests = 0, refused = 0, cancelled = 0;
  uint64_t prompt_tokens = 0, cached_tokens = 0, generated_tokens = 0, steps = 0;
  double prefill_seconds = 0, decode_seconds = 0;
  engine::kv_pool_stats kv;                   ///< the tier's KV pages
  uint64_t budget_used = 0, budget_limit = 0; ///< the node's memory budget (all uses)
};

/// A tier's engine actor (one per tier with a model, detached).
using engine_actor = caf::typed_actor<
  /// A generation: its events go to the job's stream.
  caf::reacts_to<generate_atom, generation_job_ptr>,
  /// A text's embedding. Errors: invalid_argument (empty, too long).
  caf::replies_to<embed_atom, std::string>::with<std::vector<float>>,
  /// Frees up to that many bytes of cached KV pages -> the bytes freed.
  caf::replies_to<trim_atom, uint64_t>::with<uint64_t>,
  /// The tier's KV policy; a new one -> the one applied (invalid_argument).
  caf::replies_to<policy_atom>::with<engine::kv_policy>,
  caf::replies_to<policy_atom, engine::kv_policy>::with<engine::kv_policy>,
  caf::replies_to<proto::stats_atom>::with<engine_stats>,
  /// Internal: the next batched step.
  caf::reacts_to<step_atom>>;

/// Where an engine reports KV memory pressure (the memory pool's part
/// engines see; actors/memory.hpp's memory_actor extends it): it wants
/// that many bytes that other tiers hold.
using memory_pressure_sink =
  caf::typed_actor<caf::reacts_to<pressure_atom, uint64_t, engine_actor>>;

/// A tier's model, loaded once at start.
struct engine_tier {
  std::string name;
  std::shared_ptr<const engine::model> model;
  std::shared_ptr<const engine::tokenizer> tokenizer;
  engine::scheduler_config scheduler;
  uint32_t threads = 1; ///< forward-pass threads (this one included)
  /// The node's byte budget the KV pages are reserved from (nullptr: none).
  std::shared_ptr<core::memory_budget> budget;
  /// Where evicted KV pages are spilled (nullptr: dropped).
  std::shared_ptr<engine::kv_spill> spill;
  /// The memory pool actor to report KV memory pressure to (may be null).
  memory_pressure_sink memory;
};

/// Spawns a tier's engine actor (detached: its own thread).
engine_actor spawn_engine(caf::actor_system& sys, engine_tier tier);

} // namespace shoal::actors

// Local only: a generation job is a shared pointer the gateway's worker and
// the engine share in one process (it carries the stream callback); the
// statistics answer the gateway. Never serialized.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::actors::generation_job_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::actors::engine_stats)
