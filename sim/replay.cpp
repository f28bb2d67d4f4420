#include "sim/replay.hpp"

#include "sim/quality_table.hpp"
#include "sim/router_metrics.hpp"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <iostream>
#include <mutex>
#include <numeric>
#include <random>
#include <thread>

namespace shoal::sim {

namespace {

using json = nlohmann::json;
using clock_type = std::chrono::steady_clock;

struct prompt {
  std::string text;
  std::string domain;
  std::string id;
};

/// What judges the routed answers. Prompt indices are into the replay's prompts.
class world {
public:
  virtual ~world() = default;
  /// The quality fed back for tier t's answer to prompt i (may be a draw).
  virtual double quality(size_t i, uint32_t t, double budget_ms, double temperature,
                         double top_p) = 0;
  /// The answer's length in tokens, sent with the feedback.
  virtual uint32_t completion_tokens(size_t i, uint32_t t) = 0;
  /// The expected reward (quality - cost) of tier t on prompt i.
  virtual double expected_reward(size_t i, uint32_t t, double budget_ms, double temperature = -1,
                                 double top_p = -1) const = 0;
  /// The oracle's expected reward on prompt i.
  virtual double oracle(size_t i, double budget_ms) const = 0;
  virtual double cost(uint32_t t) const = 0;
};

/// sim/evaluator.hpp's synthetic world: quality depends on the prompt's domain.
class simulated_world final : public world {
public:
  simulated_world(const evaluator_config& cfg, const std::vector<tier_profile>& tiers,
                  const std::vector<prompt>& prompts)
    : eval_(cfg, tiers), tiers_(tiers), prompts_(prompts) {}
  double quality(size_t i, uint32_t t, double b, double temp, double top_p) override {
    std::lock_guard guard(mutex_); // the evaluator's RNG is shared by the workers
    return eval_.draw_quality(prompts_[i].domain, t, b, temp, top_p);
  }
  uint32_t completion_tokens(size_t i, uint32_t) override {
    std::lock_guard guard(mutex_);
    return eval_.draw_completion_tokens(prompts_[i].domain);
  }
  double expected_reward(size_t i, uint32_t t, double b, double temp, double top_p) const override {
    return eval_.expected_reward(prompts_[i].domain, t, b, temp, top_p);
  }
  double oracle(size_t i, double b) const override {
    return eval_.oracle(prompts_[i].domain, b).first;
  }
  double cost(uint32_t t) const override { return tiers_[t].cost; }

private:
  evaluator eval_;
  std::vector<tier_profile> tiers_;
  const std::vector<prompt>& prompts_;
  std::mutex mutex_;
};

/// The reference world: the measured quality table (sim/quality_table.hpp).
/// Sampling and budgets do not change the table's greedy measurements.
class reference_world final : public world {
public:
  /// `row[i]`: prompt i's column in the table; costs: λ × mean ms per tier.
  reference_world(const quality_table& table, std::vector<size_t> row, double lambda)
    : table_(table), row_(std::move(row)) {
    for (const auto& t : table_.tiers)
      costs_.push_back(lambda * t.mean_ms());
  }
  double quality(size_t i, uint32_t t, double, double, double) override {
    return table_.tiers[t].quality[row_[i]];
  }
  uint32_t completion_tokens(size_t i, uint32_t t) override {
    return std::max<uint32_t>(1, table_.tiers[t].tokens[row_[i]]);
  }
  double expected_reward(size_t i, uint32_t t, double, double, double) const override {
    return table_.tiers[t].quality[row_[i]] - costs_[t];
  }
  double oracle(size_t i, double) const override {
    double best = -1e300;
    for (uint32_t t = 0; t < table_.tiers.size(); ++t)
      best = std::max(best, expected_reward(i, t, 0, -1, -1));
    return best;
  }
  double cost(uint32_t t) const override { return costs_[t]; }

private:
  const quality_table& table_;
  std::vector<size_t> row_;
  std::vector<double> costs_;
};

struct outcome {
  bool ok = false;
  uint32_t tier = 0;
  double quality = 0;
  double reward = 0;   ///< observed: quality - cost
  double expected = 0; ///< mu - cost of the chosen tier
  double oracle = 0;   ///< the oracle's expected reward
  double route_ms = 0; ///< client-side round trip of /v1/route
};

double percentile(std::vector<double> v, double q) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  auto i = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size()))) - 1;
  return v[std::min(i, v.size() - 1)];
}

bool load_prompts(const replay_options& o, std::vector<prompt>& out) {
  std::ifstream in(o.prompts);
  if (!in) {
    std::cerr << "replay: cannot open " << o.prompts << "\n";
    return false;
  }
  std::string line;
  uint64_t lineno = 0, skipped = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty())
      continue;
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("text") || !j["text"].is_string()
        || !j.contains("domain") || !j["domain"].is_string()) {
      if (skipped++ < 5)
        std::cerr << "replay: " << o.prompts << ":" << lineno
                  << ": skipped (need a JSON object with string text and domain)\n";
      continue;
    }
    out.push_back({j["text"].get<std::string>(), j["domain"].get<std::string>(),
                   j.value("id", std::to_string(lineno))});
  }
  if (skipped > 0)
    std::cerr << "replay: skipped " << skipped << " malformed lines\n";
  if (out.empty()) {
    std::cerr << "replay: no prompts in " << o.prompts << "\n";
    return false;
  }
  return true;
}

/// Builds the table with a progress line on stderr.
core::result<quality_table> table_with_progress(const std::vector<eval_document>& docs,
                                                const std::string& source, const std::string& url,
                                                const std::string& path) {
  table_options to;
  to.url = url;
  to.path = path;
  to.progress = [start = clock_type::now()](const std::string& tier, size_t done, size_t total) {
    if (done % 20 != 0 && done != total)
      return;
    double s = std::chrono::duration<double>(clock_type::now() - start).count();
    std::fprintf(stderr, "\rquality table: %s %zu/%zu (%.0f s)%s", tier.c_str(), done, total, s,
                 done == total ? "\n" : "");
  };
  return build_quality_table(docs, source, to);
}

} // namespace

int run_quality_table(const std::string& url, const std::string& docs_path,
                      const std::string& path) {
  auto docs = load_eval_documents(docs_path);
  if (!docs) {
    std::cerr << "quality-table: " << docs.err().message << "\n";
    return 1;
  }
  auto t = table_with_progress(*docs, docs_path, url, path);
  if (!t) {
    std::cerr << "quality-table: " << t.err().message << "\n";
    return 1;
  }
  std::printf("%s: %zu documents from %s\n", path.c_str(), t->ids.size(), docs_path.c_str());
  std::printf("%-16s %9s %9s %9s %9s\n", "tier", "quality", "rouge_l", "ms", "tokens");
  for (const auto& x : t->tiers) {
    double tokens = 0;
    for (auto n : x.tokens)
      tokens += n;
    std::printf("%-16s %9.4f %9.4f %9.1f %9.1f\n", x.name.c_str(), x.mean_quality(),
                x.mean_rouge_l(), x.mean_ms(), tokens / static_cast<double>(x.tokens.size()));
  }
  return 0;
}

int run_replay(const replay_options& o) {
  if (o.budgets.share > 0 && !(o.budgets.min_ms <= o.budgets.max_ms)) {
    std::cerr << "replay: --budget-min-ms (" << o.budgets.min_ms
              << ") must not exceed --budget-max-ms (" << o.budgets.max_ms << ")\n";
    return 1;
  }
  if (o.evaluator != "simulated" && o.evaluator != "reference") {
    std::cerr << "replay: --evaluator must be simulated or reference, not " << o.evaluator << "\n";
    return 1;
  }
  const bool reference = o.evaluator == "reference";
  std::vector<prompt> prompts;
  std::vector<eval_document> docs;
  if (reference) {
    auto d = load_eval_documents(o.prompts);
    if (!d) {
      std::cerr << "replay: " << d.err().message << "\n";
      return 1;
    }
    docs = std::move(*d);
    for (const auto& x : docs)
      prompts.push_back({x.prompt, x.domain, x.id});
  } else if (!load_prompts(o, prompts)) {
    return 1;
  }
  // Tiers (name, cost, size) come from the node itself, so the evaluator's
  // costs are the router's.
  httplib::Client probe(o.url);
  probe.set_read_timeout(30, 0);
  auto st = probe.Get("/v1/stats");
  if (!st || st->status != 200) {
    std::cerr << "replay: cannot reach " << o.url << "/v1/stats\n";
    return 1;
  }
  json stats = json::parse(st->body, nullptr, false);
  std::vector<tier_profile> tiers;
  for (auto& t : stats["tiers"]) {
    tier_profile tc;
    tc.name = t["name"].get<std::string>();
    tc.cost = t["cost"].get<double>();
    tc.params_m = t["params_m"].get<double>();
    tiers.push_back(std::move(tc));
  }
  if (tiers.empty()) {
    std::cerr << "replay: the node reports no tiers\n";
    return 1;
  }
  std::unique_ptr<world> judge;
  quality_table table;
  if (reference) {
    auto t = table_with_progress(docs, o.prompts, o.url, o.table);
    if (!t) {
      std::cerr << "replay: quality table: " << t.err().message << "\n";
      return 1;
    }
    table = std::move(*t);
    if (table.tiers.size() != tiers.size()) {
      std::cerr << "replay: the node routes to " << tiers.size() << " tiers but serves "
                << table.tiers.size() << "; the reference world needs every tier serving\n";
      return 1;
    }
    std::vector<size_t> row(prompts.size());
    std::iota(row.begin(), row.end(), 0); // the table's columns follow the documents
    judge = std::make_unique<reference_world>(table, std::move(row), o.lambda);
    std::printf("reference world: %s, %zu prompts, lambda %g per ms\n", o.table.c_str(),
                prompts.size(), o.lambda);
    std::printf("%-16s %9s %9s %9s %9s %8s\n", "tier", "quality", "rouge_l", "ms", "cost",
                "node cost");
    for (size_t t = 0; t < tiers.size(); ++t) {
      const auto& x = table.tiers[t];
      std::printf("%-16s %9.4f %9.4f %9.1f %9.4f %8.4f%s\n", x.name.c_str(), x.mean_quality(),
                  x.mean_rouge_l(), x.mean_ms(), judge->cost(static_cast<uint32_t>(t)),
                  tiers[t].cost,
                  std::abs(judge->cost(static_cast<uint32_t>(t)) - tiers[t].cost) > 1e-4
                    ? "  (differs: the router optimises the node's cost)"
                    : "");
    }
  } else {
    judge = std::make_unique<simulated_world>(o.eval, tiers, prompts);
  }
  // Request order: file order, or a seeded shuffle (the same for every router).
  std::vector<size_t> order(prompts.size());
  std::iota(order.begin(), order.end(), 0);
  if (o.order_seed != 0)
    std::shuffle(order.begin(), order.end(), std::mt19937_64(o.order_seed));
  auto prompt_of = [&](uint64_t i) { return order[(o.offset + i) % prompts.size()]; };
  uint64_t n = o.limit == 0 ? prompts.size() : o.limit;
  std::vector<outcome> results(n);
  std::atomic<uint64_t> next{0}, failures{0};
  auto t_start = clock_type::now();
  auto worker = [&] {
    httplib::Client cli(o.url);
    cli.set_keep_alive(true);
    cli.set_tcp_nodelay(true);
    cli.set_read_timeout(30, 0);
    for (uint64_t i = next++; i < n; i = next++) {
      if (o.rate > 0) {
        auto due = t_start + std::chrono::duration<double>(static_cast<double>(i) / o.rate);
        std::this_thread::sleep_until(due);
      }
      const size_t pi = prompt_of(i);
      const auto& p = prompts[pi];
      const double budget_ms = latency_budget(o.budgets, o.eval.seed, o.offset + i);
      json req = {{"text", p.text}};
      if (budget_ms > 0)
        req["latency_budget_ms"] = budget_ms;
      auto t0 = clock_type::now();
      auto res = cli.Post("/v1/route", req.dump(), "application/json");
      auto t1 = clock_type::now();
      if (!res || res->status != 200) {
        if (failures++ < 5)
          std::cerr << "replay: route failed: "
                    << (res ? std::to_string(res->status) + " " + res->body
                            : httplib::to_string(res.error()))
                    << "\n";
        continue;
      }
      json d = json::parse(res->body, nullptr, false);
      outcome& r = results[i];
      r.tier = d["tier_index"].get<uint32_t>();
      r.route_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
      // The answer is sampled as the router says (the default without a word from it).
      const double temperature = d.value("temperature", -1.0), top_p = d.value("top_p", -1.0);
      r.quality = judge->quality(pi, r.tier, budget_ms, temperature, top_p);
      const uint32_t completion = judge->completion_tokens(pi, r.tier);
      r.reward = r.quality - judge->cost(r.tier);
      r.expected = judge->expected_reward(pi, r.tier, budget_ms, temperature, top_p);
      r.oracle = judge->oracle(pi, budget_ms);
      // Feedback with the answer's usage, as a client that saw it reports it.
      json fb = {
        {"request_id", d["request_id"]}, {"quality", r.quality}, {"completion_tokens", completion}};
      auto fres = cli.Post("/v1/feedback", fb.dump(), "application/json");
      if (!fres || fres->status != 200) {
        if (failures++ < 5)
          std::cerr << "replay: feedback failed: "
                    << (fres ? std::to_string(fres->status) + " " + fres->body
                             : httplib::to_string(fres.error()))
                    << "\n";
        continue;
      }
      r.ok = true;
    }
  };
  std::vector<std::thread> threads;
  for (uint32_t c = 0; c < std::max(1u, o.concurrency); ++c)
    threads.emplace_back(worker);
  for (auto& t : threads)
    t.join();
  double elapsed = std::chrono::duration<double>(clock_type::now() - t_start).count();

  // Learning curve.
  std::ofstream csv;
  if (!o.curve_out.empty()) {
    csv.open(o.curve_out);
    csv << "requests,mean_reward,expected_reward,oracle_reward,regret,ratio";
    for (auto& t : tiers)
      csv << ",share_" << t.name;
    csv << "\n";
  }
  std::printf("replay: %llu requests from %s against %s (%s evaluator, seed %llu, order seed "
              "%llu), %.1f s, %.0f requests/s\n",
              static_cast<unsigned long long>(n), o.prompts.c_str(), o.url.c_str(),
              o.evaluator.c_str(), static_cast<unsigned long long>(o.eval.seed),
              static_cast<unsigned long long>(o.order_seed), elapsed,
              static_cast<double>(n) / elapsed);
  if (o.budgets.share > 0)
    std::printf("latency budgets: %.0f%% of requests, log-uniform in [%g, %g] ms; latency "
                "model: the largest tier decodes at %g ms/token%s\n",
                100 * o.budgets.share, o.budgets.min_ms, o.budgets.max_ms,
                o.eval.largest_ms_per_token,
                o.eval.largest_ms_per_token > 0 ? "" : " (off: budgets do not change quality)");
  std::printf("%9s %8s %8s %8s %8s %7s", "requests", "reward", "expected", "oracle", "regret",
              "ratio");
  for (auto& t : tiers)
    std::printf(" %7.7s",
                t.name.c_str() + std::max<size_t>(0, t.name.size() > 7 ? t.name.size() - 7 : 0));
  std::printf("\n");
  double last_ratio = 0;
  for (uint64_t b = 0; b < n; b += o.window) {
    uint64_t e = std::min(n, b + o.window);
    double rew = 0, exp = 0, orc = 0;
    uint64_t cnt = 0;
    std::vector<uint64_t> use(tiers.size());
    for (uint64_t i = b; i < e; ++i) {
      if (!results[i].ok)
        continue;
      ++cnt;
      rew += results[i].reward;
      exp += results[i].expected;
      orc += results[i].oracle;
      ++use[results[i].tier];
    }
    if (cnt == 0)
      continue;
    rew /= cnt;
    exp /= cnt;
    orc /= cnt;
    last_ratio = rew / orc;
    std::printf("%9llu %8.4f %8.4f %8.4f %8.4f %6.1f%%", static_cast<unsigned long long>(e), rew,
                exp, orc, orc - exp, 100 * rew / orc);
    for (auto u : use)
      std::printf(" %6.1f%%", 100.0 * u / cnt);
    std::printf("\n");
    if (csv) {
      csv << e << ',' << rew << ',' << exp << ',' << orc << ',' << orc - exp << ',' << rew / orc;
      for (auto u : use)
        csv << ',' << double(u) / cnt;
      csv << "\n";
    }
  }
  if (!o.requests_out.empty()) {
    std::ofstream rq(o.requests_out);
    rq << "request,id,domain,tier,quality,reward,expected,oracle\n";
    for (uint64_t i = 0; i < n; ++i) {
      if (!results[i].ok)
        continue;
      const auto& p = prompts[prompt_of(i)];
      rq << i << ',' << p.id << ',' << p.domain << ',' << tiers[results[i].tier].name << ','
         << results[i].quality << ',' << results[i].reward << ',' << results[i].expected << ','
         << results[i].oracle << "\n";
    }
  }
  std::vector<double> lat;
  std::vector<uint64_t> use(tiers.size());
  for (auto& r : results)
    if (r.ok) {
      lat.push_back(r.route_ms);
      ++use[r.tier];
    }
  // Baselines: every request sent to one fixed tier (what a router without
  // context could do at best), in expected reward relative to the oracle.
  {
    std::vector<double> fixed(tiers.size());
    double orc = 0;
    uint64_t cnt = 0;
    for (uint64_t i = 0; i < n; ++i) {
      if (!results[i].ok)
        continue;
      const double budget_ms = latency_budget(o.budgets, o.eval.seed, o.offset + i);
      for (uint32_t t = 0; t < tiers.size(); ++t)
        fixed[t] += judge->expected_reward(prompt_of(i), t, budget_ms);
      orc += results[i].oracle;
      ++cnt;
    }
    std::printf("baseline, one fixed tier for every request (%% of oracle):");
    for (size_t t = 0; t < tiers.size(); ++t)
      std::printf(" %s %.1f%%", tiers[t].name.c_str(), 100 * fixed[t] / orc);
    std::printf("\n");
    (void)cnt;
  }
  if (reference) {
    // The router's point next to the Zero router (the best mix of fixed
    // tiers, RouterBench) at the same mean answer time.
    double ms = 0, q = 0;
    uint64_t cnt = 0;
    for (uint64_t i = 0; i < n; ++i)
      if (results[i].ok) {
        ms += table.tiers[results[i].tier].mean_ms();
        q += results[i].quality;
        ++cnt;
      }
    std::vector<qc_point> fixed;
    for (const auto& t : table.tiers) {
      double tq = 0;
      for (uint64_t i = 0; i < n; ++i)
        if (results[i].ok)
          tq += t.quality[prompt_of(i)];
      fixed.push_back({t.mean_ms(), cnt ? tq / cnt : 0});
    }
    if (cnt > 0) {
      ms /= cnt;
      q /= cnt;
      std::printf("quality at matched cost: router %.4f at %.1f ms per answer; Zero router (best "
                  "mix of fixed tiers) %.4f at the same cost\n",
                  q, ms, hull_quality(upper_hull(fixed), ms));
    }
  }
  if (o.by_domain > 0) {
    // Where the regret comes from: domains ranked by total regret.
    struct dom {
      uint64_t n = 0;
      double regret = 0;
      std::vector<uint64_t> use;
      std::vector<double> fixed; ///< expected reward of each fixed tier here
    };
    std::map<std::string, dom> doms;
    for (uint64_t i = 0; i < n; ++i) {
      if (!results[i].ok)
        continue;
      auto& d = doms[prompts[prompt_of(i)].domain];
      d.use.resize(tiers.size());
      d.fixed.resize(tiers.size());
      ++d.n;
      d.regret += results[i].oracle - results[i].expected;
      ++d.use[results[i].tier];
      for (uint32_t t = 0; t < tiers.size(); ++t)
        d.fixed[t] += judge->expected_reward(prompt_of(i), t, 0);
    }
    std::vector<std::pair<std::string, dom>> ranked(doms.begin(), doms.end());
    std::sort(ranked.begin(), ranked.end(),
              [](auto& a, auto& b) { return a.second.regret > b.second.regret; });
    std::printf("%-14s %6s %7s %6s %s\n", "domain", "n", "regret", "best", "tier shares");
    for (size_t r = 0; r < std::min<size_t>(o.by_domain, ranked.size()); ++r) {
      auto& [name, d] = ranked[r];
      // The best fixed tier of the domain (in hindsight, over this run's requests).
      const auto best = std::max_element(d.fixed.begin(), d.fixed.end()) - d.fixed.begin();
      std::printf("%-14s %6llu %7.4f %6s", name.c_str(), static_cast<unsigned long long>(d.n),
                  d.regret / d.n, tiers[static_cast<size_t>(best)].name.c_str());
      for (auto u : d.use)
        std::printf(" %5.1f%%", 100.0 * u / d.n);
      std::printf("\n");
    }
  }
  std::printf("tier usage:");
  for (size_t t = 0; t < tiers.size(); ++t)
    std::printf(" %s %.1f%%", tiers[t].name.c_str(),
                lat.empty() ? 0.0 : 100.0 * use[t] / lat.size());
  std::printf("\nroute round trip (client side, ms): p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n",
              percentile(lat, 0.5), percentile(lat, 0.9), percentile(lat, 0.99),
              percentile(lat, 1.0));
  if (auto s2 = probe.Get("/v1/stats"); s2 && s2->status == 200) {
    json j = json::parse(s2->body, nullptr, false);
    auto& l = j["route_latency_ms"];
    std::printf("route latency (node side, ms): p50 %.3f  p90 %.3f  p99 %.3f  p999 %.3f; "
                "patterns %llu\n",
                l["p50"].get<double>(), l["p90"].get<double>(), l["p99"].get<double>(),
                l["p999"].get<double>(),
                static_cast<unsigned long long>(j["patterns"].get<uint64_t>()));
  }
  std::printf("final window: mean reward is %.1f%% of the oracle's\n", 100 * last_ratio);
  if (failures > 0) {
    std::cerr << "replay: " << failures.load() << " requests failed\n";
    return 1;
  }
  return 0;
}

int run_learn(const std::string& url, const std::string& loop) {
  httplib::Client cli(url);
  cli.set_connection_timeout(5);
  cli.set_read_timeout(3600); // a triggered run answers when it is done
  auto res = loop.empty() ? cli.Get("/v1/learn/status")
                          : cli.Post("/v1/learn/trigger", nlohmann::json{{"loop", loop}}.dump(),
                                     "application/json");
  if (!res) {
    std::fprintf(stderr, "shoal learn: cannot reach %s: %s\n", url.c_str(),
                 httplib::to_string(res.error()).c_str());
    return 1;
  }
  auto j = nlohmann::json::parse(res->body, nullptr, false);
  if (res->status != 200) {
    std::string msg = res->body;
    if (!j.is_discarded() && j.contains("error") && j["error"].contains("message"))
      msg = j["error"]["message"].get<std::string>();
    std::fprintf(stderr, "shoal learn: %s answered %d: %s\n", url.c_str(), res->status,
                 msg.c_str());
    return 1;
  }
  std::printf("%s\n", j.is_discarded() ? res->body.c_str() : j.dump(2).c_str());
  return 0;
}

} // namespace shoal::sim
