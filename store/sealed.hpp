#pragma once
/// @file The store's check that sealed data is opened with the key it was
/// sealed with (the sealing itself is crypto/sealer.hpp).
/// Thread-safety: as environment's writes (one writer thread).

#include "core/error.hpp"
#include "crypto/sealer.hpp"

namespace shoal::store {

class environment;

/// Checks the key against the store: the `seal` table's "seal_check" record
/// (a sealed constant written on first use with a key). With `s` null, the
/// store must hold no sealed data (no seal_check record).
/// Errors (invalid_argument), each naming config key memory.seal_key: the
/// store was sealed with another key; the store holds sealed data but no key
/// is set; storage failures as environment reports them.
core::error check_seal_key(environment& env, const crypto::sealer* s);

} // namespace shoal::store
