#include "kernels/pack.hpp"

#include "kernels/registry.hpp"

#include <sodium.h>

#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>

namespace shoal::kernels {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
    s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
    s.remove_suffix(1);
  return s;
}

bool parse_hex(std::string_view hex, uint8_t* out, size_t n) {
  if (hex.size() != 2 * n)
    return false;
  size_t len = 0;
  return sodium_hex2bin(out, n, hex.data(), hex.size(), nullptr, &len, nullptr) == 0 && len == n;
}

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

bool valid_pack_name(const char* name) {
  if (name == nullptr || *name == '\0')
    return false;
  for (const char* p = name; *p != '\0'; ++p)
    if (!std::isalnum(static_cast<unsigned char>(*p)) && *p != '_' && *p != '.' && *p != '-')
      return false;
  return true;
}

/// Largest pack accepted (a pack is a few kernels, not a library).
constexpr size_t max_pack_bytes = 64u << 20;

} // namespace

bool parse_key_list(std::string_view text, std::vector<named_key>& out, std::string& error) {
  out.clear();
  while (!trim(text).empty()) {
    size_t comma = text.find(',');
    std::string_view item = trim(text.substr(0, comma));
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
    size_t eq = item.find('=');
    named_key k;
    if (eq == std::string_view::npos || trim(item.substr(0, eq)).empty()) {
      error = "expected name=hexkey, got \"" + std::string(item) + "\"";
      return false;
    }
    k.name = std::string(trim(item.substr(0, eq)));
    if (!parse_hex(trim(item.substr(eq + 1)), k.key.data(), k.key.size())) {
      error = "item \"" + std::string(item) + "\": the key is not 64 hex digits";
      return false;
    }
    out.push_back(std::move(k));
  }
  return true;
}

/// Registers a verified pack's variants (friend of registry).
struct pack_loader {
  static std::string check_and_add(const shoal_pack& pack, const std::string& origin) {
    registry& r = registry::instance();
    std::vector<std::pair<kernel_base*, const shoal_pack_variant*>> accepted;
    for (uint32_t i = 0; i < pack.n_variants; ++i) {
      const shoal_pack_variant& v = pack.variants[i];
      if (v.kernel == nullptr || v.signature == nullptr || v.name == nullptr || v.fn == nullptr)
        return "variant " + std::to_string(i) + " has a null field";
      kernel_base* k = r.find(v.kernel);
      if (k == nullptr)
        return "variant " + std::string(v.name) + " is for unknown kernel \"" + v.kernel + "\"";
      if (k->signature() != v.signature)
        return "variant " + std::string(v.name) + " of " + v.kernel + " has signature \"" +
               v.signature + "\", the kernel has \"" + k->signature() + "\"";
      if (v.needs > static_cast<uint32_t>(isa::avx512))
        return "variant " + std::string(v.name) + " needs unknown level " +
               std::to_string(v.needs);
      accepted.emplace_back(k, &v);
    }
    for (auto [k, v] : accepted)
      r.add_variant(k,
                    {std::string(pack.name) + ':' + v->name, static_cast<isa>(v->needs), origin},
                    reinterpret_cast<erased_fn>(v->fn));
    return {};
  }
};

pack_result load_kernel_pack(const std::string& path, std::span<const named_key> trusted) {
  pack_result res;
  auto refuse = [&](const std::string& why) {
    res.error = "kernel pack " + path + " refused: " + why;
    return res;
  };
  if (sodium_init() < 0)
    return refuse("libsodium failed to initialise");
  std::string bytes, sig_text;
  if (!read_file(path, bytes, max_pack_bytes))
    return refuse("cannot read the file (missing, unreadable or over 64 MiB)");
  if (!read_file(path + ".sig", sig_text, 4096))
    return refuse("no signature file " + path + ".sig (sign it with `shoal kernels sign`)");
  std::string_view sig_line = trim(sig_text);
  std::array<uint8_t, crypto_sign_BYTES> sig{};
  if (!sig_line.starts_with("ed25519 ") ||
      !parse_hex(trim(sig_line.substr(8)), sig.data(), sig.size()))
    return refuse("malformed signature file " + path +
                  ".sig (expected \"ed25519 <128 hex digits>\")");
  if (trusted.empty())
    return refuse("no trusted keys (set kernels.pack_keys)");
  const named_key* signer = nullptr;
  for (const named_key& k : trusted)
    if (crypto_sign_verify_detached(sig.data(), reinterpret_cast<const uint8_t*>(bytes.data()),
                                    bytes.size(), k.key.data()) == 0) {
      signer = &k;
      break;
    }
  if (signer == nullptr) {
    std::string names;
    for (const named_key& k : trusted)
      names += (names.empty() ? "" : ", ") + k.name;
    return refuse("signature does not verify against any trusted key (kernels.pack_keys: " +
                  names + "); the file was modified or signed by another key");
  }
  // Load exactly the verified bytes.
  int fd = memfd_create("shoal-kernel-pack", MFD_CLOEXEC);
  if (fd < 0)
    return refuse("memfd_create failed");
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (n <= 0) {
      ::close(fd);
      return refuse("cannot stage the verified bytes");
    }
    off += static_cast<size_t>(n);
  }
  std::string fd_path = "/proc/self/fd/" + std::to_string(fd);
  void* handle = dlopen(fd_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  ::close(fd);
  if (handle == nullptr) {
    const char* e = dlerror();
    return refuse(std::string("the dynamic loader rejected it: ") + (e ? e : "unknown error"));
  }
  using entry_fn = const shoal_pack* (*)();
  auto entry = reinterpret_cast<entry_fn>(dlsym(handle, "shoal_kernel_pack_v1"));
  if (entry == nullptr) {
    dlclose(handle);
    return refuse("no symbol shoal_kernel_pack_v1");
  }
  const shoal_pack* pack = entry();
  if (pack == nullptr || pack->abi != shoal_pack_abi) {
    dlclose(handle);
    return refuse("ABI version " + std::to_string(pack ? pack->abi : 0) + ", expected " +
                  std::to_string(shoal_pack_abi));
  }
  if (!valid_pack_name(pack->name) || (pack->n_variants > 0 && pack->variants == nullptr)) {
    dlclose(handle);
    return refuse("invalid pack name or variant table");
  }
  if (std::string why = pack_loader::check_and_add(*pack, path); !why.empty()) {
    dlclose(handle);
    return refuse(why);
  }
  res.loaded = true;
  res.name = pack->name;
  res.signer = signer->name;
  res.variants = pack->n_variants;
  return res;
}

std::string sign_kernel_pack(const std::string& path, std::span<const uint8_t, 64> sk) {
  if (sodium_init() < 0)
    return "libsodium failed to initialise";
  std::string bytes;
  if (!read_file(path, bytes, max_pack_bytes))
    return "cannot read " + path;
  std::array<uint8_t, crypto_sign_BYTES> sig{};
  crypto_sign_detached(sig.data(), nullptr, reinterpret_cast<const uint8_t*>(bytes.data()),
                       bytes.size(), sk.data());
  std::array<char, 2 * crypto_sign_BYTES + 1> hex{};
  sodium_bin2hex(hex.data(), hex.size(), sig.data(), sig.size());
  std::ofstream out(path + ".sig", std::ios::trunc);
  out << "ed25519 " << hex.data() << '\n';
  out.close();
  if (!out)
    return "cannot write " + path + ".sig";
  return {};
}

std::vector<std::string> apply_config(const kernels_config& cfg, std::string& error) {
  std::vector<std::string> log;
  if (!cfg.isa.empty()) {
    auto level = parse_isa(cfg.isa);
    if (!level) {
      error = "kernels.isa: \"" + cfg.isa + "\" is not scalar, avx2 or avx512";
      return log;
    }
    if (*level < isa_cap())
      set_isa_cap(*level, "config");
  }
  std::vector<named_key> keys;
  if (!parse_key_list(cfg.pack_keys, keys, error)) {
    error = "kernels.pack_keys: " + error;
    return log;
  }
  std::string_view packs = cfg.packs;
  while (!trim(packs).empty()) {
    size_t comma = packs.find(',');
    std::string path(trim(packs.substr(0, comma)));
    packs = comma == std::string_view::npos ? std::string_view{} : packs.substr(comma + 1);
    pack_result r = load_kernel_pack(path, keys);
    if (r.loaded)
      log.push_back("loaded kernel pack " + r.name + " from " + path + " (" +
                    std::to_string(r.variants) + " variants, signed by " + r.signer + ")");
    else
      log.push_back(r.error);
  }
  if (cfg.autotune) {
    size_t n = registry::instance().tune();
    log.push_back("kernels autotuned: " + std::to_string(n) + " kernels measured");
  }
  return log;
}

} // namespace shoal::kernels
