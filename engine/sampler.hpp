#pragma once
/// @file Token sampling and stop strings for decoding.
///
/// Caveats first:
///   - A `sampler` holds one sequence's random state and scratch buffers: one
///     per sequence, used by one thread at a time (not thread-safe; movable).
///   - The sampling chain and its order are llama.cpp's default chain
///     (src/llama-sampling.cpp, common/sampling.cpp) restricted to the
///     OpenAI / llama.cpp-server parameters below:
///       penalties -> top-k -> top-p -> min-p -> temperature -> draw.
///     Truncation therefore sees temperature-1 probabilities; vLLM applies
///     the temperature before top-k/top-p instead, so the same (temperature,
///     top_p) can keep a different set of tokens there. Ties in logit are
///     broken by the lower token id everywhere.
///   - Reported log-probabilities are those of the RAW model logits
///     (log-softmax before penalties, truncation and temperature), as vLLM
///     reports by default; they are not the probabilities the token was
///     drawn with.
///   - Draws are reproducible for a given seed, parameters, logits and history:
///     each draw takes one output x of std::mt19937_64 (a sequence fixed by
///     the C++ standard), u = (x >> 11)·2^-53, and picks the first kept token,
///     in id order, whose running weight sum exceeds u·Σweights (no
///     std::*_distribution, whose outputs differ between standard libraries).
///     Kernels on other CPUs (AVX2 / AVX-512 / scalar) may round the weights
///     differently, which changes a draw only when u·Σ falls within rounding
///     of a boundary.

#include "core/error.hpp"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shoal::engine {

namespace detail {
/// A token during truncation. `key` encodes the chain's total order (higher
/// logit first, then lower id) as one integer, larger = better: the high 32
/// bits are the logit's bits mapped to unsigned order, the low 32 bits ~id.
struct sampler_candidate {
  uint64_t key;
  float logit; // penalised
  float prob;  // temperature-1 probability (top-p stages only)
};
} // namespace detail

/// Per-request sampling parameters (OpenAI / llama.cpp-server semantics).
/// Plain values: copy freely; check with `validate` before use (the HTTP
/// layer turns its error into an OpenAI 400). The sampler copies them when it
/// is created, so later edits do not touch a running sequence.
struct sampling_params {
  /// Softmax temperature applied after truncation: weights exp((l - max)/T).
  /// 0 = greedy: the argmax of the penalised logits, ties to the lowest id,
  /// no random number is drawn. Default: 1.0. Range [0, 2].
  float temperature = 1.0f;

  /// Keep only the k tokens with the highest penalised logits (ties: lower id
  /// first). 0 = off; values >= vocabulary size are off too. Cost grows
  /// with k (a k-entry heap): cheap up to a few hundred. Default: 0 (llama.cpp
  /// uses 40). Range >= 0.
  int32_t top_k = 0;

  /// Nucleus sampling (Holtzman et al. 2019): keep the shortest prefix of the
  /// tokens sorted by penalised logit (ties: lower id first) whose
  /// probability, softmax at temperature 1 over the tokens top-k left, sums
  /// to >= top_p. Always keeps at least one token. 1.0 = off.
  /// Default: 1.0. Range (0, 1].
  float top_p = 1.0f;

  /// Min-p (llama.cpp): keep tokens whose probability is at least
  /// min_p · (probability of the most likely token), i.e. penalised logit
  /// >= max + ln(min_p). 0 = off. Default: 0. Range [0, 1].
  float min_p = 0.0f;

  /// Repetition penalty (Keskar et al. 2019, CTRL, as llama.cpp applies it):
  /// each distinct token in the penalty window has its logit divided by this
  /// value if the logit is positive, multiplied if it is <= 0. 1.0 = off;
  /// > 1 discourages repetition. Default: 1.0. Range (0, 10].
  float repetition_penalty = 1.0f;

  /// OpenAI presence penalty: logit -= presence_penalty for every token that
  /// occurs at least once in the penalty window. 0 = off.
  /// Default: 0. Range [-2, 2].
  float presence_penalty = 0.0f;

  /// OpenAI frequency penalty: logit -= count · frequency_penalty, count =
  /// occurrences of the token in the penalty window. 0 = off.
  /// Default: 0. Range [-2, 2].
  float frequency_penalty = 0.0f;

  /// Penalty window: the last `penalty_last_n` tokens of the history passed
  /// to `sampler::sample`. As in llama.cpp's server the engine passes prompt
  /// + generated tokens, so the window spans both (OpenAI counts generated
  /// tokens only: pass only those to get that). 0 = no penalties, -1 = the
  /// whole history. Default: 64 (llama.cpp's repeat_last_n).
  /// Range [-1, 1048576].
  int32_t penalty_last_n = 64;

  /// Seed of the sequence's generator. Absent = drawn from std::random_device
  /// when the sampler is created (read it back with `sampler::seed()`).
  /// Default: absent. Range: any 64-bit value.
  std::optional<uint64_t> seed;

  /// Number of most likely alternatives to report per token (OpenAI
  /// `top_logprobs`; 0 = none). Default: 0. Range [0, 20].
  int32_t n_logprobs = 0;
};

/// Largest `n_logprobs` (OpenAI's limit for top_logprobs).
inline constexpr int32_t max_n_logprobs = 20;

/// Checks every field of `p` against its documented range (NaN is out of
/// every range). @return true, or an error naming the first bad field, its
/// allowed range and the value given, e.g.
/// "temperature must be in [0, 2], got 3.5". Thread-safe (pure).
core::result<bool> validate(const sampling_params& p);

/// One sampled token.
struct sampled_token {
  /// Token id in [0, n_vocab).
  int32_t id = 0;
  /// Natural-log probability of `id` under the RAW logits: log-softmax before
  /// penalties, truncation and temperature (vLLM's default). <= 0.
  float logprob = 0.0f;
  /// The `n_logprobs` tokens with the highest raw logits and their raw
  /// log-probabilities, most likely first (ties: lower id first); empty when
  /// n_logprobs == 0 (then nothing is allocated).
  std::vector<std::pair<int32_t, float>> top_logprobs;
};

/// Samples one token per decode step from a model's logits.
///
/// Non-finite logits: NaN is treated as -inf; -inf tokens are never drawn
/// (probability 0, logprob -inf); +inf counts as the largest finite float,
/// so +inf tokens share the probability among themselves. If every logit is
/// -inf or NaN, `sample` returns an error and draws nothing.
///
/// Precision: weights are computed in float through kernels::softmax;
/// tokens more than 60 nats (temperature-scaled) below the best one are
/// given weight e^-60 instead of their smaller true weight (their total is
/// below 1e-21 of the whole), which keeps the vector exp away from slow
/// subnormal arithmetic.
///
/// Cost per call (n = n_vocab): two vectorised passes plus kernels::softmax
/// over the logits for every call (copy with NaN handling, raw log-softmax),
/// then per stage: top-k a 64-wide vector scan with a k-entry heap; top-p a
/// try on the 64 best tokens, else one bucketing pass, a histogram and a
/// sort of one bucket (no sort of the vocabulary); the draw itself a
/// softmax and a blocked prefix sum when more than 1024 tokens are kept.
/// Penalties cost O(penalty window) plus one pass. Measured per call at
/// n = 128,000 on this project's 2-core Xeon (AVX-512; Release; medians of
/// 300, random logits N(0, σ) with a few peaked tokens): greedy 70 µs;
/// top_k = 40: 95-100 µs; top_p = 0.95 (top_k off): 95-140 µs when the
/// nucleus is small, 280-330 µs for near-flat logits (thousands of tokens in
/// the nucleus); llama.cpp's defaults (top_k 40, top_p 0.95, min_p 0.05,
/// temperature 0.8, repetition 1.1): 120-130 µs. At n = 152,064 near-flat
/// top_p 0.95: ~380 µs; at n = 32,000: ~90 µs.
///
/// Memory: two float buffers of n_vocab (8 bytes/token), plus on first use
/// 4 bytes/token for penalty counts and 2 bytes/token for top-p buckets
/// (1.8 MB in all at n = 128,000). No allocation after the first calls,
/// except the returned top_logprobs vector.
class sampler {
public:
  /// Creates a sampler for a vocabulary of `n_vocab` tokens.
  /// @return an error if `validate(params)` fails or n_vocab <= 0.
  static core::result<sampler> create(const sampling_params& params, int32_t n_vocab);

  /// Draws the next token.
  /// @param logits  [n_vocab] raw model logits of the last position; not
  ///                modified. @param history tokens so far (prompt +
  ///                generated, oldest first); only the last `penalty_last_n`
  ///                are read; ids outside [0, n_vocab) are ignored.
  /// @return the token, or an error if logits.size() != n_vocab or no logit
  /// is finite. Advances the generator by one 64-bit value (none when greedy).
  core::result<sampled_token> sample(std::span<const float> logits,
                                     std::span<const int32_t> history);

  /// Scores a given token instead of drawing one (prompt logprobs, OpenAI
  /// completions' `echo`): the raw log-probability of `id` under `logits`
  /// and the `n_logprobs` best tokens, exactly as `sample` reports them for
  /// the token it draws (no penalties, truncation or temperature). Does not
  /// advance the generator.
  /// @return an error if logits.size() != n_vocab, id is outside
  /// [0, n_vocab) or no logit is finite.
  core::result<sampled_token> score(std::span<const float> logits, int32_t id);

  /// The chain's first stage on its own: applies this sampler's repetition,
  /// frequency and presence penalties to `logits` in place, over the last
  /// `penalty_last_n` tokens of `history` (ids outside [0, n_vocab) are
  /// ignored). `sample` does the same on its private copy of the logits.
  /// @return whether any logit was changed (false, untouched, if
  /// logits.size() != n_vocab).
  bool apply_penalties(std::span<float> logits, std::span<const int32_t> history);

  /// The seed in use (the given one, or the one drawn at creation).
  uint64_t seed() const noexcept { return seed_; }
  const sampling_params& params() const noexcept { return params_; }
  int32_t n_vocab() const noexcept { return n_vocab_; }

private:
  sampler(const sampling_params& params, int32_t n_vocab, uint64_t seed);

  /// The kept set after truncation: a prefix of the chain's order of n
  /// tokens whose worst member is `worst`; cands_[0, n) lists it when n <=
  /// 1024 (sorted by id if sorted_by_id, else in any order).
  struct kept_set {
    size_t n;
    detail::sampler_candidate worst;
    bool sorted_by_id;
  };

  // Stages of `sample`; each documented in sampler.cpp.
  struct raw_scores {
    float min, max;  ///< range of the sanitized logits (max == -inf: none finite)
    int32_t argmax;  ///< its id
    float log_p_max; ///< log-softmax of the argmax
    float logprob(float l) const noexcept { return std::min(0.0f, (l - max) + log_p_max); }
  };
  core::result<raw_scores> score_raw(std::span<const float> logits, sampled_token& out);
  size_t truncate_sorted(size_t n_cands, float max_logit, float min_logit);
  kept_set truncate_top_p_full(float max_logit, float min_logit, int32_t argmax);
  int32_t draw(const kept_set& kept, float max_logit, bool probs_is_t1);
  int32_t draw_from_list(size_t n_kept, float max_logit);
  int32_t draw_dense(float max_logit, float boundary_logit, size_t boundary_id, bool probs_is_t1);
  double next_uniform() noexcept;

  sampling_params params_;
  int32_t n_vocab_;
  uint64_t seed_;
  std::mt19937_64 rng_;
  // Scratch, reused across calls; the lazily sized ones grow on first use.
  std::vector<float> work_;                      // [n_vocab] sanitised, then penalised logits
  std::vector<float> probs_;                     // [n_vocab] softmax of raw / penalised / final
  std::vector<uint32_t> counts_;                 // [n_vocab] once penalties run; 0 between calls
  std::vector<int32_t> touched_;                 // distinct ids of the penalty window
  std::vector<detail::sampler_candidate> cands_; // [>= min(n_vocab, 1025), top_k]
  std::vector<double> weights_;                  // temperature weights of a short kept list
  std::vector<float> block_sums_;                // [ceil(n_vocab / 256)] for the dense draw
  std::vector<uint16_t> bucket_;                 // [n_vocab] once top-p runs: histogram bucket
  std::vector<float> bucket_mass_;               // top-p histograms: mass per bucket
  std::vector<uint32_t> bucket_count_;           // top-p histograms: tokens per bucket
};

/// Largest number of stop strings (OpenAI's limit).
inline constexpr size_t max_stop_strings = 4;
/// Longest stop string, in bytes.
inline constexpr size_t max_stop_bytes = 256;

/// Finds stop strings in streamed text without emitting any part of them.
///
/// Feed the detokenized pieces in order; each call returns the text that is
/// safe to send now. A suffix that could still become the start of a stop
/// string is held back until it either completes a stop string (then it and
/// everything after it are dropped, as OpenAI does) or stops matching
/// (then it is released). Matching is on bytes: UTF-8 passes through
/// untouched and the concatenated output is always a prefix of the input.
/// When several stop strings occur, the one that COMPLETES first in the
/// stream wins (ties: the longest), so the result does not depend on how the
/// text is split into pieces. Cost: O(bytes fed) per stop string (KMP
/// automaton, Knuth-Morris-Pratt 1977); no allocation after warm-up. One
/// thread at a time; movable.
class stop_matcher {
public:
  /// Validates and copies `stops`: at most `max_stop_strings`, each non-empty
  /// and at most `max_stop_bytes` long. An empty list matches nothing.
  static core::result<stop_matcher> create(std::span<const std::string> stops);

  /// What one `feed` produced.
  struct step {
    /// Text to emit now; a view into the matcher, valid until the next
    /// non-const call.
    std::string_view text;
    /// True once a stop string has matched (generation should end).
    bool stopped = false;
    /// Index into the stop list of the string that matched, or -1.
    int32_t stop_index = -1;
  };

  /// Appends `piece` (any bytes) and returns what may be emitted. After a
  /// stop, returns empty text with stopped = true.
  step feed(std::string_view piece);

  /// End of generation without a stop: returns all held-back text (a view
  /// valid until the next non-const call); empty after a stop. Further
  /// feeds after finish() start from an empty hold-back.
  std::string_view finish();

  bool stopped() const noexcept { return stop_index_ >= 0; }
  /// Bytes currently held back (< the longest stop string).
  size_t n_held() const noexcept { return held_.size(); }

private:
  explicit stop_matcher(std::vector<std::string> stops);

  std::vector<std::string> stops_;
  std::vector<std::vector<uint32_t>> failure_; // KMP failure function per stop
  std::vector<uint32_t> state_;                // matched prefix length per stop
  std::string held_;                           // bytes not yet emitted
  std::string out_;                            // text returned by the last call
  int32_t stop_index_ = -1;
};

} // namespace shoal::engine
