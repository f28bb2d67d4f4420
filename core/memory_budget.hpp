#pragma once
/// @file The node's one memory budget: every consumer of a node's memory (the
/// KV pages of all tiers, LoRA adapters, router weights and pattern
/// statistics) reserves its bytes here before allocating them, so their sum
/// never exceeds `memory.budget_mb`. Thread-safe and lock-free.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace shoal::core {

/// One byte budget for every consumer of a node's memory (KV pages of all
/// tiers, LoRA adapters, router weights). `try_reserve` never lets the sum
/// exceed the limit. Thread-safe and lock-free.
class memory_budget {
public:
  enum class use : uint8_t { kv = 0, adapter = 1, router = 2 };
  static constexpr size_t n_uses = 3;

  /// @param limit_bytes the budget (0 = nothing may be reserved).
  explicit memory_budget(uint64_t limit_bytes) noexcept : limit_(limit_bytes) {}

  /// Reserves `bytes` for `u` if the total stays within the limit.
  bool try_reserve(use u, uint64_t bytes) noexcept;
  /// Returns bytes reserved earlier. @pre at most what `u` holds.
  void release(use u, uint64_t bytes) noexcept;

  uint64_t limit() const noexcept { return limit_; }
  uint64_t used() const noexcept { return used_.load(std::memory_order_relaxed); }
  uint64_t used(use u) const noexcept {
    return by_use_[static_cast<size_t>(u)].load(std::memory_order_relaxed);
  }

private:
  const uint64_t limit_;
  std::atomic<uint64_t> used_{0};
  std::array<std::atomic<uint64_t>, n_uses> by_use_{};
};

} // namespace shoal::core
