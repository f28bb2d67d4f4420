#include "node/stats.hpp"

#include <doctest/doctest.h>

#include <set>
#include <sstream>

using namespace shoal;
using namespace shoal::node;

namespace {

/// A node with two tiers, one engine, a memory pool and federation on.
stats_snapshot sample_snapshot(bool federation) {
  stats_snapshot s;
  s.node = "edge-1";
  s.tiers.resize(2);
  s.tiers[0].name = "small";
  s.tiers[0].cost = 0.05;
  s.tiers[1].name = "large";
  s.tiers[1].cost = 0.2;
  s.now_ms = 10'000;
  s.telemetry.started_ms = 4'000;
  s.telemetry.n_routed = 10;
  s.telemetry.tier_routed = {7, 3};
  s.telemetry.n_feedback = 4;
  s.telemetry.tier_feedback = {3, 1};
  s.telemetry.tier_quality_sum = {2.4, 0.9};
  s.telemetry.reward_sum = 2.95;
  s.telemetry.latency_count = 10;
  s.telemetry.latency_sum_s = 0.005;
  s.telemetry.p99_s = 0.002;
  s.telemetry.bucket_le_s = {0.0005, 0.001};
  s.telemetry.bucket_counts = {4, 9};
  s.router.n_patterns = 6;
  s.witness.n_records = 10;
  actors::engine_stats e;
  e.tier = "large";
  e.running = 2;
  e.kv.prefix_hits = 5;
  e.kv.page_tokens = 16;
  e.kv.page_bytes_recent = 4096;
  s.engines.push_back(e);
  s.memory = actors::memory_stats{1 << 20, 1 << 19, 1 << 18, 100, 28, 1, 2, 3};
  s.http_requests = 12;
  s.http_errors = {{"invalid_argument", 2}};
  if (federation) {
    s.fed.emplace();
    s.fed->connected = true;
    s.fed->stream_seq = 17;
    s.fed->dropped_untrusted = 1;
    s.fed->peers.push_back({"edge-2", 0xabc, 9'000, {}});
    s.digest.emplace();
    s.digest->origins.push_back({0xabc, 5, 8, 0x1234});
  }
  return s;
}

} // namespace

TEST_CASE("stats table: every statistic is declared once with help, and shows somewhere") {
  std::set<std::string> metrics, paths;
  for (const auto& d : stats_table()) {
    CHECK(d.help != nullptr);
    CHECK(std::string(d.help).size() > 3);
    CHECK((d.metric != nullptr || d.json != nullptr));
    CHECK(d.read);
    if (d.metric != nullptr) {
      CHECK(std::string(d.metric).starts_with("shoal_"));
      // A family may be read by one entry only (labels tell its series apart).
      CHECK_MESSAGE(metrics.insert(d.metric).second, d.metric);
      if (d.kind == stat_kind::counter)
        CHECK_MESSAGE(
          (std::string(d.metric).ends_with("_total") || std::string(d.metric).ends_with("_sum")),
          d.metric);
    }
    if (d.json != nullptr)
      CHECK_MESSAGE(paths.insert(d.json).second, d.json);
  }
}

TEST_CASE("/v1/stats JSON: tiers and engines by name, sections present even when empty") {
  auto j = render_stats_json(sample_snapshot(false));
  CHECK(j["node"] == "edge-1");
  CHECK(j["uptime_s"] == doctest::Approx(6.0));
  CHECK(j["requests"] == 10);
  REQUIRE(j["tiers"].size() == 2);
  CHECK(j["tiers"][0]["name"] == "small");
  CHECK(j["tiers"][0]["routed"] == 7);
  CHECK(j["tiers"][0]["share"] == doctest::Approx(0.7));
  CHECK(j["tiers"][0]["mean_quality"] == doctest::Approx(0.8));
  CHECK(j["tiers"][1]["cost"] == doctest::Approx(0.2));
  CHECK(j["mean_reward"] == doctest::Approx(2.95 / 4));
  CHECK(j["route_latency_ms"]["p99"] == doctest::Approx(2.0));
  CHECK(j["route_latency_ms"]["mean"] == doctest::Approx(0.5));
  REQUIRE(j["engines"].size() == 1);
  CHECK(j["engines"][0]["tier"] == "large");
  CHECK(j["engines"][0]["running"] == 2);
  CHECK(j["engines"][0]["kv"]["prefix_hits"] == 5);
  CHECK(j["memory"]["used_by"]["kv"] == (1 << 18));
  CHECK(j["http"]["errors"]["invalid_argument"] == 2);
  CHECK(j["federation"] == nlohmann::json{{"enabled", false}});

  auto bare = sample_snapshot(false);
  bare.engines.clear();
  bare.memory.reset();
  bare.http_errors.clear();
  auto k = render_stats_json(bare);
  CHECK(k["engines"] == nlohmann::json::array());
  CHECK(k["memory"] == nlohmann::json::object());
  CHECK(k["http"]["errors"] == nlohmann::json::object());
}

TEST_CASE("/v1/stats JSON: federation with its peers, origins and drops") {
  auto j = render_stats_json(sample_snapshot(true));
  const auto& f = j["federation"];
  CHECK(f["enabled"] == true);
  CHECK(f["connected"] == true);
  CHECK(f["stream_seq"] == 17);
  CHECK(f["dropped"]["untrusted"] == 1);
  CHECK(f["dropped"]["invalid"] == 0);
  REQUIRE(f["peers"].size() == 1);
  CHECK(f["peers"][0]["name"] == "edge-2");
  CHECK(f["peers"][0]["last_seen_ms"] == 9000);
  REQUIRE(f["origins"].size() == 1);
  CHECK(f["origins"][0]["contributions"] == 5);
  CHECK(f["origins"][0]["node"] == proto::format_request_id(0xabc));
  CHECK(f["origins"][0]["hash"] == proto::format_request_id(0x1234));
}

TEST_CASE("/metrics: one HELP and TYPE per family, node label first, histograms complete") {
  auto text = render_metrics(sample_snapshot(true));
  std::istringstream in(text);
  std::set<std::string> typed;
  std::string line;
  size_t n_series = 0;
  while (std::getline(in, line)) {
    if (line.starts_with("# TYPE ")) {
      auto name = line.substr(7, line.find(' ', 7) - 7);
      CHECK_MESSAGE(typed.insert(name).second, name);
      continue;
    }
    if (line.starts_with("#"))
      continue;
    ++n_series;
    CHECK_MESSAGE(line.find("{node=\"edge-1\"") != std::string::npos, line);
  }
  CHECK(n_series > 50);
  CHECK(text.find("shoal_route_requests_total{node=\"edge-1\",tier=\"large\"} 3\n")
        != std::string::npos);
  CHECK(text.find("shoal_route_latency_seconds_bucket{node=\"edge-1\",le=\"0.0005\"} 4\n")
        != std::string::npos);
  CHECK(text.find("shoal_route_latency_seconds_bucket{node=\"edge-1\",le=\"+Inf\"} 10\n")
        != std::string::npos);
  CHECK(text.find("shoal_route_latency_seconds_count{node=\"edge-1\"} 10\n") != std::string::npos);
  CHECK(text.find("shoal_federation_connected{node=\"edge-1\"} 1\n") != std::string::npos);
  CHECK(text.find("shoal_kv_prefix_hits_total{node=\"edge-1\",tier=\"large\"} 5\n")
        != std::string::npos);
  CHECK(text.find("shoal_http_errors_total{node=\"edge-1\",code=\"invalid_argument\"} 2\n")
        != std::string::npos);
  // SONA did not answer: its families are left out, the rest still comes.
  CHECK(text.find("shoal_sona_") == std::string::npos);
  CHECK(render_metrics(sample_snapshot(false)).find("shoal_federation_") == std::string::npos);
}
