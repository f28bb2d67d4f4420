// End-to-end tests of the real `shoal` binary: HTTP API, bad input, restart,
// signals, configuration errors and replay. Label: integration.
#include "node_process.hpp"
#include "sim/quality_table.hpp"

#include "learn/router_v2.hpp"
#include "proto/records.hpp"
#include "store/environment.hpp"
#include "store/policy_table.hpp"

#include <doctest/doctest.h>

#include <csignal>
#include <fstream>
#include <filesystem>
#include <set>
#include <sstream>
#include <thread>

using namespace shoal::testing;
namespace learn = shoal::learn;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

/// Starts a node or fails the test with the node's log.
std::unique_ptr<node_process> must_start(const std::filesystem::path& dir,
                                         const std::vector<std::string>& args = {}) {
  std::string log;
  auto node = node_process::start(dir, args, &log);
  INFO("node log:\n" << log);
  REQUIRE(node != nullptr);
  return node;
}

json must_get(httplib::Client& c, const std::string& path) {
  auto r = c.Get(path);
  REQUIRE(r);
  REQUIRE(r->status == 200);
  auto j = body_json(r);
  REQUIRE_FALSE(j.is_discarded());
  return j;
}

json must_route(httplib::Client& c, const std::string& text) {
  auto r = post(c, "/v1/route", json{{"text", text}}.dump());
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == 200);
  return body_json(r);
}

/// Checks a 4xx answer with the error shape {"error": {"code", "message"}}.
void check_error(const httplib::Result& r, int status, const std::string& code) {
  REQUIRE(r);
  INFO("body: " << r->body);
  CHECK(r->status == status);
  auto j = body_json(r);
  REQUIRE(j.is_object());
  REQUIRE(j.contains("error"));
  CHECK(j["error"]["code"] == code);
  REQUIRE(j["error"]["message"].is_string());
  CHECK_FALSE(j["error"]["message"].get<std::string>().empty());
}

std::string sixteen_words(int i) {
  static const char* words[] = {"library",  "daemon",  "python", "font",  "kernel", "editor",
                                "compiler", "network", "audio",  "image", "game",   "shell",
                                "database", "server",  "client", "parser"};
  std::string s;
  for (int j = 0; j < 6; ++j) {
    if (j)
      s += ' ';
    s += words[(i * 7 + j * 3 + i / 16) % 16];
  }
  return s + " tool number " + std::to_string(i);
}

/// A prompts.jsonl of n prompts in four domains, in `dir`.
std::filesystem::path write_prompts(const std::filesystem::path& dir, int n) {
  auto path = dir / "prompts.jsonl";
  std::ofstream out(path);
  const char* domains[] = {"libs", "doc", "games", "net"};
  for (int i = 0; i < n; ++i)
    out << json{{"id", "p" + std::to_string(i)},
                {"text", sixteen_words(i)},
                {"domain", domains[i % 4]}}
             .dump()
        << '\n';
  return path;
}

} // namespace

TEST_CASE("the node routes text, accepts feedback and reports stats, metrics and health") {
  temp_dir dir;
  auto node = must_start(dir.path(), {"--set", "router.seed=1"});
  auto c = node->client();

  CHECK(must_get(c, "/healthz")["status"] == "ok");

  auto d = must_route(c, "GNU C library: shared libraries and timezone data");
  REQUIRE(d["request_id"].is_string());
  CHECK(d["request_id"].get<std::string>().size() == 16);
  std::set<std::string> tiers{"demo-tiny", "demo-15m", "demo-110m", "demo-260m"};
  CHECK(tiers.count(d["tier"].get<std::string>()) == 1);
  CHECK(d["confidence"].get<double>() >= 0.0);
  CHECK(d["confidence"].get<double>() <= 1.0);
  CHECK(d["new_pattern"] == true); // the bank was empty
  CHECK(d["neighbors"].is_array());

  // A near-duplicate joins the first pattern and lists it as a neighbour.
  auto d2 = must_route(c, "GNU C library: shared libraries and time zone data");
  CHECK(d2["new_pattern"] == false);
  CHECK(d2["pattern_id"] == d["pattern_id"]);
  REQUIRE(d2["neighbors"].size() >= 1);
  CHECK(d2["neighbors"][0]["pattern_id"] == d["pattern_id"]);
  CHECK(d2["neighbors"][0]["similarity"].get<double>() > 0.5);

  auto fb = post(c, "/v1/feedback", json{{"request_id", d["request_id"]}, {"quality", 0.8}}.dump());
  REQUIRE(fb);
  INFO(fb->body);
  REQUIRE(fb->status == 200);
  CHECK(body_json(fb)["accepted"] == true);
  CHECK(body_json(fb)["tier"] == d["tier"]);

  // The same request cannot be rated twice.
  check_error(
    post(c, "/v1/feedback", json{{"request_id", d["request_id"]}, {"quality", 0.2}}.dump()), 409,
    "conflict");

  // A valid embedding routes too (dimension from the config: 384).
  std::vector<float> e(384, 0.0f);
  e[7] = 1.0f;
  e[300] = -2.0f;
  auto de =
    post(c, "/v1/route", json{{"embedding", e}, {"session_id", "s1"}, {"user", "u"}}.dump());
  REQUIRE(de);
  CHECK(de->status == 200);

  auto stats = must_get(c, "/v1/stats");
  CHECK(stats["requests"] == 3);
  CHECK(stats["patterns"] == 2);
  CHECK(stats["feedback"] == 1);
  REQUIRE(stats["tiers"].size() == 4);
  uint64_t routed = 0;
  for (auto& t : stats["tiers"])
    routed += t["routed"].get<uint64_t>();
  CHECK(routed == 3);
  CHECK(stats["route_latency_ms"]["count"] == 3);
  CHECK(stats["route_latency_ms"]["p99"].get<double>() > 0.0);

  auto m = c.Get("/metrics");
  REQUIRE(m);
  CHECK(m->status == 200);
  CHECK(m->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0) == 0);
  CHECK(m->body.find("# TYPE shoal_route_requests_total counter") != std::string::npos);
  CHECK(m->body.find("shoal_patterns{node=\"shoal-1\"} 2") != std::string::npos);
  CHECK(m->body.find("shoal_route_latency_seconds_count{node=\"shoal-1\"} 3") != std::string::npos);
  CHECK(m->body.find("shoal_route_latency_seconds_bucket{node=\"shoal-1\",le=\"+Inf\"} 3")
        != std::string::npos);
  // SONA's loops: the one feedback took one instant step; nothing trained yet.
  CHECK(m->body.find("# TYPE shoal_sona_instant_steps_total counter") != std::string::npos);
  CHECK(m->body.find("shoal_sona_instant_steps_total{node=\"shoal-1\"} 1\n") != std::string::npos);
  CHECK(m->body.find("shoal_sona_background_runs_total{node=\"shoal-1\"} 0\n")
        != std::string::npos);
  CHECK(m->body.find("shoal_sona_v2_ready{node=\"shoal-1\"} 0\n") != std::string::npos);

  CHECK(node->stop(SIGINT) == 0);
}

TEST_CASE("every malformed route request gets a 4xx JSON error and nothing is stored") {
  temp_dir dir;
  auto node = must_start(
    dir.path(), {"--set", "http.max_body_bytes=4096", "--set", "witness.flush_interval_ms=1"});
  auto c = node->client();
  std::vector<float> wrong_dim(10, 0.5f);
  std::vector<float> zeros(384, 0.0f);
  std::string with_number_list;
  {
    json e = json::array();
    for (int i = 0; i < 383; ++i)
      e.push_back(0.1);
    e.push_back("x");
    with_number_list = json{{"embedding", e}}.dump();
  }
  std::string huge_number;
  {
    std::string e = "[1e999";
    for (int i = 1; i < 384; ++i)
      e += ",0.1";
    huge_number = "{\"embedding\":" + e + "]}";
  }
  std::string nan_literal;
  {
    std::string e = "[NaN";
    for (int i = 1; i < 384; ++i)
      e += ",0.1";
    nan_literal = "{\"embedding\":" + e + "]}";
  }
  const std::vector<std::pair<const char*, std::string>> bad = {
    {"malformed JSON", "{\"text\": \"abc\""},
    {"not JSON at all", "hello"},
    {"empty body", ""},
    {"array instead of object", "[\"text\"]"},
    {"text is a number", R"({"text": 42})"},
    {"text is an object", R"({"text": {"a": 1}})"},
    {"empty text", R"({"text": ""})"},
    {"whitespace text", R"({"text": "  \n\t "})"},
    {"text without words", R"({"text": "!!! ??? ..."})"},
    {"neither text nor embedding", R"({"user": "u"})"},
    {"both text and embedding", json{{"text", "a b"}, {"embedding", zeros}}.dump()},
    {"embedding not an array", R"({"embedding": "0.1,0.2"})"},
    {"embedding of wrong dimension", json{{"embedding", wrong_dim}}.dump()},
    {"embedding with a string", with_number_list},
    {"embedding with 1e999", huge_number},
    {"embedding with NaN literal", nan_literal},
    {"zero embedding", json{{"embedding", zeros}}.dump()},
    {"session_id not a string", R"({"text": "a b", "session_id": 5})"},
    {"user too long", json{{"text", "a b"}, {"user", std::string(300, 'u')}}.dump()},
    {"latency budget not a number", R"({"text": "a b", "latency_budget_ms": "fast"})"},
    {"negative latency budget", R"({"text": "a b", "latency_budget_ms": -5})"},
    {"latency budget over a day", R"({"text": "a b", "latency_budget_ms": 1e9})"},
    {"temperature above 2", R"({"text": "a b", "temperature": 2.5})"},
    {"temperature a string", R"({"text": "a b", "temperature": "hot"})"},
    {"top_p of 0", R"({"text": "a b", "top_p": 0})"},
    {"top_p above 1", R"({"text": "a b", "top_p": 1.01})"},
  };
  for (const auto& [what, body] : bad) {
    CAPTURE(what);
    check_error(post(c, "/v1/route", body), 400, "invalid_argument");
  }
  check_error(post(c, "/v1/route", json{{"text", std::string(5000, 'a')}}.dump()), 413,
              "payload_too_large");
  check_error(c.Get("/v1/nothing-here"), 404, "not_found");
  check_error(post(c, "/v1/routes", R"({"text": "a"})"), 404, "not_found");

  // The node still serves, and none of the above left a trace.
  std::this_thread::sleep_for(50ms);
  auto stats = must_get(c, "/v1/stats");
  CHECK(stats["requests"] == 0);
  CHECK(stats["patterns"] == 0);
  CHECK(stats["witness"]["records"] == 0);
  CHECK(stats["witness"]["pending"] == 0);
  CHECK(stats["http"]["errors"]["invalid_argument"] == bad.size());
  must_route(c, "the node keeps serving after bad input");
  CHECK(node->stop(SIGINT) == 0);
}

TEST_CASE("every malformed feedback gets a 4xx JSON error and changes nothing") {
  temp_dir dir;
  auto node = must_start(dir.path());
  auto c = node->client();
  auto d = must_route(c, "X11 window manager with tabs and tiling");
  std::string id = d["request_id"];
  const std::vector<std::pair<const char*, std::string>> bad = {
    {"malformed JSON", "{\"request_id\": "},
    {"not an object", "3"},
    {"request_id missing", R"({"quality": 0.5})"},
    {"request_id a number", R"({"request_id": 12, "quality": 0.5})"},
    {"request_id not hex", R"({"request_id": "zzzzzzzzzzzzzzzz", "quality": 0.5})"},
    {"request_id too short", R"({"request_id": "abc", "quality": 0.5})"},
    {"quality missing", json{{"request_id", id}}.dump()},
    {"quality above 1", json{{"request_id", id}, {"quality", 1.5}}.dump()},
    {"quality below 0", json{{"request_id", id}, {"quality", -0.1}}.dump()},
    {"quality a string", json{{"request_id", id}, {"quality", "high"}}.dump()},
    {"quality null", json{{"request_id", id}, {"quality", nullptr}}.dump()},
    {"completion_tokens negative",
     json{{"request_id", id}, {"quality", 0.5}, {"completion_tokens", -3}}.dump()},
    {"completion_tokens a fraction",
     json{{"request_id", id}, {"quality", 0.5}, {"completion_tokens", 2.5}}.dump()},
    {"prompt_tokens a string",
     json{{"request_id", id}, {"quality", 0.5}, {"prompt_tokens", "many"}}.dump()},
  };
  for (const auto& [what, body] : bad) {
    CAPTURE(what);
    check_error(post(c, "/v1/feedback", body), 400, "invalid_argument");
  }
  check_error(
    post(c, "/v1/feedback", json{{"request_id", "00000000000000ff"}, {"quality", 0.5}}.dump()), 404,
    "not_found");

  auto stats = must_get(c, "/v1/stats");
  CHECK(stats["feedback"] == 0);
  // The rejected attempts did not use up the request: real feedback works.
  auto ok = post(c, "/v1/feedback", json{{"request_id", id}, {"quality", 1.0}}.dump());
  REQUIRE(ok);
  CHECK(ok->status == 200);
  CHECK(must_get(c, "/v1/stats")["feedback"] == 1);
  CHECK(node->stop(SIGINT) == 0);
}

TEST_CASE("a restart keeps the learned patterns and joins feedback through the witness log") {
  temp_dir dir;
  std::vector<std::string> ids;
  std::vector<uint64_t> patterns;
  json before;
  {
    auto node = must_start(dir.path(), {"--set", "router.seed=3"});
    auto c = node->client();
    for (int i = 0; i < 200; ++i) {
      auto d = must_route(c, sixteen_words(i));
      ids.push_back(d["request_id"]);
      patterns.push_back(d["pattern_id"]);
    }
    // Rate the first half now, the second half after the restart.
    for (int i = 0; i < 100; ++i) {
      auto r = post(c, "/v1/feedback", json{{"request_id", ids[i]}, {"quality", 0.9}}.dump());
      REQUIRE(r);
      REQUIRE(r->status == 200);
    }
    before = must_get(c, "/v1/stats");
    CHECK(node->stop(SIGINT) == 0);
  }
  auto node = must_start(dir.path(), {"--set", "router.seed=3"});
  auto c = node->client();
  auto after = must_get(c, "/v1/stats");
  CHECK(after["patterns"] == before["patterns"]);
  CHECK(after["patterns"].get<uint64_t>() > 1);
  CHECK(after["index_rebuilds"] == 0); // the checkpoint written at shutdown was used

  // The same text joins its old pattern instead of creating one.
  auto d = must_route(c, sixteen_words(150));
  CHECK(d["new_pattern"] == false);
  CHECK(d["pattern_id"] == patterns[150]);

  // Feedback for requests routed before the restart joins their witness
  // records; rated ones stay rated.
  for (int i = 100; i < 200; ++i) {
    auto r = post(c, "/v1/feedback", json{{"request_id", ids[i]}, {"quality", 0.5}}.dump());
    REQUIRE(r);
    INFO(r->body);
    REQUIRE(r->status == 200);
  }
  check_error(post(c, "/v1/feedback", json{{"request_id", ids[0]}, {"quality", 0.5}}.dump()), 409,
              "conflict");
  CHECK(node->stop(SIGTERM) == 0);
}

TEST_CASE("the pattern index is rebuilt from LMDB when its file is corrupt") {
  temp_dir dir;
  {
    auto node = must_start(dir.path());
    auto c = node->client();
    for (int i = 0; i < 50; ++i)
      must_route(c, sixteen_words(i));
    CHECK(node->stop(SIGINT) == 0);
  }
  auto index = dir.path() / "patterns.hnsw";
  REQUIRE(std::filesystem::exists(index));
  {
    std::fstream f(index, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.write("garbage!", 8);
  }
  auto node = must_start(dir.path());
  auto c = node->client();
  auto stats = must_get(c, "/v1/stats");
  CHECK(stats["index_rebuilds"] == 1);
  CHECK(stats["patterns"].get<uint64_t>() > 1);
  CHECK(must_route(c, sixteen_words(7))["new_pattern"] == false);
  CHECK(node->stop(SIGINT) == 0);
}

TEST_CASE("SIGTERM commits pending witness records before the node exits") {
  temp_dir dir;
  std::vector<std::string> ids;
  const std::vector<std::string> slow_witness{"--set", "witness.flush_interval_ms=60000", "--set",
                                              "witness.batch_max=100000"};
  {
    auto node = must_start(dir.path(), slow_witness);
    auto c = node->client();
    for (int i = 0; i < 30; ++i)
      ids.push_back(must_route(c, sixteen_words(i))["request_id"]);
    CHECK(must_get(c, "/v1/stats")["witness"]["pending"] == 30);
    CHECK(node->stop(SIGTERM) == 0);
  }
  auto node = must_start(dir.path(), slow_witness);
  auto c = node->client();
  for (const auto& id : ids) {
    auto r = post(c, "/v1/feedback", json{{"request_id", id}, {"quality", 0.7}}.dump());
    REQUIRE(r);
    INFO(r->body);
    CHECK(r->status == 200);
  }
  CHECK(node->stop(SIGINT) == 0);
}

TEST_CASE("an invalid config exits with code 2 and names the key") {
  temp_dir dir;
  auto data = "store.data_dir=" + (dir.path() / "data").string();
  {
    auto r = run_shoal({"node", "--set", data, "--set", "router.k=0"});
    INFO(r.output);
    CHECK(r.exit_code == 2);
    CHECK(r.output.find("router.k") != std::string::npos);
  }
  {
    auto r = run_shoal({"node", "--set", data, "--set", "router.no_such_key=1"});
    INFO(r.output);
    CHECK(r.exit_code == 2);
    CHECK(r.output.find("router.no_such_key") != std::string::npos);
  }
  {
    auto r = run_shoal({"node", "--set", data}, {"SHOAL_ROUTER_K=abc"});
    INFO(r.output);
    CHECK(r.exit_code == 2);
    CHECK(r.output.find("router.k") != std::string::npos);
  }
  {
    auto toml = dir.path() / "bad.toml";
    std::ofstream(toml) << "[http]\nport = 8080\nmystery = true\n";
    auto r = run_shoal({"node", "--config", toml.string(), "--set", data});
    INFO(r.output);
    CHECK(r.exit_code == 2);
    CHECK(r.output.find("http.mystery") != std::string::npos);
  }
  {
    auto toml = dir.path() / "wrong-type.toml";
    std::ofstream(toml) << "[http]\nport = \"eighty\"\n";
    auto r = run_shoal({"config", "--check", toml.string()});
    INFO(r.output);
    CHECK(r.exit_code == 2);
    CHECK(r.output.find("http.port") != std::string::npos);
  }
  // Nothing was created for a node that never started.
  CHECK_FALSE(std::filesystem::exists(dir.path() / "data"));
  // The shipped config is valid.
  auto ok = run_shoal({"config", "--check", std::string(SHOAL_SOURCE_DIR) + "/configs/node.toml"});
  INFO(ok.output);
  CHECK(ok.exit_code == 0);
}

TEST_CASE("shoal replay prints a learning curve and the node learns from its feedback") {
  temp_dir dir;
  auto prompts = write_prompts(dir.path(), 400);
  auto node = must_start(dir.path() / "data", {"--set", "router.seed=7"});
  auto curve = dir.path() / "curve.csv";
  auto r = run_shoal({"replay", "--url", node->url(), "--prompts", prompts.string(), "--window",
                      "100", "--curve-out", curve.string(), "--eval-seed", "1"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("oracle") != std::string::npos);
  std::ifstream in(curve);
  std::string line;
  int rows = 0;
  while (std::getline(in, line))
    ++rows;
  CHECK(rows == 1 + 4); // header + one row per window of 100
  auto c = node->client();
  auto stats = must_get(c, "/v1/stats");
  CHECK(stats["requests"] == 400);
  CHECK(stats["feedback"] == 400);

  // With latency budgets: the node takes every budget, and the evaluator
  // cuts the answers of tiers too slow for them — the largest tier, fine
  // without budgets, becomes the worst fixed choice.
  auto largest_baseline = [](const std::string& out) {
    auto at = out.find("demo-260m ", out.find("baseline, one fixed tier"));
    REQUIRE(at != std::string::npos);
    return std::stod(out.substr(at + 10));
  };
  auto rt = run_shoal({"replay", "--url", node->url(), "--prompts", prompts.string(), "--window",
                       "100", "--eval-seed", "1", "--eval-ms-per-token", "150", "--budget-share",
                       "1", "--budget-min-ms", "300", "--budget-max-ms", "1000"});
  INFO(rt.output);
  REQUIRE(rt.exit_code == 0);
  CHECK(rt.output.find("latency budgets: 100% of requests") != std::string::npos);
  CHECK(largest_baseline(rt.output) < largest_baseline(r.output) - 50);
  stats = must_get(c, "/v1/stats");
  CHECK(stats["requests"] == 800);
  CHECK(stats["feedback"] == 800);
  auto inverted =
    run_shoal({"replay", "--url", node->url(), "--prompts", prompts.string(), "--budget-share", "1",
               "--budget-min-ms", "5000", "--budget-max-ms", "1000"});
  CHECK(inverted.exit_code != 0);
  CHECK(inverted.output.find("--budget-min-ms") != std::string::npos);
  CHECK(node->stop(SIGINT) == 0);

  // Bad prompt files are reported, not crashed on.
  auto bad = dir.path() / "bad.jsonl";
  std::ofstream(bad) << "{\"id\": 1, \"text\": \n";
  auto node2 = must_start(dir.path() / "data");
  auto rb = run_shoal({"replay", "--url", node2->url(), "--prompts", bad.string()});
  INFO(rb.output);
  CHECK(rb.exit_code != 0);
  CHECK(rb.output.find("bad.jsonl") != std::string::npos);
  CHECK(node2->stop(SIGINT) == 0);
}

TEST_CASE("shoal replay --evaluator reference measures the trained tiers through the API, "
          "caches the table and feeds back the measured quality") {
  temp_dir dir;
  // Two trained tiers (models/) and the first 12 evaluation documents.
  const std::string src = SHOAL_SOURCE_DIR;
  auto config = dir.path() / "node.toml";
  {
    std::ofstream out(config);
    for (const char* t : {"shoal-deb-xs", "shoal-deb-s"})
      out << "[[tiers]]\nname = \"" << t << "\"\nmodel = \"" << src << "/models/" << t
          << ".q8_0.gguf\"\nn_ctx = 256\n\n";
  }
  auto docs = dir.path() / "eval.jsonl";
  {
    std::ifstream in(src + "/models/eval.jsonl");
    std::ofstream out(docs);
    std::string line;
    for (int i = 0; i < 12 && std::getline(in, line); ++i)
      out << line << "\n";
  }
  auto node = must_start(dir.path() / "data", {"--config", config.string()});
  auto table = dir.path() / "table.json";
  auto requests = dir.path() / "requests.csv";
  std::vector<std::string> args = {
    "replay",    "--url",       node->url(), "--evaluator",    "reference",
    "--prompts", docs.string(), "--table",   table.string(),   "--lambda",
    "0.001",     "--window",    "6",         "--requests-out", requests.string()};
  auto r = run_shoal(args);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("quality table: shoal-deb-s 12/12") != std::string::npos);
  auto tab = shoal::sim::load_quality_table(table.string());
  REQUIRE(tab);
  REQUIRE(tab->tiers.size() == 2);
  for (const auto& t : tab->tiers) {
    CAPTURE(t.name);
    for (size_t i = 0; i < 12; ++i) {
      CHECK(t.quality[i] > 0.0);
      CHECK(t.quality[i] <= 1.0);
      CHECK(t.scored[i] > 0);
      CHECK(t.ms[i] > 0.0);
      CHECK(t.rouge_l[i] >= 0.0);
    }
    CHECK_FALSE(t.fingerprint.empty());
  }
  // The feedback each request sent is the routed tier's quality on that prompt.
  std::ifstream rq(requests);
  std::string line;
  std::getline(rq, line);
  int rows = 0;
  while (std::getline(rq, line)) {
    std::stringstream ss(line);
    std::string request, id, domain, tier, quality;
    std::getline(ss, request, ',');
    std::getline(ss, id, ',');
    std::getline(ss, domain, ',');
    std::getline(ss, tier, ',');
    std::getline(ss, quality, ',');
    const size_t i = std::stoul(request);
    const auto& t = tab->tiers[tier == "shoal-deb-xs" ? 0 : 1];
    CHECK(tab->ids[i] == id);
    CHECK(std::stod(quality) == doctest::Approx(t.quality[i]).epsilon(1e-5));
    ++rows;
  }
  CHECK(rows == 12);
  auto c = node->client();
  CHECK(must_get(c, "/v1/stats")["feedback"] == 12);
  // A second replay takes the table from the cache (no progress lines).
  auto again = run_shoal(args);
  INFO(again.output);
  REQUIRE(again.exit_code == 0);
  CHECK(again.output.find("quality table:") == std::string::npos);
  CHECK(node->stop(SIGINT) == 0);
}

TEST_CASE("shoal learn shows the loops, a triggered background run trains router v2, a restart "
          "restores it") {
  temp_dir dir;
  auto prompts = write_prompts(dir.path(), 200);
  auto node = must_start(dir.path() / "data", {"--set", "router.seed=7"});
  auto r =
    run_shoal({"replay", "--url", node->url(), "--prompts", prompts.string(), "--window", "100"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto st = run_shoal({"learn", "status", "--url", node->url()});
  INFO(st.output);
  REQUIRE(st.exit_code == 0);
  auto j = json::parse(st.output, nullptr, false);
  REQUIRE(j.is_object());
  CHECK(j["router_v2"]["enabled"] == true);
  CHECK(j["router_v2"]["ready"] == false);
  CHECK(j["instant"]["steps"] == 200); // every feedback took an instant step
  CHECK(j["background"]["runs"] == 0);
  auto tr = run_shoal({"learn", "trigger", "background", "--url", node->url()});
  INFO(tr.output);
  REQUIRE(tr.exit_code == 0);
  j = json::parse(tr.output, nullptr, false);
  CHECK(j["background"]["runs"] == 1);
  CHECK(j["router_v2"]["ready"] == true);
  CHECK(j["background"]["trajectories"] == 200);
  // Bad triggers are refused with a reason; the node keeps serving.
  auto c = node->client();
  check_error(post(c, "/v1/learn/trigger", R"({"loop": "hourly"})"), 400, "invalid_argument");
  check_error(post(c, "/v1/learn/trigger", R"({"loop": 3})"), 400, "invalid_argument");
  auto bad = run_shoal({"learn", "trigger", "hourly", "--url", node->url()});
  CHECK(bad.exit_code != 0);
  // Trained, router v2 answers with sampling from its grid and a context
  // bucket (the replay reported completion lengths with its feedback).
  auto d = must_route(c, "still serving");
  INFO(d.dump());
  REQUIRE(d.contains("temperature"));
  REQUIRE(d.contains("top_p"));
  REQUIRE(d.contains("context_tokens"));
  const double t = d["temperature"], p = d["top_p"];
  CHECK(std::find(learn::sampling_temperatures.begin(), learn::sampling_temperatures.end(), t)
        != learn::sampling_temperatures.end());
  CHECK(std::find(learn::sampling_top_ps.begin(), learn::sampling_top_ps.end(), p)
        != learn::sampling_top_ps.end());
  const uint32_t ctx = d["context_tokens"];
  CHECK(std::find(learn::context_buckets.begin(), learn::context_buckets.end(), ctx)
        != learn::context_buckets.end());
  // A caller's own sampling stands, even off the grid.
  auto own =
    post(c, "/v1/route", json{{"text", "a b c"}, {"temperature", 0.33}, {"top_p", 0.5}}.dump());
  REQUIRE(own);
  REQUIRE(own->status == 200);
  auto oj = body_json(own);
  CHECK(oj["temperature"] == 0.33);
  CHECK(oj["top_p"] == 0.5);
  // Feedback may report the answer's usage.
  auto fb = post(c, "/v1/feedback",
                 json{{"request_id", d["request_id"]},
                      {"quality", 0.7},
                      {"prompt_tokens", 12},
                      {"completion_tokens", 300}}
                   .dump());
  REQUIRE(fb);
  CHECK(fb->status == 200);
  CHECK(node->stop(SIGINT) == 0);
  // The checkpoint in the policies table comes back at start.
  auto node2 = must_start(dir.path() / "data");
  auto s2 = run_shoal({"learn", "status", "--url", node2->url()});
  REQUIRE(s2.exit_code == 0);
  j = json::parse(s2.output, nullptr, false);
  CHECK(j["router_v2"]["ready"] == true);
  CHECK(j["router_v2"]["model_version"] == 1);
  CHECK(node2->stop(SIGINT) == 0);
}

TEST_CASE("a memory budget too small for router v2 refuses the start and says what to change") {
  temp_dir dir;
  auto r = run_shoal({"node", "--set", "store.data_dir=" + (dir.path() / "data").string(), "--set",
                      "memory.budget_mb=4", "--set", "http.port=0"});
  INFO(r.output);
  CHECK(r.exit_code != 0);
  CHECK(r.output.find("router v2 needs") != std::string::npos);
  CHECK(r.output.find("sona.v2 = false") != std::string::npos);
}

TEST_CASE("the deep loop archives old witness records and shoal witness read prints them") {
  temp_dir dir;
  auto node = must_start(dir.path() / "data", {"--set", "witness.archive_after_s=1", "--set",
                                               "witness.flush_interval_ms=1"});
  auto c = node->client();
  std::set<std::string> ids;
  for (int i = 0; i < 5; ++i)
    ids.insert(must_route(c, "archived request " + std::to_string(i))["request_id"]);
  std::this_thread::sleep_for(1100ms);
  auto tr = run_shoal({"learn", "trigger", "deep", "--url", node->url()});
  INFO(tr.output);
  REQUIRE(tr.exit_code == 0);
  CHECK(tr.output.find("5 records archived in 1 segments") != std::string::npos);
  CHECK(must_get(c, "/v1/stats")["witness"]["archived"] == 5);
  CHECK(node->stop(SIGINT) == 0);
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir.path() / "data" / "witness-archive"))
    files.push_back(e.path().string());
  REQUIRE(files.size() == 1);
  auto rd = run_shoal({"witness", "read", files[0]});
  INFO(rd.output);
  REQUIRE(rd.exit_code == 0);
  std::istringstream lines(rd.output);
  std::set<std::string> seen;
  for (std::string line; std::getline(lines, line);) {
    auto j = json::parse(line, nullptr, false);
    REQUIRE(j.is_object());
    seen.insert(j["request_id"].get<std::string>());
    CHECK(j["feedback"].is_null());
  }
  CHECK(seen == ids);
  // A damaged segment is named, with what is wrong with it.
  auto bad = dir.path() / "bad.shoalarc";
  std::ofstream(bad) << "not an archive";
  auto rb = run_shoal({"witness", "read", bad.string()});
  CHECK(rb.exit_code == 1);
  CHECK(rb.output.find("bad.shoalarc") != std::string::npos);
  CHECK(rb.output.find("bad magic") != std::string::npos);
}

namespace {

/// tests/fixtures/store-pre19 (a store written by Shoal 39e286d, before the
/// restructuring; see its README) copied into `dir`, with the config it
/// needs (its tiers, seal key and embedding dimension).
std::vector<std::string> pre19_store_in(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  const fs::path src = fs::path(SHOAL_SOURCE_DIR) / "tests/fixtures/store-pre19";
  fs::create_directories(dir / "shoal.lmdb");
  fs::copy_file(src / "shoal.lmdb/data.mdb", dir / "shoal.lmdb/data.mdb");
  for (const char* f : {"patterns.hnsw", "node.key"})
    fs::copy_file(src / f, dir / f);
  std::ofstream(dir / "node.toml") << R"(
[memory]
seal_key = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
budget_mb = 256
[[tiers]]
name = "demo-tiny"
cost = 0
params_m = 0.1
model = "demo:tiny:q8_0"
n_ctx = 256
max_sequences = 4
[[tiers]]
name = "small"
cost = 0.05
params_m = 15
model = ""
[[tiers]]
name = "medium"
cost = 0.1
params_m = 110
model = ""
[[tiers]]
name = "large"
cost = 0.2
params_m = 260
model = ""
)";
  return {"--config", (dir / "node.toml").string()};
}

/// What a node serving the pre19 store must still know.
void check_pre19_store(httplib::Client& c) {
  auto stats = must_get(c, "/v1/stats");
  CHECK(stats["patterns"] == 78);
  CHECK(stats["index_rebuilds"] == 0); // its index file and checkpoint were used
  // Router v2's checkpoint (the little-endian layout of the time) restored.
  CHECK(must_get(c, "/v1/learn/status")["router_v2"]["ready"] == true);
  // The operator's KV policy of the tier.
  auto kv = must_get(c, "/v1/tiers/demo-tiny/kv_policy");
  CHECK(kv["recent_tokens"] == 64);
  CHECK(kv["old_k_type"] == "q4_0");
  CHECK(kv["old_v_type"] == "q8_0");
  CHECK(kv["migrate_pages"] == 2);
  // Sealed sessions, with their user and turns.
  auto s0 = must_get(c, "/v1/sessions/chat-sess-0");
  CHECK(s0["user"] == "user-0");
  CHECK(s0["turns"] == 2);
  CHECK(s0["kv"]["pages"] == 8);
  auto s9 = must_get(c, "/v1/sessions/completion-sess-0");
  CHECK(s9["user"] == "user-9");
  // The first text routed then joins its pattern again.
  auto d = must_route(c, "Real-time strategy game of ancient warfare");
  CHECK(d["new_pattern"] == false);
  CHECK(d["pattern_id"] == 1);
}

} // namespace

TEST_CASE("a store written before the restructuring opens, upgrades and serves what it held") {
  temp_dir dir;
  auto args = pre19_store_in(dir.path());
  {
    auto node = must_start(dir.path(), args);
    auto c = node->client();
    check_pre19_store(c);
    // Its witness records take feedback: an unrated one is joined, a rated
    // one is a conflict, an unknown id is not found.
    auto fb =
      post(c, "/v1/feedback", json{{"request_id", "1a2524c956100000"}, {"quality", 0.6}}.dump());
    REQUIRE(fb);
    INFO(fb->body);
    CHECK(fb->status == 200);
    check_error(
      post(c, "/v1/feedback", json{{"request_id", "1a2524c956200000"}, {"quality", 0.6}}.dump()),
      409, "conflict");
    check_error(
      post(c, "/v1/feedback", json{{"request_id", "1a2524c900000000"}, {"quality", 0.6}}.dump()),
      404, "not_found");
    CHECK(node->stop(SIGTERM) == 0);
  }
  { // Upgraded: meta holds the schema version only, every record decodes
    // as Cap'n Proto in its typed table, sealed ones with the same key.
    namespace st = shoal::store;
    namespace pr = shoal::proto;
    auto env = st::environment::open({dir.path()});
    REQUIRE(env);
    std::vector<std::string> meta_keys;
    REQUIRE_FALSE((*env)->for_each(st::table::meta, [&](std::string_view k, std::string_view) {
      meta_keys.emplace_back(k);
      return true;
    }));
    CHECK(meta_keys == std::vector<std::string>{"schema"});
    auto schema = pr::decode_meta(**(*env)->get(st::table::meta, "schema"));
    REQUIRE(schema);
    CHECK(schema->schema_version == pr::schema_version);
    auto ids = (*env)->get(st::table::router_state, "ids");
    REQUIRE((ids && ids->has_value()));
    CHECK(pr::decode_pattern_ids(**ids)->reserved_up_to == 4097);
    auto cats = (*env)->get(st::table::router_state, "categories");
    REQUIRE((cats && cats->has_value()));
    auto c = pr::decode_categories(**cats);
    REQUIRE(c);
    CHECK(c->labels.size() == 7);
    CHECK(c->pattern_ids.size() == 78);
    auto kv = shoal::store::get_policy(**env, "kv/demo-tiny");
    REQUIRE((kv && kv->has_value()));
    CHECK(pr::decode_kv_policy((*kv)->value)->recent_tokens == 64);
    auto v2 = shoal::store::get_policy(**env, "router/v2");
    REQUIRE((v2 && v2->has_value()));
    CHECK((*v2)->value[0] == 0); // a Cap'n Proto message now, not the old layout
    auto seal = shoal::crypto::sealer::from_hex(std::string(64, 'a'));
    REQUIRE(seal.ok());
    size_t n_sessions = 0, n_pages = 0;
    REQUIRE_FALSE(
      (*env)->for_each(st::table::sessions, [&](std::string_view k, std::string_view v) {
        auto plain = seal->open(v, k);
        CHECK((plain.ok() && pr::decode_session(*plain)));
        ++n_sessions;
        return true;
      }));
    REQUIRE_FALSE(
      (*env)->for_each(st::table::kv_spill, [&](std::string_view k, std::string_view v) {
        auto plain = seal->open(v, k);
        CHECK((plain.ok() && pr::decode_kv_page(*plain)));
        ++n_pages;
        return true;
      }));
    CHECK(n_sessions == 4);
    CHECK(n_pages == 26);
  }
  // The upgraded store opens again and holds the same.
  auto node = must_start(dir.path(), args);
  auto c = node->client();
  check_pre19_store(c);
  check_error(
    post(c, "/v1/feedback", json{{"request_id", "1a2524c956100000"}, {"quality", 0.6}}.dump()), 409,
    "conflict");
  CHECK(node->stop(SIGTERM) == 0);
}

TEST_CASE("with embedder.dim other than 384, router v2 trains on that dimension and restarts") {
  temp_dir dir;
  auto prompts = write_prompts(dir.path(), 100);
  const std::vector<std::string> args{"--set", "embedder.dim=128", "--set", "router.seed=7"};
  {
    auto node = must_start(dir.path() / "data", args);
    auto r =
      run_shoal({"replay", "--url", node->url(), "--prompts", prompts.string(), "--window", "100"});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    auto tr = run_shoal({"learn", "trigger", "background", "--url", node->url()});
    INFO(tr.output);
    REQUIRE(tr.exit_code == 0);
    CHECK(json::parse(tr.output, nullptr, false)["router_v2"]["ready"] == true);
    CHECK(node->stop(SIGTERM) == 0);
  }
  // The checkpoint is for 128 dimensions: the node opens its own store again.
  auto node = must_start(dir.path() / "data", args);
  auto c = node->client();
  CHECK(must_get(c, "/v1/learn/status")["router_v2"]["ready"] == true);
  must_route(c, "still serving at 128 dimensions");
  CHECK(node->stop(SIGTERM) == 0);
}
