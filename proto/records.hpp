#pragma once
/// @file Stored record types and their Cap'n Proto codecs (schema:
/// proto/schema/store.capnp). Decoding never trusts its input: malformed bytes
/// give `errc::corrupt_data`, never a crash.

#include "core/error.hpp"
#include "proto/messages.hpp"

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::proto {

/// Current schema version of the stored records (table `meta`, key "schema").
/// 1: issue 2. 2: patterns carry their origin and peers' contributions
/// (federation). 3: every record is a Cap'n Proto message in a typed table;
/// `meta` holds "schema" only (store/upgrade.hpp moves what schema 2 kept
/// elsewhere). A store is upgraded in place when a newer build opens it.
inline constexpr uint32_t schema_version = 3;

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
  std::vector<float> centroid;  ///< [dim] f32, L2-normalised
  std::vector<tier_stat> tiers; ///< [n_tiers], indexed like the configured tiers
  uint64_t hits = 0;
  int64_t created_ms = 0; ///< UTC ms since the Unix epoch
  int64_t updated_ms = 0;
  uint64_t version = 0;            ///< this node's clock at its last change of `tiers`
  uint64_t origin_node = 0;        ///< node that created the pattern; 0 = this node
  uint64_t origin_id = 0;          ///< the pattern's id on its origin node
  std::vector<contribution> peers; ///< other nodes' contributions, sorted by node
};

/// Router v2's checkpoint (policy "router/v2"): the model's config and its
/// flat parameter vector (learn/router_v2.hpp documents the layout).
struct router_v2_checkpoint {
  uint32_t version = 0; ///< parameter layout (1: up to b_q; 2: with the sampling and context heads)
  uint32_t embed_dim = 0, n_tiers = 0, proj = 0, hidden = 0, rank_w = 0, rank_u = 0, lora_rank = 0;
  float lora_alpha = 0, temperature = 0, max_importance = 0;
  uint64_t seed = 0;
  std::vector<float> params; ///< [n_params] f32
};

/// A KV-cache page the memory budget evicted (table `kv_spill`): its place
/// in the prefix chain and its K and V bytes.
struct kv_page_record {
  uint64_t parent = 0;         ///< hash of the page before it in the prefix chain (0: first)
  bool old = false;            ///< tier of the bytes: false recent, true old (quantized)
  uint8_t k_type = 0;          ///< kernels::kv_type code of the K bytes (checked by the reader)
  uint8_t v_type = 0;          ///< kernels::kv_type code of the V bytes
  std::vector<int32_t> tokens; ///< [n] token ids of the page
  std::string bytes;           ///< the page (all layers, K and V) in those types
};

/// Pattern ids handed out up to this bound (table `router_state`, "ids").
struct pattern_ids_record {
  uint64_t reserved_up_to = 0;
};

/// The pattern bank's categories (table `router_state`, "categories").
struct categories_record {
  uint32_t dim = 0;
  uint32_t next_category = 0;
  std::vector<uint32_t> labels;             ///< [k] category ids
  std::vector<float> means;                 ///< [k, dim] row per category
  std::vector<uint64_t> pattern_ids;        ///< [n] patterns with a category
  std::vector<uint32_t> pattern_categories; ///< [n] their categories
};

/// The pattern stream's committed position (table `federation_state`, "stream").
struct stream_position_record {
  uint64_t seq = 0;
};

/// A policy record (table `policies`; the key is its name).
struct policy_record {
  std::string kind;
  std::string loop;
  double confidence = 0;
  uint64_t version = 0;
  int64_t updated_ms = 0;
  std::string value; ///< a Cap'n Proto message of the kind (router_v2_checkpoint, kv_policy_record)
};

/// A tier's KV-cache tiering (policy "kv/<tier>", kind "kv").
struct kv_policy_record {
  uint32_t recent_tokens = 0;
  uint8_t old_k_type = 0; ///< kernels::kv_type code (checked by the reader)
  uint8_t old_v_type = 0;
  uint32_t migrate_pages = 0;
};

/// A session (table `sessions`, sealed; the key is its id).
struct session_record {
  std::string id;
  std::string user;
  std::vector<float> context; ///< [dim]
  uint32_t turns = 0;
  std::string adapter;
  int64_t created_ms = 0, last_ms = 0; ///< UTC ms
  std::string kv_tier;
  uint32_t kv_tokens = 0, kv_pages = 0;
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
std::string encode(const pattern_ids_record& x);
std::string encode(const categories_record& x);
std::string encode(const stream_position_record& x);
std::string encode(const policy_record& x);
std::string encode(const kv_policy_record& x);
std::string encode(const session_record& x);

/// Decoders. @param bytes any alignment (copied into an aligned buffer).
/// @returns the record, or `errc::corrupt_data` naming what was wrong.
core::result<pattern_record> decode_pattern(std::string_view bytes);
core::result<witness_entry> decode_witness(std::string_view bytes);
core::result<meta_record> decode_meta(std::string_view bytes);
core::result<index_checkpoint> decode_index_checkpoint(std::string_view bytes);
/// Reads a Cap'n Proto RouterV2Checkpoint, or the little-endian layout
/// written before it (first byte = version 1 or 2; a Cap'n Proto message
/// starts with a segment count, 0 for ours). Errors: corrupt_data naming
/// what is wrong (unknown version, truncated, trailing bytes).
core::result<router_v2_checkpoint> decode_router_v2_checkpoint(std::string_view bytes);
core::result<kv_page_record> decode_kv_page(std::string_view bytes);
core::result<pattern_ids_record> decode_pattern_ids(std::string_view bytes);
/// Also checks that the lists agree in length ([k] labels, [k·dim] means, [n] ids and categories).
core::result<categories_record> decode_categories(std::string_view bytes);
core::result<stream_position_record> decode_stream_position(std::string_view bytes);
core::result<policy_record> decode_policy(std::string_view bytes);
core::result<kv_policy_record> decode_kv_policy(std::string_view bytes);
core::result<session_record> decode_session(std::string_view bytes);

} // namespace shoal::proto
