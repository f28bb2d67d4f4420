#include "kernels/pack.hpp"

#include "kernels/registry.hpp"

#include <cctype>
#include <utility>
#include <vector>

namespace shoal::kernels {

namespace {

bool valid_pack_name(const char* name) {
  if (name == nullptr || *name == '\0')
    return false;
  for (const char* p = name; *p != '\0'; ++p)
    if (!std::isalnum(static_cast<unsigned char>(*p)) && *p != '_' && *p != '.' && *p != '-')
      return false;
  return true;
}

} // namespace

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
        return "variant " + std::string(v.name) + " of " + v.kernel + " has signature \""
               + v.signature + "\", the kernel has \"" + k->signature() + "\"";
      if (v.needs > static_cast<uint32_t>(isa::avx512))
        return "variant " + std::string(v.name) + " needs unknown level " + std::to_string(v.needs);
      accepted.emplace_back(k, &v);
    }
    for (auto [k, v] : accepted)
      r.add_variant(k, {std::string(pack.name) + ':' + v->name, static_cast<isa>(v->needs), origin},
                    reinterpret_cast<erased_fn>(v->fn));
    return {};
  }
};

core::error register_pack(const shoal_pack& pack, const std::string& origin) {
  if (pack.abi != shoal_pack_abi)
    return {errc::invalid_argument, "ABI version " + std::to_string(pack.abi) + ", expected "
                                      + std::to_string(shoal_pack_abi)};
  if (!valid_pack_name(pack.name) || (pack.n_variants > 0 && pack.variants == nullptr))
    return {errc::invalid_argument, "invalid pack name or variant table"};
  if (std::string why = pack_loader::check_and_add(pack, origin); !why.empty())
    return {errc::invalid_argument, std::move(why)};
  return {};
}

} // namespace shoal::kernels
