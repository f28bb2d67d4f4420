#pragma once
/// @file Text embedder v1: weight-free signed feature hashing.
///
/// Features of a text (after ASCII lower-casing; a word is a maximal run of
/// ASCII letters/digits or bytes >= 0x80, so UTF-8 letters stay inside words):
///   - word unigrams,
///   - word bigrams (adjacent words),
///   - character n-grams, n in [char_ngram_min, char_ngram_max], of each word
///     framed as "<word>" (fastText's subword scheme, Bojanowski et al. 2017),
///     over bytes.
/// Each distinct feature f with term frequency tf adds
///   sign(f) * group_weight * (1 + ln tf)        (sublinear tf, Manning et al. IR 6.4.1)
/// to coordinate h(f) mod dim, with h = XXH3-64 over the feature's bytes and a
/// per-group seed and sign from the hash's top bit (signed hashing trick,
/// Weinberger et al. 2009). The result is L2-normalised.
///
/// Deterministic across runs and machines: XXH3 is defined on bytes and the
/// bigram key is serialised little-endian explicitly; no locale is used.

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace shoal::engine {

/// Configuration of the hashing embedder (config keys `embedder.*`,
/// documented in node/config.cpp).
struct embedder_config {
  uint32_t dim = 384;          ///< config embedder.dim
  uint32_t char_ngram_min = 3; ///< config embedder.char_ngram_min
  uint32_t char_ngram_max = 5; ///< config embedder.char_ngram_max (>= char_ngram_min)
  float word_weight = 1.0f;    ///< config embedder.word_weight
  float bigram_weight = 0.7f;  ///< config embedder.bigram_weight
  float char_weight = 0.4f;    ///< config embedder.char_weight
};

/// The hashing embedder. Immutable after construction; `embed` is thread-safe
/// (it uses a thread-local scratch table).
class embedder {
public:
  explicit embedder(embedder_config cfg = {});

  /// Output dimension.
  uint32_t dim() const noexcept { return cfg_.dim; }

  const embedder_config& config() const noexcept { return cfg_; }

  /// Embeds `text` into `out` ([dim] f32, L2-normalised). A text without any
  /// word yields the zero vector. @pre out.size() == dim().
  void embed(std::string_view text, std::span<float> out) const;

  /// Convenience overload returning a new [dim] vector.
  std::vector<float> embed(std::string_view text) const;

private:
  embedder_config cfg_;
};

} // namespace shoal::engine
