#pragma once
/// @file The node's configuration: one struct per module, gathered here,
/// parsed and validated once (TOML file, then `SHOAL_*` environment variables,
/// then `--set key=value`, later sources overriding earlier ones).
///
/// Every key has a name, type, default, range and description in one registry
/// (`settings()`, and `tier_settings()` for the keys of a `[[tiers]]` table),
/// from which `configs/node.toml` is written and checked. The config structs
/// (here and in their modules) hold the defaults; a field that is a key only
/// names it (`///< config http.port`): its description is the registry's.

#include "actors/actors.hpp"
#include "core/error.hpp"
#include "router/pattern_bank.hpp"
#include "engine/embedder.hpp"
#include "engine/kv_cache.hpp"
#include "federation/bridge.hpp"
#include "node/kernel_packs.hpp"
#include "store/environment.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace shoal::node {

/// HTTP gateway configuration (keys `http.*`).
struct http_config {
  std::string address = "127.0.0.1";       ///< config http.address
  uint32_t port = 8080;                    ///< config http.port
  std::string port_file;                   ///< config http.port_file
  uint64_t max_body_bytes = 1 << 20;       ///< config http.max_body_bytes
  uint32_t threads = 8;                    ///< config http.threads
  uint32_t request_timeout_ms = 30000;     ///< config http.request_timeout_ms
  uint32_t generation_timeout_ms = 300000; ///< config http.generation_timeout_ms
};

/// The whole node configuration.
struct node_config {
  std::string name = "shoal-1";   ///< config node.name
  std::string log_level = "info"; ///< config node.log_level
  http_config http;
  store::store_config store;
  engine::embedder_config embedder;
  router::router_config router;
  actors::witness_config witness;
  actors::sona_config sona;
  federation::federation_config federation;
  kernels_config kernels;
  /// Paging and tiers of every tier's KV cache (keys kv.*; kv_tier() turns
  /// them into the engine's kv_tier_config).
  struct kv_settings {
    uint32_t page_tokens = 16;       ///< config kv.page_tokens
    uint32_t recent_tokens = 256;    ///< config kv.recent_tokens
    uint32_t migrate_pages = 4;      ///< config kv.migrate_pages
    std::string old_k_type = "q8_0"; ///< config kv.old_k_type
    std::string old_v_type = "q8_0"; ///< config kv.old_v_type
    bool prefix_caching = true;      ///< config kv.prefix_caching
  } kv;
  uint64_t memory_budget_mb = 1024;       ///< config memory.budget_mb
  std::string memory_seal_key;            ///< config memory.seal_key
  uint64_t memory_spill_max_mb = 4096;    ///< config memory.spill_max_mb
  uint32_t memory_session_idle_s = 86400; ///< config memory.session_idle_s
  uint32_t scheduler_threads = 0;         ///< config node.scheduler_threads
};

/// A typed config value.
using setting_value = std::variant<bool, int64_t, double, std::string>;

/// One documented configuration key of a `Config` (node_config for the
/// dotted keys, router::tier_config for the keys of a `[[tiers]]` table).
template <class Config>
struct basic_setting {
  std::string key;         ///< dotted name, e.g. "router.k" (tier keys: "n_ctx")
  char type;               ///< 'b' bool, 'i' integer, 'd' float, 's' string
  double min = 0, max = 0; ///< inclusive range for 'i' and 'd'
  std::string doc;         ///< one paragraph: the only description of the key
  std::function<void(Config&, const setting_value&)> set;
  std::function<setting_value(const Config&)> get;
};

/// One dotted key (`section.name`).
using setting = basic_setting<node_config>;
/// One key of a `[[tiers]]` table (key = the field name, e.g. "n_ctx").
using tier_setting = basic_setting<router::tier_config>;

/// The registry of every dotted key (everything except `[[tiers]]`).
const std::vector<setting>& settings();

/// The registry of the keys of one `[[tiers]]` table; errors name them
/// "tiers[i].<key>".
const std::vector<tier_setting>& tier_settings();

/// Loads the configuration: defaults, then `path` (TOML; may be empty for
/// none), then the process environment (`SHOAL_<KEY>` with dots as
/// underscores, upper case), then `overrides` ("key=value").
/// Errors (invalid_argument; `context` names the key as it was spelt, or
/// the file): unknown key, wrong type, out of range, unreadable/invalid file.
core::result<node_config>
load_config(const std::string& path, const std::vector<std::string>& overrides, char** environ_ptr);

/// The engine's KV tier configuration from the kv.* keys (validated by
/// load_config: the type names are known).
engine::kv_tier_config kv_tier(const node_config& c);

/// Renders the defaults as a documented TOML file (the content of
/// configs/node.toml).
std::string render_default_toml();

} // namespace shoal::node
