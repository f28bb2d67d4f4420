#pragma once
/// @file engine::kv_spill over the `kv_spill` table of the node's LMDB store:
/// KV pages the memory budget evicted, sealed at rest (crypto/sealer.hpp),
/// read back when a prompt's prefix needs them again.
///
/// Record: key = u64(model_key) ‖ u64(page hash) (big-endian), value =
/// seal(parent u64 ‖ tier u8 ‖ k_type u8 ‖ v_type u8 ‖ n_tokens u32 ‖
/// tokens i32[n] ‖ page bytes,
/// ad = key), little-endian fields. The table keeps at most `max_bytes` of
/// records per process (oldest written first out; the order is rebuilt from
/// a scan at start); a restored page's record is deleted (it lives in memory
/// again until the next eviction).
/// Writes are batched: sealed records wait in a write-back buffer (at most
/// 32 records or 4 MiB, outside the memory budget) and go to LMDB in one
/// transaction (one fsync) when it fills, when a record is read back, and on
/// destruction; a crash loses at most the buffer — spilled pages are a cache.
/// Thread-safety: one owner thread (the tier's engine), like its kv_pool.

#include "engine/kv_cache.hpp"
#include "store/environment.hpp"
#include "crypto/sealer.hpp"

#include <deque>
#include <memory>
#include <unordered_map>

namespace shoal::store {

class kv_spill_table final : public engine::kv_spill {
public:
  /// @param model_key distinguishes models sharing the table (e.g. a hash of
  ///        the GGUF's metadata). @param max_bytes cap on this model's records.
  kv_spill_table(std::shared_ptr<environment> env, std::shared_ptr<const crypto::sealer> seal,
                 uint64_t model_key, uint64_t max_bytes);

  ~kv_spill_table() override;
  bool put(uint64_t hash, const page& p) override;
  std::optional<page> get(uint64_t hash) override;
  /// Writes the buffered records; false on a storage error (they are dropped, logged).
  bool flush();

  uint64_t bytes() const noexcept { return bytes_; }
  size_t records() const noexcept { return sizes_.size(); }

  /// Encoding of a page record's plaintext (exposed for tests).
  static std::string encode(const page& p);
  static std::optional<page> decode(std::string_view bytes);

private:
  std::string key(uint64_t hash) const;
  void erase(uint64_t hash);

  std::shared_ptr<environment> env_;
  std::shared_ptr<const crypto::sealer> seal_;
  uint64_t model_key_, max_bytes_, bytes_ = 0;
  std::deque<uint64_t> order_;                   ///< hashes, oldest first (may hold stale ones)
  std::unordered_map<uint64_t, uint64_t> sizes_; ///< hash -> record bytes
  std::unordered_map<uint64_t, std::string> pending_; ///< sealed records not yet written
  uint64_t pending_bytes_ = 0;
  static constexpr size_t max_pending = 32;
  static constexpr uint64_t max_pending_bytes = 4 << 20;
};

} // namespace shoal::store
