#include "crypto/sealer.hpp"

#include "crypto/keys.hpp"

#include <sodium.h>

namespace shoal::crypto {

static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == 32);
static_assert(sealer::overhead
              == crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
                   + crypto_aead_xchacha20poly1305_ietf_ABYTES);

core::result<sealer> sealer::from_hex(std::string_view hex, std::string key_name) {
  if (!detail::sodium_ready())
    return core::error{errc::internal, "libsodium could not be initialised"};
  sealer s;
  if (!crypto::from_hex(hex, s.key_))
    return core::error{errc::invalid_argument,
                       key_name
                         + " must be 64 hex digits (32 bytes), e.g. from "
                           "`openssl rand -hex 32`",
                       key_name};
  s.key_name_ = std::move(key_name);
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

core::result<std::string> sealer::open(std::string_view record, std::string_view ad) const {
  constexpr size_t nb = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
  constexpr size_t ab = crypto_aead_xchacha20poly1305_ietf_ABYTES;
  if (record.size() < nb + ab)
    return core::error{errc::corrupt_data, "sealed record of " + std::to_string(record.size())
                                             + " bytes is shorter than nonce and tag"};
  std::string out(record.size() - nb - ab, '\0');
  unsigned long long mlen = 0;
  const auto* r = reinterpret_cast<const unsigned char*>(record.data());
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
        reinterpret_cast<unsigned char*>(out.data()), &mlen, nullptr, r + nb, record.size() - nb,
        reinterpret_cast<const unsigned char*>(ad.data()), ad.size(), r, key_.data())
      != 0)
    return core::error{errc::corrupt_data,
                       "sealed record failed authentication: wrong " + key_name_
                         + ", or the record was changed",
                       key_name_};
  out.resize(mlen);
  return out;
}

} // namespace shoal::crypto
