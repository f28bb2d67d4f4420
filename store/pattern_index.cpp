// The only translation unit that includes hnswlib (its headers define
// non-inline functions; see STACK.md).
#include "store/pattern_index.hpp"

#include <hnswlib/hnswlib.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <system_error>

namespace shoal::store {

namespace {

/// hnswlib space over int8-quantized unit vectors: each element is a float
/// scale followed by `dim` int8 values (int8_ops::quantize), 4× smaller
/// than f32, so a search touches 4× fewer cache lines. Distance is
/// 1 - scale_a * scale_b * dot(a, b), by the owner's int8 dot product
/// (Shoal's dispatched kernel: hnswlib picks its SIMD at compile time, ours
/// at run time).
class cosine_i8_space final : public hnswlib::SpaceInterface<float> {
public:
  cosine_i8_space(size_t dim, int8_ops ops) : param_{dim, ops.dot}, ops_(ops) {}
  size_t get_data_size() override { return sizeof(float) + param_.dim; }
  hnswlib::DISTFUNC<float> get_dist_func() override { return &distance; }
  void* get_dist_func_param() override { return &param_; }

  /// The element bytes of `v`: scale, then the int8 values.
  std::vector<signed char> encode(std::span<const float> v) const {
    std::vector<signed char> out(sizeof(float) + v.size());
    float scale = ops_.quantize(v, {out.data() + sizeof(float), v.size()});
    std::memcpy(out.data(), &scale, sizeof scale);
    return out;
  }

private:
  struct param {
    size_t dim;
    decltype(int8_ops::dot) dot;
  };
  static float distance(const void* a, const void* b, const void* p) {
    const auto& prm = *static_cast<const param*>(p);
    float sa, sb;
    std::memcpy(&sa, a, sizeof sa);
    std::memcpy(&sb, b, sizeof sb);
    auto qa = static_cast<const signed char*>(a) + sizeof(float);
    auto qb = static_cast<const signed char*>(b) + sizeof(float);
    return 1.0f - sa * sb * static_cast<float>(prm.dot({qa, prm.dim}, {qb, prm.dim}));
  }
  param param_;
  int8_ops ops_;
};

} // namespace

struct pattern_index::impl {
  // Member order encodes lifetime: the index keeps a pointer to the space.
  cosine_i8_space space;
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> hnsw;
  uint32_t dim;
  index_config cfg;

  impl(uint32_t d, index_config c, int8_ops ops) : space(d, ops), dim(d), cfg(c) {}
};

pattern_index::pattern_index(uint32_t dim, index_config cfg, int8_ops ops)
  : impl_(std::make_unique<impl>(dim, cfg, ops)) {
  impl_->hnsw = std::make_unique<hnswlib::HierarchicalNSW<float>>(
    &impl_->space, std::max<uint64_t>(cfg.initial_capacity, 16), cfg.m, cfg.ef_construction);
  impl_->hnsw->setEf(cfg.ef_search);
}

pattern_index::pattern_index(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
pattern_index::~pattern_index() = default;
pattern_index::pattern_index(pattern_index&&) noexcept = default;
pattern_index& pattern_index::operator=(pattern_index&&) noexcept = default;

core::error pattern_index::add(uint64_t id, std::span<const float> v) {
  auto& h = *impl_->hnsw;
  try {
    auto elem = impl_->space.encode(v);
    if (h.cur_element_count >= h.max_elements_)
      h.resizeIndex(std::max<size_t>(h.max_elements_ * 2, 16));
    // A known id moves to a fresh slot and its old one is removed: hnswlib's
    // in-place update (addPoint on a known label: updatePoint, which repairs
    // every neighbour's links) costs ~15 insertions. Forgetting the label
    // makes addPoint insert; the old slot keeps the label in its bytes, so
    // loadIndex maps the label to the newest slot, this one.
    if (auto it = h.label_lookup_.find(id); it != h.label_lookup_.end()) {
      if (!h.isMarkedDeleted(it->second))
        h.markDeletedInternal(it->second);
      h.label_lookup_.erase(it);
    }
    h.addPoint(elem.data(), id);
  } catch (const std::exception& e) {
    return core::error{errc::internal, std::string("pattern index add: ") + e.what()};
  }
  return {};
}

bool pattern_index::remove(uint64_t id) noexcept {
  auto& h = *impl_->hnsw;
  auto it = h.label_lookup_.find(id);
  if (it == h.label_lookup_.end() || h.isMarkedDeleted(it->second))
    return false;
  try {
    h.markDelete(id);
  } catch (const std::exception&) {
    return false; // unreachable: the label is known and not yet deleted
  }
  return true;
}

std::vector<index_hit> pattern_index::search(std::span<const float> q, size_t k) const {
  std::vector<index_hit> out;
  auto& h = *impl_->hnsw;
  if (h.cur_element_count == h.num_deleted_ || k == 0)
    return out;
  h.setEf(std::max<size_t>(impl_->cfg.ef_search, k));
  auto elem = impl_->space.encode(q);
  auto pq = h.searchKnn(elem.data(), k);
  out.resize(pq.size());
  for (size_t i = pq.size(); i-- > 0;) {
    // Quantization can push a similarity just past ±1: clamp to cosine's range.
    out[i] = {pq.top().second, std::clamp(1.0f - pq.top().first, -1.0f, 1.0f)};
    pq.pop();
  }
  return out;
}

std::vector<float> pattern_index::get(uint64_t id) const {
  auto& h = *impl_->hnsw;
  auto it = h.label_lookup_.find(id);
  if (it == h.label_lookup_.end() || h.isMarkedDeleted(it->second))
    return {};
  const char* elem = h.getDataByInternalId(it->second);
  float scale;
  std::memcpy(&scale, elem, sizeof scale);
  auto q = reinterpret_cast<const signed char*>(elem + sizeof(float));
  std::vector<float> out(impl_->dim);
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = scale * static_cast<float>(q[i]);
  return out;
}

bool pattern_index::contains(uint64_t id) const {
  auto& h = *impl_->hnsw;
  auto it = h.label_lookup_.find(id);
  return it != h.label_lookup_.end() && !h.isMarkedDeleted(it->second);
}

size_t pattern_index::size() const noexcept {
  return impl_->hnsw->cur_element_count - impl_->hnsw->num_deleted_;
}

size_t pattern_index::removed() const noexcept {
  return impl_->hnsw->num_deleted_;
}

uint32_t pattern_index::dim() const noexcept {
  return impl_->dim;
}

core::result<uint64_t> pattern_index::hash_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return core::error{errc::not_found, "cannot open " + path.string()};
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    XXH3_64bits_update(st, buf.data(), static_cast<size_t>(in.gcount()));
  }
  bool bad = in.bad();
  uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  if (bad)
    return core::error{errc::storage_failure, "cannot read " + path.string()};
  return h;
}

core::result<uint64_t> pattern_index::save(const std::filesystem::path& path) const {
  auto tmp = path;
  tmp += ".tmp";
  try {
    impl_->hnsw->saveIndex(tmp.string());
  } catch (const std::exception& e) {
    return core::error{errc::storage_failure, "cannot write " + tmp.string() + ": " + e.what()};
  }
  auto h = hash_file(tmp);
  if (!h)
    return h;
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec)
    return core::error{errc::storage_failure,
                       "cannot rename " + tmp.string() + ": " + ec.message()};
  return h;
}

core::result<pattern_index> pattern_index::load(const std::filesystem::path& path, uint32_t dim,
                                                index_config cfg, int8_ops ops,
                                                uint64_t expected_hash) {
  if (!std::filesystem::exists(path))
    return core::error{errc::not_found, "no index file " + path.string()};
  auto h = hash_file(path);
  if (!h)
    return h.err();
  if (*h != expected_hash)
    return core::error{errc::corrupt_data,
                       "index file " + path.string() + " does not match its checkpoint hash"};
  auto p = std::make_unique<impl>(dim, cfg, ops);
  try {
    p->hnsw = std::make_unique<hnswlib::HierarchicalNSW<float>>(&p->space, path.string(), false, 0);
  } catch (const std::exception& e) {
    return core::error{errc::corrupt_data, "index file " + path.string() + ": " + e.what()};
  }
  // The file's own layout: label_offset_ - offsetData_ is its vector size.
  if (p->hnsw->label_offset_ - p->hnsw->offsetData_ != sizeof(float) + dim)
    return core::error{errc::corrupt_data, "index file " + path.string()
                                             + " has another element layout than int8 x "
                                             + std::to_string(dim)};
  // hnswlib 0.6.2's loading constructor leaves num_deleted_ uninitialised
  // and then adds the file's removal marks to it: count them again.
  auto& hnsw = *p->hnsw;
  hnsw.num_deleted_ = 0;
  for (size_t i = 0; i < hnsw.cur_element_count; ++i)
    hnsw.num_deleted_ += hnsw.isMarkedDeleted(static_cast<hnswlib::tableint>(i)) ? 1 : 0;
  hnsw.setEf(cfg.ef_search);
  return pattern_index(std::move(p));
}

} // namespace shoal::store
