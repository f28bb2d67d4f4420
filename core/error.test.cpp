#include "core/error.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace shoal::core;

TEST_CASE("error: a value carries its code, message and context, and ok is no error") {
  error none;
  CHECK_FALSE(none);
  error e{errc::invalid_argument, "top_p must be in (0, 1], got 2", "top_p"};
  CHECK(e);
  CHECK(e.code == errc::invalid_argument);
  CHECK(e.context == "top_p");
  CHECK(to_string(e.code) == "invalid_argument");
  CHECK(to_string(errc::resource_exhausted) == "resource_exhausted");
}

TEST_CASE("result: holds a value or the error that replaced it") {
  result<int> good = 42;
  REQUIRE(good);
  CHECK(*good == 42);
  result<std::string> bad =
    error{errc::corrupt_data, "tensor blk.0.attn_q.weight is truncated", "blk.0.attn_q.weight"};
  REQUIRE_FALSE(bad);
  CHECK(bad.err().code == errc::corrupt_data);
  CHECK(bad.err().context == "blk.0.attn_q.weight");
}
