// The router judged as the field judges routers (issue 20), on the reference
// world: reads the quality table of the evaluation split and the per-request
// CSVs of `shoal replay --requests-out` (one file per router, λ and seed,
// named <router>_<lambda>_<seed>.csv), and prints, with the fixed tiers, the
// Zero router (RouterBench: the hull of the fixed tiers), a random router
// and the per-prompt oracle next to the routers:
//   - every router's quality–cost points over λ (cost = mean ms per answer of
//     the tiers it chose, from the table; quality = mean measured quality);
//   - AIQ over the fixed tiers' cost range, mean and spread over the seeds;
//   - APGR, CPT(50%), CPT(80%) between the cheapest and the dearest tier;
//   - the hull's quality at each fixed tier's cost minus that tier's;
//   - cumulative regret against the oracle at each λ;
//   - per domain, at one λ, the router's mean reward next to the best fixed
//     tier's in hindsight (where it gains and where it loses).
// Usage: shoal_router_report --table T --runs DIR [--domain-lambda L]
#include "sim/quality_table.hpp"
#include "sim/router_metrics.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace shoal::sim;

namespace {

struct run {
  std::string router;
  double lambda = 0;
  int seed = 0;
  std::vector<size_t> prompt; ///< per request: column in the table
  std::vector<size_t> tier;   ///< per request: index of the chosen tier
};

double mean(const std::vector<double>& v) {
  return v.empty() ? 0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

double stdev(const std::vector<double>& v) {
  if (v.size() < 2)
    return 0;
  const double m = mean(v);
  double s = 0;
  for (double x : v)
    s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

std::string fmt_cpt(const std::optional<double>& c) {
  if (!c)
    return "    —";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%4.0f%%", *c * 100);
  return buf;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"Router metrics on the reference world (RouterBench AIQ, RouteLLM APGR/CPT)"};
  std::string table_path, runs_dir;
  double domain_lambda = -1;
  app.add_option("--table", table_path, "Quality table of the evaluation split")->required();
  app.add_option("--runs", runs_dir, "Directory of <router>_<lambda>_<seed>.csv files")->required();
  app.add_option("--domain-lambda", domain_lambda, "λ of the per-domain table (default: middle)");
  CLI11_PARSE(app, argc, argv);

  auto loaded = load_quality_table(table_path);
  if (!loaded) {
    std::fprintf(stderr, "router_report: %s\n", loaded.err().message.c_str());
    return 1;
  }
  const quality_table& table = *loaded;
  const size_t T = table.tiers.size(), N = table.ids.size();
  std::map<std::string, size_t> column, tier_index;
  for (size_t i = 0; i < N; ++i)
    column[table.ids[i]] = i;
  for (size_t t = 0; t < T; ++t)
    tier_index[table.tiers[t].name] = t;

  std::vector<run> runs;
  for (const auto& entry : std::filesystem::directory_iterator(runs_dir)) {
    if (entry.path().extension() != ".csv")
      continue;
    std::string stem = entry.path().stem().string();
    auto a = stem.find('_'), b = stem.rfind('_');
    if (a == std::string::npos || a == b)
      continue;
    run r;
    r.router = stem.substr(0, a);
    r.lambda = std::stod(stem.substr(a + 1, b - a - 1));
    r.seed = std::stoi(stem.substr(b + 1));
    std::ifstream in(entry.path());
    std::string line;
    std::getline(in, line); // header
    while (std::getline(in, line)) {
      std::stringstream ss(line);
      std::string request, id, domain, tier;
      std::getline(ss, request, ',');
      std::getline(ss, id, ',');
      std::getline(ss, domain, ',');
      std::getline(ss, tier, ',');
      if (!column.count(id) || !tier_index.count(tier)) {
        std::fprintf(stderr, "router_report: %s: %s / %s is not in the table\n",
                     entry.path().c_str(), id.c_str(), tier.c_str());
        return 1;
      }
      r.prompt.push_back(column[id]);
      r.tier.push_back(tier_index[tier]);
    }
    runs.push_back(std::move(r));
  }
  if (runs.empty()) {
    std::fprintf(stderr, "router_report: no runs in %s\n", runs_dir.c_str());
    return 1;
  }

  // Fixed tiers, the cheapest (weak) and the dearest (strong).
  std::vector<qc_point> fixed(T);
  for (size_t t = 0; t < T; ++t)
    fixed[t] = {table.tiers[t].mean_ms(), table.tiers[t].mean_quality()};
  const size_t weak = static_cast<size_t>(
    std::min_element(fixed.begin(), fixed.end(), [](auto& a, auto& b) { return a.cost < b.cost; })
    - fixed.begin());
  const size_t strong = static_cast<size_t>(
    std::max_element(fixed.begin(), fixed.end(), [](auto& a, auto& b) { return a.cost < b.cost; })
    - fixed.begin());
  const double c_min = fixed[weak].cost, c_max = fixed[strong].cost;

  std::printf("## Reference world: %s (%zu evaluation prompts)\n\n", table.source.c_str(), N);
  std::printf(
    "| tier | quality | ROUGE-L | ms per answer | tokens per answer |\n|---|---|---|---|---|\n");
  for (size_t t = 0; t < T; ++t) {
    const auto& x = table.tiers[t];
    std::vector<double> tok(x.tokens.begin(), x.tokens.end());
    std::printf("| %s | %.4f | %.4f | %.1f | %.1f |\n", x.name.c_str(), x.mean_quality(),
                x.mean_rouge_l(), x.mean_ms(), mean(tok));
  }

  // Oracle points per λ, and the random router's point.
  std::set<double> lambdas;
  std::set<std::string> routers;
  std::set<int> seeds;
  for (const auto& r : runs) {
    lambdas.insert(r.lambda);
    routers.insert(r.router);
    seeds.insert(r.seed);
  }
  std::vector<qc_point> oracle_points;
  for (double l : lambdas) {
    double c = 0, q = 0;
    for (size_t i = 0; i < N; ++i) {
      size_t best = 0;
      for (size_t t = 1; t < T; ++t)
        if (table.tiers[t].quality[i] - l * table.tiers[t].mean_ms()
            > table.tiers[best].quality[i] - l * table.tiers[best].mean_ms())
          best = t;
      c += table.tiers[best].mean_ms();
      q += table.tiers[best].quality[i];
    }
    oracle_points.push_back({c / N, q / N});
  }
  qc_point random_point{};
  for (const auto& f : fixed) {
    random_point.cost += f.cost / T;
    random_point.quality += f.quality / T;
  }

  // Each router's points per seed.
  auto point_of = [&](const run& r) {
    double c = 0, q = 0;
    for (size_t k = 0; k < r.prompt.size(); ++k) {
      c += table.tiers[r.tier[k]].mean_ms();
      q += table.tiers[r.tier[k]].quality[r.prompt[k]];
    }
    return qc_point{c / r.prompt.size(), q / r.prompt.size()};
  };
  std::printf("\n## Quality–cost points (mean over %zu seeds)\n\n| λ (per ms) |", seeds.size());
  for (const auto& name : routers)
    std::printf(" %s ms | %s quality |", name.c_str(), name.c_str());
  std::printf(" oracle ms | oracle quality |\n|---|");
  for (size_t i = 0; i < routers.size(); ++i)
    std::printf("---|---|");
  std::printf("---|---|\n");
  size_t li = 0;
  for (double l : lambdas) {
    std::printf("| %g |", l);
    for (const auto& name : routers) {
      std::vector<double> c, q;
      for (const auto& r : runs)
        if (r.router == name && r.lambda == l) {
          auto p = point_of(r);
          c.push_back(p.cost);
          q.push_back(p.quality);
        }
      std::printf(" %.1f | %.4f |", mean(c), mean(q));
    }
    std::printf(" %.1f | %.4f |\n", oracle_points[li].cost, oracle_points[li].quality);
    ++li;
  }

  std::printf("\n## Router metrics (evaluation split; mean ± sd over seeds)\n\n");
  std::printf("| router | AIQ | APGR | CPT(50%%) | CPT(80%%) |");
  for (size_t t = 0; t < T; ++t)
    std::printf(" Δq at %s's cost |", table.tiers[t].name.c_str());
  std::printf("\n|---|---|---|---|---|");
  for (size_t t = 0; t < T; ++t)
    std::printf("---|");
  std::printf("\n");
  auto row = [&](const std::string& name, const std::vector<std::vector<qc_point>>& per_seed) {
    std::vector<double> a, g, c50, c80;
    std::vector<std::vector<double>> dq(T);
    for (const auto& pts : per_seed) {
      a.push_back(aiq(pts, fixed[weak], c_min, c_max));
      auto gr = gap_recovered(pts, fixed[weak], fixed[strong]);
      g.push_back(gr.apgr);
      c50.push_back(gr.cpt50 ? *gr.cpt50 : 1.0 / 0.0);
      c80.push_back(gr.cpt80 ? *gr.cpt80 : 1.0 / 0.0);
      auto pts_floor = pts;
      pts_floor.push_back(fixed[weak]);
      auto hull = upper_hull(pts_floor);
      for (size_t t = 0; t < T; ++t)
        dq[t].push_back(hull_quality(hull, fixed[t].cost) - fixed[t].quality);
    }
    auto cpt = [](const std::vector<double>& v) {
      const double m = mean(v);
      return std::isfinite(m) ? fmt_cpt(m) : fmt_cpt(std::nullopt);
    };
    std::printf("| %s | %.5f ± %.5f | %.3f ± %.3f | %s | %s |", name.c_str(), mean(a), stdev(a),
                mean(g), stdev(g), cpt(c50).c_str(), cpt(c80).c_str());
    for (size_t t = 0; t < T; ++t)
      std::printf(" %+.5f |", mean(dq[t]));
    std::printf("\n");
    return mean(a);
  };
  row("fixed: " + table.tiers[strong].name, {{fixed[strong]}});
  row("Zero router (fixed-tier hull)", {fixed});
  row("random", {{random_point}});
  for (const auto& name : routers) {
    std::vector<std::vector<qc_point>> per_seed;
    for (int s : seeds) {
      std::vector<qc_point> pts;
      for (const auto& r : runs)
        if (r.router == name && r.seed == s)
          pts.push_back(point_of(r));
      per_seed.push_back(pts);
    }
    row(name, per_seed);
  }
  row("oracle (per prompt)", {oracle_points});

  std::printf("\n## Cumulative regret against the per-prompt oracle (mean over seeds)\n\n| λ |");
  for (const auto& name : routers)
    std::printf(" %s |", name.c_str());
  std::printf(" best fixed tier |\n|---|");
  for (size_t i = 0; i <= routers.size(); ++i)
    std::printf("---|");
  std::printf("\n");
  for (double l : lambdas) {
    auto reward = [&](size_t t, size_t i) {
      return table.tiers[t].quality[i] - l * table.tiers[t].mean_ms();
    };
    auto oracle = [&](size_t i) {
      double b = -1e300;
      for (size_t t = 0; t < T; ++t)
        b = std::max(b, reward(t, i));
      return b;
    };
    std::printf("| %g |", l);
    size_t n_req = 0;
    for (const auto& name : routers) {
      std::vector<double> regret;
      for (const auto& r : runs)
        if (r.router == name && r.lambda == l) {
          double s = 0;
          for (size_t k = 0; k < r.prompt.size(); ++k)
            s += oracle(r.prompt[k]) - reward(r.tier[k], r.prompt[k]);
          regret.push_back(s);
          n_req = r.prompt.size();
        }
      std::printf(" %.2f |", mean(regret));
    }
    double best = 1e300;
    for (size_t t = 0; t < T; ++t) {
      double s = 0;
      for (size_t i = 0; i < N; ++i)
        s += oracle(i) - reward(t, i);
      best = std::min(best, s * static_cast<double>(n_req) / static_cast<double>(N));
    }
    std::printf(" %.2f |\n", best);
  }

  // Per domain at one λ: where the routers gain or lose against the best
  // fixed tier of that domain in hindsight.
  const double dl =
    domain_lambda >= 0 ? domain_lambda : *std::next(lambdas.begin(), lambdas.size() / 2);
  std::printf("\n## Per domain at λ = %g (mean reward per request; 12 largest domains)\n\n", dl);
  std::map<std::string, std::vector<size_t>> by_domain;
  for (size_t i = 0; i < N; ++i)
    by_domain[table.domains[i]].push_back(i);
  std::vector<std::pair<std::string, std::vector<size_t>>> doms(by_domain.begin(), by_domain.end());
  std::sort(doms.begin(), doms.end(),
            [](auto& a, auto& b) { return a.second.size() > b.second.size(); });
  std::printf("| domain | n | best fixed tier | its reward |");
  for (const auto& name : routers)
    std::printf(" %s |", name.c_str());
  std::printf("\n|---|---|---|---|");
  for (size_t i = 0; i < routers.size(); ++i)
    std::printf("---|");
  std::printf("\n");
  for (size_t d = 0; d < std::min<size_t>(12, doms.size()); ++d) {
    const auto& [domain, cols] = doms[d];
    std::set<size_t> in(cols.begin(), cols.end());
    size_t best = 0;
    double best_r = -1e300;
    for (size_t t = 0; t < T; ++t) {
      double s = 0;
      for (size_t i : cols)
        s += table.tiers[t].quality[i] - dl * table.tiers[t].mean_ms();
      if (s / cols.size() > best_r) {
        best_r = s / cols.size();
        best = t;
      }
    }
    std::printf("| %s | %zu | %s | %.5f |", domain.c_str(), cols.size(),
                table.tiers[best].name.c_str(), best_r);
    for (const auto& name : routers) {
      double s = 0;
      size_t n = 0;
      for (const auto& r : runs)
        if (r.router == name && r.lambda == dl)
          for (size_t k = 0; k < r.prompt.size(); ++k)
            if (in.count(r.prompt[k])) {
              s +=
                table.tiers[r.tier[k]].quality[r.prompt[k]] - dl * table.tiers[r.tier[k]].mean_ms();
              ++n;
            }
      std::printf(" %.5f |", n ? s / n : 0.0);
    }
    std::printf("\n");
  }
  return 0;
}
