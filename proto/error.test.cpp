#include "proto/error.hpp"

#include <caf/sec.hpp>
#include <doctest/doctest.h>

using shoal::errc;

TEST_CASE("a Shoal error keeps its code, message and context through caf::error") {
  const caf::error e =
    shoal::make_error(errc::resource_exhausted, "KV cache budget exhausted", "memory.budget_mb");
  CHECK(e.category() == shoal::errc_category::value);
  const auto v = shoal::view(e);
  CHECK(v.code == errc::resource_exhausted);
  CHECK(v.message == "KV cache budget exhausted");
  CHECK(v.context == "memory.budget_mb");
  CHECK(static_cast<bool>(v));

  const auto again = shoal::view(shoal::make_error(v));
  CHECK(again.code == v.code);
  CHECK(again.message == v.message);
  CHECK(again.context == v.context);
}

TEST_CASE("an error without a message is named by its code") {
  const auto v = shoal::view(shoal::make_error(errc::not_found, ""));
  CHECK(v.code == errc::not_found);
  CHECK(v.message == "not_found");
  CHECK(v.context.empty());
}

TEST_CASE("CAF's own errors are internal errors that keep CAF's text") {
  const auto v = shoal::view(caf::make_error(caf::sec::request_timeout));
  CHECK(v.code == errc::internal);
  CHECK(v.message.find("request_timeout") != std::string::npos);
}
