#pragma once
/// @file The node's configuration: one struct per module, gathered here,
/// parsed and validated once (TOML file, then `SHOAL_*` environment variables,
/// then `--set key=value`, later sources overriding earlier ones).
///
/// Every key has a name, type, default, range and description in one registry
/// (`settings()`, and `tier_settings()` for the keys of a `[[tiers]]` table),
/// from which `configs/node.toml` is written and checked.

#include "actors/actors.hpp"
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
  /// Address to listen on. Default: "127.0.0.1".
  std::string address = "127.0.0.1";
  /// TCP port; 0 picks a free one (see port_file). Default: 8080. Range [0, 65535].
  uint32_t port = 8080;
  /// If not empty, the bound "address:port" is written to this file once the
  /// node listens (used by tests and scripts). Default: "".
  std::string port_file;
  /// Largest request body accepted, bytes. Default: 1048576. Range [1024, 1073741824].
  uint64_t max_body_bytes = 1 << 20;
  /// HTTP worker threads. Default: 8. Range [1, 256].
  uint32_t threads = 8;
  /// Longest a request waits for an actor's answer, ms; 0 = no limit (and no
  /// timer per request). Default: 0. Range [0, 600000].
  uint32_t request_timeout_ms = 0;
};

/// The whole node configuration.
struct node_config {
  /// Name of this node (metrics label, later federation subject). Default: "shoal-1".
  std::string name = "shoal-1";
  /// Log level: trace, debug, info, warn, error, off. Default: "info".
  std::string log_level = "info";
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
    uint32_t page_tokens = 16;     ///< tokens per page. Range [1, 1024].
    uint32_t recent_tokens = 256;  ///< newest tokens kept in F16. Range [0, 1048576].
    uint32_t migrate_pages = 4;    ///< pages migrated together. Range [1, 1024].
    std::string old_k_type = "q8_0"; ///< f16, q8_0 or q4_0
    std::string old_v_type = "q8_0"; ///< f16, q8_0 or q4_0
    bool prefix_caching = true;
  } kv;
  /// One byte budget for KV pages, LoRA adapters and router weights, MiB
  /// (key memory.budget_mb). Default: 1024. Range [1, 1048576].
  uint64_t memory_budget_mb = 1024;
  /// Key sealing session data and spilled KV pages at rest: 64 hex digits
  /// (key memory.seal_key, or SHOAL_MEMORY_SEAL_KEY). Empty: evicted pages
  /// are dropped, not spilled. Default: "".
  std::string memory_seal_key;
  /// Most MiB of spilled KV pages kept per tier (oldest dropped first).
  /// Default: 4096. Range [1, 1048576].
  uint64_t memory_spill_max_mb = 4096;
  /// Sessions idle this long are removed (key memory.session_idle_s).
  /// Default: 86400. Range [1, 31536000].
  uint32_t memory_session_idle_s = 86400;
  /// CAF scheduler worker threads; 0 = CAF's default max(cores, 4). Default: 0.
  uint32_t scheduler_threads = 0;
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

/// A config error: which key, and what is wrong with it.
struct config_error {
  std::string key;
  std::string message;
};

/// Loads the configuration: defaults, then `path` (TOML; may be empty for
/// none), then the process environment (`SHOAL_<KEY>` with dots as
/// underscores, upper case), then `overrides` ("key=value").
/// Errors: unknown key, wrong type, out of range, unreadable/invalid file.
std::variant<node_config, config_error> load_config(const std::string& path,
                                                    const std::vector<std::string>& overrides,
                                                    char** environ_ptr);

/// The engine's KV tier configuration from the kv.* keys (validated by
/// load_config: the type names are known).
engine::kv_tier_config kv_tier(const node_config& c);

/// Renders the defaults as a documented TOML file (the content of
/// configs/node.toml).
std::string render_default_toml();

} // namespace shoal::node
