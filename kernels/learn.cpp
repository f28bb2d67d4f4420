#include "kernels/learn.hpp"

#include "kernels/simd.hpp"
#include "kernels/vector.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace shoal::kernels {

namespace {

float sigmoid(float v) noexcept {
  return 1.0f / (1.0f + std::exp(-v));
}

// ---- scalar references ---------------------------------------------------
// Plain loops in the order the formulas are written (learn.hpp); the SIMD
// variants in learn_simd.inc must agree with these within learn_nmse_bound.

void micro_lora_forward_scalar(size_t d, size_t r, float* y, const float* x, const float* a,
                               const float* bt, float scale) noexcept {
  float u[micro_lora_max_rank];
  for (size_t k = 0; k < r; ++k) {
    float s = 0;
    for (size_t i = 0; i < d; ++i)
      s += a[k * d + i] * x[i];
    u[k] = scale * s;
  }
  for (size_t i = 0; i < d; ++i) {
    float s = x[i];
    for (size_t k = 0; k < r; ++k)
      s += u[k] * bt[k * d + i];
    y[i] = s;
  }
}

void micro_lora_update_scalar(size_t d, size_t r, float* a, float* bt, const float* x,
                              const float* g, float scale, float step) noexcept {
  float u[micro_lora_max_rank], v[micro_lora_max_rank];
  for (size_t k = 0; k < r; ++k) {
    float su = 0, sv = 0;
    for (size_t i = 0; i < d; ++i) {
      su += a[k * d + i] * x[i];  // (A x)_k
      sv += bt[k * d + i] * g[i]; // (Bᵀ g)_k
    }
    u[k] = su;
    v[k] = sv;
  }
  for (size_t k = 0; k < r; ++k) {
    const float ca = step * scale * v[k], cb = step * scale * u[k];
    for (size_t i = 0; i < d; ++i) {
      a[k * d + i] -= ca * x[i];
      bt[k * d + i] -= cb * g[i];
    }
  }
}

/// FastGRNN forward, straight from the formulas (learn.hpp, fastgrnn_shape).
void fastgrnn_forward_scalar(const fastgrnn_shape* s, float* h_out, float* cache,
                             const float* params, const float* x, const float* h) noexcept {
  const size_t nx = s->n_x, nh = s->n_h, rw = s->r_w, ru = s->r_u;
  const float* w1t = params + s->w1t();
  const float* w2 = params + s->w2();
  const float* u1t = params + s->u1t();
  const float* u2 = params + s->u2();
  const float* bz = params + s->b_z();
  const float* bh = params + s->b_h();
  float* a = cache;
  float* b = a + rw;
  float* z = b + ru;
  float* c = z + nh;
  for (size_t k = 0; k < rw; ++k) {
    a[k] = 0;
    for (size_t j = 0; j < nx; ++j)
      a[k] += w2[k * nx + j] * x[j];
  }
  for (size_t k = 0; k < ru; ++k) {
    b[k] = 0;
    for (size_t j = 0; j < nh; ++j)
      b[k] += u2[k * nh + j] * h[j];
  }
  const float zeta = sigmoid(params[s->zeta()]), nu = sigmoid(params[s->nu()]);
  for (size_t i = 0; i < nh; ++i) {
    float pre = 0;
    for (size_t k = 0; k < rw; ++k)
      pre += w1t[k * nh + i] * a[k];
    for (size_t k = 0; k < ru; ++k)
      pre += u1t[k * nh + i] * b[k];
    z[i] = sigmoid(pre + bz[i]);
    c[i] = std::tanh(pre + bh[i]);
    h_out[i] = (zeta * (1 - z[i]) + nu) * c[i] + z[i] * h[i];
  }
}

/// FastGRNN backward. With go = ∂L/∂h', ζ = σ(zeta_raw), ν = σ(nu_raw):
///   ∂L/∂z  = go ⊙ (h − ζ h̃)             ∂L/∂h̃ = go ⊙ (ζ(1 − z) + ν)
///   dpz = ∂L/∂z ⊙ z(1 − z)                dph = ∂L/∂h̃ ⊙ (1 − h̃²)
///   ∂b_z = dpz, ∂b_h = dph, dpre = dpz + dph
///   ∂zeta_raw = Σ go(1 − z)h̃ · ζ(1 − ζ),  ∂nu_raw = Σ go h̃ · ν(1 − ν)
///   da = W1ᵀ dpre, db = U1ᵀ dpre  (a = W2 x, b = U2 h from the cache)
///   ∂W1 = dpre aᵀ, ∂U1 = dpre bᵀ, ∂W2 = da xᵀ, ∂U2 = db hᵀ
///   dx = W2ᵀ da,   dh = go ⊙ z + U2ᵀ db.
void fastgrnn_backward_scalar(const fastgrnn_shape* s, float* dh, float* dx, float* grads,
                              float* work, const float* params, const float* cache, const float* x,
                              const float* h, const float* dh_out) noexcept {
  const size_t nx = s->n_x, nh = s->n_h, rw = s->r_w, ru = s->r_u;
  const float* w1t = params + s->w1t();
  const float* w2 = params + s->w2();
  const float* u1t = params + s->u1t();
  const float* u2 = params + s->u2();
  const float* a = cache;
  const float* b = a + rw;
  const float* z = b + ru;
  const float* c = z + nh;
  float* dpre = work;
  float* da = dpre + nh;
  float* db = da + rw;
  const float zeta = sigmoid(params[s->zeta()]), nu = sigmoid(params[s->nu()]);
  float szeta = 0, snu = 0;
  for (size_t i = 0; i < nh; ++i) {
    const float go = dh_out[i];
    const float dpz = go * (h[i] - zeta * c[i]) * z[i] * (1 - z[i]);
    const float dph = go * (zeta * (1 - z[i]) + nu) * (1 - c[i] * c[i]);
    grads[s->b_z() + i] += dpz;
    grads[s->b_h() + i] += dph;
    dpre[i] = dpz + dph;
    szeta += go * (1 - z[i]) * c[i];
    snu += go * c[i];
    dh[i] = go * z[i];
  }
  for (size_t k = 0; k < rw; ++k) {
    da[k] = 0;
    for (size_t i = 0; i < nh; ++i) {
      da[k] += w1t[k * nh + i] * dpre[i];
      grads[s->w1t() + k * nh + i] += a[k] * dpre[i];
    }
  }
  for (size_t k = 0; k < ru; ++k) {
    db[k] = 0;
    for (size_t i = 0; i < nh; ++i) {
      db[k] += u1t[k * nh + i] * dpre[i];
      grads[s->u1t() + k * nh + i] += b[k] * dpre[i];
    }
  }
  for (size_t k = 0; k < rw; ++k)
    for (size_t j = 0; j < nx; ++j)
      grads[s->w2() + k * nx + j] += da[k] * x[j];
  for (size_t k = 0; k < ru; ++k)
    for (size_t j = 0; j < nh; ++j)
      grads[s->u2() + k * nh + j] += db[k] * h[j];
  if (dx != nullptr)
    for (size_t j = 0; j < nx; ++j) {
      dx[j] = 0;
      for (size_t k = 0; k < rw; ++k)
        dx[j] += w2[k * nx + j] * da[k];
    }
  for (size_t j = 0; j < nh; ++j)
    for (size_t k = 0; k < ru; ++k)
      dh[j] += u2[k * nh + j] * db[k];
  grads[s->zeta()] += szeta * zeta * (1 - zeta);
  grads[s->nu()] += snu * nu * (1 - nu);
}

void ewc_fisher_scalar(size_t n, float* fisher, const float* g, float gamma) noexcept {
  for (size_t i = 0; i < n; ++i)
    fisher[i] = gamma * fisher[i] + (1 - gamma) * (g[i] * g[i]);
}

float ewc_penalty_scalar(size_t n, float* grad, const float* fisher, const float* theta,
                         const float* anchor, float lambda) noexcept {
  float s = 0;
  for (size_t i = 0; i < n; ++i) {
    const float diff = theta[i] - anchor[i];
    s += fisher[i] * diff * diff;
    if (grad != nullptr)
      grad[i] += lambda * fisher[i] * diff;
  }
  return 0.5f * lambda * s;
}

void ewc_precondition_scalar(size_t n, float* g, const float* fisher, float lambda) noexcept {
  for (size_t i = 0; i < n; ++i)
    g[i] /= 1 + lambda * fisher[i];
}

} // namespace

// ---- SIMD bodies, once per ISA ------------------------------------------
#if defined(__x86_64__)
#define SHOAL_LEARN_INLINE inline __attribute__((always_inline))
#define SHOAL_LEARN_LAMBDA __attribute__((always_inline))
SHOAL_BEGIN_AVX2
namespace avx2 {
/// simd.hpp's ops plus what the learning bodies need.
struct S : ops_avx2 {
  static vf div(vf a, vf b) { return _mm256_div_ps(a, b); }
  static vf min(vf a, vf b) { return _mm256_min_ps(a, b); }
  static vf max(vf a, vf b) { return _mm256_max_ps(a, b); }
  static vf round(vf a) {
    return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  /// 2^n for integral n in [-126, 127] (built in the exponent field).
  static vf pow2i(vf n) {
    const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  }
  static __m256i lanes_below(size_t m) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(m)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  /// The first m < 8 floats at p (masked: nothing past them is read), other lanes 0.
  static vf load_n(const float* p, size_t m) { return _mm256_maskload_ps(p, lanes_below(m)); }
  static void store_n(float* p, vf v, size_t m) { _mm256_maskstore_ps(p, lanes_below(m), v); }
};
#include "kernels/learn_simd.inc"
} // namespace avx2
SHOAL_END_TARGET

SHOAL_BEGIN_AVX512
namespace avx512 {
struct S : ops_avx512 {
  static vf div(vf a, vf b) { return _mm512_div_ps(a, b); }
  static vf min(vf a, vf b) { return _mm512_min_ps(a, b); }
  static vf max(vf a, vf b) { return _mm512_max_ps(a, b); }
  static vf round(vf a) {
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static vf pow2i(vf n) {
    const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
  }
  static __mmask16 lanes_below(size_t m) { return static_cast<__mmask16>((1u << m) - 1); }
  static vf load_n(const float* p, size_t m) { return _mm512_maskz_loadu_ps(lanes_below(m), p); }
  static void store_n(float* p, vf v, size_t m) { _mm512_mask_storeu_ps(p, lanes_below(m), v); }
};
#include "kernels/learn_simd.inc"
} // namespace avx512
SHOAL_END_TARGET
#undef SHOAL_LEARN_INLINE
#undef SHOAL_LEARN_LAMBDA
#endif

namespace {

/// Representative inputs for `registry::tune`: MicroLoRA d = 256, r = 2;
/// a FastGRNN cell 32 → 64 with ranks 8 and 8; EWC over 4096 parameters.
struct bench_inputs {
  static constexpr size_t d = 256, r = 2, n_ewc = 4096;
  fastgrnn_shape cell{32, 64, 8, 8};
  std::vector<float> x, g, a, bt, y, params, grads, cache, work, h, h_out, fisher, theta, anchor;
  bench_inputs() {
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> u(-0.5f, 0.5f);
    auto fill = [&](std::vector<float>& v, size_t n) {
      v.resize(n);
      for (float& e : v)
        e = u(rng);
    };
    fill(x, d);
    fill(g, d);
    fill(a, r * d);
    fill(bt, r * d);
    y.resize(d);
    fill(params, cell.n_params());
    grads.assign(cell.n_params(), 0.0f);
    cache.resize(cell.cache_size());
    work.resize(cell.work_size());
    fill(h, cell.n_h);
    h_out.resize(cell.n_h);
    fill(fisher, n_ewc);
    fill(theta, n_ewc);
    fill(anchor, n_ewc);
  }
};

bench_inputs& inputs() {
  static bench_inputs in;
  return in;
}

} // namespace

const kernel<micro_lora_forward_t>& micro_lora_forward_kernel() {
  static const kernel<micro_lora_forward_t> k{
    "micro_lora_forward",
    "void(size_t,size_t,float*,const float*,const float*,const float*,float)",
    {SHOAL_VARIANTS(micro_lora_forward_scalar, micro_lora_forward)},
    [](micro_lora_forward_t* f) {
      auto& in = inputs();
      return bench_ns([&] {
        f(in.d, in.r, in.y.data(), in.x.data(), in.a.data(), in.bt.data(), 0.5f);
        bench_keep(in.y[0]);
      });
    }};
  return k;
}

const kernel<micro_lora_update_t>& micro_lora_update_kernel() {
  static const kernel<micro_lora_update_t> k{
    "micro_lora_update",
    "void(size_t,size_t,float*,float*,const float*,const float*,float,float)",
    {SHOAL_VARIANTS(micro_lora_update_scalar, micro_lora_update)},
    [](micro_lora_update_t* f) {
      auto& in = inputs();
      float sign = 1e-6f; // alternate the step: the factors stay where they are
      return bench_ns([&] {
        f(in.d, in.r, in.a.data(), in.bt.data(), in.x.data(), in.g.data(), 0.5f, sign);
        sign = -sign;
        bench_keep(in.a[0]);
      });
    }};
  return k;
}

const kernel<fastgrnn_forward_t>& fastgrnn_forward_kernel() {
  static const kernel<fastgrnn_forward_t> k{
    "fastgrnn_forward",
    "void(const fastgrnn_shape*,float*,float*,const float*,const float*,const float*)",
    {SHOAL_VARIANTS(fastgrnn_forward_scalar, fastgrnn_forward)},
    [](fastgrnn_forward_t* f) {
      auto& in = inputs();
      return bench_ns([&] {
        f(&in.cell, in.h_out.data(), in.cache.data(), in.params.data(), in.x.data(), in.h.data());
        bench_keep(in.h_out[0]);
      });
    }};
  return k;
}

const kernel<fastgrnn_backward_t>& fastgrnn_backward_kernel() {
  static const kernel<fastgrnn_backward_t> k{
    "fastgrnn_backward",
    "void(const fastgrnn_shape*,float*,float*,float*,float*,const float*,const float*,const "
    "float*,const float*,const float*)",
    {SHOAL_VARIANTS(fastgrnn_backward_scalar, fastgrnn_backward)},
    [](fastgrnn_backward_t* f) {
      auto& in = inputs();
      fastgrnn_forward_scalar(&in.cell, in.h_out.data(), in.cache.data(), in.params.data(),
                              in.x.data(), in.h.data());
      std::vector<float> dh(in.cell.n_h), dx(in.cell.n_x);
      return bench_ns([&] {
        f(&in.cell, dh.data(), dx.data(), in.grads.data(), in.work.data(), in.params.data(),
          in.cache.data(), in.x.data(), in.h.data(), in.h_out.data());
        bench_keep(dh[0]);
      });
    }};
  return k;
}

const kernel<ewc_fisher_t>& ewc_fisher_kernel() {
  static const kernel<ewc_fisher_t> k{"ewc_fisher",
                                      "void(size_t,float*,const float*,float)",
                                      {SHOAL_VARIANTS(ewc_fisher_scalar, ewc_fisher)},
                                      [](ewc_fisher_t* f) {
                                        auto& in = inputs();
                                        return bench_ns([&] {
                                          f(in.n_ewc, in.fisher.data(), in.theta.data(), 0.99f);
                                          bench_keep(in.fisher[0]);
                                        });
                                      }};
  return k;
}

const kernel<ewc_penalty_t>& ewc_penalty_kernel() {
  static const kernel<ewc_penalty_t> k{
    "ewc_penalty",
    "float(size_t,float*,const float*,const float*,const float*,float)",
    {SHOAL_VARIANTS(ewc_penalty_scalar, ewc_penalty)},
    [](ewc_penalty_t* f) {
      auto& in = inputs();
      std::vector<float> grad(in.n_ewc, 0.0f);
      return bench_ns([&] {
        bench_keep(
          f(in.n_ewc, grad.data(), in.fisher.data(), in.theta.data(), in.anchor.data(), 1e-3f));
      });
    }};
  return k;
}

const kernel<ewc_precondition_t>& ewc_precondition_kernel() {
  static const kernel<ewc_precondition_t> k{
    "ewc_precondition",
    "void(size_t,float*,const float*,float)",
    {SHOAL_VARIANTS(ewc_precondition_scalar, ewc_precondition)},
    [](ewc_precondition_t* f) {
      auto& in = inputs();
      std::vector<float> g = in.theta;
      return bench_ns([&] {
               f(in.n_ewc, g.data(), in.fisher.data(), -1e-3f); // ±: g stays bounded
               f(in.n_ewc, g.data(), in.fisher.data(), 1e-3f);
               bench_keep(g[0]);
             })
             / 2;
    }};
  return k;
}

void register_learn_kernels() {
  micro_lora_forward_kernel();
  micro_lora_update_kernel();
  fastgrnn_forward_kernel();
  fastgrnn_backward_kernel();
  ewc_fisher_kernel();
  ewc_penalty_kernel();
  ewc_precondition_kernel();
}

// ---- MicroLoRA ---------------------------------------------------------------

void micro_lora_forward(std::span<float> y, std::span<const float> x, std::span<const float> a,
                        std::span<const float> bt, float alpha) noexcept {
  const size_t d = x.size();
  if (d == 0)
    return;
  const size_t r = a.size() / d;
  micro_lora_forward_kernel().get()(d, r, y.data(), x.data(), a.data(), bt.data(),
                                    alpha / static_cast<float>(r));
}

void micro_lora_update(std::span<float> a, std::span<float> bt, std::span<const float> x,
                       std::span<const float> g, float alpha, float lr) noexcept {
  const size_t d = x.size();
  if (d == 0)
    return;
  const size_t r = a.size() / d;
  micro_lora_update_kernel().get()(d, r, a.data(), bt.data(), x.data(), g.data(),
                                   alpha / static_cast<float>(r), lr);
}

void micro_lora_update_reward(std::span<float> a, std::span<float> bt, std::span<const float> x,
                              std::span<const float> score, float alpha, float lr,
                              float advantage) noexcept {
  micro_lora_update(a, bt, x, score, alpha, -lr * advantage);
}

// ---- FastGRNN ----------------------------------------------------------------

void fastgrnn_forward(const fastgrnn_shape& s, std::span<float> h_out, std::span<float> cache,
                      std::span<const float> params, std::span<const float> x,
                      std::span<const float> h) noexcept {
  fastgrnn_forward_kernel().get()(&s, h_out.data(), cache.data(), params.data(), x.data(),
                                  h.data());
}

void fastgrnn_backward(const fastgrnn_shape& s, std::span<float> dh, std::span<float> dx,
                       std::span<float> grads, std::span<float> work, std::span<const float> params,
                       std::span<const float> cache, std::span<const float> x,
                       std::span<const float> h, std::span<const float> dh_out) noexcept {
  fastgrnn_backward_kernel().get()(&s, dh.data(), dx.empty() ? nullptr : dx.data(), grads.data(),
                                   work.data(), params.data(), cache.data(), x.data(), h.data(),
                                   dh_out.data());
}

void hard_threshold(std::span<float> w, size_t keep) noexcept {
  const size_t n = w.size();
  if (keep >= n)
    return;
  // Magnitudes compare as their bit patterns without the sign (NaNs above
  // +Inf). Find the largest t with #{|w_i| ≥ t} ≥ keep by bisection.
  auto mag = [](float v) {
    uint32_t b;
    std::memcpy(&b, &v, sizeof b);
    return b & 0x7fffffffu;
  };
  auto count_at_least = [&](uint32_t t) {
    size_t c = 0;
    for (float v : w)
      c += mag(v) >= t;
    return c;
  };
  uint32_t lo = 0, hi = 0x80000000u; // count(lo) = n ≥ keep; count(hi) = 0 < keep unless keep = 0
  if (keep == 0)
    lo = hi;
  while (hi - lo > 1) {
    const uint32_t mid = lo + (hi - lo) / 2;
    (count_at_least(mid) >= keep ? lo : hi) = mid;
  }
  size_t ties = keep - (lo == hi ? 0 : count_at_least(lo + 1)); // entries == lo to keep
  for (float& v : w) {
    const uint32_t m = mag(v);
    if (m > lo)
      continue;
    if (m == lo && m != 0 && ties > 0) {
      --ties;
      continue;
    }
    v = 0.0f;
  }
}

// ---- EWC++ -------------------------------------------------------------------

void ewc_update_fisher(std::span<float> fisher, std::span<const float> g, float gamma) noexcept {
  ewc_fisher_kernel().get()(fisher.size(), fisher.data(), g.data(), gamma);
}

float ewc_penalty(std::span<const float> fisher, std::span<const float> theta,
                  std::span<const float> anchor, float lambda) noexcept {
  return ewc_penalty_kernel().get()(fisher.size(), nullptr, fisher.data(), theta.data(),
                                    anchor.data(), lambda);
}

float ewc_penalty_grad(std::span<float> grad, std::span<const float> fisher,
                       std::span<const float> theta, std::span<const float> anchor,
                       float lambda) noexcept {
  return ewc_penalty_kernel().get()(fisher.size(), grad.data(), fisher.data(), theta.data(),
                                    anchor.data(), lambda);
}

void ewc_precondition(std::span<float> g, std::span<const float> fisher, float lambda) noexcept {
  ewc_precondition_kernel().get()(g.size(), g.data(), fisher.data(), lambda);
}

void ewc_consolidate(std::span<float> anchor, std::span<const float> theta) noexcept {
  std::copy(theta.begin(), theta.end(), anchor.begin());
}

// ---- k-means++ ---------------------------------------------------------------

uint64_t kmeans_rng::next() noexcept {
  uint64_t z = (state += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

double kmeans_rng::uniform() noexcept {
  return static_cast<double>(next() >> 11) * 0x1p-53;
}

size_t kmeans_scratch_size(size_t n, size_t k, size_t dim) noexcept {
  return std::max(n, k * dim + 3 * k);
}

void kmeans_seed_pp(std::span<float> centroids, std::span<const float> data, size_t dim,
                    kmeans_rng& rng, std::span<float> scratch) noexcept {
  const size_t n = data.size() / dim, k = centroids.size() / dim;
  if (n == 0 || k == 0)
    return;
  auto point = [&](size_t i) { return data.subspan(i * dim, dim); };
  auto pick_uniform = [&] {
    return std::min(n - 1, static_cast<size_t>(rng.uniform() * double(n)));
  };
  float* d2 = scratch.data(); // [n] squared distance to the nearest centroid so far
  size_t chosen = pick_uniform();
  for (size_t c = 0;; ++c) {
    auto centroid = centroids.subspan(c * dim, dim);
    std::copy_n(point(chosen).begin(), dim, centroid.begin());
    if (c + 1 == k)
      break;
    double total = 0;
    for (size_t i = 0; i < n; ++i) {
      const float dist = l2sq(point(i), centroid);
      d2[i] = c == 0 ? dist : std::min(d2[i], dist);
      total += d2[i];
    }
    if (!(total > 0)) { // every point sits on a centroid: no D² mass left
      chosen = pick_uniform();
      continue;
    }
    // D² sampling: the first i whose cumulative mass exceeds u·total; the
    // last point with mass if rounding leaves the target just past the end.
    const double target = rng.uniform() * total;
    double cum = 0;
    chosen = n;
    for (size_t i = 0; i < n && chosen == n; ++i) {
      cum += d2[i];
      if (cum > target)
        chosen = i;
    }
    for (size_t i = n; chosen == n && i-- > 0;)
      if (d2[i] > 0)
        chosen = i;
  }
}

kmeans_result kmeans_lloyd(std::span<float> centroids, std::span<uint32_t> assign,
                           std::span<const float> data, size_t dim, size_t max_iter,
                           std::span<float> scratch) noexcept {
  kmeans_result res;
  const size_t n = data.size() / dim, k = centroids.size() / dim;
  if (n == 0 || k == 0)
    return res;
  float* norms = scratch.data(); // [k] ‖c‖²
  float* dots = norms + k;       // [k] x·c
  float* counts = dots + k;      // [k] points per cluster (exact below 2^24)
  float* sums = counts + k;      // [k, dim]
  auto point = [&](size_t i) { return data.subspan(i * dim, dim); };
  auto centroid = [&](size_t c) { return centroids.subspan(c * dim, dim); };

  // One assignment pass; returns how many points changed cluster.
  auto assign_all = [&](bool first) {
    for (size_t c = 0; c < k; ++c)
      norms[c] = dot(centroid(c), centroid(c));
    size_t changed = 0;
    for (size_t i = 0; i < n; ++i) {
      dot_rows({dots, k}, point(i), centroids);
      uint32_t best = 0;
      float best_d = norms[0] - 2 * dots[0];
      for (size_t c = 1; c < k; ++c) {
        const float dc = norms[c] - 2 * dots[c];
        if (dc < best_d) {
          best_d = dc;
          best = static_cast<uint32_t>(c);
        }
      }
      changed += first || assign[i] != best;
      assign[i] = best;
    }
    return changed;
  };

  size_t changed = assign_all(true);
  while (changed > 0 && res.iterations < max_iter) {
    std::fill_n(counts, k, 0.0f);
    std::fill_n(sums, k * dim, 0.0f);
    for (size_t i = 0; i < n; ++i) {
      counts[assign[i]] += 1;
      float* s = sums + assign[i] * dim;
      const float* x = data.data() + i * dim;
      for (size_t j = 0; j < dim; ++j)
        s[j] += x[j];
    }
    for (size_t c = 0; c < k; ++c)
      if (counts[c] > 0) {
        const float inv = 1.0f / counts[c];
        for (size_t j = 0; j < dim; ++j)
          centroids[c * dim + j] = sums[c * dim + j] * inv;
      }
    ++res.iterations;
    changed = assign_all(false);
  }
  res.converged = changed == 0;
  for (size_t i = 0; i < n; ++i)
    res.inertia += l2sq(point(i), centroid(assign[i]));
  return res;
}

kmeans_result kmeans_pp(std::span<float> centroids, std::span<uint32_t> assign,
                        std::span<const float> data, size_t dim, size_t max_iter, kmeans_rng& rng,
                        std::span<float> scratch) noexcept {
  kmeans_seed_pp(centroids, data, dim, rng, scratch);
  return kmeans_lloyd(centroids, assign, data, dim, max_iter, scratch);
}

} // namespace shoal::kernels
