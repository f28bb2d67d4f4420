#include "kernels/cpu.hpp"

#include "kernels/registry.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace shoal::kernels {

std::string_view to_string(isa level) noexcept {
  switch (level) {
    case isa::scalar:
      return "scalar";
    case isa::avx2:
      return "avx2";
    case isa::avx512:
      return "avx512";
  }
  return "unknown";
}

std::optional<isa> parse_isa(std::string_view text) noexcept {
  for (isa level : {isa::scalar, isa::avx2, isa::avx512})
    if (text == to_string(level))
      return level;
  return std::nullopt;
}

std::string cpu_features::flags() const {
  std::string out;
  auto add = [&](bool has, const char* name) {
    if (!has)
      return;
    if (!out.empty())
      out += ' ';
    out += name;
  };
  add(sse42, "sse4.2");
  add(avx2, "avx2");
  add(fma, "fma");
  add(f16c, "f16c");
  add(avx512f, "avx512f");
  add(avx512bw, "avx512bw");
  add(avx512dq, "avx512dq");
  add(avx512vl, "avx512vl");
  add(avx512vnni, "avx512vnni");
  add(avx512bf16, "avx512bf16");
  return out;
}

namespace {

cpu_features detect() noexcept {
  cpu_features f;
#if defined(__x86_64__)
  __builtin_cpu_init();
  f.sse42 = __builtin_cpu_supports("sse4.2");
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  // GCC 12 has no "f16c" for __builtin_cpu_supports; every CPU with AVX2
  // also has F16C (Intel since Ivy Bridge, AMD since Piledriver).
  f.f16c = f.avx2;
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512dq = __builtin_cpu_supports("avx512dq");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512vnni = __builtin_cpu_supports("avx512vnni");
  f.avx512bf16 = __builtin_cpu_supports("avx512bf16");
#endif
  if (f.avx2 && f.fma && f.f16c) {
    f.level = isa::avx2;
    if (f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl)
      f.level = isa::avx512;
  }
  return f;
}

struct cap_state {
  std::atomic<isa> cap{isa::avx512};
  std::atomic<const char*> source{"default"};
  cap_state() noexcept {
    const char* env = std::getenv("SHOAL_KERNELS_ISA");
    if (env == nullptr || *env == '\0')
      return;
    if (auto level = parse_isa(env)) {
      cap = *level;
      source = "SHOAL_KERNELS_ISA";
    } else {
      std::fprintf(stderr,
                   "shoal: ignoring SHOAL_KERNELS_ISA=%s (expected scalar, avx2 or avx512)\n", env);
    }
  }
};

cap_state& caps() noexcept {
  static cap_state s;
  return s;
}

} // namespace

const cpu_features& cpu() noexcept {
  static const cpu_features f = detect();
  return f;
}

isa isa_cap() noexcept {
  return caps().cap.load(std::memory_order_relaxed);
}

std::string_view isa_cap_source() noexcept {
  return caps().source.load(std::memory_order_relaxed);
}

isa active_isa() noexcept {
  isa cap = isa_cap();
  isa have = cpu().level;
  return cap < have ? cap : have;
}

void set_isa_cap(isa cap, const char* source) {
  caps().cap = cap;
  caps().source = source;
  registry::instance().reselect();
}

} // namespace shoal::kernels
