#pragma once
/// @file Node identity and message signing for federation (libsodium Ed25519,
/// RFC 8032: `crypto_sign_detached` / `crypto_sign_verify_detached`).
///
/// A node's identity is an Ed25519 key pair kept in a key file (the 32-byte
/// seed as 64 hex digits and a newline, mode 0600, like an SSH private key);
/// its federation id is the first 8 bytes of the public key, little-endian.
/// Receivers accept a message only when its signer is in their trust list
/// and the signature over [kind] ++ payload verifies.
///
/// Thread-safety: `identity` and `trust_list` are immutable after
/// construction; their const members may be called from any thread.

#include "proto/wire.hpp"

#include <caf/expected.hpp>

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>

namespace shoal::federation {

using public_key = std::array<uint8_t, 32>;

/// First 8 bytes of `pk`, little-endian: the node id on the wire.
uint64_t node_id(const public_key& pk) noexcept;

/// Lowercase hex of `pk` (64 digits).
std::string to_hex(const public_key& pk);

/// Parses 64 hex digits. Errors: `errc::invalid_argument`.
caf::expected<public_key> parse_public_key(std::string_view hex);

/// This node's key pair.
class identity {
public:
  /// Reads the key file, or creates it (0600, parent directories too) when
  /// missing. Errors: `errc::storage_failure` (I/O), `errc::corrupt_data`
  /// (not 64 hex digits).
  static caf::expected<identity> load_or_create(const std::filesystem::path& path);

  /// From a 32-byte seed (tests).
  static identity from_seed(const std::array<uint8_t, 32>& seed);

  const public_key& pk() const noexcept { return pk_; }
  /// The Ed25519 secret key (libsodium's 64-byte form), for signing kernel
  /// packs with the same key file (`shoal kernels sign`).
  std::span<const uint8_t, 64> secret_key() const noexcept { return sk_; }
  uint64_t id() const noexcept { return node_id(pk_); }

  /// Seals `payload` of `kind` into an envelope signed as `signer`.
  proto::envelope seal(proto::wire_kind kind, std::string payload, std::string signer) const;

private:
  public_key pk_{};
  std::array<uint8_t, 64> sk_{};
};

/// The peers whose messages this node accepts: name -> public key.
class trust_list {
public:
  /// Parses "name=hexkey,name=hexkey" (spaces allowed around items); empty
  /// is an empty list. Errors: `errc::invalid_argument` naming the item.
  static caf::expected<trust_list> parse(std::string_view text);

  void add(std::string name, const public_key& pk) { keys_[std::move(name)] = pk; }
  size_t size() const noexcept { return keys_.size(); }

  /// Verifies `e`: a known signer and a valid signature. @returns the
  /// signer's node id. Errors: `errc::invalid_argument` ("untrusted signer
  /// ...", "bad signature ...").
  caf::expected<uint64_t> verify(const proto::envelope& e) const;

private:
  std::map<std::string, public_key, std::less<>> keys_;
};

} // namespace shoal::federation
