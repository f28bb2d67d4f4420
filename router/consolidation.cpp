// The pattern bank's consolidation (SONA's deep loop): pruning, k-means++
// categories, near-duplicate merging within clusters, and what federation
// needs to stay consistent when patterns go away (retirement records and
// revival). Declarations and the rules are in pattern_bank.hpp.
#include "router/pattern_bank.hpp"
#include "core/clock.hpp"
#include "kernels/learn.hpp"
#include "kernels/vector.hpp"
#include "core/error.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <optional>
#include <unordered_set>

namespace shoal::router {

namespace {

/// Key of the categories record (table router_state; proto::categories_record).
constexpr std::string_view categories_key = "categories";

uint64_t observations(const std::vector<proto::tier_stat>& tiers) {
  uint64_t n = 0;
  for (const auto& t : tiers)
    n += t.count;
  return n;
}

uint64_t ms_since(int64_t start_ns) {
  return static_cast<uint64_t>(std::max<int64_t>(0, core::steady_now_ns() - start_ns) / 1'000'000);
}

/// Holds working memory in the budget while a plan lives (set its fields
/// once reserved; not copyable). Shares the budget: a plan may outlive its
/// bank (the router quits while the planner runs).
struct budget_hold {
  budget_hold() = default;
  budget_hold(const budget_hold&) = delete;
  budget_hold& operator=(const budget_hold&) = delete;
  std::shared_ptr<core::memory_budget> budget;
  uint64_t bytes = 0;
  ~budget_hold() {
    if (budget != nullptr)
      budget->release(core::memory_budget::use::router, bytes);
  }
};

} // namespace

uint64_t pattern_bank::category_bytes() const noexcept {
  return cat_ids_.size() * (sizeof(uint32_t) + sizeof(float) * (dim_ + 1ull));
}

std::vector<uint32_t> pattern_bank::categories() const {
  auto out = cat_ids_;
  std::sort(out.begin(), out.end());
  return out;
}

uint32_t pattern_bank::category(uint64_t pattern_id) const {
  auto it = stats_.find(pattern_id);
  if (it == stats_.end() || cat_ids_.empty())
    return no_category;
  if (it->second.category == no_category) {
    auto c = centroid(pattern_id);
    if (c.size() != dim_)
      return no_category;
    std::vector<float> dots(cat_ids_.size());
    it->second.category = cat_ids_[nearest_mean(c, cat_means_, cat_norms_, dots)];
  }
  return it->second.category;
}

bool pattern_bank::remove_pattern(uint64_t id, bool merged) {
  auto it = stats_.find(id);
  if (it == stats_.end())
    return false;
  auto& st = it->second;
  if (!merged)
    router::sub_tiers(global_, st.total);
  // Peers may hold this node's contribution unless the bank is unfederated
  // or the pattern was never announced (its centroid still waits here).
  const bool published = cfg_.node_id != 0 && st.version != 0 && unannounced_.count(id) == 0;
  const origin_key key{cfg_.node_id, id};
  uint64_t retired_version = 0;
  if (published) {
    retired_version = tick();
    count_contribution(cfg_.node_id, key, st.version, retired_version);
    retired_[id] = retired_version;
    touch_outbox(id);
  } else {
    if (st.version != 0)
      count_contribution(cfg_.node_id, key, st.version, 0);
    outbox_.erase(id);
    unflushed_.erase(id);
  }
  unannounced_.erase(id);
  if (env_ != nullptr)
    removed_[id] = retired_version; // the retirement record keeps the centroid (unflushed_)
  std::erase_if(pending_, [id](const auto& p) { return p.first == id; });
  dirty_.erase(id);
  stats_.erase(it);
  // Its statistics go; its index slot stays (removed) until a rebuild.
  if (budget_ && reserved_ >= stats_bytes()) {
    budget_->release(core::memory_budget::use::router, stats_bytes());
    reserved_ -= stats_bytes();
  }
  return published;
}

uint64_t pattern_bank::revive(uint64_t id, int64_t now_ms) {
  auto r = retired_.find(id);
  if (r == retired_.end())
    return 0;
  std::vector<float> c;
  if (auto u = unflushed_.find(id); u != unflushed_.end()) {
    c = u->second;
  } else if (env_ != nullptr) {
    auto bytes = env_->get(store::table::patterns, store::u64_key(id));
    if (bytes && bytes->has_value())
      if (auto rec = proto::decode_pattern(**bytes))
        c = std::move(rec->centroid);
  }
  if (c.size() != dim_ || stats_.size() >= cfg_.max_patterns || !reserve_pattern())
    return 0;
  const uint64_t version = r->second;
  retired_.erase(r);
  removed_.erase(id);
  // The retirement is counted in the summaries already; adopt counts it again.
  count_contribution(cfg_.node_id, {cfg_.node_id, id}, version, 0);
  proto::pattern_record rec;
  rec.id = id;
  rec.tiers.assign(cfg_.tiers.size(), {});
  rec.version = version; // this node's contribution stays the zero peers hold
  rec.created_ms = rec.updated_ms = now_ms;
  adopt(rec);
  stats_[id].announced = true; // peers know it: one of them just contributed
  pending_.emplace_back(id, c);
  unflushed_[id] = std::move(c);
  dirty_.insert(id);
  return id;
}

core::error pattern_bank::load_categories() {
  auto bytes = env_->get(store::table::router_state, categories_key);
  if (!bytes)
    return bytes.err();
  if (!bytes->has_value())
    return {};
  auto rec = proto::decode_categories(**bytes);
  if (!rec)
    return rec.err();
  auto bad = [](const std::string& what) {
    return core::error(errc::corrupt_data, "categories record: " + what);
  };
  if (rec->dim != dim_)
    return bad("dimension " + std::to_string(rec->dim) + ", the bank has " + std::to_string(dim_));
  std::vector<uint32_t> ids = std::move(rec->labels);
  std::vector<float> means = std::move(rec->means);
  if (!kernels::all_finite(means))
    return bad("a non-finite mean");
  std::unordered_set<uint32_t> known(ids.begin(), ids.end());
  for (size_t i = 0; i < rec->pattern_ids.size(); ++i) {
    const uint64_t id = rec->pattern_ids[i];
    const uint32_t cat = rec->pattern_categories[i];
    if (known.count(cat) == 0)
      return bad("pattern " + std::to_string(id) + " has unknown category " + std::to_string(cat));
    if (auto it = stats_.find(id); it != stats_.end())
      it->second.category = cat;
  }
  const uint32_t next = rec->next_category;
  cat_ids_ = std::move(ids);
  cat_means_ = std::move(means);
  cat_norms_ = squared_norms(cat_means_, dim_);
  next_category_ = next;
  return {};
}

/// See pattern_bank.hpp: the snapshot (prepare_consolidation, owner's
/// thread), the plan (plan_consolidation, planner's thread) and what the
/// bank needs to apply it (apply_consolidation, owner's thread).
struct consolidation_run {
  enum class phase { prepared, planned, applied };
  const pattern_bank* bank = nullptr; ///< identity only, never dereferenced
  phase at = phase::prepared;
  int64_t now_ms = 0;
  int64_t t_start_ns = 0;      ///< steady clock, for duration_ms
  std::vector<uint64_t> prune; ///< ids selected for pruning, ascending
  consolidation_snapshot snapshot;
  consolidation_plan plan;
  budget_hold hold; ///< the working memory
  consolidation_stats stats;
};

core::result<consolidation_run_ptr>
pattern_bank::prepare_consolidation(const consolidation_config& cc, int64_t now_ms) {
  const int64_t t_start = core::steady_now_ns();
  auto bad = [](const std::string& what) { return core::error(errc::invalid_argument, what); };
  if (cc.clusters > 65536)
    return bad("consolidation_config::clusters " + std::to_string(cc.clusters) + " is above 65536");
  if (cc.max_iterations < 1 || cc.max_iterations > 1000)
    return bad("consolidation_config::max_iterations must be in [1, 1000]");
  if (!(cc.merge_similarity > 0 && cc.merge_similarity <= 1))
    return bad("consolidation_config::merge_similarity must be in (0, 1]");
  if (cc.stale_days < 1 || cc.stale_days > 36500)
    return bad("consolidation_config::stale_days must be in [1, 36500]");
  if (cc.min_observations > (uint64_t{1} << 53))
    return bad("consolidation_config::min_observations must be at most 2^53");
  auto run = std::make_shared<consolidation_run>();
  auto& p = run->snapshot;
  run->bank = this;
  run->now_ms = now_ms;
  run->t_start_ns = t_start;
  run->stats.patterns_before = stats_.size();
  p.cfg = cc;
  p.dim = dim_;
  if (auto err = index_pending())
    return err;
  if (auto err = reindex_moved(reindex_.size()))
    return err;
  const size_t dim = dim_;
  auto removable = [](const pattern_state& st) { return st.origin_node == 0 && st.peers.empty(); };

  // Prune plan: stale (no hit, learn or peer merge for stale_days) and few observations.
  const int64_t stale_ms = int64_t{cc.stale_days} * 86'400'000;
  auto& ids = p.ids;                // the patterns that stay for clustering
  std::vector<uint64_t> stale_kept; // stale, low-value, but shared
  ids.reserve(stats_.size());
  for (const auto& [id, st] : stats_) {
    bool stale = now_ms - std::max(st.updated_ms, st.created_ms) >= stale_ms
                 && observations(st.total) < cc.min_observations;
    if (stale && removable(st)) {
      run->prune.push_back(id);
      continue;
    }
    if (stale)
      stale_kept.push_back(id);
    ids.push_back(id);
  }
  std::sort(run->prune.begin(), run->prune.end());
  std::sort(ids.begin(), ids.end());
  const size_t n = ids.size();
  auto row_of = [&](uint64_t id) -> ptrdiff_t {
    auto it = std::lower_bound(ids.begin(), ids.end(), id);
    return it != ids.end() && *it == id ? it - ids.begin() : -1;
  };

  // Working memory: the centroids [n, dim] and a copy of one cluster's.
  if (budget_) {
    uint64_t work = n * dim * sizeof(float) + n * (dim + sizeof(float) + 2 * 16 * sizeof(uint32_t));
    if (!budget_->try_reserve(core::memory_budget::use::router, work)) {
      uint64_t free = budget_->limit() - std::min(budget_->limit(), budget_->used());
      return core::error(errc::unavailable, "consolidating " + std::to_string(n)
                                              + " patterns needs " + std::to_string(work >> 20)
                                              + " MiB of working memory; the memory budget has "
                                              + std::to_string(free >> 20) + " MiB free");
    }
    run->hold.budget = budget_;
    run->hold.bytes = work;
  }

  // The exact f32 centroids [n, dim]: LMDB, then the unflushed ones (newer),
  // then the index's int8 copies (patterns whose record is still on its way
  // to LMDB through the router's writer; within ~0.01 cosine).
  int64_t t0 = core::steady_now_ns();
  p.x.resize(n * dim);
  std::vector<uint8_t> have(n, 0);
  auto row = [&](size_t r) { return std::span<float>(p.x.data() + r * dim, dim); };
  if (env_ != nullptr && n > 0) {
    core::error bad_rec;
    auto err = env_->for_each(store::table::patterns, [&](std::string_view k, std::string_view v) {
      auto id = store::parse_u64_key(k);
      ptrdiff_t r = id ? row_of(*id) : -1;
      if (r < 0)
        return true;
      auto rec = proto::decode_pattern(v);
      if (!rec) {
        bad_rec = rec.err();
        return false;
      }
      if (rec->centroid.size() == dim) {
        std::copy(rec->centroid.begin(), rec->centroid.end(), row(r).begin());
        have[r] = 1;
      }
      return true;
    });
    if (err)
      return err;
    if (bad_rec)
      return bad_rec;
  }
  for (const auto& [id, c] : unflushed_)
    if (ptrdiff_t r = row_of(id); r >= 0 && c.size() == dim) {
      std::copy(c.begin(), c.end(), row(r).begin());
      have[r] = 1;
    }
  for (size_t r = 0; r < n; ++r)
    if (!have[r]) {
      auto c = index_.get(ids[r]);
      if (c.size() != dim)
        return core::error(errc::internal, "pattern " + std::to_string(ids[r])
                                             + " has no centroid in LMDB, memory or the index");
      kernels::normalize(c);
      std::copy(c.begin(), c.end(), row(r).begin());
    }
  run->stats.read_ms = ms_since(t0);

  p.weight.resize(n);
  p.hits.resize(n);
  p.removable.resize(n);
  p.ours.resize(n);
  p.kept.assign(n, 0);
  for (size_t r = 0; r < n; ++r) {
    const auto& st = stats_.at(ids[r]);
    p.weight[r] = 1.0 + static_cast<double>(observations(st.total));
    p.hits[r] = st.hits;
    p.removable[r] = removable(st) ? 1 : 0;
    p.ours[r] = st.origin_node == 0 ? 1 : 0;
  }
  for (uint64_t id : stale_kept)
    p.kept[static_cast<size_t>(row_of(id))] = 1;
  run->stats.kept_shared = stale_kept.size();
  p.old_labels = cat_ids_;
  p.old_means = cat_means_;
  p.next_category = next_category_;
  run->stats.snapshot_ms = ms_since(t_start);
  return run;
}

void pattern_bank::plan_consolidation(consolidation_run& run) {
  run.plan = router::plan_consolidation(run.snapshot);
  run.at = consolidation_run::phase::planned;
}

core::result<consolidation_stats> pattern_bank::apply_consolidation(consolidation_run& run) {
  const int64_t t_apply = core::steady_now_ns();
  if (run.bank != this)
    return core::error(errc::invalid_argument, "a consolidation plan of another pattern bank");
  if (run.at != consolidation_run::phase::planned)
    return core::error(errc::invalid_argument, run.at == consolidation_run::phase::prepared
                                                 ? "a consolidation plan not planned yet"
                                                 : "a consolidation plan applied already");
  const auto& snap = run.snapshot;
  auto& p = run.plan;
  const size_t dim = dim_;
  const size_t n = snap.ids.size();
  const size_t k = p.k;
  consolidation_stats out = run.stats; // run.stats is unchanged when this fails
  out.clusters = static_cast<uint32_t>(k);
  out.iterations = p.iterations;
  out.converged = p.converged;
  out.inertia = p.inertia;
  out.categories_kept = p.categories_kept;
  out.kept_shared += p.kept_shared;
  out.kmeans_ms = p.kmeans_ms;
  out.merge_ms = p.merge_ms;
  auto removable = [](const pattern_state& st) { return st.origin_node == 0 && st.peers.empty(); };

  // Re-validate against the bank as it is now (see pattern_bank.hpp): which
  // prunes and merges still hold. Nothing changes yet.
  const int64_t stale_ms = int64_t{snap.cfg.stale_days} * 86'400'000;
  std::vector<uint64_t> prune;
  prune.reserve(run.prune.size());
  for (uint64_t id : run.prune) {
    auto it = stats_.find(id);
    if (it == stats_.end())
      continue;
    const auto& st = it->second;
    if (removable(st) && run.now_ms - std::max(st.updated_ms, st.created_ms) >= stale_ms
        && observations(st.total) < snap.cfg.min_observations)
      prune.push_back(id);
  }
  std::vector<uint8_t> applied(p.steps.size(), 0), removed(n, 0), survivor(n, 0);
  for (size_t s = 0; s < p.steps.size(); ++s) {
    const auto [from, into] = p.steps[s];
    auto f = stats_.find(snap.ids[from]);
    if (removed[from] || removed[into] || f == stats_.end() || stats_.count(snap.ids[into]) == 0)
      continue;
    if (!removable(f->second)) {
      ++out.kept_shared; // a peer contributed to it meanwhile
      continue;
    }
    applied[s] = 1;
    removed[from] = 1;
    survivor[into] = 1;
  }
  // A row stays categorised when its pattern is still here and not removed
  // now; a planned removal that was skipped is categorised on first use.
  // A planned survivor none of whose merges was applied keeps its old
  // centroid, so its cluster's category rather than the moved one's.
  std::vector<uint8_t> stays(n, 0);
  std::vector<uint32_t> cat_of = p.cat_of;
  uint64_t n_kept = 0;
  for (size_t r = 0; r < n; ++r)
    if (!p.gone[r] && stats_.count(snap.ids[r]) != 0) {
      stays[r] = 1;
      ++n_kept;
      if (p.moved[r] && !survivor[r])
        cat_of[r] = p.labels[p.assign[r]];
    }

  // Everything that can fail happens before the bank changes: the category
  // table's place in the budget...
  const uint64_t cat_bytes_new =
    n > 0 ? k * (sizeof(uint32_t) + sizeof(float) * (dim + 1)) : category_bytes();
  const uint64_t cat_bytes_old = category_bytes();
  auto unreserve = [&] {
    if (budget_ && cat_bytes_new > cat_bytes_old) {
      budget_->release(core::memory_budget::use::router, cat_bytes_new - cat_bytes_old);
      reserved_ -= cat_bytes_new - cat_bytes_old;
    }
  };
  if (budget_ && cat_bytes_new > cat_bytes_old) {
    if (!budget_->try_reserve(core::memory_budget::use::router, cat_bytes_new - cat_bytes_old))
      return core::error(errc::unavailable, "the memory budget refuses the category table");
    reserved_ += cat_bytes_new - cat_bytes_old;
  }
  // ...the categories record...
  if (env_ != nullptr && n > 0) {
    proto::categories_record rec;
    rec.dim = dim_;
    rec.next_category = p.next_category;
    rec.labels.assign(p.labels.begin(), p.labels.begin() + k);
    rec.means.assign(p.means.begin(), p.means.begin() + k * dim);
    rec.pattern_ids.reserve(n_kept);
    rec.pattern_categories.reserve(n_kept);
    for (size_t r = 0; r < n; ++r)
      if (stays[r]) {
        rec.pattern_ids.push_back(snap.ids[r]);
        rec.pattern_categories.push_back(cat_of[r]);
      }
    if (auto err = env_->write(
          {{store::table::router_state, std::string(categories_key), proto::encode(rec)}})) {
      unreserve();
      return err;
    }
  }

  // Apply: from here nothing fails.
  const uint64_t reserved_before = reserved_;
  for (uint64_t id : prune)
    out.retired += remove_pattern(id, false);
  out.pruned = prune.size();
  for (size_t s = 0; s < p.steps.size(); ++s) {
    if (!applied[s])
      continue;
    const uint64_t from_id = snap.ids[p.steps[s].from];
    auto& into = stats_.at(snap.ids[p.steps[s].into]);
    const auto& from = stats_.at(from_id);
    // `from` has this node's statistics only (removable): they move to `into`.
    router::add_tiers(into.tiers, from.tiers);
    router::add_tiers(into.total, from.tiers);
    into.hits += from.hits;
    into.created_ms = std::min(into.created_ms, from.created_ms);
    into.updated_ms = std::max(into.updated_ms, from.updated_ms);
    out.retired += remove_pattern(from_id, true);
    ++out.merged;
  }
  int64_t t0 = core::steady_now_ns();
  for (size_t r = 0; r < n; ++r)
    if (removed[r])
      index_.remove(snap.ids[r]);
  for (uint64_t id : prune)
    index_.remove(id);
  out.index_ms = ms_since(t0);
  // The old table's cached categories are void (patterns created meanwhile
  // may have cached one); planned rows get theirs, the others on first use.
  if (n > 0)
    for (auto& [id, st] : stats_)
      st.category = no_category;
  size_t moved_row = 0; // row of p.moved_x
  for (size_t r = 0; r < n; ++r) {
    std::span<const float> c;
    if (p.moved[r])
      c = std::span<const float>(p.moved_x.data() + dim * moved_row++, dim);
    auto it = stats_.find(snap.ids[r]);
    if (it == stats_.end())
      continue;
    auto& st = it->second;
    if (stays[r])
      st.category = cat_of[r];
    if (!survivor[r])
      continue;
    uint64_t old_version = st.version;
    st.version = tick();
    count_contribution(cfg_.node_id, key_of(snap.ids[r], st), old_version, st.version);
    dirty_.insert(snap.ids[r]);
    touch_outbox(snap.ids[r]);
    if (p.moved[r]) {
      unflushed_[snap.ids[r]].assign(c.begin(), c.end());
      if (auto u = unannounced_.find(snap.ids[r]); u != unannounced_.end())
        u->second.assign(c.begin(), c.end());
      // A survivor still pending (not in the index): its queued copy moves too.
      bool queued = false;
      for (auto& [id, v] : pending_)
        if (id == snap.ids[r]) {
          v.assign(c.begin(), c.end());
          queued = true;
        }
      if (!queued)
        reindex_.push_back(snap.ids[r]);
    }
  }
  if (n > 0) {
    if (budget_ && cat_bytes_new < cat_bytes_old) {
      budget_->release(core::memory_budget::use::router, cat_bytes_old - cat_bytes_new);
      reserved_ -= cat_bytes_old - cat_bytes_new;
    }
    cat_ids_ = std::move(p.labels);
    cat_means_ = std::move(p.means);
    cat_norms_ = std::move(p.norms);
    next_category_ = p.next_category;
  }
  run.at = consolidation_run::phase::applied;
  out.released_bytes = reserved_before > reserved_ ? reserved_before - reserved_ : 0;
  out.patterns_after = stats_.size();
  out.apply_ms = ms_since(t_apply);
  out.duration_ms = ms_since(run.t_start_ns);
  run.stats = out;
  return out;
}

core::error pattern_bank::reindex_moved(size_t max) {
  size_t done = 0;
  core::error err;
  for (; done < reindex_.size() && done < max; ++done) {
    const uint64_t id = reindex_[done];
    if (stats_.count(id) == 0 || !index_.contains(id))
      continue; // gone, or removed from the index meanwhile
    auto c = centroid(id);
    if (c.size() != dim_)
      continue;
    // The move takes a fresh slot (the old one stays, removed): it needs
    // room; refused, the survivor stays queued (at its pre-merge vector
    // meanwhile) and this call stops.
    if (budget_) {
      if (!budget_->try_reserve(core::memory_budget::use::router, index_slot_bytes())) {
        ++budget_refusals_;
        break;
      }
      reserved_ += index_slot_bytes();
    }
    if (auto e = index_.add(id, c)) {
      err = e;
      if (budget_) {
        budget_->release(core::memory_budget::use::router, index_slot_bytes());
        reserved_ -= index_slot_bytes();
      }
      break;
    }
  }
  reindex_.erase(reindex_.begin(), reindex_.begin() + static_cast<ptrdiff_t>(done));
  return err;
}

core::result<consolidation_stats> pattern_bank::consolidate(const consolidation_config& cc,
                                                            int64_t now_ms) {
  auto plan = prepare_consolidation(cc, now_ms);
  if (!plan)
    return std::move(plan).err();
  plan_consolidation(**plan);
  auto st = apply_consolidation(**plan);
  if (!st)
    return st;
  // All at once: the caller blocks anyway. A survivor that fails stays
  // queued (found at its pre-merge vector meanwhile); the next
  // prepare_consolidation retries and reports the error.
  const int64_t t0 = core::steady_now_ns();
  static_cast<void>(reindex_moved(reindex_.size()));
  st->index_ms += ms_since(t0);
  st->duration_ms += ms_since(t0);
  return st;
}

} // namespace shoal::router
