#pragma once
/// @file `shoal witness read`: the witness log's archive segments as JSON
/// lines, for audits and for tools that want the records outside the node.

#include <ostream>
#include <string>
#include <vector>

namespace shoal::node {

/// Writes one JSON object per record of each segment file (store/archive.hpp)
/// to `out`, in file order and key order: request_id (16 hex digits),
/// time_ms, tier, tier_index, confidence, pattern_id, new_pattern,
/// session_id, user, text_bytes, latency_budget_ms, temperature, top_p
/// (null when none), context_tokens, prompt_tokens, completion_tokens,
/// feedback ({quality, time_ms} or null). The embedding is left out.
/// Returns 0, or 1 after naming on `err` every file or record that could
/// not be read (the others are still written).
int witness_read(const std::vector<std::string>& files, std::ostream& out, std::ostream& err);

} // namespace shoal::node
