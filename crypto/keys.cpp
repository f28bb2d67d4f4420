#include "crypto/keys.hpp"

#include <sodium.h>

#include <cctype>
#include <mutex>

namespace shoal::crypto {

using detail::trim;

namespace detail {

bool sodium_ready() noexcept {
  static std::once_flag once;
  static bool ok = false;
  std::call_once(once, [] { ok = sodium_init() >= 0; });
  return ok;
}

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
    s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
    s.remove_suffix(1);
  return s;
}

} // namespace detail

std::string to_hex(std::span<const uint8_t> bytes) {
  std::string out(2 * bytes.size() + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), bytes.data(), bytes.size());
  out.pop_back();
  return out;
}

bool from_hex(std::string_view hex, std::span<uint8_t> out) noexcept {
  size_t len = 0;
  return hex.size() == 2 * out.size()
         && sodium_hex2bin(out.data(), out.size(), hex.data(), hex.size(), nullptr, &len, nullptr)
              == 0
         && len == out.size();
}

core::result<public_key> parse_public_key(std::string_view hex) {
  public_key pk;
  if (!from_hex(trim(hex), pk))
    return core::error{errc::invalid_argument,
                       "a public key is 64 hex digits, got '" + std::string(hex) + "'"};
  return pk;
}

core::result<std::vector<named_key>> parse_key_list(std::string_view text) {
  std::vector<named_key> out;
  while (!trim(text).empty()) {
    const size_t comma = text.find(',');
    const std::string_view item = trim(text.substr(0, comma));
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos || trim(item.substr(0, eq)).empty())
      return core::error{errc::invalid_argument,
                         "expected name=hexkey, got \"" + std::string(item) + "\""};
    named_key k;
    k.name = std::string(trim(item.substr(0, eq)));
    if (!from_hex(trim(item.substr(eq + 1)), k.key))
      return core::error{errc::invalid_argument,
                         "item \"" + std::string(item) + "\": the key is not 64 hex digits"};
    out.push_back(std::move(k));
  }
  return out;
}

uint64_t key_id(const public_key& pk) noexcept {
  uint64_t id = 0;
  for (int i = 7; i >= 0; --i)
    id = (id << 8) | pk[static_cast<size_t>(i)];
  return id;
}

bool verify(const public_key& pk, std::string_view message, std::span<const uint8_t> sig) noexcept {
  if (sig.size() != crypto_sign_BYTES || !detail::sodium_ready())
    return false;
  return crypto_sign_verify_detached(sig.data(),
                                     reinterpret_cast<const unsigned char*>(message.data()),
                                     message.size(), pk.data())
         == 0;
}

} // namespace shoal::crypto
