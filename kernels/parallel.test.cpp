#include "kernels/parallel.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

using namespace shoal::kernels;
using namespace std::chrono_literals;

namespace {

/// Runs `n` tasks on `pool` and checks each ran exactly once.
void check_each_once(thread_pool& pool, size_t n) {
  auto hits = std::make_unique<std::atomic<int>[]>(n);
  parallel_for(&pool, n, [&](size_t i) { hits[i].fetch_add(1, std::memory_order_relaxed); });
  size_t wrong = 0;
  for (size_t i = 0; i < n; ++i)
    wrong += hits[i].load() != 1;
  CHECK(wrong == 0);
}

} // namespace

TEST_CASE("worker_pool runs every task exactly once") {
  for (size_t threads : {1u, 2u, 3u, 4u}) {
    CAPTURE(threads);
    worker_pool pool(threads);
    CHECK(pool.size() == threads);
    for (size_t n : {0u, 1u, 2u, 3u, 7u, 64u, 1000u})
      check_each_once(pool, n);
    // Back-to-back jobs: the hand-off must not lose or repeat tasks when
    // workers are still spinning from the previous job.
    for (int rep = 0; rep < 2000; ++rep)
      check_each_once(pool, 1 + rep % 9);
  }
}

TEST_CASE("worker_pool: sleeping workers wake for the next job") {
  worker_pool pool(3, 0us); // no spinning: every job wakes sleeping workers
  for (int rep = 0; rep < 200; ++rep)
    check_each_once(pool, 16);
  worker_pool spinning(2, 50us);
  check_each_once(spinning, 16);
  std::this_thread::sleep_for(2ms); // longer than the spin window: workers sleep
  check_each_once(spinning, 16);
}

TEST_CASE("worker_pool: tasks' writes are visible after run returns") {
  worker_pool pool(4);
  std::vector<size_t> out(4096);
  for (int rep = 0; rep < 50; ++rep) {
    parallel_for(&pool, 64, [&](size_t t) {
      auto r = split_range(out.size(), 64, t);
      for (size_t i = r.begin; i < r.end; ++i)
        out[i] = i * 3 + static_cast<size_t>(rep);
    });
    size_t wrong = 0;
    for (size_t i = 0; i < out.size(); ++i)
      wrong += out[i] != i * 3 + static_cast<size_t>(rep);
    CHECK(wrong == 0);
  }
}

TEST_CASE("worker_pool: nested run on the same pool runs inline, on another pool in parallel") {
  worker_pool outer(2), inner(2);
  std::atomic<int> count{0};
  parallel_for(&outer, 8, [&](size_t) {
    // Same pool: busy, so the inner job runs on this thread.
    parallel_for(&outer, 5, [&](size_t) { count.fetch_add(1); });
    // Another pool: fine (two outer tasks may race for it; the loser runs inline).
    parallel_for(&inner, 3, [&](size_t) { count.fetch_add(100); });
  });
  CHECK(count.load() == 8 * (5 + 300));
}

TEST_CASE("worker_pool: concurrent callers from two threads each get every task once") {
  worker_pool pool(3);
  std::atomic<long> sum{0};
  auto caller = [&](long base) {
    for (int rep = 0; rep < 300; ++rep)
      parallel_for(&pool, 10, [&](size_t i) { sum.fetch_add(base + static_cast<long>(i)); });
  };
  std::thread a(caller, 0L), b(caller, 1000L);
  a.join();
  b.join();
  CHECK(sum.load() == 300 * (45 + (10 * 1000 + 45)));
}

TEST_CASE("serial_pool and a null pool run tasks in order on the caller") {
  serial_pool serial;
  CHECK(serial.size() == 1);
  std::vector<size_t> order;
  parallel_for(&serial, 5, [&](size_t i) { order.push_back(i); });
  parallel_for(nullptr, 3, [&](size_t i) { order.push_back(10 + i); });
  CHECK(order == std::vector<size_t>{0, 1, 2, 3, 4, 10, 11, 12});
  worker_pool one(1);
  CHECK(one.size() == 1);
  auto id = std::this_thread::get_id();
  bool same = true;
  parallel_for(&one, 4, [&](size_t) { same = same && std::this_thread::get_id() == id; });
  CHECK(same);
}

TEST_CASE("split_range covers 0..n with aligned, ordered, disjoint parts") {
  for (size_t n : {0u, 1u, 5u, 64u, 100u, 4096u, 4097u})
    for (size_t chunks : {1u, 2u, 3u, 8u, 13u})
      for (size_t align : {1u, 4u, 16u}) {
        CAPTURE(n);
        CAPTURE(chunks);
        CAPTURE(align);
        size_t at = 0;
        for (size_t i = 0; i < chunks; ++i) {
          auto r = split_range(n, chunks, i, align);
          CHECK(r.begin == at);
          CHECK(r.end >= r.begin);
          CHECK((r.end % align == 0 || r.end == n));
          at = r.end;
        }
        CHECK(at == n);
      }
  CHECK(chunk_count(4096, 2, 16) == 8);
  CHECK(chunk_count(40, 2, 16) == 2);
  CHECK(chunk_count(3, 8, 16) == 1);
}
