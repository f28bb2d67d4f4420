#include "federation/signing.hpp"

#include "kernels/pack.hpp"

#include "proto/error.hpp"

#include <sodium.h>

#include <cstring>
#include <fstream>
#include <mutex>
#include <sys/stat.h>

namespace shoal::federation {

namespace {

void init_sodium() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (sodium_init() < 0)
      throw std::runtime_error("libsodium could not be initialised");
  });
}

std::string signed_bytes(proto::wire_kind kind, std::string_view payload) {
  std::string m;
  m.reserve(payload.size() + 1);
  m.push_back(static_cast<char>(kind));
  m.append(payload);
  return m;
}

bool parse_hex(std::string_view hex, uint8_t* out, size_t n) {
  size_t len = 0;
  return hex.size() == 2 * n
         && sodium_hex2bin(out, n, hex.data(), hex.size(), nullptr, &len, nullptr) == 0
         && len == n;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
    s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
    s.remove_suffix(1);
  return s;
}

} // namespace

uint64_t node_id(const public_key& pk) noexcept {
  uint64_t id = 0;
  for (int i = 7; i >= 0; --i)
    id = (id << 8) | pk[static_cast<size_t>(i)];
  return id;
}

std::string to_hex(const public_key& pk) {
  std::string out(2 * pk.size() + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), pk.data(), pk.size());
  out.pop_back();
  return out;
}

caf::expected<public_key> parse_public_key(std::string_view hex) {
  public_key pk;
  if (!parse_hex(trim(hex), pk.data(), pk.size()))
    return make_error(errc::invalid_argument,
                      "a public key is 64 hex digits, got '" + std::string(hex) + "'");
  return pk;
}

identity identity::from_seed(const std::array<uint8_t, 32>& seed) {
  init_sodium();
  identity id;
  crypto_sign_seed_keypair(id.pk_.data(), id.sk_.data(), seed.data());
  return id;
}

caf::expected<identity> identity::load_or_create(const std::filesystem::path& path) {
  init_sodium();
  std::array<uint8_t, 32> seed{};
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    if (path.has_parent_path())
      std::filesystem::create_directories(path.parent_path(), ec);
    randombytes_buf(seed.data(), seed.size());
    std::string hex(2 * seed.size() + 1, '\0');
    sodium_bin2hex(hex.data(), hex.size(), seed.data(), seed.size());
    hex.back() = '\n';
    auto tmp = path.string() + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      ::chmod(tmp.c_str(), 0600);
      out << hex;
      if (!out.flush())
        return make_error(errc::storage_failure, "cannot write key file " + tmp);
    }
    std::filesystem::rename(tmp, path, ec);
    if (ec)
      return make_error(errc::storage_failure,
                        "cannot create key file " + path.string() + ": " + ec.message());
    sodium_memzero(hex.data(), hex.size());
  } else {
    std::ifstream in(path);
    std::string line;
    if (!in || !std::getline(in, line))
      return make_error(errc::storage_failure, "cannot read key file " + path.string());
    if (!parse_hex(trim(line), seed.data(), seed.size()))
      return make_error(errc::corrupt_data, "key file " + path.string()
                                              + " does not hold a 64-hex-digit Ed25519 seed");
    sodium_memzero(line.data(), line.size());
  }
  auto id = from_seed(seed);
  sodium_memzero(seed.data(), seed.size());
  return id;
}

proto::envelope identity::seal(proto::wire_kind kind, std::string payload,
                               std::string signer) const {
  proto::envelope e;
  e.kind = kind;
  e.signer = std::move(signer);
  e.signature.resize(crypto_sign_BYTES);
  auto m = signed_bytes(kind, payload);
  crypto_sign_detached(reinterpret_cast<unsigned char*>(e.signature.data()), nullptr,
                       reinterpret_cast<const unsigned char*>(m.data()), m.size(), sk_.data());
  e.payload = std::move(payload);
  return e;
}

caf::expected<trust_list> trust_list::parse(std::string_view text) {
  std::vector<kernels::named_key> keys;
  std::string error;
  if (!kernels::parse_key_list(text, keys, error))
    return make_error(errc::invalid_argument, "trust list: " + error);
  trust_list t;
  for (auto& k : keys)
    t.add(std::move(k.name), k.key);
  return t;
}

caf::expected<uint64_t> trust_list::verify(const proto::envelope& e) const {
  init_sodium();
  auto it = keys_.find(e.signer);
  if (it == keys_.end())
    return make_error(errc::invalid_argument, "untrusted signer '" + e.signer + "'");
  if (e.signature.size() != crypto_sign_BYTES)
    return make_error(errc::invalid_argument, "bad signature from '" + e.signer + "': "
                                                + std::to_string(e.signature.size())
                                                + " bytes, expected 64");
  auto m = signed_bytes(e.kind, e.payload);
  if (crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(e.signature.data()),
                                  reinterpret_cast<const unsigned char*>(m.data()), m.size(),
                                  it->second.data())
      != 0)
    return make_error(errc::invalid_argument, "bad signature from '" + e.signer + "'");
  return node_id(it->second);
}

} // namespace shoal::federation
