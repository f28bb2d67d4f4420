#include "kernels/matmul.hpp"

#include "kernels/f16.hpp"
#include "kernels/quant.hpp"
#include "kernels/simd.hpp"

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <random>
#include <type_traits>
#include <vector>

namespace shoal::kernels {

namespace {

// ---- scalar references ---------------------------------------------------
// One output at a time, blocks in order. The quantized dots follow ggml's
// formulas: an exact int32 sum per block, scaled in f32.

/// Float weight formats: how a stored element becomes f32.
enum class wfmt { f32, f16, bf16 };

template <wfmt F, class T>
inline float to_f32(T v) noexcept {
  if constexpr (F == wfmt::f32)
    return v;
  else if constexpr (F == wfmt::f16)
    return fp16_to_fp32(v);
  else
    return bf16_to_fp32(v);
}

template <wfmt F, class T>
void matmul_float_scalar(size_t n_rows, size_t n_batch, size_t n_cols, float* y, size_t ldy,
                         const T* w, const float* x) noexcept {
  for (size_t b = 0; b < n_batch; ++b)
    for (size_t r = 0; r < n_rows; ++r) {
      const T* wr = w + r * n_cols;
      const float* xb = x + b * n_cols;
      float s = 0;
      for (size_t i = 0; i < n_cols; ++i)
        s += to_f32<F>(wr[i]) * xb[i];
      y[b * ldy + r] = s;
    }
}

/// Σ w·x of one Q8_0 weight block and one Q8_0 activation block, scaled.
inline float block_dot(const block_q8_0& w, const block_q8_0& x) noexcept {
  int32_t s = 0;
  for (size_t i = 0; i < qk_legacy; ++i)
    s += int32_t{w.qs[i]} * int32_t{x.qs[i]};
  return (fp16_to_fp32(w.d) * fp16_to_fp32(x.d)) * static_cast<float>(s);
}

/// Σ w·x of one Q4_0 weight block (nibble - 8) and one Q8_0 activation block.
inline float block_dot(const block_q4_0& w, const block_q8_0& x) noexcept {
  int32_t s = 0;
  for (size_t j = 0; j < qk_legacy / 2; ++j) {
    s += ((w.qs[j] & 0xF) - 8) * int32_t{x.qs[j]};
    s += ((w.qs[j] >> 4) - 8) * int32_t{x.qs[j + 16]};
  }
  return (fp16_to_fp32(w.d) * fp16_to_fp32(x.d)) * static_cast<float>(s);
}

/// The 8 six-bit scales and 8 mins of a Q4_K block (ggml get_scale_min_k4),
/// computed four at a time on 32-bit words: sc[0..3] = s[0..3] & 63,
/// m[0..3] = s[4..7] & 63, sc[4..7] = low nibbles of s[8..11] | top two bits
/// of s[0..3] << 4, m[4..7] = high nibbles of s[8..11] | top bits of s[4..7] << 4.
inline void q4_k_scales(const uint8_t* s, uint8_t sc[8], uint8_t m[8]) noexcept {
  uint32_t u0, u1, u2;
  std::memcpy(&u0, s, 4);
  std::memcpy(&u1, s + 4, 4);
  std::memcpy(&u2, s + 8, 4);
  uint32_t w[4] = {u0 & 0x3F3F3F3Fu, (u2 & 0x0F0F0F0Fu) | (((u0 >> 6) & 0x03030303u) << 4),
                   u1 & 0x3F3F3F3Fu, ((u2 >> 4) & 0x0F0F0F0Fu) | (((u1 >> 6) & 0x03030303u) << 4)};
  std::memcpy(sc, w, 8);
  std::memcpy(m, w + 2, 8);
}

/// Σ w·x of one Q4_K block and one Q8_K block: d·dx·Σ_j sc_j Σ q·x
/// − dmin·dx·Σ_j m_j Σ x (the second sum from the activation's bsums).
inline float block_dot(const block_q4_k& w, const block_q8_k& x) noexcept {
  uint8_t sc[8], m[8];
  q4_k_scales(w.scales, sc, m);
  int32_t sum_q = 0, sum_m = 0;
  for (size_t j = 0; j < 8; ++j) {
    const uint8_t* q = w.qs + 32 * (j / 2);
    const int8_t* a = x.qs + 32 * j;
    int shift = (j % 2) * 4;
    int32_t s = 0;
    for (size_t i = 0; i < 32; ++i)
      s += ((q[i] >> shift) & 0xF) * int32_t{a[i]};
    sum_q += sc[j] * s;
    sum_m += m[j] * (x.bsums[2 * j] + x.bsums[2 * j + 1]);
  }
  return (fp16_to_fp32(w.d) * x.d) * static_cast<float>(sum_q)
         - (fp16_to_fp32(w.dmin) * x.d) * static_cast<float>(sum_m);
}

/// Σ w·x of one Q6_K block and one Q8_K block: d·dx·Σ_j sc_j Σ (q−32)·x over
/// the 16 sub-blocks of 16. Element 128h + 32k + l (h < 2, k < 4, l < 32)
/// has its low 4 bits in ql[64h + l + 32(k%2)] (low nibble for k < 2, high
/// for k ≥ 2) and its high 2 bits at bit 2k of qh[32h + l].
inline float block_dot(const block_q6_k& w, const block_q8_k& x) noexcept {
  int32_t sum = 0;
  for (size_t h = 0; h < 2; ++h)
    for (size_t k = 0; k < 4; ++k)
      for (size_t half = 0; half < 2; ++half) { // two sub-blocks of 16 per (h, k)
        int32_t s = 0;
        for (size_t l = 16 * half; l < 16 * half + 16; ++l) {
          int lo = (w.ql[64 * h + l + 32 * (k % 2)] >> (4 * (k / 2))) & 0xF;
          int hi = (w.qh[32 * h + l] >> (2 * k)) & 3;
          s += ((lo | (hi << 4)) - 32) * int32_t{x.qs[128 * h + 32 * k + l]};
        }
        sum += w.scales[8 * h + 2 * k + half] * s;
      }
  return (fp16_to_fp32(w.d) * x.d) * static_cast<float>(sum);
}

template <class WB, class XB>
void matmul_quant_scalar(size_t n_rows, size_t n_batch, size_t n_blocks, float* y, size_t ldy,
                         const WB* w, const XB* x) noexcept {
  for (size_t b = 0; b < n_batch; ++b)
    for (size_t r = 0; r < n_rows; ++r) {
      float s = 0;
      for (size_t i = 0; i < n_blocks; ++i)
        s += block_dot(w[r * n_blocks + i], x[b * n_blocks + i]);
      y[b * ldy + r] = s;
    }
}

/// Calls tile.template operator()<R, C>(r, b) over [0, n_rows) × [0, n_batch)
/// in tiles of R rows × C activation rows; edges use R = 1 / C = 1 tiles.
/// For one activation row (GEMV) the tiles are R1 × 1.
template <size_t R1, size_t R, size_t C, class Tile>
inline void for_tiles(size_t n_rows, size_t n_batch, Tile&& tile) {
  if (n_batch == 1) {
    size_t r = 0;
    for (; r + R1 <= n_rows; r += R1)
      tile.template operator()<R1, 1>(r, 0);
    for (; r < n_rows; ++r)
      tile.template operator()<1, 1>(r, 0);
    return;
  }
  size_t r = 0;
  for (; r + R <= n_rows; r += R) {
    size_t b = 0;
    for (; b + C <= n_batch; b += C)
      tile.template operator()<R, C>(r, b);
    for (; b < n_batch; ++b)
      tile.template operator()<R, 1>(r, b);
  }
  for (; r < n_rows; ++r) {
    size_t b = 0;
    for (; b + C <= n_batch; b += C)
      tile.template operator()<1, C>(r, b);
    for (; b < n_batch; ++b)
      tile.template operator()<1, 1>(r, b);
  }
}

} // namespace

// ---- SIMD bodies, once per ISA ------------------------------------------
// `S` (simd.hpp) has the f32 lane ops; `Q` below adds what the matrix
// kernels need on integer lanes and on ggml blocks. A legacy vector holds
// Q::blocks blocks (AVX2: one block of 32 int8 in 256 bits; AVX-512: two
// blocks in 512 bits, as 128-bit lanes [b0 0..15, b1 0..15, b0 16..31,
// b1 16..31] so that Q4_0 nibbles unpack with one shift).
#if defined(__x86_64__)
#define SHOAL_BEGIN_AVX512VNNI                                                                     \
  _Pragma("GCC push_options")                                                                      \
    _Pragma("GCC target(\"avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni\")")

SHOAL_BEGIN_AVX2
namespace avx2 {
using S = ops_avx2;
struct Q {
  using vi = __m256i;
  static constexpr size_t blocks = 1;
  static constexpr bool vnni = false;
  // Tiles: GEMV R1 rows; GEMM R rows × C activation rows (16 ymm registers).
  static constexpr size_t tile_r1 = 4, tile_r = 2, tile_c = 2, tile_kc = 2;
  static vi zero() { return _mm256_setzero_si256(); }
  static S::vf cvt(vi v) { return _mm256_cvtepi32_ps(v); }
  static vi bytes(int8_t v) { return _mm256_set1_epi8(v); }
  static vi xor_(vi a, vi b) { return _mm256_xor_si256(a, b); }
  static vi load_x(const block_q8_0* x) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x->qs));
  }
  static vi load_w(const block_q8_0* w) { return load_x(w); }
  // One block per vector: a step is never half full.
  static vi load_x1(const block_q8_0* x) { return load_x(x); }
  template <class B>
  static vi load_w1(const B* w) {
    return load_w(w);
  }
  template <class B>
  static S::vf scale1(const B* b) {
    return scale(b);
  }
  /// Nibbles as unsigned bytes 0..15, elements 0..31 in order.
  /// (the 16 bytes in both halves, the upper half shifted by 4 per 32-bit
  /// lane: a broadcast load and two ALU operations).
  static vi load_w(const block_q4_0* w) {
    __m256i b =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w->qs)));
    return _mm256_and_si256(_mm256_srlv_epi32(b, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)),
                            bytes(0x0F));
  }
  template <class B>
  static S::vf scale(const B* b) {
    return _mm256_set1_ps(_cvtsh_ss(b->d));
  }
  /// acc + Σ u·s per 4 bytes; u unsigned, no int16 saturation (u·s pairs < 2^15).
  static vi dot_u(vi acc, vi u, vi s) {
    return _mm256_add_epi32(acc,
                            _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
  }
  /// acc + Σ w·x per 4 bytes, both signed (x > -128): |w|·sign(x, w).
  static vi dot_s(vi acc, vi w, vi x) {
    return dot_u(acc, _mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
  }
  static vi neg(vi v) { return _mm256_sub_epi32(zero(), v); }
  static S::vf load_bf16(const uint16_t* p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  }
};
#include "kernels/matmul_simd.inc"
} // namespace avx2
SHOAL_END_TARGET

SHOAL_BEGIN_AVX512
namespace avx512 {
using S = ops_avx512;
struct Q {
  using vi = __m512i;
  static constexpr size_t blocks = 2;
  static constexpr bool vnni = false;
  static constexpr size_t tile_r1 = 4, tile_r = 4, tile_c = 4, tile_kc = 4;
  static vi zero() { return _mm512_setzero_si512(); }
  static S::vf cvt(vi v) { return _mm512_cvtepi32_ps(v); }
  static vi bytes(int8_t v) { return _mm512_set1_epi8(v); }
  static vi xor_(vi a, vi b) { return _mm512_xor_si512(a, b); }
  /// Two Q8_0 blocks as 128-bit lanes [x0 0..15, x1 0..15, x0 16..31, x1 16..31].
  static vi load_x(const block_q8_0* x) {
    __m512i z = _mm512_inserti64x4(
      _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[0].qs))),
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[1].qs)), 1);
    return _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0));
  }
  static vi load_w(const block_q8_0* w) { return load_x(w); }
  /// One Q8_0 block in load_x's lane order, zeros for the second: a last,
  /// odd block (nothing is read beyond it).
  static vi load_x1(const block_q8_0* x) {
    __m512i z = _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x->qs)));
    return _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0));
  }
  static vi load_w1(const block_q8_0* w) { return load_x1(w); }
  /// One Q4_0 block's nibbles in load_w's lane order, zeros for the second.
  static vi load_w1(const block_q4_0* w) {
    __m512i a = _mm512_maskz_broadcast_i32x4(
      0x0F0F, _mm_loadu_si128(reinterpret_cast<const __m128i*>(w->qs)));
    a = _mm512_mask_srli_epi16(a, 0xFFFF0000u, a, 4);
    return _mm512_and_si512(a, bytes(0x0F));
  }
  /// scale() of one block: d in lanes 0-3 and 8-11, zeros in 4-7, 12-15.
  template <class B>
  static S::vf scale1(const B* b) {
    __m128 d = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(b->d)));
    return _mm512_permutexvar_ps(_mm512_set_epi32(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0),
                                 _mm512_castps128_ps512(d));
  }
  /// Two Q4_0 blocks' nibbles (0..15) in load_x's lane order: low nibbles of
  /// block 0 and 1, then their high nibbles.
  /// Built from broadcast loads (no shuffle port): [w0 w1 w0 w1] by 128-bit
  /// lanes, the upper two shifted by 4, then masked.
  static vi load_w(const block_q4_0* w) {
    __m512i a = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[0].qs)));
    a = _mm512_mask_broadcast_i32x4(a, 0xF0F0,
                                    _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[1].qs)));
    a = _mm512_mask_srli_epi16(a, 0xFFFF0000u, a, 4);
    return _mm512_and_si512(a, bytes(0x0F));
  }
  /// Per-lane scale: d of block 0 in 32-bit lanes 0-3 and 8-11, block 1 in 4-7, 12-15.
  template <class B>
  static S::vf scale(const B* b) {
    __m128 d = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(b[0].d | (uint32_t{b[1].d} << 16))));
    return _mm512_permutexvar_ps(_mm512_set_epi32(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0),
                                 _mm512_castps128_ps512(d));
  }
  static vi dot_u(vi acc, vi u, vi s) {
    return _mm512_add_epi32(acc,
                            _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)));
  }
  /// No vpsignb in AVX-512: negate x where w < 0 with a mask.
  static vi dot_s(vi acc, vi w, vi x) {
    __m512i xs = _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), zero(), x);
    return dot_u(acc, _mm512_abs_epi8(w), xs);
  }
  static vi neg(vi v) { return _mm512_sub_epi32(zero(), v); }
  static S::vf load_bf16(const uint16_t* p) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  }
};
#include "kernels/matmul_simd.inc"
} // namespace avx512
SHOAL_END_TARGET

SHOAL_BEGIN_AVX512VNNI
namespace avx512vnni {
using S = ops_avx512;
/// AVX-512 with VNNI: vpdpbusd sums four u8·s8 products into int32 lanes in
/// one instruction, without the int16 saturation of vpmaddubsw, so signed
/// Q8_0 weights go in as w+128 (u8) with -128·Σx folded into the accumulator.
struct Q : avx512::Q {
  static constexpr bool vnni = true;
  static vi dot_u(vi acc, vi u, vi s) { return _mm512_dpbusd_epi32(acc, u, s); }
};
#include "kernels/matmul_simd.inc"

// ---- Prefill: Q8_0 / Q4_0 weights × many activation rows -----------------
// With many activation rows (prefill), the tile kernel above spends more on
// turning each (row, column, block) integer dot into f32 than on the dot.
// Here a panel of 16 weight rows is repacked once (into a per-thread buffer)
// so that 32-bit lane j of a vector holds 4 consecutive weights of row j:
// one vpdpbusd with 4 activation bytes broadcast from memory then advances
// 16 rows at once, eight of them finish a block's exact integer dot for 16
// rows, and the conversion, d_w·d_x scaling and accumulation cost 3
// instructions per 16 outputs. The repack is paid once per panel and
// amortized over every activation row (BLAS-style packing; llama.cpp's
// repacked Q4_0x8 kernels use the same lane-per-row layout).
// Weights go in unsigned (Q4_0: nibble u, value u-8; Q8_0: w+128), so each
// (activation row, block) subtracts off·Σx, computed once per group of
// panels and column tile.
// Results agree with the tile kernel within f32 rounding but not bit for
// bit (the sum order per block differs); gemm() takes this path only for
// n_batch ≥ panel_min_batch, so decode (batch 1) is unaffected.

/// One block of a 16-row panel: q[k] lane j = row j's elements 4k..4k+3
/// (unsigned), d lane j = row j's scale (0 for rows past the matrix).
struct alignas(64) panel_block {
  __m512i q[8];
  __m512 d;
};

template <class WB>
inline void pack_panel(panel_block* out, const WB* w, size_t n_blocks, size_t n_rows) noexcept {
  constexpr bool q4 = std::is_same_v<WB, block_q4_0>;
  for (size_t b = 0; b < n_blocks; ++b) {
    alignas(64) uint32_t q[8][16];
    alignas(64) float d[16];
    for (size_t j = 0; j < 16; ++j) {
      if (j >= n_rows) {
        for (size_t k = 0; k < 8; ++k)
          q[k][j] = 0;
        d[j] = 0.0f;
        continue;
      }
      const WB& blk = w[j * n_blocks + b];
      alignas(32) uint8_t e[32];
      if constexpr (q4) {
        __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.qs));
        __m128i m = _mm_set1_epi8(0x0F);
        _mm_store_si128(reinterpret_cast<__m128i*>(e), _mm_and_si128(v, m));
        _mm_store_si128(reinterpret_cast<__m128i*>(e + 16), _mm_and_si128(_mm_srli_epi16(v, 4), m));
      } else {
        __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.qs));
        _mm256_store_si256(reinterpret_cast<__m256i*>(e),
                           _mm256_xor_si256(v, _mm256_set1_epi8(-128)));
      }
      for (size_t k = 0; k < 8; ++k)
        std::memcpy(&q[k][j], e + 4 * k, 4);
      d[j] = _cvtsh_ss(blk.d);
    }
    for (size_t k = 0; k < 8; ++k)
      out[b].q[k] = _mm512_load_si512(q[k]);
    out[b].d = _mm512_load_ps(d);
  }
}

/// off·Σx (as -off·Σx, the starting integer sum) and d_x as f32 for the
/// activation rows [0, n_cols) × blocks of x.
inline void prepare_columns(int32_t* neg_corr, float* dx, const block_q8_0* x, size_t n_cols,
                            size_t n_blocks, int32_t off) noexcept {
  const __m256i ones = _mm256_set1_epi8(1);
  for (size_t c = 0; c < n_cols; ++c)
    for (size_t b = 0; b < n_blocks; ++b) {
      const block_q8_0& xb = x[c * n_blocks + b];
      __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb.qs));
      __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, v);
      __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
      t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(1, 0, 3, 2)));
      t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(2, 3, 0, 1)));
      neg_corr[c * n_blocks + b] = -off * _mm_cvtsi128_si32(t);
      dx[c * n_blocks + b] = _cvtsh_ss(xb.d);
    }
}

/// y[c·ldy + j] for 16 panel rows j < n_rows and C activation rows.
template <size_t C>
inline void panel_tile(size_t n_blocks, float* y, size_t ldy, size_t n_rows,
                       const panel_block* panel, const block_q8_0* x, const int32_t* neg_corr,
                       const float* dx) noexcept {
  __m512 acc[C];
  SHOAL_UNROLL for (size_t c = 0; c < C; ++c) acc[c] = _mm512_setzero_ps();
  for (size_t b = 0; b < n_blocks; ++b) {
    const panel_block& pb = panel[b];
    __m512i isum[C];
    SHOAL_UNROLL for (size_t c = 0; c < C; ++c) isum[c] =
      _mm512_set1_epi32(neg_corr[c * n_blocks + b]);
    SHOAL_UNROLL for (size_t k = 0; k < 8; ++k) {
      __m512i wv = _mm512_load_si512(&pb.q[k]);
      SHOAL_UNROLL for (size_t c = 0; c < C; ++c) {
        int32_t xd;
        std::memcpy(&xd, x[c * n_blocks + b].qs + 4 * k, 4);
        isum[c] = _mm512_dpbusd_epi32(isum[c], wv, _mm512_set1_epi32(xd));
      }
    }
    SHOAL_UNROLL for (size_t c = 0; c < C; ++c) acc[c] =
      _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(isum[c]), pb.d),
                      _mm512_set1_ps(dx[c * n_blocks + b]), acc[c]);
  }
  __mmask16 m = n_rows >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n_rows) - 1);
  SHOAL_UNROLL for (size_t c = 0; c < C; ++c) _mm512_mask_storeu_ps(y + c * ldy, m, acc[c]);
}

template <class WB>
inline void matmul_legacy_panels(size_t n_rows, size_t n_batch, size_t n_blocks, float* y,
                                 size_t ldy, const WB* w, const block_q8_0* x) noexcept {
  constexpr size_t P = 16, G = 4, C = 8; // panel rows, panels per group, columns per tile
  constexpr int32_t off = std::is_same_v<WB, block_q4_0> ? 8 : 128;
  // Per-thread buffers, grown once (the kernel runs on pool threads).
  thread_local std::vector<panel_block> panels;
  thread_local std::vector<int32_t> neg_corr;
  thread_local std::vector<float> dx;
  if (panels.size() < G * n_blocks)
    panels.resize(G * n_blocks);
  if (neg_corr.size() < C * n_blocks) {
    neg_corr.resize(C * n_blocks);
    dx.resize(C * n_blocks);
  }
  for (size_t r0 = 0; r0 < n_rows; r0 += P * G) {
    size_t np = std::min(G, (n_rows - r0 + P - 1) / P);
    for (size_t p = 0; p < np; ++p)
      pack_panel(&panels[p * n_blocks], w + (r0 + p * P) * n_blocks, n_blocks,
                 std::min(P, n_rows - r0 - p * P));
    size_t c0 = 0;
    auto columns = [&]<size_t CT>(size_t c) {
      prepare_columns(neg_corr.data(), dx.data(), x + c * n_blocks, CT, n_blocks, off);
      for (size_t p = 0; p < np; ++p)
        panel_tile<CT>(n_blocks, y + c * ldy + r0 + p * P, ldy, std::min(P, n_rows - r0 - p * P),
                       &panels[p * n_blocks], x + c * n_blocks, neg_corr.data(), dx.data());
    };
    for (; c0 + C <= n_batch; c0 += C)
      columns.template operator()<C>(c0);
    for (; c0 < n_batch; ++c0)
      columns.template operator()<1>(c0);
  }
}

/// The VNNI variant: panels for prefill-sized batches, tiles otherwise.
template <class WB>
inline void matmul_legacy_vnni(size_t n_rows, size_t n_batch, size_t n_blocks, float* y, size_t ldy,
                               const WB* w, const block_q8_0* x) noexcept {
  if (n_batch >= panel_min_batch)
    matmul_legacy_panels(n_rows, n_batch, n_blocks, y, ldy, w, x);
  else
    matmul_legacy(n_rows, n_batch, n_blocks, y, ldy, w, x);
}
} // namespace avx512vnni
SHOAL_END_TARGET

// SHOAL_VARIANTS (simd.hpp): scalar, avx2::name, avx512::name.
#define SHOAL_VNNI_VARIANT(name)                                                                   \
  { "avx512vnni", isa::avx512, avx512vnni::name }
#endif

namespace {

// ---- tuning inputs ---------------------------------------------------------

/// A 256 × 1024 matrix of every format and one activation row (f32, Q8_0,
/// Q8_K): ~256 KiB of Q8_0 weights per call, a decode-sized GEMV.
struct bench_inputs {
  static constexpr size_t rows = 256, cols = 1024;
  std::vector<float> x, wf;
  std::vector<uint16_t> wh, wb;
  std::vector<block_q8_0> w8, x8;
  std::vector<block_q4_0> w4;
  std::vector<block_q4_k> wk4;
  std::vector<block_q6_k> wk6;
  std::vector<block_q8_k> xk;
  std::vector<float> y;
  bench_inputs()
    : x(cols), wf(rows * cols), wh(rows * cols), wb(rows * cols), w8(rows * cols / 32),
      x8(cols / 32), w4(rows * cols / 32), wk4(rows * cols / 256), wk6(rows * cols / 256),
      xk(cols / 256), y(rows) {
    std::mt19937 rng(3);
    std::normal_distribution<float> g(0, 1);
    for (float& v : x)
      v = g(rng);
    for (size_t i = 0; i < wf.size(); ++i) {
      wf[i] = g(rng) * 0.05f;
      wh[i] = fp32_to_fp16(wf[i]);
      wb[i] = fp32_to_bf16(wf[i]);
    }
    quantize_q8_0(wf, w8);
    quantize_q4_0(wf, w4);
    quantize_q8_0(x, x8);
    quantize_q8_k(x, xk);
    auto fill = [&](auto& blocks) {
      for (auto& b : blocks) {
        auto* p = reinterpret_cast<uint8_t*>(&b);
        for (size_t i = 0; i < sizeof(b); ++i)
          p[i] = static_cast<uint8_t>(rng());
      }
    };
    fill(wk4);
    fill(wk6);
    for (auto& b : wk4) {
      b.d = fp32_to_fp16(1e-3f);
      b.dmin = fp32_to_fp16(1e-3f);
    }
    for (auto& b : wk6)
      b.d = fp32_to_fp16(1e-3f);
  }
};

const bench_inputs& inputs() {
  static const bench_inputs in;
  return in;
}

template <class Fn, class W, class X>
double bench_matmul(Fn* f, size_t n, const W* w, const X* x) {
  const auto& in = inputs();
  float* y = const_cast<float*>(in.y.data());
  return bench_ns([&] {
    f(bench_inputs::rows, 1, n, y, bench_inputs::rows, w, x);
    bench_keep(y);
  });
}

} // namespace

namespace {
/// The F32, F16 and BF16 kernels (same body, element format F).
template <wfmt F, class T>
const kernel<void(size_t, size_t, size_t, float*, size_t, const T*, const float*) noexcept>&
float_kernel(const char* name, const char* signature) {
  using Fn = void(size_t, size_t, size_t, float*, size_t, const T*, const float*) noexcept;
  static const kernel<Fn> k{
    name, signature, {SHOAL_VARIANTS((matmul_float_scalar<F, T>), matmul_float<F>)}, [](Fn* f) {
      const auto& in = inputs();
      const T* w;
      if constexpr (F == wfmt::f32)
        w = in.wf.data();
      else if constexpr (F == wfmt::f16)
        w = in.wh.data();
      else
        w = in.wb.data();
      return bench_matmul(f, bench_inputs::cols, w, in.x.data());
    }};
  return k;
}
} // namespace

const kernel<matmul_f32_t>& matmul_f32_kernel() {
  return float_kernel<wfmt::f32, float>(
    "matmul_f32", "void(size_t,size_t,size_t,float*,size_t,const float*,const float*)");
}

const kernel<matmul_f16_t>& matmul_f16_kernel() {
  return float_kernel<wfmt::f16, uint16_t>(
    "matmul_f16", "void(size_t,size_t,size_t,float*,size_t,const uint16_t*,const float*)");
}

const kernel<matmul_f16_t>& matmul_bf16_kernel() {
  return float_kernel<wfmt::bf16, uint16_t>(
    "matmul_bf16", "void(size_t,size_t,size_t,float*,size_t,const uint16_t*,const float*)");
}

namespace {
/// Whether the VNNI variants may be registered (the registry only knows the
/// avx512 level, which does not imply VNNI).
bool with_vnni() {
#if defined(__x86_64__)
  return cpu().avx512vnni && cpu().level >= isa::avx512;
#else
  return false;
#endif
}
} // namespace

/// The Q8_0 and Q4_0 kernels (same body, weight block type WB), with the
/// VNNI variant registered where the CPU has it.
template <class WB>
const kernel<void(size_t, size_t, size_t, float*, size_t, const WB*, const block_q8_0*) noexcept>&
legacy_kernel(const char* name, const char* signature) {
  using Fn = void(size_t, size_t, size_t, float*, size_t, const WB*, const block_q8_0*) noexcept;
  using K = kernel<Fn>;
  using L = std::initializer_list<typename K::variant>;
  static const K k {
    name, signature,
#if defined(__x86_64__)
      with_vnni() ? L{SHOAL_VARIANTS((matmul_quant_scalar<WB, block_q8_0>), matmul_legacy<WB>),
                      SHOAL_VNNI_VARIANT(matmul_legacy_vnni<WB>)}
                  :
#endif
                  L{SHOAL_VARIANTS((matmul_quant_scalar<WB, block_q8_0>), matmul_legacy<WB>)},
      [](Fn* f) {
        const auto& in = inputs();
        if constexpr (std::is_same_v<WB, block_q8_0>)
          return bench_matmul(f, bench_inputs::cols / 32, in.w8.data(), in.x8.data());
        else
          return bench_matmul(f, bench_inputs::cols / 32, in.w4.data(), in.x8.data());
      }
  };
  return k;
}

const kernel<matmul_q8_0_t>& matmul_q8_0_kernel() {
  return legacy_kernel<block_q8_0>(
    "matmul_q8_0", "void(size_t,size_t,size_t,float*,size_t,const block_q8_0*,const block_q8_0*)");
}

const kernel<matmul_q4_0_t>& matmul_q4_0_kernel() {
  return legacy_kernel<block_q4_0>(
    "matmul_q4_0", "void(size_t,size_t,size_t,float*,size_t,const block_q4_0*,const block_q8_0*)");
}

const kernel<matmul_q4_k_t>& matmul_q4_k_kernel() {
  static const kernel<matmul_q4_k_t> k{
    "matmul_q4_k",
    "void(size_t,size_t,size_t,float*,size_t,const block_q4_k*,const block_q8_k*)",
    {SHOAL_VARIANTS((matmul_quant_scalar<block_q4_k, block_q8_k>), matmul_q4_k)},
    [](matmul_q4_k_t* f) {
      return bench_matmul(f, bench_inputs::cols / 256, inputs().wk4.data(), inputs().xk.data());
    }};
  return k;
}

const kernel<matmul_q6_k_t>& matmul_q6_k_kernel() {
  static const kernel<matmul_q6_k_t> k{
    "matmul_q6_k",
    "void(size_t,size_t,size_t,float*,size_t,const block_q6_k*,const block_q8_k*)",
    {SHOAL_VARIANTS((matmul_quant_scalar<block_q6_k, block_q8_k>), matmul_q6_k)},
    [](matmul_q6_k_t* f) {
      return bench_matmul(f, bench_inputs::cols / 256, inputs().wk6.data(), inputs().xk.data());
    }};
  return k;
}
#undef SHOAL_VNNI_VARIANT

void register_matmul_kernels() {
  matmul_f32_kernel();
  matmul_f16_kernel();
  matmul_bf16_kernel();
  matmul_q8_0_kernel();
  matmul_q4_0_kernel();
  matmul_q4_k_kernel();
  matmul_q6_k_kernel();
}

// ---- formats ---------------------------------------------------------------

std::string_view to_string(weight_type type) noexcept {
  switch (type) {
    case weight_type::f32:
      return "F32";
    case weight_type::f16:
      return "F16";
    case weight_type::bf16:
      return "BF16";
    case weight_type::q8_0:
      return "Q8_0";
    case weight_type::q4_0:
      return "Q4_0";
    case weight_type::q4_k:
      return "Q4_K";
    case weight_type::q6_k:
      return "Q6_K";
  }
  return "unknown";
}

std::optional<weight_type> weight_type_from_id(uint32_t id) noexcept {
  switch (id) {
    case 0:
      return weight_type::f32;
    case 1:
      return weight_type::f16;
    case 2:
      return weight_type::q4_0;
    case 8:
      return weight_type::q8_0;
    case 12:
      return weight_type::q4_k;
    case 14:
      return weight_type::q6_k;
    case 30:
      return weight_type::bf16;
    default:
      return std::nullopt;
  }
}

size_t block_elems(weight_type type) noexcept {
  switch (type) {
    case weight_type::f32:
    case weight_type::f16:
    case weight_type::bf16:
      return 1;
    case weight_type::q8_0:
    case weight_type::q4_0:
      return qk_legacy;
    case weight_type::q4_k:
    case weight_type::q6_k:
      return qk_k;
  }
  return 0;
}

size_t block_bytes(weight_type type) noexcept {
  switch (type) {
    case weight_type::f32:
      return sizeof(float);
    case weight_type::f16:
    case weight_type::bf16:
      return sizeof(uint16_t);
    case weight_type::q8_0:
      return sizeof(block_q8_0);
    case weight_type::q4_0:
      return sizeof(block_q4_0);
    case weight_type::q4_k:
      return sizeof(block_q4_k);
    case weight_type::q6_k:
      return sizeof(block_q6_k);
  }
  return 0;
}

size_t row_bytes(weight_type type, size_t cols) noexcept {
  size_t be = block_elems(type);
  return be == 0 ? 0 : cols / be * block_bytes(type);
}

std::string_view to_string(matmul_status status) noexcept {
  switch (status) {
    case matmul_status::ok:
      return "ok";
    case matmul_status::bad_type:
      return "unknown weight type";
    case matmul_status::bad_cols:
      return "cols is not a multiple of the weight type's block size";
    case matmul_status::bad_shape:
      return "x, y or weights do not match rows, cols and n_batch";
    case matmul_status::small_scratch:
      return "scratch smaller than matmul_scratch_bytes";
  }
  return "unknown status";
}

namespace {

constexpr size_t scratch_align = 64;

/// Bytes of one quantized activation row, 0 for the float formats.
size_t activation_row_bytes(weight_type type, size_t cols) noexcept {
  switch (type) {
    case weight_type::q8_0:
    case weight_type::q4_0:
      return cols / qk_legacy * sizeof(block_q8_0);
    case weight_type::q4_k:
    case weight_type::q6_k:
      return cols / qk_k * sizeof(block_q8_k);
    default:
      return 0;
  }
}

/// Quantizes the n_batch rows of x into `xq` (each row n_blocks blocks),
/// on the pool when there are enough rows to share.
template <class XB>
void quantize_rows(std::span<const float> x, size_t n_batch, size_t cols, XB* xq,
                   thread_pool* pool) noexcept {
  size_t n_blocks = cols / (sizeof(XB) == sizeof(block_q8_0) ? qk_legacy : qk_k);
  auto one = [&](size_t b) {
    std::span<const float> row = x.subspan(b * cols, cols);
    std::span<XB> out(xq + b * n_blocks, n_blocks);
    if constexpr (std::is_same_v<XB, block_q8_0>)
      quantize_q8_0(row, out);
    else
      quantize_q8_k(row, out);
  };
  parallel_for(n_batch >= 4 ? pool : nullptr, n_batch, one);
}

/// Runs `rows_fn(r0, r1)` over chunks of [0, rows): ~4 chunks per pool
/// thread, each a multiple of 16 rows and worth at least ~64 KiB of weight
/// bytes × activation rows (decode: 64 KiB of weights streamed per chunk;
/// prefill: a 288-row matrix times 512 tokens still splits).
template <class F>
void split_rows(thread_pool* pool, size_t rows, size_t w_row_bytes, size_t n_batch,
                F&& rows_fn) noexcept {
  size_t threads = pool == nullptr ? 1 : pool->size();
  size_t row_work = std::max<size_t>(1, w_row_bytes * std::max<size_t>(1, n_batch));
  size_t min_rows = std::max<size_t>(16, ((size_t{64} << 10) + row_work - 1) / row_work);
  size_t n_chunks = threads <= 1 ? 1 : chunk_count(rows, threads, min_rows);
  parallel_for(pool, n_chunks, [&](size_t i) {
    index_range r = split_range(rows, n_chunks, i, 16);
    if (r.size() != 0)
      rows_fn(r.begin, r.end);
  });
}

/// The float formats: kernel over row chunks, x used as is.
template <class Fn, class T>
void run_float(Fn* fn, std::span<float> y, const weight_view& w, const float* x, size_t n_batch,
               thread_pool* pool) noexcept {
  const T* wd = static_cast<const T*>(w.data);
  split_rows(pool, w.rows, row_bytes(w.type, w.cols), n_batch, [&](size_t r0, size_t r1) {
    fn(r1 - r0, n_batch, w.cols, y.data() + r0, w.rows, wd + r0 * w.cols, x);
  });
}

/// The quantized formats: quantize x into scratch, then kernel over row chunks.
template <class Fn, class WB, class XB>
void run_quant(Fn* fn, std::span<float> y, const weight_view& w, std::span<const float> x,
               size_t n_batch, std::byte* scratch, thread_pool* pool) noexcept {
  auto* xq = reinterpret_cast<XB*>(scratch);
  quantize_rows(x, n_batch, w.cols, xq, pool);
  size_t n_blocks = w.cols / (sizeof(XB) == sizeof(block_q8_0) ? qk_legacy : qk_k);
  const WB* wd = static_cast<const WB*>(w.data);
  split_rows(pool, w.rows, row_bytes(w.type, w.cols), n_batch, [&](size_t r0, size_t r1) {
    fn(r1 - r0, n_batch, n_blocks, y.data() + r0, w.rows, wd + r0 * n_blocks, xq);
  });
}

} // namespace

size_t matmul_scratch_bytes(weight_type type, size_t cols, size_t n_batch) noexcept {
  size_t row = activation_row_bytes(type, cols);
  return row == 0 ? 0 : row * n_batch + scratch_align;
}

matmul_status gemm(std::span<float> y, const weight_view& w, std::span<const float> x,
                   size_t n_batch, std::span<std::byte> scratch, thread_pool* pool) noexcept {
  size_t be = block_elems(w.type);
  if (be == 0)
    return matmul_status::bad_type;
  if (w.cols % be != 0)
    return matmul_status::bad_cols;
  if (x.size() != n_batch * w.cols || y.size() != n_batch * w.rows
      || (w.data == nullptr && w.rows * w.cols != 0))
    return matmul_status::bad_shape;
  size_t need = matmul_scratch_bytes(w.type, w.cols, n_batch);
  if (scratch.size() < need)
    return matmul_status::small_scratch;
  if (y.empty())
    return matmul_status::ok;
  if (w.cols == 0) {
    std::fill(y.begin(), y.end(), 0.0f);
    return matmul_status::ok;
  }
  std::byte* aligned = nullptr;
  if (need != 0) {
    auto addr = reinterpret_cast<uintptr_t>(scratch.data());
    aligned = scratch.data() + ((scratch_align - addr % scratch_align) % scratch_align);
  }
  switch (w.type) {
    case weight_type::f32:
      run_float<matmul_f32_t, float>(matmul_f32_kernel().get(), y, w, x.data(), n_batch, pool);
      break;
    case weight_type::f16:
      run_float<matmul_f16_t, uint16_t>(matmul_f16_kernel().get(), y, w, x.data(), n_batch, pool);
      break;
    case weight_type::bf16:
      run_float<matmul_f16_t, uint16_t>(matmul_bf16_kernel().get(), y, w, x.data(), n_batch, pool);
      break;
    case weight_type::q8_0:
      run_quant<matmul_q8_0_t, block_q8_0, block_q8_0>(matmul_q8_0_kernel().get(), y, w, x, n_batch,
                                                       aligned, pool);
      break;
    case weight_type::q4_0:
      run_quant<matmul_q4_0_t, block_q4_0, block_q8_0>(matmul_q4_0_kernel().get(), y, w, x, n_batch,
                                                       aligned, pool);
      break;
    case weight_type::q4_k:
      run_quant<matmul_q4_k_t, block_q4_k, block_q8_k>(matmul_q4_k_kernel().get(), y, w, x, n_batch,
                                                       aligned, pool);
      break;
    case weight_type::q6_k:
      run_quant<matmul_q6_k_t, block_q6_k, block_q8_k>(matmul_q6_k_kernel().get(), y, w, x, n_batch,
                                                       aligned, pool);
      break;
  }
  return matmul_status::ok;
}

matmul_status gemv(std::span<float> y, const weight_view& w, std::span<const float> x,
                   std::span<std::byte> scratch, thread_pool* pool) noexcept {
  return gemm(y, w, x, 1, scratch, pool);
}

} // namespace shoal::kernels
