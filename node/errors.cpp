#include "node/errors.hpp"

#include <array>

namespace shoal::node {

namespace {

// Indexed by errc's stable numeric value.
constexpr std::array<http_error_mapping, 10> table{{
  /* ok                 */ {200, "", ""},
  /* invalid_argument   */ {400, "invalid_request_error", "invalid_value"},
  /* not_found          */ {404, "invalid_request_error", "not_found"},
  /* conflict           */ {409, "invalid_request_error", "conflict"},
  /* payload_too_large  */ {413, "invalid_request_error", "payload_too_large"},
  /* storage_failure    */ {500, "server_error", "storage_failure"},
  /* corrupt_data       */ {500, "server_error", "corrupt_data"},
  /* unavailable        */ {503, "server_error", "unavailable"},
  /* internal           */ {500, "server_error", "internal"},
  /* resource_exhausted */ {503, "server_error", "insufficient_memory"},
}};

} // namespace

const http_error_mapping& http_mapping(errc code) noexcept {
  auto i = static_cast<size_t>(code);
  return i < table.size() ? table[i] : table[static_cast<size_t>(errc::internal)];
}

} // namespace shoal::node
