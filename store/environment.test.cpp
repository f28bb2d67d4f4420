#include "store/environment.hpp"

#include "proto/records.hpp"
#include "store/testing.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <random>

namespace fs = std::filesystem;
using namespace shoal::store::testing;
using namespace shoal::store;

TEST_CASE("LMDB round trip of pattern records survives reopening") {
  auto dir = temp_dir("lmdb");
  shoal::proto::pattern_record p;
  p.id = 9;
  p.centroid = {1.0f, 0.0f};
  p.tiers = {{0.5, 0.25, 1}};
  {
    auto env = environment::open({dir});
    REQUIRE(env);
    CHECK_FALSE((*env)->write({{table::patterns, u64_key(p.id), encode(p)}}));
    CHECK((*env)->count(table::patterns).value() == 1);
  }
  auto env = environment::open({dir});
  REQUIRE(env);
  auto got = (*env)->get(table::patterns, u64_key(9));
  REQUIRE(got);
  REQUIRE(got->has_value());
  auto q = shoal::proto::decode_pattern(**got);
  REQUIRE(q);
  CHECK(q->centroid == p.centroid);
  CHECK(q->tiers[0].count == 1);
  CHECK_FALSE((*env)->get(table::patterns, u64_key(10))->has_value());
  fs::remove_all(dir);
}

TEST_CASE("a full LMDB map grows instead of failing") {
  auto dir = temp_dir("grow");
  store_config cfg{dir, 1 << 20, 64ull << 20};
  auto env = environment::open(cfg);
  REQUIRE(env);
  std::string big(64 * 1024, 'x');
  for (uint64_t i = 0; i < 64; ++i) // 4 MiB of values into a 1 MiB map
    REQUIRE_FALSE((*env)->write({{table::witness, u64_key(i), big}}));
  CHECK((*env)->count(table::witness).value() == 64);
  fs::remove_all(dir);
}

TEST_CASE("for_each visits keys in numeric order") {
  auto dir = temp_dir("scan");
  auto env = environment::open({dir});
  REQUIRE(env);
  std::vector<write_op> ops;
  for (uint64_t i : {300u, 2u, 70000u})
    ops.push_back({table::witness, u64_key(i), "v"});
  REQUIRE_FALSE((*env)->write(ops));
  std::vector<uint64_t> seen;
  REQUIRE_FALSE((*env)->for_each(table::witness, [&](std::string_view k, std::string_view) {
    seen.push_back(*parse_u64_key(k));
    return true;
  }));
  CHECK(seen == std::vector<uint64_t>{2, 300, 70000});
  fs::remove_all(dir);
}

TEST_CASE("the meta table records the schema version and refuses another dimension") {
  auto dir = temp_dir("schema");
  {
    auto env = environment::open({dir});
    REQUIRE(env);
    CHECK_FALSE((*env)->ensure_schema(384, 1));
    CHECK_FALSE((*env)->ensure_schema(384, 2)); // idempotent
    auto bytes = (*env)->get(table::meta, "schema");
    REQUIRE(bytes);
    REQUIRE(bytes->has_value());
    auto m = shoal::proto::decode_meta(**bytes);
    REQUIRE(m);
    CHECK(m->schema_version == shoal::proto::schema_version);
    CHECK(m->embedding_dim == 384);
  }
  auto env = environment::open({dir});
  auto err = (*env)->ensure_schema(128, 3);
  REQUIRE(err);
  CHECK(err.message.find("embedder.dim is 128") != std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("a store of an older schema is upgraded in place, a newer one is refused") {
  auto dir = temp_dir("upgrade");
  {
    auto env = environment::open({dir});
    REQUIRE(env);
    shoal::proto::meta_record old{1, 384, 5};
    REQUIRE_FALSE((*env)->write({{table::meta, "schema", shoal::proto::encode(old)}}));
    CHECK_FALSE((*env)->ensure_schema(384, 6));
    auto m = shoal::proto::decode_meta(**(*env)->get(table::meta, "schema"));
    REQUIRE(m);
    CHECK(m->schema_version == shoal::proto::schema_version);
    CHECK(m->created_ms == 5);
    shoal::proto::meta_record future{shoal::proto::schema_version + 1, 384, 5};
    REQUIRE_FALSE((*env)->write({{table::meta, "schema", shoal::proto::encode(future)}}));
    auto err = (*env)->ensure_schema(384, 7);
    REQUIRE(err);
    CHECK(err.message.find("this build reads up to") != std::string::npos);
  }
  fs::remove_all(dir);
}
