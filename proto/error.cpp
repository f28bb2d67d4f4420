#include "proto/error.hpp"

#include <caf/message.hpp>
#include <caf/make_message.hpp>

namespace shoal {

std::string_view to_string(errc x) noexcept {
  switch (x) {
    case errc::ok: return "ok";
    case errc::invalid_argument: return "invalid_argument";
    case errc::not_found: return "not_found";
    case errc::conflict: return "conflict";
    case errc::payload_too_large: return "payload_too_large";
    case errc::storage_failure: return "storage_failure";
    case errc::corrupt_data: return "corrupt_data";
    case errc::unavailable: return "unavailable";
    case errc::internal: return "internal";
  }
  return "unknown";
}

int http_status(errc x) noexcept {
  switch (x) {
    case errc::ok: return 200;
    case errc::invalid_argument: return 400;
    case errc::not_found: return 404;
    case errc::conflict: return 409;
    case errc::payload_too_large: return 413;
    case errc::unavailable: return 503;
    case errc::storage_failure:
    case errc::corrupt_data:
    case errc::internal: return 500;
  }
  return 500;
}

caf::error make_error(errc code, std::string message) {
  return caf::error{static_cast<uint8_t>(code), errc_category::value,
                    caf::make_message(std::move(message))};
}

error_view view(const caf::error& err) {
  if (err.category() == errc_category::value) {
    std::string msg;
    if (err.context().match_elements<std::string>())
      msg = err.context().get_as<std::string>(0);
    return {static_cast<errc>(err.code()), msg.empty() ? std::string{to_string(static_cast<errc>(err.code()))} : msg};
  }
  return {errc::internal, caf::to_string(err)};
}

} // namespace shoal
