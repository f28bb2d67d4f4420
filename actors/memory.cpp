#include "actors/memory.hpp"

#include "actors/engine.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <vector>

namespace shoal::actors {

namespace {

struct memory_state {
  std::shared_ptr<engine::memory_budget> budget;
  std::vector<caf::actor> engines;
  memory_stats stats;
  bool trimming = false; ///< a round of trims is in flight
  static inline const char* name = "shoal.memory";
};

/// One round: ask every other engine for its cached bytes, then trim the
/// largest holders first until `want` bytes are asked for.
void relieve(caf::stateful_actor<memory_state>* self, uint64_t want, const caf::actor& from) {
  auto& st = self->state;
  if (st.trimming)
    return; // one round at a time; the stalled engine reports again
  std::vector<caf::actor> others;
  for (const auto& e : st.engines)
    if (e != from)
      others.push_back(e);
  if (others.empty())
    return;
  st.trimming = true;
  auto held = std::make_shared<std::vector<std::pair<uint64_t, caf::actor>>>();
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

caf::behavior memory_actor(caf::stateful_actor<memory_state>* self,
                           std::shared_ptr<engine::memory_budget> budget) {
  self->state.budget = std::move(budget);
  return {
    [self](register_atom, caf::actor engine) { self->state.engines.push_back(std::move(engine)); },
    [self](pressure_atom, uint64_t bytes, caf::actor from) {
      ++self->state.stats.pressure_events;
      relieve(self, bytes, from);
    },
    [self](proto::stats_atom) {
      auto s = self->state.stats;
      const auto& b = *self->state.budget;
      s.limit_bytes = b.limit();
      s.used_bytes = b.used();
      s.kv_bytes = b.used(engine::memory_budget::use::kv);
      s.adapter_bytes = b.used(engine::memory_budget::use::adapter);
      s.router_bytes = b.used(engine::memory_budget::use::router);
      return s;
    },
  };
}

} // namespace

caf::actor spawn_memory_pool(caf::actor_system& sys, std::shared_ptr<engine::memory_budget> budget) {
  return sys.spawn(memory_actor, std::move(budget));
}

} // namespace shoal::actors
