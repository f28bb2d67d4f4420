#include "node/config.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

using namespace shoal::node;

namespace {

shoal::core::result<node_config> load_text(const std::string& toml, std::vector<std::string> sets = {},
                                    std::vector<std::string> env = {}) {
  std::string path = "/tmp/shoal-config-test-" + std::to_string(::getpid()) + ".toml";
  std::ofstream(path) << toml;
  std::vector<char*> envp;
  for (auto& e : env)
    envp.push_back(e.data());
  envp.push_back(nullptr);
  auto r = load_config(path, sets, envp.data());
  std::remove(path.c_str());
  return r;
}

std::string error_key(const shoal::core::result<node_config>& r) {
  return r.ok() ? "" : r.err().context;
}

std::string error_message(const shoal::core::result<node_config>& r) {
  return r.ok() ? "" : r.err().message;
}

/// `x` as --set text that parses back to exactly `x`.
std::string exact_text(double x) {
  std::ostringstream out;
  out.precision(17);
  out << x;
  return out.str();
}

} // namespace

TEST_CASE("configs/node.toml documents every key with its default") {
  std::ifstream in(SHOAL_SOURCE_DIR "/configs/node.toml");
  REQUIRE(in);
  std::stringstream buf;
  buf << in.rdbuf();
  CHECK(buf.str() == render_default_toml());
  auto r = load_config(SHOAL_SOURCE_DIR "/configs/node.toml", {}, nullptr);
  REQUIRE(r.ok());
  CHECK((*r).router.tiers.size() == 4);
}

TEST_CASE("file, environment and --set override in that order") {
  auto r = load_text("[router]\nk = 8\n[http]\nport = 9001\n", {"router.k=12"},
                     {"SHOAL_HTTP_PORT=9002", "SHOAL_ROUTER_K=10", "PATH=/bin",
                      // the scripts' own variables are not config keys
                      "SHOAL_MODEL_CACHE=/tmp/m", "SHOAL_PEER_DIR=/tmp/p", "SHOAL_NPM_DIR=/tmp/n",
                      "SHOAL_BUILD_DIR=build"});
  REQUIRE(r.ok());
  auto& c = (*r);
  CHECK(c.router.k == 12);
  CHECK(c.http.port == 9002);
}

TEST_CASE("invalid configs name the offending key") {
  CHECK(error_key(load_text("[router]\nkk = 1\n")) == "router.kk");
  CHECK(error_key(load_text("[router]\nk = \"many\"\n")) == "router.k");
  CHECK(error_key(load_text("[router]\nk = 0\n")) == "router.k");
  CHECK(error_key(load_text("[router]\nnew_pattern_threshold = 1.5\n"))
        == "router.new_pattern_threshold");
  CHECK(error_key(load_text("", {"http.port=70000"})) == "http.port");
  CHECK(error_key(load_text("", {"http.port=abc"})) == "http.port");
  CHECK(error_key(load_text("", {"nope.key=1"})) == "nope.key");
  CHECK(error_key(load_text("", {}, {"SHOAL_ROUTER_KAY=3"})) == "SHOAL_ROUTER_KAY");
  CHECK(error_key(load_text("", {"kv.old_k_type=q3"})) == "kv.old_k_type");
  CHECK(error_key(load_text("", {"kv.old_v_type=f32"})) == "kv.old_v_type");
  CHECK(error_key(load_text("", {"kv.page_tokens=0"})) == "kv.page_tokens");
  CHECK(error_key(load_text("", {"memory.budget_mb=0"})) == "memory.budget_mb");
  CHECK(error_key(load_text("[[tiers]]\nname = \"a\"\ncost = 2\n")) == "tiers[0].cost");
  CHECK(error_key(load_text("[[tiers]]\nname = \"a\"\n[[tiers]]\nname = \"a\"\n"))
        == "tiers[1].name");
  CHECK(error_key(load_text("[embedder]\nchar_ngram_min = 5\nchar_ngram_max = 3\n"))
        == "embedder.char_ngram_max");
  auto bad = load_text("this is not toml = = =");
  CHECK_FALSE(bad.ok());
}

TEST_CASE("tiers come from [[tiers]] tables") {
  auto r = load_text("[[tiers]]\nname = \"small\"\ncost = 0\nparams_m = 100\n"
                     "[[tiers]]\nname = \"big\"\ncost = 0.3\nparams_m = 7000\n");
  REQUIRE(r.ok());
  auto& t = (*r).router.tiers;
  REQUIRE(t.size() == 2);
  CHECK(t[1].name == "big");
  CHECK(t[1].cost == doctest::Approx(0.3));
}

TEST_CASE("federation settings are checked when federation is on, naming the key") {
  const std::string on = "[federation]\nenabled = true\n";
  CHECK(load_text(on).ok());
  // Off: federation keys are type- and range-checked but not cross-checked.
  CHECK(load_text("[federation]\ncluster = \"a.b\"\n").ok());
  CHECK(error_key(load_text(on + "cluster = \"a.b\"\n")) == "federation.cluster");
  CHECK(error_key(load_text(on + "urls = \" , \"\n")) == "federation.urls");
  CHECK(error_key(load_text(on + "user = \"u\"\n")) == "federation.user");
  CHECK(error_key(load_text(on + "trusted = \"peer=nothex\"\n")) == "federation.trusted");
  CHECK(error_key(load_text(on + "tls_ca = \"/no/such/ca.pem\"\n")) == "federation.tls_ca");
  CHECK(error_key(load_text(on + "reconnect_wait_ms = 900\nreconnect_max_ms = 100\n"))
        == "federation.reconnect_max_ms");
  CHECK(error_key(load_text(on, {"node.name=has space"})) == "node.name");
  CHECK(error_key(load_text(on + "batch_max = 0\n")) == "federation.batch_max");
  CHECK(error_key(load_text("[federation]\nenabled = \"yes\"\n")) == "federation.enabled");
}

TEST_CASE("[[tiers]] keys go through the tier registry: type, range and unknown keys") {
  const std::string two = "[[tiers]]\nname = \"a\"\n[[tiers]]\nname = \"b\"\n";
  auto r = load_text(two + "n_ctx = 8\n");
  CHECK(error_key(r) == "tiers[1].n_ctx");
  CHECK(error_message(r).find("out of range [16, 1048576]") != std::string::npos);
  CHECK(error_key(load_text(two + "threads = 0\n")) == "tiers[1].threads");
  CHECK(error_key(load_text(two + "max_sequences = 5000\n")) == "tiers[1].max_sequences");
  CHECK(error_key(load_text(two + "params_m = -1\n")) == "tiers[1].params_m");
  r = load_text(two + "threads = \"two\"\n");
  CHECK(error_key(r) == "tiers[1].threads");
  CHECK(error_message(r) == "must be an integer");
  CHECK(error_key(load_text(two + "model = 3\n")) == "tiers[1].model");
  r = load_text(two + "n_ctxx = 4096\n");
  CHECK(error_key(r) == "tiers[1].n_ctxx");
  CHECK(error_message(r) == "unknown key");
  CHECK(error_key(load_text(two + "chat_format = \"vicuna\"\n")) == "tiers[1].chat_format");
  CHECK(error_key(load_text("[[tiers]]\ncost = 0.1\n")) == "tiers[0].name");
  CHECK(error_key(load_text("tiers = [1, 2]\n")) == "tiers[0]");
  CHECK(error_key(load_text("", {"tiers=x"})) == "tiers");

  // Every key in range is taken; an integer is accepted for a number.
  r = load_text("[[tiers]]\nname = \"t\"\ncost = 1\nparams_m = 7000\nmodel = \"\"\n"
                "n_ctx = 4096\nthreads = 2\nmax_sequences = 1\nchat_format = \"llama3\"\n");
  REQUIRE(r.ok());
  const auto& t = (*r).router.tiers.at(0);
  CHECK(t.cost == 1);
  CHECK(t.params_m == 7000);
  CHECK(t.n_ctx == 4096);
  CHECK(t.threads == 2);
  CHECK(t.max_sequences == 1);
  CHECK(t.chat_format == "llama3");

  // Every key of the registry is documented with a range where it has one.
  for (const auto& s : tier_settings()) {
    CHECK(!s.doc.empty());
    CHECK(render_default_toml().find("# " + s.key + " = ") != std::string::npos);
  }
}

TEST_CASE("waits are finite: a timeout of 0 is refused, the defaults are finite") {
  node_config defaults;
  CHECK(defaults.http.request_timeout_ms > 0);
  CHECK(defaults.http.generation_timeout_ms > 0);
  CHECK(error_key(load_text("[http]\nrequest_timeout_ms = 0\n")) == "http.request_timeout_ms");
  CHECK(error_key(load_text("", {"http.request_timeout_ms=0"})) == "http.request_timeout_ms");
  CHECK(error_key(load_text("", {}, {"SHOAL_HTTP_REQUEST_TIMEOUT_MS=0"}))
        == "http.request_timeout_ms");
  CHECK(error_key(load_text("", {"http.generation_timeout_ms=0"})) == "http.generation_timeout_ms");
  auto r = load_text("", {"http.request_timeout_ms=1", "http.generation_timeout_ms=86400000"});
  REQUIRE(r.ok());
  CHECK((*r).http.request_timeout_ms == 1);
}

TEST_CASE("every numeric key refuses values just outside its documented range") {
  for (const auto& s : settings()) {
    if (s.type != 'i' && s.type != 'd')
      continue;
    CAPTURE(s.key);
    auto step = [](double x) { return std::max(1e-6, std::abs(x) * 1e-6); };
    std::string below = s.type == 'i' ? std::to_string(static_cast<int64_t>(s.min) - 1)
                                      : exact_text(s.min - step(s.min));
    std::string above = s.type == 'i' ? std::to_string(static_cast<int64_t>(s.max) + 1)
                                      : exact_text(s.max + step(s.max));
    CHECK(error_key(load_text("", {s.key + "=" + below})) == s.key);
    CHECK(error_key(load_text("", {s.key + "=" + above})) == s.key);
  }
}

TEST_CASE("router.prior: the range the registry documents is the one it enforces") {
  const setting* prior = nullptr;
  for (const auto& s : settings())
    if (s.key == "router.prior")
      prior = &s;
  REQUIRE(prior != nullptr);
  // Positive: with no evidence a tier's posterior is the prior alone.
  CHECK(prior->min > 0);
  CHECK(error_key(load_text("", {"router.prior=0"})) == "router.prior");
  for (double ok : {prior->min, 1.0, prior->max}) {
    auto r = load_text("", {"router.prior=" + exact_text(ok)});
    REQUIRE(r.ok());
    CHECK((*r).router.prior == ok);
  }
}

TEST_CASE("router.similarity_power and router.prior do what the registry says") {
  // Neighbour i weighs (max(sim_i, 0) / sim_1)^p; the prior adds `prior`
  // observations of mean quality 1/2. Pattern A (quality 1) at e0 and
  // pattern B (quality 0) at e1; the query has similarity 0.8 to A and 0.4
  // to B (both patterns are still pending: exact similarities).
  auto r = load_text("[router]\nk = 2\nsimilarity_power = 2\nprior = 1\nglobal_prior = 0\n"
                     "new_pattern_threshold = 0.99\nseed = 1\n[[tiers]]\nname = \"only\"\n");
  REQUIRE(r.ok());
  const auto cfg = (*r).router;
  const uint32_t dim = 16;
  auto evidence_and_mean = [&](double power) {
    auto c = cfg;
    c.similarity_power = power;
    auto bank = shoal::router::pattern_bank::open(dim, c, nullptr);
    REQUIRE(bank);
    std::vector<float> e0(dim, 0.0f), e1(dim, 0.0f), q(dim, 0.0f);
    e0[0] = 1;
    e1[1] = 1;
    q[0] = 0.8f;
    q[1] = 0.4f;
    q[2] = std::sqrt(1.0f - 0.8f * 0.8f - 0.4f * 0.4f);
    auto a = (*bank)->route(e0, 1);
    auto b = (*bank)->route(e1, 2);
    REQUIRE(a.new_pattern);
    REQUIRE(b.new_pattern);
    REQUIRE_FALSE((*bank)->learn(a.pattern_id, 0, 1.0, 3));
    REQUIRE_FALSE((*bank)->learn(b.pattern_id, 0, 0.0, 4));
    auto d = (*bank)->route(q, 5);
    REQUIRE(d.neighbors.size() == 2);
    return std::pair{d.evidence.at(0), d.mean_quality.at(0)};
  };
  // p = 2: weights 1 and (0.4 / 0.8)^2 = 0.25 (not 0.8^2 and 0.4^2).
  auto [n2, mean2] = evidence_and_mean(2);
  CHECK(n2 == doctest::Approx(1.25).epsilon(1e-4));
  CHECK(mean2 == doctest::Approx((0.5 + 1.0) / (1.0 + 1.25)).epsilon(1e-4));
  // p = 0: both neighbours weigh 1.
  auto [n0, mean0] = evidence_and_mean(0);
  CHECK(n0 == doctest::Approx(2.0));
  CHECK(mean0 == doctest::Approx((0.5 + 1.0) / (1.0 + 2.0)).epsilon(1e-4));
}
