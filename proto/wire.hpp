#pragma once
/// @file Federation messages and their Cap'n Proto codecs (schema:
/// proto/schema/federation.capnp). Decoders never trust their input:
/// malformed bytes give `errc::corrupt_data` naming the problem. Semantic
/// checks (dimension, finiteness, trust) belong to the receiver.

#include "core/error.hpp"
#include "proto/records.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::proto {

/// What a signed payload is (Envelope.kind).
enum class wire_kind : uint8_t { delta_batch = 0, digest = 1, telemetry = 2, resync = 3 };

/// A signed payload as it travels on NATS.
struct envelope {
  wire_kind kind = wire_kind::delta_batch;
  std::string payload;   ///< an encoded delta_batch, digest, telemetry_report or resync_request
  std::string signer;    ///< sender's name in the trust list
  std::string signature; ///< Ed25519, 64 bytes, over [kind] ++ payload
};

/// The sender's own contribution to one pattern; `contrib.node` is the
/// sender (filled from the batch when decoding).
struct pattern_delta {
  uint64_t origin_node = 0;    ///< node that created the pattern
  uint64_t origin_id = 0;      ///< the pattern's id on that node
  std::vector<float> centroid; ///< [dim] when announced by its creator, else empty
  contribution contrib;
};

/// A batch of one node's pattern deltas (subject patterns.<node>).
struct delta_batch {
  uint64_t node = 0;
  std::string node_name;
  uint64_t seq = 0;    ///< sender's batch counter
  int64_t sent_ms = 0; ///< UTC ms
  uint32_t dim = 0;
  uint32_t n_tiers = 0;
  std::vector<pattern_delta> deltas;
  int64_t changed_us = 0; ///< UTC µs of the oldest change in the batch (0 = unknown)
};

/// What a node holds of one origin's contributions (anti-entropy).
struct origin_summary {
  uint64_t node = 0;
  uint64_t count = 0;
  uint64_t max_version = 0;
  uint64_t hash = 0; ///< XOR of XXH3-64(origin_node, origin_id, version) over them
};

struct digest {
  uint64_t node = 0;
  std::string node_name;
  int64_t sent_ms = 0;
  uint64_t n_patterns = 0;
  std::vector<origin_summary> origins;
};

struct resync_request {
  uint64_t node = 0;
  std::string node_name;
  int64_t sent_ms = 0;
  uint64_t target = 0; ///< node that should republish; 0 = every node
};

struct telemetry_report {
  uint64_t node = 0;
  std::string node_name;
  int64_t sent_ms = 0;
  uint64_t n_patterns = 0, n_routed = 0, n_learned = 0;
  uint64_t n_deltas_sent = 0, n_deltas_merged = 0, n_dropped = 0;
};

std::string encode(const envelope& x);
std::string encode(const delta_batch& x);
std::string encode(const digest& x);
std::string encode(const resync_request& x);
std::string encode(const telemetry_report& x);

/// Decoders. @param bytes any alignment. Errors: `errc::corrupt_data`.
core::result<envelope> decode_envelope(std::string_view bytes);
core::result<delta_batch> decode_delta_batch(std::string_view bytes);
core::result<digest> decode_digest(std::string_view bytes);
core::result<resync_request> decode_resync(std::string_view bytes);
core::result<telemetry_report> decode_telemetry(std::string_view bytes);

} // namespace shoal::proto
