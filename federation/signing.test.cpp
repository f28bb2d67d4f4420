#include "federation/signing.hpp"
#include "federation/testing.hpp"

#include <doctest/doctest.h>

using namespace shoal;
using namespace shoal::federation;
using shoal::federation::testing::identity_from;

TEST_CASE("a sealed envelope verifies for a trusted signer, and nothing else does") {
  auto alice = identity_from(1), mallory = identity_from(2);
  crypto::trust_list trusted;
  trusted.add("alice", alice.pk());
  auto e = seal(alice, proto::wire_kind::delta_batch, "payload bytes", "alice");
  auto id = verify(trusted, e);
  REQUIRE(id);
  CHECK(*id == alice.id());

  auto tampered = e;
  tampered.payload[0] ^= 1;
  auto bad = verify(trusted, tampered);
  REQUIRE_FALSE(bad);
  CHECK(bad.err().message.find("bad signature") == 0);
  CHECK(bad.err().code == errc::invalid_argument);
  auto rekinded = e; // a delta batch's signature does not cover it as a digest
  rekinded.kind = proto::wire_kind::digest;
  CHECK_FALSE(verify(trusted, rekinded));
  auto forged = seal(mallory, proto::wire_kind::delta_batch, "payload bytes", "alice");
  CHECK_FALSE(verify(trusted, forged));
  auto unknown = seal(mallory, proto::wire_kind::delta_batch, "x", "mallory");
  auto r = verify(trusted, unknown);
  REQUIRE_FALSE(r);
  CHECK(r.err().message == "untrusted signer 'mallory'");
  CHECK(r.err().code == errc::not_found);
  auto short_sig = e;
  short_sig.signature.resize(10);
  CHECK_FALSE(verify(trusted, short_sig));
  // The whole envelope survives the wire.
  auto back = proto::decode_envelope(proto::encode(e));
  REQUIRE(back);
  CHECK(verify(trusted, *back));
}
