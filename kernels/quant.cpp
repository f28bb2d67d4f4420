#include "kernels/quant.hpp"

#include "kernels/f16.hpp"
#include "kernels/simd.hpp"

#include <algorithm>
#include <cmath>
#include <bit>
#include <cstring>
#include <random>
#include <vector>

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
    // (int8_t)(x*id + 8.5) as ggml writes it: the value is in [0, 16] here.
    auto nibble = [id](float v) { return std::min(15, trunc_or_zero(v * id + 8.5f)); };
    for (size_t j = 0; j < qk_legacy / 2; ++j) {
      int lo = nibble(x[j]), hi = nibble(x[j + 16]);
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

/// Bit 4 of element l of sub-block j: none in Q4_K; bit j of qh[l] in Q5_K.
inline int fifth_bit(const block_q4_k&, size_t, size_t) noexcept {
  return 0;
}
inline int fifth_bit(const block_q5_k& b, size_t l, size_t j) noexcept {
  return ((b.qh[l] >> j) & 1) << 4;
}

/// Q4_K or Q5_K: sub-blocks 2g and 2g+1 share the 32 bytes qs[32g..]: low
/// nibbles, then high nibbles; y = (d·sc)·q - dmin·m.
template <class Block>
void dequantize_k_min_scalar(size_t n, float* y, const Block* x) noexcept {
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
        *y++ = d0 * static_cast<float>((q[l] & 0xF) | fifth_bit(x[b], l, j)) - o0;
      for (size_t l = 0; l < 32; ++l)
        *y++ = d1 * static_cast<float>((q[l] >> 4) | fifth_bit(x[b], l, j + 1)) - o1;
    }
  }
}

void dequantize_q4_k_scalar(size_t n, float* y, const block_q4_k* x) noexcept {
  dequantize_k_min_scalar(n, y, x);
}

void dequantize_q5_k_scalar(size_t n, float* y, const block_q5_k* x) noexcept {
  dequantize_k_min_scalar(n, y, x);
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
    if (amax == 0 || !std::isfinite(iscale)) {
      // ggml: d = 0 and q = 0 for a zero block; when iscale overflows, every
      // q converts to 0 on x86 and d = 1/iscale is a signed zero.
      std::memset(&y[b], 0, sizeof(block_q8_k));
      y[b].d = amax != 0 ? 1 / iscale : 0.0f;
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

void convert_f32_to_f16_scalar(size_t n, uint16_t* y, const float* x) noexcept {
  for (size_t i = 0; i < n; ++i)
    y[i] = fp32_to_fp16(x[i]);
}

void convert_f16_to_f32_scalar(size_t n, float* y, const uint16_t* x) noexcept {
  for (size_t i = 0; i < n; ++i)
    y[i] = fp16_to_fp32(x[i]);
}

void convert_f32_to_bf16_scalar(size_t n, uint16_t* y, const float* x) noexcept {
  for (size_t i = 0; i < n; ++i)
    y[i] = fp32_to_bf16(x[i]);
}

void convert_bf16_to_f32_scalar(size_t n, float* y, const uint16_t* x) noexcept {
  for (size_t i = 0; i < n; ++i)
    y[i] = bf16_to_fp32(x[i]);
}

// ---- simple K-quant quantizers (scalar only) ---------------------------------

/// The smallest f16 ≥ v, for finite v ≥ 0 (f16.hpp rounds to nearest; one
/// step up if that fell below: for positive halves the next bit pattern is
/// the next larger value).
uint16_t fp16_ceil(float v) noexcept {
  uint16_t h = fp32_to_fp16(v);
  if (fp16_to_fp32(h) < v)
    ++h;
  return h;
}

/// ceil(a/b) as an integer in [0, hi]; 0 when b is 0.
int ceil_div(float a, float b, int hi) noexcept {
  return b > 0 ? std::clamp(static_cast<int>(std::ceil(a / b)), 0, hi) : 0;
}

/// One Q4_K/Q5_K super-block by min/max per 32-element sub-block: levels =
/// 15 or 31. Writes d, dmin (f16 bits), 6-bit sc[8] and m[8], q[256] in
/// [0, levels].
void quantize_min_max(const float* x, int levels, uint16_t& d, uint16_t& dmin, uint8_t* sc,
                      uint8_t* m, uint8_t* q) noexcept {
  float lo[8], hi[8], off[8], step[8];
  float max_neg = 0;
  for (size_t j = 0; j < 8; ++j) {
    lo[j] = 0;
    hi[j] = x[32 * j];
    for (size_t i = 32 * j; i < 32 * j + 32; ++i) {
      lo[j] = std::min(lo[j], x[i]);
      hi[j] = std::max(hi[j], x[i]);
    }
    max_neg = std::max(max_neg, -lo[j]);
  }
  dmin = fp16_ceil(max_neg / 63);
  const float dminf = fp16_to_fp32(dmin);
  float max_step = 0;
  for (size_t j = 0; j < 8; ++j) {
    m[j] = static_cast<uint8_t>(ceil_div(-lo[j], dminf, 63));
    off[j] = dminf * static_cast<float>(m[j]); // as dequantization computes it
    step[j] = std::max(0.0f, hi[j] + off[j]) / static_cast<float>(levels);
    max_step = std::max(max_step, step[j]);
  }
  d = fp16_ceil(max_step / 63);
  const float df = fp16_to_fp32(d);
  for (size_t j = 0; j < 8; ++j) {
    sc[j] = static_cast<uint8_t>(ceil_div(step[j], df, 63));
    float s = df * static_cast<float>(sc[j]);
    for (size_t i = 32 * j; i < 32 * j + 32; ++i)
      q[i] = s > 0 ? static_cast<uint8_t>(
               std::clamp(std::lround((x[i] + off[j]) / s), 0L, static_cast<long>(levels)))
                   : 0;
  }
}

/// Packs 6-bit sc[8], m[8] the way scale_min_k4 unpacks them.
void pack_scale_min_k4(const uint8_t* sc, const uint8_t* m, uint8_t* s) noexcept {
  for (size_t j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = static_cast<uint8_t>(m[j] | ((m[j + 4] >> 4) << 6));
    s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
  }
}

} // namespace

// ---- SIMD bodies, once per ISA ------------------------------------------
#if defined(__x86_64__)
SHOAL_BEGIN_AVX2
namespace avx2 {
/// ops_avx2 plus 8 int32 lanes, rounding and byte packing.
struct qops : ops_avx2 {
  using vi = __m256i;
  static vf abs(vf v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }
  static vf max(vf a, vf b) { return _mm256_max_ps(a, b); }
  static float hmax(vf v) {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
  }
  /// Bit i set where a[i] == b[i].
  static uint32_t eq_mask(vf a, vf b) {
    return static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_EQ_OQ)));
  }
  /// roundf per lane (half away from zero): trunc, then ±1 where the
  /// (exact) fraction is ≥ 0.5 in magnitude.
  static vf round_away(vf v) {
    vf t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    vf ge = _mm256_cmp_ps(abs(_mm256_sub_ps(v, t)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    vf one = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(v, _mm256_set1_ps(-0.0f)));
    return _mm256_add_ps(t, _mm256_and_ps(ge, one));
  }
  static vi trunc_i(vf v) { return _mm256_cvttps_epi32(v); }
  /// Round to nearest even (the default MXCSR mode).
  static vi round_i(vf v) { return _mm256_cvtps_epi32(v); }
  static vi min_i(vi a, int b) { return _mm256_min_epi32(a, _mm256_set1_epi32(b)); }
  static vi or_shl4(vi lo, vi hi) { return _mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)); }
  static vi zero_i() { return _mm256_setzero_si256(); }
  static vi add_i(vi a, vi b) { return _mm256_add_epi32(a, b); }
  static int hsum_i(vi v) {
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(1, 0, 3, 2)));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(h);
  }
  /// Stores the low byte of each lane (8 bytes).
  static void store_i8(int8_t* p, vi v) {
    const __m256i pick =
      _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1,
                       -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    __m256i b = _mm256_shuffle_epi8(v, pick);
    __m128i r = _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), r);
  }
  static uint16_t to_f16(float f) { return static_cast<uint16_t>(_cvtss_sh(f, 0)); }
  static void store_f16(uint16_t* p, vf v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
  static vf load_bf16(const uint16_t* p) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  /// fp32_to_bf16 per lane: round to nearest even, NaN → (bits >> 16) | 64.
  static void store_bf16(uint16_t* p, vf v) {
    __m256i x = _mm256_castps_si256(v);
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7FFFFFFF)),
                                     _mm256_set1_epi32(0x7F800000));
    __m256i hi = _mm256_srli_epi32(x, 16);
    __m256i bias =
      _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), _mm256_and_si256(hi, _mm256_set1_epi32(1)));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(x, bias), 16);
    r = _mm256_blendv_epi8(r, _mm256_or_si256(hi, _mm256_set1_epi32(64)), nan);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)));
  }
  /// y[0..16) = q[i] * s for 16 signed bytes.
  static void scale_i8x16(float* y, __m128i q, float s) {
    vf vs = set1(s);
    store(y, mul(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), vs));
    store(y + 8, mul(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8))), vs));
  }
  /// y[0..16) = s * q[i] - o for 16 unsigned bytes.
  static void scale_u8x16_sub(float* y, __m128i q, float s, float o) {
    vf vs = set1(s), vo = set1(o);
    store(y, sub(mul(vs, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q))), vo));
    store(y + 8, sub(mul(vs, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(q, 8)))), vo));
  }
};
using S = qops;
#include "kernels/quant_simd.inc"
} // namespace avx2
SHOAL_END_TARGET

SHOAL_BEGIN_AVX512
namespace avx512 {
/// ops_avx512 plus 16 int32 lanes, rounding and byte packing (the integer
/// bit unpacking in quant_simd.inc stays 256-bit; conversion, scaling and
/// stores are 16 lanes wide).
struct qops : ops_avx512 {
  using vi = __m512i;
  static vf abs(vf v) { return _mm512_abs_ps(v); }
  static vf max(vf a, vf b) { return _mm512_max_ps(a, b); }
  static float hmax(vf v) { return _mm512_reduce_max_ps(v); }
  static uint32_t eq_mask(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
  static vf round_away(vf v) {
    vf t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __mmask16 ge = _mm512_cmp_ps_mask(abs(_mm512_sub_ps(v, t)), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    vf one = _mm512_or_ps(_mm512_set1_ps(1.0f), _mm512_and_ps(v, _mm512_set1_ps(-0.0f)));
    return _mm512_mask_add_ps(t, ge, t, one);
  }
  static vi trunc_i(vf v) { return _mm512_cvttps_epi32(v); }
  static vi round_i(vf v) { return _mm512_cvtps_epi32(v); }
  static vi min_i(vi a, int b) { return _mm512_min_epi32(a, _mm512_set1_epi32(b)); }
  static vi or_shl4(vi lo, vi hi) { return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 4)); }
  static vi zero_i() { return _mm512_setzero_si512(); }
  static vi add_i(vi a, vi b) { return _mm512_add_epi32(a, b); }
  static int hsum_i(vi v) { return _mm512_reduce_add_epi32(v); }
  static void store_i8(int8_t* p, vi v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(v));
  }
  static uint16_t to_f16(float f) { return static_cast<uint16_t>(_cvtss_sh(f, 0)); }
  static void store_f16(uint16_t* p, vf v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
  static vf load_bf16(const uint16_t* p) {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static void store_bf16(uint16_t* p, vf v) {
    __m512i x = _mm512_castps_si512(v);
    __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(x, _mm512_set1_epi32(0x7FFFFFFF)),
                                            _mm512_set1_epi32(0x7F800000));
    __m512i hi = _mm512_srli_epi32(x, 16);
    __m512i bias =
      _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), _mm512_and_si512(hi, _mm512_set1_epi32(1)));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(x, bias), 16);
    r = _mm512_mask_blend_epi32(nan, r, _mm512_or_si512(hi, _mm512_set1_epi32(64)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
  }
  static void scale_i8x16(float* y, __m128i q, float s) {
    store(y, mul(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), set1(s)));
  }
  static void scale_u8x16_sub(float* y, __m128i q, float s, float o) {
    store(y, sub(mul(set1(s), _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q))), set1(o)));
  }
};
using S = qops;
#include "kernels/quant_simd.inc"
} // namespace avx512
SHOAL_END_TARGET
#endif

namespace {

/// One 4096-element row in every format, for `registry::tune`.
struct bench_row {
  static constexpr size_t n = 4096;
  std::vector<float> x, y;
  std::vector<uint16_t> h;
  std::vector<block_q8_0> q8_0;
  std::vector<block_q4_0> q4_0;
  std::vector<block_q8_k> q8_k;
  std::vector<block_q4_k> q4_k;
  std::vector<block_q5_k> q5_k;
  std::vector<block_q6_k> q6_k;
  bench_row()
    : x(n), y(n), h(n), q8_0(n / qk_legacy), q4_0(n / qk_legacy), q8_k(n / qk_k), q4_k(n / qk_k),
      q5_k(n / qk_k), q6_k(n / qk_k) {
    std::mt19937 rng(1);
    std::normal_distribution<float> g(0, 1);
    for (float& v : x)
      v = g(rng);
    convert_f32_to_f16_scalar(n, h.data(), x.data());
    quantize_q8_0_scalar(n, q8_0.data(), x.data());
    quantize_q4_0_scalar(n, q4_0.data(), x.data());
    quantize_q8_k_scalar(n, q8_k.data(), x.data());
    quantize_q4_k(x, q4_k);
    quantize_q5_k(x, q5_k);
    quantize_q6_k(x, q6_k);
  }
};

bench_row& row() {
  static bench_row r;
  return r;
}

template <class T>
void bench_keep(const T* p) {
  asm volatile("" : : "g"(p) : "memory");
}

/// ns per call of a quantizer `f(n, blocks, x)` on the bench row.
template <class Fn, class Block>
double bench_quantize(Fn* f, std::vector<Block>& out) {
  auto& r = row();
  return bench_ns([&] {
    f(r.n, out.data(), r.x.data());
    bench_keep(out.data());
  });
}

/// ns per call of a dequantizer / converter `f(n, y, src)` on the bench row.
template <class Fn, class Src>
double bench_to_f32(Fn* f, const Src* src) {
  auto& r = row();
  return bench_ns([&] {
    f(r.n, r.y.data(), src);
    bench_keep(r.y.data());
  });
}

} // namespace

/// Defines `const kernel<T>& NAME_kernel()`: variants NAME_scalar (the
/// reference above), avx2::NAME and avx512::NAME; BENCH (an expression of the
/// variant `f`) gives its ns per call on the 4096-element bench row.
#define SHOAL_QUANT_KERNEL(T, NAME, SIG, BENCH)                                                    \
  const kernel<T>& NAME##_kernel() {                                                               \
    static const kernel<T> k{                                                                      \
      #NAME, SIG, {SHOAL_VARIANTS(NAME##_scalar, NAME)}, [](T* f) { return BENCH; }};              \
    return k;                                                                                      \
  }

SHOAL_QUANT_KERNEL(quantize_q8_0_t, quantize_q8_0, "void(size_t,block_q8_0*,const float*)",
                   bench_quantize(f, row().q8_0))
SHOAL_QUANT_KERNEL(quantize_q4_0_t, quantize_q4_0, "void(size_t,block_q4_0*,const float*)",
                   bench_quantize(f, row().q4_0))
SHOAL_QUANT_KERNEL(quantize_q8_k_t, quantize_q8_k, "void(size_t,block_q8_k*,const float*)",
                   bench_quantize(f, row().q8_k))
SHOAL_QUANT_KERNEL(dequantize_q8_0_t, dequantize_q8_0, "void(size_t,float*,const block_q8_0*)",
                   bench_to_f32(f, row().q8_0.data()))
SHOAL_QUANT_KERNEL(dequantize_q4_0_t, dequantize_q4_0, "void(size_t,float*,const block_q4_0*)",
                   bench_to_f32(f, row().q4_0.data()))
SHOAL_QUANT_KERNEL(dequantize_q8_k_t, dequantize_q8_k, "void(size_t,float*,const block_q8_k*)",
                   bench_to_f32(f, row().q8_k.data()))
SHOAL_QUANT_KERNEL(dequantize_q4_k_t, dequantize_q4_k, "void(size_t,float*,const block_q4_k*)",
                   bench_to_f32(f, row().q4_k.data()))
SHOAL_QUANT_KERNEL(dequantize_q5_k_t, dequantize_q5_k, "void(size_t,float*,const block_q5_k*)",
                   bench_to_f32(f, row().q5_k.data()))
SHOAL_QUANT_KERNEL(dequantize_q6_k_t, dequantize_q6_k, "void(size_t,float*,const block_q6_k*)",
                   bench_to_f32(f, row().q6_k.data()))
SHOAL_QUANT_KERNEL(convert_to_16_t, convert_f32_to_f16, "void(size_t,uint16_t*,const float*)",
                   bench_quantize(f, row().h))
SHOAL_QUANT_KERNEL(convert_from_16_t, convert_f16_to_f32, "void(size_t,float*,const uint16_t*)",
                   bench_to_f32(f, row().h.data()))
SHOAL_QUANT_KERNEL(convert_to_16_t, convert_f32_to_bf16, "void(size_t,uint16_t*,const float*)",
                   bench_quantize(f, row().h))
SHOAL_QUANT_KERNEL(convert_from_16_t, convert_bf16_to_f32, "void(size_t,float*,const uint16_t*)",
                   bench_to_f32(f, row().h.data()))
#undef SHOAL_QUANT_KERNEL

void register_quant_kernels() {
  quantize_q8_0_kernel();
  quantize_q4_0_kernel();
  quantize_q8_k_kernel();
  dequantize_q8_0_kernel();
  dequantize_q4_0_kernel();
  dequantize_q8_k_kernel();
  dequantize_q4_k_kernel();
  dequantize_q5_k_kernel();
  dequantize_q6_k_kernel();
  convert_f32_to_f16_kernel();
  convert_f16_to_f32_kernel();
  convert_f32_to_bf16_kernel();
  convert_bf16_to_f32_kernel();
}

// ---- public entry points -------------------------------------------------

/// Defines the public `NAME(x, y)` over spans of X and Y: the active
/// variant of NAME_kernel() on N elements (x.size() or y.size(), whichever
/// counts floats).
#define SHOAL_QUANT_ENTRY(NAME, X, Y, N)                                                           \
  void NAME(std::span<const X> x, std::span<Y> y) noexcept {                                       \
    NAME##_kernel().get()(N.size(), y.data(), x.data());                                           \
  }

SHOAL_QUANT_ENTRY(quantize_q8_0, float, block_q8_0, x)
SHOAL_QUANT_ENTRY(quantize_q4_0, float, block_q4_0, x)
SHOAL_QUANT_ENTRY(quantize_q8_k, float, block_q8_k, x)
SHOAL_QUANT_ENTRY(dequantize_q8_0, block_q8_0, float, y)
SHOAL_QUANT_ENTRY(dequantize_q4_0, block_q4_0, float, y)
SHOAL_QUANT_ENTRY(dequantize_q8_k, block_q8_k, float, y)
SHOAL_QUANT_ENTRY(dequantize_q4_k, block_q4_k, float, y)
SHOAL_QUANT_ENTRY(dequantize_q5_k, block_q5_k, float, y)
SHOAL_QUANT_ENTRY(dequantize_q6_k, block_q6_k, float, y)
SHOAL_QUANT_ENTRY(convert_f32_to_f16, float, uint16_t, x)
SHOAL_QUANT_ENTRY(convert_f16_to_f32, uint16_t, float, x)
SHOAL_QUANT_ENTRY(convert_f32_to_bf16, float, uint16_t, x)
SHOAL_QUANT_ENTRY(convert_bf16_to_f32, uint16_t, float, x)
#undef SHOAL_QUANT_ENTRY

void quantize_q4_k(std::span<const float> x, std::span<block_q4_k> y) noexcept {
  uint8_t sc[8], m[8], q[qk_k];
  for (size_t b = 0; b < x.size() / qk_k; ++b) {
    block_q4_k& o = y[b];
    quantize_min_max(x.data() + qk_k * b, 15, o.d, o.dmin, sc, m, q);
    pack_scale_min_k4(sc, m, o.scales);
    // Group g holds sub-blocks 2g (low nibbles) and 2g+1 (high nibbles).
    for (size_t g = 0; g < 4; ++g)
      for (size_t l = 0; l < 32; ++l)
        o.qs[32 * g + l] = static_cast<uint8_t>(q[64 * g + l] | (q[64 * g + 32 + l] << 4));
  }
}

void quantize_q5_k(std::span<const float> x, std::span<block_q5_k> y) noexcept {
  uint8_t sc[8], m[8], q[qk_k];
  for (size_t b = 0; b < x.size() / qk_k; ++b) {
    block_q5_k& o = y[b];
    quantize_min_max(x.data() + qk_k * b, 31, o.d, o.dmin, sc, m, q);
    pack_scale_min_k4(sc, m, o.scales);
    for (size_t g = 0; g < 4; ++g)
      for (size_t l = 0; l < 32; ++l)
        o.qs[32 * g + l] =
          static_cast<uint8_t>((q[64 * g + l] & 0xF) | ((q[64 * g + 32 + l] & 0xF) << 4));
    // Bit j of qh[l] is bit 4 of element 32j + l.
    for (size_t l = 0; l < 32; ++l) {
      uint8_t h = 0;
      for (size_t j = 0; j < 8; ++j)
        h = static_cast<uint8_t>(h | (((q[32 * j + l] >> 4) & 1) << j));
      o.qh[l] = h;
    }
  }
}

void quantize_q6_k(std::span<const float> x, std::span<block_q6_k> y) noexcept {
  for (size_t b = 0; b < x.size() / qk_k; ++b) {
    const float* xb = x.data() + qk_k * b;
    block_q6_k& o = y[b];
    float step[16], max_step = 0;
    for (size_t j = 0; j < 16; ++j) {
      float amax = 0;
      for (size_t i = 16 * j; i < 16 * j + 16; ++i)
        amax = std::max(amax, std::fabs(xb[i]));
      step[j] = amax / 31;
      max_step = std::max(max_step, step[j]);
    }
    o.d = fp16_ceil(max_step / 127);
    const float df = fp16_to_fp32(o.d);
    int8_t q[qk_k]; // q - 32, in [-32, 31]
    for (size_t j = 0; j < 16; ++j) {
      o.scales[j] = static_cast<int8_t>(ceil_div(step[j], df, 127));
      float s = df * static_cast<float>(o.scales[j]);
      for (size_t i = 16 * j; i < 16 * j + 16; ++i)
        q[i] = s > 0 ? static_cast<int8_t>(std::clamp(std::lround(xb[i] / s), -32L, 31L)) : 0;
    }
    // Half h, element 128h + 32k + l: low nibble in ql[64h + l + 32(k&1)]
    // (high nibble for k ≥ 2), 2 high bits in qh[32h + l] at bit 2k.
    std::memset(o.ql, 0, sizeof(o.ql));
    std::memset(o.qh, 0, sizeof(o.qh));
    for (size_t h = 0; h < 2; ++h)
      for (size_t k = 0; k < 4; ++k)
        for (size_t l = 0; l < 32; ++l) {
          auto u = static_cast<uint8_t>(q[128 * h + 32 * k + l] + 32);
          o.ql[64 * h + l + 32 * (k & 1)] |= static_cast<uint8_t>((u & 0xF) << (4 * (k >> 1)));
          o.qh[32 * h + l] |= static_cast<uint8_t>((u >> 4) << (2 * k));
        }
  }
}

} // namespace shoal::kernels
