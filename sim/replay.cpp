#include "sim/replay.hpp"

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
#include <thread>

namespace shoal::sim {

namespace {

using json = nlohmann::json;
using clock_type = std::chrono::steady_clock;

struct prompt {
  std::string text;
  std::string domain;
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
    out.push_back({j["text"].get<std::string>(), j["domain"].get<std::string>()});
  }
  if (skipped > 0)
    std::cerr << "replay: skipped " << skipped << " malformed lines\n";
  if (out.empty()) {
    std::cerr << "replay: no prompts in " << o.prompts << "\n";
    return false;
  }
  return true;
}

} // namespace

int run_replay(const replay_options& o) {
  if (o.budgets.share > 0 && !(o.budgets.min_ms <= o.budgets.max_ms)) {
    std::cerr << "replay: --budget-min-ms (" << o.budgets.min_ms
              << ") must not exceed --budget-max-ms (" << o.budgets.max_ms << ")\n";
    return 1;
  }
  std::vector<prompt> prompts;
  if (!load_prompts(o, prompts))
    return 1;
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
  uint64_t n = o.limit == 0 ? prompts.size() : o.limit;
  std::vector<outcome> results(n);
  evaluator eval(o.eval, tiers);
  std::mutex eval_mtx; // the evaluator's RNG is shared by the workers
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
      const auto& p = prompts[(o.offset + i) % prompts.size()];
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
      uint32_t completion = 0;
      {
        std::lock_guard guard(eval_mtx);
        r.quality = eval.draw_quality(p.domain, r.tier, budget_ms, temperature, top_p);
        completion = eval.draw_completion_tokens(p.domain);
      }
      r.reward = r.quality - tiers[r.tier].cost;
      r.expected = eval.expected_reward(p.domain, r.tier, budget_ms, temperature, top_p);
      r.oracle = eval.oracle(p.domain, budget_ms).first;
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
  std::printf("replay: %llu requests from %s against %s (evaluator seed %llu), %.1f s, "
              "%.0f requests/s\n",
              static_cast<unsigned long long>(n), o.prompts.c_str(), o.url.c_str(),
              static_cast<unsigned long long>(o.eval.seed), elapsed,
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
      const auto& p = prompts[(o.offset + i) % prompts.size()];
      const double budget_ms = latency_budget(o.budgets, o.eval.seed, o.offset + i);
      for (uint32_t t = 0; t < tiers.size(); ++t)
        fixed[t] += eval.expected_reward(p.domain, t, budget_ms);
      orc += results[i].oracle;
      ++cnt;
    }
    std::printf("baseline, one fixed tier for every request (%% of oracle):");
    for (size_t t = 0; t < tiers.size(); ++t)
      std::printf(" %s %.1f%%", tiers[t].name.c_str(), 100 * fixed[t] / orc);
    std::printf("\n");
    (void)cnt;
  }
  if (o.by_domain > 0) {
    // Where the regret comes from: domains ranked by total regret.
    struct dom {
      uint64_t n = 0;
      double regret = 0;
      std::vector<uint64_t> use;
    };
    std::map<std::string, dom> doms;
    for (uint64_t i = 0; i < n; ++i) {
      if (!results[i].ok)
        continue;
      auto& d = doms[prompts[(o.offset + i) % prompts.size()].domain];
      d.use.resize(tiers.size());
      ++d.n;
      d.regret += results[i].oracle - results[i].expected;
      ++d.use[results[i].tier];
    }
    std::vector<std::pair<std::string, dom>> ranked(doms.begin(), doms.end());
    std::sort(ranked.begin(), ranked.end(),
              [](auto& a, auto& b) { return a.second.regret > b.second.regret; });
    std::printf("%-14s %6s %7s %6s %s\n", "domain", "n", "regret", "oracle", "tier shares");
    for (size_t r = 0; r < std::min<size_t>(o.by_domain, ranked.size()); ++r) {
      auto& [name, d] = ranked[r];
      std::printf("%-14s %6llu %7.4f %6s", name.c_str(), static_cast<unsigned long long>(d.n),
                  d.regret / d.n, tiers[eval.oracle(name).second].name.c_str());
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
