#include "store/upgrade.hpp"

#include "proto/records.hpp"
#include "store/bytes.hpp"

#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace shoal::store {

namespace {

using bytes::get;
using bytes::get_str;

core::error corrupt(std::string_view where, std::string_view key, const std::string& what) {
  return core::error{errc::corrupt_data,
                     "upgrading the store: " + std::string(where) + " '" + std::string(key)
                       + "': " + what,
                     std::string(where)};
}

/// The AD schema 2 sealed its check value with (kept: the bytes move as they are).
constexpr std::string_view seal_check_key = "seal_check";

// -- schema 2's little-endian layouts ---------------------------------------------

/// Policy record v1: u8 1, kind, loop (u32 length + bytes), f64 confidence,
/// u64 version, i64 updated_ms, value (u32 length + bytes).
std::optional<proto::policy_record> legacy_policy(std::string_view in) {
  uint8_t v = 0;
  proto::policy_record p;
  if (!get(in, v) || v != 1 || !get_str(in, p.kind) || !get_str(in, p.loop)
      || !get(in, p.confidence) || !get(in, p.version) || !get(in, p.updated_ms)
      || !get_str(in, p.value) || !in.empty())
    return std::nullopt;
  return p;
}

/// KV policy: u32 recent_tokens, u8 old K type, u8 old V type, u32 migrate_pages.
std::optional<proto::kv_policy_record> legacy_kv_policy(std::string_view in) {
  proto::kv_policy_record p;
  if (!get(in, p.recent_tokens) || !get(in, p.old_k_type) || !get(in, p.old_v_type)
      || !get(in, p.migrate_pages) || !in.empty())
    return std::nullopt;
  return p;
}

/// Categories, format 1: u32 format, u32 dim, u32 k, u32 next, u64 n, k ×
/// (u32 label, dim × f32 mean), n × (u64 pattern id, u32 category).
std::optional<proto::categories_record> legacy_categories(std::string_view in) {
  uint32_t format = 0, k = 0;
  uint64_t n = 0;
  proto::categories_record c;
  if (!get(in, format) || format != 1 || !get(in, c.dim) || !get(in, k) || !get(in, c.next_category)
      || !get(in, n) || in.size() != uint64_t{k} * (4 + 4ull * c.dim) + n * 12)
    return std::nullopt;
  c.labels.resize(k);
  c.means.resize(size_t{k} * c.dim);
  for (uint32_t i = 0; i < k; ++i) {
    get(in, c.labels[i]);
    std::memcpy(c.means.data() + size_t{i} * c.dim, in.data(), 4ull * c.dim);
    in.remove_prefix(4ull * c.dim);
  }
  c.pattern_ids.resize(n);
  c.pattern_categories.resize(n);
  for (uint64_t i = 0; i < n; ++i) {
    get(in, c.pattern_ids[i]);
    get(in, c.pattern_categories[i]);
  }
  return c;
}

/// Session record v1: u8 1, id, user (u32 length + bytes), u32 dim, dim ×
/// f32 context, u32 turns, adapter, i64 created_ms, i64 last_ms, kv tier,
/// u32 kv tokens, u32 kv pages.
std::optional<proto::session_record> legacy_session(std::string_view in) {
  uint8_t v = 0;
  uint32_t dim = 0;
  proto::session_record s;
  if (!get(in, v) || v != 1 || !get_str(in, s.id) || !get_str(in, s.user) || !get(in, dim)
      || in.size() < 4ull * dim)
    return std::nullopt;
  s.context.resize(dim);
  for (auto& x : s.context)
    get(in, x);
  if (!get(in, s.turns) || !get_str(in, s.adapter) || !get(in, s.created_ms) || !get(in, s.last_ms)
      || !get_str(in, s.kv_tier) || !get(in, s.kv_tokens) || !get(in, s.kv_pages) || !in.empty())
    return std::nullopt;
  return s;
}

/// KV page: u64 parent, u8 tier, u8 K type, u8 V type, u32 n, n × i32
/// tokens, then the page bytes.
std::optional<proto::kv_page_record> legacy_kv_page(std::string_view in) {
  proto::kv_page_record p;
  uint8_t old = 0;
  uint32_t n = 0;
  if (!get(in, p.parent) || !get(in, old) || old > 1 || !get(in, p.k_type) || !get(in, p.v_type)
      || !get(in, n) || in.size() < 4ull * n)
    return std::nullopt;
  p.old = old == 1;
  p.tokens.resize(n);
  for (auto& t : p.tokens)
    get(in, t);
  p.bytes.assign(in.data(), in.size());
  return p;
}

/// Schema 2 -> 3 (see the header).
core::result<std::vector<write_op>> upgrade_2_to_3(const environment& env,
                                                   const crypto::sealer* seal, int64_t now_ms) {
  std::vector<write_op> ops;
  core::error err;
  auto fail = [&err](core::error e) {
    err = std::move(e);
    return false;
  };
  // Sealed records need the key they were sealed with.
  auto check = env.get(table::meta, seal_check_key);
  if (!check)
    return std::move(check).err();
  if (check->has_value()) {
    if (seal == nullptr)
      return core::error{errc::invalid_argument,
                         "the store in " + env.data_dir().string()
                           + " holds sealed session data but memory.seal_key is not set "
                             "(config or SHOAL_MEMORY_SEAL_KEY)",
                         "memory.seal_key"};
    if (!seal->open(**check, seal_check_key))
      return core::error{errc::invalid_argument,
                         "memory.seal_key does not match the key the store in "
                           + env.data_dir().string() + " was sealed with",
                         "memory.seal_key"};
  }
  // meta: everything but "schema" moves out.
  auto meta_err = env.for_each(table::meta, [&](std::string_view k, std::string_view v) {
    std::string key(k);
    if (key == "schema")
      return true;
    ops.push_back({table::meta, key, {}, true});
    if (key == "pattern_index") {
      ops.push_back({table::router_state, key, std::string(v)});
    } else if (key == "id_reserved" || key == "federation") {
      auto x = parse_u64_key(v);
      if (!x)
        return fail(corrupt("meta", key, "not a u64"));
      if (key == "id_reserved")
        ops.push_back({table::router_state, "ids", proto::encode(proto::pattern_ids_record{*x})});
      else
        ops.push_back(
          {table::federation_state, "stream", proto::encode(proto::stream_position_record{*x})});
    } else if (key == "categories") {
      auto c = legacy_categories(v);
      if (!c)
        return fail(corrupt("meta", key, "does not decode"));
      ops.push_back({table::router_state, key, proto::encode(*c)});
    } else if (key.starts_with("kv_policy/")) {
      auto p = legacy_kv_policy(v);
      if (!p)
        return fail(corrupt("meta", key, "does not decode"));
      proto::policy_record rec{"kv", "operator", 1.0, 1, now_ms, proto::encode(*p)};
      ops.push_back({table::policies, "kv/" + key.substr(10), proto::encode(rec)});
    } else if (key == seal_check_key) {
      ops.push_back({table::seal, key, std::string(v)});
    } else {
      return fail(corrupt("meta", key, "unknown key"));
    }
    return true;
  });
  if (meta_err)
    return meta_err;
  if (err)
    return err;
  // policies: the record, and router v2's checkpoint inside it.
  auto pol_err = env.for_each(table::policies, [&](std::string_view k, std::string_view v) {
    auto p = legacy_policy(v);
    if (!p)
      return fail(corrupt("policies", k, "does not decode"));
    if (p->kind == "router") {
      auto ck = proto::decode_router_v2_checkpoint(p->value);
      if (!ck)
        return fail(corrupt("policies", k, ck.err().message));
      p->value = proto::encode(*ck);
    }
    ops.push_back({table::policies, std::string(k), proto::encode(*p)});
    return true;
  });
  if (pol_err)
    return pol_err;
  if (err)
    return err;
  // Sealed tables: open, convert, seal again (the key is the AD).
  auto reseal = [&](table t, auto convert) {
    return env.for_each(t, [&](std::string_view k, std::string_view v) {
      if (seal == nullptr)
        return fail(core::error{errc::invalid_argument,
                                "the store holds sealed " + std::string(to_string(t))
                                  + " records but memory.seal_key is not set",
                                "memory.seal_key"});
      auto plain = seal->open(v, k);
      if (!plain)
        return fail(corrupt(to_string(t), k, plain.err().message));
      auto rec = convert(*plain);
      if (!rec)
        return fail(corrupt(to_string(t), k, "does not decode"));
      ops.push_back({t, std::string(k), seal->seal(proto::encode(*rec), k)});
      return true;
    });
  };
  if (auto e = reseal(table::sessions, legacy_session); e || err)
    return e ? e : err;
  if (auto e = reseal(table::kv_spill, legacy_kv_page); e || err)
    return e ? e : err;
  return ops;
}

} // namespace

core::result<std::vector<write_op>> upgrade_ops(const environment& env, uint32_t from,
                                                const crypto::sealer* seal, int64_t now_ms) {
  if (from <= 2)
    return upgrade_2_to_3(env, seal, now_ms); // 1 -> 2 only appended fields
  return std::vector<write_op>{};
}

} // namespace shoal::store
