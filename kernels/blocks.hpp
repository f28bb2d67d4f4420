#pragma once
/// @file ggml's quantized block layouts, byte for byte (source: ggml
/// `ggml-common.h`, the GGUF tensor types of the same names). A row of a
/// quantized tensor is a sequence of blocks; a row's length must be a
/// multiple of the block's element count (32 for Q8_0/Q4_0, 256 for the
/// K-quants, QK_K). Scales `d`/`dmin` are IEEE half floats stored as raw bits
/// (see f16.hpp). Plain data: no constructors, safe to memcpy and to view in
/// an mmap'ed GGUF file.

#include <cstddef>
#include <cstdint>

namespace shoal::kernels {

/// Elements per block of the legacy formats (Q8_0, Q4_0).
inline constexpr size_t qk_legacy = 32;
/// Elements per super-block of the K-quants (QK_K).
inline constexpr size_t qk_k = 256;

/// Q8_0: x[i] ≈ d * qs[i]; d = amax/127 (34 bytes per 32 elements).
struct block_q8_0 {
  uint16_t d;    // f16 scale
  int8_t qs[32]; // quants
};
static_assert(sizeof(block_q8_0) == 34);

/// Q4_0: x[j] ≈ d * ((qs[j] & 0xF) - 8), x[j+16] ≈ d * ((qs[j] >> 4) - 8)
/// (18 bytes per 32 elements).
struct block_q4_0 {
  uint16_t d;     // f16 scale
  uint8_t qs[16]; // nibbles: element j low, element j+16 high
};
static_assert(sizeof(block_q4_0) == 18);

/// Q4_K: 8 sub-blocks of 32; x ≈ d*sc[j]*q - dmin*m[j], 6-bit sc/m packed in
/// `scales` (ggml get_scale_min_k4) (144 bytes per 256 elements).
struct block_q4_k {
  uint16_t d;         // f16 super-block scale for the quantized scales
  uint16_t dmin;      // f16 super-block scale for the quantized mins
  uint8_t scales[12]; // 8 scales and 8 mins, 6 bits each
  uint8_t qs[128];    // 4-bit quants
};
static_assert(sizeof(block_q4_k) == 144);

/// Q5_K: as Q4_K plus a fifth bit per element in `qh` (176 bytes per 256).
struct block_q5_k {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[32];  // high bits
  uint8_t qs[128]; // low 4 bits
};
static_assert(sizeof(block_q5_k) == 176);

/// Q6_K: 16 sub-blocks of 16; x ≈ d * scales[j] * (q - 32), q 6-bit from
/// ql (low 4) and qh (high 2) (210 bytes per 256 elements).
struct block_q6_k {
  uint8_t ql[128];   // low 4 bits
  uint8_t qh[64];    // high 2 bits
  int8_t scales[16]; // 8-bit sub-block scales
  uint16_t d;        // f16 super-block scale
};
static_assert(sizeof(block_q6_k) == 210);

/// Q8_K: activations for dot products with K-quant weights (ggml's
/// intermediate format; never stored in files): x ≈ d * qs[i], with the sum
/// of each 16 quants in bsums (292 bytes per 256 elements).
struct block_q8_k {
  float d;
  int8_t qs[256];
  int16_t bsums[16];
};
static_assert(sizeof(block_q8_k) == 292);

} // namespace shoal::kernels
