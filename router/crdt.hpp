#pragma once
/// @file The merge rule of federated pattern statistics (DESIGN.md, Federation).
///
/// Each node only ever changes its own contribution to a pattern, and stamps
/// every change with a version from its own clock, which only grows. A
/// pattern's state across the fleet is then a set of contributions with at
/// most one per origin node, and merging two such sets keeps, per origin, the
/// contribution with the highest version: a join semilattice (state-based
/// CRDT; Shapiro et al., "Conflict-free Replicated Data Types", 2011), so
/// merging is idempotent, commutative and associative and replicas that have
/// seen the same contributions are equal whatever the order of delivery.
/// Two different contributions with the same origin and version cannot come
/// from an honest origin; the tie is broken by a total order on their
/// statistics so that even then every replica picks the same one.
///
/// Thread-safety: pure functions on values.

#include "proto/interfaces.hpp"
#include "proto/records.hpp"

#include "core/error.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace shoal::router {

using proto::merge_stats;

/// Whether contribution `a` wins over `b` of the same origin: higher version,
/// or at equal versions the lexicographically larger statistics.
bool supersedes(const proto::contribution& a, const proto::contribution& b) noexcept;

/// Joins `c` into `set` (sorted by node, at most one contribution per node).
/// @returns whether `set` changed.
bool join(std::vector<proto::contribution>& set, const proto::contribution& c);

/// Joins every contribution of `other` into `set`. @returns whether `set` changed.
bool join(std::vector<proto::contribution>& set, std::span<const proto::contribution> other);

/// Checks a contribution received from a peer: a version above 0, `n_tiers`
/// tiers, every value finite, counts at most 2^53, and sums consistent with
/// qualities in [0, 1] (0 <= sum2 <= sum <= count, with a relative tolerance
/// for rounding). Errors: `errc::invalid_argument`
/// naming the first problem.
core::error validate(const proto::contribution& c, size_t n_tiers);

/// Adds `from` into `into` element-wise (both [n_tiers]).
void add_tiers(std::vector<proto::tier_stat>& into, const std::vector<proto::tier_stat>& from);

/// Subtracts `from` from `into` element-wise (both [n_tiers]).
void sub_tiers(std::vector<proto::tier_stat>& into, const std::vector<proto::tier_stat>& from);

} // namespace shoal::router
