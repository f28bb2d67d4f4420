#include "kernels/quant.hpp"

#include "kernels/f16.hpp"
#include "kernels/registry.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace shoal::kernels {

namespace {

// ---- scalar references ---------------------------------------------------

/// f32 → int the way ggml's reference quantizers see it on x86: a non-finite
/// value (1/d overflowed) converts to INT_MIN, whose low byte is 0.
inline int trunc_or_zero(float v) noexcept {
  return std::isfinite(v) ? static_cast<int>(v) : 0;
}

void quantize_q8_0_scalar(size_t n, block_q8_0* y, const float* x) noexcept {
  for (size_t b = 0; b < n / qk_legacy; ++b, x += qk_legacy) {
    float amax = 0;
    for (size_t i = 0; i < qk_legacy; ++i)
      amax = std::max(amax, std::fabs(x[i]));
    float d = amax / 127.0f;
    float id = d != 0 ? 1.0f / d : 0.0f;
    y[b].d = fp32_to_fp16(d);
    for (size_t i = 0; i < qk_legacy; ++i)
      y[b].qs[i] = static_cast<int8_t>(trunc_or_zero(std::round(x[i] * id)));
  }
}

void quantize_q4_0_scalar(size_t n, block_q4_0* y, const float* x) noexcept {
  for (size_t b = 0; b < n / qk_legacy; ++b, x += qk_legacy) {
    float amax = 0, m = 0;
    for (size_t i = 0; i < qk_legacy; ++i)
      if (std::fabs(x[i]) > amax) {
        amax = std::fabs(x[i]);
        m = x[i];
      }
    float d = m / -8.0f;
    float id = d != 0 ? 1.0f / d : 0.0f;
    y[b].d = fp32_to_fp16(d);
    for (size_t j = 0; j < qk_legacy / 2; ++j) {
      int lo = std::min(15, static_cast<int>(static_cast<int8_t>(trunc_or_zero(x[j] * id + 8.5f))));
      int hi = std::min(15, static_cast<int>(static_cast<int8_t>(trunc_or_zero(x[j + 16] * id + 8.5f))));
      y[b].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

void dequantize_q8_0_scalar(size_t n, float* y, const block_q8_0* x) noexcept {
  for (size_t b = 0; b < n / qk_legacy; ++b, y += qk_legacy) {
    float d = fp16_to_fp32(x[b].d);
    for (size_t i = 0; i < qk_legacy; ++i)
      y[i] = static_cast<float>(x[b].qs[i]) * d;
  }
}

void dequantize_q4_0_scalar(size_t n, float* y, const block_q4_0* x) noexcept {
  for (size_t b = 0; b < n / qk_legacy; ++b, y += qk_legacy) {
    float d = fp16_to_fp32(x[b].d);
    for (size_t j = 0; j < qk_legacy / 2; ++j) {
      y[j] = static_cast<float>((x[b].qs[j] & 0xF) - 8) * d;
      y[j + 16] = static_cast<float>((x[b].qs[j] >> 4) - 8) * d;
    }
  }
}

/// The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block
/// (ggml get_scale_min_k4): j < 4 in the low 6 bits of bytes j and j+4;
/// j ≥ 4 as 4 low bits in byte j+4 and 2 high bits in the top of bytes j-4 / j.
inline void scale_min_k4(size_t j, const uint8_t* s, int& sc, int& m) noexcept {
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

void dequantize_q4_k_scalar(size_t n, float* y, const block_q4_k* x) noexcept {
  for (size_t b = 0; b < n / qk_k; ++b) {
    float d = fp16_to_fp32(x[b].d), dmin = fp16_to_fp32(x[b].dmin);
    const uint8_t* q = x[b].qs;
    for (size_t j = 0; j < 8; j += 2, q += 32) {
      int sc0, m0, sc1, m1;
      scale_min_k4(j, x[b].scales, sc0, m0);
      scale_min_k4(j + 1, x[b].scales, sc1, m1);
      float d0 = d * static_cast<float>(sc0), o0 = dmin * static_cast<float>(m0);
      float d1 = d * static_cast<float>(sc1), o1 = dmin * static_cast<float>(m1);
      for (size_t l = 0; l < 32; ++l)
        *y++ = d0 * static_cast<float>(q[l] & 0xF) - o0;
      for (size_t l = 0; l < 32; ++l)
        *y++ = d1 * static_cast<float>(q[l] >> 4) - o1;
    }
  }
}

void dequantize_q5_k_scalar(size_t n, float* y, const block_q5_k* x) noexcept {
  for (size_t b = 0; b < n / qk_k; ++b) {
    float d = fp16_to_fp32(x[b].d), dmin = fp16_to_fp32(x[b].dmin);
    const uint8_t* q = x[b].qs;
    for (size_t j = 0; j < 8; j += 2, q += 32) {
      int sc0, m0, sc1, m1;
      scale_min_k4(j, x[b].scales, sc0, m0);
      scale_min_k4(j + 1, x[b].scales, sc1, m1);
      float d0 = d * static_cast<float>(sc0), o0 = dmin * static_cast<float>(m0);
      float d1 = d * static_cast<float>(sc1), o1 = dmin * static_cast<float>(m1);
      // Sub-block j takes its fifth bit from bit j of qh[l].
      for (size_t l = 0; l < 32; ++l)
        *y++ = d0 * static_cast<float>((q[l] & 0xF) | (((x[b].qh[l] >> j) & 1) << 4)) - o0;
      for (size_t l = 0; l < 32; ++l)
        *y++ = d1 * static_cast<float>((q[l] >> 4) | (((x[b].qh[l] >> (j + 1)) & 1) << 4)) - o1;
    }
  }
}

void dequantize_q6_k_scalar(size_t n, float* y, const block_q6_k* x) noexcept {
  for (size_t b = 0; b < n / qk_k; ++b) {
    float d = fp16_to_fp32(x[b].d);
    // Two halves of 128; in each, element l + 32k (k = 0..3, l < 32) takes
    // 4 low bits from ql (k odd: ql[l+32]; k ≥ 2: high nibble) and 2 high
    // bits from qh[l] bits 2k..2k+1, scale index 2k + l/16.
    for (size_t h = 0; h < 2; ++h, y += 128) {
      const uint8_t* ql = x[b].ql + 64 * h;
      const uint8_t* qh = x[b].qh + 32 * h;
      const int8_t* sc = x[b].scales + 8 * h;
      for (size_t k = 0; k < 4; ++k)
        for (size_t l = 0; l < 32; ++l) {
          int lo = (ql[l + 32 * (k & 1)] >> (4 * (k >> 1))) & 0xF;
          int hi = (qh[l] >> (2 * k)) & 3;
          float s = d * static_cast<float>(sc[2 * k + l / 16]);
          y[32 * k + l] = s * static_cast<float>((lo | (hi << 4)) - 32);
        }
    }
  }
}

void quantize_q8_k_scalar(size_t n, block_q8_k* y, const float* x) noexcept {
  for (size_t b = 0; b < n / qk_k; ++b, x += qk_k) {
    float amax = 0, m = 0;
    for (size_t i = 0; i < qk_k; ++i)
      if (std::fabs(x[i]) > amax) {
        amax = std::fabs(x[i]);
        m = x[i];
      }
    float iscale = amax != 0 ? -127.0f / m : 0.0f;
    if (!std::isfinite(iscale) || iscale == 0) {
      std::memset(&y[b], 0, sizeof(block_q8_k));
      continue;
    }
    for (size_t i = 0; i < qk_k; ++i)
      y[b].qs[i] = static_cast<int8_t>(std::min(127L, std::lrint(iscale * x[i])));
    for (size_t j = 0; j < qk_k / 16; ++j) {
      int s = 0;
      for (size_t i = 0; i < 16; ++i)
        s += y[b].qs[16 * j + i];
      y[b].bsums[j] = static_cast<int16_t>(s);
    }
    y[b].d = 1 / iscale;
  }
}

void dequantize_q8_k_scalar(size_t n, float* y, const block_q8_k* x) noexcept {
  for (size_t b = 0; b < n / qk_k; ++b, y += qk_k)
    for (size_t i = 0; i < qk_k; ++i)
      y[i] = x[b].d * static_cast<float>(x[b].qs[i]);
}

} // namespace

void register_quant_kernels() {}

void quantize_q8_0(std::span<const float> x, std::span<block_q8_0> y) noexcept {
  quantize_q8_0_scalar(x.size(), y.data(), x.data());
}

void quantize_q4_0(std::span<const float> x, std::span<block_q4_0> y) noexcept {
  quantize_q4_0_scalar(x.size(), y.data(), x.data());
}

void quantize_q8_k(std::span<const float> x, std::span<block_q8_k> y) noexcept {
  quantize_q8_k_scalar(x.size(), y.data(), x.data());
}

void dequantize_q8_0(std::span<const block_q8_0> x, std::span<float> y) noexcept {
  dequantize_q8_0_scalar(y.size(), y.data(), x.data());
}

void dequantize_q4_0(std::span<const block_q4_0> x, std::span<float> y) noexcept {
  dequantize_q4_0_scalar(y.size(), y.data(), x.data());
}

void dequantize_q8_k(std::span<const block_q8_k> x, std::span<float> y) noexcept {
  dequantize_q8_k_scalar(y.size(), y.data(), x.data());
}

void dequantize_q4_k(std::span<const block_q4_k> x, std::span<float> y) noexcept {
  dequantize_q4_k_scalar(y.size(), y.data(), x.data());
}

void dequantize_q5_k(std::span<const block_q5_k> x, std::span<float> y) noexcept {
  dequantize_q5_k_scalar(y.size(), y.data(), x.data());
}

void dequantize_q6_k(std::span<const block_q6_k> x, std::span<float> y) noexcept {
  dequantize_q6_k_scalar(y.size(), y.data(), x.data());
}

} // namespace shoal::kernels
