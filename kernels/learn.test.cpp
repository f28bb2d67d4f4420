#include "kernels/learn.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

using namespace shoal::kernels;

namespace {

using dvec = std::vector<double>;
using fvec = std::vector<float>;

/// Input families of the variant checks: random, zeros, large magnitudes
/// (×1e15, results stay finite), subnormals (×1e-39).
enum class family { random, zeros, large, denormal };
const family families[] = {family::random, family::zeros, family::large, family::denormal};

const char* name_of(family f) {
  switch (f) {
    case family::random:
      return "random";
    case family::zeros:
      return "zeros";
    case family::large:
      return "large";
    case family::denormal:
      return "denormal";
  }
  return "?";
}

float scale_of(family f) {
  switch (f) {
    case family::zeros:
      return 0.0f;
    case family::large:
      return 1e15f;
    case family::denormal:
      return 1e-39f;
    default:
      return 1.0f;
  }
}

fvec uniform(size_t n, std::mt19937& rng, float amp = 1.0f) {
  std::uniform_real_distribution<float> u(-1, 1);
  fvec v(n);
  for (float& x : v)
    x = u(rng) * amp;
  return v;
}

dvec to_d(const fvec& v) {
  return dvec(v.begin(), v.end());
}

/// Checks `got` against the exact `want`: NMSE ≤ learn_nmse_bound, or, where
/// the values are subnormal and precision is absolute, every element within
/// (terms + 2)·2^-149 (`terms` = products summed into one output).
void check_agree(const fvec& got, const dvec& want, size_t terms) {
  REQUIRE(got.size() == want.size());
  double err = 0, ref = 0, max_abs = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = double(got[i]) - want[i];
    err += e * e;
    ref += want[i] * want[i];
    max_abs = std::max(max_abs, std::abs(e));
  }
  const bool within_nmse = ref > 0 ? err / ref <= learn_nmse_bound : err == 0;
  const bool within_abs = max_abs <= (double(terms) + 2) * 0x1p-149;
  CAPTURE(err / std::max(ref, 1e-300));
  CAPTURE(max_abs);
  CHECK((within_nmse || within_abs));
}

// ---- MicroLoRA reference in double -----------------------------------------

/// y = x + s · B (A x) with a = A [r, d], bt = Bᵀ [r, d].
dvec lora_forward_ref(size_t d, size_t r, const dvec& x, const dvec& a, const dvec& bt, double s) {
  dvec u(r, 0.0), y(x);
  for (size_t k = 0; k < r; ++k)
    for (size_t i = 0; i < d; ++i)
      u[k] += a[k * d + i] * x[i];
  for (size_t i = 0; i < d; ++i)
    for (size_t k = 0; k < r; ++k)
      y[i] += s * u[k] * bt[k * d + i];
  return y;
}

/// One MicroLoRA input: x [d] scaled by the family, A and Bᵀ [r, d] in
/// [-1, 1] (zero for the zeros family).
struct lora_case {
  std::string what;
  fvec x, a, bt;
  lora_case(const std::string& variant, family f, size_t d, size_t r, std::mt19937& rng)
    : what(variant + " " + name_of(f) + " d=" + std::to_string(d) + " r=" + std::to_string(r)),
      x(uniform(d, rng, scale_of(f))), a(uniform(r * d, rng, f == family::zeros ? 0.0f : 1.0f)),
      bt(uniform(r * d, rng, f == family::zeros ? 0.0f : 1.0f)) {}
};

} // namespace

// ---- MicroLoRA ---------------------------------------------------------------

TEST_CASE("micro_lora_forward: every variant matches the exact result for r = 1..8") {
  std::mt19937 rng(1);
  for (const auto& [name, fn] : micro_lora_forward_kernel().runnable())
    for (family f : families)
      for (size_t d : {1u, 7u, 16u, 17u, 33u, 64u, 255u, 256u, 1000u})
        for (size_t r = 1; r <= micro_lora_max_rank; ++r) {
          const lora_case c(name, f, d, r, rng);
          CAPTURE(c.what);
          const fvec &x = c.x, &a = c.a, &bt = c.bt;
          const float s = 2.0f / float(r);
          fvec y(d, -7.0f);
          fn(d, r, y.data(), x.data(), a.data(), bt.data(), s);
          check_agree(y, lora_forward_ref(d, r, to_d(x), to_d(a), to_d(bt), s), r * d + r);
          fvec in_place = x; // y == x is allowed
          fn(d, r, in_place.data(), in_place.data(), a.data(), bt.data(), s);
          CHECK(in_place == y);
        }
}

TEST_CASE("micro_lora_update: every variant matches the exact step on both factors") {
  std::mt19937 rng(2);
  for (const auto& [name, fn] : micro_lora_update_kernel().runnable())
    for (family f : families)
      for (size_t d : {1u, 7u, 16u, 17u, 33u, 256u, 1000u})
        for (size_t r = 1; r <= micro_lora_max_rank; ++r) {
          const lora_case c(name, f, d, r, rng);
          CAPTURE(c.what);
          const fvec& x = c.x;
          fvec a = c.a, bt = c.bt;
          const fvec g = uniform(d, rng, f == family::large ? 1.0f : scale_of(f));
          const float s = 1.0f / float(r), step = 0.5f;
          // exact: u = A x, v = Bᵀ g; A -= step·s·v xᵀ; Bᵀ[k] -= step·s·u[k]·g
          dvec ea = to_d(a), eb = to_d(bt), u(r, 0.0), v(r, 0.0);
          for (size_t k = 0; k < r; ++k)
            for (size_t i = 0; i < d; ++i) {
              u[k] += ea[k * d + i] * x[i];
              v[k] += eb[k * d + i] * g[i];
            }
          for (size_t k = 0; k < r; ++k)
            for (size_t i = 0; i < d; ++i) {
              ea[k * d + i] -= double(step) * s * v[k] * x[i];
              eb[k * d + i] -= double(step) * s * u[k] * g[i];
            }
          fn(d, r, a.data(), bt.data(), x.data(), g.data(), s, step);
          check_agree(a, ea, d + 2);
          check_agree(bt, eb, d + 2);
        }
}

namespace {

/// ½‖y − t‖² of the MicroLoRA output, in double.
double lora_loss(size_t d, size_t r, const dvec& x, const dvec& a, const dvec& bt, double s,
                 const dvec& t) {
  const dvec y = lora_forward_ref(d, r, x, a, bt, s);
  double l = 0;
  for (size_t i = 0; i < d; ++i)
    l += 0.5 * (y[i] - t[i]) * (y[i] - t[i]);
  return l;
}

} // namespace

TEST_CASE(
  "micro_lora_update: the step is minus the gradient of both factors (finite differences)") {
  std::mt19937 rng(3);
  const size_t d = 19, r = 3;
  const float alpha = 1.5f, s = alpha / float(r);
  const fvec x = uniform(d, rng), t = uniform(d, rng);
  const fvec a0 = uniform(r * d, rng), b0 = uniform(r * d, rng);
  fvec y(d);
  micro_lora_forward(y, x, a0, b0, alpha);
  fvec g(d);
  for (size_t i = 0; i < d; ++i)
    g[i] = y[i] - t[i]; // ∂(½‖y − t‖²)/∂y
  fvec a = a0, bt = b0;
  micro_lora_update(a, bt, x, g, alpha, 1.0f); // lr = 1: θ − θ' = ∂L/∂θ
  // L is quadratic in each single entry, so the central difference is exact
  // up to double rounding.
  const double eps = 1e-2;
  auto fd = [&](size_t j, bool in_a) {
    dvec da = to_d(a0), db = to_d(b0);
    double& p = in_a ? da[j] : db[j];
    p += eps;
    const double up = lora_loss(d, r, to_d(x), da, db, s, to_d(t));
    p -= 2 * eps;
    const double down = lora_loss(d, r, to_d(x), da, db, s, to_d(t));
    return (up - down) / (2 * eps);
  };
  double max_rel = 0;
  for (size_t j = 0; j < r * d; ++j) {
    const double ga = fd(j, true), gb = fd(j, false);
    const double got_a = double(a0[j]) - a[j], got_b = double(b0[j]) - bt[j];
    max_rel = std::max(max_rel, std::abs(got_a - ga) / (std::abs(ga) + 1e-3));
    max_rel = std::max(max_rel, std::abs(got_b - gb) / (std::abs(gb) + 1e-3));
  }
  CHECK(max_rel < 1e-4);
}

namespace {

/// Trains y = x + (α/r) B A x towards y* = x + M x (M of rank 2) by SGD on
/// ½‖y − y*‖²; `train_a` false restores A after every step (only B learns,
/// as RuVector's MicroLoRA). Returns the held-out loss before and after.
struct toy_result {
  double loss_before, loss_after;
  fvec a0, a, bt;
};

toy_result train_toy(bool train_a) {
  const size_t d = 32, r = 2, steps = 3000;
  const float alpha = 2.0f, lr = 0.02f;
  std::mt19937 rng(4);
  std::normal_distribution<float> n01(0, 1);
  fvec p(d * r), q(d * r); // M = P Qᵀ · 0.3
  for (float& v : p)
    v = n01(rng);
  for (float& v : q)
    v = n01(rng) / std::sqrt(float(d));
  auto target = [&](const fvec& x) {
    fvec y = x;
    for (size_t k = 0; k < r; ++k) {
      float qx = 0;
      for (size_t i = 0; i < d; ++i)
        qx += q[k * d + i] * x[i];
      for (size_t i = 0; i < d; ++i)
        y[i] += 0.3f * p[k * d + i] * qx;
    }
    return y;
  };
  auto sample = [&] {
    fvec x(d);
    for (float& v : x)
      v = n01(rng);
    return x;
  };
  toy_result res;
  res.a0.resize(r * d);
  for (float& v : res.a0)
    v = n01(rng) / std::sqrt(float(d)); // LoRA init: A random, B = 0
  res.a = res.a0;
  res.bt.assign(r * d, 0.0f);
  std::vector<fvec> held;
  for (int i = 0; i < 200; ++i)
    held.push_back(sample());
  auto held_loss = [&] {
    double l = 0;
    fvec y(d);
    for (const fvec& x : held) {
      micro_lora_forward(y, x, res.a, res.bt, alpha);
      const fvec t = target(x);
      for (size_t i = 0; i < d; ++i)
        l += 0.5 * double(y[i] - t[i]) * (y[i] - t[i]);
    }
    return l / double(held.size());
  };
  res.loss_before = held_loss();
  fvec y(d), g(d);
  for (size_t s = 0; s < steps; ++s) {
    const fvec x = sample(), t = target(x);
    micro_lora_forward(y, x, res.a, res.bt, alpha);
    for (size_t i = 0; i < d; ++i)
      g[i] = y[i] - t[i];
    const fvec a_before = res.a;
    micro_lora_update(res.a, res.bt, x, g, alpha, lr);
    if (!train_a)
      res.a = a_before;
  }
  res.loss_after = held_loss();
  return res;
}

double dist(const fvec& u, const fvec& v) {
  double s = 0;
  for (size_t i = 0; i < u.size(); ++i)
    s += double(u[i] - v[i]) * (u[i] - v[i]);
  return std::sqrt(s);
}

} // namespace

TEST_CASE("micro_lora_update: both factors learn and the loss falls on a toy regression") {
  const toy_result both = train_toy(true);
  const toy_result b_only = train_toy(false);
  CAPTURE(both.loss_before);
  CAPTURE(both.loss_after);
  CAPTURE(b_only.loss_after);
  const double norm_a0 = dist(both.a0, fvec(both.a0.size(), 0.0f));
  CHECK(dist(both.a, both.a0) > 0.2 * norm_a0);           // A moved
  CHECK(dist(both.bt, fvec(both.bt.size(), 0.0f)) > 0.1); // B moved away from its zero init
  CHECK(both.loss_after < 0.01 * both.loss_before);
  // A frozen (B only, as the prior art trains) cannot align A's row space
  // with the target's: it stays far above.
  CHECK(b_only.loss_after > 10 * both.loss_after);
}

TEST_CASE("micro_lora_update_reward: a scaled gradient ascent step on scoreᵀy") {
  std::mt19937 rng(5);
  const size_t d = 40, r = 4;
  const float alpha = 1.0f, lr = 0.01f;
  const fvec x = uniform(d, rng), score = uniform(d, rng);
  const fvec a0 = uniform(r * d, rng), b0 = uniform(r * d, rng);
  auto objective = [&](const fvec& a, const fvec& bt) {
    fvec y(d);
    micro_lora_forward(y, x, a, bt, alpha);
    double s = 0;
    for (size_t i = 0; i < d; ++i)
      s += double(score[i]) * y[i];
    return s;
  };
  const double before = objective(a0, b0);
  for (float adv : {2.0f, -1.5f, 0.0f}) {
    CAPTURE(adv);
    fvec a = a0, bt = b0, a_ref = a0, b_ref = b0;
    micro_lora_update_reward(a, bt, x, score, alpha, lr, adv);
    micro_lora_update(a_ref, b_ref, x, score, alpha, -lr * adv);
    CHECK(a == a_ref); // exactly the gradient step with lr·(−advantage)
    CHECK(bt == b_ref);
    const double after = objective(a, bt);
    if (adv > 0)
      CHECK(after > before);
    else if (adv < 0)
      CHECK(after < before);
    else
      CHECK((a == a0 && bt == b0));
  }
}

TEST_CASE("micro_lora: d = 0 is a no-op") {
  fvec empty;
  micro_lora_forward(empty, empty, empty, empty, 1.0f);
  micro_lora_update(empty, empty, empty, empty, 1.0f, 0.1f);
  CHECK(empty.empty());
}

// ---- FastGRNN ------------------------------------------------------------------

namespace {

double dsig(double v) {
  return 1.0 / (1.0 + std::exp(-v));
}

/// FastGRNN in double: forward returns h'; backward (from the same inputs)
/// fills ∂(dh_outᵀ h')/∂θ, /∂x, /∂h.
struct grnn_ref {
  fastgrnn_shape s;
  dvec p, x, h;
  dvec a, b, z, c, out;

  void forward() {
    const size_t nx = s.n_x, nh = s.n_h;
    a.assign(s.r_w, 0);
    b.assign(s.r_u, 0);
    for (size_t k = 0; k < s.r_w; ++k)
      for (size_t j = 0; j < nx; ++j)
        a[k] += p[s.w2() + k * nx + j] * x[j];
    for (size_t k = 0; k < s.r_u; ++k)
      for (size_t j = 0; j < nh; ++j)
        b[k] += p[s.u2() + k * nh + j] * h[j];
    const double zeta = dsig(p[s.zeta()]), nu = dsig(p[s.nu()]);
    z.assign(nh, 0);
    c.assign(nh, 0);
    out.assign(nh, 0);
    for (size_t i = 0; i < nh; ++i) {
      double pre = 0;
      for (size_t k = 0; k < s.r_w; ++k)
        pre += p[s.w1t() + k * nh + i] * a[k];
      for (size_t k = 0; k < s.r_u; ++k)
        pre += p[s.u1t() + k * nh + i] * b[k];
      z[i] = dsig(pre + p[s.b_z() + i]);
      c[i] = std::tanh(pre + p[s.b_h() + i]);
      out[i] = (zeta * (1 - z[i]) + nu) * c[i] + z[i] * h[i];
    }
  }

  void backward(const dvec& go, dvec& gp, dvec& gx, dvec& gh) const {
    const size_t nx = s.n_x, nh = s.n_h;
    const double zeta = dsig(p[s.zeta()]), nu = dsig(p[s.nu()]);
    gp.assign(s.n_params(), 0);
    gx.assign(nx, 0);
    gh.assign(nh, 0);
    dvec dpre(nh), da(s.r_w, 0), db(s.r_u, 0);
    for (size_t i = 0; i < nh; ++i) {
      const double dz = go[i] * (h[i] - zeta * c[i]), dc = go[i] * (zeta * (1 - z[i]) + nu);
      const double dpz = dz * z[i] * (1 - z[i]), dph = dc * (1 - c[i] * c[i]);
      gp[s.b_z() + i] = dpz;
      gp[s.b_h() + i] = dph;
      dpre[i] = dpz + dph;
      gp[s.zeta()] += go[i] * (1 - z[i]) * c[i] * zeta * (1 - zeta);
      gp[s.nu()] += go[i] * c[i] * nu * (1 - nu);
      gh[i] = go[i] * z[i];
    }
    for (size_t k = 0; k < s.r_w; ++k)
      for (size_t i = 0; i < nh; ++i) {
        da[k] += p[s.w1t() + k * nh + i] * dpre[i];
        gp[s.w1t() + k * nh + i] = a[k] * dpre[i];
      }
    for (size_t k = 0; k < s.r_u; ++k)
      for (size_t i = 0; i < nh; ++i) {
        db[k] += p[s.u1t() + k * nh + i] * dpre[i];
        gp[s.u1t() + k * nh + i] = b[k] * dpre[i];
      }
    for (size_t k = 0; k < s.r_w; ++k)
      for (size_t j = 0; j < nx; ++j) {
        gp[s.w2() + k * nx + j] = da[k] * x[j];
        gx[j] += p[s.w2() + k * nx + j] * da[k];
      }
    for (size_t k = 0; k < s.r_u; ++k)
      for (size_t j = 0; j < nh; ++j) {
        gp[s.u2() + k * nh + j] = db[k] * h[j];
        gh[j] += p[s.u2() + k * nh + j] * db[k];
      }
  }
};

/// "<variant> <family> n_x→n_h r_w/r_u" for failure messages.
std::string describe(const std::string& variant, family f, const fastgrnn_shape& s) {
  return variant + " " + name_of(f) + " " + std::to_string(s.n_x) + "→" + std::to_string(s.n_h)
         + " ranks " + std::to_string(s.r_w) + "/" + std::to_string(s.r_u);
}

const fastgrnn_shape grnn_shapes[] = {{1, 1, 1, 1},   {3, 5, 1, 2},   {16, 32, 4, 4},
                                      {17, 33, 5, 3}, {32, 64, 8, 8}, {40, 100, 16, 9},
                                      {7, 20, 20, 1}};

} // namespace

TEST_CASE("fastgrnn_forward: every variant matches the exact cell") {
  std::mt19937 rng(6);
  for (const auto& [name, fn] : fastgrnn_forward_kernel().runnable())
    for (family f : families)
      for (const fastgrnn_shape& s : grnn_shapes) {
        const std::string what = describe(name, f, s);
        CAPTURE(what);
        fvec p = uniform(s.n_params(), rng, f == family::zeros ? 0.0f : 0.5f);
        const fvec x = uniform(s.n_x, rng, scale_of(f)), h = uniform(s.n_h, rng, scale_of(f));
        fvec out(s.n_h), cache(s.cache_size());
        fn(&s, out.data(), cache.data(), p.data(), x.data(), h.data());
        grnn_ref ref{s, to_d(p), to_d(x), to_d(h), {}, {}, {}, {}, {}};
        ref.forward();
        const size_t terms = s.r_w * (s.n_x + 1) + s.r_u * (s.n_h + 1) + 4;
        check_agree(out, ref.out, terms);
        check_agree(
          fvec(cache.begin() + long(s.r_w + s.r_u), cache.begin() + long(s.r_w + s.r_u + s.n_h)),
          ref.z, terms);
        fvec in_place = h; // h_out == h is allowed
        fn(&s, in_place.data(), cache.data(), p.data(), x.data(), in_place.data());
        CHECK(in_place == out);
      }
}

TEST_CASE("fastgrnn_backward: every variant matches the exact gradients") {
  std::mt19937 rng(7);
  for (const auto& [name, fn] : fastgrnn_backward_kernel().runnable())
    for (family f : {family::random, family::zeros, family::large})
      for (const fastgrnn_shape& s : grnn_shapes) {
        const std::string what = describe(name, f, s);
        CAPTURE(what);
        // large: saturating inputs (gates at 0/1, tanh at ±1)
        const fvec p = uniform(s.n_params(), rng, f == family::zeros ? 0.0f : 0.5f);
        const fvec x = uniform(s.n_x, rng, scale_of(f)), h = uniform(s.n_h, rng);
        const fvec go = uniform(s.n_h, rng);
        fvec out(s.n_h), cache(s.cache_size()), work(s.work_size());
        fastgrnn_forward_kernel().runnable().front().second(&s, out.data(), cache.data(), p.data(),
                                                            x.data(), h.data());
        fvec grads(s.n_params(), 0.0f), dh(s.n_h), dx(s.n_x);
        fn(&s, dh.data(), dx.data(), grads.data(), work.data(), p.data(), cache.data(), x.data(),
           h.data(), go.data());
        grnn_ref ref{s, to_d(p), to_d(x), to_d(h), {}, {}, {}, {}, {}};
        ref.forward();
        dvec gp, gx, gh;
        ref.backward(to_d(go), gp, gx, gh);
        const size_t terms = 4 * (s.n_h + s.n_x) + 8;
        auto block = [](const fvec& v, size_t off, size_t n) {
          return fvec(v.begin() + long(off), v.begin() + long(off + n));
        };
        auto dblock = [](const dvec& v, size_t off, size_t n) {
          return dvec(v.begin() + long(off), v.begin() + long(off + n));
        };
        // each parameter block on its own: they differ in magnitude
        const size_t offs[] = {s.w1t(), s.w2(), s.u1t(), s.u2(), s.b_z(), s.b_h(), s.zeta()};
        const size_t ends[] = {s.w2(), s.u1t(), s.u2(), s.b_z(), s.b_h(), s.zeta(), s.n_params()};
        for (size_t j = 0; j < 7; ++j) {
          CAPTURE(j);
          check_agree(block(grads, offs[j], ends[j] - offs[j]),
                      dblock(gp, offs[j], ends[j] - offs[j]), terms);
        }
        check_agree(dh, gh, terms);
        check_agree(dx, gx, terms);
        // dh may be the same array as dh_out; grads accumulate
        fvec dh2 = go, grads2(s.n_params(), 1.0f);
        fn(&s, dh2.data(), nullptr, grads2.data(), work.data(), p.data(), cache.data(), x.data(),
           h.data(), dh2.data());
        CHECK(dh2 == dh);
        for (size_t i = 0; i < grads.size(); ++i)
          CHECK(grads2[i] == doctest::Approx(1.0 + grads[i]).epsilon(1e-5));
      }
}

TEST_CASE("fastgrnn_backward: gradients of every parameter, x and h match finite differences") {
  std::mt19937 rng(8);
  const fastgrnn_shape s{5, 7, 3, 2};
  const fvec p = uniform(s.n_params(), rng, 0.8f), x = uniform(s.n_x, rng), h = uniform(s.n_h, rng),
             go = uniform(s.n_h, rng);
  fvec out(s.n_h), cache(s.cache_size()), work(s.work_size());
  fastgrnn_forward(s, out, cache, p, x, h);
  fvec grads(s.n_params(), 0.0f), dh(s.n_h), dx(s.n_x);
  fastgrnn_backward(s, dh, dx, grads, work, p, cache, x, h, go);

  // L = go · h'(θ, x, h), central differences of the double forward.
  grnn_ref ref{s, to_d(p), to_d(x), to_d(h), {}, {}, {}, {}, {}};
  auto loss = [&] {
    ref.forward();
    double l = 0;
    for (size_t i = 0; i < s.n_h; ++i)
      l += go[i] * ref.out[i];
    return l;
  };
  auto fd = [&](dvec& v, size_t j) {
    const double eps = 1e-5, keep = v[j];
    v[j] = keep + eps;
    const double up = loss();
    v[j] = keep - eps;
    const double down = loss();
    v[j] = keep;
    return (up - down) / (2 * eps);
  };
  auto check_all = [&](const fvec& got, dvec& v, const char* what) {
    CAPTURE(what);
    for (size_t j = 0; j < got.size(); ++j) {
      CAPTURE(j);
      const double want = fd(v, j);
      CHECK(std::abs(got[j] - want) <= 1e-4 * (std::abs(want) + 1e-2));
    }
  };
  check_all(grads, ref.p, "params");
  check_all(dx, ref.x, "x");
  check_all(dh, ref.h, "h");
}

TEST_CASE("fastgrnn: a cell learns to remember the sign of the first input (BPTT + SGD)") {
  // Sequence task: x_0 = ±1, then 5 steps of zero input; read out h_T[0].
  const fastgrnn_shape s{1, 8, 2, 2};
  const size_t T = 6;
  std::mt19937 rng(9);
  fvec p = uniform(s.n_params(), rng, 0.3f);
  std::vector<fvec> hs(T + 1, fvec(s.n_h)), caches(T, fvec(s.cache_size()));
  fvec work(s.work_size()), grads(s.n_params()), dh(s.n_h);
  auto run = [&](float sign) {
    std::fill(hs[0].begin(), hs[0].end(), 0.0f);
    for (size_t t = 0; t < T; ++t) {
      const fvec x{t == 0 ? sign : 0.0f};
      fastgrnn_forward(s, hs[t + 1], caches[t], p, x, hs[t]);
    }
    return hs[T][0];
  };
  auto loss = [&] { return 0.5 * (std::pow(run(1) - 0.5, 2) + std::pow(run(-1) + 0.5, 2)); };
  const double before = loss();
  for (int it = 0; it < 300; ++it) {
    std::fill(grads.begin(), grads.end(), 0.0f);
    for (float sign : {1.0f, -1.0f}) {
      const float out = run(sign);
      std::fill(dh.begin(), dh.end(), 0.0f);
      dh[0] = out - 0.5f * sign;
      for (size_t t = T; t-- > 0;) {
        const fvec x{t == 0 ? sign : 0.0f};
        fastgrnn_backward(s, dh, {}, grads, work, p, caches[t], x, hs[t], dh);
      }
    }
    for (size_t i = 0; i < p.size(); ++i)
      p[i] -= 0.5f * grads[i];
  }
  CAPTURE(before);
  CHECK(loss() < 0.1 * before);
}

TEST_CASE("hard_threshold keeps exactly the largest magnitudes, ties to the lower index") {
  std::mt19937 rng(10);
  fvec w = uniform(1000, rng);
  fvec sorted(w.size());
  std::transform(w.begin(), w.end(), sorted.begin(), [](float v) { return std::abs(v); });
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  fvec t = w;
  hard_threshold(t, 100);
  size_t nnz = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    if (t[i] != 0) {
      ++nnz;
      CHECK(t[i] == w[i]);
      CHECK(std::abs(w[i]) >= sorted[99]);
    } else {
      CHECK(std::abs(w[i]) <= sorted[99]);
    }
  }
  CHECK(nnz == 100);

  fvec ties{1, -3, 3, 2, -3, 0.5f};
  hard_threshold(ties, 2);
  CHECK(ties == fvec{0, -3, 3, 0, 0, 0});
  fvec nan{1, std::numeric_limits<float>::quiet_NaN(), 2};
  hard_threshold(nan, 1);
  CHECK(std::isnan(nan[1]));
  CHECK((nan[0] == 0 && nan[2] == 0));
  fvec few{0, 5, 0, -1};
  hard_threshold(few, 3); // fewer non-zeros than keep: they all stay
  CHECK(few == fvec{0, 5, 0, -1});
  fvec all{1, 2};
  hard_threshold(all, 0);
  CHECK(all == fvec{0, 0});
  hard_threshold(all = {1, 2}, 5);
  CHECK(all == fvec{1, 2});
}

// ---- EWC++ ---------------------------------------------------------------------

TEST_CASE("ewc kernels: every variant matches the exact Fisher EMA, penalty and precondition") {
  std::mt19937 rng(11);
  const auto fishers = ewc_fisher_kernel().runnable();
  const auto penalties = ewc_penalty_kernel().runnable();
  const auto preconds = ewc_precondition_kernel().runnable();
  for (size_t v = 0; v < fishers.size(); ++v)
    for (family f : families)
      for (size_t n : {0u, 1u, 7u, 8u, 15u, 16u, 17u, 31u, 33u, 100u, 1000u, 4097u}) {
        CAPTURE(fishers[v].first);
        CAPTURE(name_of(f));
        CAPTURE(n);
        const float sc = scale_of(f);
        fvec fisher = uniform(n, rng, f == family::zeros ? 0.0f : 1.0f);
        for (float& e : fisher)
          e = std::abs(e) * (f == family::denormal ? 1e-39f : 1.0f);
        const fvec g = uniform(n, rng, sc), theta = uniform(n, rng, sc),
                   anchor = uniform(n, rng, sc);
        const float gamma = 0.9f, lambda = 0.7f;

        dvec want(n), wgrad(n), wpre(n);
        double wpen = 0;
        for (size_t i = 0; i < n; ++i) {
          want[i] = double(gamma) * fisher[i] + (1 - double(gamma)) * double(g[i]) * g[i];
          const double diff = double(theta[i]) - anchor[i];
          wpen += 0.5 * lambda * fisher[i] * diff * diff;
          wgrad[i] = double(g[i]) + double(lambda) * fisher[i] * diff;
          wpre[i] = g[i] / (1 + double(lambda) * fisher[i]);
        }
        fvec got = fisher;
        fishers[v].second(n, got.data(), g.data(), gamma);
        check_agree(got, want, 3);
        fvec grad = g;
        const float pen =
          penalties[v].second(n, grad.data(), fisher.data(), theta.data(), anchor.data(), lambda);
        check_agree(grad, wgrad, 3);
        check_agree(fvec{pen}, dvec{wpen}, 3 * n);
        CHECK(std::abs(pen - wpen) <= double(n + 2) * 0x1p-23 * wpen + double(n + 2) * 0x1p-149);
        CHECK(penalties[v].second(n, nullptr, fisher.data(), theta.data(), anchor.data(), lambda)
              == pen);
        fvec pre = g;
        preconds[v].second(n, pre.data(), fisher.data(), lambda);
        check_agree(pre, wpre, 3);
      }
}

namespace {

/// Two linear-regression tasks on 16 weights (unit-variance noise, so the
/// squared-error gradient is the log-likelihood gradient and the Fisher of
/// a used input is ≈ 1). Task A reads inputs 0..7 only; task B reads all 16
/// with other true weights. Returns the weights after A and after B.
struct two_tasks {
  static constexpr size_t n = 16, steps = 4000;
  fvec w_a = fvec(n, 0.0f), w_b = fvec(n, 0.0f);
  fvec theta_a, theta_b, fisher = fvec(n, 0.0f);
  std::mt19937 rng{12};
  std::normal_distribution<float> n01{0, 1};

  two_tasks() {
    for (size_t i = 0; i < n; ++i) {
      w_a[i] = i < 8 ? 2 * n01(rng) : 0.0f;
      w_b[i] = 2 * n01(rng);
    }
  }

  /// One SGD sample gradient of ½(θ·x − y)² for the task with weights w.
  fvec sample_grad(const fvec& theta, const fvec& w, size_t used) {
    fvec x(n, 0.0f);
    for (size_t i = 0; i < used; ++i)
      x[i] = n01(rng);
    double pred = 0, y = n01(rng); // noise
    for (size_t i = 0; i < n; ++i) {
      pred += double(theta[i]) * x[i];
      y += double(w[i]) * x[i];
    }
    fvec g(n);
    for (size_t i = 0; i < n; ++i)
      g[i] = static_cast<float>((pred - y) * x[i]);
    return g;
  }

  enum class mode { plain, penalty, precondition };

  /// 0.01, then 0.001 for the last quarter of a task (less SGD noise at the end).
  static float lr(size_t step) { return step < steps * 3 / 4 ? 0.01f : 0.001f; }

  void run(mode m) {
    fvec theta(n, 0.0f), anchor(n);
    for (size_t s = 0; s < steps; ++s) { // task A, Fisher EMA over its gradients
      fvec g = sample_grad(theta, w_a, 8);
      ewc_update_fisher(fisher, g, 0.995f);
      for (size_t i = 0; i < n; ++i)
        theta[i] -= lr(s) * g[i];
    }
    theta_a = theta;
    ewc_consolidate(anchor, theta);
    for (size_t s = 0; s < steps; ++s) { // task B
      fvec g = sample_grad(theta, w_b, n);
      if (m == mode::penalty)
        ewc_penalty_grad(g, fisher, theta, anchor, 20.0f);
      if (m == mode::precondition)
        ewc_precondition(g, fisher, 1000.0f);
      for (size_t i = 0; i < n; ++i)
        theta[i] -= lr(s) * g[i];
    }
    theta_b = theta;
  }

  /// ‖θ_B − θ_A‖ over the weights task A uses (0..7).
  double drift() const {
    double s = 0;
    for (size_t i = 0; i < 8; ++i)
      s += double(theta_b[i] - theta_a[i]) * (theta_b[i] - theta_a[i]);
    return std::sqrt(s);
  }
  /// ‖θ_B − w_B‖ over the weights only task B uses (8..15).
  double free_error() const {
    double s = 0;
    for (size_t i = 8; i < n; ++i)
      s += double(theta_b[i] - w_b[i]) * (theta_b[i] - w_b[i]);
    return std::sqrt(s);
  }
};

} // namespace

TEST_CASE("ewc: the Fisher marks the weights of task A and EWC++ keeps them through task B") {
  two_tasks plain, penalty, precond;
  plain.run(two_tasks::mode::plain);
  penalty.run(two_tasks::mode::penalty);
  precond.run(two_tasks::mode::precondition);
  for (size_t i = 0; i < two_tasks::n; ++i) {
    CAPTURE(i);
    if (i < 8)
      CHECK(plain.fisher[i] > 0.3f); // ≈ E[(noise·x_i)²] = 1
    else
      CHECK(plain.fisher[i] == 0.0f); // never used by task A
  }
  CAPTURE(plain.drift());
  CAPTURE(penalty.drift());
  CAPTURE(precond.drift());
  CHECK(plain.drift() > 2.0);
  CHECK(penalty.drift() < 0.25 * plain.drift());
  CHECK(precond.drift() < 0.25 * plain.drift());
  // the weights task A left free still learn task B
  CAPTURE(penalty.free_error());
  CAPTURE(precond.free_error());
  CHECK(penalty.free_error() < 0.5);
  CHECK(precond.free_error() < 0.5);
}

// ---- k-means++ -----------------------------------------------------------------

namespace {

struct blobs {
  size_t n, k, dim;
  fvec data, centers;
  std::vector<uint32_t> label;
};

/// k Gaussian blobs (σ = 0.5) around centers uniform in [-10, 10]^dim,
/// points in random order.
blobs make_blobs(size_t k, size_t per, size_t dim, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0, 0.5f);
  blobs b{k * per, k, dim, fvec(k * per * dim), uniform(k * dim, rng, 10.0f), {}};
  std::vector<uint32_t> order(b.n);
  std::iota(order.begin(), order.end(), 0u);
  std::shuffle(order.begin(), order.end(), rng);
  b.label.resize(b.n);
  for (size_t i = 0; i < b.n; ++i) {
    const uint32_t c = order[i] % uint32_t(k);
    b.label[i] = c;
    for (size_t j = 0; j < dim; ++j)
      b.data[i * dim + j] = b.centers[c * dim + j] + g(rng);
  }
  return b;
}

} // namespace

TEST_CASE("kmeans_pp recovers well-separated clusters and is deterministic per seed") {
  const blobs b = make_blobs(8, 100, 16, 13);
  fvec centroids(b.k * b.dim), scratch(kmeans_scratch_size(b.n, b.k, b.dim));
  std::vector<uint32_t> assign(b.n);
  kmeans_rng rng{42};
  const kmeans_result res = kmeans_pp(centroids, assign, b.data, b.dim, 100, rng, scratch);
  CHECK(res.converged);
  // a perfect partition: each true cluster maps to one found cluster, 1:1
  std::vector<int> found_of(b.k, -1), true_of(b.k, -1);
  for (size_t i = 0; i < b.n; ++i) {
    CHECK((found_of[b.label[i]] == -1 || found_of[b.label[i]] == int(assign[i])));
    CHECK((true_of[assign[i]] == -1 || true_of[assign[i]] == int(b.label[i])));
    found_of[b.label[i]] = int(assign[i]);
    true_of[assign[i]] = int(b.label[i]);
  }
  for (size_t c = 0; c < b.k; ++c) {
    REQUIRE(found_of[c] >= 0);
    double d = 0;
    for (size_t j = 0; j < b.dim; ++j) {
      const double e =
        double(centroids[size_t(found_of[c]) * b.dim + j]) - b.centers[c * b.dim + j];
      d += e * e;
    }
    CHECK(std::sqrt(d) < 0.4); // σ·sqrt(dim/100) = 0.2 expected
  }
  CHECK(res.inertia == doctest::Approx(0.25 * double(b.n * b.dim)).epsilon(0.1));

  fvec again(centroids.size());
  std::vector<uint32_t> assign2(b.n);
  kmeans_rng rng2{42};
  kmeans_pp(again, assign2, b.data, b.dim, 100, rng2, scratch);
  CHECK(again == centroids);
  CHECK(assign2 == assign);
}

TEST_CASE("kmeans_seed_pp: D² seeding beats uniform seeding's inertia on average") {
  const blobs b = make_blobs(10, 50, 8, 14);
  fvec centroids(b.k * b.dim), scratch(kmeans_scratch_size(b.n, b.k, b.dim));
  std::vector<uint32_t> assign(b.n);
  double pp_seed = 0, uni_seed = 0, pp_final = 0, uni_final = 0;
  const int trials = 20;
  for (int t = 0; t < trials; ++t) {
    kmeans_rng rng{uint64_t(1000 + t)};
    kmeans_seed_pp(centroids, b.data, b.dim, rng, scratch);
    pp_seed += kmeans_lloyd(centroids, assign, b.data, b.dim, 0, scratch).inertia;
    pp_final += kmeans_lloyd(centroids, assign, b.data, b.dim, 100, scratch).inertia;
    // uniform seeding: k distinct points
    std::vector<size_t> idx(b.n);
    std::iota(idx.begin(), idx.end(), 0u);
    for (size_t c = 0; c < b.k; ++c) {
      std::swap(idx[c], idx[c + size_t(rng.uniform() * double(b.n - c))]);
      std::copy_n(b.data.begin() + long(idx[c] * b.dim), b.dim,
                  centroids.begin() + long(c * b.dim));
    }
    uni_seed += kmeans_lloyd(centroids, assign, b.data, b.dim, 0, scratch).inertia;
    uni_final += kmeans_lloyd(centroids, assign, b.data, b.dim, 100, scratch).inertia;
  }
  CAPTURE(pp_seed / trials);
  CAPTURE(uni_seed / trials);
  CAPTURE(pp_final / trials);
  CAPTURE(uni_final / trials);
  CHECK(pp_seed < 0.5 * uni_seed);
  CHECK(pp_final < uni_final);
}

TEST_CASE("kmeans_pp: fewer distinct points than k still gives valid centroids") {
  const size_t dim = 3, n = 6, k = 4;
  const fvec data{1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 1, 1, 1, 2, 2, 2};
  fvec centroids(k * dim), scratch(kmeans_scratch_size(n, k, dim));
  std::vector<uint32_t> assign(n);
  kmeans_rng rng{7};
  const kmeans_result res = kmeans_pp(centroids, assign, data, dim, 10, rng, scratch);
  for (float c : centroids)
    CHECK(std::isfinite(c));
  for (uint32_t a : assign)
    CHECK(a < k);
  CHECK(res.inertia == 0.0);
  CHECK(res.converged);
}
