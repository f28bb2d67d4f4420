#pragma once
/// @file Shoal's one error vocabulary: a code, a message for people and a
/// context for programs. Every module returns these at its edges
/// (`result<T>` holds a value or an `error`); proto/error.hpp carries them
/// inside `caf::error` across actors, and node/ maps each code to an HTTP
/// status and an OpenAI error type in one table. No code decides anything by
/// reading `message`: decide on `code`, and name the field, key or file that
/// is wrong in `context`.
///
/// Thread-safety: values; `to_string` is pure.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace shoal::core {

/// Error codes used across modules. The numeric values are stable (they
/// cross actors inside caf::error and are written in witness records).
enum class errc : uint8_t {
  ok = 0,
  invalid_argument = 1,   ///< a request field, config key or argument is malformed or out of range
  not_found = 2,          ///< an id or name names nothing known (e.g. unknown request id)
  conflict = 3,           ///< the request repeats something already done
  payload_too_large = 4,  ///< a body or value exceeds a configured limit
  storage_failure = 5,    ///< LMDB or a file operation failed
  corrupt_data = 6,       ///< stored or loaded bytes (LMDB record, GGUF, archive) do not decode
  unavailable = 7,        ///< the component is shutting down, overloaded or did not answer in time
  internal = 8,           ///< a bug: an invariant did not hold
  resource_exhausted = 9, ///< the memory budget cannot hold what was asked (KV pages, adapters)
};

/// Text of a code, e.g. "invalid_argument". Thread-safe.
std::string_view to_string(errc x) noexcept;

/// An error value: what kind (`code`), what to tell a person (`message`, one
/// line, no trailing period) and what it is about, for programs (`context`:
/// the request parameter, config key, file or tensor at fault; may be empty).
struct error {
  errc code = errc::ok;
  std::string message;
  std::string context;

  error() = default;
  error(errc c, std::string msg, std::string ctx = {})
    : code(c), message(std::move(msg)), context(std::move(ctx)) {}

  /// True when this is an error (code != ok).
  explicit operator bool() const noexcept { return code != errc::ok; }
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

} // namespace shoal::core

namespace shoal {
// The vocabulary is used by every module: its names are at the top level too.
using core::errc;
} // namespace shoal
