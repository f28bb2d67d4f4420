#include "engine/kv_cache.hpp"
#include "engine/model.hpp"
#include "engine/model_writer.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <thread>
#include <atomic>

using namespace shoal::engine;
using shoal::kernels::kv_type;

namespace {

std::shared_ptr<const model> tiny_model(uint32_t weight_type = 0) {
  auto dir = std::filesystem::temp_directory_path() / "shoal-kv-test";
  std::filesystem::create_directories(dir);
  auto path = (dir / ("tiny-" + std::to_string(weight_type) + ".gguf")).string();
  auto s = *random_model_preset("tiny");
  s.weight_type = weight_type;
  REQUIRE(write_random_model(s, path));
  auto m = model::load(path);
  REQUIRE_MESSAGE(m, (m ? "" : m.err().message));
  return *m;
}

std::vector<int32_t> random_tokens(size_t n, std::mt19937& rng, int32_t lo = 300,
                                   int32_t hi = 500) {
  std::uniform_int_distribution<int32_t> d(lo, hi - 1);
  std::vector<int32_t> t(n);
  for (auto& x : t)
    x = d(rng);
  return t;
}

/// Logits of the last token after evaluating `toks` (in one batch) into `c`.
std::vector<float> run(context& ctx, kv_cache& c, std::span<const int32_t> toks) {
  std::vector<float> logits(ctx.get_model().hparams().n_vocab);
  auto r = ctx.eval(c, toks, logits);
  REQUIRE_MESSAGE(r, (r ? "" : r.err().message));
  return logits;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::abs(double(a[i]) - b[i]));
  return m;
}

} // namespace

TEST_CASE("kv_pool: a randomized workload never exceeds the budget and the accounting balances") {
  auto m = tiny_model();
  const auto& hp = m->hparams();
  kv_tier_config cfg;
  cfg.recent_tokens = 32;
  cfg.migrate_pages = 1;
  auto probe = kv_pool(hp, cfg, nullptr);
  const size_t recent_bytes = probe.page_bytes(false), old_bytes = probe.page_bytes(true);
  REQUIRE(old_bytes < recent_bytes);
  auto budget = std::make_shared<shoal::core::memory_budget>(40 * recent_bytes);
  std::mt19937 rng(7);
  std::vector<int32_t> common = random_tokens(64, rng); // shared prefixes
  {
    kv_pool pool(hp, cfg, budget);
    std::vector<std::unique_ptr<kv_cache>> seqs;
    size_t refused = 0, adopted = 0;
    for (int step = 0; step < 5000; ++step) {
      int op = static_cast<int>(rng() % 6);
      if (op == 0 || seqs.empty()) { // a new sequence, often with a known prefix
        auto c = std::make_unique<kv_cache>(pool, 256);
        std::vector<int32_t> prompt(common.begin(), common.begin() + (rng() % 64));
        auto extra = random_tokens(1 + rng() % 40, rng);
        prompt.insert(prompt.end(), extra.begin(), extra.end());
        adopted += c->adopt_prefix(prompt);
        auto rest = std::span<const int32_t>(prompt).subspan(c->n_tokens());
        if (c->reserve(prompt.size())) {
          c->append(rest);
          seqs.push_back(std::move(c));
        } else {
          ++refused;
        }
      } else if (op == 1) { // drop one
        seqs.erase(seqs.begin() + rng() % seqs.size());
      } else if (op == 2) { // grow one
        auto& c = *seqs[rng() % seqs.size()];
        size_t n = 1 + rng() % 24;
        if (c.n_tokens() + n <= c.capacity()) {
          if (c.reserve(c.n_tokens() + n))
            c.append(random_tokens(n, rng));
          else
            ++refused;
        }
      } else if (op == 3) { // roll back
        auto& c = *seqs[rng() % seqs.size()];
        c.truncate(c.n_tokens() * (rng() % 100) / 100);
      } else { // migrate
        seqs[rng() % seqs.size()]->migrate(op == 5);
      }
      REQUIRE(budget->used() <= budget->limit());
      auto st = pool.stats();
      REQUIRE(budget->used() == st.bytes_recent + st.bytes_old);
      for (const auto& c : seqs)
        REQUIRE(c->pages(false) + c->pages(true) >= (c->n_tokens() + 15) / 16);
    }
    auto st = pool.stats();
    MESSAGE("refused " << refused << ", adopted " << adopted << " tokens, evictions "
                       << st.evictions << ", migrations " << st.migrations << ", copies "
                       << st.copies << ", prefix hits " << st.prefix_hits);
    CHECK(refused > 0);      // the budget was tight enough to matter
    CHECK(st.evictions > 0); // cached pages made room
    CHECK(st.migrations > 0);
    CHECK(st.prefix_hits > 0);
    CHECK(adopted > 0);
    seqs.clear();
    st = pool.stats();
    CHECK(st.pages_recent + st.pages_old == st.pages_cached); // only the cache is left
  }
  CHECK(budget->used() == 0); // the pool gave everything back
}

TEST_CASE("kv_cache: a full budget refuses clearly and changes nothing") {
  auto m = tiny_model();
  kv_tier_config cfg;
  kv_pool probe(m->hparams(), cfg, nullptr);
  auto budget = std::make_shared<shoal::core::memory_budget>(2 * probe.page_bytes(false));
  kv_pool pool(m->hparams(), cfg, budget);
  kv_cache c(pool, 256);
  context ctx(m, 64, nullptr);
  std::mt19937 rng(3);
  auto toks = random_tokens(40, rng);
  std::vector<float> logits(m->hparams().n_vocab);
  auto r = ctx.eval(c, toks, logits);
  REQUIRE_FALSE(r);
  CHECK(r.err().message.find("budget") != std::string::npos);
  CHECK(c.n_tokens() == 0);
  CHECK(budget->used() <= budget->limit());
  // 32 tokens fit in two pages.
  CHECK(ctx.eval(c, std::span(toks).first(32), logits));
  CHECK(c.n_tokens() == 32);
}

TEST_CASE("kv_cache: a shared prefix gives the logits of a full prefill, and copy-on-write keeps "
          "it intact") {
  auto m = tiny_model();
  kv_tier_config cfg;
  cfg.recent_type = kv_type::f32;
  cfg.recent_tokens = UINT32_MAX;
  kv_pool pool(m->hparams(), cfg, nullptr);
  context ctx(m, 128, nullptr);
  std::mt19937 rng(5);
  auto prefix = random_tokens(50, rng);
  auto tail_a = random_tokens(7, rng), tail_b = random_tokens(9, rng);
  auto cat = [](std::vector<int32_t> a, const std::vector<int32_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  auto a_toks = cat(prefix, tail_a), b_toks = cat(prefix, tail_b);

  // References without sharing.
  kv_cache ref_a(m->hparams(), 128, kv_type::f32), ref_b(m->hparams(), 128, kv_type::f32);
  auto want_a = run(ctx, ref_a, a_toks), want_b = run(ctx, ref_b, b_toks);

  kv_cache a(pool, 128);
  CHECK(a.adopt_prefix(a_toks) == 0); // nothing cached yet
  auto got_a = run(ctx, a, a_toks);
  CHECK(max_abs_diff(got_a, want_a) <= 1e-5);

  kv_cache b(pool, 128);
  CHECK(b.adopt_prefix(b_toks) == 48); // three full pages of the common 50 tokens
  auto got_b = run(ctx, b, std::span<const int32_t>(b_toks).subspan(48));
  CHECK(max_abs_diff(got_b, want_b) <= 1e-5);
  CHECK(pool.stats().prefix_hits == 3);

  // b rolls back into a shared page and writes other tokens there: a's page
  // is copied, not overwritten.
  auto copies = pool.stats().copies;
  b.truncate(40);
  auto other = random_tokens(5, rng);
  run(ctx, b, other);
  CHECK(pool.stats().copies == copies + 1);
  std::vector<int32_t> more = random_tokens(3, rng);
  auto a_more = run(ctx, a, more);
  auto ref_more = run(ctx, ref_a, more);
  CHECK(max_abs_diff(a_more, ref_more) <= 1e-5);

  // Released pages stay cached: a third sequence still finds the prefix.
  { kv_cache gone(pool, 128); }
  kv_cache c(pool, 128);
  CHECK(c.adopt_prefix(a_toks) == 48);
}

TEST_CASE(
  "kv_cache: two tiers stay close to an all-F32 cache and old pages hold fewer bytes per token") {
  auto m = tiny_model();
  const auto& hp = m->hparams();
  std::mt19937 rng(9);
  auto toks = random_tokens(200, rng);
  kv_cache ref(hp, 256, kv_type::f32);
  context ctx(m, 256, nullptr);
  std::vector<float> want(toks.size() * hp.n_vocab);
  REQUIRE(ctx.eval(ref, toks, want, true));

  for (kv_type old : {kv_type::q8_0, kv_type::q4_0}) {
    INFO(std::string(shoal::kernels::to_string(old)));
    kv_tier_config cfg;
    cfg.recent_tokens = 32;
    cfg.migrate_pages = 1;
    cfg.old_k_type = cfg.old_v_type = old;
    kv_pool pool(hp, cfg, nullptr);
    kv_cache c(pool, 256);
    // Token by token, migrating after each as the engine does.
    std::vector<float> got(toks.size() * hp.n_vocab), one(hp.n_vocab);
    for (size_t t = 0; t < toks.size(); ++t) {
      REQUIRE(ctx.eval(c, std::span(toks).subspan(t, 1), one));
      std::copy(one.begin(), one.end(), got.begin() + t * hp.n_vocab);
      c.migrate();
    }
    CHECK(c.pages(true) == (200 - 32) / 16);
    CHECK(c.pages(false) == 13 - (200 - 32) / 16);
    CHECK(pool.page_bytes(true) * 2 <= pool.page_bytes(false) + pool.page_bytes(false) / 8);
    // Agreement of the next-token argmax, and bounded logit error.
    size_t agree = 0;
    double worst = 0, scale = 0;
    for (size_t t = 0; t < toks.size(); ++t) {
      auto a = std::span(got).subspan(t * hp.n_vocab, hp.n_vocab);
      auto b = std::span(want).subspan(t * hp.n_vocab, hp.n_vocab);
      agree += std::max_element(a.begin(), a.end()) - a.begin()
               == std::max_element(b.begin(), b.end()) - b.begin();
      for (size_t i = 0; i < a.size(); ++i) {
        worst = std::max(worst, std::abs(double(a[i]) - b[i]));
        scale = std::max(scale, std::abs(double(b[i])));
      }
    }
    MESSAGE(std::string(shoal::kernels::to_string(old))
            << " old tier: argmax agreement " << agree << "/200, max |dlogit| " << worst
            << " (max |logit| " << scale << ")");
    CHECK(agree >= (old == kv_type::q8_0 ? 196u : 180u));
    CHECK(worst <= (old == kv_type::q8_0 ? 0.02 : 0.15) * scale);
  }
}

TEST_CASE("kv_pool: session pages are evicted after all others, and trim frees cached pages") {
  auto m = tiny_model();
  kv_tier_config cfg;
  kv_pool probe(m->hparams(), cfg, nullptr);
  const size_t page = probe.page_bytes(false);
  auto budget = std::make_shared<shoal::core::memory_budget>(8 * page);
  kv_pool pool(m->hparams(), cfg, budget);
  std::mt19937 rng(11);
  auto fill = [&](const std::vector<int32_t>& toks, bool important) {
    kv_cache c(pool, 256);
    c.set_important(important);
    REQUIRE(c.reserve(toks.size()));
    c.append(toks); // names the full pages; released (cached) when c goes
  };
  auto session_toks = random_tokens(64, rng), other_toks = random_tokens(64, rng);
  fill(session_toks, true); // 4 pages
  fill(other_toks, false);  // 4 pages
  CHECK(pool.stats().pages_cached == 8);
  CHECK(pool.stats().bytes_cached == 8 * page);
  // Room for 4 new pages: the 4 non-session pages go.
  fill(random_tokens(64, rng), false);
  CHECK(pool.stats().evictions == 4);
  kv_cache s(pool, 256);
  CHECK(s.adopt_prefix(session_toks) == 48); // the session's pages survived (last page kept back)
  kv_cache o(pool, 256);
  CHECK(o.adopt_prefix(other_toks) == 0);
  // trim frees cached pages down to what is asked (s holds 3 pages: not cached).
  auto before = pool.stats();
  CHECK(before.pages_cached == 5); // the third fill's 4 pages + the session's last
  size_t freed = pool.trim(2 * page);
  CHECK(freed == 2 * page);
  CHECK(pool.stats().pages_cached == before.pages_cached - 2);
  CHECK(pool.trim(1000 * page) == (before.pages_cached - 2) * page);
  CHECK(pool.stats().pages_cached == 0);
  CHECK(s.pages(false) == 3); // pages in use are never trimmed
  CHECK(budget->used() == 3 * page);
}

TEST_CASE("kv_pool: a new tier policy re-quantizes the old tier in place and sequences go on") {
  auto m = tiny_model();
  const auto& hp = m->hparams();
  std::mt19937 rng(13);
  auto toks = random_tokens(120, rng);
  auto more = random_tokens(8, rng);
  context ctx(m, 256, nullptr);
  kv_cache ref(hp, 256, kv_type::f32);
  run(ctx, ref, toks);
  auto want = run(ctx, ref, more);

  kv_tier_config cfg;
  cfg.recent_tokens = 16;
  cfg.migrate_pages = 1;
  kv_pool probe(hp, cfg, nullptr);
  auto budget = std::make_shared<shoal::core::memory_budget>(12 * probe.page_bytes(false));
  kv_pool pool(hp, cfg, budget);
  kv_cache c(pool, 256);
  run(ctx, c, toks);
  c.migrate(true);
  REQUIRE(c.pages(true) == 6);
  const auto q8_used = budget->used();
  const auto epoch = pool.epoch();

  auto p = pool.policy();
  CHECK(p.old_k_type == kv_type::q8_0);
  p.old_k_type = p.old_v_type = kv_type::q4_0;
  p.recent_tokens = 32;
  auto r = pool.set_policy(p);
  REQUIRE(r);
  CHECK(r->old_k_type == kv_type::q4_0);
  CHECK(pool.epoch() == epoch + 1);
  CHECK(pool.config().recent_tokens == 32);
  CHECK(pool.page_bytes(true) < probe.page_bytes(true));
  CHECK(budget->used() == q8_used - 6 * (probe.page_bytes(true) - pool.page_bytes(true)));
  CHECK(budget->used() == pool.stats().bytes_recent + pool.stats().bytes_old);
  // The sequence reads its re-quantized pages: still close to the F32 reference.
  auto got = run(ctx, c, more);
  double worst = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    worst = std::max(worst, std::abs(double(got[i]) - want[i]));
    scale = std::max(scale, std::abs(double(want[i])));
  }
  CHECK(worst <= 0.15 * scale);
  CHECK(std::max_element(got.begin(), got.end()) - got.begin()
        == std::max_element(want.begin(), want.end()) - want.begin());

  // Back to Q8_0 needs more bytes; a budget too small refuses and changes nothing.
  p.old_k_type = p.old_v_type = kv_type::q8_0;
  {
    kv_tier_config q4cfg = cfg;
    q4cfg.old_k_type = q4cfg.old_v_type = kv_type::q4_0;
    kv_pool q4probe(hp, q4cfg, nullptr);
    const size_t pf = q4probe.page_bytes(false), p4 = q4probe.page_bytes(true);
    kv_pool small(hp, q4cfg, std::make_shared<shoal::core::memory_budget>(3 * pf + 6 * p4));
    kv_cache s(small, 256);
    for (size_t i = 0; i < toks.size(); i += 16) { // as the engine: migrate after each step
      run(ctx, s, std::span(toks).subspan(i, std::min<size_t>(16, toks.size() - i)));
      s.migrate(true);
    }
    REQUIRE(s.pages(true) == 6);
    auto back = small.set_policy(p); // needs 6 × (Q8_0 - Q4_0) bytes more than are free
    REQUIRE_FALSE(back);
    CHECK(back.err().message.find("budget") != std::string::npos);
    CHECK(small.policy().old_k_type == kv_type::q4_0);
    CHECK(small.page_bytes(true) == p4);
    run(ctx, s, more); // still usable
  }
  REQUIRE(pool.set_policy(p));
  CHECK(pool.page_bytes(true) == probe.page_bytes(true));
  CHECK(budget->used() == pool.stats().bytes_recent + pool.stats().bytes_old);
  p.migrate_pages = 0;
  CHECK_FALSE(pool.set_policy(p));
}
