#include "router/pattern_bank.hpp"

#include "core/clock.hpp"
#include "router/crdt.hpp"
#include "kernels/vector.hpp"
#include "core/error.hpp"

#include <xxhash.h>

#include <algorithm>
#include <cmath>

namespace shoal::router {

namespace {

/// The pattern index's int8 arithmetic: Shoal's dispatched kernels.
store::int8_ops index_ops() {
  return {&kernels::quantize_i8, &kernels::dot_i8};
}

uint64_t now_ns() {
  return static_cast<uint64_t>(core::steady_now_ns());
}

std::vector<double> tier_costs(const std::vector<tier_config>& tiers) {
  std::vector<double> costs;
  for (const auto& t : tiers)
    costs.push_back(t.cost);
  return costs;
}

} // namespace

pattern_bank::pattern_bank(uint32_t dim, router_config cfg, std::shared_ptr<store::environment> env)
  : dim_(dim), cfg_(std::move(cfg)), env_(std::move(env)), index_(dim, cfg_.index, index_ops()),
    policy_({cfg_.prior, cfg_.global_prior, cfg_.similarity_power, cfg_.exploration},
            tier_costs(cfg_.tiers)) {
  rng_.seed(cfg_.seed != 0 ? cfg_.seed : std::random_device{}());
  global_.resize(cfg_.tiers.size());
}

void pattern_bank::add_to_global(const std::vector<proto::tier_stat>& tiers) {
  for (size_t t = 0; t < global_.size(); ++t) {
    global_[t].sum_quality += tiers[t].sum_quality;
    global_[t].sum_quality2 += tiers[t].sum_quality2;
    global_[t].count += tiers[t].count;
  }
}

void pattern_bank::adopt(const proto::pattern_record& r) {
  uint64_t id = r.id;
  next_id_ = std::max(next_id_, id + 1);
  clock_ = std::max(clock_, r.version);
  pattern_state st;
  st.tiers = r.tiers;
  st.hits = r.hits;
  st.created_ms = r.created_ms;
  st.updated_ms = r.updated_ms;
  st.version = r.version;
  st.origin_node = r.origin_node == cfg_.node_id ? 0 : r.origin_node;
  st.origin_id = st.origin_node == 0 ? 0 : r.origin_id;
  st.peers = r.peers;
  st.total = st.tiers;
  auto k = key_of(id, st);
  if (st.version != 0)
    count_contribution(cfg_.node_id, k, 0, st.version);
  for (const auto& c : st.peers) {
    router::add_tiers(st.total, c.tiers);
    count_contribution(c.node, k, 0, c.version);
  }
  add_to_global(st.total);
  if (st.origin_node != 0)
    by_origin_[{st.origin_node, st.origin_id}] = id;
  stats_[id] = std::move(st);
}

void pattern_bank::touch_outbox(uint64_t id) {
  if (track_deltas_)
    outbox_.insert(id);
}

pattern_bank::origin_key pattern_bank::key_of(uint64_t id, const pattern_state& st) const noexcept {
  return st.origin_node == 0 ? origin_key{cfg_.node_id, id}
                             : origin_key{st.origin_node, st.origin_id};
}

proto::pattern_record pattern_bank::make_record(uint64_t id, const pattern_state& st) const {
  proto::pattern_record r;
  r.id = id;
  r.tiers = st.tiers;
  r.hits = st.hits;
  r.created_ms = st.created_ms;
  r.updated_ms = st.updated_ms;
  r.version = st.version;
  r.origin_node = st.origin_node;
  r.origin_id = st.origin_id;
  r.peers = st.peers;
  return r;
}

std::filesystem::path pattern_bank::index_path() const {
  return env_->data_dir() / "patterns.hnsw";
}

uint64_t pattern_bank::stats_bytes() const noexcept {
  return 4ull * dim_ + 64ull * cfg_.tiers.size() + 160;
}

uint64_t pattern_bank::index_slot_bytes() const noexcept {
  return dim_ + 2ull * 16 * sizeof(uint32_t);
}

bool pattern_bank::reserve_pattern() {
  if (!budget_)
    return true;
  if (!budget_->try_reserve(core::memory_budget::use::router, pattern_bytes())) {
    ++budget_refusals_;
    return false;
  }
  reserved_ += pattern_bytes();
  return true;
}

core::error pattern_bank::set_budget(std::shared_ptr<core::memory_budget> budget) {
  // Live patterns, the removed slots the index still holds, the categories.
  uint64_t need = budget ? stats_.size() * pattern_bytes() + index_.removed() * index_slot_bytes()
                             + category_bytes()
                         : 0;
  if (budget && !budget->try_reserve(core::memory_budget::use::router, need))
    return core::error(errc::invalid_argument,
                       "the " + std::to_string(stats_.size()) + " stored patterns need "
                         + std::to_string(need >> 20) + " MiB but memory.budget_mb allows "
                         + std::to_string(budget->limit() >> 20) + " MiB with "
                         + std::to_string(budget->used() >> 20) + " MiB in use");
  if (budget_)
    budget_->release(core::memory_budget::use::router, reserved_);
  budget_ = std::move(budget);
  reserved_ = need;
  return {};
}

pattern_bank::~pattern_bank() {
  if (budget_)
    budget_->release(core::memory_budget::use::router, reserved_);
}

core::result<std::unique_ptr<pattern_bank>>
pattern_bank::open(uint32_t dim, router_config cfg, std::shared_ptr<store::environment> env) {
  std::unique_ptr<pattern_bank> bank(new pattern_bank(dim, std::move(cfg), std::move(env)));
  if (bank->env_ != nullptr)
    if (auto err = bank->load())
      return err;
  return bank;
}

core::error pattern_bank::load() {
  std::vector<proto::pattern_record> records;
  core::error bad;
  auto err = env_->for_each(store::table::patterns, [&](std::string_view, std::string_view v) {
    auto rec = proto::decode_pattern(v);
    if (!rec) {
      bad = rec.err();
      return false;
    }
    if (rec->tiers.empty() && rec->version != 0) {
      // Retired by consolidation: only this node's zero contribution remains.
      retired_[rec->id] = rec->version;
      next_id_ = std::max(next_id_, rec->id + 1);
      clock_ = std::max(clock_, rec->version);
      count_contribution(cfg_.node_id, {cfg_.node_id, rec->id}, 0, rec->version);
      return true;
    }
    bool peers_ok = std::all_of(rec->peers.begin(), rec->peers.end(),
                                [&](const auto& c) { return c.tiers.size() == cfg_.tiers.size(); });
    if (rec->centroid.size() != dim_ || rec->tiers.size() != cfg_.tiers.size() || !peers_ok) {
      bad = core::error(errc::corrupt_data, "pattern " + std::to_string(rec->id) + " has dimension "
                                              + std::to_string(rec->centroid.size()) + " and "
                                              + std::to_string(rec->tiers.size())
                                              + " tiers; the config says dimension "
                                              + std::to_string(dim_) + " and "
                                              + std::to_string(cfg_.tiers.size()) + " tiers");
      return false;
    }
    records.push_back(std::move(*rec));
    return true;
  });
  if (err)
    return err;
  if (bad)
    return bad;
  for (const auto& r : records)
    adopt(r);
  // Ids up to the reserved bound may have been handed out (and announced)
  // after the last write of patterns: never reuse them.
  auto reserved = env_->get(store::table::router_state, "ids");
  if (!reserved)
    return reserved.err();
  if (reserved->has_value()) {
    auto ids = proto::decode_pattern_ids(**reserved);
    if (!ids)
      return ids.err();
    next_id_ = std::max(next_id_, ids->reserved_up_to);
  }
  id_reserved_ = next_id_;
  auto seq = env_->get(store::table::federation_state, "stream");
  if (!seq)
    return seq.err();
  if (seq->has_value()) {
    auto pos = proto::decode_stream_position(**seq);
    if (!pos)
      return pos.err();
    stream_seq_ = pos->seq;
  }
  if (auto err = load_categories())
    return err;
  // Try the saved index; rebuild from LMDB when it is missing, corrupt or
  // stale, or holds more removed slots (consolidation) than live vectors
  // and over 4096 of them (a small bank's removed slots cost little).
  auto ck_bytes = env_->get(store::table::router_state, "pattern_index");
  if (!ck_bytes)
    return ck_bytes.err();
  bool loaded = false;
  if (ck_bytes->has_value()) {
    auto ck = proto::decode_index_checkpoint(**ck_bytes);
    if (ck && ck->n_patterns == records.size()) {
      auto idx =
        store::pattern_index::load(index_path(), dim_, cfg_.index, index_ops(), ck->file_hash);
      if (idx && idx->size() == records.size()
          && idx->removed() <= std::max<size_t>(idx->size(), 4096)) {
        index_ = std::move(*idx);
        loaded = true;
        for (auto& r : records)
          if (!index_.contains(r.id)) {
            loaded = false;
            break;
          }
      }
    }
  }
  if (!loaded) {
    rebuilt_ = !records.empty() || std::filesystem::exists(index_path());
    index_ = store::pattern_index(dim_, cfg_.index, index_ops());
    for (auto& r : records)
      if (auto e = index_.add(r.id, r.centroid))
        return e;
  }
  return {};
}

route_result pattern_bank::route(std::span<const float> embedding, int64_t now_ms) {
  route_result res;
  auto t0 = now_ns();
  auto hits = index_.search(embedding, cfg_.k);
  if (!pending_.empty()) {
    // Patterns not yet indexed: exact scan, merged into the hits by similarity.
    for (const auto& [id, v] : pending_)
      hits.push_back({id, kernels::dot(v, embedding)});
    std::sort(hits.begin(), hits.end(),
              [](const auto& a, const auto& b) { return a.similarity > b.similarity; });
    if (hits.size() > cfg_.k)
      hits.resize(cfg_.k);
  }
  auto t1 = now_ns();
  const size_t n_tiers = cfg_.tiers.size();
  res.neighbors.reserve(hits.size());
  nb_.clear();
  for (const auto& h : hits) {
    res.neighbors.push_back({h.id, h.similarity});
    auto it = stats_.find(h.id);
    nb_.push_back({h.similarity, it == stats_.end() ? nullptr : &it->second.total});
  }
  policy_.decide(nb_, global_, rng_, res);
  bool join = !hits.empty()
              && (hits.front().similarity >= cfg_.new_pattern_threshold
                  || stats_.size() >= cfg_.max_patterns);
  // A new pattern needs room in the memory budget; without it, join (the
  // very first pattern is made regardless: there is nothing to join).
  if (!join && !hits.empty() && !reserve_pattern())
    join = true;
  else if (!join && hits.empty())
    reserve_pattern();
  if (join) {
    res.pattern_id = hits.front().id;
    auto& st = stats_[res.pattern_id];
    ++st.hits;
    st.updated_ms = now_ms;
    dirty_.insert(res.pattern_id);
  } else {
    uint64_t id = allocate_id();
    pending_.emplace_back(id, std::vector<float>(embedding.begin(), embedding.end()));
    unflushed_[id] = pending_.back().second;
    auto& st = stats_[id];
    st.tiers.assign(n_tiers, {});
    st.total.assign(n_tiers, {});
    st.hits = 1;
    st.created_ms = st.updated_ms = now_ms;
    st.version = tick();
    count_contribution(cfg_.node_id, {cfg_.node_id, id}, 0, st.version);
    dirty_.insert(id);
    touch_outbox(id);
    if (track_deltas_)
      unannounced_[id] = pending_.back().second;
    res.pattern_id = id;
    res.new_pattern = true;
  }
  res.search_ns = t1 - t0;
  res.decide_ns = now_ns() - t1;
  return res;
}

core::error pattern_bank::learn(uint64_t pattern_id, uint32_t tier, double quality,
                                int64_t now_ms) {
  auto it = stats_.find(pattern_id);
  if (it == stats_.end())
    return core::error(errc::not_found, "unknown pattern " + std::to_string(pattern_id));
  if (tier >= cfg_.tiers.size() || !(quality >= 0 && quality <= 1))
    return core::error(errc::invalid_argument, "tier or quality out of range");
  for (auto* s : {&it->second.tiers[tier], &it->second.total[tier], &global_[tier]}) {
    s->sum_quality += quality;
    s->sum_quality2 += quality * quality;
    ++s->count;
  }
  uint64_t old_version = it->second.version;
  it->second.version = tick();
  count_contribution(cfg_.node_id, key_of(pattern_id, it->second), old_version, it->second.version);
  it->second.updated_ms = now_ms;
  dirty_.insert(pattern_id);
  touch_outbox(pattern_id);
  return {};
}

proto::pattern_record pattern_bank::record(uint64_t id) const {
  auto it = stats_.find(id);
  if (it == stats_.end())
    return {};
  auto r = make_record(id, it->second);
  r.centroid = centroid(id);
  return r;
}

core::error pattern_bank::insert(proto::pattern_record rec) {
  if (rec.centroid.size() != dim_ || rec.tiers.size() != cfg_.tiers.size())
    return core::error(errc::invalid_argument, "pattern dimension or tier count mismatch");
  if (auto err = index_.add(rec.id, rec.centroid))
    return err;
  adopt(rec);
  unflushed_[rec.id] = std::move(rec.centroid);
  dirty_.insert(rec.id);
  return {};
}

core::error pattern_bank::index_pending() {
  size_t done = 0;
  core::error err;
  for (; done < pending_.size(); ++done) {
    if (auto e = index_.add(pending_[done].first, pending_[done].second)) {
      err = e;
      break;
    }
  }
  pending_.erase(pending_.begin(), pending_.begin() + static_cast<ptrdiff_t>(done));
  return err;
}

pattern_batch pattern_bank::take_dirty() {
  pattern_batch b;
  b.records.reserve(dirty_.size());
  for (uint64_t id : dirty_) {
    auto it = stats_.find(id);
    if (it == stats_.end())
      continue;
    auto r = make_record(id, it->second);
    if (auto u = unflushed_.find(id); u != unflushed_.end())
      r.centroid = std::move(u->second); // else: already in LMDB, read back by write_batch
    b.records.push_back(std::move(r));
  }
  dirty_.clear();
  for (const auto& [id, version] : removed_) {
    proto::pattern_record r;
    r.id = id;
    r.version = version; // no tiers: erase (0) or retire (see pattern_batch)
    if (auto u = unflushed_.find(id); u != unflushed_.end() && version != 0)
      r.centroid = std::move(u->second);
    b.records.push_back(std::move(r));
  }
  removed_.clear();
  if (stream_seq_dirty_) {
    b.stream_seq = stream_seq_;
    stream_seq_dirty_ = false;
  }
  unflushed_.clear(); // every unflushed pattern is dirty, so it is in the batch
  return b;
}

void pattern_bank::restore(pattern_batch&& b) {
  if (b.stream_seq)
    stream_seq_dirty_ = true;
  for (auto& r : b.records) {
    if (r.tiers.empty() && stats_.count(r.id) != 0)
      continue; // a removal undone since (revive)
    if (!r.centroid.empty())
      unflushed_.try_emplace(r.id, std::move(r.centroid));
    if (r.tiers.empty())
      removed_.try_emplace(r.id, r.version);
    else
      dirty_.insert(r.id);
  }
}

core::error pattern_bank::write_batch(store::environment& env, const pattern_batch& b) {
  std::vector<store::write_op> ops;
  ops.reserve(b.records.size() + 1);
  // Centroids carried by this batch (a new pattern and a later update of it
  // may meet in one batch after a failed write was merged with the next).
  std::unordered_map<uint64_t, const std::vector<float>*> carried;
  for (const auto& r : b.records)
    if (!r.centroid.empty())
      carried[r.id] = &r.centroid;
  for (const auto& r : b.records) {
    if (r.tiers.empty() && r.version == 0) { // erased by consolidation
      ops.push_back({store::table::patterns, store::u64_key(r.id), {}, true});
    } else if (r.centroid.empty()) {
      proto::pattern_record full = r;
      if (auto c = carried.find(r.id); c != carried.end()) {
        full.centroid = *c->second;
      } else {
        auto bytes = env.get(store::table::patterns, store::u64_key(r.id));
        if (!bytes)
          return bytes.err();
        if (!bytes->has_value())
          return core::error(errc::internal, "pattern " + std::to_string(r.id)
                                               + " has no stored centroid to update");
        auto old = proto::decode_pattern(**bytes);
        if (!old)
          return old.err();
        full.centroid = std::move(old->centroid);
      }
      ops.push_back({store::table::patterns, store::u64_key(r.id), proto::encode(full)});
    } else {
      ops.push_back({store::table::patterns, store::u64_key(r.id), proto::encode(r)});
    }
  }
  if (b.checkpoint)
    ops.push_back({store::table::router_state, "pattern_index", proto::encode(*b.checkpoint)});
  if (b.stream_seq)
    ops.push_back({store::table::federation_state, "stream",
                   proto::encode(proto::stream_position_record{*b.stream_seq})});
  if (ops.empty())
    return {};
  if (auto err = env.write(ops))
    return err;
  return {};
}

core::error pattern_bank::flush() {
  if (env_ == nullptr || (dirty_.empty() && removed_.empty() && !stream_seq_dirty_))
    return {};
  auto b = take_dirty();
  if (auto err = write_batch(*env_, b)) {
    restore(std::move(b));
    return err;
  }
  return {};
}

std::vector<float> pattern_bank::centroid(uint64_t id) const {
  if (auto it = unflushed_.find(id); it != unflushed_.end())
    return it->second;
  if (env_ != nullptr) {
    // The exact f32 centroid lives in the pattern's LMDB record; the index
    // holds an int8 copy.
    auto bytes = env_->get(store::table::patterns, store::u64_key(id));
    if (bytes && bytes->has_value())
      if (auto rec = proto::decode_pattern(**bytes); rec && rec->centroid.size() == dim_)
        return std::move(rec->centroid);
  }
  return index_.get(id);
}

core::result<pattern_batch> pattern_bank::take_checkpoint(int64_t now_ms, bool finish_moves) {
  pattern_batch b;
  if (env_ == nullptr)
    return b;
  if (auto err = index_pending())
    return err;
  if (finish_moves)
    if (auto err = reindex_moved(reindex_.size()))
      return err;
  auto h = index_.save(index_path());
  if (!h)
    return h.err();
  b = take_dirty();
  b.checkpoint = proto::index_checkpoint{*h, index_.size(), now_ms};
  return b;
}

core::error pattern_bank::checkpoint(int64_t now_ms) {
  auto b = take_checkpoint(now_ms);
  if (!b)
    return b.err();
  if (env_ == nullptr)
    return {};
  if (auto err = write_batch(*env_, *b)) {
    restore(std::move(*b));
    return err;
  }
  return {};
}

} // namespace shoal::router

namespace shoal::router {

// -- federation ----------------------------------------------------------------

void pattern_bank::track_deltas(bool on) {
  track_deltas_ = on;
  if (!on) {
    outbox_.clear();
    unannounced_.clear();
  }
}

std::vector<proto::pattern_delta> pattern_bank::take_deltas(size_t max) {
  std::vector<proto::pattern_delta> out;
  out.reserve(std::min(max, outbox_.size()));
  for (auto it = outbox_.begin(); it != outbox_.end() && out.size() < max;) {
    uint64_t id = *it;
    it = outbox_.erase(it);
    auto s = stats_.find(id);
    if (s == stats_.end()) {
      if (auto r = retired_.find(id); r != retired_.end()) {
        proto::pattern_delta d; // this node's contribution is now zero
        d.origin_node = cfg_.node_id;
        d.origin_id = id;
        d.contrib = {cfg_.node_id, r->second, std::vector<proto::tier_stat>(cfg_.tiers.size())};
        out.push_back(std::move(d));
      }
      continue;
    }
    if (s->second.version == 0)
      continue;
    auto& st = s->second;
    proto::pattern_delta d;
    auto key = key_of(id, st);
    d.origin_node = key.node;
    d.origin_id = key.id;
    if (st.origin_node == 0 && !st.announced) {
      if (auto u = unannounced_.find(id); u != unannounced_.end()) {
        d.centroid = std::move(u->second);
        unannounced_.erase(u);
      } else {
        d.centroid = centroid(id);
      }
      st.announced = true;
    }
    d.contrib = {cfg_.node_id, st.version, st.tiers};
    out.push_back(std::move(d));
  }
  return out;
}

void pattern_bank::republish_all() {
  if (!track_deltas_)
    return;
  for (auto& [id, st] : stats_) {
    if (st.version == 0)
      continue;
    if (st.origin_node == 0)
      st.announced = false;
    outbox_.insert(id);
  }
  for (const auto& [id, version] : retired_)
    outbox_.insert(id);
}

bool pattern_bank::join_peer(uint64_t id, const proto::contribution& c, int64_t now_ms) {
  auto& st = stats_[id];
  const proto::contribution* old = nullptr;
  for (const auto& p : st.peers)
    if (p.node == c.node)
      old = &p;
  if (old != nullptr && !router::supersedes(c, *old))
    return false;
  if (old != nullptr) {
    router::sub_tiers(st.total, old->tiers);
    router::sub_tiers(global_, old->tiers);
  }
  count_contribution(c.node, key_of(id, st), old != nullptr ? old->version : 0, c.version);
  router::join(st.peers, c);
  router::add_tiers(st.total, c.tiers);
  add_to_global(c.tiers);
  st.updated_ms = now_ms;
  dirty_.insert(id);
  return true;
}

core::result<merge_stats>
pattern_bank::merge(uint64_t node, std::span<const proto::pattern_delta> deltas, int64_t now_ms) {
  auto bad = [&](size_t i, const std::string& what) {
    return core::error(errc::invalid_argument, "delta " + std::to_string(i) + ": " + what);
  };
  if (node == 0 || node == cfg_.node_id)
    return core::error(errc::invalid_argument,
                       "sender id " + std::to_string(node) + " is 0 or this node's own");
  // Validate everything first: a batch is merged whole or not at all.
  for (size_t i = 0; i < deltas.size(); ++i) {
    const auto& d = deltas[i];
    if (d.origin_node == 0)
      return bad(i, "origin node is 0");
    if (d.contrib.node != node)
      return bad(i, "contribution of another node than the sender");
    if (auto err = router::validate(d.contrib, cfg_.tiers.size()))
      return bad(i, err.message);
    if (!d.centroid.empty()) {
      if (d.centroid.size() != dim_)
        return bad(i, "centroid has dimension " + std::to_string(d.centroid.size()) + ", expected "
                        + std::to_string(dim_));
      if (!std::all_of(d.centroid.begin(), d.centroid.end(),
                       [](float x) { return std::isfinite(x); }))
        return bad(i, "centroid has a non-finite value");
      // Announced centroids are exact f32 copies; allow for a re-quantized one.
      double norm = std::sqrt(kernels::dot(d.centroid, d.centroid));
      if (std::abs(norm - 1.0) > 1e-2)
        return bad(i, "centroid is not L2-normalised (norm " + std::to_string(norm) + ")");
      if (d.origin_node != node)
        return bad(i, "announces a pattern created by another node");
    }
  }
  merge_stats ms;
  for (const auto& d : deltas) {
    uint64_t id = 0;
    if (d.origin_node == cfg_.node_id) {
      id = find(d.origin_node, d.origin_id);
      if (id == 0 && retired_.count(d.origin_id) != 0)
        id = revive(d.origin_id, now_ms);
    } else if (auto it = by_origin_.find({d.origin_node, d.origin_id}); it != by_origin_.end()) {
      id = it->second;
    }
    if (id == 0 && d.centroid.empty()) {
      // Its announcement has not arrived: hold the contribution.
      auto& held = orphans_[{d.origin_node, d.origin_id}];
      size_t before = held.size();
      if (n_orphans_ >= cfg_.max_orphans) {
        if (held.empty())
          orphans_.erase({d.origin_node, d.origin_id});
        ++ms.dropped;
        continue;
      }
      router::join(held, d.contrib);
      n_orphans_ += held.size() - before;
      ++ms.orphaned;
      continue;
    }
    if (id == 0) {
      if (stats_.size() >= cfg_.max_patterns || !reserve_pattern()) {
        ++ms.dropped;
        continue;
      }
      id = allocate_id();
      proto::pattern_record r;
      r.id = id;
      r.tiers.assign(cfg_.tiers.size(), {});
      r.created_ms = r.updated_ms = now_ms;
      r.origin_node = d.origin_node;
      r.origin_id = d.origin_id;
      adopt(r);
      std::vector<float> c = d.centroid;
      kernels::normalize(c);
      pending_.emplace_back(id, c);
      unflushed_[id] = std::move(c);
      dirty_.insert(id);
      ++ms.created;
      if (auto o = orphans_.find({d.origin_node, d.origin_id}); o != orphans_.end()) {
        for (const auto& c : o->second)
          ms.applied += join_peer(id, c, now_ms) ? 1 : 0;
        n_orphans_ -= o->second.size();
        orphans_.erase(o);
      }
    }
    if (join_peer(id, d.contrib, now_ms))
      ++ms.applied;
    else
      ++ms.stale;
  }
  return ms;
}

uint64_t pattern_bank::allocate_id() {
  if (env_ != nullptr && next_id_ >= id_reserved_) {
    // One small synchronous commit per block of ids.
    uint64_t bound = next_id_ + id_block;
    if (!env_->write(
          {{store::table::router_state, "ids", proto::encode(proto::pattern_ids_record{bound})}}))
      id_reserved_ = bound;
  }
  return next_id_++;
}

uint64_t pattern_bank::tick() noexcept {
  clock_ = std::max(clock_ + 1, static_cast<uint64_t>(core::utc_now_us()));
  return clock_;
}

void pattern_bank::set_stream_seq(uint64_t seq) noexcept {
  if (seq != stream_seq_) {
    stream_seq_ = seq;
    stream_seq_dirty_ = true;
  }
}

void pattern_bank::count_contribution(uint64_t node, const origin_key& k, uint64_t old_version,
                                      uint64_t new_version) {
  auto& s = summaries_[node];
  s.node = node;
  auto h = [&](uint64_t version) {
    uint64_t words[3] = {k.node, k.id, version};
    return XXH3_64bits(words, sizeof words);
  };
  if (old_version == 0)
    ++s.count;
  else
    s.hash ^= h(old_version);
  if (new_version == 0) {
    --s.count;
    return;
  }
  s.hash ^= h(new_version);
  s.max_version = std::max(s.max_version, new_version);
}

std::vector<proto::origin_summary> pattern_bank::summarize() const {
  std::vector<proto::origin_summary> out;
  out.reserve(summaries_.size());
  for (const auto& [n, s] : summaries_)
    out.push_back(s);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.node < b.node; });
  return out;
}

std::vector<proto::tier_stat> pattern_bank::total(uint64_t id) const {
  auto it = stats_.find(id);
  return it == stats_.end() ? std::vector<proto::tier_stat>{} : it->second.total;
}

uint64_t pattern_bank::find(uint64_t origin_node, uint64_t origin_id) const {
  if (origin_node == cfg_.node_id) {
    auto it = stats_.find(origin_id);
    return it != stats_.end() && it->second.origin_node == 0 ? origin_id : 0;
  }
  auto it = by_origin_.find({origin_node, origin_id});
  return it == by_origin_.end() ? 0 : it->second;
}

} // namespace shoal::router
