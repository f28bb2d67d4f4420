#include "proto/error.hpp"

#include <caf/make_message.hpp>
#include <caf/message.hpp>

namespace shoal {

caf::error make_error(errc code, std::string message, std::string context) {
  return caf::error{static_cast<uint8_t>(code), errc_category::value,
                    caf::make_message(std::move(message), std::move(context))};
}

caf::error make_error(const core::error& e) {
  return make_error(e.code, e.message, e.context);
}

core::error view(const caf::error& err) {
  if (err.category() != errc_category::value)
    return {errc::internal, caf::to_string(err)};
  auto code = static_cast<errc>(err.code());
  std::string msg, ctx;
  const auto& m = err.context();
  if (m.match_elements<std::string, std::string>()) {
    msg = m.get_as<std::string>(0);
    ctx = m.get_as<std::string>(1);
  } else if (m.match_elements<std::string>()) {
    msg = m.get_as<std::string>(0);
  }
  if (msg.empty())
    msg = std::string{core::to_string(code)};
  return {code, std::move(msg), std::move(ctx)};
}

} // namespace shoal
