#include "store/sealed.hpp"

#include "proto/error.hpp"
#include "store/environment.hpp"
#include "store/testing.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

using namespace shoal::store;
namespace fs = std::filesystem;
using namespace shoal::store::testing;

TEST_CASE("sealer: round trip, fresh nonces, and every kind of tampering fails") {
  auto a = sealer::from_hex(seal_key_a);
  REQUIRE(a);
  const std::string msg = "session 42: user alice, 17 turns";
  auto r1 = a->seal(msg, "k1"), r2 = a->seal(msg, "k1");
  CHECK(r1.size() == msg.size() + sealer::overhead);
  CHECK(r1 != r2); // a new nonce each time
  CHECK(r1.find("alice") == std::string::npos);
  auto back = a->open(r1, "k1");
  REQUIRE(back);
  CHECK(*back == msg);
  CHECK_FALSE(a->open(r1, "k2")); // bound to its key
  auto b = sealer::from_hex(seal_key_b);
  REQUIRE(b);
  auto wrong = b->open(r1, "k1");
  REQUIRE_FALSE(wrong);
  CHECK(shoal::view(wrong.error()).message.find("memory.seal_key") != std::string::npos);
  for (size_t i : {size_t{0}, size_t{30}, r1.size() - 1}) {
    auto t = r1;
    t[i] ^= 1;
    CHECK_FALSE(a->open(t, "k1"));
  }
  CHECK_FALSE(a->open(r1.substr(0, 20), "k1"));
}

TEST_CASE("sealer: keys must be 64 hex digits") {
  CHECK_FALSE(sealer::from_hex(""));
  CHECK_FALSE(sealer::from_hex("abcd"));
  CHECK_FALSE(sealer::from_hex(std::string(63, 'a') + "g"));
  auto e = sealer::from_hex("xyz");
  REQUIRE_FALSE(e);
  CHECK(shoal::view(e.error()).message.find("64 hex digits") != std::string::npos);
}

TEST_CASE("check_seal_key: first key wins, another or a missing key is refused clearly") {
  auto dir = temp_dir("seal");
  auto a = *sealer::from_hex(seal_key_a), b = *sealer::from_hex(seal_key_b);
  {
    auto env = environment::open({dir});
    REQUIRE(env);
    CHECK_FALSE(check_seal_key(**env, nullptr)); // nothing sealed: no key is fine
    CHECK_FALSE(check_seal_key(**env, &a));      // first use records the check
    CHECK_FALSE(check_seal_key(**env, &a));
    auto wrong = check_seal_key(**env, &b);
    REQUIRE(wrong);
    CHECK(shoal::view(wrong).message.find("does not match") != std::string::npos);
    auto missing = check_seal_key(**env, nullptr);
    REQUIRE(missing);
    CHECK(shoal::view(missing).message.find("not set") != std::string::npos);
  }
  fs::remove_all(dir);
}
