#pragma once
/// @file Validators of the JSON API's request bodies: each reads one field
/// and says exactly what is wrong with it, naming the field, so that every
/// bad parameter gets a 400 that names it (never silently ignored).
///
/// Errors are core::error with code invalid_argument and the field in
/// `context`; node/errors maps them to HTTP 400.
/// Thread-safety: pure functions.

#include "core/error.hpp"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string>
#include <string_view>

namespace shoal::node {

/// Parses `body` as a JSON object. Errors: "body is not valid JSON", "body
/// must be a JSON object" (context "body").
core::result<nlohmann::json> parse_json_object(std::string_view body);

/// Reads the optional string `field` of `body` into `out` (left as it is
/// when absent or null). Errors: not a string; longer than `max_bytes`.
core::error read_optional_string(const nlohmann::json& body, const char* field, size_t max_bytes,
                                 std::string& out);

/// Reads the optional number `field` of `body` into `out` (left as it is
/// when absent or null), which must lie in [lo, hi], or (lo, hi] with
/// `lo_open`. Errors: not a number, NaN, or out of range; the message gives
/// the range, e.g. "temperature must be a number in [0, 2]".
core::error read_optional_number(const nlohmann::json& body, const char* field, double lo,
                                 double hi, bool lo_open, double& out);

} // namespace shoal::node
