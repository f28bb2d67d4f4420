#pragma once
/// @file IEEE 754 half (binary16) and bfloat16 conversions in portable C++
/// (no F16C needed), bit-exact with the hardware: f32 -> f16 and f32 -> bf16
/// round to nearest, ties to even; NaN stays NaN (quiet); overflow gives ±Inf;
/// f16 subnormals are handled both ways. ggml stores every f16 scale and F16
/// tensor in this format (`ggml_fp16_t`), BF16 tensors as `ggml_bf16_t`.
/// Pure inline functions; thread-safe.

#include <bit>
#include <cstdint>

namespace shoal::kernels {

/// binary16 bits -> f32 (exact).
inline float fp16_to_fp32(uint16_t h) noexcept {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t man = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (man << 13) | (man != 0 ? 0x00400000u : 0u);
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {
    // Subnormal: value = man * 2^-24; normalise.
    int shift = std::countl_zero(man) - 21; // leading zeros within 10 bits, +1
    man = (man << shift) & 0x3FFu;
    bits = sign | (static_cast<uint32_t>(113 - shift) << 23) | (man << 13);
  }
  return std::bit_cast<float>(bits);
}

/// f32 -> binary16 bits, round to nearest even.
inline uint16_t fp32_to_fp16(float f) noexcept {
  uint32_t x = std::bit_cast<uint32_t>(f);
  uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7FFFFFFFu;
  if (ax >= 0x7F800000u) // Inf or NaN
    return sign | 0x7C00u | (ax > 0x7F800000u ? 0x200u | ((ax >> 13) & 0x3FFu) : 0u);
  if (ax >= 0x477FF000u) // rounds to >= 65520: overflow
    return sign | 0x7C00u;
  if (ax < 0x38800000u) { // below the smallest normal half (2^-14)
    if (ax < 0x33000000u) // < 2^-25: rounds to zero (2^-25 itself ties to 0)
      return sign;
    uint32_t exp = ax >> 23;
    uint32_t man = (ax & 0x7FFFFFu) | 0x800000u;
    uint32_t shift = 126 - exp; // 14..24 → value in units of 2^-24
    uint32_t q = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u)))
      ++q;
    return sign | static_cast<uint16_t>(q);
  }
  uint32_t q = ax - 0x38000000u; // rebias exponent 127 -> 15
  uint32_t rem = q & 0x1FFFu;
  q >>= 13;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1u)))
    ++q;
  return sign | static_cast<uint16_t>(q);
}

/// bfloat16 bits -> f32 (exact).
inline float bf16_to_fp32(uint16_t h) noexcept {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

/// f32 -> bfloat16 bits, round to nearest even; NaN stays NaN (as ggml's
/// ggml_compute_fp32_to_bf16).
inline uint16_t fp32_to_bf16(float f) noexcept {
  uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u)
    return static_cast<uint16_t>((x >> 16) | 64u);
  return static_cast<uint16_t>((x + (0x7FFFu + ((x >> 16) & 1u))) >> 16);
}

} // namespace shoal::kernels
