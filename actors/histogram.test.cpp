#include "actors/histogram.hpp"

#include <doctest/doctest.h>

using shoal::actors::latency_histogram;

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
