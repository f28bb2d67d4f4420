#pragma once
/// @file A node's Ed25519 identity (libsodium `crypto_sign_seed_keypair`,
/// `crypto_sign_detached`; RFC 8032).
///
/// The key pair is kept in a key file: the 32-byte seed as 64 hex digits
/// and a newline, mode 0600, like an SSH private key. The same identity
/// signs federation messages and kernel packs (`shoal kernels sign`).
///
/// Thread-safety: immutable after construction; const members may be
/// called from any thread.

#include "crypto/keys.hpp"

#include <array>
#include <cstdint>
#include <filesystem>
#include <string_view>

namespace shoal::crypto {

class identity {
public:
  /// Reads the key file, or creates it (0600, parent directories too) when
  /// missing. Errors: storage_failure (I/O), corrupt_data (the file does not
  /// hold 64 hex digits); both name the file in `context`.
  static core::result<identity> load_or_create(const std::filesystem::path& path);

  /// From a 32-byte seed (tests, fixtures). Throws std::runtime_error only
  /// if libsodium cannot initialise.
  static identity from_seed(const std::array<uint8_t, 32>& seed);

  const public_key& pk() const noexcept { return pk_; }

  /// key_id(pk()): the node id on the federation wire.
  uint64_t id() const noexcept { return key_id(pk_); }

  /// The detached signature of `message`.
  signature sign(std::string_view message) const noexcept;

private:
  public_key pk_{};
  std::array<uint8_t, 64> sk_{}; // libsodium's secret key: seed ‖ public key
};

} // namespace shoal::crypto
