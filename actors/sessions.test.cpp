#include "actors/sessions.hpp"

#include "proto/error.hpp"
#include "store/testing.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

using namespace shoal::actors;
using namespace shoal::store::testing;
namespace fs = std::filesystem;

namespace {

std::vector<float> unit(std::initializer_list<float> v) {
  std::vector<float> x(v);
  float n = 0;
  for (float a : x)
    n += a * a;
  for (auto& a : x)
    a /= std::sqrt(n);
  return x;
}

} // namespace

TEST_CASE("session records round-trip, malformed bytes are refused") {
  session s{"chat-1", "alice", {0.6f, 0.8f}, 3, "lora-a", 100, 200, {"demo-tiny", 70, 5}};
  auto back = decode_session(encode(s));
  REQUIRE(back);
  CHECK(back->id == "chat-1");
  CHECK(back->user == "alice");
  CHECK(back->context == s.context);
  CHECK(back->turns == 3);
  CHECK(back->adapter == "lora-a");
  CHECK(back->last_ms == 200);
  CHECK(back->kv.tier == "demo-tiny");
  CHECK(back->kv.tokens == 70);
  CHECK(back->kv.pages == 5);
  auto bytes = encode(s);
  for (size_t cut : {size_t{0}, size_t{1}, size_t{10}, bytes.size() - 1})
    CHECK_FALSE(decode_session(bytes.substr(0, cut)));
  CHECK_FALSE(decode_session(bytes + "x"));
  auto wrong_version = bytes;
  wrong_version[0] = 9;
  CHECK_FALSE(decode_session(wrong_version));
}

TEST_CASE("session ids are checked") {
  CHECK_FALSE(check_session_id("chat-42_a.b:c"));
  CHECK(check_session_id(""));
  CHECK(check_session_id(std::string(129, 'a')));
  CHECK(check_session_id("has space"));
  CHECK(check_session_id("slash/inside"));
}

TEST_CASE("session_index: turns, users, similarity, erase and idle expiry") {
  auto idx = *session_index::open(nullptr, nullptr);
  CHECK_FALSE(idx->persistent());
  idx->record_turn("a", "alice", unit({1, 0, 0}), {"t", 20, 2}, 1000);
  idx->record_turn("b", "alice", unit({0, 1, 0}), {"t", 30, 2}, 2000);
  auto a2 = idx->record_turn("a", "", unit({0, 0, 1}), {"t", 50, 4}, 3000);
  idx->record_turn("c", "bob", unit({0, 0.2f, 1}), {"t", 10, 1}, 4000);
  CHECK(a2.turns == 2);
  CHECK(a2.user == "alice"); // kept when a turn names no user
  CHECK(a2.kv.tokens == 50);
  CHECK(a2.created_ms == 1000);
  CHECK(a2.last_ms == 3000);
  // The context is the normalized mean of the turns.
  CHECK(a2.context[0] == doctest::Approx(std::sqrt(0.5)));
  CHECK(a2.context[2] == doctest::Approx(std::sqrt(0.5)));
  REQUIRE(idx->find("a"));
  CHECK_FALSE(idx->find("zz"));
  auto alice = idx->by_user("alice");
  REQUIRE(alice.size() == 2);
  CHECK(alice[0].id == "a"); // most recent first
  CHECK(alice[1].id == "b");
  CHECK(idx->by_user("nobody").empty());
  auto near = idx->similar(unit({0, 0.1f, 1}), 2);
  REQUIRE(near.size() == 2);
  CHECK(near[0].first.id == "c");
  CHECK(near[1].first.id == "a");
  CHECK(near[0].second > near[1].second);
  // A user change moves the session between users.
  idx->record_turn("c", "carol", unit({0, 0, 1}), {"t", 12, 1}, 4500);
  CHECK(idx->by_user("bob").empty());
  CHECK(idx->by_user("carol").size() == 1);
  CHECK(idx->erase("b"));
  CHECK_FALSE(idx->erase("b"));
  CHECK(idx->by_user("alice").size() == 1);
  // Idle for more than 1000 ms at t = 4200: only "a" (last 3000) goes.
  CHECK(idx->expire(4200, 1000) == 1);
  CHECK_FALSE(idx->find("a"));
  CHECK(idx->find("c"));
  CHECK(idx->size() == 1);
}

TEST_CASE("session_index: sealed in LMDB, reloaded, expiry deletes the records") {
  auto dir = temp_dir("sessions");
  auto seal =
    std::make_shared<const shoal::crypto::sealer>(*shoal::crypto::sealer::from_hex(seal_key_a));
  {
    auto env = shoal::store::environment::open({dir});
    REQUIRE(env);
    auto idx = session_index::open(*env, seal);
    REQUIRE(idx);
    CHECK((*idx)->persistent());
    (*idx)->record_turn("secret-session-77", "mallory-the-user", unit({1, 1}), {"t", 9, 1}, 10);
    (*idx)->record_turn("other", "", unit({1, 0}), {"t", 9, 1}, 5000);
  }
  auto disk = slurp_dir(dir);
  CHECK(disk.find("mallory-the-user") == std::string::npos);
  {
    auto env = shoal::store::environment::open({dir});
    auto idx = session_index::open(*env, seal);
    REQUIRE(idx);
    auto s = (*idx)->find("secret-session-77");
    REQUIRE(s);
    CHECK(s->user == "mallory-the-user");
    CHECK((*idx)->by_user("mallory-the-user").size() == 1);
    CHECK((*idx)->expire(6000, 1000) == 1);
  }
  {
    auto env = shoal::store::environment::open({dir});
    auto idx = session_index::open(*env, seal);
    CHECK((*idx)->size() == 1);
    CHECK_FALSE((*idx)->find("secret-session-77"));
    // Another key opens nothing (the node refuses such a key at start).
    auto other =
      std::make_shared<const shoal::crypto::sealer>(*shoal::crypto::sealer::from_hex(seal_key_b));
    auto wrong = session_index::open(*env, other);
    REQUIRE(wrong);
    CHECK((*wrong)->size() == 0);
  }
  fs::remove_all(dir);
}

TEST_CASE("session_index: concurrent turns on shared sessions are all counted") {
  auto idx = *session_index::open(nullptr, nullptr);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 1000; ++i) {
        std::string id = "s" + std::to_string(i % 10);
        idx->record_turn(id, "u" + std::to_string(t % 2), unit({1, float(i % 3)}), {"t", 1, 1}, i);
        auto s = idx->find(id);
        REQUIRE(s); // readers always see a whole record
      }
    });
  for (auto& th : threads)
    th.join();
  uint32_t turns = 0;
  for (int i = 0; i < 10; ++i)
    turns += idx->find("s" + std::to_string(i))->turns;
  CHECK(turns == 4000);
  CHECK(idx->by_user("u0").size() + idx->by_user("u1").size() == 10);
}
