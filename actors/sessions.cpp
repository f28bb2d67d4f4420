#include "actors/sessions.hpp"

#include "core/clock.hpp"
#include "proto/error.hpp"
#include "kernels/vector.hpp"
#include "proto/messages.hpp"
#include "proto/records.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <mutex>

namespace shoal::actors {

namespace {

std::string record_key(std::string_view id) {
  return std::string(id);
}

} // namespace

std::string encode(const session& s) {
  return proto::encode(proto::session_record{s.id, s.user, s.context, s.turns, s.adapter,
                                             s.created_ms, s.last_ms, s.kv.tier, s.kv.tokens,
                                             s.kv.pages});
}

core::result<session> decode_session(std::string_view in) {
  auto r = proto::decode_session(in);
  if (!r)
    return core::error(errc::corrupt_data, "session record: " + r.err().message);
  return session{std::move(r->id),
                 std::move(r->user),
                 std::move(r->context),
                 r->turns,
                 std::move(r->adapter),
                 r->created_ms,
                 r->last_ms,
                 {std::move(r->kv_tier), r->kv_tokens, r->kv_pages}};
}

core::error check_session_id(std::string_view id) {
  if (id.empty() || id.size() > 128)
    return {errc::invalid_argument, "session_id must be 1-128 characters", "session_id"};
  for (char c : id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == ':'
          || c == '-'))
      return {errc::invalid_argument, "session_id may hold only letters, digits and . _ : -",
              "session_id"};
  return {};
}

core::result<std::shared_ptr<session_index>>
session_index::open(std::shared_ptr<store::environment> env,
                    std::shared_ptr<const crypto::sealer> seal) {
  std::shared_ptr<session_index> idx(new session_index);
  idx->env_ = std::move(env);
  idx->seal_ = std::move(seal);
  if (!idx->persistent())
    return idx;
  size_t skipped = 0;
  auto err = idx->env_->for_each(store::table::sessions, [&](std::string_view k,
                                                             std::string_view v) {
    auto plain = idx->seal_->open(v, k);
    if (!plain) {
      ++skipped;
      return true;
    }
    auto s = decode_session(*plain);
    if (!s || s->id != k) {
      ++skipped;
      return true;
    }
    if (!s->user.empty())
      idx->by_user_[s->user].insert(s->id);
    auto id = s->id;
    idx->shard_of(id).by_id.emplace(std::move(id), std::make_shared<const session>(std::move(*s)));
    return true;
  });
  if (err)
    return err;
  if (skipped > 0)
    spdlog::warn("sessions: {} stored session record(s) did not open or decode; skipped", skipped);
  return idx;
}

void session_index::persist(const session& s) {
  if (!persistent())
    return;
  std::lock_guard<std::mutex> guard(dirty_mutex_);
  dirty_[s.id] = true; // written by the next flush
}

void session_index::unpersist(const std::string& id) {
  if (!persistent())
    return;
  std::lock_guard<std::mutex> guard(dirty_mutex_);
  dirty_[id] = false; // deleted by the next flush
}

size_t session_index::flush() {
  if (!persistent())
    return 0;
  std::unordered_map<std::string, bool> batch;
  {
    std::lock_guard<std::mutex> guard(dirty_mutex_);
    batch.swap(dirty_);
  }
  if (batch.empty())
    return 0;
  std::vector<store::write_op> ops;
  ops.reserve(batch.size());
  for (const auto& [id, live] : batch) {
    auto k = record_key(id);
    auto s = live ? find(id) : nullptr;
    if (s)
      ops.push_back({store::table::sessions, k, seal_->seal(encode(*s), k)});
    else
      ops.push_back({store::table::sessions, k, "", true});
  }
  if (auto err = env_->write(ops)) {
    spdlog::warn("sessions: writing {} session record(s) failed: {}", ops.size(), err.message);
    std::lock_guard<std::mutex> guard(dirty_mutex_);
    for (const auto& [id, live] : batch)
      dirty_.try_emplace(id, live); // retried by the next flush
    return 0;
  }
  return ops.size();
}

session_index::~session_index() {
  flush();
}

session session_index::record_turn(const std::string& id, const std::string& user,
                                   std::span<const float> embedding, kv_reference kv,
                                   int64_t now_ms) {
  // Optimistic: build the new record outside the lock, swap it in if no
  // other writer replaced the old one meanwhile (readers never wait long).
  for (;;) {
    shard& sh = shard_of(id);
    std::shared_ptr<const session> old;
    {
      std::shared_lock lock(sh.mutex);
      if (auto it = sh.by_id.find(id); it != sh.by_id.end())
        old = it->second;
    }
    auto s = std::make_shared<session>(old ? *old : session{});
    if (!old) {
      s->id = id;
      s->created_ms = now_ms;
    }
    if (!user.empty())
      s->user = user;
    // Running mean of the turns' embeddings, renormalized.
    if (!embedding.empty()) {
      if (s->context.size() != embedding.size())
        s->context.assign(embedding.size(), 0.0f);
      float w = 1.0f / static_cast<float>(s->turns + 1);
      double norm = 0;
      for (size_t i = 0; i < embedding.size(); ++i) {
        s->context[i] = (1 - w) * s->context[i] + w * embedding[i];
        norm += double(s->context[i]) * s->context[i];
      }
      if (norm > 0)
        for (auto& x : s->context)
          x = static_cast<float>(x / std::sqrt(norm));
    }
    ++s->turns;
    s->last_ms = now_ms;
    s->kv = kv;
    {
      std::unique_lock lock(sh.mutex);
      auto& slot = sh.by_id[id];
      if (slot != old)
        continue; // another writer won: redo on its record
      slot = s;
      if (!old || old->user != s->user) {
        std::unique_lock users(users_mutex_);
        if (old && !old->user.empty())
          by_user_[old->user].erase(id);
        if (!s->user.empty())
          by_user_[s->user].insert(id);
      }
    }
    persist(*s);
    return *s;
  }
}

session_index::shard& session_index::shard_of(std::string_view id) const noexcept {
  return shards_[std::hash<std::string_view>{}(id) % n_shards];
}

std::shared_ptr<const session> session_index::find(std::string_view id) const {
  const shard& sh = shard_of(id);
  std::shared_lock lock(sh.mutex);
  auto it = sh.by_id.find(std::string(id));
  return it == sh.by_id.end() ? nullptr : it->second;
}

std::vector<session> session_index::by_user(std::string_view user) const {
  std::vector<std::string> ids;
  {
    std::shared_lock lock(users_mutex_);
    auto it = by_user_.find(std::string(user));
    if (it == by_user_.end())
      return {};
    ids.assign(it->second.begin(), it->second.end());
  }
  std::vector<std::shared_ptr<const session>> found;
  for (const auto& id : ids)
    if (auto s = find(id); s && s->user == user)
      found.push_back(std::move(s));
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    return a->last_ms != b->last_ms ? a->last_ms > b->last_ms : a->id < b->id;
  });
  std::vector<session> out;
  for (const auto& s : found)
    out.push_back(*s);
  return out;
}

std::vector<std::pair<session, float>> session_index::similar(std::span<const float> embedding,
                                                              size_t k) const {
  std::vector<std::pair<std::shared_ptr<const session>, float>> scored;
  for (const shard& sh : shards_) {
    std::shared_lock lock(sh.mutex);
    for (const auto& [id, s] : sh.by_id)
      if (s->context.size() == embedding.size())
        scored.emplace_back(s, kernels::dot(embedding, s->context));
  }
  k = std::min(k, scored.size());
  std::partial_sort(scored.begin(), scored.begin() + static_cast<ptrdiff_t>(k), scored.end(),
                    [](const auto& a, const auto& b) {
                      return a.second != b.second ? a.second > b.second : a.first->id < b.first->id;
                    });
  std::vector<std::pair<session, float>> out;
  for (size_t i = 0; i < k; ++i)
    out.emplace_back(*scored[i].first, scored[i].second);
  return out;
}

bool session_index::erase(std::string_view id) {
  std::string key(id);
  {
    shard& sh = shard_of(key);
    std::unique_lock lock(sh.mutex);
    auto it = sh.by_id.find(key);
    if (it == sh.by_id.end())
      return false;
    if (!it->second->user.empty()) {
      std::unique_lock users(users_mutex_);
      by_user_[it->second->user].erase(key);
    }
    sh.by_id.erase(it);
  }
  unpersist(key);
  return true;
}

size_t session_index::expire(int64_t now_ms, int64_t idle_ms) {
  std::vector<std::string> gone;
  for (shard& sh : shards_) {
    std::unique_lock lock(sh.mutex);
    for (auto it = sh.by_id.begin(); it != sh.by_id.end();) {
      if (now_ms - it->second->last_ms > idle_ms) {
        if (!it->second->user.empty()) {
          std::unique_lock users(users_mutex_);
          by_user_[it->second->user].erase(it->first);
        }
        gone.push_back(it->first);
        it = sh.by_id.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const auto& id : gone)
    unpersist(id);
  return gone.size();
}

size_t session_index::size() const {
  size_t n = 0;
  for (const shard& sh : shards_) {
    std::shared_lock lock(sh.mutex);
    n += sh.by_id.size();
  }
  return n;
}

// ---- the reaper ------------------------------------------------------------------

namespace {

constexpr std::chrono::milliseconds flush_every{200};

struct reaper_state {
  static inline const char* name = "shoal.session_reaper";
};

session_reaper_actor::behavior_type
reaper_behavior(session_reaper_actor::stateful_pointer<reaper_state> self,
                std::shared_ptr<session_index> index, std::chrono::milliseconds every,
                int64_t idle_ms) {
  self->delayed_send(self, every, proto::tick_atom::value);
  self->delayed_send(self, flush_every, proto::flush_atom::value);
  return {
    [=](proto::tick_atom) {
      if (size_t n = index->expire(core::utc_now_ms(), idle_ms); n > 0)
        spdlog::info("sessions: {} idle session(s) expired", n);
      self->delayed_send(self, every, proto::tick_atom::value);
    },
    [=](proto::flush_atom) {
      index->flush();
      self->delayed_send(self, flush_every, proto::flush_atom::value);
    },
  };
}

} // namespace

session_reaper_actor spawn_session_reaper(caf::actor_system& sys,
                                          std::shared_ptr<session_index> index,
                                          std::chrono::milliseconds every, int64_t idle_ms) {
  return sys.spawn<caf::detached>(reaper_behavior, std::move(index), every, idle_ms);
}

} // namespace shoal::actors
