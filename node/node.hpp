#pragma once
/// @file `shoal node`: a node_runtime wires storage, actors and the HTTP
/// gateway, serves until stopped, then shuts down gracefully (HTTP stops
/// accepting, every actor flushes and exits, LMDB is synced and closed).

#include "node/config.hpp"

#include "core/error.hpp"

#include <filesystem>
#include <memory>

namespace shoal::node {

/// One running node: its storage, its actors and its HTTP gateway.
///
/// Lifetime: `start` opens and spawns everything (on failure nothing is
/// left running); `serve` blocks until `stop` or a listener failure; the
/// destructor shuts down in the reverse order of the members (see
/// node.cpp): the gateway first (no new requests), then sessions, engines
/// and the memory pool, SONA, the router (waited for when federated, so its
/// last changes are published), the bridge, the witness log, telemetry,
/// the actor system (which waits for every actor to flush), and LMDB last
/// (synced, then closed).
///
/// Thread-safety: `stop` may be called from any thread (e.g. a signal
/// waiter); everything else from the thread that owns the runtime.
class node_runtime {
public:
  /// Opens the store (upgrading it in place), the pattern bank and router
  /// v2's checkpoint, loads the tiers' models and spawns every actor.
  /// Errors: storage_failure / corrupt_data (the store or a model),
  /// resource_exhausted (the memory budget cannot hold router v2 or a
  /// tier), invalid_argument (a config value the checks could not see
  /// before, e.g. the seal key); the message names what failed.
  static core::result<std::unique_ptr<node_runtime>> start(const node_config& cfg);

  /// Binds the HTTP listener (writing http.port_file when set) and serves
  /// until `stop`. Errors: unavailable when the address cannot be bound.
  core::error serve();

  /// Stops serving: no new connections; in-flight requests finish.
  void stop();

  ~node_runtime();
  node_runtime(const node_runtime&) = delete;
  node_runtime& operator=(const node_runtime&) = delete;

  struct impl;

private:
  explicit node_runtime(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

/// Runs a node with `cfg` until SIGINT or SIGTERM (blocked in every thread
/// and awaited by one). Returns the process exit code: 0 after a clean
/// shutdown, 1 when start-up failed (logged).
int run_node(const node_config& cfg);

/// The node's Ed25519 key file: federation.key_file, or <store.data_dir>/node.key.
std::filesystem::path key_path(const node_config& cfg);

} // namespace shoal::node
