#pragma once
/// @file Stored record types and their Cap'n Proto codecs (schema:
/// proto/schema/store.capnp). Decoding never trusts its input: malformed bytes
/// give `errc::corrupt_data`, never a crash.

#include "proto/messages.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::proto {

/// Current schema version of the stored records (table `meta`, key "schema").
/// 1: issue 2. 2: patterns carry their origin and peers' contributions
/// (federation). A store is upgraded in place when a newer build opens it.
inline constexpr uint32_t schema_version = 2;

/// Quality statistics of one tier on one pattern.
struct tier_stat {
  double sum_quality = 0;  ///< sum of observed quality, each in [0, 1]
  double sum_quality2 = 0; ///< sum of squared quality
  uint64_t count = 0;      ///< number of observations
};

/// One origin node's contribution to a pattern's statistics: the element of
/// the federation CRDT (per origin, the highest version wins; see
/// router/crdt.hpp).
struct contribution {
  uint64_t node = 0;            ///< origin node id
  uint64_t version = 0;         ///< the origin's clock at its last change
  std::vector<tier_stat> tiers; ///< [n_tiers] the origin's observations
};

/// A pattern of the router's bank: a region of embedding space with what was
/// learned about each tier there.
struct pattern_record {
  uint64_t id = 0;
  std::vector<float> centroid; ///< [dim] f32, L2-normalised
  std::vector<tier_stat> tiers; ///< [n_tiers], indexed like the configured tiers
  uint64_t hits = 0;
  int64_t created_ms = 0; ///< UTC ms since the Unix epoch
  int64_t updated_ms = 0;
  uint64_t version = 0;     ///< this node's clock at its last change of `tiers`
  uint64_t origin_node = 0; ///< node that created the pattern; 0 = this node
  uint64_t origin_id = 0;   ///< the pattern's id on its origin node
  std::vector<contribution> peers; ///< other nodes' contributions, sorted by node
};

/// Router v2's checkpoint (policy "router/v2"): the model's config and its
/// flat parameter vector (learn/router_v2.hpp documents the layout).
struct router_v2_checkpoint {
  uint32_t version = 0; ///< parameter layout (1: up to b_q; 2: with the sampling and context heads)
  uint32_t embed_dim = 0, n_tiers = 0, proj = 0, hidden = 0, rank_w = 0, rank_u = 0,
           lora_rank = 0;
  float lora_alpha = 0, temperature = 0, max_importance = 0;
  uint64_t seed = 0;
  std::vector<float> params; ///< [n_params] f32
};

/// A KV-cache page the memory budget evicted (table `kv_spill`): its place
/// in the prefix chain and its K and V bytes.
struct kv_page_record {
  uint64_t parent = 0;  ///< hash of the page before it in the prefix chain (0: first)
  bool old = false;     ///< tier of the bytes: false recent, true old (quantized)
  uint8_t k_type = 0;   ///< kernels::kv_type code of the K bytes (checked by the reader)
  uint8_t v_type = 0;   ///< kernels::kv_type code of the V bytes
  std::vector<int32_t> tokens; ///< [n] token ids of the page
  std::string bytes;    ///< the page (all layers, K and V) in those types
};

/// Schema metadata of a node's store.
struct meta_record {
  uint32_t schema_version = 0;
  uint32_t embedding_dim = 0;
  int64_t created_ms = 0;
};

/// What the pattern index file beside the LMDB environment holds.
struct index_checkpoint {
  uint64_t file_hash = 0; ///< XXH3-64 of the file's bytes
  uint64_t n_patterns = 0;
  int64_t saved_ms = 0;
};

std::string encode(const pattern_record& x);
std::string encode(const witness_entry& x);
std::string encode(const meta_record& x);
std::string encode(const index_checkpoint& x);
std::string encode(const router_v2_checkpoint& x);
std::string encode(const kv_page_record& x);

/// Decoders. @param bytes any alignment (copied into an aligned buffer).
/// @returns the record, or `errc::corrupt_data` naming what was wrong.
caf::expected<pattern_record> decode_pattern(std::string_view bytes);
caf::expected<witness_entry> decode_witness(std::string_view bytes);
caf::expected<meta_record> decode_meta(std::string_view bytes);
caf::expected<index_checkpoint> decode_index_checkpoint(std::string_view bytes);
/// Reads a Cap'n Proto RouterV2Checkpoint, or the little-endian layout
/// written before it (first byte = version 1 or 2; a Cap'n Proto message
/// starts with a segment count, 0 for ours). Errors: corrupt_data naming
/// what is wrong (unknown version, truncated, trailing bytes).
caf::expected<router_v2_checkpoint> decode_router_v2_checkpoint(std::string_view bytes);
caf::expected<kv_page_record> decode_kv_page(std::string_view bytes);

} // namespace shoal::proto
