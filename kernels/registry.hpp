#pragma once
/// @file The kernel registry: every dispatched kernel, its named variants,
/// which one is active and why.
///
/// A kernel is a function type (e.g. `float(const float*, const float*,
/// size_t) noexcept`) with one or more variants: a scalar reference and SIMD
/// versions, each needing an instruction-set level (`isa`). A `kernel<Fn>`
/// object registers itself when constructed (kernels are function-local
/// statics behind accessor functions such as `dot_f32_kernel()`), then picks
/// its active variant:
///   1. among the variants this CPU runs (needs <= active_isa()),
///   2. the fastest measured one if `registry::tune` measured them,
///   3. else the one needing the widest level; at equal level the one
///      registered last (so a trusted kernel pack overrides a built-in).
/// `shoal kernels` prints `registry::describe()`.
///
/// Thread-safety: `kernel<Fn>::get()` is a relaxed atomic load, callable from
/// any thread at any time; registration, `reselect`, `tune` and pack loading
/// take the registry's mutex and may run while other threads call kernels
/// (a call in flight finishes on the variant it loaded; variants stay valid
/// for the life of the process, packs are never unloaded).

#include "kernels/cpu.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <initializer_list>
#include <mutex>
#include <string>
#include <vector>

namespace shoal::kernels {

/// A function pointer of unknown type (cast back to the kernel's own type).
using erased_fn = void (*)();

/// What the registry knows of one variant.
struct variant_info {
  std::string name;        ///< "scalar", "avx2", "avx512", or "<pack>:<name>"
  isa needs = isa::scalar; ///< level the variant needs
  std::string origin;      ///< "built-in" or the kernel pack's path
  double ns_per_call = -1; ///< measured by `registry::tune`; -1 = not measured
  bool runnable = false;   ///< needs <= cpu().level
};

/// Type-independent part of a kernel (see `kernel<Fn>`).
class kernel_base {
public:
  kernel_base(const kernel_base&) = delete;
  kernel_base& operator=(const kernel_base&) = delete;

  const std::string& name() const noexcept { return name_; }
  /// The C++ function type as text, e.g. "float(const float*,const float*,size_t)";
  /// a pack's variant must declare exactly this signature.
  const std::string& signature() const noexcept { return signature_; }
  std::vector<variant_info> variants() const;
  std::string active_name() const;
  /// Why the active variant was chosen, e.g. "widest level this CPU runs
  /// (avx512)" or "fastest measured (avx2 3.1 ns; scalar 12.0 ns)".
  std::string reason() const;

protected:
  kernel_base(const char* name, const char* signature);
  ~kernel_base() = default;
  void add(variant_info info, erased_fn fn);
  erased_fn active() const noexcept { return active_.load(std::memory_order_relaxed); }
  /// The i-th variant's function (same order as `variants()`).
  erased_fn fn_at(size_t i) const;
  /// Nanoseconds per call of `fn` on a representative input; < 0 if the
  /// kernel has no benchmark.
  virtual double measure(erased_fn fn) const = 0;

private:
  friend class registry;
  struct entry {
    variant_info info;
    erased_fn fn;
  };
  void select(); // with the registry's mutex held
  void tune();   // idem
  std::string name_;
  std::string signature_;
  std::vector<entry> entries_;
  std::string reason_;
  size_t active_index_ = 0;
  std::atomic<erased_fn> active_{nullptr};
};

/// A dispatched kernel of function type `Fn`.
template <class Fn>
class kernel final : public kernel_base {
public:
  struct variant {
    const char* name;
    isa needs;
    Fn* fn;
  };
  /// `bench` returns nanoseconds per call of a variant on a representative
  /// input (it may allocate); nullptr = not tunable.
  using bench_fn = double (*)(Fn* fn);

  kernel(const char* name, const char* signature, std::initializer_list<variant> variants,
         bench_fn bench = nullptr)
    : kernel_base(name, signature), bench_(bench) {
    for (const variant& v : variants)
      add({v.name, v.needs, "built-in"}, reinterpret_cast<erased_fn>(v.fn));
  }

  /// The active variant. Never null.
  Fn* get() const noexcept { return reinterpret_cast<Fn*>(active()); }

  /// Every variant this CPU can run, with its name (tests compare each with
  /// the scalar reference).
  std::vector<std::pair<std::string, Fn*>> runnable() const {
    std::vector<std::pair<std::string, Fn*>> out;
    auto infos = variants();
    for (size_t i = 0; i < infos.size(); ++i)
      if (infos[i].runnable)
        out.emplace_back(infos[i].name, reinterpret_cast<Fn*>(fn_at(i)));
    return out;
  }

private:
  double measure(erased_fn fn) const override {
    return bench_ == nullptr ? -1.0 : bench_(reinterpret_cast<Fn*>(fn));
  }
  bench_fn bench_;
};

/// The process-wide list of kernels.
class registry {
public:
  static registry& instance();

  /// Every registered kernel, in registration order. Registers the built-in
  /// kernels first (touching each accessor), so the list is complete.
  std::vector<const kernel_base*> kernels();

  /// Re-picks every kernel's active variant (after `set_isa_cap`).
  void reselect();

  /// Measures every runnable variant of every kernel (or only `name`) and
  /// makes the fastest active. Takes ~5 ms per variant. Returns the number of
  /// kernels measured.
  size_t tune(std::string_view name = {});

  /// Forgets every measured timing: back to the widest-level rule.
  void clear_measurements();

  /// Human-readable table: CPU flags, level and cap, then per kernel its
  /// variants, the active one and why. Printed by `shoal kernels`.
  std::string describe();

  /// The kernel called `name`, or nullptr.
  kernel_base* find(std::string_view name);

private:
  friend class kernel_base;
  friend struct pack_loader;
  registry() = default;
  void add(kernel_base* k);
  void add_variant(kernel_base* k, variant_info info, erased_fn fn);
  std::mutex mutex_;
  std::vector<kernel_base*> kernels_;
};

/// Nanoseconds per call of `f()`: the median of 5 rounds of ~1 ms each (for
/// the `bench` functions that feed `registry::tune`). Not for hot paths.
template <class F>
double bench_ns(F&& f) {
  using clock = std::chrono::steady_clock;
  size_t iters = 1;
  for (;;) { // calibrate: enough calls for ~1 ms
    auto t0 = clock::now();
    for (size_t i = 0; i < iters; ++i)
      f();
    auto ns = std::chrono::duration<double, std::nano>(clock::now() - t0).count();
    if (ns > 1e6 || iters >= (size_t{1} << 24))
      break;
    iters *= 2;
  }
  double rounds[5];
  for (double& r : rounds) {
    auto t0 = clock::now();
    for (size_t i = 0; i < iters; ++i)
      f();
    r = std::chrono::duration<double, std::nano>(clock::now() - t0).count() / double(iters);
  }
  std::sort(rounds, rounds + 5);
  return rounds[2];
}

/// Keeps the compiler from discarding `v` (a benchmark's result).
template <class T>
inline void bench_keep(T v) {
  asm volatile("" : : "g"(v) : "memory");
}

/// Registers every built-in kernel (defined in registry.cpp; calls each
/// file's register function below so the linker keeps them all).
void register_builtin_kernels();

/// Touch every kernel accessor of one file (each defined in that file).
void register_vector_kernels();
void register_quant_kernels();
void register_matmul_kernels();
void register_nn_kernels();
void register_learn_kernels();

} // namespace shoal::kernels
