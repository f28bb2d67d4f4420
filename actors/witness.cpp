// Witness actor: the audit log. Buffers records and commits them to LMDB in
// batches (at most `batch_max` records or `flush_interval_ms` per write
// transaction); joins feedback and usage to their record; when the deep loop
// asks, moves records older than `archive_after_s` to zstd archive segments
// (store/archive.hpp) in <data_dir>/witness-archive, where look-ups still
// find them.
#include "actors/actors.hpp"
#include "core/clock.hpp"
#include "proto/error.hpp"
#include "proto/messages.hpp"
#include "proto/records.hpp"
#include "store/archive.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <iterator>
#include <optional>
#include <system_error>
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
      spdlog::error("witness: commit of {} records failed: {}", pending.size(), err.message);
      return;
    }
    for (bool n : pending_is_new)
      stats.n_records += n ? 1 : 0;
    ++stats.n_transactions;
    pending.clear();
    pending_is_new.clear();
    pending_pos.clear();
  }

  core::result<witness_entry> lookup(uint64_t id) {
    if (auto it = pending_pos.find(id); it != pending_pos.end())
      return pending[it->second];
    auto bytes = env->get(store::table::witness, store::u64_key(id));
    if (!bytes)
      return bytes.err();
    if (!bytes->has_value())
      return lookup_archived(id);
    auto w = decode_witness(**bytes);
    if (!w)
      return w.err();
    return std::move(*w);
  }

  std::filesystem::path archive_dir() const { return env->data_dir() / "witness-archive"; }

  /// A record no longer in LMDB: from the most recently written archive
  /// segment whose key range holds it (a record archived twice — feedback
  /// joined after its first archiving — is newest in the later segment).
  core::result<witness_entry> lookup_archived(uint64_t id) {
    std::vector<std::pair<std::filesystem::file_time_type, std::filesystem::path>> files;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(archive_dir(), ec)) {
      uint64_t first = 0, last = 0;
      if (store::parse_archive_file_name(e.path().filename().string(), first, last) && first <= id
          && id <= last)
        files.emplace_back(e.last_write_time(ec), e.path());
    }
    std::sort(files.rbegin(), files.rend()); // newest first
    for (const auto& [written, file] : files) {
      auto seg = store::read_archive(file);
      if (!seg)
        return seg.err();
      auto& recs = seg->records;
      auto it =
        std::lower_bound(recs.begin(), recs.end(), id,
                         [](const store::archive_record& r, uint64_t k) { return r.key < k; });
      if (it != recs.end() && it->key == id) {
        auto w = decode_witness(it->value);
        if (!w)
          return w.err();
        return std::move(*w);
      }
    }
    return core::error(errc::not_found, "unknown request_id " + format_request_id(id));
  }

  /// An archiving run (the deep loop asks): one segment per message, so
  /// records and look-ups go on between segments.
  struct archive_run {
    uint64_t below = 0; ///< keys below this are due (request ids: UTC ms << 20)
    witness_archive_result result;
    caf::typed_response_promise<witness_archive_result> promise;
  };
  std::optional<archive_run> archiving;

  /// Moves the oldest due records, at most archive_segment_records, to one
  /// segment: durable on disk before its records leave LMDB (a crash in
  /// between leaves them in both; the next run archives them again).
  /// Returns how many moved (0: none left).
  core::result<size_t> archive_segment(uint64_t below) {
    std::vector<store::archive_record> batch;
    auto err = env->for_each(store::table::witness, [&](std::string_view k, std::string_view v) {
      auto key = store::parse_u64_key(k);
      if (!key || *key >= below || batch.size() >= cfg.archive_segment_records)
        return false;
      batch.push_back({*key, std::string(v)});
      return true;
    });
    if (err)
      return err;
    if (batch.empty())
      return size_t{0};
    const size_t n = batch.size();
    auto file = archive_dir() / store::archive_file_name(batch.front().key, batch.back().key);
    if (std::filesystem::exists(file)) {
      // The same key range was archived before (a crash before its records
      // left LMDB, or records that came back with feedback): merge, this
      // run's records winning.
      auto old = store::read_archive(file);
      if (!old)
        return old.err();
      std::vector<store::archive_record> merged;
      std::merge(batch.begin(), batch.end(), old->records.begin(), old->records.end(),
                 std::back_inserter(merged),
                 [](const auto& a, const auto& b) { return a.key < b.key; });
      merged.erase(std::unique(merged.begin(), merged.end(),
                               [](const auto& a, const auto& b) { return a.key == b.key; }),
                   merged.end());
      batch.swap(merged);
    }
    if (auto e = store::write_archive(file, store::table::witness, batch))
      return e;
    std::vector<store::write_op> ops;
    ops.reserve(batch.size());
    for (const auto& r : batch) // erasing a key already gone (merged from the file) is a no-op
      ops.push_back({store::table::witness, store::u64_key(r.key), {}, true});
    if (auto e = env->write(ops))
      return e;
    stats.n_archived += n;
    ++stats.n_archive_files;
    spdlog::info("witness: archived {} records to {}", n, file.string());
    return n;
  }
};

witness_actor::behavior_type witness_behavior(witness_actor::stateful_pointer<witness_state> self,
                                              witness_config cfg,
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
                     rec.err().message);
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
        spdlog::warn("witness: usage for {}: {}", format_request_id(id), rec.err().message);
        return;
      }
      rec->prompt_tokens = prompt;
      rec->completion_tokens = completion;
      st.add(std::move(*rec), false);
    },
    [self](lookup_atom, uint64_t id) -> caf::result<witness_entry> {
      auto rec = self->state.lookup(id);
      if (!rec)
        return make_error(std::move(rec).err());
      return std::move(*rec);
    },
    [self](archive_atom) -> caf::result<witness_archive_result> {
      auto& st = self->state;
      witness_archive_result res;
      if (st.cfg.archive_after_s == 0)
        return res; // archiving off
      res.cutoff_ms = core::utc_now_ms() - int64_t{st.cfg.archive_after_s} * 1000;
      if (res.cutoff_ms <= 0)
        return res;
      if (st.archiving)
        return make_error(errc::conflict, "an archiving run of the witness log is going on");
      st.commit();
      if (!st.pending.empty())
        return make_error(errc::storage_failure, "witness: pending records could not be committed");
      std::error_code ec;
      std::filesystem::create_directories(st.archive_dir(), ec);
      if (ec)
        return make_error(errc::storage_failure,
                          "witness archive " + st.archive_dir().string() + ": " + ec.message());
      auto rp = self->make_response_promise<witness_archive_result>();
      st.archiving =
        witness_state::archive_run{static_cast<uint64_t>(res.cutoff_ms) << 20, res, rp};
      self->send(self, archive_step_atom::value);
      return rp;
    },
    [self](archive_step_atom) {
      auto& st = self->state;
      if (!st.archiving)
        return;
      auto& run = *st.archiving;
      auto n = st.archive_segment(run.below);
      if (n && *n > 0) {
        run.result.records += *n;
        ++run.result.files;
        self->send(self, archive_step_atom::value); // queued records go first
        return;
      }
      if (n)
        run.promise.deliver(run.result);
      else
        run.promise.deliver(make_error(std::move(n).err()));
      st.archiving.reset();
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

witness_actor spawn_witness(caf::actor_system& sys, witness_config cfg,
                            std::shared_ptr<store::environment> env) {
  return sys.spawn<caf::detached>(witness_behavior, cfg, std::move(env));
}

} // namespace shoal::actors
