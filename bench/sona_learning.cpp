// shoal_sona_learning: does SONA learn? Router v1 (the pattern bank's
// Thompson sampling) next to router v2 (FastGRNN reward model over v1's
// statistics, MicroLoRA instant loop, background training with and without
// EWC++) on the same stream of real prompts (Debian package descriptions,
// ops/make-prompts.sh), scored by the replay evaluator (sim/evaluator.hpp:
// a seeded simulation of answer quality per domain and tier, with an oracle).
//
// Reported (Markdown), each figure the median over --seeds worlds (an
// evaluator seed draws every domain's difficulty; the routers' seeds follow):
//   1. learning curves: expected reward of the chosen tiers per window of
//      requests, as a share of the oracle's; the requests each router needs
//      to reach 95% of the oracle, and the cumulative regret against the
//      oracle. Requests to 95%: the reward is summed per --step requests and
//      averaged over a sliding window of --window requests (evaluated every
//      step, from n = window on); "reaches" is the first n where that moving
//      average is at or above 95% of the oracle's, "stays" the first n from
//      which it never falls below again. Given per seed (median) and for the
//      curve pooled over seeds (reward and oracle summed over seeds first:
//      the least noisy figure);
//   2. CPT (RouteLLM, Ong et al. 2024): after learning, each router's
//      estimates routed on held-out prompts with the tier costs scaled by s
//      (a sweep); the share of calls to the largest tier needed to recover
//      x% of the quality gap between always-smallest and always-largest
//      (PGR >= x), x = 50, 80, 95; the oracle's own CPT uses the true means.
//      With more than two tiers a call counts cost_t / cost_largest large
//      calls (RouteLLM's two-model CPT when the small model costs 0);
//   3. domain shift: half the domains (A), then the other half (B), then A
//      returns with prompts not seen before. Forgetting = reward on A in the
//      last window before B minus reward on A in the first window after it,
//      for the v2 model alone (its greedy choice, no fallback) and for the
//      whole router; v2 with and without EWC++.
//
// Rewards are expected rewards mu(d, t) - cost_t of the tier chosen (the
// evaluator's noise-free means); learning sees drawn qualities only.
#include "router/pattern_bank.hpp"
#include "actors/v1_view.hpp"
#include "learn/router_v2.hpp"
#include "engine/embedder.hpp"
#include "sim/evaluator.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using namespace shoal;

namespace {

struct prompt {
  std::string domain;
  std::vector<float> emb;
  float tokens = 0;
  double budget_ms = 0;   ///< the request's latency budget (0: none)
  bool follow_up = false; ///< a later turn of the session the previous request opened
};

std::vector<prompt> load_prompts(const std::string& path, size_t max) {
  std::ifstream in(path);
  if (!in)
    throw std::runtime_error("cannot read " + path + " (run ops/make-prompts.sh first)");
  engine::embedder emb;
  std::vector<prompt> out;
  std::string line;
  while (out.size() < max && std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("text") || !j.contains("domain"))
      throw std::runtime_error(path + ": line " + std::to_string(out.size() + 1)
                               + " is not {\"text\", \"domain\"} JSON");
    prompt p;
    p.domain = j["domain"].get<std::string>();
    auto text = j["text"].get<std::string>();
    p.emb = emb.embed(text);
    p.tokens = static_cast<float>(text.size()) / 4.0f; // ~4 bytes per token
    out.push_back(std::move(p));
  }
  return out;
}

struct options {
  std::string prompts = "prompts.jsonl";
  size_t requests = 20000;
  size_t window = 500;
  size_t step = 50;
  size_t heldout = 2000;
  uint32_t seeds = 5;
  size_t shift_phase = 6000;
  // router v2
  float threshold = 0.0f;
  float instant_lr = 0.02f;
  size_t background_every = 500;
  size_t first_background = 500; ///< first pass; then doubling up to background_every
  size_t min_samples = 0;        ///< per pass: epochs raised to train on at least this many
  size_t train_window = 4000;
  float train_lr = learn::router_v2_trainer_config{}.lr;
  bool sgd = false; ///< plain SGD instead of Adam in the background loop
  float adam_eps = learn::router_v2_trainer_config{}.adam_eps;
  uint32_t epochs = 1;
  float ewc_lambda = 10;
  float boundary_ratio = learn::router_v2_trainer_config{}.boundary_ratio;
  float task_gamma = learn::router_v2_trainer_config{}.task_gamma;
  float max_importance = learn::router_v2_config{}.max_importance;
  // the world's latency model (sim/evaluator.hpp); off while ms_per_token = 0
  double ms_per_token = 0;                       ///< the largest tier's decode time per token
  sim::latency_budgets budgets{0.5, 300, 10000}; ///< who has a budget, and its range
  // sessions: each prompt opens a session of this many turns; the later
  // turns are generic follow-ups ("tell me more") about the same domain
  uint32_t session_turns = 1;
  std::string shift_by = "name"; ///< domain shift: halves by "name" or by answer "length"
  /// Router v2's sampling heads: ε of its choice (negative: it chooses none,
  /// every request is served at the default (1, 1), as router v1 serves).
  float sampling_explore = 0.05f;
  // the evaluator's quality model (sim/evaluator.hpp); defaults: the node's
  sim::evaluator_config quality;
};

/// Generic follow-up turns: nothing in them names the domain; only the
/// session's first turn does.
const char* const follow_ups[] = {
  "tell me more",
  "can you explain that in more detail?",
  "how do I install it?",
  "what are the alternatives?",
  "is it still maintained?",
  "give me an example",
  "how does it compare to the others?",
  "what are the main features?",
  "does it work on arm64?",
  "which version should I use?",
  "and how do I configure it?",
  "what could go wrong?",
};

/// Each prompt followed by session_turns - 1 follow-ups of its domain and
/// budget (drawn in turn from the list, seeded).
std::vector<prompt> with_sessions(const std::vector<prompt>& ps, const options& o) {
  if (o.session_turns <= 1)
    return ps;
  engine::embedder emb;
  std::vector<prompt> templates;
  for (const char* f : follow_ups) {
    prompt t;
    t.emb = emb.embed(f);
    t.tokens = static_cast<float>(std::strlen(f)) / 4.0f;
    t.follow_up = true;
    templates.push_back(std::move(t));
  }
  std::mt19937_64 rng(0x5e55);
  std::vector<prompt> out;
  out.reserve(ps.size() * o.session_turns);
  for (const auto& p : ps) {
    out.push_back(p);
    for (uint32_t k = 1; k < o.session_turns; ++k) {
      prompt f = templates[rng() % templates.size()];
      f.domain = p.domain;
      f.budget_ms = p.budget_ms;
      out.push_back(std::move(f));
    }
  }
  return out;
}

/// The evaluator of world `seed` under the options' latency model.
sim::evaluator_config world(const options& o, uint32_t seed) {
  sim::evaluator_config ec = o.quality;
  ec.seed = 42 + seed;
  ec.largest_ms_per_token = o.ms_per_token;
  return ec;
}

/// Router v2's latency-budget input: b / budget_max_ms in (0, 1], 1 = none
/// (the node's sona.latency_budget_max_ms plays budget_max_ms's part).
float budget_input(const prompt& p, const options& o) {
  return learn::latency_budget_input(p.budget_ms, o.budgets.max_ms);
}

/// Gives each prompt its latency budget (sim::latency_budget: the same
/// budgets as `shoal replay --budget-share`; none without a latency model).
void assign_budgets(std::vector<prompt>& ps, const options& o) {
  if (o.ms_per_token <= 0)
    return;
  for (size_t i = 0; i < ps.size(); ++i)
    ps[i].budget_ms = sim::latency_budget(o.budgets, 42, i);
}

enum class kind { v1, v2, v2_no_ewc, v1_fixed_sampling, v1_skip_overrun };

const char* name(kind k) {
  switch (k) {
    case kind::v1:
      return "router v1";
    case kind::v2:
      return "router v2 (EWC++)";
    case kind::v2_no_ewc:
      return "router v2 (no EWC++)";
    case kind::v1_fixed_sampling:
      return "router v1 + best fixed sampling";
    case kind::v1_skip_overrun:
      return "router v1 + skip overrunning tiers";
  }
  return "?";
}

/// What the two simple-rule baselines know (router v1 plus a rule an
/// operator could write without learning anything).
struct rule_facts {
  /// v1_fixed_sampling: the one (temperature, top-p) of the grid that is
  /// best over all requests, chosen with hindsight.
  double temperature = -1, top_p = -1;
  /// v1_skip_overrun: each tier's decode time per token, ms, and a typical
  /// answer length, tokens: a tier whose typical answer would overrun the
  /// request's budget is skipped.
  std::vector<double> ms_per_token;
  double typical_tokens = 0;
};

/// One routing system on its own pattern bank.
class learner {
public:
  learner(kind k, const options& o, uint64_t seed, std::vector<router::tier_config> tiers,
          rule_facts facts = {})
    : kind_(k), opt_(o), facts_(std::move(facts)), model_(v2_config(o, seed, tiers.size())),
      trainer_(model_, trainer_config(k, o)) {
    router::router_config rc;
    rc.tiers = std::move(tiers);
    rc.seed = seed;
    for (const auto& t : rc.tiers)
      costs_.push_back(t.cost);
    auto b = router::pattern_bank::open(384, rc, nullptr);
    if (!b)
      throw std::runtime_error("pattern bank: " + b.err().message);
    bank_ = std::move(*b);
    h_.assign(model_.hidden(), 0.0f);
    rng_.seed(seed * 7919 + 1);
  }

  struct choice {
    uint32_t tier = 0;       ///< what the router chose
    uint32_t model_tier = 0; ///< what the v2 model alone would choose (v1: = tier)
    bool by_v2 = false;
    double temperature = -1, top_p = -1; ///< the sampling served (-1: the default)
    int context_hit = -1; ///< v2 trained: 1 when its context bucket was the one needed
  };

  /// Routes one prompt, observes a drawn quality, learns.
  choice step(const prompt& p, sim::evaluator& ev, int64_t now_ms) {
    auto r = route(p, now_ms);
    choice c{r.tier, r.tier, false};
    float prob = static_cast<float>(std::max(r.confidence, 0.05));
    learn::router_v2_sampling smp;
    const bool v2 = kind_ == kind::v2 || kind_ == kind::v2_no_ewc;
    const bool sampling = v2 && opt_.sampling_explore >= 0;
    if (kind_ == kind::v1_fixed_sampling) {
      c.temperature = facts_.temperature;
      c.top_p = facts_.top_p;
    }
    if (kind_ == kind::v1_skip_overrun && p.budget_ms > 0) {
      // Skip the tiers whose typical answer overruns the budget: v1's choice
      // if it fits, else the fitting tier v1 rates best, else the fastest.
      auto fits = [&](uint32_t t) {
        return facts_.ms_per_token[t] * facts_.typical_tokens <= p.budget_ms;
      };
      if (!fits(c.tier)) {
        int best = -1;
        for (uint32_t t = 0; t < costs_.size(); ++t)
          if (fits(t)
              && (best < 0 || r.mean_quality[t] - costs_[t] > r.mean_quality[best] - costs_[best]))
            best = static_cast<int>(t);
        if (best < 0)
          best = static_cast<int>(
            std::min_element(facts_.ms_per_token.begin(), facts_.ms_per_token.end())
            - facts_.ms_per_token.begin());
        c.tier = c.model_tier = static_cast<uint32_t>(best);
      }
    }
    if (v2) {
      forward(p, r);
      auto v2 =
        learn::router_v2_choose(actors::v1_view(r), trace_, costs_, trained_, opt_.threshold, rng_);
      c = {v2.tier, v2.greedy_tier, v2.by_v2};
      prob = v2.behaviour_prob;
      smp = learn::router_v2_sample(trace_, trained_, opt_.sampling_explore, rng_);
      if (sampling) {
        c.temperature = learn::sampling_temperatures[smp.temperature];
        c.top_p = learn::sampling_top_ps[smp.top_p];
        prob *= smp.prob_temperature * smp.prob_top_p;
      }
    }
    const double q = ev.draw_quality(p.domain, c.tier, p.budget_ms, c.temperature, c.top_p);
    const uint32_t completion = ev.draw_completion_tokens(p.domain);
    (void)bank_->learn(r.pattern_id, c.tier, q, now_ms);
    if (v2) {
      learn::router_v2_trajectory t;
      t.temperature = sampling ? smp.temperature : learn::no_choice;
      t.top_p = sampling ? smp.top_p : learn::no_choice;
      t.context_tokens = p.tokens + static_cast<float>(completion);
      if (trained_)
        c.context_hit = learn::router_v2_model::context_choice(trace_)
                        == learn::context_bucket_index(t.context_tokens);
      t.embedding = p.emb;
      t.neighbor_sims.assign(feat_.sims.begin(), feat_.sims.end());
      t.neighbor_rewards = feat_.rewards;
      t.neighbor_counts = feat_.counts;
      t.prompt_tokens = p.tokens;
      t.latency_budget = budget_input(p, opt_);
      t.h_prev = h_prev_;
      t.tier = c.tier;
      t.reward = static_cast<float>(q);
      t.behaviour_prob = prob;
      model_.instant_step(trace_, t.outcome(), opt_.instant_lr);
      log_.push_back(std::move(t));
      if (log_.size() > opt_.train_window)
        log_.pop_front();
      if (++since_background_ >= next_background_) {
        const size_t fresh = since_background_; // trajectories new to this pass
        since_background_ = 0;
        seen_ += next_background_;
        next_background_ = std::min(opt_.background_every, std::max<size_t>(1, seen_));
        std::vector<learn::router_v2_trajectory> batch(log_.begin(), log_.end());
        const size_t passes =
          std::max<size_t>(1, (opt_.min_samples + batch.size() - 1) / batch.size());
        for (size_t k = 0; k < passes; ++k)
          boundaries_ += trainer_.train(batch, k == 0 ? fresh : 0).boundaries;
        model_ = trainer_.model();
        trained_ = true;
      }
    }
    return c;
  }

  /// Each tier's estimated quality for a prompt, without learning (the
  /// bank still assigns the prompt to a pattern).
  std::vector<double> estimate(const prompt& p, int64_t now_ms) {
    auto r = route(p, now_ms);
    if (kind_ != kind::v2 && kind_ != kind::v2_no_ewc)
      return r.mean_quality;
    forward(p, r);
    return {trace_.q.begin(), trace_.q.end()};
  }

  kind which() const noexcept { return kind_; }
  uint32_t boundaries() const noexcept { return boundaries_; } ///< EWC++ task boundaries detected
  const learn::router_v2_model& model() const noexcept { return model_; }
  /// The last n recorded trajectories (router v2 only), oldest first.
  std::vector<learn::router_v2_trajectory> recent(size_t n) const {
    n = std::min(n, log_.size());
    return {log_.end() - static_cast<std::ptrdiff_t>(n), log_.end()};
  }

private:
  /// Router v1's route of a prompt (indexing a pattern it created).
  router::route_result route(const prompt& p, int64_t now_ms) {
    auto r = bank_->route(p.emb, now_ms);
    if (bank_->pending() > 0)
      (void)bank_->index_pending();
    return r;
  }
  /// Router v2's traced forward on v1's route `r`; a follow-up turn continues
  /// from the session state the previous turn ended in.
  void forward(const prompt& p, const router::route_result& r) {
    feat_.assign(actors::v1_view(r));
    if (!p.follow_up)
      std::fill(h_.begin(), h_.end(), 0.0f);
    h_prev_ = h_;
    model_.forward(feat_.input(p.emb, p.tokens, budget_input(p, opt_), 0.0f), h_prev_, trace_);
    h_ = trace_.h;
  }
  static learn::router_v2_config v2_config(const options& o, uint64_t seed, size_t n_tiers) {
    learn::router_v2_config c;
    c.seed = seed;
    c.n_tiers = static_cast<uint32_t>(n_tiers);
    c.max_importance = o.max_importance;
    return c;
  }
  static learn::router_v2_trainer_config trainer_config(kind k, const options& o) {
    learn::router_v2_trainer_config c;
    c.ewc = k == kind::v2;
    c.lr = o.train_lr;
    c.adam = !o.sgd;
    c.adam_eps = o.adam_eps;
    c.epochs = o.epochs;
    c.ewc_lambda = o.ewc_lambda;
    c.boundary_ratio = o.boundary_ratio;
    c.task_gamma = o.task_gamma;
    return c;
  }
  kind kind_;
  options opt_;
  rule_facts facts_;
  std::unique_ptr<router::pattern_bank> bank_;
  std::vector<double> costs_;
  learn::router_v2_model model_;
  learn::router_v2_trainer trainer_;
  learn::router_v2_trace trace_;
  learn::router_v2_features feat_;
  std::vector<float> h_, h_prev_; ///< the session's state after / before the current turn
  std::mt19937_64 rng_;
  bool trained_ = false; ///< v2 decides once a background pass trained it
  std::deque<learn::router_v2_trajectory> log_;
  size_t since_background_ = 0;
  uint32_t boundaries_ = 0;
  size_t seen_ = 0; ///< trajectories before the last pass
  size_t next_background_ = std::min(opt_.first_background, opt_.background_every);
};

double median(std::vector<double> v) {
  if (v.empty())
    return NAN;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// Per-window reward sums of one run (and per step, for the moving average).
struct curve {
  std::vector<double> reward, oracle, large, v2_share;
  std::vector<double> context_hits, context_n; ///< v2's context bucket: right, predicted
  std::vector<double> step_reward, step_oracle;
};

/// Requests to reach (first) and to stay at (from then on) `goal` of the
/// oracle's reward, on the moving average over `span` steps of `step`
/// requests each; NaN when never.
std::pair<double, double> requests_to(const std::vector<double>& reward,
                                      const std::vector<double>& oracle, size_t span, size_t step,
                                      double goal) {
  double reach = NAN, stay = NAN;
  double r = 0, o = 0;
  for (size_t i = 0; i < reward.size(); ++i) {
    r += reward[i];
    o += oracle[i];
    if (i >= span) {
      r -= reward[i - span];
      o -= oracle[i - span];
    }
    if (i + 1 < span)
      continue;
    const double n = static_cast<double>((i + 1) * step);
    if (r >= goal * o) {
      if (std::isnan(reach))
        reach = n;
      if (std::isnan(stay))
        stay = n;
    } else {
      stay = NAN;
    }
  }
  return {reach, stay};
}

constexpr kind all_kinds[] = {kind::v1, kind::v2, kind::v2_no_ewc};

// -- 1. learning curves and 2. CPT ---------------------------------------------

struct cpt_row {
  double cpt50 = NAN, cpt80 = NAN, cpt95 = NAN;
};

/// CPT(x) from estimates est[i][t] on prompts with true means mu[i][t].
cpt_row cpt(const std::vector<std::vector<double>>& est, const std::vector<std::vector<double>>& mu,
            const std::vector<double>& costs) {
  const size_t T = costs.size(), n = mu.size();
  double q_weak = 0, q_strong = 0;
  for (size_t i = 0; i < n; ++i) {
    q_weak += mu[i][0];
    q_strong += mu[i][T - 1];
  }
  cpt_row row;
  double* out[] = {&row.cpt50, &row.cpt80, &row.cpt95};
  const double goals[] = {0.5, 0.8, 0.95};
  for (int s100 = 0; s100 <= 2000; s100 += 5) {
    const double s = s100 / 100.0;
    double q = 0, large = 0;
    for (size_t i = 0; i < n; ++i) {
      size_t best = 0;
      for (size_t t = 1; t < T; ++t)
        if (est[i][t] - s * costs[t] > est[i][best] - s * costs[best])
          best = t;
      q += mu[i][best];
      large += costs[best] / costs[T - 1];
    }
    const double pgr = (q - q_weak) / std::max(1e-12, q_strong - q_weak);
    const double share = large / static_cast<double>(n);
    for (int g = 0; g < 3; ++g)
      if (pgr >= goals[g] && !(*out[g] <= share))
        *out[g] = share;
  }
  return row;
}

void learning_curves(const std::vector<prompt>& prompts, const options& o) {
  const auto tiers = router::demo_tiers();
  std::vector<double> costs;
  for (const auto& t : tiers)
    costs.push_back(t.cost);
  const size_t n = std::min(o.requests, prompts.size() - o.heldout);
  const size_t windows = n / o.window;
  // [kind][seed] -> curve; [kind][seed] -> CPT
  std::vector<std::vector<curve>> curves(5);   // [kind]: the three routers, then the rules
  std::vector<std::vector<cpt_row>> cpts(6);   // [kind]; the oracle's at [5]
  std::vector<double> best_fixed;              // [seed]
  std::vector<std::vector<double>> fixed_last; // [seed] {best tier, oracle} reward, last window
  std::vector<double> best_bucket;             // [seed] share of the most frequent context bucket
  std::vector<double> oracle_bucket;           // [seed] share right knowing each domain's length
  for (uint32_t s = 0; s < o.seeds; ++s) {
    const auto ec = world(o, s);
    std::vector<std::vector<double>> mu;
    for (size_t i = n; i < n + o.heldout; ++i) {
      sim::evaluator ev(ec, sim::profiles_of(tiers));
      std::vector<double> m;
      for (uint32_t t = 0; t < tiers.size(); ++t)
        m.push_back(ev.mean_quality(prompts[i].domain, t, prompts[i].budget_ms));
      mu.push_back(std::move(m));
    }
    cpts[5].push_back(cpt(mu, mu, costs));
    {
      // The bar's height: the best single tier for every request, chosen
      // with hindsight, as a share of the oracle.
      sim::evaluator ev(ec, sim::profiles_of(tiers));
      std::vector<double> sum(tiers.size(), 0.0);
      double orc = 0;
      for (size_t i = 0; i < windows * o.window; ++i) {
        const auto& p = prompts[i];
        for (uint32_t t = 0; t < tiers.size(); ++t)
          sum[t] += ev.expected_reward(p.domain, t, p.budget_ms);
        orc += ev.oracle(p.domain, p.budget_ms).first;
      }
      const size_t best = std::max_element(sum.begin(), sum.end()) - sum.begin();
      best_fixed.push_back(sum[best] / orc);
      std::vector<double> last(2, 0.0); // the best tier's and the oracle's reward, last window
      for (size_t i = (windows - 1) * o.window; i < windows * o.window; ++i) {
        last[0] +=
          ev.expected_reward(prompts[i].domain, static_cast<uint32_t>(best), prompts[i].budget_ms);
        last[1] += ev.oracle(prompts[i].domain, prompts[i].budget_ms).first;
      }
      fixed_last.push_back(last);
      // The context head's bar: always predicting the most frequent bucket
      // (with hindsight), on the same completion lengths the learners draw.
      // And its ceiling: the bucket of the prompt plus the domain's typical
      // (median) answer length, which only the evaluator knows.
      std::vector<double> buckets(learn::context_buckets.size(), 0.0);
      double knowing = 0;
      for (size_t i = 0; i < windows * o.window; ++i) {
        const auto& p = prompts[i];
        const auto need =
          learn::context_bucket_index(p.tokens + ev.draw_completion_tokens(p.domain));
        buckets[need] += 1;
        knowing += learn::context_bucket_index(p.tokens + ev.answer_tokens(p.domain)) == need;
      }
      const double total = static_cast<double>(windows * o.window);
      best_bucket.push_back(*std::max_element(buckets.begin(), buckets.end()) / total);
      oracle_bucket.push_back(knowing / total);
    }
    // The simple-rule baselines' facts (with hindsight over these requests).
    rule_facts facts;
    {
      sim::evaluator ev(ec, sim::profiles_of(tiers));
      double best = -1;
      for (double t : learn::sampling_temperatures)
        for (double tp : learn::sampling_top_ps) {
          double sum = 0;
          for (size_t i = 0; i < windows * o.window; ++i)
            sum += ev.sampling_factor(prompts[i].domain, t, tp);
          if (sum > best) {
            best = sum;
            facts.temperature = t;
            facts.top_p = tp;
          }
        }
      double largest = 0;
      for (const auto& t : tiers)
        largest = std::max(largest, t.params_m);
      for (const auto& t : tiers)
        facts.ms_per_token.push_back(o.ms_per_token * t.params_m / largest);
      for (size_t i = 0; i < windows * o.window; ++i)
        facts.typical_tokens += ev.answer_tokens(prompts[i].domain);
      facts.typical_tokens /= static_cast<double>(windows * o.window);
    }
    std::vector<kind> kinds(std::begin(all_kinds), std::end(all_kinds));
    if (o.quality.sampling_sensitivity > 0)
      kinds.push_back(kind::v1_fixed_sampling);
    if (o.ms_per_token > 0)
      kinds.push_back(kind::v1_skip_overrun);
    for (kind k : kinds) {
      learner l(k, o, 1000 + s, tiers, facts);
      sim::evaluator ev(ec, sim::profiles_of(tiers));
      curve c;
      c.reward.assign(windows, 0);
      c.oracle.assign(windows, 0);
      c.large.assign(windows, 0);
      c.v2_share.assign(windows, 0);
      c.context_hits.assign(windows, 0);
      c.context_n.assign(windows, 0);
      c.step_reward.assign(windows * o.window / o.step, 0);
      c.step_oracle.assign(windows * o.window / o.step, 0);
      int64_t now = 1'700'000'000'000;
      for (size_t i = 0; i < windows * o.window; ++i) {
        auto ch = l.step(prompts[i], ev, now += 1000);
        size_t w = i / o.window;
        const auto& p = prompts[i];
        const double got =
          ev.expected_reward(p.domain, ch.tier, p.budget_ms, ch.temperature, ch.top_p);
        c.reward[w] += got;
        if (ch.context_hit >= 0) {
          c.context_hits[w] += ch.context_hit;
          c.context_n[w] += 1;
        }
        c.oracle[w] += ev.oracle(p.domain, p.budget_ms).first;
        c.large[w] += ch.tier == tiers.size() - 1;
        c.v2_share[w] += ch.by_v2;
        if (i / o.step < c.step_reward.size()) {
          c.step_reward[i / o.step] += got;
          c.step_oracle[i / o.step] += ev.oracle(p.domain, p.budget_ms).first;
        }
      }
      std::vector<std::vector<double>> est;
      for (size_t i = n; i < n + o.heldout; ++i)
        est.push_back(l.estimate(prompts[i], now += 1000));
      cpts[static_cast<int>(k)].push_back(cpt(est, mu, costs));
      curves[static_cast<int>(k)].push_back(std::move(c));
      std::fprintf(stderr, "seed %u: %s done\n", s, name(k));
    }
  }
  std::printf("\n## Learning curves (%zu requests, windows of %zu, median over %u seeds)\n\n",
              windows * o.window, o.window, o.seeds);
  std::printf("Reward of the chosen tiers as %% of the oracle's; v2 share = decisions router v2 "
              "took (the rest fell back to v1).\n\n");
  std::printf(
    "| requests | v1 | v2 (EWC++) | v2 (no EWC++) | v2 share | v1 large-tier | v2 "
    "large-tier | v2 context bucket right |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  auto pct = [&](int k, size_t w) {
    std::vector<double> v;
    for (const auto& c : curves[k])
      v.push_back(100.0 * c.reward[w] / c.oracle[w]);
    return median(v);
  };
  auto share = [&](int k, size_t w, bool large) {
    std::vector<double> v;
    for (const auto& c : curves[k])
      v.push_back(100.0 * (large ? c.large[w] : c.v2_share[w]) / o.window);
    return median(v);
  };
  auto context = [&](size_t w) {
    std::vector<double> v;
    for (const auto& c : curves[1])
      if (c.context_n[w] > 0)
        v.push_back(100.0 * c.context_hits[w] / c.context_n[w]);
    return median(v);
  };
  for (size_t w = 0; w < windows; ++w)
    std::printf(
      "| %zu | %.1f%% | %.1f%% | %.1f%% | %.0f%% | %.0f%% | %.0f%% | %s |\n", (w + 1) * o.window,
      pct(0, w), pct(1, w), pct(2, w), share(1, w, false), share(0, w, true), share(1, w, true),
      std::isnan(context(w)) ? "-" : (std::to_string(int(std::round(context(w)))) + "%").c_str());
  std::printf("\nContext bucket: router v2's predicted bucket (powers of two from 256 tokens) "
              "was the one the request's prompt + completion needed; '-' before the first "
              "background pass. Always predicting the most frequent bucket (with hindsight) "
              "is right %.0f%% of the time; knowing each domain's typical answer length, "
              "%.0f%%.\n",
              100 * median(best_bucket), 100 * median(oracle_bucket));
  std::printf("\nThe best single tier for all requests (chosen with hindsight) earns %.1f%% of "
              "the oracle's reward (median over seeds). Gain captured = (R - R_best tier) / "
              "(R_oracle - R_best tier) in the last window: the share of what routing can add "
              "over that tier which the router got (negative: worse than the tier).\n",
              100 * median(best_fixed));
  const size_t span = o.window / o.step;
  std::printf("\n95%% of the oracle: moving average over %zu requests, evaluated every %zu; "
              "reaches = first at or above, stays = never below from then on; pooled = on "
              "the curve summed over the %u seeds, per seed = median (each seed).\n\n",
              o.window, o.step, o.seeds);
  std::vector<int> shown = {0, 1, 2};
  for (int k : {3, 4})
    if (!curves[k].empty())
      shown.push_back(k);
  if (shown.size() > 3)
    std::printf("Simple rules beside the routers (router v1 choosing, plus a rule set with "
                "hindsight, no learning of their own): best fixed sampling serves the one "
                "(temperature, top-p) of the grid best over all these requests; skip "
                "overrunning tiers drops, for a request with a budget, every tier whose decode "
                "time per token times the mean answer length exceeds it.\n\n");
  std::printf("| router | reaches 95%%: pooled | per seed | stays: pooled | per seed | "
              "cumulative regret (median) | reward, last window | gain captured, last window "
              "|\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
  auto fmt = [](double x) {
    return std::isnan(x) || x >= 1e18 ? std::string("never") : std::to_string(int64_t(x));
  };
  for (int k : shown) {
    std::vector<double> reach, stay, regret, pr, po, gain;
    std::string per_reach, per_stay;
    for (size_t s = 0; s < curves[k].size(); ++s) {
      const auto& c = curves[k][s];
      // What routing can gain over the best single tier, and the share of
      // it this router captured: (R - R_fixed) / (R_oracle - R_fixed).
      const double fixed = fixed_last[s][0], orc = fixed_last[s][1];
      gain.push_back((c.reward[windows - 1] - fixed) / std::max(1e-12, orc - fixed));
      double g = 0;
      for (size_t w = 0; w < windows; ++w)
        g += c.oracle[w] - c.reward[w];
      auto [r, st] = requests_to(c.step_reward, c.step_oracle, span, o.step, 0.95);
      reach.push_back(std::isnan(r) ? 1e18 : r);
      stay.push_back(std::isnan(st) ? 1e18 : st);
      regret.push_back(g);
      per_reach += (per_reach.empty() ? "" : ", ") + fmt(r);
      per_stay += (per_stay.empty() ? "" : ", ") + fmt(st);
      pr.resize(c.step_reward.size());
      po.resize(c.step_oracle.size());
      for (size_t i = 0; i < pr.size(); ++i) {
        pr[i] += c.step_reward[i];
        po[i] += c.step_oracle[i];
      }
    }
    auto [pool_r, pool_s] = requests_to(pr, po, span, o.step, 0.95);
    std::printf("| %s | %s | %s (%s) | %s | %s (%s) | %.1f | %.1f%% | %.0f%% |\n",
                name(static_cast<kind>(k)), fmt(pool_r).c_str(), fmt(median(reach)).c_str(),
                per_reach.c_str(), fmt(pool_s).c_str(), fmt(median(stay)).c_str(), per_stay.c_str(),
                median(regret), pct(k, windows - 1), 100 * median(gain));
  }
  std::printf("\n## CPT after %zu requests (%zu held-out prompts; calls to the largest tier, "
              "each call weighted cost_t / cost_largest, needed for PGR >= x; median over "
              "seeds)\n\n| router | CPT(50%%) | CPT(80%%) | CPT(95%%) |\n|---|---:|---:|---:|\n",
              n, o.heldout);
  for (int k : {0, 1, 2, 5}) {
    std::vector<double> a, b, c;
    for (const auto& r : cpts[k]) {
      a.push_back(std::isnan(r.cpt50) ? 1.0 : r.cpt50);
      b.push_back(std::isnan(r.cpt80) ? 1.0 : r.cpt80);
      c.push_back(std::isnan(r.cpt95) ? 1.0 : r.cpt95);
    }
    std::printf("| %s | %.1f%% | %.1f%% | %.1f%% |\n",
                k == 5 ? "oracle (true means)" : name(static_cast<kind>(k)), 100 * median(a),
                100 * median(b), 100 * median(c));
  }
}

// -- 3. domain shift -------------------------------------------------------------

void domain_shift(const std::vector<prompt>& prompts, const options& o) {
  const auto tiers = router::demo_tiers();
  std::vector<std::string> domains;
  for (const auto& p : prompts)
    if (std::find(domains.begin(), domains.end(), p.domain) == domains.end())
      domains.push_back(p.domain);
  std::sort(domains.begin(), domains.end());
  const size_t n1 = o.shift_phase, n2 = o.shift_phase, n3 = o.window;
  // Domains split in two halves: alternating in name order, or (--shift-by
  // length) the domains with the longer hidden answers (A) and the shorter
  // ones (B) of the world `ev`, where the latency budgets bite differently.
  auto make_stream = [&](const sim::evaluator& ev) {
    auto order = domains;
    if (o.shift_by == "length")
      std::stable_sort(order.begin(), order.end(), [&](const auto& x, const auto& y) {
        return ev.answer_tokens(x) > ev.answer_tokens(y);
      });
    auto in_a = [&](const std::string& d) {
      const size_t i = std::find(order.begin(), order.end(), d) - order.begin();
      return o.shift_by == "length" ? i < order.size() / 2 : i % 2 == 0;
    };
    std::vector<const prompt*> a, b;
    for (const auto& p : prompts)
      (in_a(p.domain) ? a : b).push_back(&p);
    if (a.size() < n1 + n3 || b.size() < n2)
      throw std::runtime_error("domain shift: not enough prompts (A " + std::to_string(a.size())
                               + ", B " + std::to_string(b.size()) + ")");
    std::vector<const prompt*> stream(a.begin(), a.begin() + n1);
    stream.insert(stream.end(), b.begin(), b.begin() + n2);
    stream.insert(stream.end(), a.begin() + n1, a.begin() + n1 + n3);
    return stream;
  };
  // [kind][seed]: reward (system, model alone) on A before and after B.
  struct row {
    std::vector<double> before, after, before_model, after_model;
    std::vector<double> frozen_before, frozen_after, mse_before, mse_after;
  };
  // The model on frozen inputs: A's last trajectories before B (features as
  // recorded then), scored with the weights at the end of A and at the end
  // of B: greedy reward share and squared error of q against the true means.
  auto score = [&](const learn::router_v2_model& m,
                   const std::vector<learn::router_v2_trajectory>& trs,
                   const std::vector<const prompt*>& ps, sim::evaluator& ev) {
    learn::router_v2_trace tr;
    double got = 0, best = 0, se = 0;
    for (size_t i = 0; i < trs.size(); ++i) {
      m.forward(trs[i].input(), trs[i].h_prev, tr);
      size_t g = 0;
      for (size_t t = 0; t < tiers.size(); ++t) {
        if (tr.q[t] - tiers[t].cost > tr.q[g] - tiers[g].cost)
          g = t;
        const double e =
          tr.q[t] - ev.mean_quality(ps[i]->domain, static_cast<uint32_t>(t), ps[i]->budget_ms);
        se += e * e;
      }
      got += ev.expected_reward(ps[i]->domain, static_cast<uint32_t>(g), ps[i]->budget_ms);
      best += ev.oracle(ps[i]->domain, ps[i]->budget_ms).first;
    }
    return std::pair{got / best, se / static_cast<double>(trs.size() * tiers.size())};
  };
  std::vector<row> rows(3);
  for (uint32_t s = 0; s < o.seeds; ++s) {
    const auto ec = world(o, s);
    const auto stream = make_stream(sim::evaluator(ec, sim::profiles_of(tiers)));
    for (kind k : all_kinds) {
      learner l(k, o, 2000 + s, tiers);
      sim::evaluator ev(ec, sim::profiles_of(tiers));
      double sys[2] = {0, 0}, mod[2] = {0, 0}, orc[2] = {0, 0};
      int64_t now = 1'700'000'000'000;
      std::vector<learn::router_v2_trajectory> frozen;
      const std::vector<const prompt*> frozen_prompts(stream.begin() + (n1 - o.window),
                                                      stream.begin() + n1);
      std::optional<learn::router_v2_model> end_of_a;
      std::pair<double, double> fb{NAN, NAN}, fa{NAN, NAN};
      for (size_t i = 0; i < stream.size(); ++i) {
        auto ch = l.step(*stream[i], ev, now += 1000);
        if (k != kind::v1 && i + 1 == n1) {
          frozen = l.recent(o.window);
          end_of_a = l.model();
        }
        if (k != kind::v1 && i + 1 == n1 + n2 && end_of_a) {
          fb = score(*end_of_a, frozen, frozen_prompts, ev);
          fa = score(l.model(), frozen, frozen_prompts, ev);
        }
        int slot = i >= n1 - o.window && i < n1 ? 0 : i >= n1 + n2 ? 1 : -1;
        if (slot < 0)
          continue;
        const auto& p = *stream[i];
        sys[slot] += ev.expected_reward(p.domain, ch.tier, p.budget_ms, ch.temperature, ch.top_p);
        mod[slot] +=
          ev.expected_reward(p.domain, ch.model_tier, p.budget_ms, ch.temperature, ch.top_p);
        orc[slot] += ev.oracle(p.domain, p.budget_ms).first;
      }
      auto& r = rows[static_cast<int>(k)];
      r.before.push_back(sys[0] / orc[0]);
      r.after.push_back(sys[1] / orc[1]);
      r.before_model.push_back(mod[0] / orc[0]);
      r.after_model.push_back(mod[1] / orc[1]);
      r.frozen_before.push_back(fb.first);
      r.frozen_after.push_back(fa.first);
      r.mse_before.push_back(fb.second);
      r.mse_after.push_back(fa.second);
      std::fprintf(stderr, "shift seed %u: %s done (%u task boundaries)\n", s, name(k),
                   l.boundaries());
    }
  }
  std::printf("\n## Domain shift (%zu requests of domains A, %zu of B, then A returns; median "
              "over %u seeds)\n\nReward on A as %% of the oracle's: the last %zu requests "
              "before B and the first %zu after it. Forgetting = before − after (points).\n\n",
              n1, n2, o.seeds, o.window, n3);
  std::printf("| router | before | after | forgetting | v2 model alone: before | after | "
              "forgetting |\n|---|---:|---:|---:|---:|---:|---:|\n");
  for (int k = 0; k < 3; ++k) {
    const auto& r = rows[k];
    std::vector<double> f, fm;
    for (size_t i = 0; i < r.before.size(); ++i) {
      f.push_back(100 * (r.before[i] - r.after[i]));
      fm.push_back(100 * (r.before_model[i] - r.after_model[i]));
    }
    if (k == 0)
      std::printf("| %s | %.1f%% | %.1f%% | %.1f | – | – | – |\n", name(all_kinds[k]),
                  100 * median(r.before), 100 * median(r.after), median(f));
    else
      std::printf("| %s | %.1f%% | %.1f%% | %.1f | %.1f%% | %.1f%% | %.1f |\n", name(all_kinds[k]),
                  100 * median(r.before), 100 * median(r.after), median(f),
                  100 * median(r.before_model), 100 * median(r.after_model), median(fm));
  }
  std::printf("\nThe v2 model on frozen inputs (A's last %zu trajectories before B, features "
              "as recorded then), weights at the end of A vs at the end of B: greedy reward as "
              "%% of the oracle's, and the mean squared error of q against the true mean "
              "qualities (all tiers). Forgetting = reward lost; error growth = MSE end of B − end "
              "of A (median over seeds).\n\n"
              "| router | reward, end of A | end of B | forgetting | MSE end of A | end of B | "
              "error growth |\n|---|---:|---:|---:|---:|---:|---:|\n",
              o.window);
  for (int k = 1; k < 3; ++k) {
    const auto& r = rows[k];
    std::vector<double> f, g;
    for (size_t i = 0; i < r.frozen_before.size(); ++i) {
      f.push_back(100 * (r.frozen_before[i] - r.frozen_after[i]));
      g.push_back(r.mse_after[i] - r.mse_before[i]);
    }
    std::printf("| %s | %.1f%% | %.1f%% | %.2f | %.4f | %.4f | %+.4f |\n", name(all_kinds[k]),
                100 * median(r.frozen_before), 100 * median(r.frozen_after), median(f),
                median(r.mse_before), median(r.mse_after), median(g));
  }
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"SONA learning benchmark: router v1 vs router v2 on the replay evaluator"};
  options o;
  bool curves = true, shift = true;
  app.add_option("--prompts", o.prompts, "JSONL prompts (ops/make-prompts.sh)");
  app.add_option("--requests", o.requests, "requests of the learning curves");
  app.add_option("--window", o.window, "requests per curve row and of the moving average");
  app.add_option("--step", o.step, "requests per step of the moving average (divides --window)");
  app.add_option("--heldout", o.heldout, "held-out prompts for CPT");
  app.add_option("--seeds", o.seeds, "worlds (evaluator seeds); figures are medians");
  app.add_option("--shift-phase", o.shift_phase, "requests per phase of the domain shift");
  app
    .add_option("--shift-by", o.shift_by,
                "domain shift halves: \"name\" (alternating) or \"length\" (A: the domains "
                "with the longer hidden answers, B: the shorter; with --ms-per-token)")
    ->check(CLI::IsMember({"name", "length"}));
  app.add_option("--threshold", o.threshold, "router v2's confidence threshold");
  app.add_option("--instant-lr", o.instant_lr, "instant loop's MicroLoRA learning rate");
  app.add_option("--background-every", o.background_every, "trajectories per background pass");
  app.add_option("--first-background", o.first_background,
                 "trajectories before the first background pass (then doubling)");
  app.add_option("--min-samples", o.min_samples,
                 "a background pass repeats epochs until it trained on this many samples");
  app.add_option("--train-window", o.train_window, "recent trajectories a pass trains on");
  app.add_option("--train-lr", o.train_lr, "background loop's learning rate");
  app.add_flag("--sgd", o.sgd, "background loop: plain SGD instead of Adam");
  app.add_option("--adam-eps", o.adam_eps, "Adam's epsilon");
  app.add_option("--epochs", o.epochs, "epochs per background pass");
  app.add_option("--max-importance", o.max_importance, "router v2's importance weight cap");
  app.add_option("--ewc-lambda", o.ewc_lambda, "EWC++ strength");
  app.add_option("--boundary-ratio", o.boundary_ratio,
                 "EWC++ task boundary: newest error / last fit (0: every pass is a boundary)");
  app.add_option("--task-gamma", o.task_gamma, "EWC++: weight of older tasks' importance");
  app.add_option("--ms-per-token", o.ms_per_token,
                 "latency model: the largest tier's ms per output token (0: off; then "
                 "budgets are ignored)");
  app.add_option("--budget-share", o.budgets.share, "share of requests with a latency budget");
  app.add_option("--budget-min-ms", o.budgets.min_ms, "smallest latency budget (log-uniform)");
  app.add_option("--budget-max-ms", o.budgets.max_ms,
                 "largest latency budget; router v2 sees budget / this");
  app.add_option("--slope", o.quality.slope,
                 "evaluator: steepness of quality in (ability - difficulty)");
  app.add_option("--difficulty-min", o.quality.difficulty_min, "evaluator: easiest domain");
  app.add_option("--difficulty-max", o.quality.difficulty_max, "evaluator: hardest domain");
  app.add_option("--concentration", o.quality.concentration,
                 "evaluator: Beta concentration of quality draws (higher = less noise)");
  app.add_option("--sampling-sensitivity", o.quality.sampling_sensitivity,
                 "evaluator: how much sampling away from a domain's best temperature and "
                 "top-p costs (0: sampling does not matter)");
  app.add_option("--sampling-explore", o.sampling_explore,
                 "router v2's sampling heads: epsilon (negative: no sampling choice)");
  app.add_option("--answer-tokens-min", o.quality.answer_tokens_min,
                 "evaluator: shortest domain answer, tokens");
  app.add_option("--answer-tokens-max", o.quality.answer_tokens_max,
                 "evaluator: longest domain answer, tokens");
  app.add_option("--session-turns", o.session_turns,
                 "turns per session: each prompt is followed by generic follow-ups of its "
                 "domain, which only router v2's recurrent state can tell apart");
  app.add_flag("!--no-curves", curves, "skip the learning curves and CPT");
  app.add_flag("!--no-shift", shift, "skip the domain shift");
  CLI11_PARSE(app, argc, argv);
  try {
    auto prompts = load_prompts(o.prompts, std::max(o.requests + o.heldout, 4 * o.shift_phase));
    assign_budgets(prompts, o);
    prompts = with_sessions(prompts, o);
    if (!(o.budgets.share >= 0 && o.budgets.share <= 1) || !(o.budgets.min_ms > 0)
        || !(o.budgets.max_ms >= o.budgets.min_ms) || !(o.ms_per_token >= 0))
      throw std::runtime_error("latency budgets: --budget-share must be in [0, 1], 0 < "
                               "--budget-min-ms <= --budget-max-ms, --ms-per-token >= 0");
    if (o.step == 0 || o.window % o.step != 0)
      throw std::runtime_error("--step must divide --window");
    if (o.window == 0 || prompts.size() < o.heldout + o.window)
      throw std::runtime_error("not enough prompts for one window and the held-out set");
    std::printf("# SONA learning benchmark\n\n%zu prompts from %s; router v2: threshold %.2f, "
                "instant lr %.3g, background every %zu trajectories on the last %zu (lr %.3g, "
                "%u epoch(s), EWC++ λ %.3g)\n",
                prompts.size(), o.prompts.c_str(), o.threshold, o.instant_lr, o.background_every,
                o.train_window, o.train_lr, o.epochs, o.ewc_lambda);
    if (o.session_turns > 1)
      std::printf("\nSessions of %u turns: each prompt is followed by %u generic follow-ups "
                  "(\"tell me more\", ...) of its domain; router v2 carries its recurrent "
                  "state from turn to turn, router v1 routes each turn by its own text.\n",
                  o.session_turns, o.session_turns - 1);
    if (o.ms_per_token > 0)
      std::printf("\nLatency model: the largest tier decodes at %.3g ms/token, answers of %g-%g "
                  "tokens per domain; %.0f%% of requests carry a budget, log-uniform in "
                  "[%g, %g] ms; an answer that overruns it is cut (quality x budget / "
                  "latency). Router v1 does not see budgets; router v2 does.\n",
                  o.ms_per_token, sim::evaluator_config{}.answer_tokens_min,
                  sim::evaluator_config{}.answer_tokens_max, 100 * o.budgets.share,
                  o.budgets.min_ms, o.budgets.max_ms);
    if (curves)
      learning_curves(prompts, o);
    if (shift)
      domain_shift(prompts, o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shoal_sona_learning: %s\n", e.what());
    return 1;
  }
  return 0;
}
