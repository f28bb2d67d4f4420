#pragma once
/// @file In-place upgrades of a node's store between schema versions
/// (proto::schema_version), run by environment::ensure_schema in one write
/// transaction with the new version: a crash leaves the old store intact.
///
/// Schema 2 -> 3 (issue 19): every record becomes a Cap'n Proto message in a
/// typed table (environment.hpp lists them) and `meta` keeps "schema" only:
///   meta "pattern_index"        -> router_state "pattern_index" (as it was)
///   meta "id_reserved" (u64 BE) -> router_state "ids" (PatternIds)
///   meta "categories" (LE blob) -> router_state "categories" (Categories)
///   meta "federation" (u64 BE)  -> federation_state "stream" (StreamPosition)
///   meta "kv_policy/<tier>"     -> policies "kv/<tier>" (Policy of kind "kv",
///                                  value KvPolicy)
///   meta "seal_check"           -> seal "seal_check" (the same sealed bytes)
///   policies (LE records)       -> Policy; "router/v2"'s checkpoint becomes a
///                                  RouterV2Checkpoint
///   sessions (sealed LE)        -> Session, sealed again with the same key
///   kv_spill (sealed LE)        -> KvPage, sealed again with the same key
/// The little-endian layouts of schema 2 are read here and nowhere else.
///
/// Thread-safety: call from the store's writer thread (ensure_schema does).

#include "core/error.hpp"
#include "crypto/sealer.hpp"
#include "store/environment.hpp"

#include <cstdint>
#include <vector>

namespace shoal::store {

/// The writes that bring the store from schema `from` to
/// proto::schema_version (the schema record itself excluded). `seal` opens
/// and reseals sealed records; `now_ms` stamps records that had no time.
/// Errors: corrupt_data naming the table and key of a record that does not
/// decode; invalid_argument (context memory.seal_key) when sealed records
/// exist and `seal` is null or not their key; storage_failure.
core::result<std::vector<write_op>> upgrade_ops(const environment& env, uint32_t from,
                                                const crypto::sealer* seal, int64_t now_ms);

} // namespace shoal::store
