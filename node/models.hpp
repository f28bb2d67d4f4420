#pragma once
/// @file The tiers' models at start: resolving a tier's `model` setting to a
/// GGUF file (writing random-weight demo models into the model cache), and
/// loading model and tokenizer. Called once at start, on the main thread.

#include "actors/engine.hpp"
#include "core/error.hpp"
#include "router/pattern_bank.hpp"

#include <filesystem>
#include <optional>
#include <string>
#include <variant>

namespace shoal::node {

/// Where demo models are written: $SHOAL_MODEL_CACHE, else
/// $XDG_CACHE_HOME/shoal/models, else ~/.cache/shoal/models.
std::filesystem::path model_cache_dir();

/// The GGUF path of a tier's `model` setting: a file path as given, or for
/// "demo:<shape>:<type>" the cached file (written first if absent; the
/// weights are seeded, so every node writes the same bytes). Errors:
/// invalid_argument (an unknown shape or type; context: the spec),
/// storage_failure (an unwritable cache; context: the directory or file).
core::result<std::filesystem::path> resolve_model(const std::string& spec);

/// Loads a tier: model, tokenizer, scheduler limits, its KV cache's paging
/// and the node's memory budget. Errors: resolve_model's, the GGUF's or the
/// tokenizer's (corrupt_data, storage_failure), the message naming the tier
/// and the file.
core::result<actors::engine_tier> load_tier(const router::tier_config& tc,
                                            const engine::kv_tier_config& kv,
                                            std::shared_ptr<core::memory_budget> budget);

} // namespace shoal::node
