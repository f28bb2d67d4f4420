#include "federation/bridge_logic.hpp"
#include "federation/signing.hpp"
#include "federation/testing.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace shoal;
using namespace shoal::federation;
using shoal::federation::testing::identity_from;

namespace {

constexpr uint32_t dim = 8, n_tiers = 4;

/// Two nodes that trust each other; `self` is the receiving node.
struct pair_of_nodes {
  crypto::identity self = identity_from(1), peer = identity_from(2);
  crypto::trust_list trusted;
  node_shape shape{self.id(), dim, n_tiers};
  pair_of_nodes() {
    trusted.add("self", self.pk());
    trusted.add("peer", peer.pk());
  }
};

proto::delta_batch batch_from(const crypto::identity& node, uint32_t d = dim,
                              uint32_t t = n_tiers) {
  proto::delta_batch b;
  b.node = node.id();
  b.node_name = "peer";
  b.seq = 1;
  b.dim = d;
  b.n_tiers = t;
  proto::pattern_delta x;
  x.origin_node = node.id();
  x.origin_id = 1;
  x.centroid.assign(d, 0.5f);
  x.contrib = {node.id(), 1, std::vector<proto::tier_stat>(t, {0.5, 0.25, 1})};
  b.deltas.push_back(x);
  return b;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

} // namespace

TEST_CASE("bridge logic: a batch signed by another node than it claims is refused, naming both") {
  pair_of_nodes n;
  auto mallory = identity_from(3);
  auto err = check_batch(batch_from(mallory), n.peer.id(), n.shape);
  REQUIRE(err);
  CHECK(err.code == errc::invalid_argument);
  CHECK(contains(err.message, std::to_string(mallory.id())));
  CHECK(contains(err.message, std::to_string(n.peer.id())));

  // Through the whole inbound path: the peer signs a batch claiming to be mallory's.
  auto e = seal(n.peer, proto::wire_kind::delta_batch, proto::encode(batch_from(mallory)), "peer");
  auto v = check_inbound(e, n.trusted, n.shape);
  REQUIRE(v.dropped);
  CHECK(*v.dropped == drop_reason::invalid);
  CHECK_FALSE(v.accepted);
  CHECK(contains(v.problem, std::to_string(mallory.id())));
  CHECK(contains(v.problem, std::to_string(n.peer.id())));
}

TEST_CASE("bridge logic: a batch of another dimension or tier count is refused, naming both") {
  pair_of_nodes n;
  auto wrong_dim = check_batch(batch_from(n.peer, 16), n.peer.id(), n.shape);
  REQUIRE(wrong_dim);
  CHECK(contains(wrong_dim.message, "dimension 16"));
  CHECK(contains(wrong_dim.message, "uses 8"));

  auto wrong_tiers = check_batch(batch_from(n.peer, dim, 3), n.peer.id(), n.shape);
  REQUIRE(wrong_tiers);
  CHECK(contains(wrong_tiers.message, "3 tiers"));
  CHECK(contains(wrong_tiers.message, "and 4"));
}

TEST_CASE("bridge logic: a valid batch from a trusted peer is accepted as it was sent") {
  pair_of_nodes n;
  CHECK_FALSE(check_batch(batch_from(n.peer), n.peer.id(), n.shape));

  auto e = seal(n.peer, proto::wire_kind::delta_batch, proto::encode(batch_from(n.peer)), "peer");
  auto v = check_inbound(e, n.trusted, n.shape);
  CHECK_FALSE(v.dropped);
  REQUIRE(v.accepted);
  CHECK(v.accepted->sender == n.peer.id());
  CHECK(v.accepted->signer == "peer");
  auto* b = std::get_if<proto::delta_batch>(&v.accepted->body);
  REQUIRE(b != nullptr);
  REQUIRE(b->deltas.size() == 1);
  CHECK(b->deltas[0].centroid.size() == dim);
}

TEST_CASE("bridge logic: untrusted, badly signed, malformed and misattributed messages are "
          "refused, naming the problem, and counted by reason") {
  pair_of_nodes n;
  bridge_ledger ledger(n.shape, 1000, 0);
  auto eve = identity_from(4);

  auto untrusted = ledger.check(seal(eve, proto::wire_kind::digest, "x", "eve"), n.trusted);
  REQUIRE(untrusted.dropped);
  CHECK(*untrusted.dropped == drop_reason::untrusted);
  CHECK(contains(untrusted.problem, "eve"));

  // Eve signs as a trusted name: the signature does not verify.
  auto forged = ledger.check(seal(eve, proto::wire_kind::digest, "x", "peer"), n.trusted);
  REQUIRE(forged.dropped);
  CHECK(*forged.dropped == drop_reason::bad_signature);
  CHECK(contains(forged.problem, "signature"));

  auto garbage =
    ledger.check(seal(n.peer, proto::wire_kind::digest, "not a digest", "peer"), n.trusted);
  REQUIRE(garbage.dropped);
  CHECK(*garbage.dropped == drop_reason::malformed);
  CHECK(contains(garbage.problem, "digest"));

  // A digest, a resync request and telemetry must name the node that signed them.
  proto::digest d{eve.id(), "eve", 0, 0, {}};
  auto other =
    ledger.check(seal(n.peer, proto::wire_kind::digest, proto::encode(d), "peer"), n.trusted);
  REQUIRE(other.dropped);
  CHECK(*other.dropped == drop_reason::malformed);
  CHECK(contains(other.problem, std::to_string(eve.id())));
  proto::resync_request r{eve.id(), "eve", 0, 0};
  CHECK(ledger.check(seal(n.peer, proto::wire_kind::resync, proto::encode(r), "peer"), n.trusted)
          .dropped
        == drop_reason::malformed);
  proto::telemetry_report t;
  t.node = eve.id();
  CHECK(ledger.check(seal(n.peer, proto::wire_kind::telemetry, proto::encode(t), "peer"), n.trusted)
          .dropped
        == drop_reason::malformed);

  auto& st = ledger.stats();
  CHECK(st.dropped_untrusted == 1);
  CHECK(st.dropped_bad_signature == 1);
  CHECK(st.dropped_malformed == 4);
  CHECK(st.dropped_invalid == 0);
  CHECK(ledger.n_dropped() == 6);
  // Each is logged under its kind (signature problems share one rate limit).
  CHECK(std::string(log_kind(drop_reason::untrusted)) == log_kind(drop_reason::bad_signature));
}

TEST_CASE("bridge logic: this node's own messages are ignored, neither accepted nor counted") {
  pair_of_nodes n;
  bridge_ledger ledger(n.shape, 1000, 0);
  proto::digest d{n.self.id(), "self", 0, 0, {}};
  auto v =
    ledger.check(seal(n.self, proto::wire_kind::digest, proto::encode(d), "self"), n.trusted);
  CHECK(v.own);
  CHECK_FALSE(v.accepted);
  CHECK_FALSE(v.dropped);
  CHECK(ledger.n_dropped() == 0);
}

TEST_CASE("bridge logic: republishes are limited to one per second") {
  republish_limiter limit;
  CHECK(limit.admit(0)); // the first is always allowed
  CHECK_FALSE(limit.admit(999));
  CHECK(limit.admit(1000));
  CHECK_FALSE(limit.admit(1500));
  // A republish that went regardless (a lost batch) also starts a second.
  limit.record(5000);
  CHECK_FALSE(limit.admit(5999));
  CHECK(limit.admit(6000));

  // The ledger counts only those that go.
  pair_of_nodes n;
  bridge_ledger ledger(n.shape, 1000, 0);
  CHECK(ledger.admit_republish(10'000));
  CHECK_FALSE(ledger.admit_republish(10'500));
  ledger.force_republish(10'600);
  CHECK_FALSE(ledger.admit_republish(11'000));
  CHECK(ledger.admit_republish(11'600));
  CHECK(ledger.stats().republishes == 3);
}

TEST_CASE("bridge logic: merge results add up in the counters, with the propagation lag") {
  pair_of_nodes n;
  bridge_ledger ledger(n.shape, 1000, 0);
  ledger.count_merge({5, 1, 2, 1, 0}, 1'000'000, 1'002'000); // 2 ms after the change
  ledger.count_merge({3, 4, 0, 0, 0}, 0, 5'000'000);         // change time unknown
  const auto& st = ledger.stats();
  CHECK(st.deltas_merged == 8);
  CHECK(st.deltas_stale == 5);
  CHECK(st.patterns_created == 2);
  CHECK(st.orphaned == 1);
  CHECK(st.lag.count() == 1);
  CHECK(st.lag.sum_ns() == doctest::Approx(2'000'000));
  // A sender whose clock runs ahead does not make a negative lag.
  ledger.count_merge({}, 9'000'000, 5'000'000);
  CHECK(st.lag.count() == 2);
  CHECK(st.lag.sum_ns() == doctest::Approx(2'000'000));
}

TEST_CASE("bridge logic: the stream position is the highest sequence seen") {
  pair_of_nodes n;
  bridge_ledger ledger(n.shape, 1000, 41);
  CHECK(ledger.snapshot().stream_seq == 41);
  ledger.saw(45);
  ledger.saw(0); // core NATS messages have no sequence
  ledger.saw(43);
  CHECK(ledger.snapshot().stream_seq == 45);
  ledger.reset_seen();
  CHECK(ledger.snapshot().stream_seq == 0);
}

TEST_CASE("bridge logic: a peer's digest that shows it lacks this node's contributions asks for a "
          "republish naming the peer") {
  pair_of_nodes n;
  bridge_ledger ledger(n.shape, 1000, 0);
  proto::router_digest rd;
  rd.origins = {{n.peer.id(), 3, 9, 0x1}, {n.self.id(), 10, 40, 0xabc}};
  ledger.set_own(rd);
  proto::digest in_sync{n.peer.id(), "bob", 0, 13, rd.origins};
  CHECK_FALSE(ledger.on_digest(n.peer.id(), in_sync, 0));
  proto::digest other_set{n.peer.id(), "bob", 0, 13, {{n.self.id(), 9, 40, 0xdef}}};
  auto why = ledger.on_digest(n.peer.id(), other_set, 1000);
  REQUIRE(why);
  CHECK(contains(*why, "bob"));
  CHECK(contains(*why, "different set"));
  // A peer that lists nothing of this node's and stays so is behind.
  proto::digest empty{n.peer.id(), "bob", 0, 0, {}};
  ledger.on_digest(n.peer.id(), empty, 100'000);
  ledger.on_digest(n.peer.id(), empty, 101'000);
  auto behind = ledger.on_digest(n.peer.id(), empty, 102'000);
  REQUIRE(behind);
  CHECK(contains(*behind, "stays behind"));
}

TEST_CASE("bridge logic: a resync request applies when addressed to this node or all, and recent") {
  constexpr uint64_t self_id = 7;
  proto::resync_request to_all{9, "bob", 100'000, 0};
  CHECK(resync_applies(to_all, self_id, 100'500));
  CHECK(resync_applies(to_all, self_id, 159'999));
  CHECK_FALSE(resync_applies(to_all, self_id, 160'000)); // a replayed old request
  CHECK_FALSE(resync_applies(to_all, self_id, 40'000));  // from the future
  CHECK(resync_applies({9, "bob", 100'000, self_id}, self_id, 100'000));
  CHECK_FALSE(resync_applies({9, "bob", 100'000, 8}, self_id, 100'000));
}

TEST_CASE("bridge logic: telemetry keeps one entry per peer and reports this node's counters") {
  pair_of_nodes n;
  bridge_ledger ledger(n.shape, 1000, 0);
  proto::telemetry_report t;
  t.node = n.peer.id();
  t.n_patterns = 5;
  ledger.note_peer("peer", t, 1000);
  t.n_patterns = 6;
  ledger.note_peer("peer", t, 2000);
  REQUIRE(ledger.stats().peers.size() == 1);
  CHECK(ledger.stats().peers[0].last.n_patterns == 6);
  CHECK(ledger.stats().peers[0].last_seen_ms == 2000);
  CHECK(ledger.stats().peers[0].name == "peer");

  ledger.stats().deltas_sent = 12;
  ledger.count_merge({7, 0, 0, 0, 0}, 0, 0);
  ledger.count_drop(drop_reason::oversized);
  ledger.count_drop(drop_reason::invalid);
  auto mine = ledger.telemetry({30, 20, 10, 0}, "alice", 4242);
  CHECK(mine.node == n.self.id());
  CHECK(mine.node_name == "alice");
  CHECK(mine.sent_ms == 4242);
  CHECK(mine.n_patterns == 30);
  CHECK(mine.n_routed == 20);
  CHECK(mine.n_learned == 10);
  CHECK(mine.n_deltas_sent == 12);
  CHECK(mine.n_deltas_merged == 7);
  CHECK(mine.n_dropped == 2);
}

TEST_CASE("bridge logic: deltas are cut into batches within the size limit, in order") {
  std::vector<proto::pattern_delta> deltas(10);
  for (size_t i = 0; i < deltas.size(); ++i) {
    deltas[i].origin_id = i;
    deltas[i].centroid.assign(100, 0.f); // about 464 bytes each by the estimate
  }
  proto::delta_batch header;
  header.node = 7;
  header.dim = 100;
  header.changed_us = 55;
  uint64_t seq = 3;
  auto batches = cut_batches(deltas, header, 1600, seq, 999);
  REQUIRE(batches.size() == 4); // 3 + 3 + 3 + 1 within 1600 bytes
  uint64_t next_id = 0;
  for (size_t i = 0; i < batches.size(); ++i) {
    CHECK(batches[i].seq == 4 + i);
    CHECK(batches[i].node == 7);
    CHECK(batches[i].changed_us == 55);
    CHECK(batches[i].sent_ms == 999);
    for (const auto& d : batches[i].deltas)
      CHECK(d.origin_id == next_id++);
  }
  CHECK(next_id == 10);
  CHECK(seq == 7);
  // A delta larger than the limit still goes, alone.
  std::vector<proto::pattern_delta> big(2);
  big[0].centroid.assign(1000, 0.f);
  CHECK(cut_batches(big, header, 1600, seq, 0).size() == 2);
}
