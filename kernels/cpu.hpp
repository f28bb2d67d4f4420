#pragma once
/// @file CPU feature detection for kernel dispatch.
///
/// The shipped binary assumes baseline x86-64 with SSE4.2; wider code paths
/// are compiled per function (`__attribute__((target(...)))`) and used only
/// when `cpu()` reports the features at run time. Three instruction-set
/// levels name what a kernel variant needs:
///   scalar  — any x86-64 (the reference; plain C++),
///   avx2    — AVX2 + FMA + F16C (Haswell and later, Zen),
///   avx512  — AVX-512 F/BW/DQ/VL (Skylake-SP and later, Zen 4).
/// The level actually used is the lower of what the CPU has and a cap, set by
/// the environment variable `SHOAL_KERNELS_ISA` (`scalar`, `avx2`, `avx512`;
/// read at first use) or by config `kernels.isa` through `set_isa_cap`.
/// Thread-safety: `cpu()` and `isa_cap()` may be called from any thread;
/// `set_isa_cap` is meant for start-up and tests (it re-selects every kernel's
/// variant through the registry).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace shoal::kernels {

/// Instruction-set level a kernel variant needs. Ordered: a CPU at level L
/// runs every variant that needs a level <= L.
enum class isa : uint8_t { scalar = 0, avx2 = 1, avx512 = 2 };

/// "scalar", "avx2" or "avx512".
std::string_view to_string(isa level) noexcept;

/// Parses "scalar", "avx2" or "avx512" (case-sensitive); nullopt otherwise.
std::optional<isa> parse_isa(std::string_view text) noexcept;

/// What this CPU supports (cpuid through the compiler's builtins, read once).
struct cpu_features {
  bool sse42 = false;
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512dq = false;
  bool avx512vl = false;
  bool avx512vnni = false;
  bool avx512bf16 = false;
  /// Highest `isa` level whose features are all present.
  isa level = isa::scalar;
  /// e.g. "sse4.2 avx2 fma f16c avx512f avx512bw avx512dq avx512vl avx512vnni".
  std::string flags() const;
};

/// The features of the CPU this process runs on. Thread-safe.
const cpu_features& cpu() noexcept;

/// The cap on the level used: `SHOAL_KERNELS_ISA` if set and valid, else
/// avx512 (no cap). An invalid value is ignored with a warning on stderr.
isa isa_cap() noexcept;

/// Where the cap came from: "default", "SHOAL_KERNELS_ISA", "config" or
/// "test".
std::string_view isa_cap_source() noexcept;

/// Level kernels dispatch to: min(cpu().level, isa_cap()).
isa active_isa() noexcept;

/// Sets the cap (config `kernels.isa`, or tests) and re-selects every
/// registered kernel's variant. `source` (a string literal such as "config")
/// is shown by `shoal kernels`.
void set_isa_cap(isa cap, const char* source);

} // namespace shoal::kernels
