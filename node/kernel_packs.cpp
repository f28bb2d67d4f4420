#include "node/kernel_packs.hpp"

#include "kernels/cpu.hpp"
#include "kernels/pack.hpp"
#include "kernels/registry.hpp"

#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <fstream>
#include <string_view>

namespace shoal::node {

namespace {

/// Largest pack accepted (a pack is a few kernels, not a library).
constexpr size_t max_pack_bytes = 64u << 20;

/// Reads a whole file; false if it cannot be read or exceeds `limit` bytes.
bool read_file(const std::string& path, std::string& out, size_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return false;
  in.seekg(0, std::ios::end);
  auto size = static_cast<std::streamoff>(in.tellg());
  if (size < 0 || static_cast<uint64_t>(size) > limit)
    return false;
  out.resize(static_cast<size_t>(size));
  in.seekg(0);
  return static_cast<bool>(in.read(out.data(), size));
}

/// A dlopen handle closed unless released.
struct dl_handle {
  void* h = nullptr;
  ~dl_handle() {
    if (h != nullptr)
      dlclose(h);
  }
};

} // namespace

core::result<loaded_pack> load_kernel_pack(const std::string& path,
                                           const crypto::trust_list& trusted) {
  auto refuse = [&](errc code, const std::string& why) {
    return core::error{code, "kernel pack " + path + " refused: " + why, path};
  };
  std::string bytes, sig_text;
  if (!read_file(path, bytes, max_pack_bytes))
    return refuse(errc::storage_failure,
                  "cannot read the file (missing, unreadable or over 64 MiB)");
  if (!read_file(path + ".sig", sig_text, 4096))
    return refuse(errc::storage_failure,
                  "no signature file " + path + ".sig (sign it with `shoal kernels sign`)");
  std::string_view sig_line = crypto::detail::trim(sig_text);
  crypto::signature sig{};
  if (!sig_line.starts_with("ed25519 ")
      || !crypto::from_hex(crypto::detail::trim(sig_line.substr(8)), sig))
    return refuse(errc::invalid_argument, "malformed signature file " + path
                                            + ".sig (expected \"ed25519 <128 hex digits>\")");
  if (trusted.empty())
    return refuse(errc::invalid_argument, "no trusted keys (set kernels.pack_keys)");
  const crypto::named_key* signer = trusted.signer_of(bytes, sig);
  if (signer == nullptr)
    return refuse(errc::invalid_argument,
                  "signature does not verify against any trusted key (kernels.pack_keys: "
                    + trusted.names() + "); the file was modified or signed by another key");
  // Load exactly the verified bytes.
  int fd = memfd_create("shoal-kernel-pack", MFD_CLOEXEC);
  if (fd < 0)
    return refuse(errc::storage_failure, "memfd_create failed");
  for (size_t off = 0; off < bytes.size();) {
    ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (n <= 0) {
      ::close(fd);
      return refuse(errc::storage_failure, "cannot stage the verified bytes");
    }
    off += static_cast<size_t>(n);
  }
  std::string fd_path = "/proc/self/fd/" + std::to_string(fd);
  dl_handle handle{dlopen(fd_path.c_str(), RTLD_NOW | RTLD_LOCAL)};
  ::close(fd);
  if (handle.h == nullptr) {
    const char* e = dlerror();
    return refuse(errc::invalid_argument,
                  std::string("the dynamic loader rejected it: ") + (e ? e : "unknown error"));
  }
  using entry_fn = const shoal_pack* (*)();
  auto entry = reinterpret_cast<entry_fn>(dlsym(handle.h, "shoal_kernel_pack_v1"));
  if (entry == nullptr)
    return refuse(errc::invalid_argument, "no symbol shoal_kernel_pack_v1");
  const shoal_pack* pack = entry();
  if (pack == nullptr)
    return refuse(errc::invalid_argument, "shoal_kernel_pack_v1 returned no table");
  if (auto err = kernels::register_pack(*pack, path))
    return refuse(err.code, err.message);
  handle.h = nullptr; // registered variants point into it: never unloaded
  return loaded_pack{pack->name, signer->name, pack->n_variants};
}

core::error sign_kernel_pack(const std::string& path, const crypto::identity& signer) {
  std::string bytes;
  if (!read_file(path, bytes, max_pack_bytes))
    return {errc::storage_failure, "cannot read " + path, path};
  crypto::signature sig = signer.sign(bytes);
  std::ofstream out(path + ".sig", std::ios::trunc);
  out << "ed25519 " << crypto::to_hex(sig) << '\n';
  out.close();
  if (!out)
    return {errc::storage_failure, "cannot write " + path + ".sig", path + ".sig"};
  return {};
}

core::result<std::vector<std::string>> apply_kernels_config(const kernels_config& cfg) {
  std::vector<std::string> log;
  if (!cfg.isa.empty()) {
    auto level = kernels::parse_isa(cfg.isa);
    if (!level)
      return core::error{errc::invalid_argument,
                         "\"" + cfg.isa + "\" is not scalar, avx2 or avx512", "kernels.isa"};
    if (*level < kernels::isa_cap())
      kernels::set_isa_cap(*level, "config");
  }
  auto keys = crypto::trust_list::parse(cfg.pack_keys);
  if (!keys)
    return core::error{errc::invalid_argument, keys.err().message, "kernels.pack_keys"};
  std::string_view packs = cfg.packs;
  while (!crypto::detail::trim(packs).empty()) {
    size_t comma = packs.find(',');
    std::string path(crypto::detail::trim(packs.substr(0, comma)));
    packs = comma == std::string_view::npos ? std::string_view{} : packs.substr(comma + 1);
    auto r = load_kernel_pack(path, *keys);
    if (r)
      log.push_back("loaded kernel pack " + r->name + " from " + path + " ("
                    + std::to_string(r->n_variants) + " variants, signed by " + r->signer + ")");
    else
      log.push_back(r.err().message);
  }
  if (cfg.autotune) {
    size_t n = kernels::registry::instance().tune();
    log.push_back("kernels autotuned: " + std::to_string(n) + " kernels measured");
  }
  return log;
}

} // namespace shoal::node
