#pragma once
/// @file The node's LMDB environment and its named tables.
///
/// Caveats (read first):
///   - One environment per data directory; open it once per process.
///   - Write transactions serialise inside LMDB (one writer at a time); call
///     `write` from an actor on its own thread (`detached`) or a plain thread,
///     never from a cooperatively scheduled actor that must not block.
///   - Read and write calls are thread-safe. Every call begins and ends its own
///     transaction: nothing is held between calls.
///   - When the map is full it is doubled (up to `max_map_bytes`), which
///     briefly excludes all other transactions of this process.
///   - Values are copied out of LMDB (`std::string`): no pointer into the map
///     outlives a call.

#include "core/error.hpp"
#include "crypto/sealer.hpp"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::store {

/// Configuration of the store (config keys `store.*`, documented in
/// node/config.cpp).
struct store_config {
  std::filesystem::path data_dir = "data"; ///< config store.data_dir
  uint64_t map_bytes = 1ull << 30;         ///< config store.map_bytes
  uint64_t max_map_bytes = 64ull << 30;    ///< config store.max_map_bytes
};

/// Named tables of the environment (DESIGN.md, Storage). Every value is a
/// Cap'n Proto message of proto/schema/store.capnp (sealed where noted).
///   patterns          Pattern, key u64 id
///   witness           WitnessRecord, key u64 request id
///   meta              Meta under "schema": the schema version, nothing else
///   kv_spill          KvPage (sealed), key u64 model ‖ u64 page hash
///   sessions          Session (sealed), key session id
///   policies          Policy, key policy name ("router/v2", "kv/<tier>")
///   router_state      "pattern_index" IndexCheckpoint, "ids" PatternIds,
///                     "categories" Categories
///   federation_state  "stream" StreamPosition
///   seal              "seal_check": a sealed constant that tells whether
///                     memory.seal_key is the key the data was sealed with
enum class table : uint8_t {
  patterns = 0,
  witness = 1,
  meta = 2,
  kv_spill = 3,
  sessions = 4,
  policies = 5,
  router_state = 6,
  federation_state = 7,
  seal = 8
};

/// Name of a table as stored in LMDB (the enumerator's name).
std::string_view to_string(table t) noexcept;

/// Encodes a u64 as an 8-byte big-endian key (so LMDB orders keys numerically).
std::string u64_key(uint64_t x);

/// Decodes an 8-byte big-endian key; std::nullopt for any other size.
std::optional<uint64_t> parse_u64_key(std::string_view key);

/// One put (or, with `erase`, delete) of a write batch.
struct write_op {
  table tbl;
  std::string key;
  std::string value;
  bool erase = false;
};

/// An open LMDB environment with Shoal's tables. Thread-safe; shared by the
/// actors that use it (hence `std::shared_ptr`), closed when the last owner
/// drops it, after every transaction has ended.
class environment {
public:
  /// Opens (creating if needed) the environment in `cfg.data_dir` and its
  /// tables. Errors: `errc::storage_failure` naming the directory and LMDB's text.
  static core::result<std::shared_ptr<environment>> open(const store_config& cfg);

  ~environment();
  environment(const environment&) = delete;
  environment& operator=(const environment&) = delete;

  /// Applies `ops` in one write transaction (all or nothing).
  /// Errors: `errc::storage_failure` (e.g. map full at `max_map_bytes`).
  core::error write(const std::vector<write_op>& ops);

  /// Reads one value; std::nullopt when the key is absent.
  core::result<std::optional<std::string>> get(table t, std::string_view key) const;

  /// Calls `fn(key, value)` for every entry in key order inside one read
  /// transaction; `fn` returning false stops the scan. `fn` must not call back
  /// into this environment's write().
  core::error for_each(table t,
                       const std::function<bool(std::string_view, std::string_view)>& fn) const;

  /// Number of entries in a table.
  core::result<uint64_t> count(table t) const;

  /// Checks the `meta` table's "schema" record against this build and the
  /// configured embedding dimension, writing it on first use. A store of an
  /// older schema is upgraded in place, in one write transaction
  /// (store/upgrade.hpp); `seal` (memory.seal_key, may be null) opens and
  /// reseals the sealed records the upgrade rewrites.
  /// Errors: `errc::corrupt_data` when the store was written by a newer schema
  /// or with another embedding dimension (naming both), or an old record
  /// does not decode; `errc::invalid_argument` when sealed records need a
  /// key that is missing or wrong (context memory.seal_key);
  /// `errc::storage_failure`.
  core::error ensure_schema(uint32_t embedding_dim, int64_t now_ms,
                            const crypto::sealer* seal = nullptr);

  /// Forces a durable sync of the environment to disk.
  core::error sync();

  /// The data directory.
  const std::filesystem::path& data_dir() const noexcept;

  struct impl;

private:
  explicit environment(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace shoal::store
