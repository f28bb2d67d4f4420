#include "node/validate.hpp"

#include <fmt/format.h>

#include <cmath>

namespace shoal::node {

using json = nlohmann::json;

core::result<json> parse_json_object(std::string_view body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded())
    return core::error{errc::invalid_argument, "body is not valid JSON", "body"};
  if (!j.is_object())
    return core::error{errc::invalid_argument, "body must be a JSON object", "body"};
  return j;
}

core::error read_optional_string(const json& body, const char* field, size_t max_bytes,
                                 std::string& out) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null())
    return {};
  if (!it->is_string())
    return {errc::invalid_argument, std::string(field) + " must be a string", field};
  auto s = it->get<std::string>();
  if (s.size() > max_bytes)
    return {errc::invalid_argument,
            std::string(field) + " is longer than " + std::to_string(max_bytes) + " bytes", field};
  out = std::move(s);
  return {};
}

core::error read_optional_number(const json& body, const char* field, double lo, double hi,
                                 bool lo_open, double& out) {
  auto v = body.find(field);
  if (v == body.end() || v->is_null())
    return {};
  const double x = v->is_number() ? v->get<double>() : NAN;
  if (!(lo_open ? x > lo : x >= lo) || !(x <= hi))
    return {errc::invalid_argument,
            fmt::format("{} must be a number in {}{}, {}]", field, lo_open ? "(" : "[", lo, hi),
            field};
  out = x;
  return {};
}

} // namespace shoal::node
