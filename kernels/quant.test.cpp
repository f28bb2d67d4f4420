#include "kernels/quant.hpp"

#include "kernels/f16.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

using namespace shoal::kernels;

TEST_CASE("q8_0 and q4_0 round trips stay within their stated bounds") {
  std::mt19937 rng(3);
  std::normal_distribution<float> g(0, 1);
  std::vector<float> x(256), back(256);
  for (float& v : x)
    v = g(rng);
  std::vector<block_q8_0> q8(8);
  std::vector<block_q4_0> q4(8);
  quantize_q8_0(x, q8);
  dequantize_q8_0(q8, back);
  for (size_t b = 0; b < 8; ++b) {
    float amax = 0;
    for (size_t i = 0; i < 32; ++i)
      amax = std::max(amax, std::fabs(x[32 * b + i]));
    for (size_t i = 0; i < 32; ++i)
      CHECK(std::fabs(x[32 * b + i] - back[32 * b + i]) <= amax / 254 + amax * 0x1p-11f);
  }
  quantize_q4_0(x, q4);
  dequantize_q4_0(q4, back);
  for (size_t b = 0; b < 8; ++b) {
    float amax = 0;
    for (size_t i = 0; i < 32; ++i)
      amax = std::max(amax, std::fabs(x[32 * b + i]));
    for (size_t i = 0; i < 32; ++i)
      CHECK(std::fabs(x[32 * b + i] - back[32 * b + i]) <= amax / 8 + amax * 0x1p-11f);
  }
}
