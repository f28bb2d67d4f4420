#include "actors/kv_spill.hpp"

#include <spdlog/spdlog.h>

namespace shoal::actors {

bool kv_spill_store::put(uint64_t hash, const page& p) {
  return table_->put(hash, {p.parent, p.old, static_cast<uint8_t>(p.k_type),
                            static_cast<uint8_t>(p.v_type), p.tokens, p.bytes});
}

std::optional<engine::kv_spill::page> kv_spill_store::get(uint64_t hash) {
  auto r = table_->get(hash);
  if (!r)
    return std::nullopt;
  auto k = kernels::kv_type_from_code(r->k_type), v = kernels::kv_type_from_code(r->v_type);
  if (!k || !v) {
    spdlog::warn("kv_spill: page {:016x} has unknown KV types {}/{}; dropped", hash, r->k_type,
                 r->v_type);
    return std::nullopt;
  }
  return page{r->parent, r->old, *k, *v, std::move(r->tokens), std::move(r->bytes)};
}

} // namespace shoal::actors
