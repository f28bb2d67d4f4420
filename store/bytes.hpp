#pragma once
/// @file Little-endian field encoding for the store's small binary records
/// (sessions, spilled KV pages): append a field, or read one off the front
/// of a view (false when too few bytes are left). x86-64 and aarch64 are
/// little-endian, so fields are copied as they are in memory.

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

namespace shoal::store::bytes {

template <class T>
void put(std::string& out, T v) {
  static_assert(std::is_trivially_copyable_v<T>);
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

template <class T>
bool get(std::string_view& in, T& v) {
  if (in.size() < sizeof(T))
    return false;
  std::memcpy(&v, in.data(), sizeof(T));
  in.remove_prefix(sizeof(T));
  return true;
}

/// A string as u32 length + bytes.
inline void put_str(std::string& out, std::string_view s) {
  put<uint32_t>(out, static_cast<uint32_t>(s.size()));
  out.append(s);
}

inline bool get_str(std::string_view& in, std::string& s) {
  uint32_t n = 0;
  if (!get(in, n) || in.size() < n)
    return false;
  s.assign(in.data(), n);
  in.remove_prefix(n);
  return true;
}

} // namespace shoal::store::bytes
