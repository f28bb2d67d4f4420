#pragma once
/// @file `shoal node`: wires storage, actors and the HTTP gateway, serves until
/// SIGINT or SIGTERM, then shuts down gracefully (HTTP stops accepting, every
/// actor flushes and exits, LMDB is synced and closed).

#include "node/config.hpp"

#include <filesystem>

namespace shoal::node {

/// Runs a node with `cfg`. Blocks until a shutdown signal. Returns the
/// process exit code: 0 after a clean shutdown, 1 when start-up failed
/// (storage, index, or the listening socket).
int run_node(const node_config& cfg);

/// The node's Ed25519 key file: federation.key_file, or <store.data_dir>/node.key.
std::filesystem::path key_path(const node_config& cfg);

} // namespace shoal::node
