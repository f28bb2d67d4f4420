#include "engine/kv_cache.hpp"

#include "engine/model.hpp"
#include "kernels/blocks.hpp"
#include "kernels/quant.hpp"
#include "kernels/vector.hpp"

#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <new>
#include <string>

namespace shoal::engine {

// ---- pages -----------------------------------------------------------------------

struct kv_page {
  std::byte* data = nullptr;
  bool old = false; ///< tier
  uint32_t refs = 0;
  bool named = false;     ///< in the prefix table
  bool important = false; ///< held by a session: evicted after the others
  uint64_t hash = 0, parent = 0;
  std::vector<int32_t> tokens;              ///< when named: the page's tokens (checked on hits)
  kv_page *prev = nullptr, *next = nullptr; ///< cached-page LRU links (refs == 0)
};

namespace {

std::byte* alloc_bytes(size_t n) {
  return new (std::align_val_t{64}) std::byte[n]();
}

void free_bytes(std::byte* p) noexcept {
  ::operator delete[](p, std::align_val_t{64});
}

uint64_t chain_hash(uint64_t parent, std::span<const int32_t> tokens) noexcept {
  return XXH3_64bits_withSeed(tokens.data(), tokens.size_bytes(), parent);
}

/// Converts one row of `n` elements between KV types (through f32).
void convert_row(std::byte* dst, kernels::kv_type to, const std::byte* src, kernels::kv_type from,
                 size_t n, std::vector<float>& tmp) {
  tmp.resize(n);
  switch (from) {
    case kernels::kv_type::f32:
      std::memcpy(tmp.data(), src, n * 4);
      break;
    case kernels::kv_type::f16:
      kernels::convert_f16_to_f32({reinterpret_cast<const uint16_t*>(src), n}, tmp);
      break;
    case kernels::kv_type::q8_0:
      kernels::dequantize_q8_0({reinterpret_cast<const kernels::block_q8_0*>(src), n / 32}, tmp);
      break;
    case kernels::kv_type::q4_0:
      kernels::dequantize_q4_0({reinterpret_cast<const kernels::block_q4_0*>(src), n / 32}, tmp);
      break;
  }
  switch (to) {
    case kernels::kv_type::f32:
      std::memcpy(dst, tmp.data(), n * 4);
      break;
    case kernels::kv_type::f16:
      kernels::convert_f32_to_f16(tmp, {reinterpret_cast<uint16_t*>(dst), n});
      break;
    case kernels::kv_type::q8_0:
      kernels::quantize_q8_0(tmp, {reinterpret_cast<kernels::block_q8_0*>(dst), n / 32});
      break;
    case kernels::kv_type::q4_0:
      kernels::quantize_q4_0(tmp, {reinterpret_cast<kernels::block_q4_0*>(dst), n / 32});
      break;
  }
}

} // namespace

// ---- kv_pool ---------------------------------------------------------------------

/// Quantized rows are blocks of 32 channels that must not straddle heads:
/// such a model keeps F16.
static kernels::kv_type usable_type(kernels::kv_type t, uint32_t head_dim) noexcept {
  bool quantized = t == kernels::kv_type::q8_0 || t == kernels::kv_type::q4_0;
  return quantized && head_dim % 32 != 0 ? kernels::kv_type::f16 : t;
}

kv_pool::kv_pool(const llama_hparams& hp, kv_tier_config cfg,
                 std::shared_ptr<core::memory_budget> budget)
  : n_layer_(hp.n_layer), cfg_(cfg), budget_(std::move(budget)), head_dim_(hp.head_dim) {
  if (cfg_.page_tokens == 0)
    cfg_.page_tokens = 16;
  if (cfg_.migrate_pages == 0)
    cfg_.migrate_pages = 1;
  cfg_.old_k_type = usable_type(cfg_.old_k_type, head_dim_);
  cfg_.old_v_type = usable_type(cfg_.old_v_type, head_dim_);
  row_elems_ = hp.n_embd_kv();
  layout_[0] = make_layout(cfg_.recent_type, cfg_.recent_type);
  layout_[1] = make_layout(cfg_.old_k_type, cfg_.old_v_type);
  for (int old = 0; old < 2; ++old)
    page_bytes_[old] = bytes_of(layout_[old]);
}

kernels::kv_page_layout kv_pool::make_layout(kernels::kv_type k,
                                             kernels::kv_type v) const noexcept {
  kernels::kv_page_layout l;
  l.page_tokens = cfg_.page_tokens;
  l.row_elems = row_elems_;
  l.k_type = k;
  l.v_type = v;
  return l;
}

core::result<kv_policy> kv_pool::set_policy(kv_policy p) {
  if (p.migrate_pages == 0 || p.migrate_pages > 1024)
    return core::error{errc::invalid_argument, "migrate_pages must be in [1, 1024]"};
  p.old_k_type = usable_type(p.old_k_type, head_dim_);
  p.old_v_type = usable_type(p.old_v_type, head_dim_);
  if (p.old_k_type != cfg_.old_k_type || p.old_v_type != cfg_.old_v_type) {
    const auto to = make_layout(p.old_k_type, p.old_v_type);
    const size_t old_bytes = page_bytes_[1], new_bytes = bytes_of(to);
    auto n_old = [&] {
      return static_cast<size_t>(
        std::count_if(all_.begin(), all_.end(), [](const kv_page* q) { return q->old; }));
    };
    // Room first (evicting cached pages if needed), so nothing changes on failure.
    if (new_bytes > old_bytes && budget_) {
      while (!budget_->try_reserve(core::memory_budget::use::kv, n_old() * (new_bytes - old_bytes)))
        if (evict_one() == 0)
          return core::error{
            errc::resource_exhausted,
            "the KV cache budget cannot hold the old tier's pages in the new types"};
    }
    size_t converted = 0;
    for (kv_page* q : all_) {
      if (!q->old)
        continue;
      std::byte* data = alloc_bytes(new_bytes);
      convert(data, to, q->data, layout_[1], cfg_.page_tokens);
      free_bytes(q->data);
      q->data = data;
      ++converted;
    }
    if (budget_ && new_bytes < old_bytes)
      budget_->release(core::memory_budget::use::kv, converted * (old_bytes - new_bytes));
    // Cached bytes follow the new page size.
    uint64_t cached_old = 0;
    for (const auto& l : lru_)
      for (const kv_page* q = l.head; q; q = q->next)
        cached_old += q->old ? 1 : 0;
    c_.cached_bytes.fetch_add(cached_old * new_bytes, std::memory_order_relaxed);
    c_.cached_bytes.fetch_sub(cached_old * old_bytes, std::memory_order_relaxed);
    layout_[1] = to;
    page_bytes_[1] = new_bytes;
    cfg_.old_k_type = p.old_k_type;
    cfg_.old_v_type = p.old_v_type;
    ++epoch_;
  }
  cfg_.recent_tokens = p.recent_tokens;
  cfg_.migrate_pages = p.migrate_pages;
  return policy();
}

kv_pool::~kv_pool() {
  // Sequences release their pages first; what is left is the cache. Pages of
  // sessions go to the spill store (if any), so a session that returns after
  // a restart finds its KV again.
  while (kv_page* p = lru_[1].pop_front()) {
    spill_page(p);
    free_page(p);
  }
  while (kv_page* p = lru_[0].pop_front())
    free_page(p);
}

void kv_pool::spill_page(const kv_page* p) {
  if (!spill_ || !p->named)
    return;
  const auto& l = layout_[p->old];
  kv_spill::page rec{
    p->parent, p->old,    l.k_type,
    l.v_type,  p->tokens, std::string(reinterpret_cast<const char*>(p->data), page_bytes_[p->old])};
  (spill_->put(p->hash, rec) ? c_.spills : c_.spill_failures)
    .fetch_add(1, std::memory_order_relaxed);
}

void kv_pool::lru_list::push_back(kv_page* p) noexcept {
  p->prev = tail;
  p->next = nullptr;
  (tail ? tail->next : head) = p;
  tail = p;
}

void kv_pool::lru_list::remove(kv_page* p) noexcept {
  (p->prev ? p->prev->next : head) = p->next;
  (p->next ? p->next->prev : tail) = p->prev;
  p->prev = p->next = nullptr;
}

kv_page* kv_pool::lru_list::pop_front() noexcept {
  kv_page* p = head;
  if (p)
    remove(p);
  return p;
}

kv_pool_stats kv_pool::stats() const noexcept {
  kv_pool_stats s;
  s.pages_recent = c_.pages[0].load(std::memory_order_relaxed);
  s.pages_old = c_.pages[1].load(std::memory_order_relaxed);
  s.pages_cached = c_.cached.load(std::memory_order_relaxed);
  s.bytes_cached = c_.cached_bytes.load(std::memory_order_relaxed);
  s.page_bytes_recent = page_bytes_[0];
  s.page_bytes_old = page_bytes_[1];
  s.page_tokens = cfg_.page_tokens;
  s.bytes_recent = s.pages_recent * page_bytes_[0];
  s.bytes_old = s.pages_old * page_bytes_[1];
  s.prefix_hits = c_.hits.load(std::memory_order_relaxed);
  s.prefix_misses = c_.misses.load(std::memory_order_relaxed);
  s.evictions = c_.evictions.load(std::memory_order_relaxed);
  s.migrations = c_.migrations.load(std::memory_order_relaxed);
  s.copies = c_.copies.load(std::memory_order_relaxed);
  s.alloc_failures = c_.failures.load(std::memory_order_relaxed);
  s.spills = c_.spills.load(std::memory_order_relaxed);
  s.restores = c_.restores.load(std::memory_order_relaxed);
  s.spill_failures = c_.spill_failures.load(std::memory_order_relaxed);
  return s;
}

size_t kv_pool::evict_one() {
  // Pages no session holds go first, least recently released first.
  kv_page* victim = lru_[0].pop_front();
  if (!victim)
    victim = lru_[1].pop_front();
  if (!victim)
    return 0;
  size_t freed = page_bytes_[victim->old];
  c_.cached.fetch_sub(1, std::memory_order_relaxed);
  c_.cached_bytes.fetch_sub(freed, std::memory_order_relaxed);
  c_.evictions.fetch_add(1, std::memory_order_relaxed);
  spill_page(victim);
  free_page(victim);
  return freed;
}

size_t kv_pool::trim(size_t bytes) {
  size_t freed = 0;
  while (freed < bytes) {
    size_t n = evict_one();
    if (n == 0)
      break;
    freed += n;
  }
  return freed;
}

bool kv_pool::reserve_bytes(size_t bytes) {
  if (!budget_)
    return true;
  while (!budget_->try_reserve(core::memory_budget::use::kv, bytes)) {
    if (evict_one() == 0) {
      c_.failures.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
  }
  return true;
}

kv_page* kv_pool::allocate(bool old) {
  if (!reserve_bytes(page_bytes_[old]))
    return nullptr;
  auto* p = new kv_page;
  p->data = alloc_bytes(page_bytes_[old]);
  p->old = old;
  p->refs = 1;
  all_.insert(p);
  c_.pages[old].fetch_add(1, std::memory_order_relaxed);
  return p;
}

void kv_pool::free_page(kv_page* p) noexcept {
  if (p->named) {
    auto it = by_hash_.find(p->hash);
    if (it != by_hash_.end() && it->second == p)
      by_hash_.erase(it);
  }
  c_.pages[p->old].fetch_sub(1, std::memory_order_relaxed);
  if (budget_)
    budget_->release(core::memory_budget::use::kv, page_bytes_[p->old]);
  all_.erase(p);
  free_bytes(p->data);
  delete p;
}

void kv_pool::ref(kv_page* p) noexcept {
  if (p->refs++ == 0) { // leaves the cache
    lru_[p->important].remove(p);
    c_.cached.fetch_sub(1, std::memory_order_relaxed);
    c_.cached_bytes.fetch_sub(page_bytes_[p->old], std::memory_order_relaxed);
  }
}

void kv_pool::unref(kv_page* p) noexcept {
  if (--p->refs > 0)
    return;
  if (!p->named || !cfg_.prefix_caching) {
    free_page(p);
    return;
  }
  lru_[p->important].push_back(p); // most recently released at the tail
  c_.cached.fetch_add(1, std::memory_order_relaxed);
  c_.cached_bytes.fetch_add(page_bytes_[p->old], std::memory_order_relaxed);
}

kv_page* kv_pool::lookup(uint64_t hash, uint64_t parent, std::span<const int32_t> tokens) {
  auto same = [&](uint64_t p, std::span<const int32_t> t) {
    return p == parent && std::equal(tokens.begin(), tokens.end(), t.begin(), t.end());
  };
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end() && spill_) {
    // Second level: a page spilled earlier comes back.
    // (The record may be in other types: the policy changed since.)
    auto rec = spill_->get(hash);
    const auto from = rec ? make_layout(rec->k_type, rec->v_type) : kernels::kv_page_layout{};
    if (rec && same(rec->parent, rec->tokens) && rec->bytes.size() == bytes_of(from)) {
      if (kv_page* p = allocate(rec->old)) {
        const auto& to = layout_[rec->old];
        if (from.k_type == to.k_type && from.v_type == to.v_type)
          std::memcpy(p->data, rec->bytes.data(), rec->bytes.size());
        else
          convert(p->data, to, reinterpret_cast<const std::byte*>(rec->bytes.data()), from,
                  cfg_.page_tokens);
        publish(p, hash, parent, tokens);
        c_.restores.fetch_add(1, std::memory_order_relaxed);
        c_.hits.fetch_add(1, std::memory_order_relaxed);
        return p;
      }
    }
  }
  if (it == by_hash_.end() || !same(it->second->parent, it->second->tokens)) {
    c_.misses.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  c_.hits.fetch_add(1, std::memory_order_relaxed);
  ref(it->second);
  return it->second;
}

void kv_pool::publish(kv_page* p, uint64_t hash, uint64_t parent, std::span<const int32_t> tokens) {
  if (!cfg_.prefix_caching || p->named || by_hash_.count(hash))
    return;
  p->named = true;
  p->hash = hash;
  p->parent = parent;
  p->tokens.assign(tokens.begin(), tokens.end());
  by_hash_.emplace(hash, p);
}

std::byte* kv_pool::k_page(const kv_page* p, size_t layer) const noexcept {
  const auto& l = layout_[p->old];
  return p->data + layer * (l.k_page_bytes() + l.v_page_bytes());
}

std::byte* kv_pool::v_page(const kv_page* p, size_t layer) const noexcept {
  return k_page(p, layer) + layout_[p->old].k_page_bytes();
}

void kv_pool::convert(std::byte* dst, const kernels::kv_page_layout& to, const std::byte* src,
                      const kernels::kv_page_layout& from, size_t rows) const {
  std::vector<float> tmp;
  const size_t from_layer = from.k_page_bytes() + from.v_page_bytes();
  const size_t to_layer = to.k_page_bytes() + to.v_page_bytes();
  for (size_t l = 0; l < n_layer_; ++l) {
    const std::byte* k = src + l * from_layer;
    const std::byte* v = k + from.k_page_bytes();
    std::byte* nk = dst + l * to_layer;
    std::byte* nv = nk + to.k_page_bytes();
    for (size_t t = 0; t < rows; ++t) {
      convert_row(nk + t * to.k_row_bytes(), to.k_type, k + t * from.k_row_bytes(), from.k_type,
                  from.row_elems, tmp);
      convert_row(nv + t * to.v_row_bytes(), to.v_type, v + t * from.v_row_bytes(), from.v_type,
                  from.row_elems, tmp);
    }
  }
}

bool kv_pool::migrate(kv_page* p) {
  if (p->old)
    return true;
  if (!reserve_bytes(page_bytes_[1]))
    return false;
  std::byte* data = alloc_bytes(page_bytes_[1]);
  convert(data, layout_[1], p->data, layout_[0], cfg_.page_tokens);
  free_bytes(p->data);
  if (budget_)
    budget_->release(core::memory_budget::use::kv, page_bytes_[0]);
  c_.pages[0].fetch_sub(1, std::memory_order_relaxed);
  c_.pages[1].fetch_add(1, std::memory_order_relaxed);
  c_.migrations.fetch_add(1, std::memory_order_relaxed);
  p->data = data;
  p->old = true;
  return true;
}

kv_page* kv_pool::copy(const kv_page* p, bool old, size_t rows) {
  kv_page* q = allocate(old);
  if (!q)
    return nullptr;
  if (p->old == old)
    std::memcpy(q->data, p->data, page_bytes_[old]);
  else
    convert(q->data, layout_[old], p->data, layout_[p->old], rows);
  c_.copies.fetch_add(1, std::memory_order_relaxed);
  return q;
}

// ---- kv_cache --------------------------------------------------------------------

kv_cache::kv_cache(kv_pool& pool, size_t n_ctx) : pool_(&pool), n_ctx_(n_ctx) {
  k_ptrs_.resize(pool.n_layer());
  v_ptrs_.resize(pool.n_layer());
  epoch_ = pool.epoch();
}

void kv_cache::refresh_pointers() {
  for (size_t i = 0; i < pages_.size(); ++i)
    set_page(i, pages_[i]);
  epoch_ = pool_->epoch();
}

kv_cache::kv_cache(const llama_hparams& hp, size_t n_ctx, kernels::kv_type type, size_t page_tokens)
  : own_pool_(std::make_unique<kv_pool>(hp,
                                        kv_tier_config{static_cast<uint32_t>(page_tokens),
                                                       std::numeric_limits<uint32_t>::max(), type,
                                                       type, type, 1, false},
                                        nullptr)),
    pool_(own_pool_.get()), n_ctx_(n_ctx) {
  k_ptrs_.resize(pool_->n_layer());
  v_ptrs_.resize(pool_->n_layer());
}

kv_cache::~kv_cache() {
  for (kv_page* p : pages_)
    pool_->unref(p);
}

size_t kv_cache::bytes() const noexcept {
  size_t b = 0;
  for (const kv_page* p : pages_)
    b += pool_->page_bytes(p->old);
  return b;
}

size_t kv_cache::pages(bool old) const noexcept {
  return static_cast<size_t>(
    std::count_if(pages_.begin(), pages_.end(), [&](const kv_page* p) { return p->old == old; }));
}

void kv_cache::truncate(size_t n) noexcept {
  if (n >= n_tokens_)
    return;
  n_tokens_ = n;
  tokens_.resize(n);
  const size_t pt = pool_->config().page_tokens;
  hashes_.resize(std::min(hashes_.size(), n / pt));
  // Pages wholly past the end go back to the pool; a partly kept page stays
  // (reserve copies it before it is written if it is shared).
  size_t keep = (n + pt - 1) / pt;
  while (pages_.size() > keep) {
    pool_->unref(pages_.back());
    pages_.pop_back();
    for (size_t l = 0; l < pool_->n_layer(); ++l) {
      k_ptrs_[l].pop_back();
      v_ptrs_[l].pop_back();
    }
  }
  rebuild_runs();
}

void kv_cache::set_page(size_t i, kv_page* p) {
  if (i == pages_.size()) {
    pages_.push_back(p);
    for (size_t l = 0; l < pool_->n_layer(); ++l) {
      k_ptrs_[l].push_back(pool_->k_page(p, l));
      v_ptrs_[l].push_back(pool_->v_page(p, l));
    }
  } else {
    pages_[i] = p;
    for (size_t l = 0; l < pool_->n_layer(); ++l) {
      k_ptrs_[l][i] = pool_->k_page(p, l);
      v_ptrs_[l][i] = pool_->v_page(p, l);
    }
  }
}

void kv_cache::rebuild_runs() noexcept {
  runs_.clear();
  for (size_t i = 0; i < pages_.size(); ++i) {
    if (!runs_.empty() && runs_.back().old == pages_[i]->old)
      ++runs_.back().count;
    else
      runs_.push_back({i, 1, pages_[i]->old});
  }
}

size_t kv_cache::adopt_prefix(std::span<const int32_t> prompt) {
  if (n_tokens_ != 0 || !pool_->config().prefix_caching || prompt.empty())
    return 0;
  const size_t pt = pool_->config().page_tokens;
  const size_t max_pages = std::min(prompt.size() - 1, n_ctx_) / pt;
  uint64_t parent = 0;
  for (size_t i = 0; i < max_pages; ++i) {
    auto toks = prompt.subspan(i * pt, pt);
    uint64_t h = chain_hash(parent, toks);
    kv_page* p = pool_->lookup(h, parent, toks);
    if (!p)
      break;
    p->important = p->important || important_;
    set_page(i, p);
    hashes_.push_back(h);
    tokens_.insert(tokens_.end(), toks.begin(), toks.end());
    n_tokens_ += pt;
    parent = h;
  }
  rebuild_runs();
  return n_tokens_;
}

core::result<bool> kv_cache::reserve(size_t n) {
  if (n > n_ctx_)
    return core::error{errc::invalid_argument, std::to_string(n)
                                                 + " tokens exceed the sequence's context of "
                                                 + std::to_string(n_ctx_)};
  if (epoch_ != pool_->epoch())
    refresh_pointers(); // the old tier was re-quantized (set_policy)
  const size_t pt = pool_->config().page_tokens;
  // The page the next token goes into must be this sequence's alone, in
  // the recent tier and not named (its bytes answer for a prefix).
  size_t first = n_tokens_ / pt;
  if (n > n_tokens_ && first < pages_.size()
      && (pages_[first]->refs > 1 || pages_[first]->named || pages_[first]->old)) {
    kv_page* src = pages_[first];
    kv_page* q = pool_->copy(src, false, n_tokens_ - first * pt);
    if (!q)
      return core::error{errc::resource_exhausted, "the KV cache budget is exhausted"};
    pool_->unref(src);
    set_page(first, q);
    hashes_.resize(std::min(hashes_.size(), first));
    rebuild_runs();
  }
  size_t want = (n + pt - 1) / pt;
  bool grew = false;
  while (pages_.size() < want) {
    kv_page* p = pool_->allocate(false);
    if (!p) {
      if (grew)
        rebuild_runs();
      return core::error{errc::resource_exhausted, "the KV cache budget is exhausted"};
    }
    set_page(pages_.size(), p);
    grew = true;
  }
  if (grew)
    rebuild_runs();
  return true;
}

size_t kv_cache::migrate(bool force) {
  const auto& cfg = pool_->config();
  if (cfg.recent_tokens == std::numeric_limits<uint32_t>::max())
    return 0;
  const size_t pt = cfg.page_tokens;
  // Whole pages that end at or before n_tokens - recent_tokens.
  size_t limit = n_tokens_ > cfg.recent_tokens ? (n_tokens_ - cfg.recent_tokens) / pt : 0;
  size_t eligible = 0;
  for (size_t i = 0; i < limit; ++i)
    eligible += pages_[i]->old ? 0 : 1;
  if (eligible == 0 || (!force && eligible < cfg.migrate_pages))
    return 0;
  size_t moved = 0;
  for (size_t i = 0; i < limit; ++i) {
    kv_page* p = pages_[i];
    if (p->old)
      continue;
    if (p->refs > 1) {
      // Shared with another sequence: this one takes its own old-tier copy.
      kv_page* q = pool_->copy(p, true, pt);
      if (!q)
        break;
      pool_->unref(p);
      set_page(i, q);
    } else {
      if (!pool_->migrate(p))
        break;
      set_page(i, p);
    }
    ++moved;
  }
  rebuild_runs();
  return moved;
}

size_t kv_cache::segments(size_t layer, size_t n_visible, kernels::kv_segment* out,
                          size_t max_segments) const noexcept {
  const size_t pt = pool_->config().page_tokens;
  size_t n = 0;
  for (const run& r : runs_) {
    size_t start = r.first * pt;
    if (start >= n_visible || n == max_segments)
      break;
    size_t tokens = std::min(r.count * pt, n_visible - start);
    out[n++] = kernels::kv_segment{
      pool_->layout(r.old),
      std::span<const std::byte* const>(k_ptrs_[layer]).subspan(r.first, r.count),
      std::span<const std::byte* const>(v_ptrs_[layer]).subspan(r.first, r.count), tokens};
  }
  return n;
}

std::byte* kv_cache::k_row(size_t layer, size_t pos) noexcept {
  const auto& l = pool_->layout(false);
  return pool_->k_page(pages_[pos / l.page_tokens], layer)
         + (pos % l.page_tokens) * l.k_row_bytes();
}

std::byte* kv_cache::v_row(size_t layer, size_t pos) noexcept {
  const auto& l = pool_->layout(false);
  return pool_->v_page(pages_[pos / l.page_tokens], layer)
         + (pos % l.page_tokens) * l.v_row_bytes();
}

void kv_cache::append(std::span<const int32_t> ids) {
  tokens_.insert(tokens_.end(), ids.begin(), ids.end());
  n_tokens_ = tokens_.size();
  if (!pool_->config().prefix_caching)
    return;
  const size_t pt = pool_->config().page_tokens;
  while ((hashes_.size() + 1) * pt <= n_tokens_) {
    size_t i = hashes_.size();
    uint64_t parent = i == 0 ? 0 : hashes_[i - 1];
    auto toks = std::span<const int32_t>(tokens_).subspan(i * pt, pt);
    uint64_t h = chain_hash(parent, toks);
    pool_->publish(pages_[i], h, parent, toks);
    pages_[i]->important = pages_[i]->important || important_;
    hashes_.push_back(h);
  }
}

} // namespace shoal::engine
