#include "crypto/keys.hpp"
#include "crypto/trust_list.hpp"
#include "crypto/identity.hpp"

#include <doctest/doctest.h>

using namespace shoal;
using namespace shoal::crypto;

namespace {

identity make(uint8_t fill) {
  std::array<uint8_t, 32> seed;
  seed.fill(fill);
  return identity::from_seed(seed);
}

} // namespace

TEST_CASE("key lists parse name=hexkey items and name the bad one") {
  const std::string hex(64, 'a');
  auto keys = parse_key_list(" ops=" + hex + " , lab=" + std::string(64, '0'));
  REQUIRE(keys);
  REQUIRE(keys->size() == 2);
  CHECK((*keys)[0].name == "ops");
  CHECK((*keys)[0].key[0] == 0xaa);
  CHECK((*keys)[1].name == "lab");
  auto empty = parse_key_list("");
  REQUIRE(empty);
  CHECK(empty->empty());
  auto short_key = parse_key_list("ops=1234");
  REQUIRE_FALSE(short_key);
  CHECK(short_key.err().code == errc::invalid_argument);
  CHECK(short_key.err().message.find("ops") != std::string::npos);
  auto no_name = parse_key_list(hex);
  REQUIRE_FALSE(no_name);
  CHECK(no_name.err().message.find("name=hexkey") != std::string::npos);
}

TEST_CASE("hex round-trips keys and refuses other lengths and digits") {
  auto a = make(3);
  const std::string hex = to_hex(a.pk());
  CHECK(hex.size() == 64);
  auto back = parse_public_key("  " + hex + "\n");
  REQUIRE(back);
  CHECK(*back == a.pk());
  CHECK_FALSE(parse_public_key(hex.substr(2)));
  CHECK_FALSE(parse_public_key(std::string(63, 'a') + "g"));
  std::array<uint8_t, 2> two{};
  CHECK(from_hex("0aFf", two));
  CHECK(two[0] == 0x0a);
  CHECK(two[1] == 0xff);
  CHECK_FALSE(from_hex("0a", two));
}

TEST_CASE("a key's id is its first 8 bytes, little-endian") {
  public_key pk{};
  for (size_t i = 0; i < pk.size(); ++i)
    pk[i] = static_cast<uint8_t>(i + 1);
  CHECK(key_id(pk) == 0x0807060504030201ull);
}

TEST_CASE("trust lists parse, find by name and tell which key signed a message") {
  auto a = make(3), b = make(4), c = make(5);
  auto t = trust_list::parse(" n1=" + to_hex(a.pk()) + " , n2=" + to_hex(b.pk()));
  REQUIRE(t);
  CHECK(t->size() == 2);
  CHECK(t->names() == "n1, n2");
  REQUIRE(t->find("n2") != nullptr);
  CHECK(t->find("n2")->key == b.pk());
  CHECK(t->find("n3") == nullptr);
  const std::string msg = "a message";
  auto sig = b.sign(msg);
  REQUIRE(t->signer_of(msg, sig) != nullptr);
  CHECK(t->signer_of(msg, sig)->name == "n2");
  CHECK(t->signer_of("another message", sig) == nullptr);
  CHECK(t->signer_of(msg, c.sign(msg)) == nullptr);
  CHECK(t->signer_of(msg, std::span<const uint8_t>(sig.data(), 10)) == nullptr);
  t->add("n2", c.pk()); // a name keeps its last key
  CHECK(t->size() == 2);
  CHECK(t->signer_of(msg, c.sign(msg))->name == "n2");
  CHECK(trust_list::parse("")->size() == 0);
  auto bad = trust_list::parse("n1=" + to_hex(a.pk()) + ",n2=zz");
  REQUIRE_FALSE(bad);
  CHECK(bad.err().message.find("n2=zz") != std::string::npos);
  CHECK_FALSE(trust_list::parse("justaname"));
}
