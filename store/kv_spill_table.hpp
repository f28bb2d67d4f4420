#pragma once
/// @file The `kv_spill` table of the node's LMDB store: KV pages the memory
/// budget evicted, sealed at rest (crypto/sealer.hpp), read back when a
/// prompt's prefix needs them again (the engine reaches it through
/// engine::kv_spill: actors/kv_spill.hpp).
///
/// Record: key = u64(model_key) ‖ u64(page hash) (big-endian), value =
/// seal(proto::kv_page_record as Cap'n Proto, ad = key). A record that does
/// not open or decode (another key, damage, the little-endian layout before
/// schema 3) is dropped with a warning: spilled pages are a cache. The table keeps at most `max_bytes` of
/// records per process (oldest written first out; the order is rebuilt from
/// a scan at start); a restored page's record is deleted (it lives in memory
/// again until the next eviction).
/// Writes are batched: sealed records wait in a write-back buffer (at most
/// 32 records or 4 MiB, outside the memory budget) and go to LMDB in one
/// transaction (one fsync) when it fills, when a record is read back, and on
/// destruction; a crash loses at most the buffer — spilled pages are a cache.
/// Thread-safety: one owner thread (the tier's engine), like its kv_pool.

#include "proto/records.hpp"
#include "store/environment.hpp"
#include "crypto/sealer.hpp"

#include <deque>
#include <optional>
#include <memory>
#include <unordered_map>

namespace shoal::store {

class kv_spill_table {
public:
  /// @param model_key distinguishes models sharing the table (e.g. a hash of
  ///        the GGUF's metadata). @param max_bytes cap on this model's records.
  kv_spill_table(std::shared_ptr<environment> env, std::shared_ptr<const crypto::sealer> seal,
                 uint64_t model_key, uint64_t max_bytes);

  ~kv_spill_table();
  kv_spill_table(const kv_spill_table&) = delete;
  kv_spill_table& operator=(const kv_spill_table&) = delete;

  /// Stores the page named `hash` (replacing one of that name), oldest
  /// records out first beyond max_bytes. False when it could not (larger
  /// than max_bytes, or the write-back failed: logged).
  bool put(uint64_t hash, const proto::kv_page_record& p);
  /// The page named `hash`, once: a page read leaves the table. std::nullopt
  /// when unknown or unusable (logged).
  std::optional<proto::kv_page_record> get(uint64_t hash);
  /// Writes the buffered records; false on a storage error (they are dropped, logged).
  bool flush();

  uint64_t bytes() const noexcept { return bytes_; }
  size_t records() const noexcept { return sizes_.size(); }

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
