#include "store/sealed.hpp"

#include "proto/error.hpp"
#include "store/environment.hpp"

#include <sodium.h>

#include <cstring>

namespace shoal::store {

namespace {

constexpr std::string_view check_plaintext = "shoal seal check v1";
constexpr std::string_view check_key = "seal_check";

} // namespace

caf::expected<sealer> sealer::from_hex(std::string_view hex) {
  static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == 32);
  if (sodium_init() < 0)
    return make_error(errc::internal, "libsodium failed to initialise");
  sealer s;
  size_t len = 0;
  if (hex.size() != 64
      || sodium_hex2bin(s.key_.data(), s.key_.size(), hex.data(), hex.size(), nullptr, &len,
                        nullptr) != 0
      || len != 32)
    return make_error(errc::invalid_argument,
                      "memory.seal_key must be 64 hex digits (32 bytes), e.g. from "
                      "`openssl rand -hex 32`");
  return s;
}

std::string sealer::seal(std::string_view plaintext, std::string_view ad) const {
  std::string out(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES + plaintext.size()
                    + crypto_aead_xchacha20poly1305_ietf_ABYTES,
                  '\0');
  auto* nonce = reinterpret_cast<unsigned char*>(out.data());
  randombytes_buf(nonce, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
  unsigned long long clen = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(
    nonce + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, &clen,
    reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size(),
    reinterpret_cast<const unsigned char*>(ad.data()), ad.size(), nullptr, nonce, key_.data());
  return out;
}

caf::expected<std::string> sealer::open(std::string_view record, std::string_view ad) const {
  constexpr size_t nb = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
  constexpr size_t ab = crypto_aead_xchacha20poly1305_ietf_ABYTES;
  if (record.size() < nb + ab)
    return make_error(errc::corrupt_data, "sealed record of " + std::to_string(record.size())
                                            + " bytes is shorter than nonce and tag");
  std::string out(record.size() - nb - ab, '\0');
  unsigned long long mlen = 0;
  const auto* r = reinterpret_cast<const unsigned char*>(record.data());
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
        reinterpret_cast<unsigned char*>(out.data()), &mlen, nullptr, r + nb, record.size() - nb,
        reinterpret_cast<const unsigned char*>(ad.data()), ad.size(), r, key_.data())
      != 0)
    return make_error(errc::corrupt_data,
                      "sealed record failed authentication: wrong memory.seal_key, or the "
                      "record was changed");
  out.resize(mlen);
  return out;
}

caf::error check_seal_key(environment& env, const sealer* s) {
  auto rec = env.get(table::meta, check_key);
  if (!rec)
    return rec.error();
  if (!*rec) {
    if (!s)
      return {};
    return env.write({{table::meta, std::string(check_key), s->seal(check_plaintext, check_key)}});
  }
  if (!s)
    return make_error(errc::invalid_argument,
                      "the store in " + env.data_dir().string()
                        + " holds sealed session data but memory.seal_key is not set (config "
                          "or SHOAL_MEMORY_SEAL_KEY)");
  auto plain = s->open(**rec, check_key);
  if (!plain || *plain != check_plaintext)
    return make_error(errc::invalid_argument,
                      "memory.seal_key does not match the key the store in "
                        + env.data_dir().string() + " was sealed with");
  return {};
}

} // namespace shoal::store
