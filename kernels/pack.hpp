#pragma once
/// @file The kernel pack ABI: optional kernel variants shipped as shared
/// libraries, and their registration.
///
/// A pack is a shared object exporting the C function
/// `shoal_kernel_pack_v1` that returns a `shoal_pack` (below). Loading one —
/// reading it, verifying its Ed25519 signature against the operator's keys
/// and handing the verified bytes to the dynamic loader — is the node's job
/// (node/kernel_packs.hpp); this module only checks a loaded pack's table and
/// registers its variants:
///   - the pack's ABI version equals `shoal_pack_abi` and its name is
///     [A-Za-z0-9_.-]+;
///   - each variant names a registered kernel, its signature string equals
///     the kernel's, and it needs a known instruction-set level;
///   - then every variant is registered as "<pack>:<variant>"
///     (registry.hpp). At equal instruction-set level a pack's variant wins
///     over a built-in one.
/// A pack with any fault registers nothing.
///
/// Thread-safety: `register_pack` may run concurrently with kernel calls
/// (registration takes the registry's mutex).

#include "core/error.hpp"
#include "kernels/cpu.hpp"

#include <cstdint>
#include <string>

extern "C" {
/// One variant in a pack.
struct shoal_pack_variant {
  const char* kernel;    ///< registered kernel name, e.g. "dot_f32"
  const char* signature; ///< must equal the kernel's signature() text
  const char* name;      ///< variant name, e.g. "avx512_unrolled"
  uint32_t needs;        ///< 0 scalar, 1 avx2, 2 avx512 (shoal::kernels::isa)
  void (*fn)(void);      ///< the function, cast to void(*)(void)
};

/// What `shoal_kernel_pack_v1()` returns (static storage in the pack).
struct shoal_pack {
  uint32_t abi;     ///< shoal_pack_abi
  const char* name; ///< pack name: [A-Za-z0-9_.-]+
  uint32_t n_variants;
  const shoal_pack_variant* variants;
};
}

namespace shoal::kernels {

/// ABI version a pack must report.
inline constexpr uint32_t shoal_pack_abi = 1;

/// Checks `pack` (see the file comment) and registers its variants, with
/// `origin` (e.g. the file it came from) shown in the registry's table.
/// @returns no error when registered; else `errc::invalid_argument` saying
/// why the pack was refused (e.g. "variant fast of dot_f32 has signature
/// ..."), and nothing is registered.
core::error register_pack(const shoal_pack& pack, const std::string& origin);

} // namespace shoal::kernels
