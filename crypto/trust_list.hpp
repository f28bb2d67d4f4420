#pragma once
/// @file The public keys an operator trusts, by name (config
/// `federation.trusted`, `kernels.pack_keys`), and the signature checks
/// against them.
///
/// Thread-safety: immutable after construction (add() before sharing);
/// const members may be called from any thread.

#include "crypto/keys.hpp"

#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::crypto {

class trust_list {
public:
  /// Parses "name=hexkey,name=hexkey" (parse_key_list); a repeated name
  /// keeps its last key. Errors: invalid_argument naming the bad item.
  static core::result<trust_list> parse(std::string_view text);

  /// Trusts `pk` under `name` (replacing an earlier key of that name).
  void add(std::string name, const public_key& pk);

  size_t size() const noexcept { return keys_.size(); }
  bool empty() const noexcept { return keys_.empty(); }

  /// The key named `name`, or null.
  const named_key* find(std::string_view name) const noexcept;

  /// The first trusted key (in the order added) whose signature of
  /// `message` `sig` is, or null.
  const named_key* signer_of(std::string_view message, std::span<const uint8_t> sig) const noexcept;

  /// The names, comma-separated in the order added (for messages).
  std::string names() const;

private:
  std::vector<named_key> keys_;
};

} // namespace shoal::crypto
