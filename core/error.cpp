#include "core/error.hpp"

namespace shoal::core {

std::string_view to_string(errc x) noexcept {
  switch (x) {
    case errc::ok:
      return "ok";
    case errc::invalid_argument:
      return "invalid_argument";
    case errc::not_found:
      return "not_found";
    case errc::conflict:
      return "conflict";
    case errc::payload_too_large:
      return "payload_too_large";
    case errc::storage_failure:
      return "storage_failure";
    case errc::corrupt_data:
      return "corrupt_data";
    case errc::unavailable:
      return "unavailable";
    case errc::internal:
      return "internal";
    case errc::resource_exhausted:
      return "resource_exhausted";
  }
  return "unknown";
}

} // namespace shoal::core
