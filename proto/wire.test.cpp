#include "proto/wire.hpp"

#include "shoal/proto/v1/federation.capnp.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <doctest/doctest.h>

using namespace shoal::proto;

TEST_CASE("delta batches round-trip, the sender becomes every contribution's node") {
  delta_batch b;
  b.node = 0x1122334455667788ull;
  b.node_name = "shoal-2";
  b.seq = 17;
  b.sent_ms = 1700000000123;
  b.dim = 2;
  b.n_tiers = 2;
  b.changed_us = 1700000000123456;
  pattern_delta d;
  d.origin_node = 0x99;
  d.origin_id = 5;
  d.centroid = {0.6f, 0.8f};
  d.contrib = {0, 42, {{1.5, 1.25, 2}, {0, 0, 0}}};
  b.deltas.push_back(d);
  d.centroid.clear();
  d.origin_id = 6;
  b.deltas.push_back(d);
  auto bytes = encode(b);
  std::string shifted = "x" + bytes; // decoding must not depend on alignment
  auto r = decode_delta_batch(std::string_view(shifted).substr(1));
  REQUIRE(r);
  CHECK(r->node == b.node);
  CHECK(r->node_name == "shoal-2");
  CHECK(r->seq == 17);
  CHECK(r->sent_ms == b.sent_ms);
  CHECK(r->dim == 2);
  CHECK(r->changed_us == b.changed_us);
  REQUIRE(r->deltas.size() == 2);
  CHECK(r->deltas[0].centroid == std::vector<float>{0.6f, 0.8f});
  CHECK(r->deltas[1].centroid.empty());
  CHECK(r->deltas[1].origin_id == 6);
  CHECK(r->deltas[0].contrib.node == b.node);
  CHECK(r->deltas[0].contrib.version == 42);
  CHECK(r->deltas[0].contrib.tiers[0].count == 2);
}

TEST_CASE("envelopes, digests, resync requests and telemetry round-trip") {
  envelope e{wire_kind::digest, std::string("\0payload", 8), "shoal-1", std::string(64, 's')};
  auto re = decode_envelope(encode(e));
  REQUIRE(re);
  CHECK(re->kind == wire_kind::digest);
  CHECK(re->payload == e.payload);
  CHECK(re->signer == "shoal-1");
  CHECK(re->signature == e.signature);

  digest g{7, "n", 5, 100, {{7, 3, 9, 0xfeed}, {8, 1, 2, 3}}};
  auto rg = decode_digest(encode(g));
  REQUIRE(rg);
  REQUIRE(rg->origins.size() == 2);
  CHECK(rg->origins[0].hash == 0xfeed);
  CHECK(rg->n_patterns == 100);

  auto rr = decode_resync(encode(resync_request{7, "n", 5, 8}));
  REQUIRE(rr);
  CHECK(rr->target == 8);

  telemetry_report t;
  t.node = 3;
  t.n_dropped = 4;
  auto rt = decode_telemetry(encode(t));
  REQUIRE(rt);
  CHECK(rt->n_dropped == 4);
}

TEST_CASE("malformed federation payloads decode to corrupt_data, never a crash") {
  CHECK_FALSE(decode_envelope(""));
  CHECK_FALSE(decode_delta_batch("12345678"));
  std::string junk(256, '\x7f');
  auto r = decode_delta_batch(junk);
  REQUIRE_FALSE(r);
  CHECK(r.err().code == shoal::errc::corrupt_data);
  // A centroid of 7 bytes is not a list of f32.
  delta_batch b;
  b.deltas.resize(1);
  b.deltas[0].centroid = {1.0f, 2.0f};
  auto bytes = encode(b);
  auto cut = decode_delta_batch(std::string_view(bytes).substr(0, bytes.size() - 8));
  CHECK_FALSE(cut);
  // Every truncation of a valid batch fails cleanly or decodes a prefix.
  for (size_t n = 0; n < bytes.size(); n += 8)
    (void)decode_delta_batch(std::string_view(bytes).substr(0, n));
}

TEST_CASE("a delta batch written with the previous schema reads with today's") {
  // As a node from before DeltaBatch.changedUs wrote it (frozen schema copy).
  ::capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<shoal::proto::capnp::v1::DeltaBatch>();
  b.setNode(77);
  b.setNodeName("old-node");
  b.setSeq(3);
  b.setDim(2);
  b.setNTiers(1);
  auto ds = b.initDeltas(1);
  ds[0].setOriginNode(77);
  ds[0].setOriginId(9);
  ds[0].setVersion(12);
  auto ts = ds[0].initTiers(1);
  ts[0].setSumQuality(0.5);
  ts[0].setSumQuality2(0.25);
  ts[0].setCount(1);
  auto words = ::capnp::messageToFlatArray(mb);
  auto bytes = words.asBytes();
  auto r = decode_delta_batch({reinterpret_cast<const char*>(bytes.begin()), bytes.size()});
  REQUIRE(r);
  CHECK(r->node == 77);
  CHECK(r->node_name == "old-node");
  REQUIRE(r->deltas.size() == 1);
  CHECK(r->deltas[0].contrib.node == 77);
  CHECK(r->deltas[0].contrib.version == 12);
  CHECK(r->deltas[0].contrib.tiers[0].count == 1);
  CHECK(r->changed_us == 0); // absent: "unknown", so no lag is recorded for it
}
