// A kernel pack for the tests (node/kernel_packs.test.cpp): one variant of
// dot_f32 with an 8-way unrolled scalar loop. Built as a shared module
// (shoal_test_pack); the test signs it with a key it makes, then checks that
// the signed pack loads and that a tampered or unsigned copy is refused.
#include "kernels/pack.hpp"

#include <cstddef>

namespace {

float dot_unrolled8(const float* a, const float* b, size_t n) noexcept {
  float s[8] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (size_t j = 0; j < 8; ++j)
      s[j] += a[i + j] * b[i + j];
  float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < n; ++i)
    r += a[i] * b[i];
  return r;
}

const shoal_pack_variant variants[] = {
  {"dot_f32", "float(const float*,const float*,size_t)", "unrolled8", 0,
   reinterpret_cast<void (*)(void)>(&dot_unrolled8)},
};

const shoal_pack pack = {shoal::kernels::shoal_pack_abi, "testpack", 1, variants};

} // namespace

extern "C" __attribute__((visibility("default"))) const shoal_pack* shoal_kernel_pack_v1() {
  return &pack;
}
