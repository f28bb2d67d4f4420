#include "store/policy_table.hpp"

#include "proto/records.hpp"

#include <cmath>

namespace shoal::store {

std::string encode_policy(const policy& p) {
  return proto::encode(
    proto::policy_record{p.kind, p.loop, p.confidence, p.version, p.updated_ms, p.value});
}

core::result<policy> decode_policy(std::string_view name, std::string_view in) {
  auto r = proto::decode_policy(in);
  if (!r)
    return core::error{errc::corrupt_data,
                       "policy '" + std::string(name) + "': " + r.err().message};
  return policy{std::string(name), std::move(r->kind), std::move(r->loop), r->confidence,
                r->version,        r->updated_ms,      std::move(r->value)};
}

core::result<uint64_t> put_policy(environment& env, policy p) {
  if (p.name.empty())
    return core::error{errc::invalid_argument, "a policy needs a name"};
  if (!(p.confidence >= 0 && p.confidence <= 1))
    return core::error{errc::invalid_argument,
                       "policy '" + p.name + "': confidence must be in [0, 1]"};
  auto old = get_policy(env, p.name);
  if (!old)
    return std::move(old).err();
  p.version = *old ? (*old)->version + 1 : 1;
  if (auto err = env.write({{table::policies, p.name, encode_policy(p)}}))
    return err;
  return p.version;
}

core::result<std::optional<policy>> get_policy(const environment& env, std::string_view name) {
  auto v = env.get(table::policies, name);
  if (!v)
    return std::move(v).err();
  if (!*v)
    return std::optional<policy>{};
  auto p = decode_policy(name, **v);
  if (!p)
    return std::move(p).err();
  return std::optional<policy>{std::move(*p)};
}

core::result<std::vector<policy>> list_policies(const environment& env, bool with_values) {
  std::vector<policy> out;
  core::error bad;
  auto err = env.for_each(table::policies, [&](std::string_view k, std::string_view v) {
    auto p = decode_policy(k, v);
    if (!p) {
      bad = std::move(p).err();
      return false;
    }
    if (!with_values)
      p->value.clear();
    out.push_back(std::move(*p));
    return true;
  });
  if (err)
    return err;
  if (bad)
    return bad;
  return out;
}

} // namespace shoal::store
