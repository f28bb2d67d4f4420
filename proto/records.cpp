#include "proto/records.hpp"

#include "proto/codec.hpp"

#include <cmath>

namespace shoal::proto {

namespace cp = shoal::proto::capnp;
using namespace codec;

std::string encode(const pattern_record& x) {
  ::capnp::MallocMessageBuilder mb;
  auto p = mb.initRoot<cp::Pattern>();
  p.setId(x.id);
  p.setCentroid(as_data(x.centroid));
  write_tiers(p.initTiers(static_cast<unsigned>(x.tiers.size())), x.tiers);
  p.setHits(x.hits);
  p.setCreatedMs(x.created_ms);
  p.setUpdatedMs(x.updated_ms);
  p.setVersion(x.version);
  p.setOriginNode(x.origin_node);
  p.setOriginId(x.origin_id);
  auto peers = p.initPeers(static_cast<unsigned>(x.peers.size()));
  for (unsigned i = 0; i < x.peers.size(); ++i) {
    peers[i].setNode(x.peers[i].node);
    peers[i].setVersion(x.peers[i].version);
    write_tiers(peers[i].initTiers(static_cast<unsigned>(x.peers[i].tiers.size())),
                x.peers[i].tiers);
  }
  return to_bytes(mb);
}

core::result<pattern_record> decode_pattern(std::string_view bytes) {
  return decode_with<cp::Pattern, pattern_record>(
    bytes, "pattern", [](cp::Pattern::Reader p, pattern_record& x) -> std::string {
      x.id = p.getId();
      if (!read_floats(p.getCentroid(), x.centroid))
        return "centroid is not a whole number of f32";
      x.tiers = read_tiers(p.getTiers());
      x.hits = p.getHits();
      x.created_ms = p.getCreatedMs();
      x.updated_ms = p.getUpdatedMs();
      x.version = p.getVersion();
      x.origin_node = p.getOriginNode();
      x.origin_id = p.getOriginId();
      for (auto c : p.getPeers())
        x.peers.push_back({c.getNode(), c.getVersion(), read_tiers(c.getTiers())});
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
  w.setLatencyBudgetMs(x.latency_budget_ms);
  w.setTemperature(d.temperature);
  w.setTopP(d.top_p);
  w.setContextTokens(d.context_tokens);
  w.setPromptTokens(x.prompt_tokens);
  w.setCompletionTokens(x.completion_tokens);
  return to_bytes(mb);
}

core::result<witness_entry> decode_witness(std::string_view bytes) {
  return decode_with<cp::WitnessRecord, witness_entry>(
    bytes, "witness record", [](cp::WitnessRecord::Reader w, witness_entry& x) -> std::string {
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
      x.latency_budget_ms = w.getLatencyBudgetMs();
      if (!(x.latency_budget_ms >= 0)) // negative or NaN
        return "latency budget is not a number of ms >= 0";
      d.temperature = w.getTemperature();
      d.top_p = w.getTopP();
      if (std::isnan(d.temperature) || std::isnan(d.top_p))
        return "temperature or top_p is NaN";
      d.context_tokens = w.getContextTokens();
      x.prompt_tokens = w.getPromptTokens();
      x.completion_tokens = w.getCompletionTokens();
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

core::result<meta_record> decode_meta(std::string_view bytes) {
  return decode_with<cp::Meta, meta_record>(bytes, "meta",
                                            [](cp::Meta::Reader m, meta_record& x) -> std::string {
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

core::result<index_checkpoint> decode_index_checkpoint(std::string_view bytes) {
  return decode_with<cp::IndexCheckpoint, index_checkpoint>(
    bytes, "index checkpoint",
    [](cp::IndexCheckpoint::Reader c, index_checkpoint& x) -> std::string {
      x.file_hash = c.getFileHash();
      x.n_patterns = c.getNPatterns();
      x.saved_ms = c.getSavedMs();
      return {};
    });
}

std::string encode(const router_v2_checkpoint& x) {
  // One segment (the whole message in the first): its flat form starts with
  // a zero byte, which tells it from the legacy layout.
  ::capnp::MallocMessageBuilder mb(static_cast<unsigned>(x.params.size() / 2 + 64));
  auto c = mb.initRoot<cp::RouterV2Checkpoint>();
  c.setVersion(x.version);
  c.setEmbedDim(x.embed_dim);
  c.setNTiers(x.n_tiers);
  c.setProj(x.proj);
  c.setHidden(x.hidden);
  c.setRankW(x.rank_w);
  c.setRankU(x.rank_u);
  c.setLoraRank(x.lora_rank);
  c.setLoraAlpha(x.lora_alpha);
  c.setTemperature(x.temperature);
  c.setMaxImportance(x.max_importance);
  c.setSeed(x.seed);
  c.setParams(as_data(x.params));
  return to_bytes(mb);
}

namespace {

/// The layout before schema 3: u8 version, u32 × 7 sizes, f32 × 3, u64
/// seed, u64 n, then n f32; all little-endian.
core::result<router_v2_checkpoint> decode_legacy_router_v2(std::string_view in) {
  auto bad = [](const std::string& what) {
    return core::error{errc::corrupt_data, "router v2 checkpoint: " + what};
  };
  auto take = [&in](auto& v) {
    if (in.size() < sizeof v)
      return false;
    std::memcpy(&v, in.data(), sizeof v);
    in.remove_prefix(sizeof v);
    return true;
  };
  router_v2_checkpoint x;
  uint8_t version = 0;
  take(version);
  x.version = version;
  for (uint32_t* v :
       {&x.embed_dim, &x.n_tiers, &x.proj, &x.hidden, &x.rank_w, &x.rank_u, &x.lora_rank})
    if (!take(*v))
      return bad("truncated config");
  uint64_t n = 0;
  if (!take(x.lora_alpha) || !take(x.temperature) || !take(x.max_importance) || !take(x.seed)
      || !take(n))
    return bad("truncated config");
  if (in.size() != sizeof(float) * n)
    return bad(std::to_string(n) + " parameters announced, " + std::to_string(in.size())
               + " bytes follow");
  x.params.resize(n);
  std::memcpy(x.params.data(), in.data(), in.size());
  return x;
}

} // namespace

core::result<router_v2_checkpoint> decode_router_v2_checkpoint(std::string_view bytes) {
  if (bytes.empty())
    return core::error{errc::corrupt_data, "router v2 checkpoint: empty"};
  if (bytes[0] == 1 || bytes[0] == 2)
    return decode_legacy_router_v2(bytes);
  return decode_with<cp::RouterV2Checkpoint, router_v2_checkpoint>(
    bytes, "router v2 checkpoint",
    [](cp::RouterV2Checkpoint::Reader c, router_v2_checkpoint& x) -> std::string {
      x.version = c.getVersion();
      x.embed_dim = c.getEmbedDim();
      x.n_tiers = c.getNTiers();
      x.proj = c.getProj();
      x.hidden = c.getHidden();
      x.rank_w = c.getRankW();
      x.rank_u = c.getRankU();
      x.lora_rank = c.getLoraRank();
      x.lora_alpha = c.getLoraAlpha();
      x.temperature = c.getTemperature();
      x.max_importance = c.getMaxImportance();
      x.seed = c.getSeed();
      if (!read_floats(c.getParams(), x.params))
        return "params is not a whole number of f32";
      return {};
    });
}

std::string encode(const kv_page_record& x) {
  ::capnp::MallocMessageBuilder mb(
    static_cast<unsigned>((x.bytes.size() + 4 * x.tokens.size()) / 8 + 64));
  auto p = mb.initRoot<cp::KvPage>();
  p.setParent(x.parent);
  p.setOld(x.old);
  p.setKType(x.k_type);
  p.setVType(x.v_type);
  p.setTokens(
    {reinterpret_cast<const kj::byte*>(x.tokens.data()), x.tokens.size() * sizeof(int32_t)});
  p.setBytes({reinterpret_cast<const kj::byte*>(x.bytes.data()), x.bytes.size()});
  return to_bytes(mb);
}

core::result<kv_page_record> decode_kv_page(std::string_view bytes) {
  return decode_with<cp::KvPage, kv_page_record>(
    bytes, "kv page", [](cp::KvPage::Reader p, kv_page_record& x) -> std::string {
      x.parent = p.getParent();
      x.old = p.getOld();
      x.k_type = p.getKType();
      x.v_type = p.getVType();
      auto t = p.getTokens();
      if (t.size() % sizeof(int32_t) != 0)
        return "tokens is not a whole number of i32";
      x.tokens.resize(t.size() / sizeof(int32_t));
      std::memcpy(x.tokens.data(), t.begin(), t.size());
      auto b = p.getBytes();
      x.bytes.assign(reinterpret_cast<const char*>(b.begin()), b.size());
      return {};
    });
}

namespace {

template <class T>
std::vector<T> read_list(typename ::capnp::List<T>::Reader in) {
  std::vector<T> out;
  out.reserve(in.size());
  for (auto x : in)
    out.push_back(x);
  return out;
}

template <class T>
void write_list(typename ::capnp::List<T>::Builder out, const std::vector<T>& in) {
  for (unsigned i = 0; i < in.size(); ++i)
    out.set(i, in[i]);
}

std::string text(::capnp::Text::Reader t) {
  return std::string(t.cStr(), t.size());
}

::capnp::Data::Reader bytes_of(const std::string& s) {
  return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}

} // namespace

std::string encode(const pattern_ids_record& x) {
  ::capnp::MallocMessageBuilder mb;
  mb.initRoot<cp::PatternIds>().setReservedUpTo(x.reserved_up_to);
  return to_bytes(mb);
}

core::result<pattern_ids_record> decode_pattern_ids(std::string_view bytes) {
  return decode_with<cp::PatternIds, pattern_ids_record>(
    bytes, "pattern ids", [](cp::PatternIds::Reader r, pattern_ids_record& x) -> std::string {
      x.reserved_up_to = r.getReservedUpTo();
      return {};
    });
}

std::string encode(const categories_record& x) {
  ::capnp::MallocMessageBuilder mb(
    static_cast<unsigned>(x.means.size() / 2 + 2 * x.pattern_ids.size() + 64));
  auto c = mb.initRoot<cp::Categories>();
  c.setDim(x.dim);
  c.setNextCategory(x.next_category);
  write_list<uint32_t>(c.initLabels(static_cast<unsigned>(x.labels.size())), x.labels);
  c.setMeans(as_data(x.means));
  write_list<uint64_t>(c.initPatternIds(static_cast<unsigned>(x.pattern_ids.size())),
                       x.pattern_ids);
  write_list<uint32_t>(c.initPatternCategories(static_cast<unsigned>(x.pattern_categories.size())),
                       x.pattern_categories);
  return to_bytes(mb);
}

core::result<categories_record> decode_categories(std::string_view bytes) {
  return decode_with<cp::Categories, categories_record>(
    bytes, "categories", [](cp::Categories::Reader c, categories_record& x) -> std::string {
      x.dim = c.getDim();
      x.next_category = c.getNextCategory();
      x.labels = read_list<uint32_t>(c.getLabels());
      if (!read_floats(c.getMeans(), x.means))
        return "means is not a whole number of f32";
      x.pattern_ids = read_list<uint64_t>(c.getPatternIds());
      x.pattern_categories = read_list<uint32_t>(c.getPatternCategories());
      if (x.means.size() != size_t{x.dim} * x.labels.size())
        return std::to_string(x.means.size()) + " mean values for "
               + std::to_string(x.labels.size()) + " categories of dimension "
               + std::to_string(x.dim);
      if (x.pattern_ids.size() != x.pattern_categories.size())
        return "pattern ids and categories differ in length";
      return {};
    });
}

std::string encode(const stream_position_record& x) {
  ::capnp::MallocMessageBuilder mb;
  mb.initRoot<cp::StreamPosition>().setSeq(x.seq);
  return to_bytes(mb);
}

core::result<stream_position_record> decode_stream_position(std::string_view bytes) {
  return decode_with<cp::StreamPosition, stream_position_record>(
    bytes, "stream position",
    [](cp::StreamPosition::Reader r, stream_position_record& x) -> std::string {
      x.seq = r.getSeq();
      return {};
    });
}

std::string encode(const policy_record& x) {
  ::capnp::MallocMessageBuilder mb(static_cast<unsigned>(x.value.size() / 8 + 64));
  auto p = mb.initRoot<cp::Policy>();
  p.setKind(x.kind);
  p.setLoop(x.loop);
  p.setConfidence(x.confidence);
  p.setVersion(x.version);
  p.setUpdatedMs(x.updated_ms);
  p.setValue(bytes_of(x.value));
  return to_bytes(mb);
}

core::result<policy_record> decode_policy(std::string_view bytes) {
  return decode_with<cp::Policy, policy_record>(
    bytes, "policy", [](cp::Policy::Reader p, policy_record& x) -> std::string {
      x.kind = text(p.getKind());
      x.loop = text(p.getLoop());
      x.confidence = p.getConfidence();
      x.version = p.getVersion();
      x.updated_ms = p.getUpdatedMs();
      auto v = p.getValue();
      x.value.assign(reinterpret_cast<const char*>(v.begin()), v.size());
      return {};
    });
}

std::string encode(const kv_policy_record& x) {
  ::capnp::MallocMessageBuilder mb;
  auto p = mb.initRoot<cp::KvPolicy>();
  p.setRecentTokens(x.recent_tokens);
  p.setOldKType(x.old_k_type);
  p.setOldVType(x.old_v_type);
  p.setMigratePages(x.migrate_pages);
  return to_bytes(mb);
}

core::result<kv_policy_record> decode_kv_policy(std::string_view bytes) {
  return decode_with<cp::KvPolicy, kv_policy_record>(
    bytes, "KV policy", [](cp::KvPolicy::Reader p, kv_policy_record& x) -> std::string {
      x.recent_tokens = p.getRecentTokens();
      x.old_k_type = p.getOldKType();
      x.old_v_type = p.getOldVType();
      x.migrate_pages = p.getMigratePages();
      return {};
    });
}

std::string encode(const session_record& x) {
  ::capnp::MallocMessageBuilder mb(static_cast<unsigned>(x.context.size() / 2 + 64));
  auto s = mb.initRoot<cp::Session>();
  s.setId(x.id);
  s.setUser(x.user);
  s.setContext(as_data(x.context));
  s.setTurns(x.turns);
  s.setAdapter(x.adapter);
  s.setCreatedMs(x.created_ms);
  s.setLastMs(x.last_ms);
  s.setKvTier(x.kv_tier);
  s.setKvTokens(x.kv_tokens);
  s.setKvPages(x.kv_pages);
  return to_bytes(mb);
}

core::result<session_record> decode_session(std::string_view bytes) {
  return decode_with<cp::Session, session_record>(
    bytes, "session", [](cp::Session::Reader s, session_record& x) -> std::string {
      x.id = text(s.getId());
      x.user = text(s.getUser());
      if (!read_floats(s.getContext(), x.context))
        return "context is not a whole number of f32";
      x.turns = s.getTurns();
      x.adapter = text(s.getAdapter());
      x.created_ms = s.getCreatedMs();
      x.last_ms = s.getLastMs();
      x.kv_tier = text(s.getKvTier());
      x.kv_tokens = s.getKvTokens();
      x.kv_pages = s.getKvPages();
      return {};
    });
}

} // namespace shoal::proto
