#pragma once
/// @file The reference world: what real tier models do on the evaluation
/// split, measured once through a node's own OpenAI API and kept as a table
/// (every tier × every evaluation prompt), so that replays are fast and the
/// oracle is per prompt (the best tier in hindsight for that request).
///
/// For an evaluation document (package name + synopsis as the prompt, its
/// real long description as the reference) and a tier:
///   - quality = exp(mean log p(reference tokens | prompt)) under the tier, a
///     number in (0, 1]: the ChatML document `<|im_start|>user\n{prompt}
///     <|im_end|>\n<|im_start|>assistant\n{reference}` sent to
///     /v1/completions with echo, logprobs 0 and max_tokens 0, the
///     reference's tokens found by text_offset — lm-evaluation-harness's
///     loglikelihood request. A reference too long for the tier's context is
///     cut at a word boundary until it fits (the mean is over what fits);
///   - the greedy answer to the prompt (/v1/chat/completions, temperature 0,
///     until the end of turn or the context is full): its ROUGE-L against
///     the reference, its length in tokens, and its wall time in ms (one
///     request at a time, so the times are the tier's compute on this
///     machine plus a local HTTP round trip).
/// A tier's cost in the reference world is its mean ms per answer times a
/// stated weight λ (quality units per ms).
///
/// Thread-safety: plain data and pure functions; `build_quality_table` is
/// one client, one request at a time.

#include "core/error.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::sim {

/// One evaluation document (a line of models/eval.jsonl).
struct eval_document {
  std::string id;        ///< package name
  std::string prompt;    ///< "name: synopsis"
  std::string reference; ///< the long description
  std::string domain;    ///< Debian section (or name prefix)
};

/// Reads models/eval.jsonl-style lines {id, prompt, reference, domain}.
/// Errors name the file and line of the first malformed record.
core::result<std::vector<eval_document>> load_eval_documents(const std::string& path);

/// ROUGE-L F1 (Lin 2004, "ROUGE: A Package for Automatic Evaluation of
/// Summaries", β = 1) of `candidate` against `reference`: the longest common
/// subsequence of their word tokens (lowercased ASCII letters and digits;
/// every other byte separates words, as the rouge-score package tokenizes)
/// over the lengths. 0 when either has no words. O(n·m) time, O(m) memory.
double rouge_l(std::string_view candidate, std::string_view reference);

/// The measured table.
struct quality_table {
  struct tier {
    std::string name;
    std::string fingerprint;         ///< /v1/models meta.fingerprint: the model's identity
    std::vector<double> quality;     ///< [prompt] exp(mean reference logprob)
    std::vector<uint32_t> scored;    ///< [prompt] reference tokens the mean is over
    std::vector<double> rouge_l;     ///< [prompt] of the greedy answer
    std::vector<double> ms;          ///< [prompt] wall time of the greedy answer
    std::vector<uint32_t> tokens;    ///< [prompt] greedy answer length, tokens
    std::vector<std::string> answer; ///< [prompt] the greedy answer
    double mean_ms() const;
    double mean_quality() const;
    double mean_rouge_l() const;
  };
  std::string source;           ///< the documents' file
  std::vector<std::string> ids; ///< [prompt] document ids, in file order
  std::vector<std::string> domains;
  std::vector<tier> tiers; ///< in the node's tier order
};

/// Options of `build_quality_table`.
struct table_options {
  std::string url = "http://127.0.0.1:8080"; ///< the node serving the tiers
  /// The cache: reused when its tiers' fingerprints and ids match the node's
  /// and the documents; rewritten after every finished tier.
  std::string path;
  /// Called after each prompt: (tier, done, total).
  std::function<void(const std::string&, size_t, size_t)> progress;
};

/// Builds (or loads from opts.path) the table for `docs` and every tier the
/// node at opts.url serves. Errors: node unreachable, a request failing
/// for a reason other than the context, a cache that cannot be written.
core::result<quality_table> build_quality_table(const std::vector<eval_document>& docs,
                                                const std::string& source,
                                                const table_options& opts);

/// JSON round trip of the table. Errors name the file and the field.
core::result<bool> save_quality_table(const quality_table& t, const std::string& path);
core::result<quality_table> load_quality_table(const std::string& path);

} // namespace shoal::sim
