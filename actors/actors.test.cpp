// Actor-level tests with a real actor system and a real LMDB environment.
#include "actors/actors.hpp"

#include "actors/testing.hpp"
#include "engine/embedder.hpp"
#include "proto/error.hpp"
#include "proto/messages.hpp"
#include "proto/records.hpp"

#include <caf/all.hpp>
#include <doctest/doctest.h>

#include <filesystem>
#include <random>

namespace fs = std::filesystem;
using namespace shoal;
using namespace shoal::actors;
using namespace shoal::proto;
using shoal::actors::testing::temp_dir;

namespace {

/// A node's actors on one data directory, shut down like the node does.
struct node_actors {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::actor telemetry, witness, router, sona;
  engine::embedder emb;

  explicit node_actors(const fs::path& dir) {
    sys = std::make_unique<caf::actor_system>(cfg);
    auto env = store::environment::open({dir});
    REQUIRE(env);
    router_config rc;
    rc.seed = 1;
    auto bank = pattern_bank::open(emb.dim(), rc, *env);
    REQUIRE(bank);
    telemetry = spawn_telemetry(*sys, rc.tiers.size());
    witness = spawn_witness(*sys, {100, 50}, *env);
    router = spawn_router(*sys, std::shared_ptr<pattern_bank>(std::move(*bank)), witness,
                          telemetry);
    std::vector<double> costs;
    for (auto& t : rc.tiers)
      costs.push_back(t.cost);
    sona = spawn_sona(*sys, {16}, costs, router, witness, telemetry);
  }

  route_decision route(const std::string& text) {
    route_query q;
    q.embedding = emb.embed(text);
    caf::scoped_actor self{*sys};
    route_decision out;
    self->request(router, caf::infinite, route_atom::value, q)
      .receive([&](route_decision& d) { out = std::move(d); },
               [&](caf::error& e) { FAIL(caf::to_string(e)); });
    return out;
  }

  caf::expected<learn_update> feedback(uint64_t id, double quality) {
    caf::scoped_actor self{*sys};
    caf::expected<learn_update> out{caf::error{}};
    self->request(sona, caf::infinite, feedback_atom::value, proto::feedback{id, quality, 0})
      .receive([&](learn_update& u) { out = u; }, [&](caf::error& e) { out = e; });
    return out;
  }

  template <class T>
  T ask(const caf::actor& who) {
    caf::scoped_actor self{*sys};
    T out{};
    self->request(who, caf::infinite, stats_atom::value)
      .receive([&](T& x) { out = std::move(x); }, [&](caf::error&) {});
    return out;
  }

  ~node_actors() {
    for (auto* a : {&sona, &router, &witness, &telemetry}) {
      caf::anon_send_exit(*a, caf::exit_reason::user_shutdown);
      *a = caf::actor{}; // a detached actor's thread ends when its last handle is gone
    }
    sys.reset(); // blocks until every actor has quit
  }
};

} // namespace

TEST_CASE("a restart keeps patterns and witness records, with feedback joined") {
  auto dir = temp_dir("restart");
  uint64_t id_a = 0, pattern_a = 0;
  {
    node_actors n(dir);
    auto a = n.route("library for parsing JSON documents in C");
    n.route("puzzle game with falling blocks");
    id_a = a.request_id;
    pattern_a = a.pattern_id;
    auto up = n.feedback(id_a, 0.9);
    REQUIRE(up);
    CHECK(up->pattern_id == pattern_a);
    CHECK(n.ask<router_stats>(n.router).n_patterns == 2);
  } // graceful shutdown: witness commits, router writes patterns and index
  {
    auto env = store::environment::open({dir});
    REQUIRE(env);
    CHECK((*env)->count(store::table::witness).value() == 2);
    auto bytes = (*env)->get(store::table::witness, store::u64_key(id_a));
    REQUIRE(bytes);
    REQUIRE(bytes->has_value());
    auto rec = decode_witness(**bytes);
    REQUIRE(rec);
    CHECK(rec->has_feedback);
    CHECK(rec->quality == doctest::Approx(0.9));
    CHECK(rec->embedding.size() == 384);
    CHECK(rec->decision.pattern_id == pattern_a);
  }
  node_actors n(dir);
  auto st = n.ask<router_stats>(n.router);
  CHECK(st.n_patterns == 2);
  CHECK(st.n_index_rebuilds == 0);
  // The same text finds its old pattern; the learned statistic is still there.
  auto again = n.route("library for parsing JSON documents in C");
  CHECK_FALSE(again.new_pattern);
  CHECK(again.pattern_id == pattern_a);
  // Feedback for a request routed before the restart is joined via the witness
  // log, and a second feedback for it is refused.
  auto dup = n.feedback(id_a, 0.5);
  REQUIRE_FALSE(dup);
  CHECK(view(dup.error()).code == errc::conflict);
  fs::remove_all(dir);
}

TEST_CASE("feedback for an unknown request id is not_found, a repeat is a conflict") {
  auto dir = temp_dir("feedback");
  node_actors n(dir);
  auto r = n.feedback(0x1234, 0.5);
  REQUIRE_FALSE(r);
  CHECK(view(r.error()).code == errc::not_found);
  auto d = n.route("text to route");
  CHECK(n.feedback(d.request_id, 1.0));
  auto again = n.feedback(d.request_id, 1.0);
  REQUIRE_FALSE(again);
  CHECK(view(again.error()).code == errc::conflict);
  auto tel = n.ask<telemetry_snapshot>(n.telemetry);
  CHECK(tel.n_routed == 1);
  CHECK(tel.n_feedback == 1);
  fs::remove_all(dir);
}

TEST_CASE("the witness log commits in batches of at most batch_max records") {
  auto dir = temp_dir("batch");
  {
    node_actors n(dir);
    for (int i = 0; i < 250; ++i)
      n.route("request number " + std::to_string(i));
    auto ws = n.ask<witness_stats>(n.witness);
    CHECK(ws.n_records + ws.n_pending == 250);
    CHECK(ws.n_transactions >= 2);
  }
  auto env = store::environment::open({dir});
  CHECK((*env)->count(store::table::witness).value() == 250);
  fs::remove_all(dir);
}
