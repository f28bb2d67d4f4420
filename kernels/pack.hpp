#pragma once
/// @file Kernel packs: optional kernel variants shipped as shared libraries,
/// loaded only when their Ed25519 signature (libsodium, RFC 8032) verifies
/// against a key the operator trusts (config `kernels.pack_keys`).
///
/// A pack is a shared object `foo.so` exporting the C function
/// `shoal_kernel_pack_v1` (see `shoal_pack` below) and is accompanied by
/// `foo.so.sig`: one line "ed25519 <128 hex digits>" holding the detached
/// signature of the file's bytes (`shoal kernels sign`). Loading:
///   1. read the file and its signature; verify against every trusted key;
///   2. only then hand the same verified bytes to the dynamic loader (through
///      an anonymous memfd, so the file cannot be swapped between check and
///      load);
///   3. check the pack's ABI version, and for each variant that its kernel
///      exists and that its signature string equals the kernel's;
///   4. register the variants as "<pack>:<variant>" (registry.hpp). At equal
///      instruction-set level a pack's variant wins over a built-in one.
/// Any failure refuses the whole pack with a message naming the problem;
/// nothing is registered and the node keeps running on its built-in kernels.
/// Packs are never unloaded. Thread-safety: `load_kernel_pack` may run
/// concurrently with kernel calls (registration takes the registry's mutex).

#include "kernels/cpu.hpp"

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

extern "C" {
/// One variant in a pack.
struct shoal_pack_variant {
  const char* kernel;     ///< registered kernel name, e.g. "dot_f32"
  const char* signature;  ///< must equal the kernel's signature() text
  const char* name;       ///< variant name, e.g. "avx512_unrolled"
  uint32_t needs;         ///< 0 scalar, 1 avx2, 2 avx512 (shoal::kernels::isa)
  void (*fn)(void);       ///< the function, cast to void(*)(void)
};

/// What `shoal_kernel_pack_v1()` returns (static storage in the pack).
struct shoal_pack {
  uint32_t abi;           ///< shoal_pack_abi
  const char* name;       ///< pack name: [A-Za-z0-9_.-]+
  uint32_t n_variants;
  const shoal_pack_variant* variants;
};
}

namespace shoal::kernels {

/// ABI version a pack must report.
inline constexpr uint32_t shoal_pack_abi = 1;

/// A trusted Ed25519 public key with the name the operator gave it.
struct named_key {
  std::string name;
  std::array<uint8_t, 32> key{};
};

/// Parses "name=hexkey,name=hexkey" (64 hex digits per key, spaces allowed
/// around items; empty text = empty list), the format `shoal key` prints.
/// On error returns false and sets `error` naming the bad item.
bool parse_key_list(std::string_view text, std::vector<named_key>& out, std::string& error);

/// Result of `load_kernel_pack`.
struct pack_result {
  bool loaded = false;
  std::string error;         ///< why it was refused (empty when loaded)
  std::string name;          ///< the pack's name
  std::string signer;        ///< the trusted key that verified it
  size_t variants = 0;       ///< variants registered
};

/// Verifies and loads the pack at `path` (see the file comment). Never
/// throws; a refused pack is reported in `pack_result::error`, e.g.
/// "kernel pack /opt/p.so refused: signature does not verify against any
/// trusted key (kernels.pack_keys: ops)".
pack_result load_kernel_pack(const std::string& path, std::span<const named_key> trusted);

/// Writes `path`.sig: the signature of the file's bytes with the Ed25519
/// secret key `sk` (libsodium's 64-byte form). Returns "" or an error text.
std::string sign_kernel_pack(const std::string& path, std::span<const uint8_t, 64> sk);

/// Kernel settings of the node (keys `kernels.*`).
struct kernels_config {
  /// Highest instruction set used: "" (all the CPU has), "scalar", "avx2" or
  /// "avx512". Default: "". The environment variable SHOAL_KERNELS_ISA caps
  /// it too (the lower of the two wins).
  std::string isa;
  /// Measure every kernel's variants at start (~5 ms each) and use the
  /// fastest instead of the widest. Default: false.
  bool autotune = false;
  /// Kernel packs to load, comma-separated paths. Default: "".
  std::string packs;
  /// Keys trusted to sign kernel packs, "name=hexkey,..." (`shoal key`
  /// prints a node's). Default: "".
  std::string pack_keys;
};

/// Applies `cfg`: the ISA cap, packs (each verified), then autotuning.
/// Returns one line per event for the log ("loaded pack x (3 variants,
/// signed by ops)", or a refusal). Sets `error` only for a config mistake
/// (unknown isa, malformed pack_keys); a refused pack is not a config error.
std::vector<std::string> apply_config(const kernels_config& cfg, std::string& error);

} // namespace shoal::kernels
