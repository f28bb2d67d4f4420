#pragma once
/// @file The node's actors and how to spawn them.
///
/// Message interfaces (dynamically typed CAF 0.17 actors; types in proto/):
///   router    (route_atom, route_query)        -> route_decision
///             (learn_atom, learn_update)       -> void
///             (stats_atom)                     -> router_stats
///             (subscribe_atom, actor sona)     -> void  (decisions go to sona)
///   witness   (record_atom, witness_entry)     -> void  (batched commit)
///             (feedback_atom, feedback)        -> void  (joined to its record)
///             (lookup_atom, uint64 request_id) -> witness_entry | not_found
///             (stats_atom)                     -> witness_stats
///   sona      (record_atom, route_decision)    -> void  (trajectory ring)
///             (feedback_atom, feedback)        -> learn_update | not_found | conflict
///   telemetry (observe_atom, ...)              -> void
///             (stats_atom)                     -> telemetry_snapshot
/// All actors flush their state when they receive an exit message
/// (`anon_send_exit(hdl, exit_reason::user_shutdown)`): the router writes
/// changed patterns and saves its index, the witness commits pending records.
/// Router and witness are detached (own thread), as they write LMDB.

#include "actors/pattern_bank.hpp"
#include "store/environment.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include <memory>

namespace shoal::actors {

/// Witness configuration (config keys `witness.*`).
struct witness_config {
  /// Most records per write transaction. Default: 100. Range [1, 100000].
  uint32_t batch_max = 100;
  /// Longest a record waits before its transaction, ms. Default: 1000. Range [1, 60000].
  uint32_t flush_interval_ms = 1000;
};

/// SONA instant-loop configuration (config keys `sona.*`).
struct sona_config {
  /// Trajectories kept in memory for joining feedback; older ones are looked
  /// up in the witness log. Default: 65536. Range [16, 16777216].
  uint32_t trajectory_capacity = 65536;
};

/// Spawns the telemetry actor for `n_tiers` tiers.
caf::actor spawn_telemetry(caf::actor_system& sys, size_t n_tiers);

/// Spawns the witness actor (detached) writing to `env`.
caf::actor spawn_witness(caf::actor_system& sys, witness_config cfg,
                         std::shared_ptr<store::environment> env);

/// Spawns the router actor (detached) owning `bank`.
caf::actor spawn_router(caf::actor_system& sys, std::shared_ptr<pattern_bank> bank,
                        caf::actor witness, caf::actor telemetry);

/// Spawns the SONA instant-loop actor.
caf::actor spawn_sona(caf::actor_system& sys, sona_config cfg, std::vector<double> tier_costs,
                      caf::actor router, caf::actor witness, caf::actor telemetry);

} // namespace shoal::actors
