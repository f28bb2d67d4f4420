// The consolidation planner: k-means++ categories and near-duplicate merges
// over a snapshot (see planner.hpp).
#include "router/planner.hpp"

#include "core/clock.hpp"
#include "kernels/learn.hpp"
#include "kernels/vector.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace shoal::router {

namespace {

/// Automatic k is ceil(sqrt(n / 2)), at most this.
constexpr uint32_t max_auto_clusters = 1024;

uint64_t ms_since(int64_t start_ns) {
  return static_cast<uint64_t>((core::steady_now_ns() - start_ns) / 1'000'000);
}

/// Category ids: a cluster keeps a previous category's id when the two
/// means are mutual nearest neighbours, otherwise it gets a new one.
void label_clusters(const consolidation_snapshot& s, consolidation_plan& p) {
  const size_t dim = s.dim, k = p.k, k_old = s.old_labels.size();
  p.labels.assign(k, 0);
  std::vector<size_t> nn_new(k, 0), nn_old(k_old, 0);
  std::vector<float> best_new(k, INFINITY), best_old(k_old, INFINITY);
  for (size_t i = 0; i < k; ++i)
    for (size_t j = 0; j < k_old; ++j) {
      float d = kernels::l2sq({p.means.data() + i * dim, dim}, {s.old_means.data() + j * dim, dim});
      if (d < best_new[i]) {
        best_new[i] = d;
        nn_new[i] = j;
      }
      if (d < best_old[j]) {
        best_old[j] = d;
        nn_old[j] = i;
      }
    }
  for (size_t i = 0; i < k; ++i) {
    if (k_old > 0 && nn_old[nn_new[i]] == i) {
      p.labels[i] = s.old_labels[nn_new[i]];
      ++p.categories_kept;
    } else {
      p.labels[i] = p.next_category++;
    }
  }
}

} // namespace

uint32_t nearest_mean(std::span<const float> x, std::span<const float> means,
                      std::span<const float> norms, std::span<float> dots) {
  kernels::dot_rows(dots, x, means);
  uint32_t best = 0;
  float best_d = norms[0] - 2 * dots[0];
  for (size_t c = 1; c < norms.size(); ++c) {
    const float d = norms[c] - 2 * dots[c];
    if (d < best_d) {
      best_d = d;
      best = static_cast<uint32_t>(c);
    }
  }
  return best;
}

std::vector<float> squared_norms(std::span<const float> means, size_t dim) {
  std::vector<float> out(means.size() / dim);
  for (size_t c = 0; c < out.size(); ++c)
    out[c] = kernels::dot(means.subspan(c * dim, dim), means.subspan(c * dim, dim));
  return out;
}

consolidation_plan plan_consolidation(const consolidation_snapshot& s) {
  const size_t dim = s.dim;
  const size_t n = s.ids.size();
  const auto& cc = s.cfg;
  consolidation_plan p;
  p.next_category = s.next_category;
  p.kept = s.kept;

  // k-means++ over the centroids.
  int64_t t0 = core::steady_now_ns();
  size_t k = 0;
  if (n > 0) {
    k = cc.clusters != 0
          ? cc.clusters
          : std::min<size_t>(max_auto_clusters, static_cast<size_t>(std::ceil(std::sqrt(n / 2.0))));
    k = std::clamp<size_t>(k, 1, n);
  }
  p.k = k;
  p.means.assign(k * dim, 0.0f);
  p.assign.assign(n, 0);
  if (n > 0) {
    std::vector<float> scratch(kernels::kmeans_scratch_size(n, k, dim));
    kernels::kmeans_rng rng{cc.seed};
    auto km = kernels::kmeans_pp(p.means, p.assign, s.x, dim, cc.max_iterations, rng, scratch);
    p.iterations = static_cast<uint32_t>(km.iterations);
    p.converged = km.converged;
    p.inertia = km.inertia;
  }
  p.norms = squared_norms(p.means, dim);
  p.kmeans_ms = ms_since(t0);
  label_clusters(s, p);

  // Near-duplicates, within each cluster only.
  t0 = core::steady_now_ns();
  const auto& assign = p.assign;
  std::vector<double> weight = s.weight; // grows as rows absorb others
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  // By cluster, then most observations first, then most hits, then lower id.
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (assign[a] != assign[b])
      return assign[a] < assign[b];
    if (weight[a] != weight[b])
      return weight[a] > weight[b];
    if (s.hits[a] != s.hits[b])
      return s.hits[a] > s.hits[b];
    return s.ids[a] < s.ids[b];
  });
  auto& gone = p.gone;
  auto& moved = p.moved;
  gone.assign(n, 0);
  moved.assign(n, 0);
  // The moved survivors' centroids, by row, until they are packed into moved_x.
  std::vector<std::vector<float>> moved_c(n);
  std::vector<float> block, dots;
  const auto thr = static_cast<float>(cc.merge_similarity);
  for (size_t begin = 0; begin < n;) {
    size_t end = begin;
    while (end < n && assign[order[end]] == assign[order[begin]])
      ++end;
    const size_t m = end - begin;
    const size_t* member = order.data() + begin;
    block.resize(m * dim);
    for (size_t a = 0; a < m; ++a)
      std::copy_n(s.x.data() + member[a] * dim, dim, block.data() + a * dim);
    auto brow = [&](size_t a) { return std::span<float>(block.data() + a * dim, dim); };
    // Merges row `from` into row `into` (block indexes).
    auto absorb = [&](size_t from, size_t into) {
      const size_t rf = member[from], ri = member[into];
      p.steps.push_back({rf, ri});
      gone[rf] = 1;
      if (s.ours[ri]) { // the creator's centroid is not ours to move
        auto ci = brow(into), cf = brow(from);
        for (size_t j = 0; j < dim; ++j)
          ci[j] = static_cast<float>(weight[ri] * ci[j] + weight[rf] * cf[j]);
        kernels::normalize(ci);
        moved[ri] = 1;
      }
      weight[ri] += weight[rf];
    };
    for (size_t a = 0; a + 1 < m; ++a) {
      if (gone[member[a]])
        continue;
      const size_t rest = m - a - 1;
      dots.resize(rest);
      kernels::dot_rows(dots, brow(a), {block.data() + (a + 1) * dim, rest * dim});
      bool a_moved = false;
      for (size_t i = 0; i < rest; ++i) {
        const size_t b = a + 1 + i;
        if (gone[member[b]] || dots[i] < thr)
          continue;
        if (a_moved && kernels::dot(brow(a), brow(b)) < thr)
          continue;
        if (s.removable[member[b]]) {
          absorb(b, a);
          a_moved = true;
        } else if (s.removable[member[a]]) {
          absorb(a, b);
          break;
        } else if (!p.kept[member[b]]) {
          p.kept[member[b]] = 1;
          ++p.kept_shared;
        }
      }
    }
    for (size_t a = 0; a < m; ++a)
      if (moved[member[a]] && !gone[member[a]]) {
        auto c = brow(a);
        moved_c[member[a]].assign(c.begin(), c.end());
      }
    begin = end;
  }
  // A row that moved and was merged away later is gone, not moved.
  for (size_t r = 0; r < n; ++r)
    if (gone[r])
      moved[r] = 0;
  // Categories of the rows that stay; a moved survivor is assigned anew.
  p.cat_of.assign(n, no_category);
  for (size_t r = 0; r < n; ++r) {
    if (gone[r])
      continue;
    uint32_t c = assign[r];
    if (moved[r]) {
      dots.resize(k);
      c = nearest_mean(moved_c[r], p.means, p.norms, dots);
      p.moved_x.insert(p.moved_x.end(), moved_c[r].begin(), moved_c[r].end());
    }
    p.cat_of[r] = p.labels[c];
  }
  p.merge_ms = ms_since(t0);
  return p;
}

} // namespace shoal::router
