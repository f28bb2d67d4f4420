#include "actors/kv_spill.hpp"

#include "engine/model.hpp"
#include "engine/model_writer.hpp"
#include "store/testing.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <random>

using namespace shoal::store;
using namespace shoal::store::testing;
namespace crypto = shoal::crypto;
namespace fs = std::filesystem;
using shoal::actors::kv_spill_store;

namespace {
std::shared_ptr<kv_spill_store> spill_store(std::shared_ptr<environment> env,
                                            std::shared_ptr<const crypto::sealer> seal,
                                            uint64_t model_key) {
  return std::make_shared<kv_spill_store>(
    std::make_unique<kv_spill_table>(std::move(env), std::move(seal), model_key, 1 << 24));
}
} // namespace

TEST_CASE("kv spill store: pages come back with their KV types, and unknown types are dropped") {
  auto dir = temp_dir("spill-types");
  auto env = environment::open({dir});
  REQUIRE(env);
  auto seal = std::make_shared<const crypto::sealer>(*crypto::sealer::from_hex(seal_key_a));
  auto s = spill_store(*env, seal, 7);
  shoal::engine::kv_spill::page p;
  p.parent = 11;
  p.old = true;
  p.k_type = shoal::kernels::kv_type::q8_0;
  p.v_type = shoal::kernels::kv_type::q4_0;
  p.tokens = {1, 2, 3};
  p.bytes = std::string(300, 'x');
  REQUIRE(s->put(1, p));
  auto q = s->get(1);
  REQUIRE(q);
  CHECK(q->parent == 11);
  CHECK(q->old);
  CHECK(q->k_type == shoal::kernels::kv_type::q8_0);
  CHECK(q->v_type == shoal::kernels::kv_type::q4_0);
  CHECK(q->tokens == p.tokens);
  CHECK(q->bytes == p.bytes);
  // A stored record naming no KV type (damage, a foreign writer) is not used.
  REQUIRE(s->table().put(2, {0, false, 7, 1, {1}, "abcd"}));
  CHECK_FALSE(s->get(2));
  CHECK(s->table().records() == 0);
  fs::remove_all(dir);
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

TEST_CASE(
  "kv spill store under a kv_pool: evicted prefix pages come back and give the same logits") {
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
  auto spill = spill_store(*env, seal, model->fingerprint());
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
  CHECK(spill->table().records() == 2);
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
    pool.set_spill(spill_store(*env, seal, model->fingerprint()));
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
  auto spill = spill_store(*env, seal, model->fingerprint());
  CHECK(spill->table().records() == 2);
  pool.set_spill(spill);
  kv_cache a(pool, 128), b(pool, 128);
  CHECK(a.adopt_prefix(session) == 32);
  CHECK(b.adopt_prefix(anonymous) == 0);
  CHECK(pool.stats().restores == 2);
  fs::remove_all(dir);
}
