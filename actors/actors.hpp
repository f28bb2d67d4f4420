#pragma once
/// @file The node's actors and how to spawn them.
///
/// Every actor the node wires is a typed actor: router_actor, sona_actor,
/// witness_actor and telemetry_actor below, engine_actor and
/// memory_actor (actors/engine.hpp, actors/memory.hpp); the part of the
/// router the federation bridge uses is proto/interfaces.hpp's
/// router_federation, the bridge as the router sees it proto::bridge_actor
/// (federation/bridge.hpp's bridge_handle adds its statistics).
/// Helpers each actor spawns for itself (the router's pattern writer and
/// consolidation planner, SONA's trainer) and the session reaper are
/// dynamically typed and private to their owner.
/// All actors flush their state when they receive an exit message
/// (`anon_send_exit(hdl, exit_reason::user_shutdown)`): the router writes
/// changed patterns and saves its index, the witness commits pending records.
/// Router and witness are detached (own thread), as they write LMDB.

#include "proto/interfaces.hpp"
#include "router/pattern_bank.hpp"
#include "learn/router_v2.hpp"
#include "learn/trajectory_ring.hpp"
#include "store/environment.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <memory>
#include <optional>
#include <string>

namespace shoal::actors {

/// Witness configuration (config keys `witness.*`, documented in
/// node/config.cpp).
struct witness_config {
  uint32_t batch_max = 100;                 ///< config witness.batch_max
  uint32_t flush_interval_ms = 1000;        ///< config witness.flush_interval_ms
  uint32_t archive_after_s = 2592000;       ///< config witness.archive_after_s (30 days)
  uint32_t archive_segment_records = 20000; ///< config witness.archive_segment_records
};

/// SONA configuration (config keys `sona.*`, documented in node/config.cpp).
struct sona_config {
  uint32_t trajectory_capacity = 65536;    ///< config sona.trajectory_capacity
  bool v2 = true;                          ///< config sona.v2
  double v2_threshold = 0;                 ///< config sona.v2_threshold
  uint32_t v2_pending = 1024;              ///< config sona.v2_pending
  uint32_t v2_sessions = 16384;            ///< config sona.v2_sessions
  double latency_budget_max_ms = 10000;    ///< config sona.latency_budget_max_ms
  bool sampling = true;                    ///< config sona.sampling
  double sampling_explore = 0.05;          ///< config sona.sampling_explore
  double instant_lr = 0.02;                ///< config sona.instant_lr
  uint32_t background_interval_s = 3600;   ///< config sona.background_interval_s
  uint32_t background_trajectories = 1000; ///< config sona.background_trajectories
  uint32_t train_window = 4000;            ///< config sona.train_window
  double train_lr = 0.01;                  ///< config sona.train_lr
  uint32_t train_epochs = 1;               ///< config sona.train_epochs
  bool ewc = true;                         ///< config sona.ewc
  double ewc_lambda = 10;                  ///< config sona.ewc_lambda
  uint32_t deep_interval_s = 604800;       ///< config sona.deep_interval_s (weekly)
};

/// What `shoal learn status` shows (sona: status_atom).
struct learn_status {
  bool v2 = false;            ///< router v2 enabled
  bool v2_ready = false;      ///< a trained (or restored) model routes
  uint64_t model_version = 0; ///< background runs that produced the model (incl. restored)
  uint64_t pending = 0;       ///< v2 decisions waiting for feedback
  uint64_t completed = 0;     ///< trajectories with feedback held for training
  uint64_t since_background = 0;
  uint64_t instant_steps = 0;
  double instant_loss = 0;       ///< mean loss of the last 100 instant steps
  uint64_t dropped = 0;          ///< decisions the full ring refused
  uint64_t scoped_adapters = 0;  ///< scopes (pattern-bank categories) with their own adapter
  uint64_t adapter_refusals = 0; ///< scoped adapters the memory budget refused
  uint64_t background_runs = 0;
  int64_t background_last_ms = 0;
  double background_loss = 0, background_ms = 0;
  uint64_t task_boundaries = 0; ///< EWC++ task boundaries detected
  uint64_t deep_runs = 0;
  int64_t deep_last_ms = 0;
  std::string deep_summary; ///< what the last deep run did
  std::string last_error;   ///< the last loop failure, "" if none
};

/// witness -> itself: archive the next segment of a run.
using archive_step_atom = caf::atom_constant<caf::atom("arcstep")>;

/// The witness actor: the audit log of every routed request in LMDB.
using witness_actor = caf::typed_actor<
  /// A routed request's record: committed in the next batch.
  caf::reacts_to<proto::record_atom, proto::witness_entry>,
  /// Feedback joins its record (logged and dropped when the id is unknown).
  caf::reacts_to<proto::feedback_atom, proto::feedback>,
  /// The engine's usage of a routed answer joins its record.
  caf::reacts_to<proto::usage_atom, uint64_t, uint32_t, uint32_t>,
  /// A record by request id. Errors: not_found.
  caf::replies_to<proto::lookup_atom, uint64_t>::with<proto::witness_entry>,
  /// Moves records older than witness.archive_after_s to archive segments.
  /// Errors: conflict while a run goes on, storage_failure.
  caf::replies_to<proto::archive_atom>::with<proto::witness_archive_result>,
  caf::replies_to<proto::stats_atom>::with<proto::witness_stats>,
  /// Timers and self-messages: the batch commit, the next archive segment.
  caf::reacts_to<proto::tick_atom>, caf::reacts_to<archive_step_atom>>;

/// The telemetry actor: counters and the route-latency histogram.
using telemetry_actor = caf::typed_actor<
  /// A routed request: its tier, total latency (ns), whether it made a pattern.
  caf::reacts_to<proto::observe_atom, uint32_t, uint64_t, bool>,
  /// Accepted feedback: tier, quality, reward.
  caf::reacts_to<proto::observe_atom, proto::feedback_atom, uint32_t, double, double>,
  caf::replies_to<proto::stats_atom>::with<proto::telemetry_snapshot>>;

/// Spawns the telemetry actor for `n_tiers` tiers.
telemetry_actor spawn_telemetry(caf::actor_system& sys, size_t n_tiers);

/// Spawns the witness actor (detached) writing to `env`.
witness_actor spawn_witness(caf::actor_system& sys, witness_config cfg,
                            std::shared_ptr<store::environment> env);

/// router v2 messages (in-process only).
using v2_atom = caf::atom_constant<caf::atom("v2")>;
using deep_atom = caf::atom_constant<caf::atom("deep")>;
using status_atom = caf::atom_constant<caf::atom("status")>;
using trigger_atom = caf::atom_constant<caf::atom("trigger")>;
using router_v2_ptr = std::shared_ptr<const learn::router_v2_model>;
using trajectory_ring_ptr = std::shared_ptr<learn::trajectory_ring>;
using scoped_adapters_ptr = std::shared_ptr<const learn::scoped_adapters>;

/// What SONA hands the router (v2_atom): router v2's live model and what it
/// routes with. The router swaps it in between two requests.
struct router_v2_handoff {
  trajectory_ring_ptr ring; ///< decisions go here (null: router v1 alone)
  router_v2_ptr model;
  scoped_adapters_ptr adapters;         ///< per pattern-bank category
  bool ready = false;                   ///< trained: v2 decides (else v1's choice stands)
  double threshold = 0;                 ///< confidence below which v1's choice stands
  uint32_t sessions = 0;                ///< sessions whose FastGRNN state is kept
  double latency_budget_max_ms = 10000; ///< sona_config::latency_budget_max_ms
  /// ε of the sampling heads (sona_config::sampling_explore); negative:
  /// the router chooses no sampling.
  double sampling_explore = -1;
  /// The node's memory budget: router v2's memory-pressure input is
  /// used / limit (null: pressure 0).
  std::shared_ptr<const core::memory_budget> memory;
};

/// SONA's timers: drain the trajectory ring, start a background run, a deep run.
using drain_atom = caf::atom_constant<caf::atom("drain")>;
using bg_tick_atom = caf::atom_constant<caf::atom("bgtick")>;
using deep_tick_atom = caf::atom_constant<caf::atom("deeptick")>;

/// The SONA actor: the instant, background and deep learning loops.
using sona_actor = caf::typed_actor<
  /// A routed decision (from the router): remembered for its feedback.
  caf::reacts_to<proto::record_atom, proto::route_decision>,
  /// Feedback -> the update applied. Errors: invalid_argument (quality),
  /// not_found (unknown request id), conflict (rated already).
  caf::replies_to<proto::feedback_atom, proto::feedback>::with<proto::learn_update>,
  /// The engine's usage of a routed answer (router v2's context target).
  caf::reacts_to<proto::usage_atom, uint64_t, uint32_t, uint32_t>,
  /// Trajectories held in the ring.
  caf::replies_to<proto::stats_atom>::with<uint64_t>,
  caf::replies_to<status_atom>::with<learn_status>,
  /// Runs a loop now ("background" or "deep") -> the status after it.
  /// Errors: invalid_argument (unknown loop, nothing to train on, v2 off).
  caf::replies_to<trigger_atom, std::string>::with<learn_status>, caf::reacts_to<drain_atom>,
  caf::reacts_to<bg_tick_atom>, caf::reacts_to<deep_tick_atom>>;

/// router -> itself: hand the outbox to the federation bridge; move merge
/// survivors in the index (a slice at a time).
using fed_flush_atom = caf::atom_constant<caf::atom("fedflush")>;
using reindex_atom = caf::atom_constant<caf::atom("reindex")>;

/// The router actor: the pattern bank (router v1), router v2's decisions,
/// the federation's merges. Its part the bridge sees is proto's
/// router_federation.
using router_actor = proto::router_federation::extend<
  /// A query -> the decision (errors: invalid_argument naming the field).
  caf::replies_to<proto::route_atom, proto::route_query>::with<proto::route_decision>,
  /// Feedback's update of a pattern's statistics (from SONA).
  caf::reacts_to<proto::learn_atom, proto::learn_update>,
  /// Where routed decisions go (SONA).
  caf::reacts_to<proto::subscribe_atom, sona_actor>,
  /// A deep run: consolidation planned off the router's thread -> summary.
  /// Errors: conflict while one runs.
  caf::replies_to<deep_atom>::with<std::string>,
  /// SONA swaps in router v2's model.
  caf::reacts_to<v2_atom, router_v2_handoff>,
  /// Timers and self-messages: flush and checkpoint, publish, reindex.
  caf::reacts_to<proto::tick_atom>, caf::reacts_to<fed_flush_atom>, caf::reacts_to<reindex_atom>>;

/// Spawns the router actor (detached) owning `bank`.
router_actor spawn_router(caf::actor_system& sys, std::shared_ptr<router::pattern_bank> bank,
                          witness_actor witness, telemetry_actor telemetry);

/// Spawns the SONA actor (the three learning loops). With cfg.v2 it hands
/// the router a trajectory ring and router v2's model (`initial`, e.g. the
/// checkpoint restored from the `policies` table; without one a new
/// untrained model over `embed_dim`-dimensional embeddings, config
/// embedder.dim), trains it in the background and checkpoints it to `env`
/// (may be null).
///
/// Memory (use `adapter` of `budget`, when given): the caller reserves
/// sona_fixed_bytes() before spawning; each scoped adapter reserves its
/// factors when first needed, and a refused reservation leaves that scope on
/// the shared adapter (counted in learn_status::adapter_refusals).
sona_actor spawn_sona(caf::actor_system& sys, sona_config cfg, uint32_t embed_dim,
                      std::vector<double> tier_costs, router_actor router, witness_actor witness,
                      telemetry_actor telemetry, std::shared_ptr<store::environment> env = nullptr,
                      std::optional<learn::router_v2_model> initial = std::nullopt,
                      std::shared_ptr<core::memory_budget> budget = nullptr);

/// Bytes router v2's learning holds whatever the traffic, to reserve from the
/// node's budget (use adapter) before spawn_sona: three copies of the model
/// (SONA's, the router's, the trainer's) and full trajectory buffers (the
/// ring, the decisions waiting for feedback, the training window).
uint64_t sona_fixed_bytes(const sona_config& cfg, const learn::router_v2_model& model);

/// Bytes one scoped adapter reserves.
uint64_t scoped_adapter_bytes(const learn::router_v2_config& cfg);

/// Router v2's checkpoint as the `policies` table stores it: a Cap'n Proto
/// proto::router_v2_checkpoint of the model's config and parameters.
std::string encode_checkpoint(const learn::router_v2_model& m);

/// Restores router v2 from the `policies` table ("router/v2"); std::nullopt
/// when none is stored. Errors: corrupt_data (the checkpoint does not
/// decode, or its shape differs from `cfg`), storage_failure.
core::result<std::optional<learn::router_v2_model>>
load_router_v2(const store::environment& env, const learn::router_v2_config& cfg);

} // namespace shoal::actors

// Local only: shared pointers to models and rings that never leave the node.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::actors::router_v2_handoff)

// Local only: SONA's status for the gateway, and shared pointers to the
// model, the trajectory ring and the scoped adapters handed between SONA and
// the router of one process; never serialized.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::actors::learn_status)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::actors::router_v2_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::actors::trajectory_ring_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::actors::scoped_adapters_ptr)
