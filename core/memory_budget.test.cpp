#include "core/memory_budget.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

using shoal::core::memory_budget;

TEST_CASE("memory_budget: reservations never exceed the limit, under concurrency too") {
  memory_budget b(1000);
  CHECK(b.try_reserve(memory_budget::use::kv, 600));
  CHECK_FALSE(b.try_reserve(memory_budget::use::adapter, 401));
  CHECK(b.try_reserve(memory_budget::use::adapter, 400));
  CHECK(b.used() == 1000);
  CHECK(b.used(memory_budget::use::kv) == 600);
  b.release(memory_budget::use::kv, 600);
  CHECK(b.used() == 400);
  CHECK_FALSE(b.try_reserve(memory_budget::use::kv, UINT64_MAX));

  memory_budget shared(1 << 20);
  std::atomic<uint64_t> peak{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      std::vector<uint64_t> held;
      for (int i = 0; i < 20000; ++i) {
        uint64_t n = 1 + rng() % 70000;
        if (shared.try_reserve(memory_budget::use::kv, n))
          held.push_back(n);
        uint64_t u = shared.used();
        uint64_t p = peak.load();
        while (u > p && !peak.compare_exchange_weak(p, u)) {
        }
        if (!held.empty() && rng() % 2) {
          shared.release(memory_budget::use::kv, held.back());
          held.pop_back();
        }
      }
      for (auto n : held)
        shared.release(memory_budget::use::kv, n);
    });
  for (auto& t : threads)
    t.join();
  CHECK(peak.load() <= shared.limit());
  CHECK(shared.used() == 0);
}
