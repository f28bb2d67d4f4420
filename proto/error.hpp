#pragma once
/// @file Error codes of Shoal. Errors are values (`caf::error`) that can cross
/// actors and nodes; every code has a text (`to_string`) and an HTTP status.

#include <caf/error.hpp>
#include <caf/atom.hpp>
#include <cstdint>
#include <string>
#include <string_view>

namespace shoal {

/// Error codes used across modules. The numeric values are stable.
enum class errc : uint8_t {
  ok = 0,
  invalid_argument = 1,   ///< a request field is malformed or out of range
  not_found = 2,          ///< an id names nothing known (e.g. unknown request id)
  conflict = 3,           ///< the request repeats something already done
  payload_too_large = 4,  ///< a body or value exceeds a configured limit
  storage_failure = 5,    ///< LMDB or a file operation failed
  corrupt_data = 6,       ///< stored bytes do not decode
  unavailable = 7,        ///< the component is shutting down or overloaded
  internal = 8,           ///< a bug: an invariant did not hold
};

/// Category atom of Shoal's errors inside `caf::error`.
using errc_category = caf::atom_constant<caf::atom("shoal")>;

/// Text of a code, e.g. "invalid_argument". Thread-safe.
std::string_view to_string(errc x) noexcept;

/// HTTP status code for an error code (400, 404, 409, 413, 500, 503).
int http_status(errc x) noexcept;

/// Makes a `caf::error` in Shoal's category carrying a human-readable message.
caf::error make_error(errc code, std::string message);

/// Extracts Shoal's code and message from an error (other categories map to
/// `errc::internal` with CAF's rendering as message).
struct error_view {
  errc code;
  std::string message;
};
error_view view(const caf::error& err);

} // namespace shoal
