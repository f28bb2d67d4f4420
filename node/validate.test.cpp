#include "node/validate.hpp"

#include <doctest/doctest.h>

#include <cmath>

using namespace shoal;
using namespace shoal::node;
using json = nlohmann::json;

TEST_CASE("request bodies must be JSON objects") {
  CHECK(parse_json_object(R"({"text": "x"})").ok());
  for (const char* bad : {"", "{", "not json", "[1, 2]", "\"text\"", "42", "null"}) {
    auto r = parse_json_object(bad);
    CAPTURE(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::invalid_argument);
    CHECK(r.err().context == "body");
  }
  CHECK(parse_json_object("[]").err().message == "body must be a JSON object");
  CHECK(parse_json_object("{").err().message == "body is not valid JSON");
}

TEST_CASE("optional strings: absent or null keep the default, others are checked") {
  std::string out = "default";
  CHECK_FALSE(read_optional_string(json::object(), "user", 8, out));
  CHECK(out == "default");
  CHECK_FALSE(read_optional_string(json{{"user", nullptr}}, "user", 8, out));
  CHECK(out == "default");
  CHECK_FALSE(read_optional_string(json{{"user", "alice"}}, "user", 8, out));
  CHECK(out == "alice");
  auto not_string = read_optional_string(json{{"user", 5}}, "user", 8, out);
  CHECK(not_string.code == errc::invalid_argument);
  CHECK(not_string.context == "user");
  CHECK(not_string.message == "user must be a string");
  auto too_long = read_optional_string(json{{"user", "abcdefghi"}}, "user", 8, out);
  CHECK(too_long.message == "user is longer than 8 bytes");
  CHECK(out == "alice"); // a refused value leaves the output as it was
}

TEST_CASE("optional numbers: the range, open or closed, and NaN are enforced") {
  double t = -1;
  CHECK_FALSE(read_optional_number(json::object(), "temperature", 0, 2, false, t));
  CHECK(t == -1);
  CHECK_FALSE(read_optional_number(json{{"temperature", 0}}, "temperature", 0, 2, false, t));
  CHECK(t == 0);
  CHECK_FALSE(read_optional_number(json{{"temperature", 2}}, "temperature", 0, 2, false, t));
  CHECK(t == 2);
  auto above = read_optional_number(json{{"temperature", 2.01}}, "temperature", 0, 2, false, t);
  CHECK(above.context == "temperature");
  CHECK(above.message == "temperature must be a number in [0, 2]");
  CHECK(read_optional_number(json{{"temperature", "1"}}, "temperature", 0, 2, false, t));
  CHECK(read_optional_number(json{{"temperature", true}}, "temperature", 0, 2, false, t));
  double p = 1;
  auto zero = read_optional_number(json{{"top_p", 0}}, "top_p", 0, 1, true, p);
  CHECK(zero.message == "top_p must be a number in (0, 1]");
  CHECK_FALSE(read_optional_number(json{{"top_p", 1e-9}}, "top_p", 0, 1, true, p));
  CHECK(p == 1e-9);
  // JSON has no NaN; a double that is NaN (built in code) is still refused.
  CHECK(read_optional_number(json{{"top_p", std::nan("")}}, "top_p", 0, 1, true, p));
}
