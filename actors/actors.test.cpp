// Actor-level tests with a real actor system and a real LMDB environment.
#include "actors/actors.hpp"

#include "router/testing.hpp"
#include "engine/embedder.hpp"
#include "proto/error.hpp"
#include "proto/messages.hpp"
#include "proto/records.hpp"
#include "store/policy_table.hpp"

#include <caf/all.hpp>
#include <doctest/doctest.h>

#include <filesystem>
#include <atomic>
#include <random>
#include <thread>

namespace fs = std::filesystem;
using namespace shoal;
using namespace shoal::actors;
using namespace shoal::proto;
using shoal::router::testing::temp_dir;

namespace {

/// A node's actors on one data directory, shut down like the node does.
struct node_actors {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  telemetry_actor telemetry;
  witness_actor witness;
  sona_actor sona;
  router_actor router;
  engine::embedder emb;

  explicit node_actors(const fs::path& dir, std::shared_ptr<core::memory_budget> budget = nullptr,
                       witness_config wc = {100, 50}) {
    sys = std::make_unique<caf::actor_system>(cfg);
    auto env = store::environment::open({dir});
    REQUIRE(env);
    router::router_config rc;
    rc.seed = 1;
    auto bank = router::pattern_bank::open(emb.dim(), rc, *env);
    REQUIRE(bank);
    telemetry = spawn_telemetry(*sys, rc.tiers.size());
    witness = spawn_witness(*sys, wc, *env);
    router = spawn_router(*sys, std::shared_ptr<router::pattern_bank>(std::move(*bank)), witness,
                          telemetry);
    std::vector<double> costs;
    for (auto& t : rc.tiers)
      costs.push_back(t.cost);
    learn::router_v2_config mc;
    auto v2 = load_router_v2(**env, mc);
    REQUIRE(v2);
    sona = spawn_sona(*sys, {16}, emb.dim(), costs, router, witness, telemetry, *env,
                      std::move(*v2), std::move(budget));
    // SONA hands the router its model while it starts: once it answers, the
    // router's mailbox has the model ahead of any query sent from here on.
    REQUIRE(learn());
  }

  /// sona's status, or after triggering `loop`.
  caf::expected<learn_status> learn(const std::string& loop = "") {
    caf::scoped_actor self{*sys};
    caf::expected<learn_status> out{caf::error{}};
    auto on = [&](learn_status& s) { out = std::move(s); };
    auto err = [&](caf::error& e) { out = std::move(e); };
    if (loop.empty())
      self->request(sona, caf::infinite, status_atom::value).receive(on, err);
    else
      self->request(sona, caf::infinite, trigger_atom::value, loop).receive(on, err);
    return out;
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

  /// The witness log's record of a request (from LMDB or the archive).
  caf::expected<witness_entry> witness_record(uint64_t id) {
    caf::scoped_actor self{*sys};
    caf::expected<witness_entry> out{caf::error{}};
    self->request(witness, caf::infinite, lookup_atom::value, id)
      .receive([&](witness_entry& w) { out = std::move(w); }, [&](caf::error& e) { out = e; });
    return out;
  }

  template <class T, class Handle>
  T ask(const Handle& who) {
    caf::scoped_actor self{*sys};
    T out{};
    self->request(who, caf::infinite, stats_atom::value)
      .receive([&](T& x) { out = std::move(x); }, [&](caf::error&) {});
    return out;
  }

  ~node_actors() {
    // A detached actor's thread ends when its last handle is gone.
    auto stop = [](auto& hdl) {
      caf::anon_send_exit(hdl, caf::exit_reason::user_shutdown);
      hdl = std::decay_t<decltype(hdl)>{};
    };
    stop(sona);
    stop(router);
    stop(witness);
    stop(telemetry);
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

TEST_CASE("the deep loop moves old witness records to archive segments, where look-ups and "
          "feedback still find them") {
  auto dir = temp_dir("archive");
  std::vector<uint64_t> old_ids;
  uint64_t fresh = 0;
  {
    // Records older than 2 s leave LMDB, 100 to a segment.
    node_actors n(dir, nullptr, {100, 50, 2, 100});
    for (int i = 0; i < 250; ++i)
      old_ids.push_back(n.route("archived request number " + std::to_string(i)).request_id);
    std::this_thread::sleep_for(std::chrono::milliseconds(2100));
    fresh = n.route("a request from just now").request_id;
    auto st = n.learn("deep");
    REQUIRE(st);
    CHECK(st->deep_summary.find("250 records archived in 3 segments") != std::string::npos);
    CHECK(n.ask<witness_stats>(n.witness).n_archived == 250);
    size_t segments = 0;
    for (const auto& e : fs::directory_iterator(dir / "witness-archive"))
      segments += e.path().extension() == ".shoalarc";
    CHECK(segments == 3);
    // The archived records are still found, with everything they held.
    auto rec = n.witness_record(old_ids[120]);
    REQUIRE(rec);
    CHECK(rec->decision.request_id == old_ids[120]);
    CHECK(rec->embedding.size() == 384);
    // Feedback for an archived request joins (its trajectory left SONA's
    // ring of 16): the record comes back to LMDB with it.
    auto up = n.feedback(old_ids[0], 0.75);
    REQUIRE(up);
    rec = n.witness_record(old_ids[0]);
    REQUIRE(rec);
    CHECK(rec->has_feedback);
    // A second deep run archives it again, with its feedback.
    st = n.learn("deep");
    REQUIRE(st);
    CHECK(st->deep_summary.find("1 records archived in 1 segments") != std::string::npos);
  }
  {
    auto env = store::environment::open({dir});
    REQUIRE(env);
    CHECK((*env)->count(store::table::witness).value() == 1); // the fresh one
  }
  {
    // After a restart the archive still answers, the newest segment first.
    node_actors n(dir, nullptr, {100, 50, 2, 100});
    auto rec = n.witness_record(old_ids[0]);
    REQUIRE(rec);
    CHECK(rec->has_feedback);
    CHECK(rec->quality == doctest::Approx(0.75));
    CHECK(n.witness_record(old_ids[249]));
    CHECK(n.witness_record(fresh));
    auto none = n.witness_record(12345);
    REQUIRE_FALSE(none);
    CHECK(view(none.error()).code == errc::not_found);
  }
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

TEST_CASE("sona: feedback drives the instant loop, a background run trains router v2, a restart "
          "restores it") {
  auto dir = temp_dir("sona");
  const char* topics[] = {"python module for parsing YAML files", "puzzle game with falling blocks",
                          "TrueType font with Cyrillic glyphs", "kernel driver for network cards"};
  {
    node_actors n(dir);
    auto st = n.learn();
    REQUIRE(st);
    CHECK(st->v2);
    CHECK_FALSE(st->v2_ready); // a new model: router v1 decides until a run trained it
    // Nothing to train on yet: refused with a reason.
    auto early = n.learn("background");
    REQUIRE_FALSE(early);
    CHECK(view(early.error()).message.find("no trajectories") != std::string::npos);
    for (int i = 0; i < 80; ++i) {
      auto d = n.route(std::string(topics[i % 4]) + " " + std::to_string(i));
      REQUIRE(n.feedback(d.request_id, d.tier == 1 ? 0.9 : 0.4));
    }
    st = n.learn();
    REQUIRE(st);
    CHECK(st->instant_steps == 80); // every feedback found its trajectory in the ring
    CHECK(st->completed == 80);
    CHECK(st->pending == 0);
    CHECK(st->dropped == 0);
    st = n.learn("background");
    REQUIRE(st);
    CHECK(st->background_runs == 1);
    CHECK(st->v2_ready);
    CHECK(st->model_version == 1);
    CHECK(st->since_background == 0);
    CHECK(st->last_error.empty());
    // Router v2 now routes; feedback keeps flowing through it.
    auto d = n.route(topics[0]);
    CHECK(n.feedback(d.request_id, 0.8));
    // The deep loop consolidates the pattern bank.
    st = n.learn("deep");
    REQUIRE(st);
    CHECK(st->deep_runs == 1);
    CHECK(st->deep_summary.find("patterns") != std::string::npos);
    CHECK(st->scoped_adapters == 0);
    // Patterns now have categories: feedback trains one adapter per scope.
    for (int i = 0; i < 20; ++i) {
      auto d2 = n.route(std::string(topics[i % 4]) + " again " + std::to_string(i));
      REQUIRE(n.feedback(d2.request_id, 0.7));
    }
    st = n.learn();
    REQUIRE(st);
    CHECK(st->scoped_adapters >= 1);
    auto bad = n.learn("weekly");
    REQUIRE_FALSE(bad);
    CHECK(view(bad.error()).message.find("'weekly'") != std::string::npos);
  }
  {
    auto env = store::environment::open({dir});
    REQUIRE(env);
    auto p = store::get_policy(**env, "router/v2");
    REQUIRE(p);
    REQUIRE(p->has_value());
    CHECK((*p)->loop == "background");
    CHECK((*p)->kind == "router");
  }
  node_actors n(dir);
  auto st = n.learn();
  REQUIRE(st);
  CHECK(st->v2_ready); // restored from the policies table
  CHECK(st->model_version == 1);
  fs::remove_all(dir);
}

TEST_CASE(
  "trajectory ring: one producer and one consumer thread, every trajectory once, in order") {
  learn::trajectory_ring ring(64);
  learn::router_v2_features f;
  f.rewards = {0.1f, 0.2f, 0.3f, 0.4f};
  f.counts = {1, 2, 3, 4};
  std::vector<float> emb(384, 0.5f), h(32, 0.0f);
  const uint64_t n = 100000;
  std::atomic<bool> done{false};
  uint64_t pushed = 0;
  std::thread producer([&] {
    for (uint64_t i = 1; i <= n; ++i)
      if (ring.push(i, f.input(emb, static_cast<float>(i), 1.0f, 0.0f), h,
                    static_cast<uint32_t>(i % 4), 1.0f))
        ++pushed;
    done = true;
  });
  uint64_t received = 0, last = 0;
  bool in_order = true, intact = true;
  auto take = [&](uint64_t id, const learn::router_v2_trajectory& t) {
    in_order = in_order && id > last;
    intact = intact && t.prompt_tokens == static_cast<float>(id) && t.tier == id % 4
             && t.embedding.size() == 384 && t.neighbor_counts.size() == 4;
    last = id;
    ++received;
  };
  while (!done)
    ring.drain(take);
  producer.join();
  ring.drain(take);
  CHECK(in_order);
  CHECK(intact);
  CHECK(received == pushed);
  CHECK(pushed + ring.dropped() == n); // a full ring refuses, and counts it
}

TEST_CASE(
  "sona: scoped adapters reserve from the memory budget, a refusal keeps the shared adapter") {
  using use = core::memory_budget::use;
  const uint64_t one = scoped_adapter_bytes(learn::router_v2_config{});
  for (uint64_t limit : {uint64_t{0}, uint64_t{64} << 20}) {
    auto dir = temp_dir("sona-budget");
    auto budget = std::make_shared<core::memory_budget>(limit);
    {
      node_actors n(dir, budget);
      for (int i = 0; i < 12; ++i) // patterns to consolidate into categories
        REQUIRE(n.feedback(
          n.route("topic " + std::to_string(i % 3) + " text " + std::to_string(i)).request_id,
          0.5));
      REQUIRE(n.learn("deep"));
      for (int i = 0; i < 12; ++i)
        REQUIRE(n.feedback(
          n.route("topic " + std::to_string(i % 3) + " more " + std::to_string(i)).request_id,
          0.6));
      auto st = n.learn();
      REQUIRE(st);
      if (limit == 0) {
        CHECK(st->scoped_adapters == 0);
        CHECK(st->adapter_refusals > 0);
        CHECK(st->instant_steps == 24); // the instant loop went on with the shared adapter
      } else {
        CHECK(st->scoped_adapters >= 1);
        CHECK(st->adapter_refusals == 0);
        CHECK(budget->used(use::adapter) == st->scoped_adapters * one);
      }
    }
    CHECK(budget->used(use::adapter) == 0); // given back when SONA ends
    fs::remove_all(dir);
  }
}

TEST_CASE("router v2 carries a session's FastGRNN state from turn to turn") {
  auto dir = temp_dir("v2-sessions");
  node_actors n(dir);
  // Route through our own ring and model (SONA publishes only after feedback).
  auto ring = std::make_shared<learn::trajectory_ring>(64);
  auto model = std::make_shared<const learn::router_v2_model>(learn::router_v2_config{});
  router_v2_handoff h;
  h.ring = ring;
  h.model = model;
  h.adapters = std::make_shared<const learn::scoped_adapters>();
  h.sessions = 2;
  caf::anon_send(n.router, v2_atom::value, std::move(h));
  auto route = [&](const std::string& text, const std::string& session) {
    route_query q;
    q.embedding = n.emb.embed(text);
    q.session_id = session;
    caf::scoped_actor self{*n.sys};
    self->request(n.router, caf::infinite, route_atom::value, q)
      .receive([](route_decision&) {}, [](caf::error& e) { FAIL(caf::to_string(e)); });
  };
  route("first turn about fonts", "s1");
  route("second turn about fonts", "s1");
  route("a turn without a session", "");
  route("first turn of another session", "s2");
  route("s3 pushes s1 out", "s3");
  route("s1 again, forgotten", "s1");
  std::vector<learn::router_v2_trajectory> got;
  ring->drain([&](uint64_t, const learn::router_v2_trajectory& t) { got.push_back(t); });
  REQUIRE(got.size() == 6);
  auto zero = [](const std::vector<float>& h) {
    return std::all_of(h.begin(), h.end(), [](float x) { return x == 0.0f; });
  };
  CHECK(zero(got[0].h_prev)); // a new session starts from h = 0
  // The second turn starts from the state the first turn ended in.
  learn::router_v2_trace tr;
  model->forward(got[0].input(), got[0].h_prev, tr);
  CHECK_FALSE(zero(got[1].h_prev));
  CHECK(got[1].h_prev == tr.h);
  CHECK(zero(got[2].h_prev)); // no session: every turn afresh
  CHECK(zero(got[3].h_prev));
  CHECK(zero(got[5].h_prev)); // only 2 sessions kept: s1 was the least recently used
  fs::remove_all(dir);
}

TEST_CASE("router v2 sees each request's latency budget and the node's memory pressure") {
  auto dir = temp_dir("v2-context");
  node_actors n(dir);
  auto ring = std::make_shared<learn::trajectory_ring>(64);
  auto memory = std::make_shared<core::memory_budget>(uint64_t{1000});
  router_v2_handoff h;
  h.ring = ring;
  h.model = std::make_shared<const learn::router_v2_model>(learn::router_v2_config{});
  h.adapters = std::make_shared<const learn::scoped_adapters>();
  h.latency_budget_max_ms = 8000;
  h.memory = memory;
  caf::anon_send(n.router, v2_atom::value, std::move(h));
  caf::scoped_actor self{*n.sys};
  auto route = [&](double budget_ms) {
    route_query q;
    q.embedding = n.emb.embed("a question about compilers");
    q.latency_budget_ms = budget_ms;
    caf::error err;
    self->request(n.router, caf::infinite, route_atom::value, q)
      .receive([](route_decision&) {}, [&](caf::error& e) { err = e; });
    return err;
  };
  REQUIRE_FALSE(route(2000)); // a quarter of the largest budget
  REQUIRE(memory->try_reserve(core::memory_budget::use::kv, 600));
  REQUIRE_FALSE(route(0));     // no budget; 60% of the memory in use
  REQUIRE_FALSE(route(50000)); // beyond the largest: as loose as it gets
  for (double bad : {-1.0, std::nan(""), 1e12}) {
    auto err = route(bad);
    CHECK(view(err).code == errc::invalid_argument);
    CHECK(view(err).message.find("latency_budget_ms") != std::string::npos);
  }
  std::vector<learn::router_v2_trajectory> got;
  ring->drain([&](uint64_t, const learn::router_v2_trajectory& t) { got.push_back(t); });
  REQUIRE(got.size() == 3); // the refused queries left nothing
  CHECK(got[0].latency_budget == doctest::Approx(0.25));
  CHECK(got[0].memory_pressure == 0);
  CHECK(got[1].latency_budget == 1);
  CHECK(got[1].memory_pressure == doctest::Approx(0.6));
  CHECK(got[2].latency_budget == 1);
  // The budget reaches the recurrent state (the model does not ignore it).
  learn::router_v2_model m(learn::router_v2_config{});
  learn::router_v2_trace a, b;
  m.forward(got[0].input(), got[0].h_prev, a);
  auto loose = got[0];
  loose.latency_budget = 1;
  m.forward(loose.input(), loose.h_prev, b);
  CHECK(a.h != b.h);
  memory->release(core::memory_budget::use::kv, 600);
  fs::remove_all(dir);
}

TEST_CASE(
  "a deep run plans off the router thread: a second one meanwhile is refused, routing goes on") {
  auto dir = temp_dir("deep-conflict");
  node_actors n(dir);
  for (int i = 0; i < 30; ++i)
    n.route("package number " + std::to_string(i) + " for topic " + std::to_string(i % 5));
  caf::scoped_actor self{*n.sys};
  // Both requests are queued before the router starts the first run, so the
  // second arrives while the first is being planned.
  auto first = self->request(n.router, caf::infinite, deep_atom::value);
  auto second = self->request(n.router, caf::infinite, deep_atom::value);
  std::string summary;
  caf::error refused;
  second.receive([](std::string&) { FAIL("a second deep run started"); },
                 [&](caf::error& e) { refused = e; });
  CHECK(view(refused).code == errc::conflict);
  CHECK(view(refused).message.find("in progress") != std::string::npos);
  n.route("routing works while the run is planned");
  first.receive([&](std::string& s) { summary = s; },
                [](caf::error& e) { FAIL(caf::to_string(e)); });
  CHECK(summary.find("patterns") != std::string::npos);
  fs::remove_all(dir);
}
