#pragma once
/// @file engine::kv_spill over the store's `kv_spill` table: the engine's
/// evicted prefix pages go to LMDB, sealed, and come back on a prefix miss.
/// The one place the engine's page and the stored record meet.
///
/// Thread-safety: as store::kv_spill_table: one owner thread (the tier's
/// engine).

#include "engine/kv_cache.hpp"
#include "store/kv_spill_table.hpp"

#include <memory>
#include <optional>

namespace shoal::actors {

class kv_spill_store final : public engine::kv_spill {
public:
  explicit kv_spill_store(std::unique_ptr<store::kv_spill_table> table)
    : table_(std::move(table)) {}

  bool put(uint64_t hash, const page& p) override;
  /// A stored page whose K or V type is not a KV-cache type is dropped.
  std::optional<page> get(uint64_t hash) override;

  store::kv_spill_table& table() noexcept { return *table_; }

private:
  std::unique_ptr<store::kv_spill_table> table_;
};

} // namespace shoal::actors
