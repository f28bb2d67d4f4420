#include "federation/bridge_logic.hpp"

#include "federation/signing.hpp"

#include <algorithm>
#include <cstdlib>
#include <iterator>

namespace shoal::federation {

namespace {

/// Longest a resync request stays valid (either side of now), ms.
constexpr int64_t resync_max_age_ms = 60'000;

/// Shortest time between two republishes, ms.
constexpr int64_t republish_interval_ms = 1000;

/// The counter of each drop_reason, indexed by its value.
constexpr uint64_t federation_stats::*dropped_counters[] = {
  &federation_stats::dropped_oversized, &federation_stats::dropped_malformed,
  &federation_stats::dropped_untrusted, &federation_stats::dropped_bad_signature,
  &federation_stats::dropped_invalid};
static_assert(std::size(dropped_counters) == static_cast<size_t>(drop_reason::invalid) + 1);

inbound_verdict drop(drop_reason r, std::string problem) {
  inbound_verdict v;
  v.dropped = r;
  v.problem = std::move(problem);
  return v;
}

/// Decodes a payload of a core-NATS kind that must name its sender.
template <class T, class Decode>
std::optional<T> decode_from(const std::string& payload, uint64_t sender, Decode decode,
                             std::string& problem) {
  auto x = decode(payload);
  if (!x) {
    problem = x.err().message;
    return std::nullopt;
  }
  if (x->node != sender) {
    problem = "it claims node " + std::to_string(x->node) + " but is signed by node "
              + std::to_string(sender);
    return std::nullopt;
  }
  return std::move(*x);
}

} // namespace

const char* log_kind(drop_reason r) noexcept {
  switch (r) {
    case drop_reason::oversized:
      return "oversized";
    case drop_reason::malformed:
      return "malformed";
    case drop_reason::untrusted:
    case drop_reason::bad_signature:
      return "signature";
    case drop_reason::invalid:
      return "invalid";
  }
  return "malformed";
}

core::error check_batch(const proto::delta_batch& b, uint64_t sender, const node_shape& self) {
  if (b.node != sender)
    return {errc::invalid_argument,
            "batch claims node " + std::to_string(b.node) + " but is signed by node "
              + std::to_string(sender),
            "node"};
  if (b.dim != self.dim || b.n_tiers != self.n_tiers)
    return {errc::invalid_argument,
            "batch has dimension " + std::to_string(b.dim) + " and " + std::to_string(b.n_tiers)
              + " tiers; this node uses " + std::to_string(self.dim) + " and "
              + std::to_string(self.n_tiers),
            "dim"};
  return {};
}

inbound_verdict check_inbound(const proto::envelope& e, const crypto::trust_list& trusted,
                              const node_shape& self) {
  auto sender = verify(trusted, e);
  if (!sender)
    return drop(sender.err().code == errc::not_found ? drop_reason::untrusted
                                                     : drop_reason::bad_signature,
                "dropped a message: " + sender.err().message);
  if (*sender == self.id) {
    inbound_verdict v;
    v.own = true;
    return v;
  }
  inbound_message m{*sender, e.signer, {}};
  std::string problem;
  switch (e.kind) {
    case proto::wire_kind::delta_batch: {
      auto b = proto::decode_delta_batch(e.payload);
      if (!b)
        return drop(drop_reason::invalid, "dropped a delta batch: " + b.err().message);
      if (auto err = check_batch(*b, *sender, self))
        return drop(drop_reason::invalid, "dropped a delta batch: " + err.message);
      m.body = std::move(*b);
      break;
    }
    case proto::wire_kind::digest:
      if (auto d = decode_from<proto::digest>(e.payload, *sender, proto::decode_digest, problem))
        m.body = std::move(*d);
      else
        return drop(drop_reason::malformed, "dropped a digest from '" + e.signer + "': " + problem);
      break;
    case proto::wire_kind::resync:
      if (auto r =
            decode_from<proto::resync_request>(e.payload, *sender, proto::decode_resync, problem))
        m.body = std::move(*r);
      else
        return drop(drop_reason::malformed,
                    "dropped a resync request from '" + e.signer + "': " + problem);
      break;
    case proto::wire_kind::telemetry:
      if (auto t = decode_from<proto::telemetry_report>(e.payload, *sender, proto::decode_telemetry,
                                                        problem))
        m.body = std::move(*t);
      else
        return drop(drop_reason::malformed,
                    "dropped telemetry from '" + e.signer + "': " + problem);
      break;
    default:
      return drop(drop_reason::malformed, "dropped a message of unknown kind "
                                            + std::to_string(static_cast<int>(e.kind)) + " from '"
                                            + e.signer + "'");
  }
  inbound_verdict v;
  v.accepted = std::move(m);
  return v;
}

bool resync_applies(const proto::resync_request& r, uint64_t self_id, int64_t now_ms) noexcept {
  bool fresh = std::abs(now_ms - r.sent_ms) < resync_max_age_ms;
  return fresh && (r.target == 0 || r.target == self_id);
}

proto::origin_summary own_summary(const std::vector<proto::origin_summary>& origins,
                                  uint64_t self_id) {
  proto::origin_summary mine{self_id, 0, 0, 0};
  for (const auto& o : origins)
    if (o.node == self_id)
      mine = o;
  return mine;
}

bool republish_limiter::admit(int64_t now_ms) noexcept {
  if (last_ms_ && now_ms - *last_ms_ < republish_interval_ms)
    return false;
  last_ms_ = now_ms;
  return true;
}

void republish_limiter::record(int64_t now_ms) noexcept {
  last_ms_ = now_ms;
}

std::vector<proto::delta_batch> cut_batches(std::vector<proto::pattern_delta>& deltas,
                                            const proto::delta_batch& header, int64_t limit_bytes,
                                            uint64_t& next_seq, int64_t now_ms) {
  // A conservative estimate of each delta's encoded size.
  auto estimate = [](const proto::pattern_delta& d) {
    return static_cast<int64_t>(64 + 4 * d.centroid.size() + 32 * d.contrib.tiers.size());
  };
  std::vector<proto::delta_batch> out;
  size_t i = 0;
  while (i < deltas.size()) {
    auto& b = out.emplace_back();
    b.node = header.node;
    b.node_name = header.node_name;
    b.seq = ++next_seq;
    b.sent_ms = now_ms;
    b.dim = header.dim;
    b.n_tiers = header.n_tiers;
    b.changed_us = header.changed_us;
    int64_t bytes = 128;
    while (i < deltas.size() && (b.deltas.empty() || bytes + estimate(deltas[i]) <= limit_bytes)) {
      bytes += estimate(deltas[i]);
      b.deltas.push_back(std::move(deltas[i++]));
    }
  }
  return out;
}

bridge_ledger::bridge_ledger(node_shape self, uint32_t digest_interval_ms, uint64_t start_seq)
  : self_(self), digest_interval_ms_(digest_interval_ms),
    seen_seq_(start_seq), mine_{self.id, 0, 0, 0} {
  st_.node_id = self.id;
  st_.stream_seq = start_seq;
}

federation_stats bridge_ledger::snapshot() const {
  auto s = st_;
  s.stream_seq = seen_seq_;
  return s;
}

void bridge_ledger::saw(uint64_t seq) noexcept {
  seen_seq_ = std::max(seen_seq_, seq);
}

inbound_verdict bridge_ledger::check(const proto::envelope& e, const crypto::trust_list& trusted) {
  auto v = check_inbound(e, trusted, self_);
  if (v.dropped)
    count_drop(*v.dropped);
  return v;
}

void bridge_ledger::count_drop(drop_reason r) noexcept {
  ++(st_.*dropped_counters[static_cast<size_t>(r)]);
}

void bridge_ledger::count_merge(const proto::merge_stats& m, int64_t changed_us, int64_t now_us) {
  if (changed_us > 0)
    st_.lag.observe(static_cast<uint64_t>(std::max<int64_t>(0, now_us - changed_us)) * 1000);
  st_.deltas_merged += m.applied;
  st_.deltas_stale += m.stale;
  st_.patterns_created += m.created;
  st_.orphaned += m.orphaned;
}

void bridge_ledger::set_own(const proto::router_digest& rd) {
  mine_ = own_summary(rd.origins, self_.id);
}

std::optional<std::string> bridge_ledger::on_digest(uint64_t sender, const proto::digest& d,
                                                    int64_t now_ms) {
  auto theirs = own_summary(d.origins, self_.id);
  switch (on_peer_digest(views_[sender], mine_, theirs, now_ms, digest_interval_ms_)) {
    case repair::none:
      return std::nullopt;
    case repair::different_set:
      return "peer " + d.node_name + " holds a different set of them";
    case repair::stays_behind:
      return "peer " + d.node_name + " stays behind";
  }
  return std::nullopt;
}

bool bridge_ledger::admit_republish(int64_t now_ms) noexcept {
  if (!limiter_.admit(now_ms))
    return false;
  ++st_.republishes;
  return true;
}

void bridge_ledger::force_republish(int64_t now_ms) noexcept {
  limiter_.record(now_ms);
  ++st_.republishes;
}

void bridge_ledger::note_peer(const std::string& signer, const proto::telemetry_report& t,
                              int64_t now_ms) {
  auto it = std::find_if(st_.peers.begin(), st_.peers.end(),
                         [&](const peer_info& p) { return p.node == t.node; });
  if (it == st_.peers.end())
    it = st_.peers.insert(st_.peers.end(), peer_info{});
  *it = {signer, t.node, now_ms, t};
}

uint64_t bridge_ledger::n_dropped() const noexcept {
  return st_.dropped_untrusted + st_.dropped_bad_signature + st_.dropped_malformed
         + st_.dropped_oversized + st_.dropped_invalid;
}

proto::telemetry_report bridge_ledger::telemetry(const proto::router_stats& rs,
                                                 const std::string& name, int64_t now_ms) const {
  return {.node = self_.id,
          .node_name = name,
          .sent_ms = now_ms,
          .n_patterns = rs.n_patterns,
          .n_routed = rs.n_routed,
          .n_learned = rs.n_learned,
          .n_deltas_sent = st_.deltas_sent,
          .n_deltas_merged = st_.deltas_merged,
          .n_dropped = n_dropped()};
}

} // namespace shoal::federation
