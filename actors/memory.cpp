#include "actors/memory.hpp"

#include "actors/engine.hpp"
#include "proto/error.hpp"
#include "core/clock.hpp"
#include "proto/records.hpp"
#include "store/policy_table.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <vector>

namespace shoal::actors {

namespace {

struct memory_state {
  std::shared_ptr<core::memory_budget> budget;
  std::shared_ptr<store::environment> env;
  std::vector<engine_actor> engines;
  std::map<std::string, engine_actor> by_tier;
  memory_stats stats;
  bool trimming = false; ///< a round of trims is in flight
  static inline const char* name = "shoal.memory";
};

/// One round: ask every other engine for its cached bytes, then trim the
/// largest holders first until `want` bytes are asked for.
void relieve(memory_actor::stateful_pointer<memory_state> self, uint64_t want,
             const engine_actor& from) {
  auto& st = self->state;
  if (st.trimming)
    return; // one round at a time; the stalled engine reports again
  std::vector<engine_actor> others;
  for (const auto& e : st.engines)
    if (e != from)
      others.push_back(e);
  if (others.empty())
    return;
  st.trimming = true;
  auto held = std::make_shared<std::vector<std::pair<uint64_t, engine_actor>>>();
  auto pending = std::make_shared<size_t>(others.size());
  auto finish = [self, held, want] {
    auto& st = self->state;
    std::sort(held->begin(), held->end(),
              [](const auto& a, const auto& b) { return a.first > b.first; });
    uint64_t asked = 0;
    for (const auto& [cached, engine] : *held) {
      if (asked >= want || cached == 0)
        break;
      uint64_t n = std::min(cached, want - asked);
      asked += n;
      ++st.stats.trims;
      self->request(engine, std::chrono::seconds(10), trim_atom::value, n)
        .then([self](uint64_t freed) { self->state.stats.trimmed_bytes += freed; },
              [](caf::error&) {});
    }
    st.trimming = false;
  };
  for (const auto& e : others)
    self->request(e, std::chrono::seconds(10), proto::stats_atom::value)
      .then(
        [held, pending, finish, e](const engine_stats& s) {
          held->emplace_back(s.kv.bytes_cached, e);
          if (--*pending == 0)
            finish();
        },
        [pending, finish](caf::error&) {
          if (--*pending == 0)
            finish();
        });
}

/// The policies table's name of a tier's KV policy.
std::string policy_name(const std::string& tier) {
  return "kv/" + tier;
}

memory_actor::behavior_type memory_behavior(memory_actor::stateful_pointer<memory_state> self,
                                            std::shared_ptr<core::memory_budget> budget,
                                            std::shared_ptr<store::environment> env) {
  self->state.budget = std::move(budget);
  self->state.env = std::move(env);
  return {
    [self](register_atom, const std::string& tier, engine_actor engine) {
      self->state.by_tier[tier] = engine;
      self->state.engines.push_back(std::move(engine));
    },
    [self](policy_atom, const std::string& tier) -> caf::result<engine::kv_policy> {
      auto it = self->state.by_tier.find(tier);
      if (it == self->state.by_tier.end())
        return make_error(errc::not_found, "no tier " + tier + " with a model");
      auto rp = self->make_response_promise<engine::kv_policy>();
      self->request(it->second, std::chrono::seconds(30), policy_atom::value)
        .then([rp](const engine::kv_policy& p) mutable { rp.deliver(p); },
              [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
      return rp;
    },
    [self](policy_atom, const std::string& tier,
           engine::kv_policy p) -> caf::result<engine::kv_policy> {
      auto it = self->state.by_tier.find(tier);
      if (it == self->state.by_tier.end())
        return make_error(errc::not_found, "no tier " + tier + " with a model");
      auto rp = self->make_response_promise<engine::kv_policy>();
      self->request(it->second, std::chrono::seconds(30), policy_atom::value, p)
        .then(
          [self, rp, tier](const engine::kv_policy& applied) mutable {
            if (auto& env = self->state.env) {
              proto::kv_policy_record rec{
                applied.recent_tokens, static_cast<uint8_t>(applied.old_k_type),
                static_cast<uint8_t>(applied.old_v_type), applied.migrate_pages};
              auto v = store::put_policy(*env, {policy_name(tier), "kv", "operator", 1.0, 0,
                                                core::utc_now_ms(), proto::encode(rec)});
              if (!v) {
                rp.deliver(make_error(v.err()));
                return;
              }
            }
            spdlog::info("memory: tier {} KV policy: recent {} tokens, old tier {}/{}, "
                         "migrate {} pages",
                         tier, applied.recent_tokens, kernels::to_string(applied.old_k_type),
                         kernels::to_string(applied.old_v_type), applied.migrate_pages);
            rp.deliver(applied);
          },
          [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
      return rp;
    },
    [self](pressure_atom, uint64_t bytes, engine_actor from) {
      ++self->state.stats.pressure_events;
      relieve(self, bytes, from);
    },
    [self](proto::stats_atom) {
      auto s = self->state.stats;
      const auto& b = *self->state.budget;
      s.limit_bytes = b.limit();
      s.used_bytes = b.used();
      s.kv_bytes = b.used(core::memory_budget::use::kv);
      s.adapter_bytes = b.used(core::memory_budget::use::adapter);
      s.router_bytes = b.used(core::memory_budget::use::router);
      return s;
    },
  };
}

} // namespace

memory_actor spawn_memory_pool(caf::actor_system& sys, std::shared_ptr<core::memory_budget> budget,
                               std::shared_ptr<store::environment> env) {
  return sys.spawn<caf::detached>(memory_behavior, std::move(budget), std::move(env));
}

core::result<std::optional<engine::kv_policy>> load_kv_policy(store::environment& env,
                                                              const std::string& tier) {
  auto stored = store::get_policy(env, policy_name(tier));
  if (!stored)
    return stored.err();
  if (!*stored)
    return std::optional<engine::kv_policy>{};
  auto rec = proto::decode_kv_policy((*stored)->value);
  auto k = rec ? kernels::kv_type_from_code(rec->old_k_type) : std::nullopt;
  auto v = rec ? kernels::kv_type_from_code(rec->old_v_type) : std::nullopt;
  if (!k || !v)
    return core::error(errc::corrupt_data, "stored KV policy of tier " + tier + " does not decode");
  engine::kv_policy p;
  p.recent_tokens = rec->recent_tokens;
  p.old_k_type = *k;
  p.old_v_type = *v;
  p.migrate_pages = rec->migrate_pages;
  return std::optional<engine::kv_policy>{p};
}

} // namespace shoal::actors
