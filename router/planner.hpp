#pragma once
/// @file The consolidation planner of SONA's deep loop, pure: a snapshot of
/// the patterns that stay for clustering in, a plan out. It touches no bank,
/// no LMDB and no index; router::pattern_bank takes the snapshot on its
/// owner's thread (prepare_consolidation), runs the planner on another
/// thread, and applies the plan after re-checking it (apply_consolidation).
///
/// The plan:
///   1. k-means++ (Arthur & Vassilvitskii 2007; kernels::kmeans_pp, squared
///      L2 over the unit centroids, D² seeding, Lloyd iterations) gives k
///      clusters, k = config clusters or ceil(sqrt(n / 2)) (at most 1024),
///      clamped to [1, n];
///   2. a cluster keeps the id of a previous category when their means are
///      mutual nearest neighbours, otherwise it takes next_category++;
///   3. within each cluster only, rows are ordered by weight (most first),
///      then hits (most first), then id; each absorbs the later rows at
///      cosine >= merge_similarity (against its moved centroid once it has
///      absorbed one). Federation rule: only a `removable` row (created here,
///      no peer's contribution) is merged away; when the later row is not
///      removable but the earlier one is, the earlier one goes into the
///      later one; when neither is, the pair is kept and counted in
///      kept_shared. A survivor created here (`ours`) moves to the weighted
///      mean (w_a·c_a + w_b·c_b, renormalised); a peer-created one keeps its
///      creator's centroid;
///   4. every row that stays gets a category: its cluster's, or for a moved
///      survivor, that of the mean nearest to its new centroid.
/// Deterministic: the same snapshot (seed included) gives the same plan.
/// Cost: O(n·k·dim·iterations) for k-means, O(Σ cluster²·dim) for the pair
/// search; memory O(n + k·dim + largest cluster·dim) besides the snapshot.
///
/// Thread-safety: plan_consolidation is a pure function of its argument;
/// call it on any thread.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace shoal::router {

/// Settings of the deep loop's consolidation. Not config keys: the router
/// actor runs the deep loop with these defaults (how often it runs is
/// config sona.deep_interval_s); pattern_bank::consolidate checks them.
/// Copied per call: every field may change between runs.
struct consolidation_config {
  /// k of k-means++: the number of categories. 0 = automatic:
  /// ceil(sqrt(n / 2)) for n patterns, at most 1024. Larger than n is
  /// lowered to n. Default: 0. Range [0, 65536].
  uint32_t clusters = 0;
  /// Lloyd iterations at most (each costs n·k·dim multiply-adds).
  /// Default: 20. Range [1, 1000].
  uint32_t max_iterations = 20;
  /// Exact f32 centroid cosine at or above which two patterns of one
  /// cluster are near-duplicates and merged. Default: 0.95. Range (0, 1].
  double merge_similarity = 0.95;
  /// A pattern neither hit (a query joined it), learned on nor merged from a
  /// peer for this many days is stale... Default: 30. Range [1, 36500].
  uint32_t stale_days = 30;
  /// ...and a stale pattern is pruned only if it has fewer observations than
  /// this (all tiers, all contributors). 0 prunes nothing. Default: 3.
  /// Range [0, 2^53].
  uint64_t min_observations = 3;
  /// Seed of k-means++'s D² sampling (kernels::kmeans_rng): the same bank
  /// and seed give the same clusters. Default: 1.
  uint64_t seed = 1;
};

/// The planner's input: n rows (patterns), by ascending id.
struct consolidation_snapshot {
  consolidation_config cfg; ///< clusters, max_iterations, merge_similarity, seed are read
  size_t dim = 0;
  std::vector<uint64_t> ids;        ///< [n] pattern ids, ascending
  std::vector<float> x;             ///< [n, dim] L2-normalised centroids
  std::vector<double> weight;       ///< [n] 1 + observations (all contributors)
  std::vector<uint64_t> hits;       ///< [n] queries that joined the pattern
  std::vector<uint8_t> removable;   ///< [n] 1: created here and no peer contributed
  std::vector<uint8_t> ours;        ///< [n] 1: created here (its centroid may move)
  std::vector<uint8_t> kept;        ///< [n] 1: already kept by the federation rule (stale, shared)
  std::vector<uint32_t> old_labels; ///< [k_old] previous categories' ids
  std::vector<float> old_means;     ///< [k_old, dim] previous categories' means
  uint32_t next_category = 0;       ///< id the next new category takes
};

/// One near-duplicate merge: row `from` goes into row `into` (rows of the snapshot).
struct merge_step {
  size_t from = 0, into = 0;
};

/// The planner's output. Rows index the snapshot's.
struct consolidation_plan {
  size_t k = 0;                  ///< clusters (0 for an empty snapshot)
  std::vector<float> means;      ///< [k, dim] cluster means
  std::vector<float> norms;      ///< [k] squared L2 norms of the means
  std::vector<uint32_t> labels;  ///< [k] category id of each cluster
  std::vector<uint32_t> assign;  ///< [n] cluster of each row (k-means)
  std::vector<merge_step> steps; ///< the merges, in the order they were decided
  std::vector<uint8_t> gone;     ///< [n] 1: merged away
  std::vector<uint8_t> moved;    ///< [n] 1: a survivor whose centroid moved
  std::vector<float> moved_x;    ///< [rows with moved = 1, dim] their new centroids, by row
  std::vector<uint32_t> cat_of;  ///< [n] category of each row that stays (no_category if gone)
  std::vector<uint8_t> kept;    ///< [n] the snapshot's kept, plus pairs kept by the federation rule
  uint32_t next_category = 0;   ///< the snapshot's, after the new categories
  uint32_t iterations = 0;      ///< Lloyd iterations run
  bool converged = false;       ///< the last assignment pass changed nothing
  double inertia = 0;           ///< k-means objective (sum of squared L2 distances)
  uint32_t categories_kept = 0; ///< clusters that kept a previous category's id
  uint64_t kept_shared = 0;     ///< near-duplicate rows kept by the federation rule
  uint64_t kmeans_ms = 0;       ///< seeding and Lloyd iterations, wall clock
  uint64_t merge_ms = 0;        ///< near-duplicate search, wall clock
};

/// Category of a row that is gone (and of an unknown pattern, see pattern_bank::category).
inline constexpr uint32_t no_category = 0xffff'ffffu;

/// Plans a consolidation of `snapshot` (see the file comment).
/// @pre the snapshot's vectors have the sizes documented above, x's rows are
/// unit vectors, cfg.max_iterations >= 1 (pattern_bank checks the settings).
consolidation_plan plan_consolidation(const consolidation_snapshot& snapshot);

/// The k-means assignment rule (as kernels::kmeans_lloyd): the index of the
/// mean minimising ‖c‖² − 2 x·c, ties to the lower index.
/// @param means [k, dim]; @param norms [k] their squared norms (k >= 1);
/// @param dots [k] scratch.
uint32_t nearest_mean(std::span<const float> x, std::span<const float> means,
                      std::span<const float> norms, std::span<float> dots);

/// Squared L2 norm of each row of `means` [k, dim].
std::vector<float> squared_norms(std::span<const float> means, size_t dim);

} // namespace shoal::router
