#pragma once
/// @file Authenticated encryption of data at rest (session data, spilled KV
/// pages): XChaCha20-Poly1305 (libsodium's crypto_aead_xchacha20poly1305_ietf,
/// RFC 8439 with a 192-bit nonce) under one 256-bit key from the config.
/// A record is nonce (24 bytes) ‖ ciphertext ‖ tag (16 bytes); the caller's
/// associated data (e.g. the record's LMDB key) is authenticated too, so a
/// record copied under another key fails to open.
/// Thread-safe: a sealer is immutable after creation.

#include <caf/expected.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace shoal::store {

class environment;

class sealer {
public:
  /// A sealer from 64 hex digits (32 bytes). Errors (invalid_argument): any
  /// other length or a non-hex digit.
  static caf::expected<sealer> from_hex(std::string_view hex);

  /// Encrypts `plaintext` bound to `ad`: a fresh random nonce per record.
  std::string seal(std::string_view plaintext, std::string_view ad) const;

  /// Decrypts a record made by seal() with the same key and `ad`.
  /// Errors (corrupt_data): too short, or authentication failed (wrong key,
  /// wrong ad, or the bytes were changed).
  caf::expected<std::string> open(std::string_view record, std::string_view ad) const;

  /// Bytes seal() adds to a plaintext.
  static constexpr size_t overhead = 24 + 16;

private:
  std::array<uint8_t, 32> key_{};
};

/// Checks the key against the store: the `meta` table's "seal_check" record
/// (a sealed constant written on first use with a key). With `s` null, the
/// store must hold no sealed data (no seal_check record).
/// Errors (invalid_argument), each naming config key memory.seal_key: the
/// store was sealed with another key; the store holds sealed data but no key
/// is set; storage failures as environment reports them.
caf::error check_seal_key(environment& env, const sealer* s);

} // namespace shoal::store
