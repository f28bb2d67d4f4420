#include "store/kv_spill_table.hpp"

#include "engine/model.hpp"
#include "engine/model_writer.hpp"

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
shoal::engine::kv_spill::page make_page(std::mt19937& rng, size_t bytes) {
  shoal::engine::kv_spill::page p;
  p.parent = rng();
  p.old = rng() % 2;
  p.k_type = shoal::kernels::kv_type::q8_0;
  p.v_type = shoal::kernels::kv_type::q4_0;
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
  CHECK_FALSE(other_model.get(0xabc)); // another model's pages are not seen
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
  const size_t rec = kv_spill_table::encode(make_page(rng, 1000)).size() + crypto::sealer::overhead;
  kv_spill_table t(*env, seal, 1, 3 * rec);
  for (uint64_t h = 1; h <= 5; ++h)
    CHECK(t.put(h, make_page(rng, 1000)));
  CHECK(t.records() == 3);
  CHECK(t.bytes() <= 3 * rec);
  CHECK_FALSE(t.get(1));
  CHECK_FALSE(t.get(2));
  CHECK(t.get(5));
  auto other = std::make_shared<const crypto::sealer>(
    *crypto::sealer::from_hex(seal_key_b));
  kv_spill_table wrong(*env, other, 1, 3 * rec);
  CHECK_FALSE(wrong.get(4)); // fails authentication: reported, not used
  fs::remove_all(dir);
}

TEST_CASE("kv_spill_table: malformed plaintext does not decode") {
  CHECK_FALSE(kv_spill_table::decode(""));
  CHECK_FALSE(kv_spill_table::decode(std::string(12, '\0') + "\x01"));
  std::string bad(8, '\0');
  bad += '\x02'; // tier byte must be 0 or 1
  bad += std::string(6, '\0');
  CHECK_FALSE(kv_spill_table::decode(bad));
  std::string bad_type(8, '\0');
  bad_type += "\x01\x07\x01"; // no kv_type 7
  bad_type += std::string(4, '\0');
  CHECK_FALSE(kv_spill_table::decode(bad_type));
  CHECK_FALSE(kv_spill_table::decode(bad));
}

namespace {
/// The "tiny" random model, written into `dir` (created).
std::shared_ptr<const shoal::engine::model> tiny_model_in(const fs::path& dir) {
  fs::create_directories(dir);
  auto path = (dir / "tiny.gguf").string();
  REQUIRE(shoal::engine::write_random_model(*shoal::engine::random_model_preset("tiny"), path));
  auto m = shoal::engine::model::load(path);
  REQUIRE(m);
  return *m;
}
} // namespace

TEST_CASE("kv_spill_table under a kv_pool: evicted prefix pages come back and give the same logits") {
  using namespace shoal::engine;
  auto dir = temp_dir("spill-pool");
  auto model = tiny_model_in(dir);
  const auto& hp = model->hparams();
  context ctx(model, 64, nullptr);
  std::mt19937 rng(21);
  std::vector<int32_t> prompt(40), tail(5), filler(64);
  for (auto* v : {&prompt, &tail, &filler})
    for (auto& t : *v)
      t = static_cast<int32_t>(300 + rng() % 200);
  auto last_logits = [&](kv_cache& c, std::span<const int32_t> toks) {
    std::vector<float> l(hp.n_vocab);
    REQUIRE(ctx.eval(c, toks, l));
    return l;
  };
  kv_tier_config cfg;
  kv_pool probe(hp, cfg, nullptr);
  // Reference: the prompt then the tail, nothing evicted.
  kv_pool ref_pool(hp, cfg, nullptr);
  kv_cache ref(ref_pool, 128);
  last_logits(ref, prompt);
  auto want = last_logits(ref, tail);

  auto env = environment::open({dir / "lmdb"});
  REQUIRE(env);
  auto seal = std::make_shared<const crypto::sealer>(*crypto::sealer::from_hex(seal_key_a));
  auto spill = std::make_shared<kv_spill_table>(*env, seal, model->fingerprint(), 1 << 24);
  kv_pool pool(hp, cfg, std::make_shared<shoal::core::memory_budget>(4 * probe.page_bytes(false)));
  pool.set_spill(spill);
  { // the first conversation: 3 pages, 2 of them full (named), then released
    kv_cache a(pool, 128);
    last_logits(a, prompt);
  }
  { // someone else needs 4 pages: the cached ones are spilled
    kv_cache b(pool, 128);
    last_logits(b, filler);
  }
  CHECK(pool.stats().spills == 2);
  CHECK(spill->records() == 2);
  std::vector<int32_t> both(prompt);
  both.insert(both.end(), tail.begin(), tail.end());
  kv_cache c(pool, 128);
  CHECK(c.adopt_prefix(both) == 32); // restored from LMDB
  CHECK(pool.stats().restores == 2);
  last_logits(c, std::span<const int32_t>(both).subspan(32, prompt.size() - 32));
  auto got = last_logits(c, tail);
  CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
  fs::remove_all(dir);
}

TEST_CASE("kv_pool: a session's cached pages are spilled at shutdown and found after a restart") {
  using namespace shoal::engine;
  auto dir = temp_dir("spill-restart");
  auto model = tiny_model_in(dir);
  const auto& hp = model->hparams();
  context ctx(model, 64, nullptr);
  std::vector<int32_t> session(40), anonymous(40);
  for (int i = 0; i < 40; ++i) {
    session[i] = 300 + i;
    anonymous[i] = 400 + i;
  }
  auto seal = std::make_shared<const crypto::sealer>(*crypto::sealer::from_hex(seal_key_a));
  std::vector<float> logits(hp.n_vocab);
  {
    auto env = environment::open({dir / "lmdb"});
    REQUIRE(env);
    kv_pool pool(hp, {}, nullptr);
    pool.set_spill(std::make_shared<kv_spill_table>(*env, seal, model->fingerprint(), 1 << 24));
    for (auto* toks : {&session, &anonymous}) {
      kv_cache c(pool, 128);
      c.set_important(toks == &session);
      REQUIRE(ctx.eval(c, *toks, logits));
    }
    CHECK(pool.stats().pages_cached == 4);
  } // shutdown: the session's 2 named pages are spilled, the others dropped
  auto env = environment::open({dir / "lmdb"});
  REQUIRE(env);
  kv_pool pool(hp, {}, nullptr);
  auto spill = std::make_shared<kv_spill_table>(*env, seal, model->fingerprint(), 1 << 24);
  CHECK(spill->records() == 2);
  pool.set_spill(spill);
  kv_cache a(pool, 128), b(pool, 128);
  CHECK(a.adopt_prefix(session) == 32);
  CHECK(b.adopt_prefix(anonymous) == 0);
  CHECK(pool.stats().restores == 2);
  fs::remove_all(dir);
}
