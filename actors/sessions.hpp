#pragma once
/// @file The session index: one record per conversation a client names with
/// a session id — user, context embedding, turn count, active adapter, last
/// activity and a reference to its KV cache (tier, pages, tokens; the pages
/// themselves are found again by their prefix hashes, in memory or in the
/// spill store) — with look-up by id, by user and by context similarity, and
/// expiry of idle sessions.
///
/// Persistence: with a sealer, changed sessions are written to the
/// `sessions` table sealed (crypto/sealer.hpp; ad = the record key) in one
/// transaction per flush() — the reaper flushes every 200 ms, and the index
/// flushes when destroyed — and the index is reloaded at start; a crash
/// loses at most the last 200 ms of turns. Without a sealer, sessions live
/// in memory only (nothing unencrypted is ever written).
///
/// Thread-safety: all members are thread-safe (sharded shared mutexes:
/// look-ups run in parallel; a turn builds its new record outside any lock
/// and only swaps a pointer under its shard's lock). Writes to LMDB happen on the calling
/// thread: call them from HTTP worker threads or detached actors, never from
/// a cooperatively scheduled actor.

#include "store/environment.hpp"
#include "crypto/sealer.hpp"
#include "proto/messages.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace shoal::actors {

/// Where a session's KV cache is: the tier whose engine holds (or spilled)
/// its pages, and how much of it there is.
struct kv_reference {
  std::string tier;
  uint32_t tokens = 0; ///< prompt + completion tokens of the last turn
  uint32_t pages = 0;  ///< ⌈tokens / page_tokens⌉
};

struct session {
  std::string id;
  std::string user;           ///< OpenAI `user`, if the client sent one
  std::vector<float> context; ///< L2-normalized running mean of the turns' embeddings
  uint32_t turns = 0;
  std::string adapter;                 ///< active LoRA adapter ("" = none)
  int64_t created_ms = 0, last_ms = 0; ///< UTC milliseconds
  kv_reference kv;
};

/// A session record as stored (proto::session_record, Cap'n Proto; exposed for tests).
std::string encode(const session& s);
/// Errors (corrupt_data): truncated or malformed bytes.
core::result<session> decode_session(std::string_view bytes);

/// Session ids: 1-128 characters of [A-Za-z0-9._:-]. Errors
/// (invalid_argument, context "session_id"): the message names the rule.
core::error check_session_id(std::string_view id);

class session_index {
public:
  /// @param env the store (nullptr: memory only); @param seal required for
  /// persistence (nullptr: memory only). Loads the sealed records of `env`.
  /// Errors: storage failures; a record that fails to open is logged and skipped.
  static core::result<std::shared_ptr<session_index>>
  open(std::shared_ptr<store::environment> env, std::shared_ptr<const crypto::sealer> seal);

  /// Records a turn of session `id`: creates it if new; sets the user (when
  /// given), the KV reference and last activity; blends `embedding` into the
  /// context (running mean, renormalized). Returns the session after the turn.
  session record_turn(const std::string& id, const std::string& user,
                      std::span<const float> embedding, kv_reference kv, int64_t now_ms);

  /// The session (shared, immutable: a turn replaces the record, so the
  /// pointer stays valid and unchanged), or nullptr. No copy: O(1).
  std::shared_ptr<const session> find(std::string_view id) const;
  /// Sessions of a user, most recent first.
  std::vector<session> by_user(std::string_view user) const;
  /// The k sessions whose context is most similar (cosine) to `embedding`,
  /// most similar first, with their similarity. Exact scan (kernels::dot).
  std::vector<std::pair<session, float>> similar(std::span<const float> embedding, size_t k) const;
  /// Removes a session. False if unknown.
  bool erase(std::string_view id);
  /// Removes sessions idle for more than `idle_ms`; returns how many.
  size_t expire(int64_t now_ms, int64_t idle_ms);

  size_t size() const;
  bool persistent() const noexcept { return env_ && seal_; }
  /// Writes the sessions changed since the last flush (and deletes removed
  /// ones) in one transaction; returns the records written. On a storage
  /// error they stay pending (logged).
  size_t flush();
  ~session_index();

private:
  session_index() = default;
  void persist(const session& s);
  void unpersist(const std::string& id);

  std::shared_ptr<store::environment> env_;
  std::shared_ptr<const crypto::sealer> seal_;
  /// Records by id in 64 shards (by hash of the id), each under its own
  /// lock: a turn being written blocks 1/64 of the look-ups, briefly.
  struct shard {
    mutable std::shared_mutex mutex;
    std::unordered_map<std::string, std::shared_ptr<const session>> by_id;
  };
  static constexpr size_t n_shards = 64;
  shard& shard_of(std::string_view id) const noexcept;
  mutable std::array<shard, n_shards> shards_;
  mutable std::shared_mutex users_mutex_; ///< guards by_user_; taken after a shard's lock
  std::unordered_map<std::string, std::unordered_set<std::string>> by_user_;
  std::mutex dirty_mutex_;
  std::unordered_map<std::string, bool> dirty_; ///< id -> write (true) or delete (false)
};

/// The session reaper, a thin shell over session_index: its only messages
/// are its own timers — `tick` expires idle sessions (session_index::expire),
/// `flush` writes changed sessions (session_index::flush) every 200 ms.
using session_reaper_actor =
  caf::typed_actor<caf::reacts_to<proto::tick_atom>, caf::reacts_to<proto::flush_atom>>;

/// Spawns the session reaper for `index`: expires sessions idle for more
/// than `idle_ms` every `every`, flushes every 200 ms. Detached (its own
/// thread): it writes to LMDB.
session_reaper_actor spawn_session_reaper(caf::actor_system& sys,
                                          std::shared_ptr<session_index> index,
                                          std::chrono::milliseconds every, int64_t idle_ms);

} // namespace shoal::actors
