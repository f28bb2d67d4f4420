// Witness actor: the audit log. Buffers records and commits them to LMDB in
// batches (at most `batch_max` records or `flush_interval_ms` per write
// transaction); joins feedback to its record.
#include "actors/actors.hpp"
#include "actors/time.hpp"
#include "proto/error.hpp"
#include "proto/messages.hpp"
#include "proto/records.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <unordered_map>

namespace shoal::actors {

namespace {

using namespace proto;

struct witness_state {
  witness_config cfg;
  std::shared_ptr<store::environment> env;
  std::vector<witness_entry> pending;
  std::vector<bool> pending_is_new;
  std::unordered_map<uint64_t, size_t> pending_pos; // request id -> index in pending
  witness_stats stats;
  static inline const char* name = "witness";

  void add(witness_entry&& e, bool is_new) {
    auto id = e.decision.request_id;
    if (auto it = pending_pos.find(id); it != pending_pos.end()) {
      pending[it->second] = std::move(e);
      return;
    }
    pending_pos.emplace(id, pending.size());
    pending.push_back(std::move(e));
    pending_is_new.push_back(is_new);
    if (pending.size() >= cfg.batch_max)
      commit();
  }

  void commit() {
    if (pending.empty())
      return;
    std::vector<store::write_op> ops;
    ops.reserve(pending.size());
    for (const auto& e : pending)
      ops.push_back({store::table::witness, store::u64_key(e.decision.request_id), encode(e)});
    if (auto err = env->write(ops)) {
      // Keep the records and retry on the next tick; count the failure.
      ++stats.n_errors;
      spdlog::error("witness: commit of {} records failed: {}", pending.size(),
                    view(err).message);
      return;
    }
    for (bool n : pending_is_new)
      stats.n_records += n ? 1 : 0;
    ++stats.n_transactions;
    pending.clear();
    pending_is_new.clear();
    pending_pos.clear();
  }

  caf::expected<witness_entry> lookup(uint64_t id) {
    if (auto it = pending_pos.find(id); it != pending_pos.end())
      return pending[it->second];
    auto bytes = env->get(store::table::witness, store::u64_key(id));
    if (!bytes)
      return bytes.error();
    if (!bytes->has_value())
      return make_error(errc::not_found, "unknown request_id " + format_request_id(id));
    return decode_witness(**bytes);
  }
};

caf::behavior witness_actor(caf::stateful_actor<witness_state>* self, witness_config cfg,
                            std::shared_ptr<store::environment> env) {
  self->state.cfg = cfg;
  self->state.env = std::move(env);
  auto every = std::chrono::milliseconds(cfg.flush_interval_ms);
  self->delayed_send(self, every, tick_atom::value);
  self->set_exit_handler([self](caf::exit_msg& msg) {
    self->state.commit();
    self->quit(msg.reason);
  });
  return {
    [self](record_atom, witness_entry& e) { self->state.add(std::move(e), true); },
    [self](feedback_atom, const feedback& fb) {
      auto& st = self->state;
      auto rec = st.lookup(fb.request_id);
      if (!rec) {
        spdlog::warn("witness: feedback for {}: {}", format_request_id(fb.request_id),
                     view(rec.error()).message);
        return;
      }
      rec->has_feedback = true;
      rec->quality = fb.quality;
      rec->feedback_ms = fb.time_ms;
      if (fb.completion_tokens > 0) {
        rec->prompt_tokens = fb.prompt_tokens;
        rec->completion_tokens = fb.completion_tokens;
      }
      ++st.stats.n_feedback;
      st.add(std::move(*rec), false);
    },
    [self](usage_atom, uint64_t id, uint32_t prompt, uint32_t completion) {
      // The node's engine answered a routed request: its usage joins the record.
      auto& st = self->state;
      auto rec = st.lookup(id);
      if (!rec) {
        spdlog::warn("witness: usage for {}: {}", format_request_id(id),
                     view(rec.error()).message);
        return;
      }
      rec->prompt_tokens = prompt;
      rec->completion_tokens = completion;
      st.add(std::move(*rec), false);
    },
    [self](lookup_atom, uint64_t id) -> caf::result<witness_entry> {
      auto rec = self->state.lookup(id);
      if (!rec)
        return rec.error();
      return std::move(*rec);
    },
    [self](stats_atom) {
      auto s = self->state.stats;
      s.n_pending = self->state.pending.size();
      return s;
    },
    [self, every](tick_atom) {
      self->state.commit();
      self->delayed_send(self, every, tick_atom::value);
    },
  };
}

} // namespace

caf::actor spawn_witness(caf::actor_system& sys, witness_config cfg,
                         std::shared_ptr<store::environment> env) {
  return sys.spawn<caf::detached>(witness_actor, cfg, std::move(env));
}

} // namespace shoal::actors
