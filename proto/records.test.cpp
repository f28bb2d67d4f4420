#include "proto/records.hpp"

#include "shoal/proto/v1/store.capnp.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <doctest/doctest.h>

using namespace shoal::proto;

TEST_CASE("pattern records round-trip through Cap'n Proto") {
  pattern_record p;
  p.id = 42;
  p.centroid = {0.6f, 0.8f, 0.0f};
  p.tiers = {{1.5, 1.25, 2}, {0, 0, 0}};
  p.hits = 7;
  p.created_ms = 1700000000000;
  p.updated_ms = 1700000000500;
  p.version = 3;
  auto bytes = encode(p);
  // Decoding must not depend on the buffer's alignment.
  std::string shifted = "x" + bytes;
  auto q = decode_pattern(std::string_view(shifted).substr(1));
  REQUIRE(q);
  CHECK(q->id == 42);
  CHECK(q->centroid == p.centroid);
  REQUIRE(q->tiers.size() == 2);
  CHECK(q->tiers[0].sum_quality == 1.5);
  CHECK(q->tiers[0].count == 2);
  CHECK(q->hits == 7);
  CHECK(q->version == 3);
}

TEST_CASE("corrupt bytes decode to a corrupt_data error, not a crash") {
  CHECK_FALSE(decode_pattern(""));
  CHECK_FALSE(decode_pattern("abc"));
  std::string junk(64, '\xff');
  auto r = decode_pattern(junk);
  REQUIRE_FALSE(r);
  CHECK(r.err().code == shoal::errc::corrupt_data);
  pattern_record p;
  p.centroid.assign(16, 1.0f);
  auto bytes = encode(p);
  auto cut = decode_pattern(std::string_view(bytes).substr(0, bytes.size() - 16));
  CHECK_FALSE(cut);
}

TEST_CASE("request ids format as 16 hex digits and parse back") {
  CHECK(format_request_id(0xabcdef0123456789ull) == "abcdef0123456789");
  uint64_t id = 0;
  CHECK(parse_request_id("abcdef0123456789", id));
  CHECK(id == 0xabcdef0123456789ull);
  CHECK_FALSE(parse_request_id("xyz", id));
  CHECK_FALSE(parse_request_id("abcdef012345678g", id));
}

TEST_CASE("a pattern written with schema 1 reads with today's schema") {
  // Written exactly as an issue-2 node wrote it (frozen schema copy).
  ::capnp::MallocMessageBuilder mb;
  auto p = mb.initRoot<shoal::proto::capnp::v1::Pattern>();
  p.setId(9);
  std::vector<float> c = {0.6f, 0.8f};
  p.setCentroid({reinterpret_cast<const kj::byte*>(c.data()), c.size() * sizeof(float)});
  auto tiers = p.initTiers(2);
  tiers[1].setSumQuality(0.75);
  tiers[1].setSumQuality2(0.5625);
  tiers[1].setCount(1);
  p.setHits(3);
  p.setVersion(5);
  auto words = ::capnp::messageToFlatArray(mb);
  auto bytes = words.asBytes();
  auto q = decode_pattern({reinterpret_cast<const char*>(bytes.begin()), bytes.size()});
  REQUIRE(q);
  CHECK(q->id == 9);
  CHECK(q->centroid == c);
  REQUIRE(q->tiers.size() == 2);
  CHECK(q->tiers[1].count == 1);
  CHECK(q->version == 5);
  // Fields added since: their defaults, meaning "created here, no peers".
  CHECK(q->origin_node == 0);
  CHECK(q->origin_id == 0);
  CHECK(q->peers.empty());
}

TEST_CASE(
  "a witness record keeps the latency budget, and one written with schema 1 reads as none") {
  shoal::proto::witness_entry w;
  w.decision.request_id = 77;
  w.session_id = "s";
  w.latency_budget_ms = 1500;
  auto back = decode_witness(encode(w));
  REQUIRE(back);
  CHECK(back->latency_budget_ms == 1500);
  CHECK(back->session_id == "s");
  w.latency_budget_ms = -1; // not a budget: named, not taken
  auto bad = decode_witness(encode(w));
  REQUIRE_FALSE(bad);
  CHECK(bad.err().message.find("latency budget") != std::string::npos);
  // Written exactly as an issue-2 node wrote it (frozen schema copy).
  ::capnp::MallocMessageBuilder mb;
  auto old = mb.initRoot<shoal::proto::capnp::v1::WitnessRecord>();
  old.setRequestId(78);
  old.setSessionId("old");
  auto words = ::capnp::messageToFlatArray(mb);
  auto bytes = words.asBytes();
  auto r = decode_witness({reinterpret_cast<const char*>(bytes.begin()), bytes.size()});
  REQUIRE(r);
  CHECK(r->decision.request_id == 78);
  CHECK(r->session_id == "old");
  CHECK(r->latency_budget_ms == 0);
}

TEST_CASE("peers' contributions round-trip with the pattern") {
  pattern_record p;
  p.id = 4;
  p.centroid = {1.0f};
  p.tiers = {{0.5, 0.25, 1}};
  p.origin_node = 0xabcdef;
  p.origin_id = 77;
  p.peers = {{11, 3, {{2.0, 1.5, 3}}}, {12, 9, {{0, 0, 0}}}};
  auto q = decode_pattern(encode(p));
  REQUIRE(q);
  CHECK(q->origin_node == 0xabcdef);
  CHECK(q->origin_id == 77);
  REQUIRE(q->peers.size() == 2);
  CHECK(q->peers[0].node == 11);
  CHECK(q->peers[0].version == 3);
  CHECK(q->peers[0].tiers[0].sum_quality == 2.0);
  CHECK(q->peers[0].tiers[0].count == 3);
  CHECK(q->peers[1].version == 9);
}

TEST_CASE("router v2 checkpoints round-trip, and the layout before schema 3 still reads") {
  router_v2_checkpoint x;
  x.version = 2;
  x.embed_dim = 48;
  x.n_tiers = 4;
  x.proj = 8;
  x.hidden = 10;
  x.rank_w = 4;
  x.rank_u = 4;
  x.lora_rank = 2;
  x.lora_alpha = 2.0f;
  x.temperature = 0.05f;
  x.max_importance = 20;
  x.seed = 77;
  for (int i = 0; i < 40000; ++i) // bigger than one default segment
    x.params.push_back(0.001f * static_cast<float>(i % 997) - 0.5f);
  auto bytes = encode(x);
  CHECK(bytes[0] == 0); // one segment
  auto back = decode_router_v2_checkpoint(bytes);
  REQUIRE(back);
  CHECK(back->seed == 77);
  CHECK(back->hidden == 10);
  CHECK(back->lora_alpha == 2.0f);
  CHECK(back->params == x.params);

  // The little-endian layout written before: u8 version, u32 × 7, f32 × 3, u64 seed, u64 n, f32 × n.
  std::string legacy;
  auto put = [&legacy](const auto& v) {
    legacy.append(reinterpret_cast<const char*>(&v), sizeof v);
  };
  put(uint8_t{1});
  for (uint32_t v : {48u, 4u, 8u, 10u, 4u, 4u, 2u})
    put(v);
  for (float v : {2.0f, 0.05f, 20.0f})
    put(v);
  put(uint64_t{77});
  put(uint64_t{3});
  for (float v : {0.25f, -1.5f, 3.0f})
    put(v);
  auto old = decode_router_v2_checkpoint(legacy);
  REQUIRE(old);
  CHECK(old->version == 1);
  CHECK(old->embed_dim == 48);
  CHECK(old->lora_rank == 2);
  CHECK(old->max_importance == 20.0f);
  CHECK(old->seed == 77);
  CHECK(old->params == std::vector<float>{0.25f, -1.5f, 3.0f});

  auto is_corrupt = [](std::string_view b) {
    auto r = decode_router_v2_checkpoint(b);
    return !r && r.err().code == shoal::errc::corrupt_data;
  };
  CHECK(is_corrupt(""));
  CHECK(is_corrupt(std::string_view(legacy).substr(0, legacy.size() - 1))); // truncated
  CHECK(is_corrupt(legacy + "x"));                                          // trailing bytes
  CHECK(is_corrupt(std::string_view(legacy).substr(0, 20)));                // truncated config
  CHECK(is_corrupt(std::string(64, '\x09')));                               // neither layout
}

TEST_CASE("KV page records round-trip, and malformed bytes do not decode") {
  kv_page_record p{42, true, 2, 3, {5, -6, 7}, std::string("\0page\xff", 6)};
  auto back = decode_kv_page(encode(p));
  REQUIRE(back);
  CHECK(back->parent == 42);
  CHECK(back->old);
  CHECK(back->k_type == 2);
  CHECK(back->v_type == 3);
  CHECK(back->tokens == p.tokens);
  CHECK(back->bytes == p.bytes);
  CHECK_FALSE(decode_kv_page(""));
  CHECK_FALSE(decode_kv_page(std::string(12, '\0') + "\x01"));
  // The little-endian layout before schema 3 (parent, tier, types, n, tokens, bytes).
  std::string legacy(8, '\0');
  legacy += "\x01\x02\x03";
  legacy += std::string("\x01\0\0\0\x05\0\0\0", 8);
  legacy += "abcd";
  auto r = decode_kv_page(legacy);
  CHECK_FALSE(r);
}
