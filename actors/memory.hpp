#pragma once
/// @file The memory pool actor: the node's one byte budget (engine::
/// memory_budget, shared lock-free by its users: the KV pages of every
/// tier's engine, LoRA adapters, router weights) and the policy that moves
/// memory between them. A tier whose engine cannot get KV pages — after
/// evicting its own cached pages — reports pressure; the pool then asks the
/// other tiers to trim their cached pages (spilled if a spill store is set;
/// pages of sessions last), the tiers holding the most cached bytes first,
/// until the bytes asked for are freed. Pages of running requests are never
/// evicted: only cached (released) pages can be trimmed.
///
/// The pool also keeps each tier's KV policy (engine::kv_policy: recent
/// window, old-tier types) in the store's meta table ("kv_policy/<tier>"),
/// so a change — by an operator or the learning loops — survives restarts.
///
/// Messages:
///   (register_atom, std::string tier, caf::actor engine) -> void  an engine joins
///   (policy_atom, std::string tier)            -> engine::kv_policy  the policy in force
///   (policy_atom, std::string tier, engine::kv_policy) -> engine::kv_policy  change it
///       (errors: unknown tier; the engine's refusal, e.g. budget; storage)
///   (pressure_atom, uint64_t bytes, caf::actor from) -> void  `from` needs bytes
///   (stats_atom)                               -> memory_stats
/// Engines answer (trim_atom, uint64_t bytes) -> uint64_t (bytes freed) and
/// (stats_atom) -> engine_stats (actors/engine.hpp).

#include "engine/kv_cache.hpp"
#include "proto/messages.hpp"
#include "store/environment.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace shoal::actors {

/// The memory pool actor's protocol (dynamically typed for now):
///   (register_atom, std::string tier, actor engine)    -> void
///   (policy_atom, std::string tier)                     -> engine::kv_policy | not_found
///   (policy_atom, std::string tier, engine::kv_policy)  -> engine::kv_policy (applied, stored)
///   (pressure_atom, uint64 bytes, actor engine)         -> void (asks other tiers to trim)
///   (stats_atom)                                        -> memory_stats
using register_atom = caf::atom_constant<caf::atom("register")>;
using policy_atom = caf::atom_constant<caf::atom("policy")>;
using pressure_atom = caf::atom_constant<caf::atom("pressure")>;
using trim_atom = caf::atom_constant<caf::atom("trim")>;

/// The pool's counters.
struct memory_stats {
  uint64_t limit_bytes = 0, used_bytes = 0;
  uint64_t kv_bytes = 0, adapter_bytes = 0, router_bytes = 0; ///< used, by use
  uint64_t pressure_events = 0;                               ///< pressure reports received
  uint64_t trims = 0;                                         ///< trim requests sent to engines
  uint64_t trimmed_bytes = 0;                                 ///< bytes they freed
};

/// Spawns the memory pool actor over `budget` (detached: it writes the
/// policies to `env`, which may be null: then they are not kept).
caf::actor spawn_memory_pool(caf::actor_system& sys, std::shared_ptr<core::memory_budget> budget,
                             std::shared_ptr<store::environment> env);

/// The KV policy stored for `tier`, if any (errors: storage, corrupt record).
caf::expected<std::optional<engine::kv_policy>> load_kv_policy(store::environment& env,
                                                               const std::string& tier);

} // namespace shoal::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::actors::memory_stats)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::engine::kv_policy)
