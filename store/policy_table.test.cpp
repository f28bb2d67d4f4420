#include "store/policy_table.hpp"

#include "store/testing.hpp"

#include <doctest/doctest.h>

using namespace shoal;
using namespace shoal::store;
using namespace shoal::store::testing;

TEST_CASE("policies: a policy survives reopening, versions grow, bad records are refused") {
  auto dir = temp_dir("policies");
  store_config cfg;
  cfg.data_dir = dir;
  {
    auto env = environment::open(cfg);
    REQUIRE(env);
    policy p{"router/v2", "router", "background", 0.8, 0, 1000, std::string("\x01\x00\xff", 3)};
    auto v1 = put_policy(**env, p);
    REQUIRE(v1);
    CHECK(*v1 == 1);
    p.value = "second";
    p.loop = "operator";
    auto v2 = put_policy(**env, p);
    REQUIRE(v2);
    CHECK(*v2 == 2);
    CHECK(put_policy(**env, {"kv/demo-15m", "quantization", "deep", 1.0, 0, 5, "q8_0"}));
    // Bad input is refused and nothing changes.
    auto bad = put_policy(**env, {"x", "router", "operator", 1.5, 0, 0, ""});
    CHECK_FALSE(bad);
    CHECK(bad.err().message.find("confidence") != std::string::npos);
    CHECK_FALSE(put_policy(**env, {"", "router", "operator", 0.5, 0, 0, ""}));
  }
  auto env = environment::open(cfg);
  REQUIRE(env);
  auto p = get_policy(**env, "router/v2");
  REQUIRE(p);
  REQUIRE(p->has_value());
  CHECK((*p)->version == 2);
  CHECK((*p)->value == "second");
  CHECK((*p)->loop == "operator");
  CHECK((*p)->confidence == 0.8);
  auto none = get_policy(**env, "x");
  REQUIRE(none);
  CHECK_FALSE(none->has_value());
  auto all = list_policies(**env, false);
  REQUIRE(all);
  REQUIRE(all->size() == 2);
  CHECK((*all)[0].name == "kv/demo-15m");
  CHECK((*all)[0].value.empty());
  CHECK((*all)[1].name == "router/v2");
  // A corrupt record is named, not crashed on.
  REQUIRE_FALSE((*env)->write({{table::policies, "broken", std::string("\x07", 1)}}));
  auto listed = list_policies(**env, true);
  REQUIRE_FALSE(listed);
  CHECK(listed.err().message.find("'broken'") != std::string::npos);
  auto trunc = decode_policy("t", encode_policy(**p).substr(0, 10));
  REQUIRE_FALSE(trunc);
  CHECK(trunc.err().message.find("truncated") != std::string::npos);
  std::filesystem::remove_all(dir);
}
