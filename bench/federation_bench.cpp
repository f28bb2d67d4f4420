// shoal_fed_bench: node-to-node pattern propagation over a real nats-server,
// in one process: two nodes (pattern bank + router + federation bridge each)
// in one CAF actor system, next to the transport's own floor (a raw NATS
// publish -> delivery of a message of the same size) in the same run.
//
//   latency     learning updates on node A at a steady rate; B's bridge
//               measures each batch from its oldest change at A to its merge
//               at B (the node's own propagation metric)
//   throughput  bursts of updates on A; from the first update until B holds
//               exactly A's final state: (1) one update on every pattern, each
//               the pattern's first (announced with its centroid); (2) one more
//               on every pattern, so every update is a delta on the wire; (3)
//               many updates over the same patterns, coalesced per batch
//
// Usage: shoal_fed_bench --nats nats://127.0.0.1:PORT [options]
// (bench/federation.sh starts a nats-server and runs it).
#include "actors/actors.hpp"
#include "router/pattern_bank.hpp"
#include "bench/harness.hpp"
#include "federation/bridge.hpp"
#include "kernels/vector.hpp"
#include "proto/messages.hpp"

#include <CLI/CLI.hpp>
#include <caf/all.hpp>
#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>
#include <thread>

using namespace shoal;
using namespace std::chrono_literals;

namespace {

struct node_handles {
  std::shared_ptr<router::pattern_bank> bank;
  shoal::actors::router_actor router;
  shoal::federation::bridge_handle bridge;
  shoal::actors::telemetry_actor telemetry;
};

crypto::identity make_identity(uint8_t fill) {
  std::array<uint8_t, 32> seed;
  seed.fill(fill);
  return crypto::identity::from_seed(seed);
}

template <class T, class Handle, class... Ts>
T ask(caf::actor_system& sys, const Handle& dest, Ts&&... xs) {
  caf::scoped_actor self{sys};
  T out{};
  self->request(dest, caf::infinite, std::forward<Ts>(xs)...)
    .receive([&](T& x) { out = std::move(x); },
             [&](caf::error& e) { throw std::runtime_error(sys.render(e)); });
  return out;
}

/// The summary a node holds of origin `node`'s contributions.
proto::origin_summary origin_of(const proto::router_digest& d, uint64_t node) {
  for (const auto& o : d.origins)
    if (o.node == node)
      return o;
  return {node, 0, 0, 0};
}

bool same(const proto::origin_summary& a, const proto::origin_summary& b) {
  return a.count == b.count && a.hash == b.hash && a.max_version == b.max_version;
}

/// Waits until B holds exactly what A holds of A's own contributions.
bool wait_synced(caf::actor_system& sys, const node_handles& a, const node_handles& b,
                 uint64_t a_id, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto da = ask<proto::router_digest>(sys, a.router, proto::digest_atom::value);
    auto db = ask<proto::router_digest>(sys, b.router, proto::digest_atom::value);
    if (origin_of(da, a_id).count > 0 && same(origin_of(da, a_id), origin_of(db, a_id)))
      return true;
    // Digests are kept incrementally (O(origins)), so polling is cheap;
    // resolution 2 ms.
    std::this_thread::sleep_for(2ms);
  }
  return false;
}

/// The transport floor: publish -> delivery on a second connection, same size.
bench::summary nats_floor(const std::string& url, size_t bytes, int n) {
  natsConnection *pub = nullptr, *sub_conn = nullptr;
  natsSubscription* sub = nullptr;
  if (natsConnection_ConnectTo(&pub, url.c_str()) != NATS_OK
      || natsConnection_ConnectTo(&sub_conn, url.c_str()) != NATS_OK
      || natsConnection_SubscribeSync(&sub, sub_conn, "bench.floor") != NATS_OK)
    throw std::runtime_error("cannot connect to " + url);
  natsConnection_Flush(sub_conn);
  std::string payload(bytes, 'x');
  std::vector<double> samples;
  for (int i = 0; i < n; ++i) {
    auto t0 = bench::now_ns();
    natsConnection_Publish(pub, "bench.floor", payload.data(), static_cast<int>(payload.size()));
    natsConnection_Flush(pub);
    natsMsg* m = nullptr;
    if (natsSubscription_NextMsg(&m, sub, 5000) == NATS_OK) {
      samples.push_back(static_cast<double>(bench::now_ns() - t0));
      natsMsg_Destroy(m);
    }
    std::this_thread::sleep_for(1ms);
  }
  natsSubscription_Destroy(sub);
  natsConnection_Destroy(pub);
  natsConnection_Destroy(sub_conn);
  return bench::summarize(std::move(samples));
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"shoal_fed_bench: node-to-node pattern propagation over NATS"};
  std::string url;
  uint32_t patterns = 100000, rate = 1000, seconds = 5, burst = 1'000'000, dim = 384;
  app.add_option("--nats", url, "NATS URL of a JetStream-enabled server")->required();
  app.add_option("--patterns", patterns, "Patterns in the bank")->capture_default_str();
  app.add_option("--rate", rate, "Updates/s in the latency phase")->capture_default_str();
  app.add_option("--seconds", seconds, "Length of the latency phase")->capture_default_str();
  app.add_option("--burst", burst, "Updates in the throughput phase")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn); // the tables go to stdout

  caf::actor_system_config cfg;
  cfg.set("scheduler.policy", caf::atom("sharing"));
  caf::actor_system sys{cfg};
  auto id_a = make_identity(1), id_b = make_identity(2);
  crypto::trust_list trusted;
  trusted.add("bench-a", id_a.pk());
  trusted.add("bench-b", id_b.pk());
  federation::federation_config fc;
  fc.enabled = true;
  fc.urls = url;
  fc.cluster = "bench" + std::to_string(std::random_device{}() % 100000);
  fc.stream_max_bytes = 256u << 20;

  // Both nodes start knowing A's `patterns` patterns (as if synced before),
  // so the phases measure statistics deltas, not HNSW insertions.
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  std::vector<std::vector<float>> centroids(patterns, std::vector<float>(dim));
  for (auto& c : centroids) {
    for (auto& x : c)
      x = normal(rng);
    kernels::normalize(c);
  }
  auto make_node = [&](const crypto::identity& id, const char* name, bool owner) {
    router::router_config rc;
    rc.node_id = id.id();
    auto bank = router::pattern_bank::open(dim, rc, nullptr);
    if (!bank)
      throw std::runtime_error("bank");
    for (uint32_t i = 1; i <= patterns; ++i) {
      proto::pattern_record r;
      r.id = i;
      r.centroid = centroids[i - 1];
      r.tiers.assign(4, {});
      if (owner) {
        r.version = i;
      } else {
        r.origin_node = id_a.id();
        r.origin_id = i;
        r.peers = {{id_a.id(), i, std::vector<proto::tier_stat>(4)}};
      }
      if (auto err = (*bank)->insert(std::move(r)))
        throw std::runtime_error("insert");
    }
    (*bank)->set_stream_seq(1); // nothing to republish at start
    node_handles h;
    h.bank = std::shared_ptr<router::pattern_bank>(std::move(*bank));
    h.telemetry = actors::spawn_telemetry(sys, 4);
    h.router = actors::spawn_router(sys, h.bank, actors::witness_actor{}, h.telemetry);
    h.bridge = federation::spawn_bridge(sys, {fc, name, id, trusted, h.router, dim, 4, 0});
    return h;
  };
  auto a = make_node(id_a, "bench-a", true);
  auto b = make_node(id_b, "bench-b", false);
  if (!wait_synced(sys, a, b, id_a.id(), 60s)) {
    std::fprintf(stderr, "shoal_fed_bench: the nodes do not start in sync\n");
    return 1;
  }
  // Both connected and consuming: one update must make it across.
  caf::anon_send(a.router, proto::learn_atom::value, proto::learn_update{1, 0, 0.5});
  if (!wait_synced(sys, a, b, id_a.id(), 60s)) {
    std::fprintf(stderr, "shoal_fed_bench: B never received A's first update\n");
    return 1;
  }

  std::printf("## Federation propagation (%u patterns, dim %u, %u cores, NATS %s)\n\n", patterns,
              dim, std::thread::hardware_concurrency(), url.c_str());
  bench::print_header();

  // Latency: steady updates on A; B measures each batch's lag.
  std::uniform_int_distribution<uint32_t> pick(1, patterns);
  std::uniform_real_distribution<double> quality(0, 1);
  auto period = std::chrono::nanoseconds(1'000'000'000 / std::max(1u, rate));
  auto next = std::chrono::steady_clock::now();
  auto before = ask<federation::federation_stats>(sys, b.bridge, proto::stats_atom::value);
  for (uint64_t i = 0; i < uint64_t{rate} * seconds; ++i) {
    caf::anon_send(a.router, proto::learn_atom::value,
                   proto::learn_update{pick(rng), static_cast<uint32_t>(i % 4), quality(rng)});
    next += period;
    std::this_thread::sleep_until(next);
  }
  if (!wait_synced(sys, a, b, id_a.id(), 60s))
    std::fprintf(stderr, "shoal_fed_bench: B did not catch up after the latency phase\n");
  auto st = ask<federation::federation_stats>(sys, b.bridge, proto::stats_atom::value);
  auto phase = st.lag.since(before.lag);
  bench::summary lag;
  lag.n = phase.count();
  lag.median_ns = phase.quantile(0.5);
  lag.p99_ns = phase.quantile(0.99);
  lag.mean_ns = phase.count() > 0 ? phase.sum_ns() / static_cast<double>(phase.count()) : 0;
  char notes[256];
  std::snprintf(notes, sizeof notes,
                "%u updates/s for %u s; oldest change at A -> merged at B, per batch "
                "(batch_delay_ms %u); bucket upper edges (<= 9%% high)",
                rate, seconds, fc.batch_delay_ms);
  bench::print_row("propagation A -> B (ours)", lag, 0, "", notes);
  auto floor = nats_floor(url, 600, 1000);
  bench::print_row("NATS publish -> delivery (floor)", floor, 0, "",
                   "600-byte message, core NATS, second connection; no JetStream, no merge");

  // Throughput: bursts of updates on A; end to end until B holds A's state.
  bool ok = true;
  auto burst_phase = [&](const char* name, const std::vector<uint32_t>& targets) {
    auto sent0 = ask<federation::federation_stats>(sys, a.bridge, proto::stats_atom::value);
    auto merged0 = ask<federation::federation_stats>(sys, b.bridge, proto::stats_atom::value);
    auto t0 = bench::now_ns();
    for (size_t i = 0; i < targets.size(); ++i)
      caf::anon_send(a.router, proto::learn_atom::value,
                     proto::learn_update{targets[i], static_cast<uint32_t>(i % 4), quality(rng)});
    bool synced = wait_synced(sys, a, b, id_a.id(), 300s);
    ok = ok && synced;
    double secs = static_cast<double>(bench::now_ns() - t0) / 1e9;
    auto sent1 = ask<federation::federation_stats>(sys, a.bridge, proto::stats_atom::value);
    auto merged1 = ask<federation::federation_stats>(sys, b.bridge, proto::stats_atom::value);
    auto deltas = merged1.deltas_merged - merged0.deltas_merged;
    bench::summary n;
    n.n = targets.size();
    char buf[320];
    std::snprintf(buf, sizeof buf,
                  "%s; %zu updates in %.2f s; A published %llu deltas in %llu batches, B "
                  "merged %llu (%.0f deltas/s)",
                  synced ? "B converged" : "B DID NOT converge", targets.size(), secs,
                  static_cast<unsigned long long>(sent1.deltas_sent - sent0.deltas_sent),
                  static_cast<unsigned long long>(sent1.batches_sent - sent0.batches_sent),
                  static_cast<unsigned long long>(deltas), static_cast<double>(deltas) / secs);
    bench::print_row(name, n, static_cast<double>(targets.size()) / secs, "updates", buf);
  };
  std::vector<uint32_t> every(patterns);
  for (uint32_t i = 0; i < patterns; ++i)
    every[i] = i + 1;
  std::shuffle(every.begin(), every.end(), rng);
  // The first change of a pattern A created carries its centroid (its
  // announcement, ~1.6 KB); later ones only statistics (~200 bytes).
  burst_phase("sustained, first update per pattern, announced (A -> B)", every);
  std::shuffle(every.begin(), every.end(), rng);
  burst_phase("sustained, one update per pattern (A -> B)", every);
  std::vector<uint32_t> hot(burst);
  for (auto& t : hot)
    t = pick(rng);
  burst_phase("sustained, repeated updates (A -> B)", hot);

  auto stop = [](auto& hdl) {
    caf::anon_send_exit(hdl, caf::exit_reason::user_shutdown);
    hdl = std::decay_t<decltype(hdl)>{};
  };
  for (auto* h : {&a, &b}) {
    stop(h->bridge);
    stop(h->router);
    stop(h->telemetry);
  }
  return ok ? 0 : 1;
}
