#include "crypto/identity.hpp"

#include <sodium.h>

#include <sys/stat.h>

#include <fstream>
#include <stdexcept>
#include <string>

namespace shoal::crypto {

identity identity::from_seed(const std::array<uint8_t, 32>& seed) {
  if (!detail::sodium_ready())
    throw std::runtime_error("libsodium could not be initialised");
  identity id;
  crypto_sign_seed_keypair(id.pk_.data(), id.sk_.data(), seed.data());
  return id;
}

core::result<identity> identity::load_or_create(const std::filesystem::path& path) {
  if (!detail::sodium_ready())
    return core::error{errc::internal, "libsodium could not be initialised"};
  std::array<uint8_t, 32> seed{};
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    if (path.has_parent_path())
      std::filesystem::create_directories(path.parent_path(), ec);
    randombytes_buf(seed.data(), seed.size());
    std::string hex = to_hex(seed) + '\n';
    const auto tmp = path.string() + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      ::chmod(tmp.c_str(), 0600);
      out << hex;
      if (!out.flush())
        return core::error{errc::storage_failure, "cannot write key file " + tmp, tmp};
    }
    sodium_memzero(hex.data(), hex.size());
    std::filesystem::rename(tmp, path, ec);
    if (ec)
      return core::error{errc::storage_failure,
                         "cannot create key file " + path.string() + ": " + ec.message(),
                         path.string()};
  } else {
    std::ifstream in(path);
    std::string line;
    if (!in || !std::getline(in, line))
      return core::error{errc::storage_failure, "cannot read key file " + path.string(),
                         path.string()};
    const bool ok = from_hex(detail::trim(line), seed);
    sodium_memzero(line.data(), line.size());
    if (!ok)
      return core::error{errc::corrupt_data,
                         "key file " + path.string() + " does not hold a 64-hex-digit Ed25519 seed",
                         path.string()};
  }
  auto id = from_seed(seed);
  sodium_memzero(seed.data(), seed.size());
  return id;
}

signature identity::sign(std::string_view message) const noexcept {
  signature sig{};
  crypto_sign_detached(sig.data(), nullptr, reinterpret_cast<const unsigned char*>(message.data()),
                       message.size(), sk_.data());
  return sig;
}

} // namespace shoal::crypto
