#include "store/kv_spill_table.hpp"

#include "proto/records.hpp"

#include <spdlog/spdlog.h>

#include <cstring>

namespace shoal::store {

kv_spill_table::kv_spill_table(std::shared_ptr<environment> env,
                               std::shared_ptr<const crypto::sealer> seal, uint64_t model_key,
                               uint64_t max_bytes)
  : env_(std::move(env)), seal_(std::move(seal)), model_key_(model_key), max_bytes_(max_bytes) {
  const std::string prefix = u64_key(model_key_);
  auto err = env_->for_each(table::kv_spill, [&](std::string_view k, std::string_view v) {
    if (k.size() == 16 && k.substr(0, 8) == prefix)
      if (auto h = parse_u64_key(k.substr(8))) {
        order_.push_back(*h);
        sizes_[*h] = v.size();
        bytes_ += v.size();
      }
    return true;
  });
  if (err)
    spdlog::warn("kv_spill: scanning the table failed: {}", err.message);
}

std::string kv_spill_table::key(uint64_t hash) const {
  return u64_key(model_key_) + u64_key(hash);
}

void kv_spill_table::erase(uint64_t hash) {
  auto it = sizes_.find(hash);
  if (it == sizes_.end())
    return;
  if (auto p = pending_.find(hash); p != pending_.end()) {
    pending_bytes_ -= p->second.size();
    pending_.erase(p); // never written
  } else if (auto err = env_->write({{table::kv_spill, key(hash), "", true}})) {
    spdlog::warn("kv_spill: deleting a record failed: {}", err.message);
  }
  bytes_ -= it->second;
  sizes_.erase(it);
}

bool kv_spill_table::flush() {
  if (pending_.empty())
    return true;
  std::vector<write_op> ops;
  ops.reserve(pending_.size());
  for (auto& [hash, rec] : pending_)
    ops.push_back({table::kv_spill, key(hash), std::move(rec)});
  pending_.clear();
  pending_bytes_ = 0;
  if (auto err = env_->write(ops)) {
    spdlog::warn("kv_spill: writing {} page(s) failed: {}; they are dropped", ops.size(),
                 err.message);
    for (const auto& op : ops)
      if (auto h = parse_u64_key(std::string_view(op.key).substr(8))) {
        auto it = sizes_.find(*h);
        if (it != sizes_.end()) {
          bytes_ -= it->second;
          sizes_.erase(it);
        }
      }
    return false;
  }
  return true;
}

kv_spill_table::~kv_spill_table() {
  flush();
}

bool kv_spill_table::put(uint64_t hash, const proto::kv_page_record& p) {
  erase(hash);
  std::string k = key(hash);
  std::string v = seal_->seal(proto::encode(p), k);
  if (v.size() > max_bytes_)
    return false;
  while (bytes_ + v.size() > max_bytes_ && !order_.empty()) {
    uint64_t oldest = order_.front();
    order_.pop_front();
    erase(oldest);
  }
  order_.push_back(hash);
  sizes_[hash] = v.size();
  bytes_ += v.size();
  pending_bytes_ += v.size();
  pending_.emplace(hash, std::move(v));
  if (pending_.size() >= max_pending || pending_bytes_ >= max_pending_bytes)
    return flush();
  return true;
}

std::optional<proto::kv_page_record> kv_spill_table::get(uint64_t hash) {
  if (!sizes_.count(hash))
    return std::nullopt;
  std::string k = key(hash);
  if (!pending_.empty() && !flush()) // reads see LMDB only
    return std::nullopt;
  auto rec = env_->get(table::kv_spill, k);
  if (!rec || !*rec) {
    erase(hash);
    return std::nullopt;
  }
  auto plain = seal_->open(**rec, k);
  if (!plain) {
    spdlog::warn("kv_spill: page {:016x}: {}", hash, plain.err().message);
    return std::nullopt;
  }
  auto p = proto::decode_kv_page(*plain);
  erase(hash); // back in memory (or unusable)
  if (!p) {
    spdlog::warn("kv_spill: page {:016x} does not decode ({}); dropped", hash, p.err().message);
    return std::nullopt;
  }
  return std::move(*p);
}

} // namespace shoal::store
