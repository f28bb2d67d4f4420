// Federation end to end: real `shoal node` processes sharing what they learn
// through real nats-server processes (JetStream) on random loopback ports.
// Label: integration.
#include "federation/signing.hpp"
#include "node_process.hpp"
#include "proto/wire.hpp"

#include <doctest/doctest.h>
#include <nats/nats.h>

#include <cmath>
#include <cstdlib>
#include <csignal>
#include <functional>
#include <random>
#include <thread>

using namespace shoal::testing;
using json = nlohmann::json;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

/// "name=hexkey" of the node whose data directory is `dir` (creates its key).
std::string node_key(const fs::path& dir, const std::string& name) {
  auto r =
    run_shoal({"key", "--set", "store.data_dir=" + dir.string(), "--set", "node.name=" + name});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto line = r.output.substr(0, r.output.find('\n'));
  REQUIRE(line.rfind(name + "=", 0) == 0);
  return line;
}

std::vector<std::string> fed_args(const std::string& name, const std::string& urls,
                                  const std::string& trusted) {
  return {"--set", "node.name=" + name,
          "--set", "federation.enabled=true",
          "--set", "federation.cluster=test",
          "--set", "federation.urls=" + urls,
          "--set", "federation.trusted=" + trusted,
          "--set", "federation.digest_interval_ms=300",
          "--set", "federation.telemetry_interval_ms=300",
          "--set", "federation.reconnect_wait_ms=50",
          "--set", "federation.reconnect_max_ms=400",
          "--set", "federation.stream_max_bytes=67108864",
          "--set", "router.seed=7"};
}

std::unique_ptr<node_process> must_start(const fs::path& dir, const std::vector<std::string>& a) {
  std::string log;
  auto node = node_process::start(dir, a, &log);
  INFO("node log:\n" << log);
  REQUIRE(node != nullptr);
  return node;
}

std::unique_ptr<nats_server> must_start_nats(const fs::path& dir, nats_server::options o = {}) {
  std::string log;
  auto s = nats_server::start(dir, std::move(o), &log);
  INFO("nats-server log:\n" << log);
  REQUIRE(s != nullptr);
  return s;
}

json stats(const node_process& n) {
  auto c = n.client();
  auto r = c.Get("/v1/stats");
  REQUIRE(r);
  REQUIRE(r->status == 200);
  return body_json(r);
}

/// A text of prompt `i` of topic `topic`: topics share vocabulary inside, so
/// requests of one topic join each other's patterns.
std::string text(int topic, int i) {
  static const char* words[] = {"library",  "daemon",  "python", "font",   "kernel", "editor",
                                "compiler", "network", "audio",  "image",  "game",   "shell",
                                "database", "server",  "client", "parser", "driver", "theme"};
  std::string s;
  for (int j = 0; j < 5; ++j)
    s += std::string(words[(topic * 5 + j) % 18]) + ' ';
  return s + words[(topic + i) % 18] + " module " + std::to_string(i % 7);
}

/// Routes `n` requests on `node` and sends feedback for each (quality depends
/// on topic and tier, so different tiers win on different topics).
void learn(const node_process& node, int first, int n) {
  auto c = node.client();
  for (int i = first; i < first + n; ++i) {
    int topic = i % 12;
    auto r = post(c, "/v1/route", json{{"text", text(topic, i)}}.dump());
    REQUIRE(r);
    REQUIRE(r->status == 200);
    auto d = body_json(r);
    int tier = d["tier_index"].get<int>();
    double q = 0.3 + 0.15 * ((topic + tier) % 5);
    auto f = post(c, "/v1/feedback", json{{"request_id", d["request_id"]}, {"quality", q}}.dump());
    REQUIRE(f);
    REQUIRE(f->status == 200);
  }
}

/// Waits (at most 20 s) until the node's federation stream is set up.
void wait_stream_ready(const node_process& n) {
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (stats(n)["federation"]["stream_ready"] != true
         && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(50ms);
}

/// Waits (at most `timeout`) until every node holds the same contributions
/// from the same origins, `n_origins` of them. @returns whether they did.
bool converged(const std::vector<const node_process*>& nodes, size_t n_origins,
               std::chrono::seconds timeout = 60s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  json last;
  while (std::chrono::steady_clock::now() < deadline) {
    std::vector<json> o;
    for (auto* n : nodes)
      o.push_back(stats(*n)["federation"]["origins"]);
    bool same = o[0].size() == n_origins;
    for (auto& x : o)
      same = same && x == o[0];
    if (same)
      return true;
    last = o;
    std::this_thread::sleep_for(100ms);
  }
  MESSAGE("origins per node at the deadline: " << last.dump());
  return false;
}

} // namespace

TEST_CASE("three nodes learning in turn converge to identical pattern statistics") {
  temp_dir dir;
  auto nats = must_start_nats(dir.path() / "nats");
  std::vector<std::string> names{"a", "b", "c"};
  std::string trusted;
  for (auto& n : names)
    trusted += (trusted.empty() ? "" : ",") + node_key(dir.path() / n, n);
  std::vector<std::unique_ptr<node_process>> nodes;
  for (auto& n : names) {
    auto args = fed_args(n, nats->url(), trusted);
    if (n == "c") // c batches slowly: its last changes leave only at its graceful stop
      args.insert(args.end(), {"--set", "federation.batch_delay_ms=3000"});
    nodes.push_back(must_start(dir.path() / n, args));
  }
  // Interleaved: each node learns a slice, in turn, three rounds.
  for (int round = 0; round < 3; ++round)
    for (int k = 0; k < 3; ++k)
      learn(*nodes[k], 1000 * k + 40 * round, 40);
  REQUIRE(converged({nodes[0].get(), nodes[1].get(), nodes[2].get()}, 3));
  auto s0 = stats(*nodes[0]);
  for (auto& n : nodes) {
    auto s = stats(*n);
    CHECK(s["patterns"] == s0["patterns"]);
    CHECK(s["federation"]["connected"] == true);
    CHECK(s["federation"]["dropped"]["invalid"] == 0);
    CHECK(s["federation"]["propagation_ms"]["batches"].get<uint64_t>() > 0);
    CHECK(s["federation"]["propagation_ms"]["p50"].get<double>() > 0.0);
    // Every node's contributions reached the others.
    for (auto& o : s["federation"]["origins"])
      CHECK(o["contributions"].get<uint64_t>() > 0);
  }
  // A pattern one node created routes as known on another.
  auto c = nodes[2]->client();
  auto r = post(c, "/v1/route", json{{"text", text(0, 0)}}.dump());
  REQUIRE(r);
  CHECK(body_json(r)["new_pattern"] == false);
  // What c learns just before a graceful stop still reaches a and b.
  learn(*nodes[2], 7000, 20);
  auto c_final = stats(*nodes[2])["federation"]["origins"];
  CHECK(nodes[2]->stop(SIGINT) == 0);
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (stats(*nodes[0])["federation"]["origins"] != c_final
         && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(50ms);
  CHECK(stats(*nodes[0])["federation"]["origins"] == c_final);
  CHECK(converged({nodes[0].get(), nodes[1].get()}, 3));
  for (int k = 0; k < 2; ++k)
    CHECK(nodes[static_cast<size_t>(k)]->stop(SIGINT) == 0);
}

TEST_CASE("a node started late catches up from the JetStream stream") {
  temp_dir dir;
  auto nats = must_start_nats(dir.path() / "nats");
  auto trusted = node_key(dir.path() / "a", "a") + "," + node_key(dir.path() / "b", "b") + ","
                 + node_key(dir.path() / "late", "late");
  auto a = must_start(dir.path() / "a", fed_args("a", nats->url(), trusted));
  auto b = must_start(dir.path() / "b", fed_args("b", nats->url(), trusted));
  learn(*a, 0, 150);
  learn(*b, 5000, 150);
  REQUIRE(converged({a.get(), b.get()}, 2));
  auto late = must_start(dir.path() / "late", fed_args("late", nats->url(), trusted));
  REQUIRE(converged({a.get(), b.get(), late.get()}, 2));
  auto s = stats(*late);
  CHECK(s["patterns"] == stats(*a)["patterns"]);
  CHECK(s["federation"]["stream_seq"].get<uint64_t>() > 0);
  CHECK(s["federation"]["batches_received"].get<uint64_t>() > 0);
  // Restarted, it resumes from the stream position it stored, not from 0.
  auto seq = s["federation"]["stream_seq"].get<uint64_t>();
  REQUIRE(late->stop(SIGINT) == 0);
  learn(*a, 9000, 30);
  late = must_start(dir.path() / "late", fed_args("late", nats->url(), trusted));
  REQUIRE(converged({a.get(), b.get(), late.get()}, 2));
  auto s2 = stats(*late);
  CHECK(s2["federation"]["stream_seq"].get<uint64_t>() > seq);
  CHECK(s2["federation"]["batches_received"].get<uint64_t>()
        < s["federation"]["batches_received"].get<uint64_t>());
}

TEST_CASE("a node cut off from its NATS server keeps learning and converges after healing") {
  temp_dir dir;
  // A 3-server NATS cluster with JetStream; each node talks to its own server.
  std::vector<int> cport{free_port(), free_port(), free_port()};
  std::vector<std::unique_ptr<nats_server>> servers;
  for (int i = 0; i < 3; ++i) {
    nats_server::options o;
    o.name = "s" + std::to_string(i);
    o.cluster_name = "shoal-test";
    o.cluster_port = cport[static_cast<size_t>(i)];
    for (int j = 0; j < 3; ++j)
      if (j != i)
        o.routes.push_back(cport[static_cast<size_t>(j)]);
    servers.push_back(must_start_nats(dir.path() / o.name, o));
  }
  std::vector<std::string> names{"a", "b", "c"};
  std::string trusted;
  for (auto& n : names)
    trusted += (trusted.empty() ? "" : ",") + node_key(dir.path() / n, n);
  std::vector<std::unique_ptr<node_process>> nodes;
  for (size_t i = 0; i < 3; ++i) {
    auto args = fed_args(names[i], servers[i]->url(), trusted);
    // Pinned to its own server: when that server is down the node is cut off
    // (otherwise NATS fails over to the servers the cluster advertises).
    args.insert(args.end(), {"--set", "federation.stream_replicas=3", "--set",
                             "federation.ignore_discovered_servers=true"});
    nodes.push_back(must_start(dir.path() / names[i], args));
  }
  for (int k = 0; k < 3; ++k)
    learn(*nodes[static_cast<size_t>(k)], 1000 * k, 60);
  REQUIRE(converged({nodes[0].get(), nodes[1].get(), nodes[2].get()}, 3, 90s));

  // Cut c off: its server goes down. Everyone keeps serving and learning.
  servers[2]->stop(SIGKILL);
  for (int k = 0; k < 3; ++k)
    learn(*nodes[static_cast<size_t>(k)], 1000 * k + 500, 60);
  auto cut = stats(*nodes[2]);
  CHECK(cut["federation"]["connected"] == false);
  CHECK(cut["requests"].get<uint64_t>() == 120);
  REQUIRE(converged({nodes[0].get(), nodes[1].get()}, 3));

  // Heal: c's server returns; c catches up and its local learning spreads.
  std::string log;
  REQUIRE(servers[2]->restart(&log));
  REQUIRE(converged({nodes[0].get(), nodes[1].get(), nodes[2].get()}, 3, 90s));
  CHECK(stats(*nodes[2])["federation"]["connected"] == true);
}

TEST_CASE("a hostile peer's messages change nothing and are counted") {
  temp_dir dir;
  auto nats = must_start_nats(dir.path() / "nats");
  std::array<uint8_t, 32> seed{};
  seed.fill(42);
  auto mallory = shoal::crypto::identity::from_seed(seed); // trusted, but hostile
  seed.fill(43);
  auto eve = shoal::crypto::identity::from_seed(seed); // not trusted
  auto trusted =
    node_key(dir.path() / "a", "a") + ",mallory=" + shoal::crypto::to_hex(mallory.pk());
  auto args = fed_args("a", nats->url(), trusted);
  args.insert(args.end(), {"--set", "federation.max_message_bytes=65536"});
  auto a = must_start(dir.path() / "a", args);
  learn(*a, 0, 20);

  natsConnection* nc = nullptr;
  REQUIRE(natsConnection_ConnectTo(&nc, nats->url().c_str()) == NATS_OK);
  auto send = [&](const shoal::crypto::identity& who, const std::string& as,
                  const shoal::proto::delta_batch& b) {
    auto e = shoal::federation::seal(who, shoal::proto::wire_kind::delta_batch,
                                     shoal::proto::encode(b), as);
    auto bytes = shoal::proto::encode(e);
    REQUIRE(natsConnection_Publish(nc, "shoal.test.patterns.mallory", bytes.data(),
                                   static_cast<int>(bytes.size()))
            == NATS_OK);
  };
  auto batch = [&](uint64_t version, double sum, uint32_t dim) {
    shoal::proto::delta_batch b;
    b.node = mallory.id();
    b.node_name = "mallory";
    b.dim = dim;
    b.n_tiers = 4;
    shoal::proto::pattern_delta d;
    d.origin_node = mallory.id();
    d.origin_id = 1;
    d.centroid.assign(dim, 0.0f);
    d.centroid[0] = 1.0f;
    d.contrib = {mallory.id(), version, {{sum, sum, 2}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0}}};
    b.deltas.push_back(d);
    return b;
  };
  auto wait_seq = [&](uint64_t seq) {
    auto deadline = std::chrono::steady_clock::now() + 20s;
    while (stats(*a)["federation"]["stream_seq"].get<uint64_t>() < seq
           && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(50ms);
  };
  // One honest message from mallory first: it is merged.
  send(mallory, "mallory", batch(5, 1.0, 384));
  REQUIRE(natsConnection_Flush(nc) == NATS_OK);
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (stats(*a)["federation"]["origins"].size() < 2
         && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(50ms);
  auto before = stats(*a);
  REQUIRE(before["federation"]["origins"].size() == 2);
  uint64_t seq0 = before["federation"]["stream_seq"].get<uint64_t>();

  send(eve, "eve", batch(9, 1.5, 384));                  // untrusted signer
  send(eve, "mallory", batch(9, 1.5, 384));              // mallory's name, eve's signature
  send(mallory, "mallory", batch(9, 1.5, 17));           // wrong dimension
  send(mallory, "mallory", batch(9, std::nan(""), 384)); // NaN
  send(mallory, "mallory", batch(9, 5.0, 384));          // impossible: sum > count
  send(mallory, "mallory", batch(3, 0.5, 384));          // a replayed old version
  std::string junk(200, '\x01');
  REQUIRE(natsConnection_Publish(nc, "shoal.test.patterns.mallory", junk.data(),
                                 static_cast<int>(junk.size()))
          == NATS_OK);
  auto unsigned_batch =
    shoal::federation::seal(mallory, shoal::proto::wire_kind::delta_batch,
                            shoal::proto::encode(batch(9, 1.5, 384)), "mallory");
  unsigned_batch.signature.clear();
  auto unsigned_bytes = shoal::proto::encode(unsigned_batch);
  REQUIRE(natsConnection_Publish(nc, "shoal.test.patterns.mallory", unsigned_bytes.data(),
                                 static_cast<int>(unsigned_bytes.size()))
          == NATS_OK);
  std::string huge(100'000, '\x02'); // over federation.max_message_bytes
  REQUIRE(natsConnection_Publish(nc, "shoal.test.patterns.mallory", huge.data(),
                                 static_cast<int>(huge.size()))
          == NATS_OK);
  REQUIRE(natsConnection_Flush(nc) == NATS_OK);
  wait_seq(seq0 + 9);
  auto after = stats(*a);
  CHECK(after["federation"]["stream_seq"].get<uint64_t>() >= seq0 + 9);
  CHECK(after["federation"]["origins"] == before["federation"]["origins"]);
  CHECK(after["patterns"] == before["patterns"]);
  auto dropped = after["federation"]["dropped"];
  CHECK(dropped["untrusted"] == 1);
  CHECK(dropped["bad_signature"] == 2); // eve's signature as mallory; no signature
  CHECK(dropped["oversized"] == 1);
  CHECK(dropped["invalid"] == 3); // dimension, NaN, impossible sums
  CHECK(dropped["malformed"] == 1);
  CHECK(after["federation"]["deltas_stale"].get<uint64_t>()
        == before["federation"]["deltas_stale"].get<uint64_t>() + 1);
  // The node still serves and learns.
  learn(*a, 100, 5);
  natsConnection_Destroy(nc);
  CHECK(a->stop(SIGINT) == 0);
}

TEST_CASE("NATS token auth: the right token connects, a wrong one leaves the node serving alone") {
  temp_dir dir;
  nats_server::options o;
  o.token = "s3cret-token";
  auto nats = must_start_nats(dir.path() / "nats", o);
  auto trusted = node_key(dir.path() / "a", "a") + "," + node_key(dir.path() / "b", "b");
  auto good = fed_args("a", nats->url(), trusted);
  good.insert(good.end(), {"--set", "federation.token=s3cret-token"});
  auto bad = fed_args("b", nats->url(), trusted);
  bad.insert(bad.end(), {"--set", "federation.token=wrong"});
  auto a = must_start(dir.path() / "a", good);
  auto b = must_start(dir.path() / "b", bad);
  learn(*a, 0, 10);
  learn(*b, 100, 10); // b serves and learns without federation
  wait_stream_ready(*a);
  CHECK(stats(*a)["federation"]["connected"] == true);
  CHECK(stats(*a)["federation"]["stream_ready"] == true);
  auto sb = stats(*b);
  CHECK(sb["federation"]["connected"] == false);
  CHECK(sb["requests"] == 10);
  // NATS said why (b's bridge logs it as it starts; wait for the line).
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (b->log().find("uthorization") == std::string::npos
         && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(50ms);
  INFO(b->log());
  CHECK(b->log().find("uthorization") != std::string::npos);
  CHECK(b->stop(SIGINT) == 0);
  CHECK(a->stop(SIGINT) == 0);
}

TEST_CASE("a node joining after the stream was trimmed gets everything through resync") {
  temp_dir dir;
  auto nats = must_start_nats(dir.path() / "nats");
  auto trusted = node_key(dir.path() / "a", "a") + "," + node_key(dir.path() / "late", "late");
  auto args = [&](const std::string& name) {
    auto v = fed_args(name, nats->url(), trusted);
    // 1 MiB of stream: the announcements of 1,000 patterns (~1.6 KB each) overflow it.
    v.insert(v.end(), {"--set", "federation.stream_max_bytes=1048576"});
    return v;
  };
  auto a = must_start(dir.path() / "a", args("a"));
  auto c = a->client();
  std::mt19937 rng(9);
  std::normal_distribution<float> normal;
  for (int i = 0; i < 1000; ++i) { // random directions: every request a new pattern
    std::vector<float> e(384);
    for (auto& x : e)
      x = normal(rng);
    auto r = post(c, "/v1/route", json{{"embedding", e}}.dump());
    REQUIRE(r);
    REQUIRE(r->status == 200);
    if (i % 50 == 0)
      std::this_thread::sleep_for(20ms); // let batches go out one by one
  }
  REQUIRE(stats(*a)["patterns"] == 1000);
  auto late = must_start(dir.path() / "late", args("late"));
  REQUIRE(converged({a.get(), late.get()}, 1));
  CHECK(stats(*late)["patterns"] == 1000);
  CHECK(stats(*late)["federation"]["resyncs_requested"].get<uint64_t>() >= 1);
  CHECK(stats(*a)["federation"]["republishes"].get<uint64_t>() >= 1);
}

TEST_CASE("anti-entropy: a delta lost from the stream is repaired from digests") {
  temp_dir dir;
  auto nats = must_start_nats(dir.path() / "nats");
  auto trusted = node_key(dir.path() / "a", "a") + "," + node_key(dir.path() / "b", "b");
  auto a = must_start(dir.path() / "a", fed_args("a", nats->url(), trusted));
  // Separate batches from a, each announcing patterns no later batch touches.
  auto c = a->client();
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  for (int batch = 0; batch < 3; ++batch) {
    for (int i = 0; i < 5; ++i) {
      std::vector<float> e(384);
      for (auto& x : e)
        x = normal(rng);
      auto r = post(c, "/v1/route", json{{"embedding", e}}.dump());
      REQUIRE(r);
      REQUIRE(r->status == 200);
    }
    std::this_thread::sleep_for(300ms);
  }
  auto seq = stats(*a)["federation"]["stream_seq"].get<uint64_t>();
  REQUIRE(seq >= 3);
  // Lose a message in the middle of the stream: no gap at its start, so only
  // the digests can tell that b misses something.
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  REQUIRE(natsConnection_ConnectTo(&nc, nats->url().c_str()) == NATS_OK);
  REQUIRE(natsConnection_JetStream(&js, nc, nullptr) == NATS_OK);
  REQUIRE(js_DeleteMsg(js, "SHOAL_TEST", seq / 2 + 1, nullptr, nullptr) == NATS_OK);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  auto b = must_start(dir.path() / "b", fed_args("b", nats->url(), trusted));
  REQUIRE(converged({a.get(), b.get()}, 1));
  CHECK(stats(*a)["federation"]["republishes"].get<uint64_t>() >= 1);
  CHECK(stats(*b)["federation"]["resyncs_requested"] == 0); // it was not a trimmed stream
}

TEST_CASE(
  "NATS over TLS: a node that trusts the server's CA connects, one that does not stays local") {
  temp_dir dir;
  auto d = dir.path().string();
  // A CA and a server certificate for 127.0.0.1, made with openssl.
  std::string cmd =
    "cd " + d
    + " && openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=shoal-test-ca"
      " -keyout ca.key -out ca.pem 2>/dev/null"
      " && openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key"
      " -out server.csr 2>/dev/null"
      " && printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext"
      " && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1"
      " -extfile san.ext -out server.pem 2>/dev/null";
  REQUIRE(std::system(cmd.c_str()) == 0);
  nats_server::options o;
  o.tls_cert = d + "/server.pem";
  o.tls_key = d + "/server.key";
  auto nats = must_start_nats(dir.path() / "nats", o);
  auto url = "tls://127.0.0.1:" + std::to_string(nats->port());
  auto trusted = node_key(dir.path() / "a", "a") + "," + node_key(dir.path() / "b", "b");
  auto good = fed_args("a", url, trusted);
  good.insert(good.end(),
              {"--set", "federation.tls=true", "--set", "federation.tls_ca=" + d + "/ca.pem"});
  auto bad = fed_args("b", url, trusted); // TLS, but the server's CA is not trusted
  bad.insert(bad.end(), {"--set", "federation.tls=true"});
  auto a = must_start(dir.path() / "a", good);
  auto b = must_start(dir.path() / "b", bad);
  wait_stream_ready(*a);
  CHECK(stats(*a)["federation"]["stream_ready"] == true);
  CHECK(stats(*b)["federation"]["connected"] == false);
  learn(*b, 0, 5); // b still serves and learns
  CHECK(b->stop(SIGINT) == 0);
  CHECK(a->stop(SIGINT) == 0);
}

TEST_CASE("a node whose stream was deleted and recreated republishes, and peers converge") {
  temp_dir dir;
  auto nats = must_start_nats(dir.path() / "nats");
  auto trusted = node_key(dir.path() / "a", "a") + "," + node_key(dir.path() / "b", "b");
  auto a = must_start(dir.path() / "a", fed_args("a", nats->url(), trusted));
  auto b = must_start(dir.path() / "b", fed_args("b", nats->url(), trusted));
  learn(*a, 0, 30);
  learn(*b, 500, 30);
  REQUIRE(converged({a.get(), b.get()}, 2));
  REQUIRE(a->stop(SIGINT) == 0); // stores its stream position
  REQUIRE(b->stop(SIGINT) == 0);
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  REQUIRE(natsConnection_ConnectTo(&nc, nats->url().c_str()) == NATS_OK);
  REQUIRE(natsConnection_JetStream(&js, nc, nullptr) == NATS_OK);
  REQUIRE(js_DeleteStream(js, "SHOAL_TEST", nullptr, nullptr) == NATS_OK);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  // a returns to an empty stream; a fresh node c joins after it.
  a = must_start(dir.path() / "a", fed_args(
                                     "a", nats->url(), trusted + ",c=" + [&] {
                                       auto k = node_key(dir.path() / "c", "c");
                                       return k.substr(k.find('=') + 1);
                                     }()));
  auto c = must_start(dir.path() / "c",
                      fed_args("c", nats->url(), trusted + "," + node_key(dir.path() / "c", "c")));
  // c gets a's own contributions, which only a's republishing can give it.
  auto a_id = stats(*a)["federation"]["node_id"];
  auto own = [&](const node_process& n) {
    for (auto& o : stats(n)["federation"]["origins"])
      if (o["node"] == a_id)
        return o;
    return json();
  };
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (own(*c) != own(*a) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(50ms);
  CHECK(own(*c) == own(*a));
  CHECK(a->log().find("recreated") != std::string::npos);
  b = must_start(dir.path() / "b", fed_args("b", nats->url(), trusted));
  // b also resumes on the new stream, republishes, and all three agree.
  REQUIRE(converged({a.get(), b.get(), c.get()}, 2));
}
