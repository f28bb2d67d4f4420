#include "learn/router_v2.hpp"
#include "kernels/testing.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <array>
#include <random>
#include <utility>

using namespace shoal::learn;
using shoal::kernels::testing::unit;

namespace {

router_v2_config small_config() {
  router_v2_config c;
  c.embed_dim = 48;
  c.proj = 12;
  c.hidden = 10;
  c.rank_w = 3;
  c.rank_u = 2;
  c.lora_rank = 2;
  c.seed = 5;
  return c;
}

} // namespace

TEST_CASE("router v2: the gradient of the bandit loss agrees with finite differences") {
  router_v2_model m(small_config());
  std::mt19937 rng(7);
  // B starts at 0 (the adapter is the identity): give it values so A's
  // gradient is not zero too.
  auto p = m.params();
  std::normal_distribution<float> d(0.0f, 0.1f);
  for (size_t i = 2 * 48; i < 4 * 48; ++i)
    p[i] = d(rng);
  // The sampling and context heads start at 0 too: give them values, so
  // their paths into the cell are checked as well.
  const size_t n_context_head = router_v2_model::n_contexts * (m.context_inputs() + 1);
  const size_t n_heads =
    (router_v2_model::n_temperatures + router_v2_model::n_top_ps) * (10 + 1) + n_context_head;
  for (size_t i = m.n_params() - n_heads; i < m.n_params(); ++i)
    p[i] = d(rng);
  auto e = unit(rng, 48), h0 = unit(rng, 10);
  std::vector<float> sims{0.9f, 0.7f, 0.5f, 0.2f}, rewards{0.4f, 0.6f, 0.7f, 0.75f};
  router_v2_input in{e, sims, rewards, 120, 0.8f, 0.3f, {}, nullptr};
  // Tier 2 served at grid temperature 1 and top-p 2; the answer needed 700
  // tokens of context (bucket 2: 1024).
  const router_v2_outcome o{2, 0.9f, 0.5f, 1, 2, 700};
  router_v2_trace tr;
  m.forward(in, h0, tr);
  std::vector<float> grad(m.n_params(), 0.0f);
  float loss = m.backward(tr, o, grad);
  CHECK(loss > 0);
  // The cross-entropy trains the context head alone (its gradient stops at
  // the head's inputs): outside the head the squared loss is checked.
  bool with_ce = false;
  auto loss_at = [&] {
    router_v2_trace t2;
    m.forward(in, h0, t2);
    double err = double(t2.q[o.tier]) + t2.dt[o.temperature] + t2.dp[o.top_p] - o.reward;
    double ce = -std::log(double(t2.ctx[2]));
    return 2.0 * err * err + (with_ce ? router_v2_model::context_weight * ce : 0.0); // w = 1/0.5
  };
  // Every parameter block: A, Bᵀ, P, b_p, the cell, H, b_q, the sampling
  // and context heads.
  size_t checked = 0, bad = 0;
  for (size_t i = 0; i < m.n_params(); i += 7) {
    with_ce = i >= m.n_params() - n_context_head;
    const float keep = p[i];
    const float h = 1e-2f * std::max(1.0f, std::abs(keep));
    p[i] = keep + h;
    double up = loss_at();
    p[i] = keep - h;
    double down = loss_at();
    p[i] = keep;
    double fd = (up - down) / (2.0 * h);
    ++checked;
    if (std::abs(fd - grad[i]) > 2e-3 + 3e-2 * std::abs(fd)) {
      ++bad;
      MESSAGE("param " << i << ": analytic " << grad[i] << ", finite difference " << fd);
    }
  }
  CHECK(checked > 100);
  CHECK(bad == 0);
}

TEST_CASE("router v2: SGD on a separable bandit learns each context's best tier") {
  auto cfg = small_config();
  router_v2_model m(cfg);
  std::mt19937 rng(11);
  std::vector<std::vector<float>> ctx{unit(rng, 48), unit(rng, 48), unit(rng, 48)};
  const float quality[3][4] = {
    {0.9f, 0.5f, 0.4f, 0.3f}, {0.2f, 0.3f, 0.9f, 0.4f}, {0.3f, 0.3f, 0.3f, 0.95f}};
  std::vector<double> costs(4, 0.0);
  std::vector<float> h0(cfg.hidden, 0.0f), grad(m.n_params());
  router_v2_trace tr;
  for (int step = 0; step < 6000; ++step) {
    int c = step % 3;
    uint32_t tier = static_cast<uint32_t>(rng() % 4); // uniform behaviour policy
    m.forward({ctx[c], {}, {}, 50, 1, 0, {}, nullptr}, h0, tr);
    std::fill(grad.begin(), grad.end(), 0.0f);
    m.backward(tr, {tier, quality[c][tier], 0.25f}, grad);
    for (size_t i = 0; i < grad.size(); ++i)
      m.params()[i] -= 0.01f * grad[i];
  }
  for (int c = 0; c < 3; ++c) {
    m.forward({ctx[c], {}, {}, 50, 1, 0, {}, nullptr}, h0, tr);
    auto d = m.decide(tr.q, costs);
    CAPTURE(c);
    CHECK(d.tier == (c == 0 ? 0u : c == 1 ? 2u : 3u));
    CHECK(tr.q[d.tier] == doctest::Approx(quality[c][d.tier]).epsilon(0.15));
  }
}

TEST_CASE("router v2: the sampling and context heads learn each context's best temperature, "
          "top-p and context bucket") {
  auto cfg = small_config();
  router_v2_model m(cfg);
  std::mt19937 rng(17);
  std::mt19937_64 rng64(17);
  std::vector<std::vector<float>> ctx{unit(rng, 48), unit(rng, 48), unit(rng, 48)};
  // Per context: the grid temperature and top-p that pay (each other one
  // loses 0.3), and the tokens its answers need.
  const uint8_t best_t[3] = {0, 3, 1}, best_p[3] = {2, 0, 3};
  const float tokens[3] = {200, 3000, 20000};
  std::vector<float> h0(cfg.hidden, 0.0f), grad(m.n_params());
  std::normal_distribution<float> noise(0.0f, 0.05f);
  router_v2_trace tr;
  for (int step = 0; step < 9000; ++step) {
    const int c = step % 3;
    m.forward({ctx[c], {}, {}, 50, 1, 0, {}, nullptr}, h0, tr);
    // Uniform exploration (ε = 1): every arm is seen.
    auto s = router_v2_sample(tr, true, 1.0f, rng64);
    CHECK(s.prob_temperature == doctest::Approx(0.25f));
    const float reward =
      0.9f - 0.3f * (s.temperature != best_t[c]) - 0.3f * (s.top_p != best_p[c]) + noise(rng);
    router_v2_outcome o{0,       reward,   s.prob_temperature * s.prob_top_p, s.temperature,
                        s.top_p, tokens[c]};
    std::fill(grad.begin(), grad.end(), 0.0f);
    m.backward(tr, o, grad);
    for (size_t i = 0; i < grad.size(); ++i)
      m.params()[i] -= 0.0005f * grad[i];
  }
  for (int c = 0; c < 3; ++c) {
    CAPTURE(c);
    m.forward({ctx[c], {}, {}, 50, 1, 0, {}, nullptr}, h0, tr);
    auto greedy = router_v2_sample(tr, true, 0.0f, rng64); // ε = 0: the best arms
    CHECK(greedy.temperature == best_t[c]);
    CHECK(greedy.top_p == best_p[c]);
    CHECK(greedy.prob_temperature == 1.0f);
    CHECK(router_v2_model::context_choice(tr) == context_bucket_index(tokens[c]));
    // Untrained (ready = false), the default (1, 1) is served.
    auto untrained = router_v2_sample(tr, false, 0.0f, rng64);
    CHECK(untrained.temperature == default_sampling_index);
    CHECK(untrained.top_p == default_sampling_index);
  }
  CHECK(context_bucket_index(256) == 0);
  CHECK(context_bucket_index(257) == 1);
  CHECK(context_bucket_index(1e9) == context_buckets.size() - 1);
  CHECK(sampling_index(sampling_temperatures, 0.5) == 1);
  CHECK(sampling_index(sampling_temperatures, 0.7) == no_choice);
}

TEST_CASE("router v2: a version-1 checkpoint (before the sampling and context heads) loads with "
          "new heads and the same tier predictions") {
  router_v2_model m(small_config());
  std::mt19937 rng(19);
  for (auto& x : m.params())
    x += 0.01f * static_cast<float>(static_cast<int>(rng() % 100) - 50) / 50.0f;
  // Version 1's layout: the parameters up to b_q.
  const size_t n_heads = (router_v2_model::n_temperatures + router_v2_model::n_top_ps) * (10 + 1)
                         + router_v2_model::n_contexts * (m.context_inputs() + 1);
  const auto all = m.params();
  const auto v1 = all.first(all.size() - n_heads);
  auto back = router_v2_model::restore(1, m.config(), v1);
  REQUIRE(back);
  auto e = unit(rng, 48);
  std::vector<float> h(10, 0.0f);
  router_v2_trace a, b;
  m.forward({e, {}, {}, 10, 1, 0, {}, nullptr}, h, a);
  back->forward({e, {}, {}, 10, 1, 0, {}, nullptr}, h, b);
  CHECK(a.q == b.q);
  for (float d : b.dt)
    CHECK(d == 0.0f);
  for (float c : b.ctx)
    CHECK(c == doctest::Approx(1.0 / router_v2_model::n_contexts));
  // a version from the future
  CHECK_FALSE(router_v2_model::restore(router_v2_model::checkpoint_version + 1, m.config(), all));
}

TEST_CASE("router v2: a checkpoint restored gives identical decisions, and bad ones are refused") {
  router_v2_model m(small_config());
  std::mt19937 rng(13);
  for (auto& x : m.params())
    x += 0.01f * static_cast<float>(static_cast<int>(rng() % 100) - 50) / 50.0f;
  const auto all = std::as_const(m).params();
  auto back = router_v2_model::restore(router_v2_model::checkpoint_version, m.config(), all);
  REQUIRE(back);
  std::vector<double> costs{0, 0.05, 0.1, 0.2};
  std::vector<float> h(10, 0.0f), h2(10, 0.0f);
  for (int turn = 0; turn < 20; ++turn) {
    auto e = unit(rng, 48);
    router_v2_trace a, b;
    m.forward({e, {}, {}, 10, 1, 0, {}, nullptr}, h, a);
    back->forward({e, {}, {}, 10, 1, 0, {}, nullptr}, h2, b);
    CHECK(a.q == b.q); // bit for bit
    CHECK(m.decide(a.q, costs).tier == back->decide(b.q, costs).tier);
    h = a.h;
    h2 = b.h;
  }
  const uint32_t v = router_v2_model::checkpoint_version;
  CHECK_FALSE(router_v2_model::restore(v, m.config(), {}));
  CHECK_FALSE(router_v2_model::restore(v, m.config(), all.first(all.size() - 1)));
  CHECK_FALSE(router_v2_model::restore(0, m.config(), all));
  auto wrong = m.config();
  wrong.hidden = 0;
  CHECK_FALSE(router_v2_model::restore(v, wrong, all));
}

namespace {

/// Trajectories of a bandit task: contexts × tiers with a reward table,
/// uniform behaviour policy.
std::vector<router_v2_trajectory> task(const std::vector<std::vector<float>>& ctx,
                                       const std::vector<std::array<float, 4>>& quality, size_t n,
                                       std::mt19937& rng, uint32_t hidden) {
  std::vector<router_v2_trajectory> out(n);
  for (size_t i = 0; i < n; ++i) {
    auto& t = out[i];
    size_t c = i % ctx.size();
    t.embedding = ctx[c];
    t.h_prev.assign(hidden, 0.0f);
    t.tier = static_cast<uint32_t>(rng() % 4);
    t.reward = quality[c][t.tier];
    t.behaviour_prob = 0.25f;
    t.prompt_tokens = 50;
  }
  return out;
}

/// Mean squared error of the model's predicted rewards on a task's table.
double task_error(const router_v2_model& m, const std::vector<std::vector<float>>& ctx,
                  const std::vector<std::array<float, 4>>& quality) {
  std::vector<float> h(m.hidden(), 0.0f);
  router_v2_trace tr;
  double e = 0;
  for (size_t c = 0; c < ctx.size(); ++c) {
    m.forward({ctx[c], {}, {}, 50, 1, 0, {}, nullptr}, h, tr);
    for (int t = 0; t < 4; ++t)
      e += (tr.q[t] - quality[c][t]) * (tr.q[t] - quality[c][t]);
  }
  return e / (4.0 * ctx.size());
}

} // namespace

TEST_CASE("router v2 trainer: EWC++ keeps what a first task taught while a second one trains, "
          "with Adam and with SGD") {
  auto cfg = small_config();
  std::mt19937 rng(17);
  std::vector<std::vector<float>> ctx_a, ctx_b;
  for (int i = 0; i < 3; ++i) {
    ctx_a.push_back(unit(rng, 48));
    ctx_b.push_back(unit(rng, 48));
  }
  std::vector<std::array<float, 4>> q_a{
    {0.9f, 0.5f, 0.4f, 0.3f}, {0.2f, 0.3f, 0.9f, 0.4f}, {0.3f, 0.3f, 0.3f, 0.95f}};
  std::vector<std::array<float, 4>> q_b{
    {0.1f, 0.9f, 0.2f, 0.1f}, {0.8f, 0.1f, 0.1f, 0.2f}, {0.1f, 0.2f, 0.8f, 0.1f}};
  auto data_a = task(ctx_a, q_a, 6000, rng, cfg.hidden);
  auto data_b = task(ctx_b, q_b, 6000, rng, cfg.hidden);
  for (bool adam : {true, false}) {
    CAPTURE(adam);
    double forgetting[2];
    uint32_t boundaries = 0;
    for (int with_ewc = 0; with_ewc < 2; ++with_ewc) {
      router_v2_trainer_config tc;
      tc.ewc = with_ewc == 1;
      tc.adam = adam;
      tc.lr = adam ? 0.01f : 0.1f;
      tc.epochs = 4;
      router_v2_trainer tr(router_v2_model(cfg), tc);
      tr.train(data_a);
      const double learned = task_error(tr.model(), ctx_a, q_a);
      CHECK(learned < 0.01); // the first task is learned
      auto st = tr.train(data_b);
      if (with_ewc)
        boundaries = st.boundaries;
      CHECK(task_error(tr.model(), ctx_b, q_b) < 0.02); // the second too
      forgetting[with_ewc] = task_error(tr.model(), ctx_a, q_a) - learned;
    }
    MESSAGE(std::string(adam ? "Adam" : "SGD")
            << ": forgetting of task A after task B: without EWC++ " << forgetting[0] << ", with "
            << forgetting[1]);
    CHECK(boundaries >= 1);                      // the switch to task B was detected
    CHECK(forgetting[1] <= 0.5 * forgetting[0]); // at least halved
  }
}

TEST_CASE("router v2: the instant step moves both adapter factors along the loss gradient") {
  router_v2_model m(small_config());
  std::mt19937 rng(23);
  auto p = m.params();
  std::normal_distribution<float> d(0.0f, 0.1f);
  for (size_t i = 2 * 48; i < 4 * 48; ++i) // B non-zero: A learns too
    p[i] = d(rng);
  auto e = unit(rng, 48);
  std::vector<float> h0(10, 0.0f);
  router_v2_input in{e, {}, {}, 30, 1, 0, {}, nullptr};
  const uint32_t tier = 1;
  const float reward = 0.95f;
  router_v2_trace tr;
  m.forward(in, h0, tr);
  const std::vector<float> before(p.begin(), p.end());
  // The step equals SGD on the A and Bᵀ blocks of the full gradient.
  std::vector<float> grad(m.n_params(), 0.0f);
  m.backward(tr, {tier, reward, 0.5f}, grad);
  const float lr = 0.05f;
  float loss0 = m.instant_step(tr, {tier, reward, 0.5f}, lr);
  for (size_t i = 0; i < 4 * 48; ++i)
    CHECK(p[i] == doctest::Approx(before[i] - lr * grad[i]).epsilon(1e-4).scale(1e-6));
  for (size_t i = 4 * 48; i < m.n_params(); ++i)
    CHECK(p[i] == before[i]); // only the adapter moves
  // And the loss falls over a few steps.
  float loss = loss0;
  for (int k = 0; k < 100; ++k) {
    m.forward(in, h0, tr);
    loss = m.instant_step(tr, {tier, reward, 0.5f}, 0.5f);
  }
  MESSAGE("instant loop on one example: loss " << loss0 << " -> " << loss);
  CHECK(loss < 0.95f * loss0); // a fresh model: the heads are small, the adapter moves q slowly
}

TEST_CASE("router v2: a scoped adapter blends by min(steps/10, 1) and the instant step is exact "
          "SGD on both adapters") {
  router_v2_model m(small_config());
  const size_t E = 48, r = 2;
  std::mt19937 rng(31);
  std::normal_distribution<float> d(0.0f, 0.2f);
  auto p = m.params();
  for (size_t i = r * E; i < 2 * r * E; ++i) // the shared adapter's B non-zero
    p[i] = d(rng);
  auto scope = scoped_adapter::make(2, 48, 9);
  for (auto& x : scope.bt)
    x = d(rng);
  auto e = unit(rng, 48);
  std::vector<float> h0(10, 0.0f);
  router_v2_input in{e, {}, {}, 30, 1, 0, {}, &scope};
  router_v2_trace tr;
  // The blend weight grows with the scope's steps.
  CHECK(scope.weight() == 0.0f);
  scope.steps = 5;
  CHECK(scope.weight() == 0.5f);
  m.forward(in, h0, tr);
  CHECK(tr.scope_weight == 0.5f);
  // w = 0.5: e' is the mean of the two adapted embeddings.
  router_v2_trace shared_only, scoped_only;
  router_v2_input plain{e, {}, {}, 30, 1, 0, {}, nullptr};
  m.forward(plain, h0, shared_only);
  for (size_t j = 0; j < E; ++j)
    CHECK(tr.e2[j] == doctest::Approx(0.5f * (shared_only.e2[j] + tr.scoped[j])).epsilon(1e-5));
  // The loss as a function of the parameters, by central differences.
  const uint32_t tier = 2;
  const float reward = 0.9f, prob = 0.5f;
  auto loss = [&] {
    router_v2_trace t;
    m.forward(in, h0, t);
    const float w = 1.0f / prob, err = t.q[tier] - reward;
    return w * err * err;
  };
  std::vector<float> fd_shared(2 * r * E), fd_scope(2 * r * E);
  const float h = 1e-3f;
  for (size_t i = 0; i < 2 * r * E; ++i) {
    float* x = &p[i];
    float keep = *x;
    *x = keep + h;
    float up = loss();
    *x = keep - h;
    float down = loss();
    *x = keep;
    fd_shared[i] = (up - down) / (2 * h);
    float* y = i < r * E ? &scope.a[i] : &scope.bt[i - r * E];
    keep = *y;
    *y = keep + h;
    up = loss();
    *y = keep - h;
    down = loss();
    *y = keep;
    fd_scope[i] = (up - down) / (2 * h);
  }
  const std::vector<float> shared0(p.begin(), p.begin() + 2 * r * E);
  auto scope0 = scope;
  const float lr = 0.01f;
  m.forward(in, h0, tr);
  m.instant_step(tr, {tier, reward, prob}, lr, &scope);
  CHECK(scope.steps == 6);
  for (size_t i = 0; i < 2 * r * E; ++i) {
    CHECK(p[i] == doctest::Approx(shared0[i] - lr * fd_shared[i]).epsilon(2e-3).scale(1e-3));
    const float now = i < r * E ? scope.a[i] : scope.bt[i - r * E];
    const float was = i < r * E ? scope0.a[i] : scope0.bt[i - r * E];
    CHECK(now == doctest::Approx(was - lr * fd_scope[i]).epsilon(2e-3).scale(1e-3));
  }
}
