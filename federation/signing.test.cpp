#include "federation/signing.hpp"

#include "proto/error.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sys/stat.h>

using namespace shoal;
using namespace shoal::federation;

namespace {

identity make(uint8_t fill) {
  std::array<uint8_t, 32> seed;
  seed.fill(fill);
  return identity::from_seed(seed);
}

} // namespace

TEST_CASE("a sealed envelope verifies for a trusted signer, and nothing else does") {
  auto alice = make(1), mallory = make(2);
  trust_list trusted;
  trusted.add("alice", alice.pk());
  auto e = alice.seal(proto::wire_kind::delta_batch, "payload bytes", "alice");
  auto id = trusted.verify(e);
  REQUIRE(id);
  CHECK(*id == alice.id());

  auto tampered = e;
  tampered.payload[0] ^= 1;
  CHECK(view(trusted.verify(tampered).error()).message.find("bad signature") == 0);
  auto rekinded = e; // a delta batch's signature does not cover it as a digest
  rekinded.kind = proto::wire_kind::digest;
  CHECK_FALSE(trusted.verify(rekinded));
  auto forged = mallory.seal(proto::wire_kind::delta_batch, "payload bytes", "alice");
  CHECK_FALSE(trusted.verify(forged));
  auto unknown = mallory.seal(proto::wire_kind::delta_batch, "x", "mallory");
  auto r = trusted.verify(unknown);
  REQUIRE_FALSE(r);
  CHECK(view(r.error()).message == "untrusted signer 'mallory'");
  auto short_sig = e;
  short_sig.signature.resize(10);
  CHECK_FALSE(trusted.verify(short_sig));
  // The whole envelope survives the wire.
  auto back = proto::decode_envelope(proto::encode(e));
  REQUIRE(back);
  CHECK(trusted.verify(*back));
}

TEST_CASE("the key file is created once (0600) and gives the same identity after") {
  auto dir = std::filesystem::temp_directory_path()
             / ("shoal-key-" + std::to_string(std::random_device{}()));
  auto path = dir / "node.key";
  auto a = identity::load_or_create(path);
  REQUIRE(a);
  struct stat st{};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  auto b = identity::load_or_create(path);
  REQUIRE(b);
  CHECK(a->pk() == b->pk());
  CHECK(a->id() == node_id(a->pk()));
  std::ofstream(path) << "not a key\n";
  auto c = identity::load_or_create(path);
  REQUIRE_FALSE(c);
  CHECK(view(c.error()).code == errc::corrupt_data);
  std::filesystem::remove_all(dir);
}

TEST_CASE("trust lists parse name=hexkey items and name the bad one") {
  auto a = make(3), b = make(4);
  auto t = trust_list::parse(" n1=" + to_hex(a.pk()) + " , n2=" + to_hex(b.pk()));
  REQUIRE(t);
  CHECK(t->size() == 2);
  CHECK(trust_list::parse("")->size() == 0);
  auto bad = trust_list::parse("n1=" + to_hex(a.pk()) + ",n2=zz");
  REQUIRE_FALSE(bad);
  CHECK(view(bad.error()).message.find("n2=zz") != std::string::npos);
  CHECK_FALSE(trust_list::parse("justaname"));
}
