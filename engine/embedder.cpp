#include "engine/embedder.hpp"

#include "kernels/vector.hpp"

#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

namespace shoal::engine {

namespace {

// Per-group hash seeds; changing them changes every embedding (and so would
// invalidate stored patterns): they are part of the format.
constexpr uint64_t seed_word = 0x5348'4f41'4c57'0001ull;
constexpr uint64_t seed_bigram = 0x5348'4f41'4c42'0002ull;
constexpr uint64_t seed_char = 0x5348'4f41'4c43'0003ull;

enum group : uint8_t { g_word = 0, g_bigram = 1, g_char = 2 };

/// Open-addressing counter of feature hashes (linear probing); reused per
/// thread so `embed` does not allocate in the steady state.
struct feature_counts {
  std::vector<uint64_t> keys; // 0 = empty (a hash of 0 is remapped to 1)
  std::vector<uint32_t> counts;
  std::vector<uint8_t> groups;
  std::vector<uint32_t> used; // occupied slots, in insertion order
  size_t mask = 0;

  void reset(size_t n_features) {
    size_t cap = 64;
    while (cap < 2 * n_features)
      cap <<= 1;
    if (keys.size() < cap) {
      keys.assign(cap, 0);
      counts.assign(cap, 0);
      groups.assign(cap, 0);
    } else {
      for (uint32_t s : used)
        keys[s] = 0;
      cap = keys.size();
    }
    mask = cap - 1;
    used.clear();
  }

  void add(uint64_t h, group g) {
    h = h == 0 ? 1 : h;
    size_t s = (h ^ (h >> 29)) & mask;
    while (keys[s] != 0 && keys[s] != h)
      s = (s + 1) & mask;
    if (keys[s] == 0) {
      keys[s] = h;
      counts[s] = 0;
      groups[s] = g;
      used.push_back(static_cast<uint32_t>(s));
    }
    ++counts[s];
  }
};

bool is_word_byte(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

} // namespace

embedder::embedder(embedder_config cfg) : cfg_(cfg) {
  // Invariants are validated by the config parser; clamp defensively so a
  // programmer error cannot index out of bounds.
  cfg_.dim = std::max<uint32_t>(cfg_.dim, 1);
  cfg_.char_ngram_min = std::max<uint32_t>(cfg_.char_ngram_min, 1);
  cfg_.char_ngram_max = std::max(cfg_.char_ngram_max, cfg_.char_ngram_min);
}

void embedder::embed(std::string_view text, std::span<float> out) const {
  thread_local feature_counts table;
  thread_local std::string lowered;
  thread_local std::vector<std::pair<uint32_t, uint32_t>> words; // [begin, end)
  std::fill(out.begin(), out.end(), 0.0f);
  lowered.resize(text.size());
  std::transform(text.begin(), text.end(), lowered.begin(), lower);
  words.clear();
  for (size_t i = 0; i < lowered.size();) {
    while (i < lowered.size() && !is_word_byte(static_cast<unsigned char>(lowered[i])))
      ++i;
    size_t b = i;
    while (i < lowered.size() && is_word_byte(static_cast<unsigned char>(lowered[i])))
      ++i;
    if (i > b)
      words.emplace_back(static_cast<uint32_t>(b), static_cast<uint32_t>(i));
  }
  if (words.empty())
    return;
  const size_t n_grams = cfg_.char_ngram_max - cfg_.char_ngram_min + 1;
  size_t n_features = 2 * words.size();
  for (auto [b, e] : words)
    n_features += (e - b + 2) * n_grams;
  table.reset(n_features);
  uint64_t prev = 0;
  char framed[72];
  for (size_t w = 0; w < words.size(); ++w) {
    auto [b, e] = words[w];
    std::string_view word(lowered.data() + b, e - b);
    uint64_t h = XXH3_64bits_withSeed(word.data(), word.size(), seed_word);
    table.add(h, g_word);
    if (w > 0) {
      unsigned char key[16];
      for (int k = 0; k < 8; ++k) {
        key[k] = static_cast<unsigned char>(prev >> (8 * k));
        key[8 + k] = static_cast<unsigned char>(h >> (8 * k));
      }
      table.add(XXH3_64bits_withSeed(key, sizeof(key), seed_bigram), g_bigram);
    }
    prev = h;
    // Character n-grams of "<word>" (words longer than 64 bytes are cut).
    size_t len = std::min<size_t>(word.size(), 64);
    framed[0] = '<';
    std::memcpy(framed + 1, word.data(), len);
    framed[len + 1] = '>';
    size_t flen = len + 2;
    for (size_t n = cfg_.char_ngram_min; n <= cfg_.char_ngram_max; ++n)
      for (size_t p = 0; p + n <= flen; ++p)
        table.add(XXH3_64bits_withSeed(framed + p, n, seed_char), g_char);
  }
  const float weights[3] = {cfg_.word_weight, cfg_.bigram_weight, cfg_.char_weight};
  for (uint32_t s : table.used) {
    uint64_t h = table.keys[s];
    float v = weights[table.groups[s]] * (1.0f + std::log(static_cast<float>(table.counts[s])));
    size_t idx = (h & 0x7fff'ffff'ffff'ffffull) % cfg_.dim;
    out[idx] += (h >> 63) ? -v : v;
  }
  kernels::normalize(out);
}

std::vector<float> embedder::embed(std::string_view text) const {
  std::vector<float> out(cfg_.dim);
  embed(text, out);
  return out;
}

} // namespace shoal::engine
