#include "crypto/sealer.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace shoal;
using namespace shoal::crypto;

namespace {
const std::string key_a(64, 'a'), key_b = std::string(62, '0') + "1f";
} // namespace

TEST_CASE("sealer: round trip, fresh nonces, and every kind of tampering fails") {
  auto a = sealer::from_hex(key_a, "memory.seal_key");
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
  auto b = sealer::from_hex(key_b, "memory.seal_key");
  REQUIRE(b);
  auto wrong = b->open(r1, "k1");
  REQUIRE_FALSE(wrong);
  CHECK(wrong.err().code == errc::corrupt_data);
  CHECK(wrong.err().message.find("memory.seal_key") != std::string::npos);
  CHECK(wrong.err().context == "memory.seal_key");
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
  auto e = sealer::from_hex("xyz", "memory.seal_key");
  REQUIRE_FALSE(e);
  CHECK(e.err().code == errc::invalid_argument);
  CHECK(e.err().message.find("64 hex digits") != std::string::npos);
  CHECK(e.err().context == "memory.seal_key");
}
