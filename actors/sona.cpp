// SONA instant loop: keeps recent trajectories (request -> pattern, tier) in a
// bounded ring, joins feedback to them and turns it into a learning update of
// the router's pattern statistics. Feedback for a trajectory that has left
// the ring (or predates a restart) is joined through the witness log.
#include "actors/actors.hpp"
#include "actors/time.hpp"
#include "proto/error.hpp"
#include "proto/messages.hpp"

#include <caf/all.hpp>

#include <deque>
#include <unordered_map>

namespace shoal::actors {

namespace {

using namespace proto;

struct trajectory {
  uint64_t pattern_id = 0;
  uint32_t tier = 0;
  bool has_feedback = false;
};

struct sona_state {
  sona_config cfg;
  std::vector<double> costs;
  caf::actor router, witness, telemetry;
  std::unordered_map<uint64_t, trajectory> ring;
  std::deque<uint64_t> order; // insertion order, oldest first
  static inline const char* name = "sona-instant";

  void remember(uint64_t id, trajectory t) {
    if (ring.emplace(id, t).second) {
      order.push_back(id);
      while (order.size() > cfg.trajectory_capacity) {
        ring.erase(order.front());
        order.pop_front();
      }
    }
  }

  /// Applies feedback to a known trajectory; errors on a repeat.
  caf::expected<learn_update> apply(caf::event_based_actor* self, const feedback& fb, trajectory& t) {
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
    return u;
  }
};

caf::behavior sona_actor(caf::stateful_actor<sona_state>* self, sona_config cfg,
                         std::vector<double> costs, caf::actor router, caf::actor witness,
                         caf::actor telemetry) {
  auto& st = self->state;
  st.cfg = cfg;
  st.costs = std::move(costs);
  st.router = std::move(router);
  st.witness = std::move(witness);
  st.telemetry = std::move(telemetry);
  return {
    [self](record_atom, const route_decision& d) {
      self->state.remember(d.request_id, {d.pattern_id, d.tier, false});
    },
    [self](feedback_atom, feedback& fb) -> caf::result<learn_update> {
      auto& st = self->state;
      if (!(fb.quality >= 0.0 && fb.quality <= 1.0))
        return make_error(errc::invalid_argument, "quality must be a number in [0, 1]");
      fb.time_ms = utc_now_ms();
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
              st.remember(fb.request_id,
                          {w.decision.pattern_id, w.decision.tier, w.has_feedback});
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
    [self](stats_atom) { return static_cast<uint64_t>(self->state.ring.size()); },
  };
}

} // namespace

caf::actor spawn_sona(caf::actor_system& sys, sona_config cfg, std::vector<double> tier_costs,
                      caf::actor router, caf::actor witness, caf::actor telemetry) {
  auto hdl = sys.spawn(sona_actor, cfg, std::move(tier_costs), router, std::move(witness),
                       std::move(telemetry));
  caf::anon_send(router, subscribe_atom::value, hdl);
  return hdl;
}

} // namespace shoal::actors
