#pragma once
/// @file The router's pattern bank and routing policy (Router v1).
///
/// A pattern is a region of embedding space (its centroid: the first embedding
/// that was not within `new_pattern_threshold` of any existing pattern, i.e.
/// leader clustering) with per-tier quality statistics. Routing a query:
///   1. search the k nearest patterns (HNSW, cosine);
///   2. pool their statistics, weighting neighbour i by (sim_i / sim_1)^p
///      (p = `similarity_power`, sim_1 the nearest neighbour's similarity: an
///      adaptive-bandwidth kernel): N_t = sum w_i*count, S_t = sum w_i*sum_q,
///      Q_t = sum w_i*sum_q^2 per tier t, plus two priors given as
///      pseudo-observations: `prior` observations of a uniform quality (mean
///      1/2, variance 1/12) and `global_prior` observations distributed like
///      the tier's quality over the whole bank (empirical Bayes);
///   3. Gaussian Thompson sampling (Thompson 1933; Agrawal & Goyal 2013 for
///      Gaussian priors): the expected quality of tier t is drawn from
///      N(mean_t, var_t / n_t), with n_t, mean_t and the sample variance var_t
///      of quality from the pooled sums (quality is continuous, so its own
///      variance is used rather than a Bernoulli one), and the tier with the
///      highest draw minus cost_t is chosen;
///   4. confidence = P(chosen tier has the highest expected reward), by a normal
///      approximation of the posteriors, multiplied over the other tiers;
///   5. assign the query to the nearest pattern when its similarity is at least
///      `new_pattern_threshold`, else create a pattern with the query as centroid
///      (queued, and added to the HNSW index by `index_pending`).
/// Learning (`learn`) adds one quality observation to (pattern, tier).
///
/// Federation: a pattern's statistics are this node's contribution (`learn`)
/// plus the contributions merged from peers (`merge`, router/crdt.hpp);
/// routing pools their sum. Every change of this node's contribution takes a
/// version from the bank's clock, which only grows; `take_deltas` hands the
/// changed contributions to the federation bridge.
///
/// Consolidation (`consolidate`, the SONA deep loop; pattern_consolidation.cpp):
/// k-means++ over the centroids gives every pattern a category; within a
/// cluster, near-duplicate patterns are merged, and stale patterns with few
/// observations are pruned. Federation rule: a pattern is removed (merged
/// away or pruned) only if this node created it and its statistics are this
/// node's alone (no peer has contributed to it); a merge survivor may be any
/// pattern. Both are changes of this node's own CRDT elements only: the
/// survivor's contribution grows by the removed one's (a new version), and
/// the removed pattern's contribution becomes zero at a new version. A
/// federated bank (node_id != 0) keeps that zero as a retirement record
/// (LMDB, with the centroid; counted in `summarize`, re-sent by
/// `republish_all`) so peers that hold the pattern replace this node's old
/// statistics there instead of counting them twice; when a peer later
/// contributes to a retired pattern, it is revived with that contribution.
/// A pattern never published (unfederated bank, or created and removed
/// before `take_deltas` announced it) is simply erased.
/// Limits: peers keep their copy of a retired pattern (with this node's zero
/// contribution; nothing on the wire tells them to drop it, and it is not
/// theirs to remove), so the fleet's pattern count only falls on the node
/// that consolidates; a peer that never received the announcement holds the
/// retirement as an orphan, and its digest of this node's contributions then
/// differs (anti-entropy republishes, with back-off). Retirement records are
/// never collected.
///
/// Thread-safety: none; owned by one actor. LMDB writes happen in `flush` and
/// `checkpoint`, so the owner should run on its own thread (detached actor).

#include "core/memory_budget.hpp"
#include "router/crdt.hpp"
#include "router/planner.hpp"
#include "router/policy.hpp"
#include "proto/messages.hpp"
#include "proto/records.hpp"
#include "proto/wire.hpp"
#include "store/environment.hpp"
#include "store/pattern_index.hpp"

#include "core/error.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace shoal::router {

/// One model tier the router can choose: one `[[tiers]]` table of the
/// config (its keys are documented in node/config.cpp, tier_settings()).
struct tier_config {
  std::string name;                   ///< config tiers[i].name
  double cost = 0;                    ///< config tiers[i].cost (quality units)
  double params_m = 0;                ///< config tiers[i].params_m
  std::string model;                  ///< config tiers[i].model
  uint32_t n_ctx = 2048;              ///< config tiers[i].n_ctx
  uint32_t threads = 1;               ///< config tiers[i].threads
  uint32_t max_sequences = 8;         ///< config tiers[i].max_sequences
  std::string chat_format = "chatml"; ///< config tiers[i].chat_format
};

/// The four random-weight demo tiers of increasing size (configs/demo.toml:
/// real latency differences, noise for text), for tests, speed benchmarks
/// and the simulated worlds, whose tier abilities come from these sizes.
inline std::vector<tier_config> demo_tiers() {
  return {{"demo-tiny", 0.00, 0.1, "demo:tiny:q8_0"},
          {"demo-15m", 0.05, 15, "demo:15M:q8_0"},
          {"demo-110m", 0.10, 110, "demo:110M:q4_0"},
          {"demo-260m", 0.20, 260, "demo:260M:q4_0"}};
}

/// Router configuration (config keys `router.*`, `index.*`, `[[tiers]]`,
/// documented in node/config.cpp).
struct router_config {
  /// config `[[tiers]]`, cheapest first by convention.
  std::vector<tier_config> tiers = demo_tiers();
  uint32_t k = 32;                      ///< config router.k
  double new_pattern_threshold = 0.4;   ///< config router.new_pattern_threshold
  double similarity_power = 4;          ///< config router.similarity_power
  double prior = 1;                     ///< config router.prior
  double global_prior = 20;             ///< config router.global_prior
  double exploration = 1;               ///< config router.exploration
  uint64_t max_patterns = 1'000'000;    ///< config router.max_patterns
  uint64_t seed = 0;                    ///< config router.seed
  uint32_t flush_interval_ms = 1000;    ///< config router.flush_interval_ms
  uint32_t checkpoint_interval_s = 300; ///< config router.checkpoint_interval_s
  /// This node's federation id (proto::delta_batch::node); stamped on the
  /// patterns it creates. 0 for a bank that is never federated (tests).
  uint64_t node_id = 0;
  /// Most contributions held for patterns not yet known here (their creator's
  /// announcement has not arrived); beyond it they are dropped and counted.
  uint64_t max_orphans = 100'000;
  /// HNSW parameters: config index.*.
  store::index_config index;
};

/// Result of routing one query (request id and time are set by the caller):
/// the policy's decision (router/policy.hpp) and where the query landed.
struct route_result : policy_decision {
  uint64_t pattern_id = 0;
  bool new_pattern = false;
  std::vector<proto::neighbor> neighbors;
  uint64_t search_ns = 0;
  uint64_t decide_ns = 0;
};

/// Changed patterns on their way to LMDB (see pattern_bank::take_dirty).
struct pattern_batch {
  /// Puts, in order. A record with no tiers is a removal (consolidation):
  /// version 0 erases the pattern's key; a non-zero version replaces the
  /// record by a retirement record (that version, no statistics, the
  /// centroid kept; see the federation rule at the top of this file).
  std::vector<proto::pattern_record> records;
  std::optional<proto::index_checkpoint> checkpoint;
  /// Last JetStream sequence merged into `records` (meta key "federation").
  std::optional<uint64_t> stream_seq;
};

using proto::merge_stats;

/// What one consolidation did.
struct consolidation_stats {
  uint64_t patterns_before = 0;
  uint64_t patterns_after = 0;
  uint64_t merged = 0;  ///< patterns merged into a near-duplicate (removed)
  uint64_t pruned = 0;  ///< stale low-value patterns removed
  uint64_t retired = 0; ///< of merged + pruned, those kept as retirement records
  /// Patterns that qualified for merging or pruning but were kept by the
  /// federation rule (a peer created them or contributed to them).
  uint64_t kept_shared = 0;
  uint32_t clusters = 0;   ///< k used (0 when the bank is empty)
  uint32_t iterations = 0; ///< Lloyd iterations run
  bool converged = false;  ///< the last assignment pass changed nothing
  /// k-means objective: sum of squared L2 distances of the clustered
  /// centroids to their cluster's mean (unit vectors: each term in [0, 4]).
  double inertia = 0;
  /// Clusters that kept the id of a previous category (see category()).
  uint32_t categories_kept = 0;
  uint64_t released_bytes = 0; ///< memory-budget bytes given back
  uint64_t read_ms = 0;        ///< reading the exact centroids
  uint64_t kmeans_ms = 0;      ///< seeding and Lloyd iterations
  uint64_t merge_ms = 0;       ///< near-duplicate search within clusters
  uint64_t index_ms = 0;       ///< editing the HNSW index (removals, moved survivors)
  /// The owner's thread: taking the snapshot (prepare_consolidation, reading
  /// the centroids included) and applying the plan (apply_consolidation).
  /// Routing waits only for these two; the rest runs on the planner's thread.
  uint64_t snapshot_ms = 0;
  uint64_t apply_ms = 0;
  uint64_t duration_ms = 0; ///< prepare to apply, wall clock (planning included)
};

/// A consolidation in progress: the snapshot taken by
/// pattern_bank::prepare_consolidation, the plan computed from it by
/// pattern_bank::plan_consolidation (router/planner.hpp), applied by
/// apply_consolidation. Opaque (consolidation.cpp). Shared (not unique)
/// because it travels in CAF messages between the owner and a planner
/// actor, which must be copyable; only one holder uses it at a time. Holds
/// the working memory reserved in the bank's memory budget until it is
/// destroyed.
struct consolidation_run;
using consolidation_run_ptr = std::shared_ptr<consolidation_run>;

class pattern_bank {
public:
  /// Opens the bank: reads every pattern from LMDB (`env` may be null for an
  /// in-memory bank) and loads the HNSW index file `<data_dir>/patterns.hnsw`,
  /// rebuilding it from LMDB when the file is missing, corrupt or stale, or
  /// when more of its slots belong to removed patterns than to live ones,
  /// and over 4096 (consolidation removes in place; the rebuild compacts).
  /// Errors: `errc::storage_failure`, `errc::corrupt_data` (an undecodable
  /// pattern, or one whose dimension or tier count differs from the config).
  static core::result<std::unique_ptr<pattern_bank>> open(uint32_t dim, router_config cfg,
                                                          std::shared_ptr<store::environment> env);

  /// Routes one query. @pre embedding.size() == dim(), L2-normalised, finite.
  route_result route(std::span<const float> embedding, int64_t now_ms);

  /// Records one observation of `quality` (in [0, 1]) for `tier` on `pattern_id`.
  /// Errors: `errc::not_found` (unknown pattern), `errc::invalid_argument`.
  core::error learn(uint64_t pattern_id, uint32_t tier, double quality, int64_t now_ms);

  /// Adds the patterns created by `route` since the last call to the HNSW
  /// index. `route` defers this (an HNSW insertion costs several searches) so
  /// the owner can answer first; until then `route` finds those patterns by
  /// exact scan. Errors: those of `store::pattern_index::add` (the failed
  /// pattern and those after it stay queued and are retried on the next call).
  core::error index_pending();

  /// Patterns created but not yet in the HNSW index.
  size_t pending() const noexcept { return pending_.size(); }

  /// Writes changed patterns to LMDB in one transaction (synchronously:
  /// take_dirty + write_batch; on failure the patterns stay dirty).
  core::error flush();

  /// Indexes pending patterns, saves the index file, and writes the changed
  /// patterns with the index's checkpoint record in one transaction.
  core::error checkpoint(int64_t now_ms);

  /// The changed patterns since the last take, marked clean: for a writer on
  /// another thread (the router's pattern writer), so LMDB commits do not
  /// stall routing. Records whose centroid is already in LMDB carry an empty
  /// centroid; write_batch reads it back.
  pattern_batch take_dirty();

  /// Like take_dirty, after indexing pending patterns and saving the index
  /// file; the batch carries the checkpoint record, so the file and the
  /// records it covers are committed together. With `finish_moves`, the
  /// merge survivors still queued are moved first (reindex_moved: all at
  /// once, so not while routing; the queue itself is not kept), else a
  /// survivor still queued is saved at its pre-merge vector and the owner
  /// checkpoints again once the queue is empty.
  /// Errors: those of index_pending, reindex_moved and store::pattern_index::save.
  core::result<pattern_batch> take_checkpoint(int64_t now_ms, bool finish_moves = true);

  /// Marks a batch's patterns dirty again (after its write failed).
  void restore(pattern_batch&& b);

  /// Writes a batch in one LMDB transaction. Thread-safe with respect to the
  /// bank (touches only `env`); batches must be written in the order taken.
  /// Errors: `errc::storage_failure`, `errc::corrupt_data` (a stored record
  /// does not decode), `errc::internal` (an update of a pattern never stored).
  static core::error write_batch(store::environment& env, const pattern_batch& b);

  /// The LMDB environment (null for an in-memory bank).
  const std::shared_ptr<store::environment>& environment() const noexcept { return env_; }

  size_t size() const noexcept { return stats_.size(); }
  uint32_t dim() const noexcept { return dim_; }

  /// Counts the bank's memory against the node's budget (use router):
  /// reserves pattern_bytes() for every pattern held now and for each new
  /// one; when the budget refuses, a request joins its nearest pattern
  /// instead of founding one, and a peer's new pattern is dropped (counted
  /// in budget_refusals()). Errors (invalid_argument; the bank keeps its
  /// previous budget): the patterns held already exceed the budget (naming
  /// both sizes).
  core::error set_budget(std::shared_ptr<core::memory_budget> budget);
  /// Estimated bytes of one pattern: its statistics (stats_bytes) and its
  /// index slot (index_slot_bytes).
  uint64_t pattern_bytes() const noexcept { return stats_bytes() + index_slot_bytes(); }
  /// Its f32 centroid (LMDB cache and pending queues), per-tier statistics
  /// and hash-map overhead: given back when the pattern is removed.
  uint64_t stats_bytes() const noexcept;
  /// One HNSW slot: the int8 vector, level-0 links and label. A removed
  /// pattern's slot, and the old slot of a pattern moved to a fresh one,
  /// stay in the index (hnswlib's markDelete) and stay reserved until `open`
  /// rebuilds the index without them.
  uint64_t index_slot_bytes() const noexcept;
  uint64_t budget_refusals() const noexcept { return budget_refusals_; }
  /// Removed slots the HNSW index still holds (given back when `open` rebuilds it).
  size_t index_removed() const noexcept { return index_.removed(); }
  ~pattern_bank();
  const router_config& config() const noexcept { return cfg_; }
  /// Whether `open` had to rebuild the index from LMDB.
  bool rebuilt_index() const noexcept { return rebuilt_; }
  /// The record of a pattern with its exact centroid; empty id if unknown.
  proto::pattern_record record(uint64_t id) const;
  /// Adds a pattern directly (used by tests and benchmarks).
  core::error insert(proto::pattern_record rec);

  // -- federation ------------------------------------------------------------

  /// Starts (or stops) collecting this node's changed contributions for
  /// `take_deltas`; off by default so an unfederated node keeps no outbox.
  void track_deltas(bool on);

  /// This node's changed contributions since the last take, at most `max`,
  /// one per pattern (its latest state). A pattern this node created carries
  /// its centroid the first time it is taken (its announcement); a pattern it
  /// retired (consolidate) carries a zero contribution and no centroid.
  std::vector<proto::pattern_delta> take_deltas(size_t max);

  /// Contributions waiting in the outbox.
  size_t deltas_pending() const noexcept { return outbox_.size(); }

  /// Queues every contribution of this node, with the centroids of the
  /// patterns it created, and its retirements (anti-entropy repair, or a
  /// peer's resync request).
  void republish_all();

  /// Merges peers' deltas (a decoded, signature-checked batch of `node`).
  /// All or nothing: when any delta is invalid (wrong dimension or tier
  /// count, non-finite or impossible statistics, a non-normalised centroid,
  /// an origin of 0, a sender that is this node) nothing is merged. A
  /// contribution to a pattern this node retired revives it (see the
  /// federation rule at the top).
  /// Errors: `errc::invalid_argument` naming the first bad delta.
  core::result<merge_stats> merge(uint64_t node, std::span<const proto::pattern_delta> deltas,
                                  int64_t now_ms);

  /// Records the JetStream sequence of the last merged batch (it may go down:
  /// a recreated stream starts again at 1); it is written with the next
  /// take_dirty batch.
  void set_stream_seq(uint64_t seq) noexcept;
  /// The last JetStream sequence merged (0 = none), as loaded or set.
  uint64_t stream_seq() const noexcept { return stream_seq_; }

  /// What this bank holds per origin node (including this node, with its
  /// retirements), sorted by node. O(origins): kept up to date on every change.
  std::vector<proto::origin_summary> summarize() const;

  /// Orphan contributions held (see max_orphans).
  size_t orphans() const noexcept { return n_orphans_; }

  /// The pooled statistics of a pattern: this node's plus its peers'
  /// (empty if unknown). For tests and /v1/stats.
  std::vector<proto::tier_stat> total(uint64_t id) const;

  /// Local id of the pattern with global key (origin node, origin id); 0 if unknown.
  uint64_t find(uint64_t origin_node, uint64_t origin_id) const;

  // -- consolidation (SONA deep loop; consolidation.cpp, planner.hpp) --------

  /// What category() returns for an unknown pattern, or before the bank was
  /// ever consolidated.
  static constexpr uint32_t no_category = router::no_category;

  /// Consolidates the bank, in this order:
  ///   1. indexes pending patterns;
  ///   2. prunes stale low-value patterns: not hit, learned on or merged for
  ///      `stale_days` before `now_ms` (UTC ms), with fewer than
  ///      `min_observations` observations;
  ///   3. k-means++ (router/planner.hpp; Arthur & Vassilvitskii 2007,
  ///      kernels::kmeans_pp, squared L2 on the exact f32 centroids) over the
  ///      remaining patterns: the clusters become the categories (see
  ///      category());
  ///   4. within each cluster only (no search over all pairs), merges
  ///      near-duplicates, cosine >= `merge_similarity`: patterns are visited
  ///      by observations, most first (then hits, then lower id); each absorbs
  ///      the later ones of its cluster that are that similar (found against
  ///      its centroid when its turn starts, confirmed against its current
  ///      one, as merging moves it). The
  ///      survivor is the pattern with more observations (unless the federation
  ///      rule forbids removing it, then the other one survives); it gets the
  ///      sum of both statistics (count, sum, sum² per tier: nothing is lost;
  ///      this node's contribution gets a new version), hits summed, the older
  ///      creation and the later update time, and — if this node created it —
  ///      the centroid (1 + n_a)·c_a + (1 + n_b)·c_b renormalised, n the
  ///      observations (a peer-created survivor keeps its creator's centroid);
  ///   5. removes the removed patterns from the HNSW index and moves the
  ///      moved survivors there (store::pattern_index::remove and add, in
  ///      place: no rebuild; see reindex_moved), and writes the categories
  ///      to LMDB (table router_state, key "categories") synchronously.
  /// Removed patterns leave the maps, the index and the memory budget at
  /// once; their LMDB records are erased (or retired, see the federation
  /// rule at the top of this file) with the next take_dirty batch, like
  /// every changed survivor: call flush/checkpoint (the router's timers do)
  /// to persist; the index file is saved by the next checkpoint (until then
  /// `open` would find the old file stale and rebuild it from LMDB).
  /// Cost: reads every centroid once (LMDB), O(n·k·dim·iterations) for
  /// k-means, O(Σ cluster² · dim) for the pair search, one index edit per
  /// removed pattern and moved survivor; it holds n·dim f32 centroids
  /// (reserved in the memory budget while it runs). Blocks its caller for
  /// all of it: prepare_consolidation + plan_consolidation +
  /// apply_consolidation in one call (below), for an owner that may block.
  /// Deterministic given the bank and `seed`.
  /// Errors (the bank is unchanged): `errc::invalid_argument` (a setting out
  /// of range), `errc::unavailable` (the memory budget refuses the working
  /// memory), `errc::storage_failure` / `errc::corrupt_data` (reading
  /// centroids, writing categories), `errc::internal` (hnswlib failed).
  core::result<consolidation_stats> consolidate(const consolidation_config& cfg, int64_t now_ms);

  /// consolidate() in three steps, so the owner's thread is busy only for
  /// the first and the last (the router plans on a detached actor and
  /// routes meanwhile). Step 1, on the owner's thread: validates `cfg`,
  /// indexes pending patterns, selects the prunes (step 2 above, judged at
  /// `now_ms`), and copies what planning needs: the ids, exact centroids,
  /// observation counts, hits and federation flags of the patterns that
  /// stay, and the current categories. Reserves the working memory (n·dim
  /// f32) in the budget until the plan is destroyed. Cost: reads every
  /// centroid once (LMDB), O(n·dim) copies. Errors: as consolidate()'s
  /// (`invalid_argument`, `unavailable`, `storage_failure`, `corrupt_data`,
  /// `internal`); the bank is unchanged either way.
  core::result<consolidation_run_ptr> prepare_consolidation(const consolidation_config& cfg,
                                                            int64_t now_ms);

  /// Step 2, on any thread: router::plan_consolidation (k-means++, the
  /// category ids and the near-duplicate merges, steps 3–4 above) over the
  /// run's snapshot alone; it touches no bank. Cost: O(n·k·dim·iterations)
  /// + O(Σ cluster²·dim). Deterministic given the snapshot and the seed.
  /// Never fails (a run planned already is planned again).
  static void plan_consolidation(consolidation_run& run);

  /// Step 3, on the owner's thread: applies a plan of this bank (prepared by
  /// it, planned, not applied before), re-validating against the bank as it
  /// is now, since routing, learning and peers' merges went on meanwhile:
  ///   - a prune is skipped when the pattern is gone, was hit or learned on
  ///     since (no longer stale at the plan's `now_ms`), got observations or
  ///     a peer's contribution;
  ///   - a merge is skipped when either pattern is gone or the one to remove
  ///     got a peer's contribution (counted in kept_shared); statistics are
  ///     summed as they are now, so nothing learned in between is lost; a
  ///     survivor takes its planned centroid if at least one merge into it
  ///     was applied;
  ///   - the categories table is replaced; patterns of the plan keep their
  ///     planned category, every other one (created meanwhile, or whose
  ///     merge was skipped) gets the nearest category on first use, as
  ///     category() describes.
  /// The index is edited in place (store::pattern_index::remove for removed
  /// patterns, add for moved survivors), no rebuild. Staleness is judged
  /// at the plan's `now_ms`. A moved survivor stays in the index at its
  /// pre-merge vector (cosine >= merge_similarity to the new one) until
  /// reindex_moved moves it: re-inserting costs ~0.15 ms per survivor at
  /// 10,000 × 384, seconds for thousands of merges, so the owner does it in
  /// slices. Cost: O(n), one index markDelete per removed pattern, and the
  /// categories record write (synchronous, LMDB).
  /// Errors (the bank is unchanged, except that moved survivors' index
  /// vectors may already be updated on `internal`): `invalid_argument` (a
  /// plan of another bank, not planned, or applied already), `unavailable`
  /// (the budget refuses the category table), `storage_failure` (writing
  /// categories), `internal` (hnswlib failed).
  core::result<consolidation_stats> apply_consolidation(consolidation_run& run);

  /// Moves up to `max` merge survivors of the last apply_consolidation to
  /// their new centroid in the index (store::pattern_index::add: a fresh
  /// slot, ~0.15 ms each at 10,000 × 384); the owner calls it between
  /// messages until reindex_pending() is 0 (consolidate() and
  /// prepare_consolidation do all that is left). Each move reserves an index
  /// slot from the memory budget; when that is refused the call stops and
  /// the survivor stays queued (counted in budget_refusals). Errors: those of
  /// store::pattern_index::add (the failed survivor and those after it stay
  /// queued).
  core::error reindex_moved(size_t max);

  /// Merge survivors still at their pre-merge index vector.
  size_t reindex_pending() const noexcept { return reindex_.size(); }

  /// The pattern's category: the id of its k-means++ cluster at the last
  /// consolidation. A pattern created since gets the category whose cluster
  /// mean is nearest to its centroid (squared L2, the k-means rule), computed
  /// on first use and cached. Ids are stable labels, not indexes: a cluster
  /// of a new consolidation keeps a previous category's id when the two
  /// cluster means are each other's nearest (mutual nearest neighbours),
  /// otherwise it gets a new id never used before; so an id keeps naming
  /// roughly the same region of embedding space across consolidations and
  /// restarts (for per-category LoRA adapters). `no_category` for an unknown
  /// pattern or a bank never consolidated. Cost: O(1) when known, else one
  /// centroid read and k·dim multiply-adds.
  uint32_t category(uint64_t pattern_id) const;

  /// The category ids of the last consolidation, ascending (empty before any).
  std::vector<uint32_t> categories() const;

  /// Patterns this node retired (merged away or pruned after being published;
  /// kept as small records so peers stay consistent).
  size_t retired() const noexcept { return retired_.size(); }

private:
  struct pattern_state {
    std::vector<proto::tier_stat> tiers; ///< this node's contribution
    uint64_t hits = 0;
    int64_t created_ms = 0;
    int64_t updated_ms = 0;
    uint64_t version = 0;     ///< of `tiers`; 0 = this node has no contribution
    uint64_t origin_node = 0; ///< 0 = created here
    uint64_t origin_id = 0;
    std::vector<proto::contribution> peers;  ///< sorted by node
    std::vector<proto::tier_stat> total;     ///< tiers + peers' tiers: what routing pools
    bool announced = false;                  ///< centroid sent to peers (since start)
    mutable uint32_t category = no_category; ///< cached by category()
  };
  struct origin_key {
    uint64_t node, id;
    bool operator==(const origin_key&) const = default;
  };
  struct origin_key_hash {
    size_t operator()(const origin_key& k) const noexcept {
      return std::hash<uint64_t>{}(k.node * 0x9e3779b97f4a7c15ull ^ k.id);
    }
  };

  pattern_bank(uint32_t dim, router_config cfg, std::shared_ptr<store::environment> env);
  core::error load();
  std::filesystem::path index_path() const;
  /// Exact f32 centroid: unflushed copy, else LMDB record, else the index's
  /// dequantized int8 copy (in-memory banks without LMDB).
  std::vector<float> centroid(uint64_t id) const;
  void add_to_global(const std::vector<proto::tier_stat>& tiers);
  /// Adds a pattern (from LMDB, insert or merge; its centroid is not used)
  /// to the maps, the bank-wide sums, the id counter and the clock.
  void adopt(const proto::pattern_record& r);
  /// Marks this node's contribution to `id` changed (for take_deltas).
  void touch_outbox(uint64_t id);
  proto::pattern_record make_record(uint64_t id, const pattern_state& st) const;
  origin_key key_of(uint64_t id, const pattern_state& st) const noexcept;
  /// Keeps the per-origin summaries current when origin `node`'s contribution
  /// to pattern `k` goes from `old_version` (0 = none) to `new_version` (0 =
  /// gone: the pattern was erased).
  void count_contribution(uint64_t node, const origin_key& k, uint64_t old_version,
                          uint64_t new_version);
  /// Joins one validated contribution into pattern `id`; returns whether it changed.
  bool join_peer(uint64_t id, const proto::contribution& c, int64_t now_ms);

  /// Reserves one pattern's bytes; true without a budget.
  bool reserve_pattern();

  // consolidation helpers (pattern_consolidation.cpp)
  /// Removes pattern `id` (created here, no peers' contributions) from the
  /// maps, the bank-wide sums (unless `merged`: its statistics moved to a
  /// survivor), the index's pending queue and the budget; queues its LMDB
  /// erase or retirement. @returns whether it was retired. Does not touch
  /// `index_` (apply_consolidation removes it there).
  bool remove_pattern(uint64_t id, bool merged);
  /// Revives retired pattern `id` (a peer contributed to it) with this node's
  /// zero contribution; it is indexed by index_pending. @returns `id`, or 0
  /// when its centroid is gone or the budget refuses.
  uint64_t revive(uint64_t id, int64_t now_ms);
  /// Reads the categories record (meta "categories") written by consolidate.
  core::error load_categories();
  /// Bytes of the category table (ids, means, norms).
  uint64_t category_bytes() const noexcept;

  uint32_t dim_;
  router_config cfg_;
  std::shared_ptr<store::environment> env_;
  std::shared_ptr<core::memory_budget> budget_;
  uint64_t reserved_ = 0, budget_refusals_ = 0;
  store::pattern_index index_;
  std::unordered_map<uint64_t, pattern_state> stats_;
  std::unordered_set<uint64_t> dirty_;
  /// Patterns created by `route`, not yet in `index_` (see index_pending).
  std::vector<std::pair<uint64_t, std::vector<float>>> pending_;
  /// Merge survivors whose index vector is still the one before the merge
  /// (apply_consolidation; see reindex_moved), in order.
  std::vector<uint64_t> reindex_;
  /// Exact centroids of patterns not yet written to LMDB (the index keeps
  /// int8 copies only; written patterns are read back from LMDB).
  std::unordered_map<uint64_t, std::vector<float>> unflushed_;
  std::vector<proto::tier_stat> global_; // [n_tiers] sums over every pattern
  uint64_t next_id_ = 1;
  uint64_t clock_ = 0; ///< versions of this node's contributions
  /// Ids below this bound are recorded in LMDB (meta "id_reserved") as
  /// possibly issued, so a restart after a crash never reissues an id that
  /// peers may already know with another centroid.
  uint64_t id_reserved_ = 0;
  static constexpr uint64_t id_block = 4096;
  /// The next pattern id (reserving a new block in LMDB when needed; if that
  /// write fails the id is still issued, unprotected).
  uint64_t allocate_id();
  /// The next version: max(clock + 1, UTC µs). Wall time keeps versions
  /// above any this node published before a crash lost its last LMDB write.
  uint64_t tick() noexcept;
  bool rebuilt_ = false;
  /// Patterns created by other nodes: global key -> local id.
  std::unordered_map<origin_key, uint64_t, origin_key_hash> by_origin_;
  bool track_deltas_ = false;
  std::unordered_set<uint64_t> outbox_;
  /// Exact centroids of patterns created here and not yet announced (the
  /// LMDB copy may still be on its way through the writer).
  std::unordered_map<uint64_t, std::vector<float>> unannounced_;
  /// Peers' contributions to patterns whose announcement has not arrived.
  std::unordered_map<origin_key, std::vector<proto::contribution>, origin_key_hash> orphans_;
  size_t n_orphans_ = 0;
  /// What the bank holds per origin node (see summarize), kept incrementally.
  std::unordered_map<uint64_t, proto::origin_summary> summaries_;
  uint64_t stream_seq_ = 0;
  bool stream_seq_dirty_ = false;
  /// Patterns this node retired: id -> version of its zero contribution.
  std::unordered_map<uint64_t, uint64_t> retired_;
  /// Removals not yet taken for LMDB: id -> 0 (erase) or the retirement version.
  std::unordered_map<uint64_t, uint64_t> removed_;
  /// Categories of the last consolidation: ids [k], cluster means [k, dim]
  /// (not normalised), their squared norms [k]; the next unused id.
  std::vector<uint32_t> cat_ids_;
  std::vector<float> cat_means_;
  std::vector<float> cat_norms_;
  uint32_t next_category_ = 0;
  std::mt19937_64 rng_;
  routing_policy policy_;
  std::vector<policy_neighbor> nb_; // scratch of route()
};

} // namespace shoal::router
