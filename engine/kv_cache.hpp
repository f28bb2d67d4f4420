#pragma once
/// @file The paged, two-tier KV cache with prefix sharing.
///
///  - A *page* (block) holds the keys and values of `page_tokens` consecutive
///    tokens (default 16, vLLM's block size) for every layer:
///      [layer 0: K page, V page][layer 1: K page, V page]...
///    each K/V page laid out as kernels::kv_page_layout says, so
///    kernels::attention_paged reads pages in place.
///  - Two tiers per sequence (KIVI, Liu et al. 2024, arXiv:2402.02750: keep the
///    most recent tokens in full precision): the newest `recent_tokens`
///    (default 256) stay in F16; whole pages older than that migrate, a few at
///    a time, to the old tier's types (default Q8_0 keys and values). The old
///    tier quantizes per token in blocks of 32 channels — llama.cpp's q8_0 /
///    q4_0 KV cache layout — rather than KIVI's per-channel keys: a 32-channel
///    group already confines an outlier channel's damage to its own block,
///    a token's row is quantized once and never re-quantized as tokens
///    arrive, and the attention kernel reads it directly.
///  - Prefix sharing (vLLM's automatic prefix caching): a full page is named
///    by hash(parent page's hash, its tokens) (xxh3-64, tokens compared on
///    every hit); a new sequence adopts the pages of its prompt's longest
///    cached prefix instead of prefilling it. Pages are reference counted;
///    writing into a shared page copies it first (copy-on-write). Pages no
///    sequence uses stay cached until the byte budget needs them back
///    (least recently released first; pages of sessions after all others).
///  - Every page's bytes are reserved from a `memory_budget` before they are
///    allocated: the cache never exceeds it. When a reservation fails, cached
///    (unused) pages are evicted first; if that is not enough the caller gets
///    an error and nothing changes.
///
/// Thread-safety: a kv_pool and its kv_caches belong to one thread (the
/// tier's engine actor); `memory_budget` is shared by all threads; a pool's
/// `stats()` may be read from any thread.

#include "core/error.hpp"
#include "core/memory_budget.hpp"
#include "kernels/nn.hpp"

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace shoal::engine {

struct llama_hparams;

/// How a model's KV cache is paged and tiered.
struct kv_tier_config {
  /// Tokens per page. Default: 16. > 0.
  uint32_t page_tokens = 16;
  /// Tokens kept in the recent tier; older whole pages migrate. Default:
  /// 256. UINT32_MAX = never migrate.
  uint32_t recent_tokens = 256;
  /// Recent tier type: f16 (default) or f32.
  kernels::kv_type recent_type = kernels::kv_type::f16;
  /// Old tier key and value types (any kv_type). Default: q8_0 both. A
  /// model whose head_dim is not a multiple of 32 keeps F16 instead of a
  /// quantized type (its 32-channel blocks would straddle heads); the pool's
  /// config() shows the types in use.
  kernels::kv_type old_k_type = kernels::kv_type::q8_0;
  kernels::kv_type old_v_type = kernels::kv_type::q8_0;
  /// Pages migrated together once this many are eligible. Default: 4.
  uint32_t migrate_pages = 4;
  /// Share full pages between sequences with the same prefix. Default: on.
  bool prefix_caching = true;
};

/// The part of kv_tier_config that may change while a pool runs: the tier
/// policy. Stored per tier (the node keeps it in LMDB) so that the learning
/// loops can tune it; see kv_pool::set_policy.
struct kv_policy {
  uint32_t recent_tokens = 256;
  kernels::kv_type old_k_type = kernels::kv_type::q8_0;
  kernels::kv_type old_v_type = kernels::kv_type::q8_0;
  uint32_t migrate_pages = 4;
};

/// Counters of a kv_pool (a snapshot).
struct kv_pool_stats {
  uint64_t pages_recent = 0, pages_old = 0; ///< allocated pages by tier (cached ones included)
  uint64_t pages_cached = 0;                ///< pages no sequence uses, kept for prefix hits
  uint64_t bytes_cached = 0;                ///< their bytes (what trim() can free)
  uint64_t bytes_recent = 0, bytes_old = 0; ///< their bytes
  uint64_t page_bytes_recent = 0, page_bytes_old = 0; ///< bytes of one page per tier
  uint64_t page_tokens = 0;                           ///< tokens per page
  uint64_t prefix_hits = 0, prefix_misses = 0;        ///< full prompt pages found / not found
  uint64_t evictions = 0;                             ///< cached pages freed to make room
  uint64_t migrations = 0;                            ///< pages moved to the old tier
  uint64_t copies = 0;                                ///< copy-on-write copies
  uint64_t alloc_failures = 0;                        ///< reservations the budget refused
  uint64_t spills = 0;                                ///< evicted pages written to the spill store
  uint64_t restores = 0;                              ///< prefix pages read back from it
  uint64_t spill_failures = 0; ///< pages the spill store did not take (dropped)
};

struct kv_page; // defined in kv_cache.cpp

/// Second level of the prefix cache: where named pages go when the budget
/// evicts them, and where a prefix miss looks next (as vLLM's CPU offload
/// or LMCache do, here a table of the node's LMDB store, sealed at rest).
/// Called on the pool's thread; implementations may block briefly.
class kv_spill {
public:
  virtual ~kv_spill() = default;
  /// A spilled page: its place in the prefix chain and its bytes.
  struct page {
    uint64_t parent = 0;
    bool old = false;                                ///< tier of the bytes
    kernels::kv_type k_type = kernels::kv_type::f16; ///< types the bytes are in
    kernels::kv_type v_type = kernels::kv_type::f16;
    std::vector<int32_t> tokens; ///< page_tokens ids
    std::string bytes;           ///< the page (all layers, K and V) in those types
  };
  /// Stores the page named `hash`. False when it could not (the page is then
  /// simply dropped; implementations log why).
  virtual bool put(uint64_t hash, const page& p) = 0;
  /// The page named `hash`, if stored (and intact: a record that fails to
  /// decode or authenticate is reported by the implementation and skipped).
  virtual std::optional<page> get(uint64_t hash) = 0;
};

/// The pages of one model: allocation against the budget, reference counts,
/// the prefix table and the cache of released pages. One per tier engine.
class kv_pool {
public:
  /// @param budget shared byte budget; nullptr = unlimited.
  kv_pool(const llama_hparams& hp, kv_tier_config cfg, std::shared_ptr<core::memory_budget> budget);
  ~kv_pool();
  kv_pool(const kv_pool&) = delete;
  kv_pool& operator=(const kv_pool&) = delete;

  const kv_tier_config& config() const noexcept { return cfg_; }
  /// Evicted named pages go to `spill` and prefix misses look there
  /// (nullptr: evicted pages are dropped). Set before use. The pool's
  /// destructor spills the cached pages of sessions too.
  void set_spill(std::shared_ptr<kv_spill> spill) noexcept { spill_ = std::move(spill); }
  /// Page layout of a tier (old = false: the recent tier).
  const kernels::kv_page_layout& layout(bool old) const noexcept { return layout_[old]; }
  size_t n_layer() const noexcept { return n_layer_; }
  /// Bytes of one page of a tier (all layers, K and V).
  size_t page_bytes(bool old) const noexcept { return page_bytes_[old]; }
  kv_pool_stats stats() const noexcept;
  /// Frees cached pages (spilling named ones) until `bytes` are freed or no
  /// cached page is left, session pages last; returns the bytes freed. The
  /// memory pool calls it when another tier needs room.
  size_t trim(size_t bytes);

  /// The tier policy in force.
  kv_policy policy() const noexcept {
    return {cfg_.recent_tokens, cfg_.old_k_type, cfg_.old_v_type, cfg_.migrate_pages};
  }
  /// Changes the tier policy. The recent window and batch apply from the
  /// next migrate(); new old-tier types re-quantize every old page now
  /// (through f32: Q4_0 → Q8_0 does not regain precision), cached ones
  /// included, so the tier keeps one layout. Types are adjusted as in the
  /// constructor (F16 for a head_dim that is not a multiple of 32).
  /// Errors (nothing changes): recent_tokens or migrate_pages out of range
  /// (0 pages), the budget cannot hold the re-quantized pages.
  core::result<kv_policy> set_policy(kv_policy p);
  /// Counts layout changes; sequences refresh their page pointers when it moves.
  uint64_t epoch() const noexcept { return epoch_; }

private:
  friend class kv_cache;
  kv_page* allocate(bool old);     ///< refs = 1; nullptr when the budget refuses
  void unref(kv_page* p) noexcept; ///< at 0: cached (if named) or freed
  void ref(kv_page* p) noexcept;
  kv_page* lookup(uint64_t hash, uint64_t parent, std::span<const int32_t> tokens);
  void publish(kv_page* p, uint64_t hash, uint64_t parent, std::span<const int32_t> tokens);
  bool migrate(kv_page* p); ///< in place, to the old tier; false: no memory
  /// A private copy in tier `old` (refs = 1) of the first `rows` tokens
  /// (all of them when the tier is the same); nullptr: no memory.
  kv_page* copy(const kv_page* p, bool old, size_t rows);
  /// Writes the first `rows` token rows of every layer of page bytes `src`
  /// (layout `from`) into page bytes `dst` (layout `to`), converting types.
  void convert(std::byte* dst, const kernels::kv_page_layout& to, const std::byte* src,
               const kernels::kv_page_layout& from, size_t rows) const;
  kernels::kv_page_layout make_layout(kernels::kv_type k, kernels::kv_type v) const noexcept;
  size_t bytes_of(const kernels::kv_page_layout& l) const noexcept {
    return n_layer_ * (l.k_page_bytes() + l.v_page_bytes());
  }
  bool reserve_bytes(size_t bytes); ///< evicting cached pages if needed
  void free_page(kv_page* p) noexcept;
  std::byte* k_page(const kv_page* p, size_t layer) const noexcept;
  std::byte* v_page(const kv_page* p, size_t layer) const noexcept;

  size_t n_layer_;
  kv_tier_config cfg_;
  std::shared_ptr<core::memory_budget> budget_;
  std::shared_ptr<kv_spill> spill_;
  kernels::kv_page_layout layout_[2];
  size_t page_bytes_[2];
  std::unordered_map<uint64_t, kv_page*> by_hash_;
  std::unordered_set<kv_page*> all_; ///< every allocated page (set_policy re-quantizes)
  uint64_t epoch_ = 0;
  uint32_t head_dim_ = 0;
  size_t row_elems_ = 0;
  /// Cached pages (refs 0), least recently released first: [0] pages no
  /// session holds, [1] session pages (evicted only when [0] is empty).
  struct lru_list {
    kv_page* head = nullptr;
    kv_page* tail = nullptr;
    void push_back(kv_page* p) noexcept;
    void remove(kv_page* p) noexcept;
    kv_page* pop_front() noexcept;
  } lru_[2];
  size_t evict_one();                ///< frees (spilling) one cached page; its bytes, 0 if none
  void spill_page(const kv_page* p); ///< to the spill store, if set and the page is named
  struct counters {
    std::atomic<uint64_t> pages[2]{}, cached{0}, cached_bytes{0}, hits{0}, misses{0}, evictions{0},
      migrations{0}, copies{0}, failures{0}, spills{0}, restores{0}, spill_failures{0};
  } c_;
};

/// One sequence's KV cache: a page table over a kv_pool (or over a private
/// pool with no budget, no tiers and no sharing, for one-off uses).
/// Not thread-safe; belongs to its pool's thread.
class kv_cache {
public:
  /// A sequence of at most `n_ctx` tokens in `pool` (which must outlive it).
  kv_cache(kv_pool& pool, size_t n_ctx);
  /// A standalone cache: private pool, one tier of `type`, no budget.
  kv_cache(const llama_hparams& hp, size_t n_ctx, kernels::kv_type type = kernels::kv_type::f16,
           size_t page_tokens = 16);
  ~kv_cache();
  kv_cache(const kv_cache&) = delete;
  kv_cache& operator=(const kv_cache&) = delete;

  size_t n_tokens() const noexcept { return n_tokens_; }
  size_t capacity() const noexcept { return n_ctx_; }
  /// Token ids held, in order.
  std::span<const int32_t> tokens() const noexcept { return tokens_; }
  /// Bytes of the pages this sequence holds (shared pages counted fully).
  size_t bytes() const noexcept;
  /// Pages held per tier.
  size_t pages(bool old) const noexcept;
  /// Forgets tokens from position n on (n ≤ n_tokens).
  void truncate(size_t n) noexcept;

  /// For an empty cache: adopts the cached pages of the longest prefix of
  /// `prompt` made of full pages, leaving at least one prompt token to
  /// evaluate (its logits are needed). Returns the tokens adopted (a multiple
  /// of page_tokens; 0 without prefix caching).
  size_t adopt_prefix(std::span<const int32_t> prompt);

  /// Makes room for `n` tokens in all: allocates pages and copies a shared
  /// page that the next token would be written into. Errors (nothing
  /// changes that matters): n > capacity, the byte budget is exhausted.
  core::result<bool> reserve(size_t n);

  /// Moves whole pages older than the recent window to the old tier once
  /// `migrate_pages` of them are eligible (or all, with force). Returns the
  /// pages moved; stops early (keeping the rest recent) if memory runs out.
  size_t migrate(bool force = false);

  /// The attention segments (tier runs in token order) of `layer` over the
  /// first `n_visible` tokens, written to `out`; returns how many. At most
  /// `max_segments` are written (a page table has few tier runs: ≤ 3).
  size_t segments(size_t layer, size_t n_visible, kernels::kv_segment* out,
                  size_t max_segments) const noexcept;
  /// Where token `pos`'s K / V row of `layer` goes (recent tier).
  /// @pre pos < the reserved size, pos ≥ n_tokens (not shared).
  std::byte* k_row(size_t layer, size_t pos) noexcept;
  std::byte* v_row(size_t layer, size_t pos) noexcept;
  /// Records tokens appended by the forward pass and names full pages.
  void append(std::span<const int32_t> ids);

  const kv_pool& pool() const noexcept { return *pool_; }
  /// Tier runs in the page table (segments() returns one per run).
  size_t n_runs() const noexcept { return runs_.size(); }
  /// Pages this sequence names or adopts from now on belong to a session:
  /// once released they are evicted only after all other cached pages.
  void set_important(bool important) noexcept { important_ = important; }

private:
  void set_page(size_t i, kv_page* p);
  void rebuild_runs() noexcept;
  void refresh_pointers();

  std::unique_ptr<kv_pool> own_pool_;
  kv_pool* pool_;
  size_t n_ctx_, n_tokens_ = 0;
  std::vector<int32_t> tokens_;
  std::vector<kv_page*> pages_;
  std::vector<uint64_t> hashes_; ///< chain hash of each full page (prefix caching)
  /// Per layer: K and V page pointers in page order.
  std::vector<std::vector<const std::byte*>> k_ptrs_, v_ptrs_;
  struct run {
    size_t first, count;
    bool old;
  };
  std::vector<run> runs_;
  bool important_ = false;
  uint64_t epoch_ = 0; ///< the pool's epoch the pointers were made in
};

} // namespace shoal::engine
