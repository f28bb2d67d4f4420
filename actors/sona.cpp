// SONA: the three learning loops.
//   instant    per feedback: joins the reward (and the answer's usage, from
//              the feedback or the node's engine) to its trajectory (request ->
//              pattern, tier), updates router v1's pattern statistics, and
//              with router v2 one MicroLoRA step on the trajectory's features
//              (drained from the router's lock-free trajectory ring);
//   background every `background_interval_s` or `background_trajectories`
//              completed trajectories: router v2 trained on the recent ones
//              with EWC++ on the trainer's own thread, checkpointed to the
//              `policies` table, and swapped into the router (no pause);
//   deep       every `deep_interval_s` or on demand: the router consolidates
//              its pattern bank, then the witness log archives its old
//              records (witness.archive_after_s).
// Feedback for a trajectory that has left the ring (or predates a restart)
// is joined through the witness log (v1 statistics only).
#include "actors/actors.hpp"
#include "core/clock.hpp"
#include "proto/error.hpp"
#include "proto/messages.hpp"
#include "store/policy_table.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <deque>
#include <unordered_map>

namespace shoal::actors {

namespace {

/// Longest a background training run may take before it is reported failed
/// (and another may start); a late result is dropped.
constexpr auto background_run_timeout = std::chrono::seconds(3600);
/// Longest each step of a deep run (the router's consolidation, the witness
/// archive) may take; the router bounds its own planning to 1 h.
constexpr auto deep_run_timeout = std::chrono::seconds(7200);

} // namespace

namespace {

using namespace proto;

using bg_atom = caf::atom_constant<caf::atom("bgtrain")>;

/// A background run's outcome (trainer -> sona).
struct background_result {
  router_v2_ptr model;
  double mean_loss = 0;
  uint32_t boundaries = 0;
  double ms = 0;
  core::error error; ///< a checkpoint failure (the model is still swapped in)
};

using trajectories_ptr = std::shared_ptr<const std::vector<learn::router_v2_trajectory>>;

} // namespace
} // namespace shoal::actors

// Local only: SONA and its background trainer (one process) hand each other
// the trained model and a shared batch of trajectories; never serialized.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::actors::background_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::actors::trajectories_ptr)

namespace shoal::actors {

namespace {

/// The background trainer: owns router_v2_trainer (its EWC++ Fisher and
/// anchor persist across runs) on its own thread, so training never blocks
/// feedback; writes the checkpoint to the policies table.
struct trainer_state {
  std::unique_ptr<learn::router_v2_trainer> trainer;
  std::shared_ptr<store::environment> env;
  uint64_t version = 0;
  static inline const char* name = "sona-trainer";
};

caf::behavior trainer_actor(caf::stateful_actor<trainer_state>* self, learn::router_v2_model start,
                            learn::router_v2_trainer_config cfg,
                            std::shared_ptr<store::environment> env, uint64_t version) {
  self->state.trainer = std::make_unique<learn::router_v2_trainer>(std::move(start), cfg);
  self->state.env = std::move(env);
  self->state.version = version;
  return {
    [self](bg_atom, const trajectories_ptr& data, uint64_t n_new) {
      auto& st = self->state;
      auto t0 = std::chrono::steady_clock::now();
      auto ps = st.trainer->train(*data, n_new);
      background_result res;
      res.model = std::make_shared<const learn::router_v2_model>(st.trainer->model());
      res.mean_loss = ps.mean_loss;
      res.boundaries = ps.boundaries;
      res.ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      ++st.version;
      if (st.env) {
        // Confidence: the share of the window's reward variance the model
        // explains (1 − MSE / variance), clamped to [0, 1].
        double mean = 0, var = 0;
        for (const auto& t : *data)
          mean += t.reward;
        mean /= std::max<size_t>(1, data->size());
        for (const auto& t : *data)
          var += (t.reward - mean) * (t.reward - mean);
        var /= std::max<size_t>(1, data->size());
        double conf = var > 0 ? std::clamp(1.0 - ps.mean_loss / var, 0.0, 1.0) : 0.0;
        auto now = core::utc_now_ms();
        auto v = store::put_policy(*st.env, {"router/v2", "router", "background", conf, 0, now,
                                             encode_checkpoint(*res.model)});
        if (!v)
          res.error = core::error(v.err().code, "checkpoint: " + v.err().message, v.err().context);
      }
      return res;
    },
  };
}

struct pending_v1 {
  uint64_t pattern_id = 0;
  uint32_t tier = 0;
  bool has_feedback = false;
};

struct sona_state {
  sona_config cfg;
  std::vector<double> costs;
  router_actor router;
  witness_actor witness;
  telemetry_actor telemetry;
  caf::actor trainer;
  std::shared_ptr<store::environment> env;
  std::shared_ptr<core::memory_budget> budget;
  std::shared_ptr<uint64_t> adapter_bytes = std::make_shared<uint64_t>(0); // reserved for scopes
  std::unordered_map<uint64_t, pending_v1> ring;
  std::deque<uint64_t> order; // insertion order, oldest first
  // Router v2.
  trajectory_ring_ptr v2_ring;
  std::optional<learn::router_v2_model> live; // the model the router uses, plus instant steps
  bool v2_ready = false;
  std::unordered_map<uint64_t, learn::router_v2_trajectory> v2_pending;
  std::deque<uint64_t> v2_order;
  std::deque<learn::router_v2_trajectory> completed;
  learn::scoped_adapters adapters; // per pattern-bank category, learned by the instant loop
  learn::router_v2_trace trace;
  bool background_running = false;
  std::vector<caf::typed_response_promise<learn_status>> background_waiting;
  uint64_t steps_since_publish = 0;
  double loss_window = 0;
  learn_status status;
  static inline const char* name = "sona";

  void remember(uint64_t id, pending_v1 t) {
    if (ring.emplace(id, t).second) {
      order.push_back(id);
      while (order.size() > cfg.trajectory_capacity) {
        ring.erase(order.front());
        order.pop_front();
      }
    }
  }

  /// Moves the router's new trajectories into v2_pending (oldest evicted).
  void drain() {
    if (!v2_ring)
      return;
    v2_ring->drain([&](uint64_t id, const learn::router_v2_trajectory& t) {
      if (v2_pending.emplace(id, t).second) {
        v2_order.push_back(id);
        while (v2_order.size() > cfg.v2_pending) {
          v2_pending.erase(v2_order.front());
          v2_order.pop_front();
        }
      }
    });
  }

  /// Sends the router the live model (after instant steps or a background run).
  void publish(sona_actor::stateful_pointer<sona_state> self) {
    steps_since_publish = 0;
    router_v2_handoff h;
    h.ring = v2_ring;
    h.model = std::make_shared<const learn::router_v2_model>(*live);
    h.adapters = std::make_shared<const learn::scoped_adapters>(adapters);
    h.ready = v2_ready;
    h.threshold = cfg.v2_threshold;
    h.sessions = cfg.v2_sessions;
    h.latency_budget_max_ms = cfg.latency_budget_max_ms;
    h.sampling_explore = cfg.sampling ? cfg.sampling_explore : -1.0;
    h.memory = budget;
    self->send(router, v2_atom::value, std::move(h));
  }

  /// The instant loop's v2 part for one feedback.
  void instant(sona_actor::stateful_pointer<sona_state> self, const feedback& fb) {
    drain();
    auto it = v2_pending.find(fb.request_id);
    if (it == v2_pending.end())
      return;
    auto t = std::move(it->second);
    v2_pending.erase(it); // its v2_order entry is skipped when it comes up
    t.reward = static_cast<float>(fb.quality);
    if (fb.completion_tokens > 0) // the context the request needed
      t.context_tokens =
        static_cast<float>(fb.prompt_tokens > 0 ? fb.prompt_tokens : t.prompt_tokens)
        + static_cast<float>(fb.completion_tokens);
    auto in = t.input();
    learn::scoped_adapter* scope = nullptr;
    if (t.scope != learn::no_scope) {
      const auto& mc = live->config();
      auto it = adapters.find(t.scope);
      if (it == adapters.end()) {
        // A new scope needs room in the budget; refused, it stays on the shared adapter.
        const uint64_t bytes = scoped_adapter_bytes(mc);
        if (!budget || budget->try_reserve(core::memory_budget::use::adapter, bytes)) {
          *adapter_bytes += budget ? bytes : 0;
          it = adapters
                 .emplace(t.scope, learn::scoped_adapter::make(mc.lora_rank, mc.embed_dim,
                                                               mc.seed * 1000003 + t.scope))
                 .first;
        } else {
          ++status.adapter_refusals;
        }
      }
      if (it != adapters.end()) {
        scope = &it->second;
        in.scope = scope;
      }
    }
    live->forward(in, t.h_prev, trace, false); // the adapter step needs no context head
    double loss = live->instant_step(trace, t.outcome(), static_cast<float>(cfg.instant_lr), scope);
    loss_window = status.instant_steps == 0 ? loss : 0.99 * loss_window + 0.01 * loss;
    ++status.instant_steps;
    completed.push_back(std::move(t));
    while (completed.size() > cfg.train_window)
      completed.pop_front();
    if (++status.since_background >= cfg.background_trajectories)
      start_background(self);
    // The adapter moved: hand the router a fresh copy now and then.
    if (++steps_since_publish >= 64)
      publish(self);
  }

  /// Starts a background run on the completed trajectories; false when
  /// there is nothing to train on or a run is going on.
  bool start_background(sona_actor::stateful_pointer<sona_state> self) {
    if (!trainer || background_running || completed.empty())
      return false;
    background_running = true;
    auto data = std::make_shared<const std::vector<learn::router_v2_trajectory>>(completed.begin(),
                                                                                 completed.end());
    // The trajectories completed since the last run are the newest ones
    // (the trainer's task-boundary test looks at them).
    const uint64_t n_new = std::min<uint64_t>(status.since_background, data->size());
    status.since_background = 0;
    self
      ->request(trainer, background_run_timeout, bg_atom::value, trajectories_ptr(std::move(data)),
                n_new)
      .then(
        [this, self](background_result& r) {
          auto& st = *this;
          st.background_running = false;
          st.live = *r.model;
          st.v2_ready = true;
          ++st.status.background_runs;
          ++st.status.model_version;
          st.status.background_last_ms = core::utc_now_ms();
          st.status.background_loss = r.mean_loss;
          st.status.background_ms = r.ms;
          st.status.task_boundaries += r.boundaries;
          if (r.error) {
            st.status.last_error = r.error.message;
            spdlog::error("sona: background run: {}", r.error.message);
          }
          st.publish(self);
          for (auto& rp : st.background_waiting)
            rp.deliver(st.snapshot());
          st.background_waiting.clear();
        },
        [this](caf::error& err) {
          auto& st = *this;
          st.background_running = false;
          st.status.last_error = "background run: " + view(err).message;
          for (auto& rp : st.background_waiting)
            rp.deliver(err);
          st.background_waiting.clear();
        });
    return true;
  }

  void start_deep(sona_actor::stateful_pointer<sona_state> self,
                  std::optional<caf::typed_response_promise<learn_status>> rp) {
    self->request(router, deep_run_timeout, deep_atom::value)
      .then(
        [this, self, rp](std::string& summary) mutable {
          // Then the witness log moves its old records to the archive.
          self->request(witness, deep_run_timeout, archive_atom::value)
            .then(
              [this, rp, summary](const witness_archive_result& a) mutable {
                auto& st = *this;
                ++st.status.deep_runs;
                st.status.deep_last_ms = core::utc_now_ms();
                st.status.deep_summary =
                  summary + "; witness: "
                  + (a.cutoff_ms == 0 ? std::string("archiving off")
                                      : std::to_string(a.records) + " records archived in "
                                          + std::to_string(a.files) + " segments");
                if (rp)
                  rp->deliver(st.snapshot());
              },
              [this, rp](caf::error& err) mutable {
                status.last_error = "deep run: witness archive: " + view(err).message;
                if (rp)
                  rp->deliver(err);
              });
        },
        [this, rp](caf::error& err) mutable {
          status.last_error = "deep run: " + view(err).message;
          if (rp)
            rp->deliver(err);
        });
  }

  learn_status snapshot() {
    drain();
    status.v2 = static_cast<bool>(live);
    status.v2_ready = v2_ready;
    status.pending = v2_pending.size();
    status.completed = completed.size();
    status.instant_loss = loss_window;
    status.dropped = v2_ring ? v2_ring->dropped() : 0;
    status.scoped_adapters = adapters.size();
    return status;
  }

  /// Applies feedback to a known trajectory; errors on a repeat.
  caf::expected<learn_update> apply(sona_actor::stateful_pointer<sona_state> self,
                                    const feedback& fb, pending_v1& t) {
    if (t.has_feedback)
      return make_error(errc::conflict, "feedback for request_id "
                                          + format_request_id(fb.request_id)
                                          + " was already recorded");
    t.has_feedback = true;
    learn_update u{t.pattern_id, t.tier, fb.quality};
    self->send(router, learn_atom::value, u);
    self->send(witness, feedback_atom::value, fb);
    self->send(telemetry, observe_atom::value, feedback_atom::value, t.tier, fb.quality,
               fb.quality - (t.tier < costs.size() ? costs[t.tier] : 0.0));
    if (live)
      instant(self, fb);
    return u;
  }
};

sona_actor::behavior_type sona_behavior(sona_actor::stateful_pointer<sona_state> self,
                                        sona_config cfg, uint32_t embed_dim,
                                        std::vector<double> costs, router_actor router,
                                        witness_actor witness, telemetry_actor telemetry,
                                        std::shared_ptr<store::environment> env,
                                        std::optional<learn::router_v2_model> initial,
                                        std::shared_ptr<core::memory_budget> budget) {
  auto& st = self->state;
  st.budget = std::move(budget);
  // The scoped adapters' bytes go back to the budget when the actor ends.
  self->attach_functor([b = st.budget, held = st.adapter_bytes] {
    if (b && *held > 0)
      b->release(core::memory_budget::use::adapter, *held);
  });
  st.cfg = cfg;
  st.costs = std::move(costs);
  st.router = std::move(router);
  st.witness = std::move(witness);
  st.telemetry = std::move(telemetry);
  st.env = std::move(env);
  if (cfg.v2) {
    st.v2_ready = initial.has_value();
    if (!initial) {
      learn::router_v2_config mc;
      mc.embed_dim = embed_dim;
      mc.n_tiers = static_cast<uint32_t>(st.costs.size());
      initial.emplace(mc);
    } else {
      st.status.model_version = 1;
    }
    st.live = std::move(initial);
    st.v2_ring = std::make_shared<learn::trajectory_ring>(std::max<uint32_t>(256, cfg.v2_pending));
    learn::router_v2_trainer_config tc;
    tc.lr = static_cast<float>(cfg.train_lr);
    tc.epochs = cfg.train_epochs;
    tc.ewc = cfg.ewc;
    tc.ewc_lambda = static_cast<float>(cfg.ewc_lambda);
    st.trainer = self->spawn<caf::detached + caf::linked>(trainer_actor, *st.live, tc, st.env,
                                                          st.status.model_version);
    st.publish(self);
    self->delayed_send(self, std::chrono::seconds(cfg.background_interval_s), bg_tick_atom::value);
    self->delayed_send(self, std::chrono::milliseconds(100), drain_atom::value);
  }
  self->delayed_send(self, std::chrono::seconds(cfg.deep_interval_s), deep_tick_atom::value);
  return {
    [self](record_atom, const route_decision& d) {
      self->state.remember(d.request_id, {d.pattern_id, d.tier, false});
    },
    [self](feedback_atom, feedback& fb) -> caf::result<learn_update> {
      auto& st = self->state;
      if (!(fb.quality >= 0.0 && fb.quality <= 1.0))
        return make_error(errc::invalid_argument, "quality must be a number in [0, 1]");
      fb.time_ms = core::utc_now_ms();
      if (auto it = st.ring.find(fb.request_id); it != st.ring.end()) {
        auto res = st.apply(self, fb, it->second);
        if (!res)
          return res.error();
        return *res;
      }
      // Not in the ring: join through the witness log.
      auto rp = self->make_response_promise<learn_update>();
      self->request(st.witness, std::chrono::seconds(10), lookup_atom::value, fb.request_id)
        .then(
          [self, rp, fb](const witness_entry& w) mutable {
            auto& st = self->state;
            // Another feedback may have raced us through the same path.
            auto it = st.ring.find(fb.request_id);
            if (it == st.ring.end()) {
              st.remember(fb.request_id, {w.decision.pattern_id, w.decision.tier, w.has_feedback});
              it = st.ring.find(fb.request_id);
            }
            auto res = st.apply(self, fb, it->second);
            if (res)
              rp.deliver(*res);
            else
              rp.deliver(res.error());
          },
          [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
      return rp;
    },
    [self](usage_atom, uint64_t request_id, uint32_t prompt, uint32_t completion) {
      // The node's engine answered a routed request: the context it needed
      // (a client's feedback that reports usage overrides it).
      auto& st = self->state;
      self->send(st.witness, usage_atom::value, request_id, prompt, completion);
      st.drain();
      if (auto it = st.v2_pending.find(request_id); it != st.v2_pending.end())
        it->second.context_tokens = static_cast<float>(prompt) + static_cast<float>(completion);
    },
    [self](stats_atom) { return static_cast<uint64_t>(self->state.ring.size()); },
    [self](status_atom) { return self->state.snapshot(); },
    [self](trigger_atom, const std::string& loop) -> caf::result<learn_status> {
      auto& st = self->state;
      if (loop == "deep") {
        auto rp = self->make_response_promise<learn_status>();
        st.start_deep(self, rp);
        return rp;
      }
      if (loop != "background")
        return make_error(errc::invalid_argument,
                          "unknown loop '" + loop + "': expected background or deep");
      if (!st.live)
        return make_error(errc::invalid_argument,
                          "router v2 is disabled (sona.v2 = false): no background loop");
      st.drain();
      if (!st.background_running && !st.start_background(self))
        return make_error(errc::invalid_argument,
                          "no trajectories with feedback yet: nothing to train on");
      auto rp = self->make_response_promise<learn_status>();
      st.background_waiting.push_back(rp);
      return rp;
    },
    [self](drain_atom) {
      self->state.drain();
      self->delayed_send(self, std::chrono::milliseconds(100), drain_atom::value);
    },
    [self](bg_tick_atom) {
      auto& st = self->state;
      st.start_background(self);
      self->delayed_send(self, std::chrono::seconds(st.cfg.background_interval_s),
                         bg_tick_atom::value);
    },
    [self](deep_tick_atom) {
      auto& st = self->state;
      st.start_deep(self, std::nullopt);
      self->delayed_send(self, std::chrono::seconds(st.cfg.deep_interval_s), deep_tick_atom::value);
    },
  };
}

} // namespace

sona_actor spawn_sona(caf::actor_system& sys, sona_config cfg, uint32_t embed_dim,
                      std::vector<double> tier_costs, router_actor router, witness_actor witness,
                      telemetry_actor telemetry, std::shared_ptr<store::environment> env,
                      std::optional<learn::router_v2_model> initial,
                      std::shared_ptr<core::memory_budget> budget) {
  auto hdl =
    sys.spawn(sona_behavior, cfg, embed_dim, std::move(tier_costs), router, std::move(witness),
              std::move(telemetry), std::move(env), std::move(initial), std::move(budget));
  caf::anon_send(router, subscribe_atom::value, hdl);
  return hdl;
}

uint64_t scoped_adapter_bytes(const learn::router_v2_config& cfg) {
  // A and Bᵀ, plus the hash-map node and the vectors' headers.
  return 2ull * cfg.lora_rank * cfg.embed_dim * sizeof(float) + 128;
}

uint64_t sona_fixed_bytes(const sona_config& cfg, const learn::router_v2_model& model) {
  const auto& mc = model.config();
  // One trajectory: embedding, neighbour features, session state, scalars.
  const uint64_t trajectory = sizeof(learn::router_v2_trajectory)
                              + sizeof(float)
                                  * (uint64_t{mc.embed_dim} + learn::router_v2_model::n_neighbors
                                     + 2ull * mc.n_tiers + mc.hidden)
                              + 64;
  uint64_t ring = 2;
  while (ring < std::max<uint64_t>(256, cfg.v2_pending))
    ring <<= 1;
  // A session's recurrent state: h, its key (session ids are short) and the LRU links.
  const uint64_t session = sizeof(float) * uint64_t{mc.hidden} + 160;
  return 3ull * model.n_params() * sizeof(float)
         + trajectory * (ring + cfg.v2_pending + cfg.train_window) + session * cfg.v2_sessions;
}

std::string encode_checkpoint(const learn::router_v2_model& m) {
  const auto& c = m.config();
  proto::router_v2_checkpoint ck;
  ck.version = learn::router_v2_model::checkpoint_version;
  ck.embed_dim = c.embed_dim;
  ck.n_tiers = c.n_tiers;
  ck.proj = c.proj;
  ck.hidden = c.hidden;
  ck.rank_w = c.rank_w;
  ck.rank_u = c.rank_u;
  ck.lora_rank = c.lora_rank;
  ck.lora_alpha = c.lora_alpha;
  ck.temperature = c.temperature;
  ck.max_importance = c.max_importance;
  ck.seed = c.seed;
  ck.params.assign(m.params().begin(), m.params().end());
  return proto::encode(ck);
}

core::result<std::optional<learn::router_v2_model>>
load_router_v2(const store::environment& env, const learn::router_v2_config& cfg) {
  auto p = store::get_policy(env, "router/v2");
  if (!p)
    return p.err();
  if (!*p)
    return std::optional<learn::router_v2_model>{};
  auto ck = proto::decode_router_v2_checkpoint((*p)->value);
  if (!ck)
    return core::error(errc::corrupt_data, "policy 'router/v2': " + ck.err().message);
  learn::router_v2_config c;
  c.embed_dim = ck->embed_dim;
  c.n_tiers = ck->n_tiers;
  c.proj = ck->proj;
  c.hidden = ck->hidden;
  c.rank_w = ck->rank_w;
  c.rank_u = ck->rank_u;
  c.lora_rank = ck->lora_rank;
  c.lora_alpha = ck->lora_alpha;
  c.temperature = ck->temperature;
  c.max_importance = ck->max_importance;
  c.seed = ck->seed;
  auto m = learn::router_v2_model::restore(ck->version, c, ck->params);
  if (!m)
    return core::error(errc::corrupt_data, "policy 'router/v2': " + m.err().message);
  if (m->config().embed_dim != cfg.embed_dim || m->config().n_tiers != cfg.n_tiers)
    return core::error(errc::corrupt_data,
                       "policy 'router/v2' was trained for embedding dimension "
                         + std::to_string(m->config().embed_dim) + " and "
                         + std::to_string(m->config().n_tiers) + " tiers; this node has "
                         + std::to_string(cfg.embed_dim) + " and " + std::to_string(cfg.n_tiers)
                         + " (delete the policy to start router v2 afresh)");
  return std::optional<learn::router_v2_model>{std::move(*m)};
}

} // namespace shoal::actors
