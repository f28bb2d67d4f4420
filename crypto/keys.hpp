#pragma once
/// @file Ed25519 public keys, their hex text and key lists, and detached
/// signature checks (libsodium: `crypto_sign_verify_detached`, RFC 8032).
///
/// Keys travel as 64 lowercase hex digits; a key list is the text
/// "name=hexkey,name=hexkey" that `shoal key` prints one item of, used by
/// `federation.trusted` and `kernels.pack_keys`.
///
/// Thread-safety: pure functions; safe from any thread.

#include "core/error.hpp"

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::crypto {

/// An Ed25519 public key (32 bytes).
using public_key = std::array<uint8_t, 32>;

/// A detached Ed25519 signature (64 bytes).
using signature = std::array<uint8_t, 64>;

/// A trusted public key with the name the operator gave it.
struct named_key {
  std::string name;
  public_key key{};
};

/// Lowercase hex of `bytes` (2 digits per byte).
std::string to_hex(std::span<const uint8_t> bytes);

/// Parses exactly `2 * out.size()` hex digits (either case) into `out`.
/// @returns false (and leaves `out` unspecified) for any other length or a
/// non-hex digit.
bool from_hex(std::string_view hex, std::span<uint8_t> out) noexcept;

/// Parses a public key: 64 hex digits, spaces around them allowed.
/// Errors: invalid_argument quoting the text.
core::result<public_key> parse_public_key(std::string_view hex);

/// Parses "name=hexkey,name=hexkey" (spaces allowed around items and around
/// '='; empty text is an empty list). Errors: invalid_argument naming the
/// bad item ("expected name=hexkey, got ...", "... the key is not 64 hex
/// digits").
core::result<std::vector<named_key>> parse_key_list(std::string_view text);

/// The first 8 bytes of `pk`, little-endian: a node's id in federation.
uint64_t key_id(const public_key& pk) noexcept;

/// True when `sig` is `pk`'s Ed25519 signature of `message`. A signature of
/// another length than 64 bytes is false.
bool verify(const public_key& pk, std::string_view message, std::span<const uint8_t> sig) noexcept;

namespace detail {
/// Initialises libsodium once per process. @returns false if it cannot be.
bool sodium_ready() noexcept;
/// `s` without leading and trailing white space.
std::string_view trim(std::string_view s) noexcept;
} // namespace detail

} // namespace shoal::crypto
