#include "proto/messages.hpp"

#include <cstdio>

namespace shoal::proto {

std::string format_request_id(uint64_t id) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(id));
  return buf;
}

bool parse_request_id(std::string_view text, uint64_t& id) {
  if (text.size() != 16)
    return false;
  uint64_t v = 0;
  for (char c : text) {
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= static_cast<uint64_t>(c - '0');
    else if (c >= 'a' && c <= 'f')
      v |= static_cast<uint64_t>(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      v |= static_cast<uint64_t>(c - 'A' + 10);
    else
      return false;
  }
  id = v;
  return true;
}

} // namespace shoal::proto
