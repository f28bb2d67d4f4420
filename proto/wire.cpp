#include "proto/wire.hpp"

#include "proto/codec.hpp"
#include "shoal/proto/federation.capnp.h"

namespace shoal::proto {

namespace cp = shoal::proto::capnp;
using namespace codec;

namespace {

::capnp::Data::Reader as_data(const std::string& s) {
  return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}

std::string as_string(::capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

} // namespace

std::string encode(const envelope& x) {
  ::capnp::MallocMessageBuilder mb;
  auto e = mb.initRoot<cp::Envelope>();
  e.setKind(static_cast<cp::Kind>(x.kind));
  e.setPayload(as_data(x.payload));
  e.setSigner(x.signer);
  e.setSignature(as_data(x.signature));
  return to_bytes(mb);
}

core::result<envelope> decode_envelope(std::string_view bytes) {
  return decode_with<cp::Envelope, envelope>(
    bytes, "envelope", [](cp::Envelope::Reader e, envelope& x) -> std::string {
      auto k = static_cast<uint16_t>(e.getKind());
      if (k > static_cast<uint16_t>(wire_kind::resync))
        return "unknown kind " + std::to_string(k);
      x.kind = static_cast<wire_kind>(k);
      x.payload = as_string(e.getPayload());
      x.signer = e.getSigner();
      x.signature = as_string(e.getSignature());
      return {};
    });
}

std::string encode(const delta_batch& x) {
  ::capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<cp::DeltaBatch>();
  b.setNode(x.node);
  b.setNodeName(x.node_name);
  b.setSeq(x.seq);
  b.setSentMs(x.sent_ms);
  b.setDim(x.dim);
  b.setNTiers(x.n_tiers);
  b.setChangedUs(x.changed_us);
  auto ds = b.initDeltas(static_cast<unsigned>(x.deltas.size()));
  for (unsigned i = 0; i < x.deltas.size(); ++i) {
    const auto& d = x.deltas[i];
    ds[i].setOriginNode(d.origin_node);
    ds[i].setOriginId(d.origin_id);
    if (!d.centroid.empty())
      ds[i].setCentroid(codec::as_data(d.centroid));
    ds[i].setVersion(d.contrib.version);
    write_tiers(ds[i].initTiers(static_cast<unsigned>(d.contrib.tiers.size())), d.contrib.tiers);
  }
  return to_bytes(mb);
}

core::result<delta_batch> decode_delta_batch(std::string_view bytes) {
  return decode_with<cp::DeltaBatch, delta_batch>(
    bytes, "delta batch", [](cp::DeltaBatch::Reader b, delta_batch& x) -> std::string {
      x.node = b.getNode();
      x.node_name = b.getNodeName();
      x.seq = b.getSeq();
      x.sent_ms = b.getSentMs();
      x.dim = b.getDim();
      x.n_tiers = b.getNTiers();
      x.changed_us = b.getChangedUs();
      auto ds = b.getDeltas();
      x.deltas.reserve(ds.size());
      for (auto d : ds) {
        pattern_delta out;
        out.origin_node = d.getOriginNode();
        out.origin_id = d.getOriginId();
        if (!read_floats(d.getCentroid(), out.centroid))
          return "a centroid is not a whole number of f32";
        out.contrib.node = x.node;
        out.contrib.version = d.getVersion();
        out.contrib.tiers = read_tiers(d.getTiers());
        x.deltas.push_back(std::move(out));
      }
      return {};
    });
}

std::string encode(const digest& x) {
  ::capnp::MallocMessageBuilder mb;
  auto d = mb.initRoot<cp::Digest>();
  d.setNode(x.node);
  d.setNodeName(x.node_name);
  d.setSentMs(x.sent_ms);
  d.setPatterns(x.n_patterns);
  auto os = d.initOrigins(static_cast<unsigned>(x.origins.size()));
  for (unsigned i = 0; i < x.origins.size(); ++i) {
    os[i].setNode(x.origins[i].node);
    os[i].setCount(x.origins[i].count);
    os[i].setMaxVersion(x.origins[i].max_version);
    os[i].setHash(x.origins[i].hash);
  }
  return to_bytes(mb);
}

core::result<digest> decode_digest(std::string_view bytes) {
  return decode_with<cp::Digest, digest>(
    bytes, "digest", [](cp::Digest::Reader d, digest& x) -> std::string {
      x.node = d.getNode();
      x.node_name = d.getNodeName();
      x.sent_ms = d.getSentMs();
      x.n_patterns = d.getPatterns();
      for (auto o : d.getOrigins())
        x.origins.push_back({o.getNode(), o.getCount(), o.getMaxVersion(), o.getHash()});
      return {};
    });
}

std::string encode(const resync_request& x) {
  ::capnp::MallocMessageBuilder mb;
  auto r = mb.initRoot<cp::Resync>();
  r.setNode(x.node);
  r.setNodeName(x.node_name);
  r.setSentMs(x.sent_ms);
  r.setTarget(x.target);
  return to_bytes(mb);
}

core::result<resync_request> decode_resync(std::string_view bytes) {
  return decode_with<cp::Resync, resync_request>(
    bytes, "resync", [](cp::Resync::Reader r, resync_request& x) -> std::string {
      x.node = r.getNode();
      x.node_name = r.getNodeName();
      x.sent_ms = r.getSentMs();
      x.target = r.getTarget();
      return {};
    });
}

std::string encode(const telemetry_report& x) {
  ::capnp::MallocMessageBuilder mb;
  auto t = mb.initRoot<cp::Telemetry>();
  t.setNode(x.node);
  t.setNodeName(x.node_name);
  t.setSentMs(x.sent_ms);
  t.setPatterns(x.n_patterns);
  t.setRouted(x.n_routed);
  t.setLearned(x.n_learned);
  t.setDeltasSent(x.n_deltas_sent);
  t.setDeltasMerged(x.n_deltas_merged);
  t.setDropped(x.n_dropped);
  return to_bytes(mb);
}

core::result<telemetry_report> decode_telemetry(std::string_view bytes) {
  return decode_with<cp::Telemetry, telemetry_report>(
    bytes, "telemetry", [](cp::Telemetry::Reader t, telemetry_report& x) -> std::string {
      x.node = t.getNode();
      x.node_name = t.getNodeName();
      x.sent_ms = t.getSentMs();
      x.n_patterns = t.getPatterns();
      x.n_routed = t.getRouted();
      x.n_learned = t.getLearned();
      x.n_deltas_sent = t.getDeltasSent();
      x.n_deltas_merged = t.getDeltasMerged();
      x.n_dropped = t.getDropped();
      return {};
    });
}

} // namespace shoal::proto
