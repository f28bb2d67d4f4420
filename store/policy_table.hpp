#pragma once
/// @file The `policies` table: what the learning loops (and operators)
/// decided, one record per policy name, e.g.
///   "router/v2"   kind router   value: proto::router_v2_checkpoint (router v2's weights)
///   "kv/<tier>"   kind kv       value: proto::kv_policy_record (a tier's KV tiering)
/// with the loop that wrote it ("instant", "background", "deep", "operator"),
/// a confidence in [0, 1], a version that grows with every write of the name,
/// and the time of the write.
///
/// Record: key = name (UTF-8), value = a Cap'n Proto Policy
/// (proto/schema/store.capnp) whose `value` holds the kind's own message.
/// Thread-safety: the functions are thread-safe (LMDB transactions).

#include "core/error.hpp"
#include "store/environment.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace shoal::store {

struct policy {
  std::string name;
  std::string kind;       ///< "router", "kv"
  std::string loop;       ///< "instant", "background", "deep" or "operator"
  double confidence = 0;  ///< [0, 1]
  uint64_t version = 0;   ///< set by put_policy: the previous version + 1
  int64_t updated_ms = 0; ///< UTC ms
  std::string value;      ///< the policy itself (bytes; its format is the kind's)
};

/// Encodes / decodes one record's value. decode: errc::corrupt_data naming
/// the policy and what is wrong.
std::string encode_policy(const policy& p);
core::result<policy> decode_policy(std::string_view name, std::string_view bytes);

/// Writes `p` under p.name with the next version (the stored one + 1);
/// returns that version. Errors: invalid_argument (empty name, a confidence
/// outside [0, 1]), corrupt_data (the stored record), storage_failure.
core::result<uint64_t> put_policy(environment& env, policy p);

/// The stored policy, std::nullopt when absent. Errors: corrupt_data, storage_failure.
core::result<std::optional<policy>> get_policy(const environment& env, std::string_view name);

/// Every policy, by name, values included only when `with_values`.
/// Errors: corrupt_data, storage_failure.
core::result<std::vector<policy>> list_policies(const environment& env, bool with_values);

} // namespace shoal::store
