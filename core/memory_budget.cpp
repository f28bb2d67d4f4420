#include "core/memory_budget.hpp"

namespace shoal::core {

bool memory_budget::try_reserve(use u, uint64_t bytes) noexcept {
  uint64_t cur = used_.load(std::memory_order_relaxed);
  do {
    if (bytes > limit_ || cur > limit_ - bytes)
      return false;
  } while (!used_.compare_exchange_weak(cur, cur + bytes, std::memory_order_relaxed));
  by_use_[static_cast<size_t>(u)].fetch_add(bytes, std::memory_order_relaxed);
  return true;
}

void memory_budget::release(use u, uint64_t bytes) noexcept {
  by_use_[static_cast<size_t>(u)].fetch_sub(bytes, std::memory_order_relaxed);
  used_.fetch_sub(bytes, std::memory_order_relaxed);
}

} // namespace shoal::core
