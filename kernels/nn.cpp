#include "kernels/nn.hpp"

#include "kernels/blocks.hpp"
#include "kernels/f16.hpp"
#include "kernels/simd.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace shoal::kernels {

namespace {

constexpr float ninf = -std::numeric_limits<float>::infinity();

/// Tokens whose scores the SIMD attention keeps on the stack at a time.
constexpr size_t attention_chunk = 64;

uint16_t load_u16(const std::byte* p) noexcept {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

/// Element i of an f32 or f16 row.
template <kv_type T>
float kv_elem(const std::byte* row, size_t i) noexcept {
  if constexpr (T == kv_type::f32) {
    float v;
    std::memcpy(&v, row + 4 * i, sizeof v);
    return v;
  } else {
    return fp16_to_fp32(load_u16(row + 2 * i));
  }
}

// ---- scalar references ---------------------------------------------------

void rms_norm_scalar(size_t n, float* y, const float* x, const float* w, float eps) noexcept {
  if (n == 0)
    return;
  double ss = 0; // as ggml_compute_forward_rms_norm_f32 (ggml_float sum)
  for (size_t i = 0; i < n; ++i)
    ss += static_cast<double>(x[i]) * x[i];
  const float k = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(n)) + eps);
  for (size_t i = 0; i < n; ++i)
    y[i] = w != nullptr ? x[i] * k * w[i] : x[i] * k;
}

void rope_scalar(size_t n_heads, size_t head_dim, size_t n_dims, float* x,
                 const float* table) noexcept {
  for (size_t h = 0; h < n_heads; ++h) {
    float* row = x + h * head_dim;
    for (size_t i = 0; i < n_dims; i += 2) {
      const float c = table[i], s = table[n_dims + i + 1];
      const float a = row[i], b = row[i + 1];
      row[i] = a * c - b * s;
      row[i + 1] = a * s + b * c;
    }
  }
}

void softmax_scalar(size_t n, float* y, const float* x, float scale) noexcept {
  float m = ninf;
  for (size_t i = 0; i < n; ++i)
    m = std::max(m, x[i]);
  if (m == ninf) { // all masked (or n == 0): no weight anywhere
    std::fill(y, y + n, 0.0f);
    return;
  }
  m *= scale;
  float sum = 0;
  for (size_t i = 0; i < n; ++i) {
    y[i] = std::exp(x[i] * scale - m);
    sum += y[i];
  }
  const float inv = 1.0f / sum;
  for (size_t i = 0; i < n; ++i)
    y[i] *= inv;
}

float silu1(float x) noexcept {
  return x / (1.0f + std::exp(-x));
}

void silu_scalar(size_t n, float* y, const float* x) noexcept {
  for (size_t i = 0; i < n; ++i)
    y[i] = silu1(x[i]);
}

void swiglu_scalar(size_t n, float* out, const float* gate, const float* up) noexcept {
  for (size_t i = 0; i < n; ++i)
    out[i] = silu1(gate[i]) * up[i];
}

/// Element i of a row of type t, dequantized as ggml does.
float kv_value(kv_type t, const std::byte* row, size_t i) noexcept {
  switch (t) {
    case kv_type::f32:
      return kv_elem<kv_type::f32>(row, i);
    case kv_type::f16:
      return kv_elem<kv_type::f16>(row, i);
    case kv_type::q8_0: {
      const std::byte* blk = row + i / 32 * sizeof(block_q8_0);
      return fp16_to_fp32(load_u16(blk)) * static_cast<float>(static_cast<int8_t>(blk[2 + i % 32]));
    }
    case kv_type::q4_0: {
      const std::byte* blk = row + i / 32 * sizeof(block_q4_0);
      const size_t j = i % 32;
      const auto byte = static_cast<uint8_t>(blk[2 + j % 16]);
      const int q = (j < 16 ? byte & 0xF : byte >> 4) - 8;
      return fp16_to_fp32(load_u16(blk)) * static_cast<float>(q);
    }
  }
  return 0;
}

/// Token by token: running max m and sum l; when a score exceeds m, the sum
/// and the accumulator are rescaled by exp(m_old - m_new).
void attention_paged_scalar(size_t n_segments, size_t hd, float* out, const float* q,
                            const kv_segment* segments, size_t kv_head, float scale) noexcept {
  std::fill(out, out + hd, 0.0f);
  float m = ninf, l = 0;
  for (const kv_segment& seg : std::span(segments, n_segments)) {
    const kv_page_layout& layout = seg.layout;
    const size_t k_row = layout.k_row_bytes(), v_row = layout.v_row_bytes();
    const size_t k_off = row_bytes(layout.k_type, kv_head * hd);
    const size_t v_off = row_bytes(layout.v_type, kv_head * hd);
    for (size_t t = 0; t < seg.n_tokens; ++t) {
      const size_t page = t / layout.page_tokens, slot = t % layout.page_tokens;
      const std::byte* k = seg.k_pages[page] + slot * k_row + k_off;
      const std::byte* v = seg.v_pages[page] + slot * v_row + v_off;
      float s = 0;
      for (size_t i = 0; i < hd; ++i)
        s += q[i] * kv_value(layout.k_type, k, i);
      s *= scale;
      if (s > m) {
        const float corr = std::exp(m - s);
        l *= corr;
        for (size_t i = 0; i < hd; ++i)
          out[i] *= corr;
        m = s;
      }
      const float p = std::exp(s - m);
      l += p;
      for (size_t i = 0; i < hd; ++i)
        out[i] += p * kv_value(layout.v_type, v, i);
    }
  }
  if (!(l > 0))
    return;
  const float inv = 1.0f / l;
  for (size_t i = 0; i < hd; ++i)
    out[i] *= inv;
}

} // namespace

// ---- SIMD bodies, once per ISA ------------------------------------------
#if defined(__x86_64__)
SHOAL_BEGIN_AVX2
namespace avx2 {
namespace {
/// ops_avx2 plus what the NN bodies need.
struct S : ops_avx2 {
  /// max/min: the second operand when either is NaN (MAXPS/MINPS).
  static vf max(vf a, vf b) { return _mm256_max_ps(a, b); }
  static vf min(vf a, vf b) { return _mm256_min_ps(a, b); }
  static vf div(vf a, vf b) { return _mm256_div_ps(a, b); }
  static vf round(vf x) {
    return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  /// 2^n for integer-valued n in [-126, 127].
  static vf pow2i(vf n) {
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  }
  /// p · 2^n for integer-valued n in [-160, 130], in two steps so each
  /// power of two is a normal float (one rounding, at the last multiply).
  static vf ldexp(vf p, vf n) {
    vf a = round(mul(n, set1(0.5f)));
    return mul(mul(p, pow2i(a)), pow2i(sub(n, a)));
  }
  static float hmax(vf v) {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
  }
  /// (a0,b0,a1,b1,...) -> (b0,a0,b1,a1,...).
  static vf swap_pairs(vf v) { return _mm256_permute_ps(v, 0xB1); }
  static float f16(uint16_t h) { return _cvtsh_ss(h); }
  static vf i8x8(__m128i b) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)); }
  /// Quants [8k, 8k + 8) of a Q8_0 block as floats, k < 4.
  static vf q8_0_part(const int8_t* qs, size_t k) {
    return i8x8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs + 8 * k)));
  }
  /// Elements [8k, 8k + 8) of a Q4_0 block minus 8 as floats, k < 4:
  /// elements 0..15 are the low nibbles of bytes 0..15, 16..31 the high ones.
  static vf q4_0_part(const uint8_t* qs, size_t k) {
    __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs + 8 * (k % 2)));
    if (k >= 2)
      b = _mm_srli_epi16(b, 4);
    b = _mm_sub_epi8(_mm_and_si128(b, _mm_set1_epi8(0x0F)), _mm_set1_epi8(8));
    return i8x8(b);
  }
};
} // namespace
#include "kernels/nn_simd.inc"
} // namespace avx2
SHOAL_END_TARGET

SHOAL_BEGIN_AVX512
namespace avx512 {
namespace {
/// ops_avx512 plus what the NN bodies need. Gains over AVX2: 16 lanes, a Q8_0
/// or Q4_0 block in 2 vectors, and exp's scaling by one VSCALEFPS.
struct S : ops_avx512 {
  static vf max(vf a, vf b) { return _mm512_max_ps(a, b); }
  static vf min(vf a, vf b) { return _mm512_min_ps(a, b); }
  static vf div(vf a, vf b) { return _mm512_div_ps(a, b); }
  static vf round(vf x) {
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  /// p · 2^n (VSCALEFPS: exact scaling, one rounding for denormal results).
  static vf ldexp(vf p, vf n) { return _mm512_scalef_ps(p, n); }
  static float hmax(vf v) { return _mm512_reduce_max_ps(v); }
  static vf swap_pairs(vf v) { return _mm512_permute_ps(v, 0xB1); }
  static float f16(uint16_t h) { return _cvtsh_ss(h); }
  static vf i8x16(__m128i b) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)); }
  static vf q8_0_part(const int8_t* qs, size_t k) {
    return i8x16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs + 16 * k)));
  }
  static vf q4_0_part(const uint8_t* qs, size_t k) {
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    if (k == 1)
      b = _mm_srli_epi16(b, 4);
    return i8x16(_mm_sub_epi8(_mm_and_si128(b, _mm_set1_epi8(0x0F)), _mm_set1_epi8(8)));
  }
};
} // namespace
#include "kernels/nn_simd.inc"
} // namespace avx512
SHOAL_END_TARGET
#endif

namespace {

/// Representative inputs for `registry::tune`: a 4096-wide hidden state
/// (RMSNorm, softmax over a 4096-token row, SwiGLU over 4096), 32 heads of
/// 128 for RoPE, and one head of 128 attending over 512 F16 tokens of 8 kv
/// heads in pages of 16.
struct bench_inputs {
  static constexpr size_t n = 4096, heads = 32, head_dim = 128, kv_heads = 8, tokens = 512;
  std::vector<float> x, wt, y, table, q;
  std::vector<std::byte> k, v;
  std::vector<const std::byte*> k_pages, v_pages;
  kv_page_layout layout{16, kv_heads* head_dim, kv_type::f16, kv_type::f16};
  kv_segment segment;
  bench_inputs()
    : x(n), wt(n), y(n), table(rope_table_size(head_dim)), q(head_dim),
      k(tokens * layout.k_row_bytes()), v(tokens * layout.v_row_bytes()) {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-1, 1);
    for (size_t i = 0; i < n; ++i) {
      x[i] = 4 * u(rng);
      wt[i] = u(rng);
    }
    for (float& e : q)
      e = u(rng);
    rope_table(table, head_dim, 1000, {});
    for (size_t i = 0; i + 1 < k.size(); i += 2) {
      uint16_t hk = fp32_to_fp16(u(rng)), hv = fp32_to_fp16(u(rng));
      std::memcpy(&k[i], &hk, 2);
      std::memcpy(&v[i], &hv, 2);
    }
    for (size_t p = 0; p < tokens / layout.page_tokens; ++p) {
      k_pages.push_back(k.data() + p * layout.k_page_bytes());
      v_pages.push_back(v.data() + p * layout.v_page_bytes());
    }
    segment = {layout, k_pages, v_pages, tokens};
  }
};

bench_inputs& inputs() {
  static bench_inputs in;
  return in;
}

/// ns per `call(inputs())`, keeping the output `y` alive.
template <class Call>
double bench_y(Call call) {
  auto& in = inputs();
  return bench_ns([&] {
    call(in);
    bench_keep(in.y[0]);
  });
}

} // namespace

const kernel<rms_norm_t>& rms_norm_kernel() {
  static const kernel<rms_norm_t> k{"rms_norm_f32",
                                    "void(size_t,float*,const float*,const float*,float)",
                                    {SHOAL_VARIANTS(rms_norm_scalar, rms_norm)},
                                    [](rms_norm_t* f) {
                                      return bench_y([f](bench_inputs& in) {
                                        f(in.n, in.y.data(), in.x.data(), in.wt.data(), 1e-5f);
                                      });
                                    }};
  return k;
}

const kernel<rope_t>& rope_kernel() {
  static const kernel<rope_t> k{"rope_f32",
                                "void(size_t,size_t,size_t,float*,const float*)",
                                {SHOAL_VARIANTS(rope_scalar, rope)},
                                [](rope_t* f) {
                                  return bench_y([f](bench_inputs& in) {
                                    f(in.heads, in.head_dim, in.head_dim, in.y.data(),
                                      in.table.data());
                                  });
                                }};
  return k;
}

const kernel<softmax_t>& softmax_kernel() {
  static const kernel<softmax_t> k{
    "softmax_f32",
    "void(size_t,float*,const float*,float)",
    {SHOAL_VARIANTS(softmax_scalar, softmax)},
    [](softmax_t* f) {
      return bench_y([f](bench_inputs& in) { f(in.n, in.y.data(), in.x.data(), 1.0f); });
    }};
  return k;
}

const kernel<silu_t>& silu_kernel() {
  static const kernel<silu_t> k{"silu_f32",
                                "void(size_t,float*,const float*)",
                                {SHOAL_VARIANTS(silu_scalar, silu)},
                                [](silu_t* f) {
                                  return bench_y(
                                    [f](bench_inputs& in) { f(in.n, in.y.data(), in.x.data()); });
                                }};
  return k;
}

const kernel<swiglu_t>& swiglu_kernel() {
  static const kernel<swiglu_t> k{
    "swiglu_f32",
    "void(size_t,float*,const float*,const float*)",
    {SHOAL_VARIANTS(swiglu_scalar, swiglu)},
    [](swiglu_t* f) {
      return bench_y([f](bench_inputs& in) { f(in.n, in.y.data(), in.x.data(), in.wt.data()); });
    }};
  return k;
}

const kernel<attention_paged_t>& attention_paged_kernel() {
  static const kernel<attention_paged_t> k{
    "attention_paged",
    "void(size_t,size_t,float*,const float*,const kv_segment*,size_t,float)",
    {SHOAL_VARIANTS(attention_paged_scalar, attention_paged)},
    [](attention_paged_t* f) {
      return bench_y([f](bench_inputs& in) {
        f(1, in.head_dim, in.y.data(), in.q.data(), &in.segment, 3, 0.08838834764f);
      });
    }};
  return k;
}

void register_nn_kernels() {
  rms_norm_kernel();
  rope_kernel();
  softmax_kernel();
  silu_kernel();
  swiglu_kernel();
  attention_paged_kernel();
}

// ---- public entry points -------------------------------------------------

std::optional<kv_type> parse_kv_type(std::string_view name) noexcept {
  for (kv_type t : {kv_type::f32, kv_type::f16, kv_type::q8_0, kv_type::q4_0})
    if (name == to_string(t))
      return t;
  return std::nullopt;
}

std::optional<kv_type> kv_type_from_code(uint8_t code) noexcept {
  for (kv_type t : {kv_type::f32, kv_type::f16, kv_type::q4_0, kv_type::q8_0})
    if (static_cast<uint8_t>(t) == code)
      return t;
  return std::nullopt;
}

const char* to_string(kv_type t) noexcept {
  switch (t) {
    case kv_type::f32:
      return "f32";
    case kv_type::f16:
      return "f16";
    case kv_type::q8_0:
      return "q8_0";
    case kv_type::q4_0:
      return "q4_0";
  }
  return "?";
}

void rms_norm(std::span<float> y, std::span<const float> x, std::span<const float> w,
              float eps) noexcept {
  rms_norm_kernel().get()(x.size(), y.data(), x.data(), w.empty() ? nullptr : w.data(), eps);
}

namespace {

/// Angle of pair i = t · base_eff^(-2i/d) (see rope_params), in double.
struct rope_freqs {
  double t, base, d;
  const float* ff;
  rope_freqs(size_t n_dims, double pos, const rope_params& p)
    : t(pos / static_cast<double>(p.linear_factor)), base(p.base), d(static_cast<double>(n_dims)),
      ff(p.freq_factors) {
    if (p.ntk_factor != 1.0f && n_dims > 2)
      base *= std::pow(static_cast<double>(p.ntk_factor), d / (d - 2));
  }
  /// The table (rope_t layout) of the nd dims starting at dim d0.
  void fill(float* table, size_t d0, size_t nd) const noexcept {
    for (size_t i = 0; i < nd / 2; ++i) {
      double angle = t * std::pow(base, -static_cast<double>(d0 + 2 * i) / d);
      if (ff != nullptr)
        angle /= static_cast<double>(ff[d0 / 2 + i]);
      const auto c = static_cast<float>(std::cos(angle));
      const auto s = static_cast<float>(std::sin(angle));
      table[2 * i] = table[2 * i + 1] = c;
      table[nd + 2 * i] = -s;
      table[nd + 2 * i + 1] = s;
    }
  }
};

} // namespace

void rope_table(std::span<float> table, size_t n_dims, double pos, const rope_params& p) noexcept {
  rope_freqs(n_dims, pos, p).fill(table.data(), 0, n_dims);
}

void rope(std::span<float> x, size_t n_heads, size_t pos, const rope_params& p) noexcept {
  const size_t head_dim = x.size() / n_heads;
  const size_t n_dims = p.n_dims == 0 ? head_dim : p.n_dims;
  // Angles depend on n_dims; the table is built and applied in slices of up
  // to `slice` dims so the stack buffer stays small for any head size.
  constexpr size_t slice = 128;
  float table[rope_table_size(slice)];
  auto* fn = rope_kernel().get();
  const rope_freqs freqs(n_dims, static_cast<double>(pos), p);
  for (size_t d0 = 0; d0 < n_dims; d0 += slice) {
    const size_t nd = std::min(slice, n_dims - d0);
    freqs.fill(table, d0, nd);
    fn(n_heads, head_dim, nd, x.data() + d0, table);
  }
}

void rope_neox(size_t n_heads, size_t head_dim, size_t n_dims, float* x,
               const float* table) noexcept {
  const size_t half = n_dims / 2;
  for (size_t h = 0; h < n_heads; ++h) {
    float* row = x + h * head_dim;
    for (size_t i = 0; i < half; ++i) {
      const float c = table[2 * i], s = table[n_dims + 2 * i + 1];
      const float a = row[i], b = row[i + half];
      row[i] = a * c - b * s;
      row[i + half] = a * s + b * c;
    }
  }
}

void softmax(std::span<float> y, std::span<const float> x, float scale) noexcept {
  softmax_kernel().get()(x.size(), y.data(), x.data(), scale);
}

void silu(std::span<float> y, std::span<const float> x) noexcept {
  silu_kernel().get()(x.size(), y.data(), x.data());
}

void swiglu(std::span<float> out, std::span<const float> gate, std::span<const float> up) noexcept {
  swiglu_kernel().get()(gate.size(), out.data(), gate.data(), up.data());
}

void attention_paged(std::span<float> out, std::span<const float> q,
                     std::span<const kv_segment> segments, size_t kv_head, float scale) noexcept {
  attention_paged_kernel().get()(segments.size(), q.size(), out.data(), q.data(), segments.data(),
                                 kv_head, scale);
}

void attention_paged(std::span<float> out, std::span<const float> q,
                     std::span<const std::byte* const> k_pages,
                     std::span<const std::byte* const> v_pages, size_t n_tokens,
                     const kv_page_layout& layout, size_t kv_head, float scale) noexcept {
  const kv_segment seg{layout, k_pages, v_pages, n_tokens};
  attention_paged_kernel().get()(1, q.size(), out.data(), q.data(), &seg, kv_head, scale);
}

} // namespace shoal::kernels
