#include "core/histogram.hpp"

#include <doctest/doctest.h>

using shoal::core::latency_histogram;

TEST_CASE("histogram percentiles are within one bucket (9%) above the truth") {
  latency_histogram h;
  for (uint64_t i = 1; i <= 1000; ++i)
    h.observe(i * 1000); // 1 µs .. 1 ms
  CHECK(h.count() == 1000);
  CHECK(h.quantile(0.5) >= 500'000);
  CHECK(h.quantile(0.5) <= 500'000 * 1.091);
  CHECK(h.quantile(0.99) >= 990'000);
  CHECK(h.quantile(0.99) <= 990'000 * 1.091);
  CHECK(h.cumulative_le(1e9) == 1000);
  CHECK(h.cumulative_le(50) == 0);
  latency_histogram empty;
  CHECK(empty.quantile(0.99) == 0);
}

TEST_CASE("since() gives the distribution of the observations after a snapshot") {
  latency_histogram h;
  for (int i = 0; i < 100; ++i)
    h.observe(1'000'000'000); // 1 s, before the snapshot
  auto snap = h;
  for (int i = 0; i < 100; ++i)
    h.observe(1'000'000); // 1 ms, after it
  auto d = h.since(snap);
  CHECK(d.count() == 100);
  CHECK(d.quantile(0.99) <= 1.1e6);
  CHECK(d.quantile(0.99) >= 1e6);
  CHECK(h.quantile(0.99) >= 1e9); // the whole history still has the slow ones
}
