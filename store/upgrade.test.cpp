#include "store/upgrade.hpp"

#include "proto/records.hpp"
#include "store/bytes.hpp"
#include "store/policy_table.hpp"
#include "store/testing.hpp"

#include <doctest/doctest.h>

using namespace shoal::store;
using namespace shoal::store::testing;
namespace proto = shoal::proto;
namespace fs = std::filesystem;

namespace {

/// An environment holding a schema-2 store: schema record, and `meta` extras.
std::shared_ptr<environment> schema2_store(const fs::path& dir, std::vector<write_op> extras = {}) {
  auto env = environment::open({dir});
  REQUIRE(env);
  extras.push_back({table::meta, "schema", proto::encode(proto::meta_record{2, 384, 5})});
  REQUIRE_FALSE((*env)->write(extras));
  return *env;
}

uint32_t schema_of(const environment& env) {
  return proto::decode_meta(**env.get(table::meta, "schema"))->schema_version;
}

/// Schema 2's KV policy bytes: u32 recent, u8 K type, u8 V type, u32 migrate.
std::string legacy_kv_policy(uint32_t recent, uint8_t k, uint8_t v, uint32_t migrate) {
  std::string out;
  bytes::put(out, recent);
  bytes::put(out, k);
  bytes::put(out, v);
  bytes::put(out, migrate);
  return out;
}

} // namespace

TEST_CASE("upgrade 2 -> 3: meta's records move to their typed tables as Cap'n Proto") {
  auto dir = temp_dir("upgrade-meta");
  auto env =
    schema2_store(dir, {{table::meta, "id_reserved", u64_key(8193)},
                        {table::meta, "federation", u64_key(42)},
                        {table::meta, "kv_policy/demo-15m", legacy_kv_policy(128, 3, 2, 4)}});
  REQUIRE_FALSE(env->ensure_schema(384, 99));
  CHECK(schema_of(*env) == proto::schema_version);
  CHECK(*env->count(table::meta) == 1);
  CHECK(proto::decode_pattern_ids(**env->get(table::router_state, "ids"))->reserved_up_to == 8193);
  CHECK(proto::decode_stream_position(**env->get(table::federation_state, "stream"))->seq == 42);
  auto kv = get_policy(*env, "kv/demo-15m");
  REQUIRE((kv && kv->has_value()));
  CHECK((*kv)->kind == "kv");
  CHECK((*kv)->updated_ms == 99);
  auto rec = proto::decode_kv_policy((*kv)->value);
  REQUIRE(rec);
  CHECK(rec->recent_tokens == 128);
  CHECK(rec->old_k_type == 3);
  CHECK(rec->old_v_type == 2);
  CHECK(rec->migrate_pages == 4);
  CHECK_FALSE(env->ensure_schema(384, 100)); // once upgraded, nothing more to do
  fs::remove_all(dir);
}

TEST_CASE("upgrade 2 -> 3: sealed records need their key, and a refusal changes nothing") {
  auto dir = temp_dir("upgrade-sealed");
  auto a =
    std::make_shared<const shoal::crypto::sealer>(*shoal::crypto::sealer::from_hex(seal_key_a));
  auto b = *shoal::crypto::sealer::from_hex(seal_key_b);
  auto env =
    schema2_store(dir, {{table::meta, "seal_check", a->seal("shoal seal check v1", "seal_check")}});
  const std::vector<const shoal::crypto::sealer*> wrong_keys{nullptr, &b};
  for (const auto* wrong : wrong_keys) {
    auto err = env->ensure_schema(384, 9, wrong);
    REQUIRE(err);
    CHECK(err.code == shoal::errc::invalid_argument);
    CHECK(err.context == "memory.seal_key");
    CHECK(schema_of(*env) == 2);
    CHECK(*env->count(table::meta) == 2);
  }
  REQUIRE_FALSE(env->ensure_schema(384, 9, a.get()));
  CHECK(schema_of(*env) == proto::schema_version);
  CHECK((*env->get(table::seal, "seal_check")).has_value());
  fs::remove_all(dir);
}

TEST_CASE("upgrade 2 -> 3: a record that does not decode is named and nothing is written") {
  auto dir = temp_dir("upgrade-bad");
  auto env = schema2_store(dir, {{table::meta, "kv_policy/t", "xyz"}});
  auto err = env->ensure_schema(384, 9);
  REQUIRE(err);
  CHECK(err.code == shoal::errc::corrupt_data);
  CHECK(err.message.find("kv_policy/t") != std::string::npos);
  CHECK(schema_of(*env) == 2);
  REQUIRE_FALSE(
    env->write({{table::meta, "kv_policy/t", {}, true}, {table::meta, "mystery", "1"}}));
  err = env->ensure_schema(384, 9);
  REQUIRE(err);
  CHECK(err.message.find("'mystery': unknown key") != std::string::npos);
  CHECK(schema_of(*env) == 2);
  fs::remove_all(dir);
}
