#pragma once
/// @file Authenticated encryption of data at rest (session data, spilled KV
/// pages): XChaCha20-Poly1305 (libsodium's crypto_aead_xchacha20poly1305_ietf,
/// RFC 8439 with a 192-bit nonce) under one 256-bit key.
/// A record is nonce (24 bytes) ‖ ciphertext ‖ tag (16 bytes); the caller's
/// associated data (e.g. the record's LMDB key) is authenticated too, so a
/// record copied under another key fails to open.
///
/// Thread-safety: a sealer is immutable after creation; seal() and open()
/// may be called from any thread.

#include "core/error.hpp"

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace shoal::crypto {

class sealer {
public:
  /// A sealer from 64 hex digits (32 bytes). `key_name` names where the key
  /// came from (e.g. the config key "memory.seal_key"): errors of this
  /// sealer name it in their message and carry it as context.
  /// Errors: invalid_argument for any other length or a non-hex digit.
  static core::result<sealer> from_hex(std::string_view hex, std::string key_name = "seal key");

  /// Encrypts `plaintext` bound to `ad`: a fresh random nonce per record.
  std::string seal(std::string_view plaintext, std::string_view ad) const;

  /// Decrypts a record made by seal() with the same key and `ad`.
  /// Errors: corrupt_data when too short, or when authentication fails
  /// (wrong key, wrong ad, or the bytes were changed).
  core::result<std::string> open(std::string_view record, std::string_view ad) const;

  /// Bytes seal() adds to a plaintext.
  static constexpr size_t overhead = 24 + 16;

private:
  std::array<uint8_t, 32> key_{};
  std::string key_name_;
};

} // namespace shoal::crypto
