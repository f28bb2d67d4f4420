#include "actors/engine.hpp"

#include "actors/memory.hpp"

#include "kernels/parallel.hpp"
#include "proto/error.hpp"
#include "proto/messages.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <unordered_map>

namespace shoal::actors {

using namespace std::chrono_literals;

// ---- generation_stream -------------------------------------------------------

void generation_stream::accept(uint32_t prompt_tokens) {
  {
    std::lock_guard<std::mutex> guard(mutex_);
    verdict_ = 1;
    prompt_tokens_ = prompt_tokens;
  }
  cv_.notify_all();
}

void generation_stream::refuse(std::string message) {
  {
    std::lock_guard<std::mutex> guard(mutex_);
    verdict_ = -1;
    refusal_ = std::move(message);
  }
  cv_.notify_all();
}

void generation_stream::push(engine::sequence_event e) {
  {
    std::lock_guard<std::mutex> guard(mutex_);
    events_.push_back(std::move(e));
  }
  cv_.notify_all();
}

std::optional<std::string> generation_stream::wait_accepted(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!cv_.wait_for(lock, timeout, [&] { return verdict_ != 0; }))
    return std::string("timeout");
  if (verdict_ < 0)
    return refusal_;
  return std::nullopt;
}

std::optional<engine::sequence_event> generation_stream::next(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty(); }))
    return std::nullopt;
  auto e = std::move(events_.front());
  events_.pop_front();
  return e;
}

// ---- the actor -----------------------------------------------------------------

namespace {

struct engine_state {
  engine_tier tier;
  std::unique_ptr<kernels::thread_pool> pool;
  std::unique_ptr<engine::scheduler> sched;
  std::unordered_map<uint64_t, std::shared_ptr<generation_stream>> streams;
  engine_stats stats;
  bool stepping = false;
  std::chrono::steady_clock::time_point last_pressure{};
  static inline const char* name = "shoal.engine";
};

engine_actor::behavior_type engine_behavior(engine_actor::stateful_pointer<engine_state> self,
                                            engine_tier tier) {
  auto& st = self->state;
  st.tier = std::move(tier);
  if (st.tier.threads > 1)
    st.pool = std::make_unique<kernels::worker_pool>(st.tier.threads);
  st.sched = std::make_unique<engine::scheduler>(st.tier.model, st.tier.tokenizer,
                                                 st.tier.scheduler, st.pool.get(), st.tier.budget);
  if (st.tier.spill)
    st.sched->set_spill(st.tier.spill);
  st.stats.tier = st.tier.name;
  auto kick = [self] {
    if (!self->state.stepping) {
      self->state.stepping = true;
      self->send(self, step_atom::value);
    }
  };
  return {
    [self, kick](generate_atom, generation_job_ptr job) {
      auto& st = self->state;
      ++st.stats.requests;
      auto r = st.sched->submit(job->id, job->request);
      if (!r) {
        ++st.stats.refused;
        job->stream->refuse(r.err().message);
        return;
      }
      job->stream->accept(*r);
      st.streams[job->id] = job->stream;
      kick();
    },
    [self](step_atom) {
      auto& st = self->state;
      // Drop sequences whose readers left.
      for (auto it = st.streams.begin(); it != st.streams.end();) {
        if (it->second->cancelled()) {
          st.sched->cancel(it->first);
          ++st.stats.cancelled;
          it = st.streams.erase(it);
        } else {
          ++it;
        }
      }
      for (auto& e : st.sched->step()) {
        auto it = st.streams.find(e.id);
        if (it == st.streams.end())
          continue;
        bool last = e.finish != engine::finish_reason::none || static_cast<bool>(e.error);
        it->second->push(std::move(e));
        if (last)
          st.streams.erase(it);
      }
      if (st.sched->idle()) {
        st.stepping = false;
      } else if (st.sched->memory_stalled()) {
        // No KV memory for a waiting sequence: ask the pool to trim other
        // tiers (at most every 50 ms) and try again shortly.
        auto now = std::chrono::steady_clock::now();
        if (st.tier.memory && st.tier.budget && now - st.last_pressure > 50ms) {
          st.last_pressure = now;
          uint64_t want = std::max<uint64_t>(st.tier.budget->limit() / 16,
                                             st.sched->kv_stats().page_bytes_recent);
          self->send(st.tier.memory, pressure_atom::value, want,
                     caf::actor_cast<engine_actor>(self));
        }
        self->delayed_send(self, 5ms, step_atom::value);
      } else {
        self->send(self, step_atom::value); // after any queued requests
      }
    },
    [self](embed_atom, const std::string& text) -> caf::result<std::vector<float>> {
      auto r = self->state.sched->embed(text);
      if (!r)
        return make_error(errc::invalid_argument, r.err().message);
      return std::move(*r);
    },
    [self](trim_atom, uint64_t bytes) -> uint64_t { return self->state.sched->trim(bytes); },
    [self](policy_atom) { return self->state.sched->kv_policy(); },
    [self](policy_atom, engine::kv_policy p) -> caf::result<engine::kv_policy> {
      auto r = self->state.sched->set_kv_policy(p);
      if (!r)
        return make_error(errc::invalid_argument, r.err().message);
      return *r;
    },
    [self](proto::stats_atom) {
      auto& st = self->state;
      const auto& c = st.sched->stats();
      auto s = st.stats;
      s.running = st.sched->n_running();
      s.waiting = st.sched->n_waiting();
      s.prompt_tokens = c.prompt_tokens;
      s.cached_tokens = c.cached_tokens;
      s.kv = st.sched->kv_stats();
      if (st.tier.budget) {
        s.budget_used = st.tier.budget->used();
        s.budget_limit = st.tier.budget->limit();
      }
      s.generated_tokens = c.generated_tokens;
      s.steps = c.steps;
      s.prefill_seconds = c.prefill_ns / 1e9;
      s.decode_seconds = c.decode_ns / 1e9;
      return s;
    },
  };
}

} // namespace

engine_actor spawn_engine(caf::actor_system& sys, engine_tier tier) {
  return sys.spawn<caf::detached>(engine_behavior, std::move(tier));
}

} // namespace shoal::actors
