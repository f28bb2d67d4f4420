// Telemetry actor: request counters per tier, route latency histogram,
// feedback and reward sums. (HTTP counters live in the gateway: one message per
// HTTP response would wake this actor's worker for every request.)
#include "actors/actors.hpp"
#include "core/histogram.hpp"
#include "core/clock.hpp"
#include "proto/messages.hpp"

#include <caf/all.hpp>

namespace shoal::actors {

namespace {

using namespace proto;

struct telemetry_state {
  telemetry_snapshot snap;
  core::latency_histogram latency;
  static inline const char* name = "telemetry";
};

/// Prometheus bucket edges for route latency, seconds.
constexpr double bucket_edges_s[] = {10e-6,  25e-6,  50e-6, 100e-6, 250e-6, 500e-6,
                                     1e-3,   2.5e-3, 5e-3,  10e-3,  25e-3,  50e-3,
                                     100e-3, 250e-3, 0.5,   1.0,    2.5,    5.0};

telemetry_actor::behavior_type
telemetry_behavior(telemetry_actor::stateful_pointer<telemetry_state> self, size_t n_tiers) {
  auto& s = self->state.snap;
  s.started_ms = core::utc_now_ms();
  s.tier_routed.assign(n_tiers, 0);
  s.tier_feedback.assign(n_tiers, 0);
  s.tier_quality_sum.assign(n_tiers, 0.0);
  return {
    [self](observe_atom, uint32_t tier, uint64_t total_ns, bool new_pattern) {
      auto& st = self->state;
      ++st.snap.n_routed;
      if (tier < st.snap.tier_routed.size())
        ++st.snap.tier_routed[tier];
      st.snap.n_new_patterns += new_pattern ? 1 : 0;
      st.latency.observe(total_ns);
    },
    [self](observe_atom, feedback_atom, uint32_t tier, double quality, double reward) {
      auto& s = self->state.snap;
      ++s.n_feedback;
      if (tier < s.tier_feedback.size()) {
        ++s.tier_feedback[tier];
        s.tier_quality_sum[tier] += quality;
      }
      s.reward_sum += reward;
    },
    [self](stats_atom) {
      auto& st = self->state;
      auto out = st.snap;
      out.latency_count = st.latency.count();
      out.latency_sum_s = st.latency.sum_ns() * 1e-9;
      out.p50_s = st.latency.quantile(0.50) * 1e-9;
      out.p90_s = st.latency.quantile(0.90) * 1e-9;
      out.p99_s = st.latency.quantile(0.99) * 1e-9;
      out.p999_s = st.latency.quantile(0.999) * 1e-9;
      for (double le : bucket_edges_s) {
        out.bucket_le_s.push_back(le);
        out.bucket_counts.push_back(st.latency.cumulative_le(le * 1e9));
      }
      return out;
    },
  };
}

} // namespace

telemetry_actor spawn_telemetry(caf::actor_system& sys, size_t n_tiers) {
  return sys.spawn(telemetry_behavior, n_tiers);
}

} // namespace shoal::actors
