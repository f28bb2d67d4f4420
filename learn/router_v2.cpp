#include "learn/router_v2.hpp"

#include <algorithm>
#include <cmath>
#include <random>

namespace shoal::learn {

namespace {

kernels::fastgrnn_shape cell_shape(const router_v2_config& c) {
  kernels::fastgrnn_shape s;
  s.n_x = c.proj;
  s.n_h = c.hidden;
  s.r_w = c.rank_w;
  s.r_u = c.rank_u;
  return s;
}

/// out[j] = Σ_i x[i]·p[i·ld + j] for j < n (Pᵀx over P's first n columns;
/// P [rows, ld] row-major). Blocks of 16 columns accumulate in registers over
/// all rows, so the compiler vectorises the block at -O2 (a row-by-row axpy
/// into `out` is not: it needs alias checks) — the instant loop's largest
/// product, 2·rows·n flops.
void transposed_product(float* __restrict out, const float* __restrict p, size_t rows, size_t ld,
                        size_t n, const float* __restrict x) noexcept {
  constexpr size_t block = 16;
  size_t j0 = 0;
  for (; j0 + block <= n; j0 += block) {
    float acc[block] = {};
    for (size_t i = 0; i < rows; ++i) {
      const float* row = p + i * ld + j0;
      const float xi = x[i];
      for (size_t l = 0; l < block; ++l)
        acc[l] += xi * row[l];
    }
    for (size_t l = 0; l < block; ++l)
      out[j0 + l] = acc[l];
  }
  for (; j0 < n; ++j0) {
    float acc = 0;
    for (size_t i = 0; i < rows; ++i)
      acc += x[i] * p[i * ld + j0];
    out[j0] = acc;
  }
}

/// y[j] += a·x[j] for j < n, in blocks of 16 (vectorised at -O2, as above).
void axpy(float* __restrict y, const float* __restrict x, float a, size_t n) noexcept {
  constexpr size_t block = 16;
  size_t j = 0;
  for (; j + block <= n; j += block)
    for (size_t l = 0; l < block; ++l)
      y[j + l] += a * x[j + l];
  for (; j < n; ++j)
    y[j] += a * x[j];
}

} // namespace

uint8_t context_bucket_index(double tokens) {
  for (size_t k = 0; k < context_buckets.size(); ++k)
    if (tokens <= context_buckets[k])
      return static_cast<uint8_t>(k);
  return static_cast<uint8_t>(context_buckets.size() - 1);
}

uint8_t sampling_index(std::span<const double> grid, double value) {
  for (size_t i = 0; i < grid.size(); ++i)
    if (std::abs(grid[i] - value) <= 1e-3)
      return static_cast<uint8_t>(i);
  return no_choice;
}

router_v2_model::router_v2_model(router_v2_config cfg) : cfg_(cfg), cell_(cell_shape(cfg)) {
  // The sampling and context heads start at 0: no adjustment, a uniform
  // context distribution.
  theta_.assign(off_end(), 0.0f);
  // Initialisation: LoRA A small random and B = 0 (Hu et al. 2021: the
  // adapter starts as the identity); P, the cell's factors and H scaled by
  // 1/sqrt(fan-in); FastGRNN's ζ, ν raw at 1 and −4 (σ: 0.73, 0.018) so a
  // new cell mostly keeps its state, as the paper initialises them; the
  // heads' biases start at 0, so a new model predicts router v1's estimate.
  std::mt19937_64 rng(cfg_.seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  auto fill = [&](size_t off, size_t n, float std) {
    for (size_t i = 0; i < n; ++i)
      theta_[off + i] = std * n01(rng);
  };
  const size_t E = cfg_.embed_dim;
  fill(off_a(), size_t{cfg_.lora_rank} * E, 1.0f / std::sqrt(static_cast<float>(E)));
  fill(off_p(), size_t{cfg_.proj} * n_u(), 1.0f / std::sqrt(static_cast<float>(n_u())));
  float* cell = theta_.data() + off_cell();
  const auto& s = cell_;
  for (size_t i = 0; i < s.r_w * s.n_h; ++i)
    cell[s.w1t() + i] = n01(rng) / std::sqrt(static_cast<float>(s.r_w));
  for (size_t i = 0; i < s.r_w * s.n_x; ++i)
    cell[s.w2() + i] = n01(rng) / std::sqrt(static_cast<float>(s.n_x));
  for (size_t i = 0; i < s.r_u * s.n_h; ++i) {
    cell[s.u1t() + i] = 0.5f * n01(rng) / std::sqrt(static_cast<float>(s.r_u));
    cell[s.u2() + i] = 0.5f * n01(rng) / std::sqrt(static_cast<float>(s.n_h));
  }
  cell[s.zeta()] = 1.0f;
  cell[s.nu()] = -4.0f;
  fill(off_h(), size_t{cfg_.n_tiers} * cfg_.hidden,
       0.1f / std::sqrt(static_cast<float>(cfg_.hidden)));
}

void router_v2_model::forward(const router_v2_input& in, std::span<const float> h_prev,
                              router_v2_trace& tr, bool context) const {
  const size_t E = cfg_.embed_dim, X = cfg_.proj, Hn = cfg_.hidden, T = cfg_.n_tiers;
  const size_t r = cfg_.lora_rank, U = n_u();
  const float* th = theta_.data();
  // e' = e + s·B(A e)
  tr.e.assign(in.embedding.begin(), in.embedding.end());
  tr.e2.resize(E);
  kernels::micro_lora_forward(tr.e2, in.embedding, {th + off_a(), r * E}, {th + off_bt(), r * E},
                              cfg_.lora_alpha);
  tr.scope_weight = 0;
  if (in.scope && in.scope->a.size() == r * E && in.scope->bt.size() == r * E) {
    // e' = e + (1 − w)·(shared adapter's delta) + w·(scoped adapter's delta)
    const float w = in.scope->weight();
    tr.scope_weight = w;
    tr.scoped.resize(E);
    kernels::micro_lora_forward(tr.scoped, in.embedding, in.scope->a, in.scope->bt,
                                cfg_.lora_alpha);
    for (size_t j = 0; j < E; ++j)
      tr.e2[j] = in.embedding[j] + (1 - w) * (tr.e2[j] - in.embedding[j])
                 + w * (tr.scoped[j] - in.embedding[j]);
  }
  tr.u.assign(U, 0.0f);
  std::copy(tr.e2.begin(), tr.e2.end(), tr.u.begin());
  size_t k = E;
  for (size_t i = 0; i < n_neighbors; ++i)
    tr.u[k++] = i < in.neighbor_sims.size() ? in.neighbor_sims[i] : 0.0f;
  for (size_t t = 0; t < T; ++t)
    tr.u[k++] = t < in.neighbor_rewards.size() ? in.neighbor_rewards[t] : 0.0f;
  for (size_t t = 0; t < T; ++t)
    tr.u[k++] =
      t < in.neighbor_counts.size() ? std::log1p(std::max(0.0f, in.neighbor_counts[t])) / 4 : 0.0f;
  tr.u[k++] = std::log1p(std::max(0.0f, in.prompt_tokens)) / 8.0f;
  tr.u[k++] = in.latency_budget;
  tr.u[k++] = in.memory_pressure;
  // z = P u + b_p
  tr.z.resize(X);
  for (size_t i = 0; i < X; ++i)
    tr.z[i] = th[off_bp() + i] + kernels::dot({th + off_p() + i * U, U}, tr.u);
  // h = cell(z, h_prev)
  tr.h_prev.assign(h_prev.begin(), h_prev.end());
  tr.h.resize(Hn);
  tr.cell_cache.resize(cell_.cache_size());
  kernels::fastgrnn_forward(cell_, tr.h, tr.cell_cache, {th + off_cell(), cell_.n_params()}, tr.z,
                            tr.h_prev);
  // q = m + H h + b_q: a correction of router v1's estimate m (the skip has
  // no parameters, so the gradient is unchanged)
  tr.q.resize(T);
  for (size_t t = 0; t < T; ++t)
    tr.q[t] = (t < in.neighbor_rewards.size() ? in.neighbor_rewards[t] : 0.0f) + th[off_bq() + t]
              + kernels::dot({th + off_h() + t * Hn, Hn}, tr.h);
  // Sampling adjustments and context bucket probabilities.
  auto linear = [&](std::vector<float>& out, size_t n, size_t w_off, size_t b_off) {
    out.resize(n);
    for (size_t i = 0; i < n; ++i)
      out[i] = th[b_off + i] + kernels::dot({th + w_off + i * Hn, Hn}, tr.h);
  };
  linear(tr.dt, n_temperatures, off_gt(), off_bt_head());
  linear(tr.dp, n_top_ps, off_gp(), off_bp_head());
  if (!context) {
    tr.ctx.clear();
    return;
  }
  const size_t C = context_inputs();
  const float ell = tr.u[E + n_neighbors + 2 * T]; // log(1 + prompt tokens)/8
  tr.ctx.resize(n_contexts);
  for (size_t k = 0; k < n_contexts; ++k) {
    const float* row = th + off_c() + k * C;
    tr.ctx[k] = th[off_bc() + k] + kernels::dot({row, Hn}, tr.h)
                + kernels::dot({row + Hn, E}, tr.e2) + row[Hn + E] * ell;
  }
  const float mx = *std::max_element(tr.ctx.begin(), tr.ctx.end());
  float z = 0;
  for (auto& x : tr.ctx)
    z += (x = std::exp(x - mx));
  for (auto& x : tr.ctx)
    x /= z;
}

float router_v2_model::predicted(const router_v2_trace& tr, const router_v2_outcome& o) {
  float r = tr.q[o.tier];
  if (o.temperature < tr.dt.size())
    r += tr.dt[o.temperature];
  if (o.top_p < tr.dp.size())
    r += tr.dp[o.top_p];
  return r;
}

uint8_t router_v2_model::context_choice(const router_v2_trace& tr) {
  return static_cast<uint8_t>(std::max_element(tr.ctx.begin(), tr.ctx.end()) - tr.ctx.begin());
}

router_v2_model::decision router_v2_model::decide(std::span<const float> q,
                                                  std::span<const double> costs) const {
  decision d;
  double best = -1e300, sum = 0;
  auto value = [&](size_t t) { return q[t] - (t < costs.size() ? costs[t] : 0.0); };
  for (size_t t = 0; t < q.size(); ++t)
    if (value(t) > best) {
      best = value(t);
      d.tier = static_cast<uint32_t>(t);
    }
  for (size_t t = 0; t < q.size(); ++t)
    sum += std::exp((value(t) - best) / cfg_.temperature);
  d.confidence = static_cast<float>(1.0 / sum);
  return d;
}

float router_v2_model::backward(const router_v2_trace& tr, const router_v2_outcome& o,
                                std::span<float> grad, float* context_loss) const {
  const float w = std::min(1.0f / std::max(o.behaviour_prob, 1e-6f), cfg_.max_importance);
  const float err = predicted(tr, o) - o.reward;
  // Only the taken arms' heads see a gradient of the squared loss.
  backprop(tr, o, 2.0f * w * err, grad, context_weight);
  float ce = 0;
  if (o.context_tokens > 0 && !tr.ctx.empty())
    ce = -std::log(std::max(tr.ctx[context_bucket_index(o.context_tokens)], 1e-30f));
  if (context_loss)
    *context_loss = context_weight * ce;
  return w * err * err + context_weight * ce;
}

void router_v2_model::backprop_heads(const router_v2_trace& tr, const router_v2_outcome& o,
                                     float dq, float dctx, float* g, std::vector<float>& dh) const {
  const size_t Hn = cfg_.hidden;
  const float* th = theta_.data();
  dh.assign(Hn, 0.0f);
  // One row of a head: its gradient d·h (when g is given), d·row into dh.
  auto row = [&](size_t w_off, size_t b_off, size_t i, float d) {
    for (size_t j = 0; j < Hn; ++j)
      dh[j] += d * th[w_off + i * Hn + j];
    if (!g)
      return;
    for (size_t j = 0; j < Hn; ++j)
      g[w_off + i * Hn + j] += d * tr.h[j];
    g[b_off + i] += d;
  };
  row(off_h(), off_bq(), o.tier, dq);
  if (o.temperature < n_temperatures)
    row(off_gt(), off_bt_head(), o.temperature, dq);
  if (o.top_p < n_top_ps)
    row(off_gp(), off_bp_head(), o.top_p, dq);
  if (g && dctx > 0 && o.context_tokens > 0 && !tr.ctx.empty()) {
    // ∂CE/∂logit_k = c_k − [k = k*], into C and b_c only (not into h, e').
    const size_t target = context_bucket_index(o.context_tokens);
    const size_t C = context_inputs(), E = cfg_.embed_dim;
    const float ell = tr.u[E + n_neighbors + 2 * size_t{cfg_.n_tiers}];
    for (size_t k = 0; k < n_contexts; ++k) {
      const float d = dctx * (tr.ctx[k] - (k == target ? 1.0f : 0.0f));
      float* gr = g + off_c() + k * C;
      axpy(gr, tr.h.data(), d, Hn);
      axpy(gr + Hn, tr.e2.data(), d, E);
      gr[Hn + E] += d * ell;
      g[off_bc() + k] += d;
    }
  }
}

void router_v2_model::backprop(const router_v2_trace& tr, const router_v2_outcome& o, float dq,
                               std::span<float> grad, float dctx) const {
  const size_t E = cfg_.embed_dim, X = cfg_.proj;
  const size_t r = cfg_.lora_rank, U = n_u();
  const float* th = theta_.data();
  float* g = grad.data();
  // Per-thread scratch: no allocation per call after the first.
  thread_local std::vector<float> dh, dh_prev, dz, work, du;
  backprop_heads(tr, o, dq, dctx, g, dh);
  const size_t Hn = cfg_.hidden;
  // Cell (one step: h_prev is an input here).
  dh_prev.resize(Hn);
  dz.resize(X);
  work.resize(cell_.work_size());
  kernels::fastgrnn_backward(cell_, dh_prev, dz, {g + off_cell(), cell_.n_params()}, work,
                             {th + off_cell(), cell_.n_params()}, tr.cell_cache, tr.z, tr.h_prev,
                             dh);
  // Projection.
  du.resize(U);
  for (size_t i = 0; i < X; ++i) {
    g[off_bp() + i] += dz[i];
    axpy(g + off_p() + i * U, tr.u.data(), dz[i], U); // ∂/∂P = dz uᵀ
  }
  transposed_product(du.data(), th + off_p(), X, U, U, dz.data()); // du = Pᵀ dz
  // MicroLoRA: with s = α/r, a_k = A[k,:]·e and v_k = Bᵀ[k,:]·de':
  //   ∂L/∂A[k,:] = s·v_k·e,   ∂L/∂Bᵀ[k,:] = s·a_k·de'.
  // (blended with a scoped adapter of weight w, the shared one's share is 1 − w)
  const float s = cfg_.lora_alpha / static_cast<float>(r) * (1 - tr.scope_weight);
  std::span<const float> de(du.data(), E);
  const std::vector<float>& e = tr.e;
  for (size_t k = 0; k < r; ++k) {
    const float* a = th + off_a() + k * E;
    const float* bt = th + off_bt() + k * E;
    float ak = kernels::dot({a, E}, e), vk = kernels::dot({bt, E}, de);
    axpy(g + off_a() + k * E, e.data(), s * vk, E);
    axpy(g + off_bt() + k * E, de.data(), s * ak, E);
  }
}

float router_v2_model::instant_step(const router_v2_trace& tr, const router_v2_outcome& o, float lr,
                                    scoped_adapter* scope) {
  const size_t E = cfg_.embed_dim, X = cfg_.proj, Hn = cfg_.hidden, r = cfg_.lora_rank;
  const size_t U = n_u();
  float* th = theta_.data();
  const float w = std::min(1.0f / std::max(o.behaviour_prob, 1e-6f), cfg_.max_importance);
  const float err = predicted(tr, o) - o.reward;
  const float dq = 2.0f * w * err;
  // Per-thread scratch: no allocation per request after the first.
  thread_local std::vector<float> dh, dh_prev, dz, work, cell_grad, de;
  backprop_heads(tr, o, dq, 0.0f, nullptr, dh); // dh only: the heads stay fixed
  dh_prev.resize(Hn);
  dz.resize(X);
  work.resize(cell_.work_size());
  cell_grad.assign(cell_.n_params(), 0.0f); // the backward adds to it; unused here
  kernels::fastgrnn_backward(cell_, dh_prev, dz, cell_grad, work,
                             {th + off_cell(), cell_.n_params()}, tr.cell_cache, tr.z, tr.h_prev,
                             dh);
  // de' = (Pᵀ dz)[0:E]
  de.resize(E);
  transposed_product(de.data(), th + off_p(), X, U, E, dz.data());
  const float ws = tr.scope_weight;
  kernels::micro_lora_update({th + off_a(), r * E}, {th + off_bt(), r * E}, tr.e, de,
                             cfg_.lora_alpha, lr * (1 - ws));
  if (scope && scope->a.size() == r * E && scope->bt.size() == r * E) {
    if (ws > 0)
      kernels::micro_lora_update(scope->a, scope->bt, tr.e, de, cfg_.lora_alpha, lr * ws);
    ++scope->steps;
  }
  return w * err * err;
}

core::result<router_v2_model> router_v2_model::restore(uint32_t version, const router_v2_config& c,
                                                       std::span<const float> params) {
  auto bad = [](const std::string& what) {
    return core::error{errc::corrupt_data, "router v2 checkpoint: " + what};
  };
  if (version == 0 || version > checkpoint_version)
    return bad("unknown version " + std::to_string(version));
  if (c.embed_dim == 0 || c.embed_dim > 65536 || c.n_tiers == 0 || c.n_tiers > 64 || c.proj == 0
      || c.proj > 4096 || c.hidden == 0 || c.hidden > 4096 || c.rank_w == 0 || c.rank_u == 0
      || c.lora_rank == 0 || c.lora_rank > kernels::micro_lora_max_rank)
    return bad("sizes out of range");
  router_v2_model m(c);
  // Version 1 stored the parameters up to b_q; the later heads start new.
  const size_t expected = version == 1 ? m.off_gt() : m.theta_.size();
  if (params.size() != expected)
    return bad(std::to_string(params.size()) + " parameters stored, " + std::to_string(expected)
               + " expected");
  std::copy(params.begin(), params.end(), m.theta_.begin());
  return m;
}

// ---- the background trainer ------------------------------------------------------

scoped_adapter scoped_adapter::make(uint32_t rank, uint32_t embed_dim, uint64_t seed) {
  scoped_adapter ad;
  const size_t n = size_t{rank} * embed_dim;
  ad.a.resize(n);
  ad.bt.assign(n, 0.0f);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f / std::sqrt(static_cast<float>(embed_dim)));
  for (auto& x : ad.a)
    x = d(rng);
  return ad;
}

void router_v2_features::assign(const router_v1_view& r) {
  sims = r.neighbor_sims;
  rewards.assign(r.mean_quality.begin(), r.mean_quality.end());
  counts.assign(r.evidence.begin(), r.evidence.end());
}

router_v2_choice router_v2_choose(const router_v1_view& r, const router_v2_trace& tr,
                                  std::span<const double> costs, bool ready, double threshold,
                                  std::mt19937_64& rng) {
  const size_t T = costs.size();
  router_v2_choice c;
  c.tier = r.tier;
  c.confidence = r.confidence;
  c.behaviour_prob = static_cast<float>(std::max(r.confidence, 0.05));
  std::array<kernels::tier_posterior, 16> buf;
  std::span<kernels::tier_posterior> post(buf.data(), std::min(T, buf.size()));
  double best = -1e300;
  for (size_t t = 0; t < post.size(); ++t) {
    post[t] = {tr.q[t], r.var_quality[t]};
    if (tr.q[t] - costs[t] > best) {
      best = tr.q[t] - costs[t];
      c.greedy_tier = static_cast<uint32_t>(t);
    }
  }
  if (!ready)
    return c;
  const uint32_t tier = kernels::thompson_choose(post, costs.first(post.size()), rng, 1.0);
  const double conf = kernels::choice_confidence(post, costs.first(post.size()), tier);
  if (conf < threshold)
    return c;
  c.tier = tier;
  c.confidence = conf;
  c.behaviour_prob = static_cast<float>(std::max(conf, 0.05));
  c.by_v2 = true;
  return c;
}

router_v2_sampling router_v2_sample(const router_v2_trace& tr, bool ready, float explore,
                                    std::mt19937_64& rng) {
  router_v2_sampling s;
  std::uniform_real_distribution<float> u01(0.0f, 1.0f);
  const float e = std::clamp(explore, 0.0f, 1.0f);
  auto pick = [&](const std::vector<float>& d, uint8_t& out, float& prob) {
    uint8_t greedy = default_sampling_index;
    if (ready)
      for (size_t i = 0; i < d.size(); ++i)
        if (d[i] > d[greedy])
          greedy = static_cast<uint8_t>(i);
    out = greedy;
    if (e > 0 && u01(rng) < e)
      out = static_cast<uint8_t>(rng() % d.size());
    prob = (out == greedy ? 1.0f - e : 0.0f) + e / static_cast<float>(d.size());
  };
  pick(tr.dt, s.temperature, s.prob_temperature);
  pick(tr.dp, s.top_p, s.prob_top_p);
  return s;
}

router_v2_trainer::router_v2_trainer(router_v2_model start, router_v2_trainer_config cfg)
  : model_(std::move(start)), cfg_(cfg) {
  fisher_.assign(model_.n_params(), 0.0f);
  fisher_star_.assign(model_.n_params(), 0.0f);
  anchor_.assign(model_.params().begin(), model_.params().end());
  grad_.assign(model_.n_params(), 0.0f);
  sample_.assign(model_.n_params(), 0.0f);
  sq_.assign(model_.n_params(), 0.0f);
  adam_m_.assign(model_.n_params(), 0.0f);
  adam_v_.assign(model_.n_params(), 0.0f);
  if (cfg_.batch == 0)
    cfg_.batch = 1;
  if (cfg_.fisher_every == 0)
    cfg_.fisher_every = 1;
}

void router_v2_trainer::consolidate() {
  kernels::ewc_consolidate(anchor_, model_.params());
  // The importance of what was learned up to here, frozen with the anchor
  // (online EWC, Schwarz et al. 2018: F* ← γ_task·F* + F): the running
  // estimate goes on to measure the next task, the penalty keeps this one.
  for (size_t i = 0; i < fisher_star_.size(); ++i)
    fisher_star_[i] = cfg_.task_gamma * fisher_star_[i] + fisher_[i];
  anchored_ = true;
}

double router_v2_trainer::recent_error(std::span<const router_v2_trajectory> data, size_t n_new) {
  const size_t n = std::min({data.size(), n_new, size_t{1024}});
  double e = 0;
  for (size_t i = data.size() - n; i < data.size(); ++i) {
    const auto& t = data[i];
    model_.forward(t.input(), t.h_prev, trace_, false); // the reward alone
    const double d = router_v2_model::predicted(trace_, t.outcome()) - t.reward;
    e += d * d;
  }
  return n > 0 ? e / static_cast<double>(n) : 0.0;
}

router_v2_trainer::pass_stats router_v2_trainer::train(std::span<const router_v2_trajectory> data,
                                                       size_t n_new) {
  pass_stats st;
  double loss_sum = 0, ctx_sum = 0, penalty_sum = 0;
  // A task boundary: the newest trajectories are predicted much worse than
  // the model fitted the newest ones of the last pass — the data changed.
  // Checked once per pass on the unweighted prediction error (the importance-
  // weighted loss of a mini-batch is too heavy-tailed to compare).
  if (cfg_.ewc && !data.empty() && n_new > 0) {
    const double before = recent_error(data, n_new);
    if (passes_ >= cfg_.boundary_warmup && before > cfg_.boundary_ratio * fit_error_ + 1e-6) {
      consolidate();
      ++st.boundaries;
    }
  }
  for (uint32_t epoch = 0; epoch < cfg_.epochs; ++epoch)
    for (size_t b0 = 0; b0 < data.size(); b0 += cfg_.batch) {
      const size_t n = std::min<size_t>(cfg_.batch, data.size() - b0);
      std::fill(grad_.begin(), grad_.end(), 0.0f);
      std::fill(sq_.begin(), sq_.end(), 0.0f);
      double loss = 0, ctx_loss = 0;
      size_t fisher_n = 0;
      for (size_t i = 0; i < n; ++i) {
        const auto& t = data[b0 + i];
        model_.forward(t.input(), t.h_prev, trace_);
        float ce = 0;
        loss += model_.backward(trace_, t.outcome(), grad_, &ce) - ce;
        ctx_loss += ce;
        if (cfg_.ewc && i % cfg_.fisher_every == 0) {
          // Fisher of the Gaussian reward model: E[(∂q_a/∂θ)²], which does
          // not vanish as the errors do (the loss gradient's square would);
          // estimated on every fisher_every-th sample.
          // (Only the reward's parameters: beyond them the sample is 0.)
          ++fisher_n;
          const size_t nr = model_.n_reward_params();
          std::fill(sample_.begin(), sample_.begin() + static_cast<std::ptrdiff_t>(nr), 0.0f);
          model_.backprop(trace_, t.outcome(), 1.0f, sample_);
          for (size_t j = 0; j < nr; ++j)
            sq_[j] += sample_[j] * sample_[j];
        }
      }
      const float inv = 1.0f / static_cast<float>(n);
      const float inv_f = 1.0f / static_cast<float>(std::max<size_t>(1, fisher_n));
      for (size_t j = 0; j < grad_.size(); ++j) {
        grad_[j] *= inv;
        sq_[j] = std::sqrt(sq_[j] * inv_f); // ewc_update_fisher squares it back
      }
      loss *= inv;
      ctx_loss *= inv;
      if (cfg_.ewc) {
        kernels::ewc_update_fisher(fisher_, sq_, cfg_.fisher_gamma);
        if (anchored_)
          penalty_sum +=
            kernels::ewc_penalty(fisher_star_, model_.params(), anchor_, cfg_.ewc_lambda);
      }
      // A step on the loss — Adam's preconditioned step d_i with per-
      // parameter step size η_i = lr/(√v̂_i + ε), or SGD's d = lr·g, η = lr —
      // with the penalty's pull λF(θ − θ*) taken implicitly (a proximal step
      // in the same metric), stable however large λ·F gets:
      //   θ ← (θ − d + η·λ·F·θ*) / (1 + η·λ·F).
      auto theta = model_.params();
      const bool pull = cfg_.ewc && anchored_;
      if (cfg_.adam) {
        ++adam_t_;
        const float c1 = 1.0f - std::pow(cfg_.beta1, static_cast<float>(adam_t_));
        const float c2 = 1.0f - std::pow(cfg_.beta2, static_cast<float>(adam_t_));
        for (size_t i = 0; i < theta.size(); ++i) {
          const float g = grad_[i];
          adam_m_[i] = cfg_.beta1 * adam_m_[i] + (1.0f - cfg_.beta1) * g;
          adam_v_[i] = cfg_.beta2 * adam_v_[i] + (1.0f - cfg_.beta2) * g * g;
          const float eta = cfg_.lr / (std::sqrt(adam_v_[i] / c2) + cfg_.adam_eps);
          const float k = pull ? eta * cfg_.ewc_lambda * fisher_star_[i] : 0.0f;
          theta[i] = (theta[i] - eta * adam_m_[i] / c1 + k * anchor_[i]) / (1.0f + k);
        }
      } else {
        for (size_t i = 0; i < theta.size(); ++i) {
          const float k = pull ? cfg_.lr * cfg_.ewc_lambda * fisher_star_[i] : 0.0f;
          theta[i] = (theta[i] - cfg_.lr * grad_[i] + k * anchor_[i]) / (1.0f + k);
        }
      }
      loss_sum += loss;
      ctx_sum += ctx_loss;
      ++st.batches;
    }
  if (st.batches > 0) {
    st.mean_loss = static_cast<float>(loss_sum / st.batches);
    st.mean_context_loss = static_cast<float>(ctx_sum / st.batches);
    st.mean_penalty = static_cast<float>(penalty_sum / st.batches);
  }
  if (cfg_.ewc && !data.empty() && n_new > 0) {
    // How well the model now fits the newest trajectories: the next pass's
    // boundary test compares against it.
    fit_error_ = recent_error(data, n_new);
    ++passes_;
  }
  return st;
}

} // namespace shoal::learn
