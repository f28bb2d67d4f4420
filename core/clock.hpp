#pragma once
/// @file Clocks: UTC wall time for records and timers, steady time for latency measurements. Thread-safe (pure reads of the system clocks).

#include <chrono>
#include <cstdint>

namespace shoal::core {

/// UTC milliseconds since the Unix epoch (system clock).
inline int64_t utc_now_ms() noexcept {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// UTC microseconds since the Unix epoch (system clock).
inline int64_t utc_now_us() noexcept {
  return std::chrono::duration_cast<std::chrono::microseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// Monotonic nanoseconds (steady clock) for latency measurements.
inline int64_t steady_now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           std::chrono::steady_clock::now().time_since_epoch())
    .count();
}

} // namespace shoal::core
