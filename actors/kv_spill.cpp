#include "actors/kv_spill.hpp"

#include <spdlog/spdlog.h>

#include <string_view>

namespace shoal::actors {

namespace {

bool known_type(uint8_t t) {
  return std::string_view(kernels::to_string(static_cast<kernels::kv_type>(t))) != "?";
}

} // namespace

bool kv_spill_store::put(uint64_t hash, const page& p) {
  return table_->put(hash, {p.parent, p.old, static_cast<uint8_t>(p.k_type),
                            static_cast<uint8_t>(p.v_type), p.tokens, p.bytes});
}

std::optional<engine::kv_spill::page> kv_spill_store::get(uint64_t hash) {
  auto r = table_->get(hash);
  if (!r)
    return std::nullopt;
  if (!known_type(r->k_type) || !known_type(r->v_type)) {
    spdlog::warn("kv_spill: page {:016x} has unknown KV types {}/{}; dropped", hash, r->k_type,
                 r->v_type);
    return std::nullopt;
  }
  return page{r->parent,
              r->old,
              static_cast<kernels::kv_type>(r->k_type),
              static_cast<kernels::kv_type>(r->v_type),
              std::move(r->tokens),
              std::move(r->bytes)};
}

} // namespace shoal::actors
