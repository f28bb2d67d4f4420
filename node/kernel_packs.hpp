#pragma once
/// @file Loading kernel packs: optional kernel variants shipped as shared
/// libraries (ABI in kernels/pack.hpp), loaded only when their Ed25519
/// signature (crypto/, RFC 8032) verifies against a key the operator trusts
/// (config `kernels.pack_keys`).
///
/// A pack `foo.so` comes with `foo.so.sig`: one line "ed25519 <128 hex
/// digits>" holding the detached signature of the file's bytes (`shoal
/// kernels sign`). Loading:
///   1. read the file and its signature; verify against every trusted key;
///   2. only then hand the same verified bytes to the dynamic loader (through
///      an anonymous memfd, so the file cannot be swapped between check and
///      load);
///   3. kernels::register_pack checks the table and registers the variants.
/// Any failure refuses the whole pack with a message naming the problem;
/// nothing is registered and the node keeps running on its built-in
/// kernels. Packs are never unloaded.
///
/// Thread-safety: `load_kernel_pack` may run concurrently with kernel calls
/// (registration takes the registry's mutex); `apply_kernels_config` changes
/// the process-wide ISA cap: call it once at start.

#include "core/error.hpp"
#include "crypto/identity.hpp"
#include "crypto/trust_list.hpp"

#include <cstddef>
#include <string>
#include <vector>

namespace shoal::node {

/// Kernel settings of the node (keys `kernels.*`; documented in the config
/// registry, node/config.cpp).
struct kernels_config {
  std::string isa;       ///< config kernels.isa
  bool autotune = false; ///< config kernels.autotune
  std::string packs;     ///< config kernels.packs
  std::string pack_keys; ///< config kernels.pack_keys
};

/// A pack that was verified and registered.
struct loaded_pack {
  std::string name;    ///< the pack's own name
  std::string signer;  ///< the trusted key that verified it
  size_t n_variants{}; ///< variants registered
};

/// Verifies and loads the pack at `path` (see the file comment).
/// Errors (context = `path`), each message starting "kernel pack PATH
/// refused: ": storage_failure (file or signature unreadable, over 64 MiB),
/// invalid_argument (malformed signature file, no trusted keys, signature
/// does not verify, rejected by the loader or by kernels::register_pack).
core::result<loaded_pack> load_kernel_pack(const std::string& path,
                                           const crypto::trust_list& trusted);

/// Writes `path`.sig: `signer`'s signature of the file's bytes.
/// Errors: storage_failure naming the file that cannot be read or written.
core::error sign_kernel_pack(const std::string& path, const crypto::identity& signer);

/// Applies `cfg`: the ISA cap, then each pack (verified), then autotuning.
/// @returns one line per event for the log ("loaded kernel pack x from P (3
/// variants, signed by ops)", or the refusal). A refused pack is logged, not
/// an error. Errors: invalid_argument for a config mistake (unknown isa,
/// malformed pack_keys), with the key in `context`.
core::result<std::vector<std::string>> apply_kernels_config(const kernels_config& cfg);

} // namespace shoal::node
