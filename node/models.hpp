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
#include <vector>

namespace shoal::node {

/// Where demo models are written: $SHOAL_MODEL_CACHE, else
/// $XDG_CACHE_HOME/shoal/models, else ~/.cache/shoal/models.
std::filesystem::path model_cache_dir();

/// Where "shoal:" models are looked for, in order: $SHOAL_MODELS_DIR; the
/// source tree's models/ above the running binary (build/node/shoal →
/// models/); <prefix>/share/shoal/models for an installed binary
/// (<prefix>/bin/shoal); ./models.
std::vector<std::filesystem::path> trained_model_dirs();

/// The GGUF path of a tier's `model` setting: a file path as given; for
/// "demo:<shape>:<type>" the cached file (written first if absent; the
/// weights are seeded, so every node writes the same bytes); for
/// "shoal:<name>[:<type>]" the trained model <name>.<type>.gguf (type
/// default q8_0; e.g. shoal:shoal-deb-s:f16) found in trained_model_dirs().
/// Errors: invalid_argument (an unknown shape or type; context: the spec),
/// not_found (a "shoal:" model in none of the directories, which the
/// message lists), storage_failure (an unwritable cache; context: the
/// directory or file).
core::result<std::filesystem::path> resolve_model(const std::string& spec);

/// Loads a tier: model, tokenizer, scheduler limits, its KV cache's paging
/// and the node's memory budget. Errors: resolve_model's, the GGUF's or the
/// tokenizer's (corrupt_data, storage_failure), the message naming the tier
/// and the file.
core::result<actors::engine_tier> load_tier(const router::tier_config& tc,
                                            const engine::kv_tier_config& kv,
                                            std::shared_ptr<core::memory_budget> budget);

} // namespace shoal::node
