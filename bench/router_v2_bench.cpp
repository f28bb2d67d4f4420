/// @file Google Benchmark cases of router v2 (learn/router_v2.hpp) at its
/// production size (E = 384, projection 32, hidden 32, ranks 8/8, LoRA rank
/// 2, 4 tiers: 15,430 parameters), for issue 7's cost targets:
///   router_v2/forward                one decision (adapter, projection, cell, heads)
///   router_v2/forward_backward       a decision and its full loss gradient
///   router_v2/instant_step           a decision and the instant loop's
///                                    MicroLoRA step on its feedback; target ≤ 5 µs
///   router_v2/instant_loop           what a node does per request besides
///                                    routing v1: router v2's features from v1's
///                                    route, a decision (forward +
///                                    router_v2_choose), the trajectory recorded
///                                    into a preallocated ring slot (a copy of
///                                    the features) and the instant step on its
///                                    feedback; target ≤ 5 µs
///   router_v2/train_1000/ewc:0|1     the background loop on 1,000 trajectories
///                                    (mini-batches of 32, one epoch), without and
///                                    with EWC++; target ≤ 20 ms
/// Repetitions report median and spread; compare rows within one run.
///
/// Run: `build/bench/shoal_router_v2_bench --benchmark_repetitions=9`

#include "actors/v1_view.hpp"
#include "learn/router_v2.hpp"

#include <benchmark/benchmark.h>

#include <random>
#include <vector>

using namespace shoal;

namespace {

std::vector<learn::router_v2_trajectory> trajectories(size_t n, uint32_t hidden) {
  std::mt19937 rng(1);
  std::normal_distribution<float> d;
  std::vector<learn::router_v2_trajectory> data(n);
  for (auto& t : data) {
    t.embedding.resize(384);
    float s = 0;
    for (auto& x : t.embedding) {
      x = d(rng);
      s += x * x;
    }
    for (auto& x : t.embedding)
      x /= std::sqrt(s);
    t.neighbor_sims = {0.9f, 0.8f, 0.5f, 0.3f};
    t.neighbor_rewards = {0.5f, 0.6f, 0.7f, 0.8f};
    t.h_prev.assign(hidden, 0.0f);
    t.tier = static_cast<uint32_t>(rng() % 4);
    t.reward = 0.5f + 0.1f * static_cast<float>(t.tier);
    t.behaviour_prob = 0.25f;
    t.prompt_tokens = 120;
    // As the node records them: the sampling served and the answer's usage,
    // so every head trains.
    t.temperature = static_cast<uint8_t>(rng() % learn::sampling_temperatures.size());
    t.top_p = static_cast<uint8_t>(rng() % learn::sampling_top_ps.size());
    t.context_tokens = 120.0f + static_cast<float>(rng() % 2000);
  }
  return data;
}

/// Runs `after(model, trace, trajectory)` after each decision of a model at
/// production size, cycling over 256 trajectories.
template <class After>
void decisions(benchmark::State& state, After after) {
  learn::router_v2_model m{learn::router_v2_config{}};
  auto data = trajectories(256, m.hidden());
  learn::router_v2_trace tr;
  size_t i = 0;
  for (auto _ : state) {
    const auto& t = data[i++ % data.size()];
    m.forward(t.input(), t.h_prev, tr);
    after(m, tr, t);
  }
}

void forward(benchmark::State& state) {
  decisions(state, [](auto&, auto& tr, auto&) { benchmark::DoNotOptimize(tr.q.data()); });
}

void forward_backward(benchmark::State& state) {
  std::vector<float> grad;
  decisions(state, [&](learn::router_v2_model& m, auto& tr, auto& t) {
    grad.resize(m.n_params());
    benchmark::DoNotOptimize(m.backward(tr, t.outcome(), grad));
  });
}

void instant_step(benchmark::State& state) {
  decisions(state, [](learn::router_v2_model& m, auto& tr, auto& t) {
    benchmark::DoNotOptimize(m.instant_step(tr, t.outcome(), 1e-3f));
  });
}

void instant_loop(benchmark::State& state) {
  learn::router_v2_model m{learn::router_v2_config{}};
  auto data = trajectories(256, m.hidden());
  // v1's routes of the same queries (what the pattern bank hands over).
  std::vector<router::route_result> routes(data.size());
  std::mt19937_64 rng(7);
  for (size_t i = 0; i < data.size(); ++i) {
    auto& r = routes[i];
    r.tier = data[i].tier;
    r.confidence = 0.4;
    for (size_t k = 0; k < 32; ++k)
      r.neighbors.push_back({k + 1, 0.9f - 0.01f * static_cast<float>(k)});
    r.mean_quality = {0.5, 0.6, 0.7, 0.8};
    r.var_quality = {0.004, 0.003, 0.002, 0.001};
    r.evidence = {3, 5, 8, 2};
  }
  const std::vector<double> costs = {0.0, 0.05, 0.10, 0.20};
  // The trajectory log: a ring of slots allocated once.
  std::vector<learn::router_v2_trajectory> ring(1024);
  for (auto& t : ring) {
    t.embedding.reserve(384);
    t.neighbor_sims.reserve(learn::router_v2_model::n_neighbors);
    t.neighbor_rewards.reserve(4);
    t.neighbor_counts.reserve(4);
    t.h_prev.reserve(m.hidden());
  }
  learn::router_v2_features feat;
  learn::router_v2_trace tr;
  size_t i = 0;
  for (auto _ : state) {
    const auto& t = data[i % data.size()];
    const auto& r = routes[i % data.size()];
    feat.assign(actors::v1_view(r));
    m.forward(feat.input(t.embedding, t.prompt_tokens, 1.0f, 0.0f), t.h_prev, tr);
    auto c = learn::router_v2_choose(actors::v1_view(r), tr, costs, true, 0.0, rng);
    auto smp = learn::router_v2_sample(tr, true, 0.05f, rng);
    auto& slot = ring[i++ % ring.size()];
    slot.temperature = smp.temperature;
    slot.top_p = smp.top_p;
    slot.embedding.assign(t.embedding.begin(), t.embedding.end());
    slot.neighbor_sims.assign(feat.sims.begin(), feat.sims.end());
    slot.neighbor_rewards.assign(feat.rewards.begin(), feat.rewards.end());
    slot.neighbor_counts.assign(feat.counts.begin(), feat.counts.end());
    slot.prompt_tokens = t.prompt_tokens;
    slot.h_prev.assign(t.h_prev.begin(), t.h_prev.end());
    slot.tier = c.tier;
    slot.reward = t.reward; // the feedback
    slot.behaviour_prob = c.behaviour_prob * smp.prob_temperature * smp.prob_top_p;
    benchmark::DoNotOptimize(m.instant_step(tr, slot.outcome(), 1e-3f));
  }
}

void train_1000(benchmark::State& state) {
  auto data = trajectories(1000, 32);
  learn::router_v2_trainer_config tc;
  tc.ewc = state.range(0) != 0;
  for (auto _ : state) {
    state.PauseTiming();
    learn::router_v2_trainer tr(learn::router_v2_model{learn::router_v2_config{}}, tc);
    state.ResumeTiming();
    auto st = tr.train(data);
    benchmark::DoNotOptimize(st.mean_loss);
  }
}

} // namespace

BENCHMARK(forward)->Name("router_v2/forward");
BENCHMARK(forward_backward)->Name("router_v2/forward_backward");
BENCHMARK(instant_step)->Name("router_v2/instant_step");
BENCHMARK(instant_loop)->Name("router_v2/instant_loop");
BENCHMARK(train_1000)
  ->Name("router_v2/train_1000")
  ->ArgName("ewc")
  ->Arg(0)
  ->Arg(1)
  ->Unit(benchmark::kMillisecond);
