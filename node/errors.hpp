#pragma once
/// @file The one table that maps Shoal's error codes (core/error.hpp) to
/// HTTP: the status of the JSON API and the OpenAI API, and the OpenAI error
/// `type` and `code` (OpenAI's API reference, "Error codes"). Every handler
/// of node/ answers an error through it. Thread-safe (a constant table).

#include "core/error.hpp"

#include <string_view>

namespace shoal::node {

/// How one error code is answered over HTTP.
struct http_error_mapping {
  int status;                   ///< HTTP status, e.g. 400
  std::string_view openai_type; ///< OpenAI `error.type`, e.g. "invalid_request_error"
  std::string_view openai_code; ///< OpenAI `error.code` (may be empty: null)
};

/// The mapping of `code` (ok maps to 200).
const http_error_mapping& http_mapping(errc code) noexcept;

} // namespace shoal::node
