// The consolidation planner alone: a snapshot in, a plan out, no bank.
#include "router/planner.hpp"

#include "kernels/vector.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

using namespace shoal;
using namespace shoal::router;

namespace {

constexpr size_t dim = 4;

/// A unit vector of `v`.
std::vector<float> u(std::vector<float> v) {
  kernels::normalize(v);
  return v;
}

/// Builds a snapshot of rows given as (centroid, weight, removable, ours).
struct row {
  std::vector<float> c;
  double weight = 1;
  bool removable = true;
  bool ours = true;
};

consolidation_snapshot snapshot_of(const std::vector<row>& rows, uint32_t clusters) {
  consolidation_snapshot s;
  s.cfg.clusters = clusters;
  s.dim = dim;
  for (size_t r = 0; r < rows.size(); ++r) {
    s.ids.push_back(100 + r);
    auto c = u(rows[r].c);
    s.x.insert(s.x.end(), c.begin(), c.end());
    s.weight.push_back(rows[r].weight);
    s.hits.push_back(0);
    s.removable.push_back(rows[r].removable ? 1 : 0);
    s.ours.push_back(rows[r].ours ? 1 : 0);
    s.kept.push_back(0);
  }
  return s;
}

/// The new centroid of a moved row.
std::vector<float> moved_centroid(const consolidation_plan& p, size_t r) {
  size_t slot = 0;
  for (size_t i = 0; i < r; ++i)
    slot += p.moved[i];
  return {p.moved_x.begin() + static_cast<ptrdiff_t>(slot * dim),
          p.moved_x.begin() + static_cast<ptrdiff_t>((slot + 1) * dim)};
}

// Two well separated groups: rows 0-2 near e0, rows 3-4 near e1. Within a
// group, rows 0 and 1 (and 3 and 4) are near-duplicates (cosine > 0.95);
// row 2 is in group 0 but at cosine ~0.9 from row 0.
std::vector<row> two_groups() {
  return {
    {{1, 0.05f, 0, 0}, 5}, // 0
    {{1, 0, 0.05f, 0}, 2}, // 1: duplicate of 0, fewer observations
    {{1, 0.5f, 0, 0}, 1},  // 2: same cluster, not a duplicate
    {{0, 0, 1, 0.05f}, 1}, // 3
    {{0, 0.05f, 1, 0}, 3}, // 4: duplicate of 3, more observations
  };
}

} // namespace

TEST_CASE("planner: near-duplicates of one cluster merge into the pattern with more observations") {
  auto s = snapshot_of(two_groups(), 2);
  auto p = plan_consolidation(s);
  CHECK(p.k == 2);
  CHECK(p.assign[0] == p.assign[1]);
  CHECK(p.assign[0] == p.assign[2]);
  CHECK(p.assign[3] == p.assign[4]);
  CHECK(p.assign[0] != p.assign[3]);
  REQUIRE(p.steps.size() == 2);
  // Clusters are visited in order, the heavier row absorbs the lighter one.
  std::vector<std::pair<size_t, size_t>> steps;
  for (auto st : p.steps)
    steps.emplace_back(st.from, st.into);
  std::sort(steps.begin(), steps.end());
  CHECK(steps[0] == std::pair<size_t, size_t>{1, 0});
  CHECK(steps[1] == std::pair<size_t, size_t>{3, 4});
  CHECK(p.gone == std::vector<uint8_t>{0, 1, 0, 1, 0});
  CHECK(p.moved == std::vector<uint8_t>{1, 0, 0, 0, 1});
  // The survivor moves to the weighted mean of both, renormalised.
  std::vector<float> want(dim);
  for (size_t j = 0; j < dim; ++j)
    want[j] = static_cast<float>(5 * s.x[0 * dim + j] + 2 * s.x[1 * dim + j]);
  kernels::normalize(want);
  auto got = moved_centroid(p, 0);
  for (size_t j = 0; j < dim; ++j)
    CHECK(got[j] == doctest::Approx(want[j]).epsilon(1e-6));
  CHECK(p.moved_x.size() == 2 * dim);
  // Rows that stay have a category; the merged ones have none.
  CHECK(p.cat_of[1] == no_category);
  CHECK(p.cat_of[3] == no_category);
  CHECK(p.cat_of[0] == p.cat_of[2]);
  CHECK(p.cat_of[0] != p.cat_of[4]);
  CHECK(p.kept_shared == 0);
}

TEST_CASE("planner: the federation rule keeps what this node may not remove") {
  SUBCASE("neither of two duplicates is removable: both stay, counted as kept") {
    auto rows = two_groups();
    rows[0].removable = rows[1].removable = false;
    auto p = plan_consolidation(snapshot_of(rows, 2));
    CHECK_FALSE(p.gone[0]);
    CHECK_FALSE(p.gone[1]);
    CHECK(p.kept[1] == 1);
    CHECK(p.kept_shared == 1);
    CHECK(p.steps.size() == 1); // only the other cluster's pair
  }
  SUBCASE("the heavier one is a peer's: the lighter one goes into it, which does not move") {
    auto rows = two_groups();
    rows[0].removable = rows[0].ours = false;
    auto p = plan_consolidation(snapshot_of(rows, 2));
    CHECK(p.gone[1] == 1);
    CHECK(p.moved[0] == 0);
  }
  SUBCASE("the lighter one has a peer's contribution: the heavier, removable one goes into it") {
    auto rows = two_groups();
    rows[1].removable = false; // the lighter one has a peer's contribution
    auto p = plan_consolidation(snapshot_of(rows, 2));
    CHECK(p.gone[0] == 1); // the heavier, removable one goes
    CHECK(p.gone[1] == 0);
    CHECK(p.moved[1] == 1); // created here: it moves
  }
}

TEST_CASE("planner: clusters keep the ids of the categories they match, new ones get new ids") {
  auto s = snapshot_of(two_groups(), 2);
  auto first = plan_consolidation(s);
  CHECK(first.categories_kept == 0);
  CHECK(first.next_category == 2);
  // Plan again with the first plan's categories as the previous ones.
  s.old_labels = first.labels;
  s.old_means = first.means;
  s.next_category = first.next_category;
  auto again = plan_consolidation(s);
  CHECK(again.categories_kept == 2);
  CHECK(again.next_category == 2);
  CHECK(again.cat_of == first.cat_of);
  // Three clusters now: two match the previous categories, one is new.
  s.cfg.clusters = 3;
  auto three = plan_consolidation(s);
  CHECK(three.categories_kept == 2);
  CHECK(three.next_category == 3);
}

TEST_CASE("planner: the same snapshot gives the same plan, and an empty one plans nothing") {
  auto s = snapshot_of(two_groups(), 0); // automatic k = ceil(sqrt(5 / 2)) = 2
  auto a = plan_consolidation(s), b = plan_consolidation(s);
  CHECK(a.k == 2);
  CHECK(a.assign == b.assign);
  CHECK(a.means == b.means);
  CHECK(a.gone == b.gone);
  CHECK(a.moved_x == b.moved_x);
  CHECK(a.cat_of == b.cat_of);
  consolidation_snapshot empty;
  empty.dim = dim;
  auto e = plan_consolidation(empty);
  CHECK(e.k == 0);
  CHECK(e.steps.empty());
  CHECK(e.cat_of.empty());
}

TEST_CASE("planner: similarity below merge_similarity merges nothing") {
  auto s = snapshot_of(two_groups(), 2);
  s.cfg.merge_similarity = 0.9999;
  auto p = plan_consolidation(s);
  CHECK(p.steps.empty());
  CHECK(std::count(p.gone.begin(), p.gone.end(), 1) == 0);
  CHECK(p.moved_x.empty());
}
