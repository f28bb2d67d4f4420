#include "crypto/trust_list.hpp"

namespace shoal::crypto {

core::result<trust_list> trust_list::parse(std::string_view text) {
  auto keys = parse_key_list(text);
  if (!keys)
    return std::move(keys).err();
  trust_list t;
  for (auto& k : *keys)
    t.add(std::move(k.name), k.key);
  return t;
}

void trust_list::add(std::string name, const public_key& pk) {
  for (auto& k : keys_)
    if (k.name == name) {
      k.key = pk;
      return;
    }
  keys_.push_back({std::move(name), pk});
}

const named_key* trust_list::find(std::string_view name) const noexcept {
  for (const auto& k : keys_)
    if (k.name == name)
      return &k;
  return nullptr;
}

const named_key* trust_list::signer_of(std::string_view message,
                                       std::span<const uint8_t> sig) const noexcept {
  for (const auto& k : keys_)
    if (verify(k.key, message, sig))
      return &k;
  return nullptr;
}

std::string trust_list::names() const {
  std::string out;
  for (const auto& k : keys_)
    out += (out.empty() ? "" : ", ") + k.name;
  return out;
}

} // namespace shoal::crypto
