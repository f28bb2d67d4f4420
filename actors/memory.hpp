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
/// window, old-tier types) in the store's policies table ("kv/<tier>"), so a
/// change — by an operator or the learning loops — survives restarts.
///
/// Its protocol is memory_actor below; the engines' is actors/engine.hpp's
/// engine_actor.

#include "actors/engine.hpp"
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

/// The pool's counters.
struct memory_stats {
  uint64_t limit_bytes = 0, used_bytes = 0;
  uint64_t kv_bytes = 0, adapter_bytes = 0, router_bytes = 0; ///< used, by use
  uint64_t pressure_events = 0;                               ///< pressure reports received
  uint64_t trims = 0;                                         ///< trim requests sent to engines
  uint64_t trimmed_bytes = 0;                                 ///< bytes they freed
};

/// The memory pool actor: one byte budget across the tiers' KV pages,
/// adapters and the router (the tiers register their engines).
using memory_actor = memory_pressure_sink::extend<
  caf::reacts_to<register_atom, std::string, engine_actor>,
  /// A tier's KV policy. Errors: not_found (no tier of that name with a model).
  caf::replies_to<policy_atom, std::string>::with<engine::kv_policy>,
  /// Applies and stores a tier's KV policy (the policies table) -> the one applied.
  caf::replies_to<policy_atom, std::string, engine::kv_policy>::with<engine::kv_policy>,
  caf::replies_to<proto::stats_atom>::with<memory_stats>>;

/// Spawns the memory pool actor over `budget` (detached: it writes the
/// policies to `env`, which may be null: then they are not kept).
memory_actor spawn_memory_pool(caf::actor_system& sys, std::shared_ptr<core::memory_budget> budget,
                               std::shared_ptr<store::environment> env);

/// The KV policy stored for `tier`, if any (errors: storage, corrupt record).
core::result<std::optional<engine::kv_policy>> load_kv_policy(store::environment& env,
                                                              const std::string& tier);

} // namespace shoal::actors

// Local only: the memory pool answers the gateway and the engines of this
// process; neither type is ever serialized (no inspect overload needed).
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::actors::memory_stats)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::engine::kv_policy)
