#include "store/sealed.hpp"

#include "store/environment.hpp"

namespace shoal::store {

namespace {

constexpr std::string_view check_plaintext = "shoal seal check v1";
constexpr std::string_view check_key = "seal_check";

} // namespace

core::error check_seal_key(environment& env, const crypto::sealer* s) {
  auto rec = env.get(table::seal, check_key);
  if (!rec)
    return rec.err();
  if (!*rec) {
    if (!s)
      return {};
    return env.write({{table::seal, std::string(check_key), s->seal(check_plaintext, check_key)}});
  }
  if (!s)
    return core::error{errc::invalid_argument,
                       "the store in " + env.data_dir().string()
                         + " holds sealed session data but memory.seal_key is not set (config "
                           "or SHOAL_MEMORY_SEAL_KEY)",
                       "memory.seal_key"};
  auto plain = s->open(**rec, check_key);
  if (!plain || *plain != check_plaintext)
    return core::error{errc::invalid_argument,
                       "memory.seal_key does not match the key the store in "
                         + env.data_dir().string() + " was sealed with",
                       "memory.seal_key"};
  return {};
}

} // namespace shoal::store
