#include "store/kv_spill_table.hpp"

#include "store/testing.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

using namespace shoal::store;
namespace crypto = shoal::crypto;
namespace fs = std::filesystem;
using namespace shoal::store::testing;

namespace {
shoal::proto::kv_page_record make_page(std::mt19937& rng, size_t bytes) {
  shoal::proto::kv_page_record p;
  p.parent = rng();
  p.old = rng() % 2;
  p.k_type = 2; // the table stores the codes; actors/kv_spill checks them
  p.v_type = 3;
  for (int i = 0; i < 16; ++i)
    p.tokens.push_back(static_cast<int32_t>(rng() % 32000));
  p.bytes.resize(bytes);
  for (auto& c : p.bytes)
    c = static_cast<char>(rng());
  return p;
}

} // namespace

TEST_CASE("kv_spill_table: pages come back bit-identical, once, sealed on disk") {
  auto dir = temp_dir("spill");
  std::mt19937 rng(1);
  auto seal = std::make_shared<const crypto::sealer>(*crypto::sealer::from_hex(seal_key_a));
  auto p = make_page(rng, 5000);
  const std::string marker = "PLAINTEXT-MARKER-0123456789";
  p.bytes.replace(100, marker.size(), marker);
  {
    auto env = environment::open({dir});
    REQUIRE(env);
    kv_spill_table t(*env, seal, 7, 1 << 20);
    CHECK(t.put(0xabc, p));
    CHECK(t.records() == 1);
    CHECK_FALSE(t.get(0xdef));
  }
  // Ciphertext on disk: the page's bytes do not appear in the LMDB files.
  CHECK(slurp_dir(dir).find(marker) == std::string::npos);
  auto env = environment::open({dir});
  REQUIRE(env);
  kv_spill_table other_model(*env, seal, 8, 1 << 20);
  CHECK_FALSE(other_model.get(0xabc));      // another model's pages are not seen
  kv_spill_table t(*env, seal, 7, 1 << 20); // the record survived the restart
  auto q = t.get(0xabc);
  REQUIRE(q);
  CHECK(q->parent == p.parent);
  CHECK(q->old == p.old);
  CHECK(q->k_type == p.k_type);
  CHECK(q->v_type == p.v_type);
  CHECK(q->tokens == p.tokens);
  CHECK(q->bytes == p.bytes);
  CHECK_FALSE(t.get(0xabc)); // restored pages leave the table
  CHECK(t.records() == 0);
  fs::remove_all(dir);
}

TEST_CASE("kv_spill_table: the byte cap drops the oldest records, a wrong key reads nothing") {
  auto dir = temp_dir("spill-cap");
  std::mt19937 rng(2);
  auto env = environment::open({dir});
  REQUIRE(env);
  auto seal = std::make_shared<const crypto::sealer>(*crypto::sealer::from_hex(seal_key_a));
  const size_t rec = shoal::proto::encode(make_page(rng, 1000)).size() + crypto::sealer::overhead;
  kv_spill_table t(*env, seal, 1, 3 * rec);
  for (uint64_t h = 1; h <= 5; ++h)
    CHECK(t.put(h, make_page(rng, 1000)));
  CHECK(t.records() == 3);
  CHECK(t.bytes() <= 3 * rec);
  CHECK_FALSE(t.get(1));
  CHECK_FALSE(t.get(2));
  CHECK(t.get(5));
  auto other = std::make_shared<const crypto::sealer>(*crypto::sealer::from_hex(seal_key_b));
  kv_spill_table wrong(*env, other, 1, 3 * rec);
  CHECK_FALSE(wrong.get(4)); // fails authentication: reported, not used
  fs::remove_all(dir);
}
