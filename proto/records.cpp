#include "proto/records.hpp"

#include "proto/error.hpp"
#include "shoal/proto/store.capnp.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstring>

namespace shoal::proto {

namespace cp = shoal::proto::capnp;

namespace {

std::string to_bytes(::capnp::MessageBuilder& mb) {
  auto words = ::capnp::messageToFlatArray(mb);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

::capnp::Data::Reader as_data(const std::vector<float>& v) {
  return {reinterpret_cast<const kj::byte*>(v.data()), v.size() * sizeof(float)};
}

bool read_floats(::capnp::Data::Reader d, std::vector<float>& out) {
  if (d.size() % sizeof(float) != 0)
    return false;
  out.resize(d.size() / sizeof(float));
  std::memcpy(out.data(), d.begin(), d.size());
  return true;
}

/// Decodes `bytes` as a message with root `Root` and hands its reader to `fn`.
/// Cap'n Proto needs 8-byte aligned words, LMDB promises 2: copy first.
template <class Root, class T, class F>
caf::expected<T> decode_with(std::string_view bytes, const char* what, F fn) {
  if (bytes.size() % sizeof(::capnp::word) != 0 || bytes.empty())
    return make_error(errc::corrupt_data,
                      std::string(what) + ": size " + std::to_string(bytes.size())
                        + " is not a whole number of 8-byte words");
  kj::Array<::capnp::word> aligned = kj::heapArray<::capnp::word>(bytes.size() / 8);
  std::memcpy(aligned.begin(), bytes.data(), bytes.size());
  try {
    ::capnp::ReaderOptions opts;
    opts.traversalLimitInWords = 64 * 1024 * 1024;
    ::capnp::FlatArrayMessageReader reader(aligned.asPtr(), opts);
    T out;
    if (auto err = fn(reader.getRoot<Root>(), out); !err.empty())
      return make_error(errc::corrupt_data, std::string(what) + ": " + err);
    return out;
  } catch (const kj::Exception& e) {
    return make_error(errc::corrupt_data,
                      std::string(what) + ": " + e.getDescription().cStr());
  }
}

} // namespace

std::string encode(const pattern_record& x) {
  ::capnp::MallocMessageBuilder mb;
  auto p = mb.initRoot<cp::Pattern>();
  p.setId(x.id);
  p.setCentroid(as_data(x.centroid));
  auto tiers = p.initTiers(static_cast<unsigned>(x.tiers.size()));
  for (unsigned i = 0; i < x.tiers.size(); ++i) {
    tiers[i].setSumQuality(x.tiers[i].sum_quality);
    tiers[i].setSumQuality2(x.tiers[i].sum_quality2);
    tiers[i].setCount(x.tiers[i].count);
  }
  p.setHits(x.hits);
  p.setCreatedMs(x.created_ms);
  p.setUpdatedMs(x.updated_ms);
  p.setVersion(x.version);
  return to_bytes(mb);
}

caf::expected<pattern_record> decode_pattern(std::string_view bytes) {
  return decode_with<cp::Pattern, pattern_record>(
    bytes, "pattern", [](cp::Pattern::Reader p, pattern_record& x) -> std::string {
      x.id = p.getId();
      if (!read_floats(p.getCentroid(), x.centroid))
        return "centroid is not a whole number of f32";
      for (auto t : p.getTiers())
        x.tiers.push_back({t.getSumQuality(), t.getSumQuality2(), t.getCount()});
      x.hits = p.getHits();
      x.created_ms = p.getCreatedMs();
      x.updated_ms = p.getUpdatedMs();
      x.version = p.getVersion();
      return {};
    });
}

std::string encode(const witness_entry& x) {
  ::capnp::MallocMessageBuilder mb;
  auto w = mb.initRoot<cp::WitnessRecord>();
  const auto& d = x.decision;
  w.setRequestId(d.request_id);
  w.setTimeMs(d.time_ms);
  w.setSessionId(x.session_id);
  w.setUser(x.user);
  w.setTextBytes(x.text_bytes);
  w.setEmbedding(as_data(x.embedding));
  w.setTier(d.tier);
  w.setTierName(d.tier_name);
  w.setConfidence(d.confidence);
  w.setPatternId(d.pattern_id);
  w.setNewPattern(d.new_pattern);
  auto ns = w.initNeighbors(static_cast<unsigned>(d.neighbors.size()));
  for (unsigned i = 0; i < d.neighbors.size(); ++i) {
    ns[i].setPatternId(d.neighbors[i].pattern_id);
    ns[i].setSimilarity(d.neighbors[i].similarity);
  }
  auto lat = w.initLatency();
  lat.setEmbedNs(d.latency.embed);
  lat.setSearchNs(d.latency.search);
  lat.setDecideNs(d.latency.decide);
  lat.setTotalNs(d.latency.total);
  w.setHasFeedback(x.has_feedback);
  w.setQuality(x.quality);
  w.setFeedbackMs(x.feedback_ms);
  return to_bytes(mb);
}

caf::expected<witness_entry> decode_witness(std::string_view bytes) {
  return decode_with<cp::WitnessRecord, witness_entry>(
    bytes, "witness record",
    [](cp::WitnessRecord::Reader w, witness_entry& x) -> std::string {
      auto& d = x.decision;
      d.request_id = w.getRequestId();
      d.time_ms = w.getTimeMs();
      x.session_id = w.getSessionId();
      x.user = w.getUser();
      x.text_bytes = w.getTextBytes();
      if (!read_floats(w.getEmbedding(), x.embedding))
        return "embedding is not a whole number of f32";
      d.tier = w.getTier();
      d.tier_name = w.getTierName();
      d.confidence = w.getConfidence();
      d.pattern_id = w.getPatternId();
      d.new_pattern = w.getNewPattern();
      for (auto n : w.getNeighbors())
        d.neighbors.push_back({n.getPatternId(), n.getSimilarity()});
      auto lat = w.getLatency();
      d.latency = {lat.getEmbedNs(), lat.getSearchNs(), lat.getDecideNs(), lat.getTotalNs()};
      x.has_feedback = w.getHasFeedback();
      x.quality = w.getQuality();
      x.feedback_ms = w.getFeedbackMs();
      return {};
    });
}

std::string encode(const meta_record& x) {
  ::capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<cp::Meta>();
  m.setSchemaVersion(x.schema_version);
  m.setEmbeddingDim(x.embedding_dim);
  m.setCreatedMs(x.created_ms);
  return to_bytes(mb);
}

caf::expected<meta_record> decode_meta(std::string_view bytes) {
  return decode_with<cp::Meta, meta_record>(
    bytes, "meta", [](cp::Meta::Reader m, meta_record& x) -> std::string {
      x.schema_version = m.getSchemaVersion();
      x.embedding_dim = m.getEmbeddingDim();
      x.created_ms = m.getCreatedMs();
      return {};
    });
}

std::string encode(const index_checkpoint& x) {
  ::capnp::MallocMessageBuilder mb;
  auto c = mb.initRoot<cp::IndexCheckpoint>();
  c.setFileHash(x.file_hash);
  c.setNPatterns(x.n_patterns);
  c.setSavedMs(x.saved_ms);
  return to_bytes(mb);
}

caf::expected<index_checkpoint> decode_index_checkpoint(std::string_view bytes) {
  return decode_with<cp::IndexCheckpoint, index_checkpoint>(
    bytes, "index checkpoint",
    [](cp::IndexCheckpoint::Reader c, index_checkpoint& x) -> std::string {
      x.file_hash = c.getFileHash();
      x.n_patterns = c.getNPatterns();
      x.saved_ms = c.getSavedMs();
      return {};
    });
}

} // namespace shoal::proto
