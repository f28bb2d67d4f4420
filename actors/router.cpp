// Router actor: owns the pattern bank, answers routing queries, applies
// learning updates, persists changes on a timer and at exit.
#include "actors/actors.hpp"
#include "actors/v1_view.hpp"
#include "core/clock.hpp"
#include "proto/interfaces.hpp"
#include "proto/error.hpp"
#include "proto/messages.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <list>
#include <random>
#include <unordered_map>

// Batches of changed patterns only travel between the router and its writer
// in this process; they are never serialized.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::router::pattern_batch)
// Consolidation runs travel between the router and its planner likewise.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::router::consolidation_run_ptr)

namespace shoal::actors {

namespace {

/// Longest a consolidation plan may take on its thread; past it the run is
/// reported failed and another may start (the late plan is dropped).
constexpr auto deep_plan_timeout = std::chrono::seconds(3600);

using namespace proto;
using proto::digest_atom;
using proto::federate_atom;
using proto::link_atom;
using proto::merge_atom;
using proto::publish_atom;
using proto::republish_atom;

/// The pattern writer: commits the router's batches of changed patterns to
/// LMDB on its own thread, in the order sent, so a commit (an fsync) never
/// stalls routing. A failed batch is kept and retried with the next one.
/// (close_atom) commits what is queued and quits.
struct pattern_writer_state {
  std::shared_ptr<store::environment> env;
  router::pattern_batch retry; // batches whose commit failed, oldest first
  static inline const char* name = "pattern_writer";

  void commit(router::pattern_batch&& b) {
    if (!retry.records.empty() || retry.checkpoint || retry.stream_seq) {
      retry.records.insert(retry.records.end(), std::make_move_iterator(b.records.begin()),
                           std::make_move_iterator(b.records.end()));
      if (b.checkpoint)
        retry.checkpoint = b.checkpoint;
      if (b.stream_seq)
        retry.stream_seq = b.stream_seq;
      b = std::move(retry);
      retry = {};
    }
    if (auto err = router::pattern_bank::write_batch(*env, b)) {
      spdlog::error("router: writing {} patterns failed (retried with the next batch): {}",
                    b.records.size(), err.message);
      retry = std::move(b);
    }
  }
};

caf::behavior pattern_writer(caf::stateful_actor<pattern_writer_state>* self,
                             std::shared_ptr<store::environment> env) {
  self->state.env = std::move(env);
  return {
    [self](flush_atom, router::pattern_batch& b) { self->state.commit(std::move(b)); },
    [self](close_atom) {
      self->state.commit({});
      self->quit();
    },
  };
}

/// router -> itself: move the next slice of merge survivors in the index
/// after a deep run (pattern_bank::reindex_moved), between other messages.

/// Merge survivors moved per reindex_atom (~0.15 ms each at 10,000 × 384,
/// so routing waits ~10 ms at most per slice).
constexpr size_t reindex_slice = 64;

/// The deep loop's planner: computes one consolidation plan on its own
/// thread (spawned detached per run) from the router's snapshot, which only
/// it touches until it hands the plan back, then quits.
caf::behavior consolidation_planner(caf::event_based_actor* self) {
  return {
    [self](router::consolidation_run_ptr& plan) -> router::consolidation_run_ptr {
      router::pattern_bank::plan_consolidation(*plan);
      self->quit();
      return std::move(plan);
    },
  };
}

struct router_state {
  std::shared_ptr<router::pattern_bank> bank;
  caf::actor writer; // null for an in-memory bank
  witness_actor witness;
  telemetry_actor telemetry;
  sona_actor sona;
  uint64_t last_request_id = 0;
  uint64_t n_routed = 0;
  uint64_t n_learned = 0;
  int64_t last_checkpoint_ms = 0;
  // Federation (see federation/bridge.hpp): the bridge, whether it can
  // publish, and the batching of this node's changed contributions.
  proto::bridge_actor bridge;
  bool link_up = false;
  bool publish_scheduled = false;
  int64_t first_change_us = 0; // UTC µs of the oldest change not yet handed over
  uint32_t publish_max = 2000;
  uint32_t publish_delay_ms = 2;
  // Router v2 (set by the SONA actor): the model routing now, the ring its
  // decisions go to, whether the model was trained, the fallback threshold.
  router_v2_ptr v2;
  scoped_adapters_ptr adapters;
  trajectory_ring_ptr ring;
  bool v2_ready = false;
  double v2_threshold = 0;
  learn::router_v2_features v2_features;
  learn::router_v2_trace v2_trace;
  std::vector<float> v2_h0;
  // FastGRNN state per session (the cell runs over a session's turns), most
  // recently used first; beyond v2_sessions the least recent is forgotten
  // (its next turn starts from h = 0).
  uint32_t v2_sessions = 0;
  std::list<std::string> session_lru;
  std::unordered_map<std::string, std::pair<std::vector<float>, std::list<std::string>::iterator>>
    session_h;
  std::vector<double> costs;
  std::mt19937_64 v2_rng{0x5eed};
  double latency_budget_max_ms = 10000;
  double sampling_explore = -1; // ε of the sampling heads; negative: they choose nothing
  std::shared_ptr<const core::memory_budget> memory; // pressure = used / limit
  bool deep_running = false;                         // a consolidation plan is with the planner
  static inline const char* name = "router";

  /// Router v2's decision over v1's route `r` (changes r.tier and r.confidence
  /// when v2 decides), and its trajectory into the ring.
  void route_v2(router::route_result& r, const route_query& q, route_decision& d) {
    const uint64_t request_id = d.request_id;
    const std::string& session_id = q.session_id;
    const learn::router_v1_view v1 = v1_view(r);
    v2_features.assign(v1);
    v2_h0.assign(v2->hidden(), 0.0f); // the session's state before this turn
    auto sess = session_id.empty() ? session_h.end() : session_h.find(session_id);
    if (sess != session_h.end() && sess->second.first.size() == v2_h0.size())
      v2_h0 = sess->second.first;
    const float budget = learn::latency_budget_input(q.latency_budget_ms, latency_budget_max_ms);
    float pressure = 0;
    if (memory && memory->limit() > 0)
      pressure = static_cast<float>(
        std::min(1.0, static_cast<double>(memory->used()) / static_cast<double>(memory->limit())));
    auto in =
      v2_features.input(q.embedding, static_cast<float>(q.text_bytes) / 4.0f, budget, pressure);
    // The scope: the pattern's category from the last deep run.
    const uint32_t scope = bank->category(r.pattern_id);
    if (scope != router::pattern_bank::no_category && adapters)
      if (auto it = adapters->find(scope); it != adapters->end())
        in.scope = &it->second;
    v2->forward(in, v2_h0, v2_trace, v2_ready); // the context head once trained
    auto c = learn::router_v2_choose(v1, v2_trace, costs, v2_ready, v2_threshold, v2_rng);
    r.tier = c.tier;
    r.confidence = c.confidence;
    r.expected_reward = v2_trace.q[c.tier] - costs[c.tier];
    // Sampling: the client's values, else the router's choice from the grid
    // (sampling_explore < 0: no choice, the engine's defaults). A client's
    // value off the grid is no arm of the bandit.
    learn::router_v2_sampling s; // drawn only when the router chooses sampling at all
    if (sampling_explore >= 0)
      s = learn::router_v2_sample(v2_trace, v2_ready, static_cast<float>(sampling_explore), v2_rng);
    float prob = c.behaviour_prob;
    // One parameter: what is served, and the grid index recorded for it.
    auto serve = [&](double client, std::span<const double> grid, uint8_t chosen, float chosen_prob,
                     double& served) -> uint8_t {
      if (client >= 0) {
        served = client;
        return learn::sampling_index(grid, client);
      }
      if (sampling_explore < 0)
        return learn::no_choice;
      served = grid[chosen];
      prob *= chosen_prob;
      return chosen;
    };
    const uint8_t rec_t = serve(q.temperature, learn::sampling_temperatures, s.temperature,
                                s.prob_temperature, d.temperature);
    const uint8_t rec_p = serve(q.top_p, learn::sampling_top_ps, s.top_p, s.prob_top_p, d.top_p);
    d.context_tokens =
      v2_ready ? learn::context_buckets[learn::router_v2_model::context_choice(v2_trace)] : 0;
    ring->push(request_id, in, v2_h0, c.tier, prob,
               scope == router::pattern_bank::no_category ? learn::no_scope : scope, rec_t, rec_p);
    if (session_id.empty() || v2_sessions == 0)
      return;
    if (sess == session_h.end()) {
      session_lru.push_front(session_id);
      sess =
        session_h.emplace(session_id, std::pair{std::vector<float>{}, session_lru.begin()}).first;
      if (session_h.size() > v2_sessions) {
        session_h.erase(session_lru.back());
        session_lru.pop_back();
      }
    } else {
      session_lru.splice(session_lru.begin(), session_lru, sess->second.second);
    }
    sess->second.first = v2_trace.h;
  }

  /// Schedules handing the outbox to the bridge, after publish_delay_ms so
  /// changes in a burst travel in one batch.
  void schedule_publish(router_actor::stateful_pointer<router_state> self) {
    if (!bridge || bank->deltas_pending() == 0)
      return;
    if (first_change_us == 0)
      first_change_us = core::utc_now_us();
    if (!link_up || publish_scheduled)
      return;
    publish_scheduled = true;
    if (publish_delay_ms == 0)
      self->send(self, fed_flush_atom::value);
    else
      self->delayed_send(self, std::chrono::milliseconds(publish_delay_ms), fed_flush_atom::value);
  }

  /// Time-ordered node-unique id: UTC ms in the high 44 bits, a counter in
  /// the low 20 (a "snowflake"); strictly increasing even if the clock steps back.
  uint64_t next_request_id(int64_t now_ms) {
    uint64_t id = static_cast<uint64_t>(now_ms) << 20;
    last_request_id = std::max(id, last_request_id + 1);
    return last_request_id;
  }

  /// Hands the changed patterns (and, when due, an index checkpoint) to the
  /// writer; the router only copies statistics here.
  /// Hands changed patterns to the writer; with a checkpoint (forced, or
  /// every checkpoint_interval_s) the index file too. `finish_moves`: move
  /// every queued merge survivor first (at exit; while routing they move in
  /// slices, and the slice that empties the queue checkpoints again).
  void persist(bool force_checkpoint, bool finish_moves = false) {
    if (!writer)
      return;
    auto now = core::utc_now_ms();
    bool due = force_checkpoint
               || now - last_checkpoint_ms >= int64_t{1000} * bank->config().checkpoint_interval_s;
    if (due) {
      auto b = bank->take_checkpoint(now, finish_moves);
      if (!b) {
        spdlog::error("router: index checkpoint failed: {}", b.err().message);
      } else {
        last_checkpoint_ms = now;
        caf::anon_send(writer, flush_atom::value, std::move(*b));
        return;
      }
    }
    auto b = bank->take_dirty();
    if (!b.records.empty() || b.stream_seq)
      caf::anon_send(writer, flush_atom::value, std::move(b));
  }
};

router_actor::behavior_type router_behavior(router_actor::stateful_pointer<router_state> self,
                                            std::shared_ptr<router::pattern_bank> bank,
                                            witness_actor witness, telemetry_actor telemetry) {
  auto& st = self->state;
  st.bank = std::move(bank);
  st.witness = std::move(witness);
  st.telemetry = std::move(telemetry);
  st.last_checkpoint_ms = core::utc_now_ms();
  for (const auto& t : st.bank->config().tiers)
    st.costs.push_back(t.cost);
  auto flush_every = std::chrono::milliseconds(st.bank->config().flush_interval_ms);
  self->delayed_send(self, flush_every, tick_atom::value);
  if (st.bank->environment())
    st.writer = self->spawn<caf::detached>(pattern_writer, st.bank->environment());
  self->set_exit_handler([self](caf::exit_msg& msg) {
    auto& st = self->state;
    // Hand the last changes to the bridge (it exits after the router).
    while (st.bridge && st.link_up && st.bank->deltas_pending() > 0)
      self->send(st.bridge, publish_atom::value, st.bank->take_deltas(st.publish_max),
                 st.first_change_us);
    st.persist(true, true);
    if (st.writer)
      caf::anon_send(st.writer, close_atom::value); // after the last batch
    st.writer = caf::actor{};
    self->quit(msg.reason);
  });
  return {
    [self](route_atom, route_query& q) -> caf::result<route_decision> {
      auto& st = self->state;
      if (q.embedding.size() != st.bank->dim())
        return make_error(errc::invalid_argument,
                          "embedding has dimension " + std::to_string(q.embedding.size())
                            + ", expected " + std::to_string(st.bank->dim()));
      if (auto why = check_latency_budget(q.latency_budget_ms); !why.empty())
        return make_error(errc::invalid_argument, why);
      auto now_ms = core::utc_now_ms();
      auto r = st.bank->route(q.embedding, now_ms);
      route_decision d;
      d.request_id = st.next_request_id(now_ms);
      if (st.v2)
        st.route_v2(r, q, d);
      else {
        d.temperature = q.temperature;
        d.top_p = q.top_p;
      }
      d.time_ms = now_ms;
      d.tier = r.tier;
      d.tier_name = st.bank->config().tiers[r.tier].name;
      d.confidence = r.confidence;
      d.expected_reward = r.expected_reward;
      d.pattern_id = r.pattern_id;
      d.new_pattern = r.new_pattern;
      d.neighbors = std::move(r.neighbors);
      d.latency = {q.embed_ns, r.search_ns, r.decide_ns,
                   static_cast<uint64_t>(std::max<int64_t>(0, core::steady_now_ns() - q.start_ns))};
      ++st.n_routed;
      caf::anon_send(st.telemetry, observe_atom::value, d.tier, d.latency.total, d.new_pattern);
      if (st.sona)
        caf::anon_send(st.sona, record_atom::value, d);
      witness_entry w;
      w.decision = d;
      w.embedding = std::move(q.embedding);
      w.session_id = std::move(q.session_id);
      w.user = std::move(q.user);
      w.text_bytes = q.text_bytes;
      w.latency_budget_ms = q.latency_budget_ms;
      caf::anon_send(st.witness, record_atom::value, std::move(w));
      st.schedule_publish(self);
      if (st.bank->pending() == 0)
        return d;
      // Answer first, then index the new pattern (an HNSW insertion costs
      // several searches); later queries in the mailbox wait for it.
      auto rp = self->make_response_promise<route_decision>();
      rp.deliver(std::move(d));
      if (auto err = st.bank->index_pending())
        spdlog::error("router: indexing a new pattern failed: {}", err.message);
      return rp;
    },
    [self](learn_atom, const learn_update& u) {
      auto& st = self->state;
      if (auto err = st.bank->learn(u.pattern_id, u.tier, u.quality, core::utc_now_ms())) {
        spdlog::warn("router: learn update rejected: {}", err.message);
      } else {
        ++st.n_learned;
        st.schedule_publish(self);
      }
    },
    [self](federate_atom, proto::bridge_actor bridge, uint32_t max, uint32_t delay_ms) {
      auto& st = self->state;
      st.bridge = std::move(bridge);
      st.publish_max = max;
      st.publish_delay_ms = delay_ms;
      st.bank->track_deltas(true);
      // A node that never merged from the stream has never published either.
      if (st.bank->stream_seq() == 0)
        st.bank->republish_all();
    },
    [self](link_atom, bool up) {
      auto& st = self->state;
      st.link_up = up;
      st.schedule_publish(self);
    },
    [self](fed_flush_atom) {
      auto& st = self->state;
      st.publish_scheduled = false;
      if (!st.bridge || !st.link_up)
        return;
      auto d = st.bank->take_deltas(st.publish_max);
      if (!d.empty())
        self->send(st.bridge, publish_atom::value, std::move(d), st.first_change_us);
      // Changes left for the next batch may be as old as this one's oldest:
      // keep its time (an upper bound of their lag) until the outbox empties.
      if (st.bank->deltas_pending() == 0)
        st.first_change_us = 0;
      if (st.bank->deltas_pending() > 0) {
        st.publish_scheduled = true;
        self->send(self, fed_flush_atom::value);
      }
    },
    [self](merge_atom, proto::delta_batch& b,
           uint64_t stream_seq) -> caf::result<proto::merge_stats> {
      auto& st = self->state;
      auto r = st.bank->merge(b.node, b.deltas, core::utc_now_ms());
      st.bank->set_stream_seq(stream_seq);
      if (st.bank->pending() > 0)
        if (auto err = st.bank->index_pending())
          spdlog::error("router: indexing a merged pattern failed: {}", err.message);
      if (!r)
        return make_error(std::move(r).err());
      return *r;
    },
    [self](republish_atom) {
      auto& st = self->state;
      st.bank->republish_all();
      st.schedule_publish(self);
    },
    [self](digest_atom) {
      auto& st = self->state;
      return proto::router_digest{st.bank->size(), st.bank->stream_seq(), st.bank->orphans(),
                                  st.bank->summarize()};
    },
    [self](stats_atom) {
      auto& st = self->state;
      return router_stats{st.bank->size(), st.n_routed, st.n_learned,
                          st.bank->rebuilt_index() ? 1u : 0u};
    },
    [self](subscribe_atom, sona_actor sona) { self->state.sona = std::move(sona); },
    [self](deep_atom) -> caf::result<std::string> {
      // The deep loop: snapshot the bank here, plan on a detached planner
      // while this actor keeps routing, apply the plan here, then write the
      // bank with a fresh index checkpoint (removed patterns leave LMDB and
      // the index file). One run at a time: a second request meanwhile is
      // refused (errc::conflict), it does not wait.
      auto& st = self->state;
      if (st.deep_running)
        return make_error(errc::conflict, "a deep run (consolidation) is in progress");
      auto plan =
        st.bank->prepare_consolidation(router::consolidation_config{}, core::utc_now_ms());
      if (!plan)
        return make_error(std::move(plan).err());
      st.deep_running = true;
      auto rp = self->make_response_promise<std::string>();
      auto planner = self->spawn<caf::detached>(consolidation_planner);
      self->request(planner, deep_plan_timeout, std::move(*plan))
        .then(
          [self, rp](router::consolidation_run_ptr& done) mutable {
            auto& st = self->state;
            st.deep_running = false;
            auto r = st.bank->apply_consolidation(*done);
            done.reset(); // gives the working memory back to the budget
            if (!r) {
              rp.deliver(make_error(std::move(r).err()));
              return;
            }
            st.persist(true);
            if (st.bank->reindex_pending() > 0)
              self->send(self, reindex_atom::value);
            rp.deliver(std::to_string(r->patterns_before) + " patterns -> "
                       + std::to_string(r->patterns_after) + ": " + std::to_string(r->merged)
                       + " merged, " + std::to_string(r->pruned) + " pruned, "
                       + std::to_string(r->clusters) + " categories, "
                       + std::to_string(r->duration_ms) + " ms");
          },
          [self, rp](caf::error& err) mutable {
            self->state.deep_running = false;
            rp.deliver(std::move(err));
          });
      return rp;
    },
    [self](reindex_atom) {
      auto& st = self->state;
      const size_t before = st.bank->reindex_pending();
      if (auto err = st.bank->reindex_moved(reindex_slice)) {
        // Left queued (found at the pre-merge vector meanwhile); retried on
        // the next tick.
        spdlog::error("router: moving merge survivors in the index failed: {}", err.message);
        return;
      }
      const size_t after = st.bank->reindex_pending();
      if (after == 0 && before > 0)
        st.persist(true); // the index file with every survivor in place
      else if (after < before)
        self->send(self, reindex_atom::value);
      // else: the memory budget refused a slot; retried on the next tick
    },
    [self](v2_atom, router_v2_handoff& h) {
      auto& st = self->state;
      st.v2_sessions = h.sessions;
      st.adapters = std::move(h.adapters);
      // The swap: the next query routes with the new model; nothing waits.
      st.ring = std::move(h.ring);
      st.v2 = st.ring ? std::move(h.model) : nullptr;
      st.v2_ready = h.ready;
      st.v2_threshold = h.threshold;
      st.latency_budget_max_ms = h.latency_budget_max_ms > 0 ? h.latency_budget_max_ms : 1;
      st.memory = std::move(h.memory);
      st.sampling_explore = h.sampling_explore;
    },
    [self, flush_every](tick_atom) {
      if (self->state.bank->reindex_pending() > 0)
        self->send(self, reindex_atom::value);
      self->state.persist(false);
      self->delayed_send(self, flush_every, tick_atom::value);
    },
  };
}

} // namespace

router_actor spawn_router(caf::actor_system& sys, std::shared_ptr<router::pattern_bank> bank,
                          witness_actor witness, telemetry_actor telemetry) {
  return sys.spawn<caf::detached>(router_behavior, std::move(bank), std::move(witness),
                                  std::move(telemetry));
}

} // namespace shoal::actors
