#include "federation/signing.hpp"

namespace shoal::federation {

namespace {

std::string signed_bytes(proto::wire_kind kind, std::string_view payload) {
  std::string m;
  m.reserve(payload.size() + 1);
  m.push_back(static_cast<char>(kind));
  m.append(payload);
  return m;
}

} // namespace

proto::envelope seal(const crypto::identity& self, proto::wire_kind kind, std::string payload,
                     std::string signer) {
  proto::envelope e;
  e.kind = kind;
  e.signer = std::move(signer);
  const auto sig = self.sign(signed_bytes(kind, payload));
  e.signature.assign(reinterpret_cast<const char*>(sig.data()), sig.size());
  e.payload = std::move(payload);
  return e;
}

core::result<uint64_t> verify(const crypto::trust_list& trusted, const proto::envelope& e) {
  const crypto::named_key* k = trusted.find(e.signer);
  if (k == nullptr)
    return core::error{errc::not_found, "untrusted signer '" + e.signer + "'", "signer"};
  if (e.signature.size() != std::tuple_size_v<crypto::signature>)
    return core::error{errc::invalid_argument,
                       "bad signature from '" + e.signer
                         + "': " + std::to_string(e.signature.size()) + " bytes, expected 64",
                       "signature"};
  const std::span<const uint8_t> sig(reinterpret_cast<const uint8_t*>(e.signature.data()),
                                     e.signature.size());
  if (!crypto::verify(k->key, signed_bytes(e.kind, e.payload), sig))
    return core::error{errc::invalid_argument, "bad signature from '" + e.signer + "'",
                       "signature"};
  return crypto::key_id(k->key);
}

} // namespace shoal::federation
