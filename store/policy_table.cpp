#include "store/policy_table.hpp"

#include "proto/error.hpp"
#include "store/bytes.hpp"

#include <cmath>

namespace shoal::store {

namespace {

constexpr uint8_t record_version = 1;

} // namespace

std::string encode_policy(const policy& p) {
  std::string out;
  bytes::put<uint8_t>(out, record_version);
  bytes::put_str(out, p.kind);
  bytes::put_str(out, p.loop);
  bytes::put<double>(out, p.confidence);
  bytes::put<uint64_t>(out, p.version);
  bytes::put<int64_t>(out, p.updated_ms);
  bytes::put_str(out, p.value);
  return out;
}

caf::expected<policy> decode_policy(std::string_view name, std::string_view in) {
  auto bad = [&](const std::string& what) {
    return make_error(errc::corrupt_data,
                             "policy '" + std::string(name) + "': " + what);
  };
  uint8_t v = 0;
  if (!bytes::get(in, v))
    return bad("empty record");
  if (v != record_version)
    return bad("record version " + std::to_string(v) + ", this build reads "
               + std::to_string(record_version));
  policy p;
  p.name = name;
  if (!bytes::get_str(in, p.kind) || !bytes::get_str(in, p.loop) || !bytes::get(in, p.confidence)
      || !bytes::get(in, p.version) || !bytes::get(in, p.updated_ms)
      || !bytes::get_str(in, p.value))
    return bad("truncated record");
  if (!in.empty())
    return bad(std::to_string(in.size()) + " trailing bytes");
  return p;
}

caf::expected<uint64_t> put_policy(environment& env, policy p) {
  if (p.name.empty())
    return make_error(errc::invalid_argument, "a policy needs a name");
  if (!(p.confidence >= 0 && p.confidence <= 1))
    return make_error(errc::invalid_argument,
                             "policy '" + p.name + "': confidence must be in [0, 1]");
  auto old = get_policy(env, p.name);
  if (!old)
    return std::move(old.error());
  p.version = *old ? (*old)->version + 1 : 1;
  if (auto err = env.write({{table::policies, p.name, encode_policy(p)}}))
    return err;
  return p.version;
}

caf::expected<std::optional<policy>> get_policy(const environment& env, std::string_view name) {
  auto v = env.get(table::policies, name);
  if (!v)
    return std::move(v.error());
  if (!*v)
    return std::optional<policy>{};
  auto p = decode_policy(name, **v);
  if (!p)
    return std::move(p.error());
  return std::optional<policy>{std::move(*p)};
}

caf::expected<std::vector<policy>> list_policies(const environment& env, bool with_values) {
  std::vector<policy> out;
  caf::error bad;
  auto err = env.for_each(table::policies, [&](std::string_view k, std::string_view v) {
    auto p = decode_policy(k, v);
    if (!p) {
      bad = std::move(p.error());
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
