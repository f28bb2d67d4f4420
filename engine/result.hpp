#pragma once
/// @file The engine's error values: `result<T>` holds a T or an `error` with a
/// one-line message naming the problem (file, key, tensor, field). Returned
/// at every edge where input comes from outside (files, requests); the engine
/// never asserts on such input. Not thread-safe beyond what T is.

#include <string>
#include <utility>
#include <variant>

namespace shoal::engine {

/// What went wrong, as text for a user (no trailing period).
struct error {
  std::string message;
};

/// A value or an error (like C++23 std::expected, which GCC 12's C++20 lacks).
template <class T>
class result {
public:
  result(T value) : v_(std::move(value)) {}
  result(error e) : v_(std::move(e)) {}

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  /// @pre ok()
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  T& operator*() & { return std::get<0>(v_); }
  const T& operator*() const& { return std::get<0>(v_); }

  /// @pre !ok()
  const error& err() const& { return std::get<1>(v_); }
  error&& err() && { return std::get<1>(std::move(v_)); }

private:
  std::variant<T, error> v_;
};

} // namespace shoal::engine
