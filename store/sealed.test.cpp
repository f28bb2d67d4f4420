#include "store/sealed.hpp"

#include "store/environment.hpp"
#include "store/testing.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

using namespace shoal::store;
namespace fs = std::filesystem;
using namespace shoal::store::testing;

TEST_CASE("check_seal_key: first key wins, another or a missing key is refused clearly") {
  auto dir = temp_dir("seal");
  auto a = *shoal::crypto::sealer::from_hex(seal_key_a, "memory.seal_key"),
       b = *shoal::crypto::sealer::from_hex(seal_key_b, "memory.seal_key");
  {
    auto env = environment::open({dir});
    REQUIRE(env);
    CHECK_FALSE(check_seal_key(**env, nullptr)); // nothing sealed: no key is fine
    CHECK_FALSE(check_seal_key(**env, &a));      // first use records the check
    CHECK_FALSE(check_seal_key(**env, &a));
    auto wrong = check_seal_key(**env, &b);
    REQUIRE(wrong);
    CHECK(wrong.message.find("does not match") != std::string::npos);
    CHECK(wrong.context == "memory.seal_key");
    auto missing = check_seal_key(**env, nullptr);
    REQUIRE(missing);
    CHECK(missing.message.find("not set") != std::string::npos);
    CHECK(missing.context == "memory.seal_key");
  }
  fs::remove_all(dir);
}
