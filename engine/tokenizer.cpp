#include "engine/tokenizer.hpp"

#include "engine/gguf.hpp"
#include "engine/tokenizer_unicode.hpp"

#include <xxhash.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <queue>

namespace shoal::engine {

namespace {

using unicode::split_rule;

constexpr std::string_view space_marker = "\xE2\x96\x81"; // U+2581 ▁

/// How llama.cpp treats a pre-tokenizer name (src/llama-vocab.cpp, load()).
struct pre_config {
  std::vector<split_rule> rules;
  bool ignore_merges = false; ///< a word that is a whole token skips the merges
  bool add_bos = false;
  bool clean_spaces = true; ///< decode's clean_up_tokenization_spaces
};

std::optional<pre_config> find_pre(std::string_view name) {
  auto in = [&](std::initializer_list<std::string_view> names) {
    return std::find(names.begin(), names.end(), name) != names.end();
  };
  using r = split_rule;
  if (in({"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
          "jina-v5-nano"}))
    return pre_config{{r::llama3}, true, true, true};
  if (in({"dbrx", "smaug-bpe"}))
    return pre_config{{r::llama3}, false, false, true};
  if (in({"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2"}))
    return pre_config{{r::qwen2}, false, false, false};
  if (in({"megrez", "stablelm2"}))
    return pre_config{{r::qwen2}, false, false, true};
  if (name == "qwen35")
    return pre_config{{r::qwen35}, false, false, false};
  if (in({"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
          "mellum", "modern-bert", "exaone4", "mpt", "olmo", "jais"}))
    return pre_config{{r::gpt2}, false, false, true};
  if (in({"starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2"}))
    return pre_config{{r::each_number, r::gpt2}, false, false, true};
  if (in({"command-r", "smollm"}))
    return pre_config{{r::each_number, r::gpt2}, false, false, false};
  if (name == "falcon")
    return pre_config{{r::punct_runs_falcon, r::gpt2, r::ascii_digit_triples}, false, false, true};
  if (name == "default")
    return pre_config{
      {r::punct_runs, r::gpt2, r::number_runs, r::ascii_digit_triples}, false, false, true};
  return std::nullopt;
}

/// Texts llama.cpp treats as end of generation (src/llama-vocab.cpp).
constexpr std::string_view eog_texts[] = {
  "<|eot_id|>",
  "<|im_end|>",
  "<|end|>",
  "<|return|>",
  "<|call|>",
  "<|flush|>",
  "<|calls|>",
  "<end_of_turn>",
  "<|endoftext|>",
  "</s>",
  "<|eom_id|>",
  "<EOT>",
  "_<EOT>",
  "[EOT]",
  "[EOS]",
  "<|end_of_text|>",
  "<end_of_utterance>",
  "<eos>",
  "<turn|>",
  "<|tool_response>",
  "<\xEF\xBD\x9C"
  "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",
  "[e~[",
};
/// Token roles llama.cpp finds by text when their id is not in the file
/// (src/llama-vocab.cpp, load()); the found token becomes a control token.
/// Where several texts exist, the first in each list wins.
enum role {
  role_eot,
  role_eom,
  role_fim_pre,
  role_fim_suf,
  role_fim_mid,
  role_fim_pad,
  role_fim_rep,
  role_fim_sep,
  n_roles
};
constexpr std::string_view role_keys[n_roles] = {
  "tokenizer.ggml.eot_token_id",     "tokenizer.ggml.eom_token_id",
  "tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.fim_suf_token_id",
  "tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.fim_pad_token_id",
  "tokenizer.ggml.fim_rep_token_id", "tokenizer.ggml.fim_sep_token_id"};
const std::vector<std::string_view> role_texts[n_roles] = {
  {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
   "<EOT>", "_<EOT>", "[EOT]",
   "<\xEF\xBD\x9C"
   "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",
   "<end_of_utterance>"},
  {"<|eom_id|>"},
  {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
   "<\xEF\xBD\x9C"
   "fim\xE2\x96\x81"
   "begin\xEF\xBD\x9C>",
   "<PRE>", "\xE2\x96\x81<PRE>", "<|code_prefix|>", "<|prefix|>"},
  {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
   "<\xEF\xBD\x9C"
   "fim\xE2\x96\x81hole\xEF\xBD\x9C>",
   "<SUF>", "\xE2\x96\x81<SUF>", "<|code_suffix|>", "<|suffix|>"},
  {"<|fim_middle|>", "<fim-middle>", "<fim_middle>",
   "<\xEF\xBD\x9C"
   "fim\xE2\x96\x81"
   "end\xEF\xBD\x9C>",
   "<MID>", "\xE2\x96\x81<MID>", "<|code_middle|>", "<|middle|>"},
  {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"},
  {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"},
  {"<|file_sep|>"},
};

/// A piece of the input: raw text or a special token matched in it.
struct fragment {
  int32_t token; ///< -1 for raw text
  size_t offset, length;
};

bool is_special_type(token_type t) {
  return t == token_type::control || t == token_type::user_defined || t == token_type::unknown;
}

bool is_ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

uint64_t hash_text(std::string_view s) {
  return XXH3_64bits(s.data(), s.size());
}

/// The byte of an SPM byte token "<0xXX>", or -1.
int parse_byte_token(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>')
    return -1;
  int v = 0;
  for (char c : t.substr(3, 2)) {
    const int d = c >= '0' && c <= '9'   ? c - '0'
                  : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                         : -1;
    if (d < 0)
      return -1;
    v = v * 16 + d;
  }
  return v;
}

/// What both constructors hand to `build`: views of the vocabulary.
struct source {
  tokenizer_model model = tokenizer_model::spm;
  std::string pre;
  std::string name; ///< general.name (phi-3's special-token rule)
  std::vector<std::string_view> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  std::vector<std::string_view> merges;
  int32_t bos = -1, eos = -1, unk = -1, pad = -1;
  std::array<int32_t, n_roles> roles{-1, -1, -1, -1, -1, -1, -1, -1}; ///< eot, eom, fim_*
  std::optional<bool> add_bos, add_eos, add_space_prefix;
  std::vector<int32_t> rstrip_ids, lstrip_ids;
};

} // namespace

struct tokenizer::impl {
  tokenizer_model model = tokenizer_model::spm;
  std::string pre = "default";
  pre_config pre_cfg;
  bool add_bos = false, add_eos = false, add_space_prefix = false;
  int32_t bos = -1, eos = -1, eot = -1, eom = -1, unk = -1, pad = -1;
  int32_t n_vocab = 0;

  std::string texts;              ///< all token texts, back to back
  std::vector<uint32_t> text_off; ///< [n_vocab + 1] offsets into texts
  std::string pieces;             ///< all pieces (special = true), back to back
  std::vector<uint32_t> piece_off;
  std::vector<float> scores;     ///< [n_vocab] (SPM) or empty
  std::vector<token_type> types; ///< [n_vocab]
  std::vector<uint8_t> strip;    ///< [n_vocab] bit 0 lstrip, bit 1 rstrip
  std::vector<int32_t> specials; ///< control / user-defined / unknown ids, longest text first
  std::vector<int32_t> eog;      ///< ascending
  /// SPM: the <0xXX> token of each byte (fallbacks: the 1-byte token, unk);
  /// BPE: the token of the byte's GPT-2 alphabet character. -1 for none.
  std::array<int32_t, 256> byte_token{};

  /// text -> id: open addressing, linear probing, -1 empty.
  std::vector<int32_t> slots;
  uint64_t slot_mask = 0;

  /// (left id, right id) -> merge rank and result id (BPE).
  struct merge_slot {
    uint64_t key = ~0ull;
    int32_t rank = 0;
    int32_t result = 0;
  };
  std::vector<merge_slot> merge_slots;
  int merge_shift = 64;

  std::string_view text(int32_t id) const {
    return std::string_view(texts).substr(text_off[id], text_off[id + 1] - text_off[id]);
  }
  std::string_view piece(int32_t id) const {
    return std::string_view(pieces).substr(piece_off[id], piece_off[id + 1] - piece_off[id]);
  }

  int32_t find(std::string_view s) const {
    if (slots.empty())
      return -1;
    for (uint64_t i = hash_text(s) & slot_mask;; i = (i + 1) & slot_mask) {
      const int32_t id = slots[i];
      if (id < 0 || text(id) == s)
        return id;
    }
  }

  static uint64_t merge_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32)
           | static_cast<uint32_t>(right);
  }
  size_t merge_home(uint64_t key) const {
    return merge_shift >= 64 ? 0
                             : static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> merge_shift);
  }
  const merge_slot* find_merge(int32_t left, int32_t right) const {
    if (merge_slots.empty() || left < 0 || right < 0)
      return nullptr;
    const uint64_t key = merge_key(left, right);
    const size_t mask = merge_slots.size() - 1;
    for (size_t i = merge_home(key);; i = (i + 1) & mask) {
      const merge_slot& s = merge_slots[i];
      if (s.key == key)
        return &s;
      if (s.key == ~0ull)
        return nullptr;
    }
  }

  core::result<bool> build_index();
  core::result<bool> build_merges(std::span<const std::string_view> merges);
  void build_pieces();

  void partition(std::string_view text, bool parse_special, std::vector<fragment>& out) const;
  void encode_spm(std::string_view text, std::vector<int32_t>& out) const;
  void encode_bpe(std::string_view text, std::vector<int32_t>& out) const;
};

core::result<bool> tokenizer::impl::build_index() {
  const size_t n_slots = std::bit_ceil(static_cast<size_t>(n_vocab) * 2 + 2);
  slots.assign(n_slots, -1);
  slot_mask = n_slots - 1;
  for (int32_t id = 0; id < n_vocab; ++id) {
    const std::string_view s = text(id);
    uint64_t i = hash_text(s) & slot_mask;
    for (; slots[i] >= 0; i = (i + 1) & slot_mask) {
      if (text(slots[i]) == s)
        return core::error{errc::corrupt_data, "tokens " + std::to_string(slots[i]) + " and "
                                                 + std::to_string(id) + " have the same text '"
                                                 + std::string(s) + "'"};
    }
    slots[i] = id;
  }
  return true;
}

core::result<bool> tokenizer::impl::build_merges(std::span<const std::string_view> merges) {
  // resolve every merge to ids first, then insert with the slots prefetched
  // (the table is larger than the caches: each insert would wait for DRAM)
  struct resolved {
    uint64_t key;
    int32_t result;
  };
  std::vector<resolved> ids(merges.size());
  std::string joined;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string_view m = merges[rank];
    const size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string_view::npos;
    if (sp == std::string_view::npos)
      return core::error{errc::corrupt_data, "merge " + std::to_string(rank) + " '" + std::string(m)
                                               + "' is not two tokens separated by a space"};
    const std::string_view left = m.substr(0, sp), right = m.substr(sp + 1);
    joined.assign(left).append(right);
    const int32_t l = find(left), r = find(right), res = find(joined);
    if (l < 0 || r < 0 || res < 0)
      return core::error{errc::corrupt_data, "merge " + std::to_string(rank) + " '" + std::string(m)
                                               + "' names "
                                               + (l < 0   ? "'" + std::string(left) + "'"
                                                  : r < 0 ? "'" + std::string(right) + "'"
                                                          : "'" + joined + "'")
                                               + ", which is not a token"};
    ids[rank] = resolved{merge_key(l, r), res};
  }

  const size_t n_slots = std::bit_ceil(merges.size() * 3 / 2 + 2);
  merge_slots.assign(n_slots, merge_slot{});
  merge_shift = 64 - std::countr_zero(n_slots);
  const size_t mask = n_slots - 1;
  constexpr size_t ahead = 16;
  for (size_t rank = 0; rank < ids.size(); ++rank) {
    if (rank + ahead < ids.size())
      __builtin_prefetch(&merge_slots[merge_home(ids[rank + ahead].key)], 1);
    const uint64_t key = ids[rank].key;
    for (size_t i = merge_home(key);; i = (i + 1) & mask) {
      if (merge_slots[i].key == key)
        break; // a repeated merge keeps its first (highest) rank, as llama.cpp
      if (merge_slots[i].key == ~0ull) {
        merge_slots[i] = merge_slot{key, static_cast<int32_t>(rank), ids[rank].result};
        break;
      }
    }
  }
  return true;
}

void tokenizer::impl::build_pieces() {
  pieces.clear();
  pieces.reserve(texts.size());
  piece_off.assign(static_cast<size_t>(n_vocab) + 1, 0);
  std::vector<uint32_t> cpts;
  for (int32_t id = 0; id < n_vocab; ++id) {
    const std::string_view t = text(id);
    switch (types[id]) {
      case token_type::control:
      case token_type::unknown:
      case token_type::user_defined:
        pieces += t;
        break;
      case token_type::normal:
        if (model == tokenizer_model::spm) {
          for (size_t i = 0; i < t.size();) {
            if (t.substr(i, space_marker.size()) == space_marker) {
              pieces += ' ';
              i += space_marker.size();
            } else {
              pieces += t[i++];
            }
          }
        } else {
          cpts.clear();
          unicode::decode_utf8(t, cpts);
          for (uint32_t c : cpts) {
            const int b = unicode::cpt_to_byte(c);
            if (b >= 0)
              pieces += static_cast<char>(b);
            else
              unicode::append_utf8(pieces, c); // outside the alphabet: kept as is
          }
        }
        break;
      case token_type::byte:
        pieces += static_cast<char>(parse_byte_token(t));
        break;
      case token_type::undefined:
      case token_type::unused:
        break;
    }
    piece_off[id + 1] = static_cast<uint32_t>(pieces.size());
  }
}

namespace {

core::result<tokenizer::impl> build_impl(const source& src) {
  tokenizer::impl t;
  t.model = src.model;
  const size_t n = src.tokens.size();
  if (n == 0)
    return core::error{errc::corrupt_data, "the vocabulary has no tokens"};
  if (n > (1u << 30))
    return core::error{errc::corrupt_data,
                       "the vocabulary has " + std::to_string(n) + " tokens (at most 2^30)"};
  t.n_vocab = static_cast<int32_t>(n);
  if (!src.scores.empty() && src.scores.size() != n)
    return core::error{errc::corrupt_data, "tokenizer.ggml.scores has "
                                             + std::to_string(src.scores.size()) + " entries for "
                                             + std::to_string(n) + " tokens"};
  if (!src.types.empty() && src.types.size() != n)
    return core::error{errc::corrupt_data, "tokenizer.ggml.token_type has "
                                             + std::to_string(src.types.size()) + " entries for "
                                             + std::to_string(n) + " tokens"};

  // texts (empty ones renamed as llama.cpp does) and types
  t.text_off.assign(n + 1, 0);
  size_t total = 0;
  for (auto s : src.tokens)
    total += s.empty() ? 20 : s.size();
  if (total >= (1ull << 32))
    return core::error{errc::corrupt_data, "the token texts take more than 4 GiB"};
  t.texts.reserve(total);
  t.types.assign(n, token_type::normal);
  for (size_t i = 0; i < n; ++i) {
    if (src.tokens[i].empty())
      t.texts += "[EMPTY_" + std::to_string(i) + "]";
    else
      t.texts += src.tokens[i];
    t.text_off[i + 1] = static_cast<uint32_t>(t.texts.size());
    if (!src.types.empty()) {
      const int32_t ty = src.types[i];
      t.types[i] = ty >= 1 && ty <= 6 ? static_cast<token_type>(ty) : token_type::undefined;
    }
    if (t.types[i] == token_type::byte && parse_byte_token(t.text(static_cast<int32_t>(i))) < 0)
      return core::error{errc::corrupt_data, "token " + std::to_string(i) + " '"
                                               + std::string(t.text(static_cast<int32_t>(i)))
                                               + "' has type byte but is not <0xXX>"};
  }
  if (src.model == tokenizer_model::spm) {
    t.scores = src.scores;
    if (t.scores.empty())
      t.scores.assign(n, 0.0f);
  }
  if (auto r = t.build_index(); !r)
    return std::move(r).err();

  // pre-tokenizer and flags
  if (src.model == tokenizer_model::bpe) {
    auto cfg = find_pre(src.pre);
    if (!cfg)
      return core::error{errc::corrupt_data,
                         "unsupported pre-tokenizer tokenizer.ggml.pre = '" + src.pre + "'"};
    t.pre_cfg = std::move(*cfg);
    t.pre = src.pre;
    t.add_bos = t.pre_cfg.add_bos;
    t.add_space_prefix = false;
    if (src.merges.empty())
      return core::error{errc::corrupt_data, "a gpt2 (BPE) vocabulary needs tokenizer.ggml.merges"};
    if (auto r = t.build_merges(src.merges); !r)
      return std::move(r).err();
  } else {
    t.pre = "default";
    t.pre_cfg.clean_spaces = false;
    t.add_bos = true;
    t.add_space_prefix = true;
  }
  t.add_bos = src.add_bos.value_or(t.add_bos);
  t.add_eos = src.add_eos.value_or(false);
  t.add_space_prefix = src.add_space_prefix.value_or(t.add_space_prefix);

  // special ids
  auto check_id = [&](std::string_view key, int32_t id) -> core::result<bool> {
    if (id >= t.n_vocab)
      return core::error{errc::corrupt_data, std::string(key) + " = " + std::to_string(id)
                                               + " is out of range (n_vocab " + std::to_string(n)
                                               + ")"};
    return true;
  };
  for (const auto& [key, id] :
       {std::pair<std::string_view, int32_t>{"tokenizer.ggml.bos_token_id", src.bos},
        {"tokenizer.ggml.eos_token_id", src.eos},
        {"tokenizer.ggml.unknown_token_id", src.unk}})
    if (auto r = check_id(key, id); !r)
      return std::move(r).err();
  for (int r = 0; r < n_roles; ++r)
    if (auto c = check_id(role_keys[r], src.roles[r]); !c)
      return std::move(c).err();
  t.bos = std::max(src.bos, -1);
  t.eos = std::max(src.eos, -1);
  t.unk = std::max(src.unk, -1);
  t.pad =
    src.pad < t.n_vocab ? std::max(src.pad, -1) : -1; // llama.cpp ignores a bad padding id too
  if (t.add_bos && t.bos < 0)
    return core::error{
      errc::corrupt_data,
      "BOS is to be added (add_bos_token, or the model's default) but there is no BOS token"};
  if (t.add_eos && t.eos < 0)
    return core::error{errc::corrupt_data,
                       "EOS is to be added (add_eos_token) but there is no EOS token"};

  // token roles and end of generation, inferred from texts as llama.cpp does
  auto make_control = [&](int32_t id) { t.types[id] = token_type::control; };
  std::array<int32_t, n_roles> roles = src.roles;
  for (int r = 0; r < n_roles; ++r) {
    for (auto it = role_texts[r].begin(); roles[r] < 0 && it != role_texts[r].end(); ++it)
      if (const int32_t id = t.find(*it); id >= 0) {
        roles[r] = id;
        make_control(id);
      }
  }
  t.eot = roles[role_eot];
  t.eom = roles[role_eom];
  for (auto s : eog_texts) {
    if (const int32_t id = t.find(s); id >= 0) {
      t.eog.push_back(id);
      make_control(id);
    }
  }
  for (int32_t id :
       {roles[role_fim_pad], roles[role_fim_rep], roles[role_fim_sep], t.eos, t.eot, t.eom})
    if (id >= 0)
      t.eog.push_back(id);
  std::sort(t.eog.begin(), t.eog.end());
  t.eog.erase(std::unique(t.eog.begin(), t.eog.end()), t.eog.end());

  // special tokens, longest first (llama.cpp's cache_special_tokens)
  for (int32_t id = 0; id < t.n_vocab; ++id)
    if (is_special_type(t.types[id]))
      t.specials.push_back(id);
  std::stable_sort(t.specials.begin(), t.specials.end(),
                   [&](int32_t a, int32_t b) { return t.text(a).size() > t.text(b).size(); });

  // strip attributes: given, and phi-3's rule (llama.cpp: model name contains phi-3 / phi3)
  t.strip.assign(n, 0);
  auto set_strip = [&](const std::vector<int32_t>& list, uint8_t bit) -> core::result<bool> {
    for (int32_t id : list) {
      if (id < 0 || id >= t.n_vocab)
        return core::error{errc::corrupt_data,
                           "strip token id " + std::to_string(id) + " is out of range"};
      t.strip[id] |= bit;
    }
    return true;
  };
  if (auto r = set_strip(src.lstrip_ids, 1); !r)
    return std::move(r).err();
  if (auto r = set_strip(src.rstrip_ids, 2); !r)
    return std::move(r).err();
  std::string lname = src.name;
  std::transform(lname.begin(), lname.end(), lname.begin(),
                 [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; });
  if (lname.find("phi-3") != std::string::npos || lname.find("phi3") != std::string::npos) {
    for (int32_t id : t.specials)
      t.strip[id] |= 2;
    if (const int32_t id = t.find("</s>"); id >= 0)
      t.strip[id] |= 2;
    for (auto s : {"<unk>", "<s>", "<|endoftext|>"})
      if (const int32_t id = t.find(s); id >= 0)
        t.strip[id] &= static_cast<uint8_t>(~2u);
  }

  // byte fallbacks
  for (int b = 0; b < 256; ++b) {
    int32_t id = -1;
    if (t.model == tokenizer_model::spm) {
      static constexpr char hex[] = "0123456789ABCDEF";
      const char name[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
      id = t.find(std::string_view(name, 6));
      if (id < 0)
        id = t.find(std::string(1, static_cast<char>(b)));
      if (id < 0)
        id = t.unk;
    } else {
      std::string s;
      unicode::append_utf8(s, unicode::byte_to_cpt(static_cast<uint8_t>(b)));
      id = t.find(s);
    }
    t.byte_token[b] = id;
  }

  t.build_pieces();
  return t;
}

} // namespace

// ---------------------------------------------------------------------------
// loading

core::result<tokenizer> tokenizer::from_vocab(const vocab& v) {
  source src;
  src.model = v.model;
  src.pre = v.pre;
  src.tokens.assign(v.tokens.begin(), v.tokens.end());
  src.scores = v.scores;
  src.types = v.types;
  src.merges.assign(v.merges.begin(), v.merges.end());
  src.bos = v.bos_id;
  src.eos = v.eos_id;
  src.unk = v.unk_id;
  src.pad = v.pad_id;
  src.roles[role_eot] = v.eot_id;
  src.roles[role_eom] = v.eom_id;
  src.add_bos = v.add_bos;
  src.add_eos = v.add_eos;
  src.add_space_prefix = v.add_space_prefix;
  src.rstrip_ids = v.rstrip_ids;
  src.lstrip_ids = v.lstrip_ids;
  auto t = build_impl(src);
  if (!t)
    return std::move(t).err();
  return tokenizer(std::make_shared<const impl>(std::move(t).value()));
}

core::result<tokenizer> tokenizer::from_gguf(const gguf_file& f) {
  source src;
  auto model = f.get_string("tokenizer.ggml.model");
  if (!model)
    return std::move(model).err();
  if (*model == "llama")
    src.model = tokenizer_model::spm;
  else if (*model == "gpt2")
    src.model = tokenizer_model::bpe;
  else
    return core::error{errc::corrupt_data, "unsupported tokenizer.ggml.model '"
                                             + std::string(*model) + "' (supported: llama, gpt2)"};

  auto pre = f.find_string("tokenizer.ggml.pre");
  if (!pre)
    return std::move(pre).err();
  src.pre = pre->value_or("default");
  if (auto name = f.find_string("general.name"); name && *name)
    src.name = **name;

  auto tokens = f.get_strings("tokenizer.ggml.tokens");
  if (!tokens)
    return std::move(tokens).err();
  src.tokens.assign(tokens->begin(), tokens->end());
  if (f.find("tokenizer.ggml.scores")) {
    auto scores = f.get_floats("tokenizer.ggml.scores");
    if (!scores)
      return std::move(scores).err();
    src.scores = std::move(*scores);
  }
  if (f.find("tokenizer.ggml.token_type")) {
    auto types = f.get_ints("tokenizer.ggml.token_type");
    if (!types)
      return std::move(types).err();
    src.types.resize(types->size());
    for (size_t i = 0; i < types->size(); ++i) {
      const int64_t v = (*types)[i];
      src.types[i] = v >= 0 && v <= 6 ? static_cast<int32_t>(v) : 0;
    }
  }
  if (src.model == tokenizer_model::bpe && f.find("tokenizer.ggml.merges")) {
    auto merges = f.get_strings("tokenizer.ggml.merges");
    if (!merges)
      return std::move(merges).err();
    src.merges.assign(merges->begin(), merges->end());
  }

  // special ids: llama.cpp's defaults, then the file's
  if (src.model == tokenizer_model::spm) {
    src.bos = 1;
    src.eos = 2;
    src.unk = 0;
  } else {
    src.bos = 11;
    src.eos = 11;
  }
  const int64_t n = static_cast<int64_t>(src.tokens.size());
  for (int32_t* d : {&src.bos, &src.eos, &src.unk})
    if (*d >= n)
      *d = -1; // a default beyond the vocabulary is no token (llama.cpp)
  std::vector<std::pair<std::string_view, int32_t*>> keys = {
    {"tokenizer.ggml.bos_token_id", &src.bos},
    {"tokenizer.ggml.eos_token_id", &src.eos},
    {"tokenizer.ggml.unknown_token_id", &src.unk},
    {"tokenizer.ggml.padding_token_id", &src.pad}};
  for (int r = 0; r < n_roles; ++r)
    keys.emplace_back(role_keys[r], &src.roles[r]);
  for (const auto& [key, dst] : keys) {
    auto v = f.find_uint(key);
    if (!v)
      return std::move(v).err();
    if (*v)
      *dst = static_cast<int32_t>(std::min<uint64_t>(**v, INT32_MAX));
  }
  const struct {
    const char* key;
    std::optional<bool>* dst;
  } flags[] = {{"tokenizer.ggml.add_bos_token", &src.add_bos},
               {"tokenizer.ggml.add_eos_token", &src.add_eos},
               {"tokenizer.ggml.add_space_prefix", &src.add_space_prefix}};
  for (const auto& k : flags) {
    auto v = f.find_bool(k.key);
    if (!v)
      return std::move(v).err();
    *k.dst = *v;
  }

  auto t = build_impl(src);
  if (!t)
    return std::move(t).err();
  return tokenizer(std::make_shared<const impl>(std::move(t).value()));
}

// ---------------------------------------------------------------------------
// encoding

void tokenizer::impl::partition(std::string_view text, bool parse_special,
                                std::vector<fragment>& frags) const {
  frags.assign(1, fragment{-1, 0, text.size()});
  std::array<bool, 256> present{};
  for (char c : text)
    present[static_cast<uint8_t>(c)] = true;
  std::vector<fragment> next;
  for (const int32_t id : specials) {
    const token_type ty = types[id];
    if (!parse_special && (ty == token_type::control || ty == token_type::unknown))
      continue; // user-defined tokens are split out even then (llama.cpp)
    const std::string_view tok = this->text(id);
    if (tok.empty() || !present[static_cast<uint8_t>(tok[0])] || tok.size() > text.size())
      continue;
    bool matched = false;
    next.clear();
    for (const fragment& fr : frags) {
      if (fr.token >= 0) {
        next.push_back(fr);
        continue;
      }
      size_t off = fr.offset, len = fr.length;
      while (len > 0) {
        const size_t m = text.substr(0, off + len).find(tok, off);
        if (m == std::string_view::npos) {
          next.push_back(fragment{-1, off, len});
          break;
        }
        matched = true;
        size_t left = m - off;
        if (strip[id] & 1)
          while (left > 0 && is_ascii_space(text[off + left - 1]))
            --left;
        if (left > 0)
          next.push_back(fragment{-1, off, left});
        next.push_back(fragment{id, 0, 0});
        size_t r_off = m + tok.size();
        size_t r_len = off + len - r_off;
        if (strip[id] & 2)
          while (r_len > 0 && is_ascii_space(text[r_off])) {
            ++r_off;
            --r_len;
          }
        off = r_off;
        len = r_len;
      }
    }
    if (matched)
      frags.swap(next);
  }
}

void tokenizer::impl::encode_spm(std::string_view text, std::vector<int32_t>& out) const {
  struct symbol {
    int32_t prev, next;
    uint32_t offset, n;
  };
  struct bigram {
    float score;
    int32_t left, right;
    uint32_t size;
  };
  struct lower_priority {
    bool operator()(const bigram& l, const bigram& r) const {
      return l.score < r.score || (l.score == r.score && l.left > r.left);
    }
  };

  std::vector<symbol> syms;
  for (size_t off = 0; off < text.size();) {
    const size_t n = std::min(unicode::utf8_len(text[off]), text.size() - off);
    const auto idx = static_cast<int32_t>(syms.size());
    syms.push_back(symbol{idx - 1, off + n == text.size() ? -1 : idx + 1,
                          static_cast<uint32_t>(off), static_cast<uint32_t>(n)});
    off += n;
  }
  if (syms.empty())
    return;

  std::priority_queue<bigram, std::vector<bigram>, lower_priority> queue;
  auto try_add = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0)
      return;
    const uint32_t size = syms[l].n + syms[r].n;
    const int32_t id = find(text.substr(syms[l].offset, size));
    if (id >= 0)
      queue.push(bigram{scores[id], l, r, size});
  };
  for (int32_t i = 1; i < static_cast<int32_t>(syms.size()); ++i)
    try_add(i - 1, i);

  while (!queue.empty()) {
    const bigram bg = queue.top();
    queue.pop();
    symbol& l = syms[bg.left];
    symbol& r = syms[bg.right];
    if (l.n == 0 || r.n == 0 || l.n + r.n != bg.size)
      continue; // stale
    l.n += r.n;
    r.n = 0;
    l.next = r.next;
    if (r.next >= 0)
      syms[r.next].prev = bg.left;
    try_add(l.prev, bg.left);
    try_add(bg.left, l.next);
  }

  for (int32_t i = 0; i != -1; i = syms[i].next) {
    const std::string_view s = text.substr(syms[i].offset, syms[i].n);
    if (const int32_t id = find(s); id >= 0) {
      out.push_back(id);
      continue;
    }
    for (char c : s) // not a token: its bytes
      if (const int32_t id = byte_token[static_cast<uint8_t>(c)]; id >= 0)
        out.push_back(id);
  }
}

void tokenizer::impl::encode_bpe(std::string_view text, std::vector<int32_t>& out) const {
  std::vector<uint32_t> cpts;
  unicode::decode_utf8(text, cpts);
  std::vector<uint16_t> flags(cpts.size());
  for (size_t i = 0; i < cpts.size(); ++i)
    flags[i] = unicode::flags_of(cpts[i]);
  std::vector<uint32_t> words{static_cast<uint32_t>(cpts.size())}, tmp;
  for (const split_rule r : pre_cfg.rules) {
    unicode::split(r, cpts, flags, words, tmp);
    words.swap(tmp);
  }

  struct symbol {
    int32_t id, prev, next;
    uint8_t byte;
    bool alive;
  };
  struct bigram {
    int32_t rank, left, right, l_id, r_id, result;
  };
  struct lower_priority {
    bool operator()(const bigram& l, const bigram& r) const {
      return l.rank > r.rank || (l.rank == r.rank && l.left > r.left);
    }
  };
  std::vector<symbol> syms;
  std::vector<bigram> heap;
  std::string word, utf8;
  size_t pos = 0;
  for (const uint32_t len : words) {
    utf8.clear();
    for (size_t i = pos; i < pos + len; ++i)
      unicode::append_utf8(utf8, cpts[i]);
    pos += len;
    if (utf8.empty())
      continue;

    if (pre_cfg.ignore_merges) {
      word.clear();
      for (char c : utf8)
        unicode::append_utf8(word, unicode::byte_to_cpt(static_cast<uint8_t>(c)));
      if (const int32_t id = find(word); id >= 0) {
        out.push_back(id);
        continue;
      }
    }

    syms.clear();
    for (char c : utf8) {
      const auto b = static_cast<uint8_t>(c);
      const auto idx = static_cast<int32_t>(syms.size());
      syms.push_back(symbol{byte_token[b], idx - 1, idx + 1, b, true});
    }
    syms.back().next = -1;

    heap.clear();
    auto try_add = [&](int32_t l, int32_t r) {
      if (l < 0 || r < 0)
        return;
      if (const merge_slot* m = find_merge(syms[l].id, syms[r].id)) {
        heap.push_back(bigram{m->rank, l, r, syms[l].id, syms[r].id, m->result});
        std::push_heap(heap.begin(), heap.end(), lower_priority{});
      }
    };
    for (int32_t i = 1; i < static_cast<int32_t>(syms.size()); ++i)
      try_add(i - 1, i);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), lower_priority{});
      const bigram bg = heap.back();
      heap.pop_back();
      symbol& l = syms[bg.left];
      symbol& r = syms[bg.right];
      if (!l.alive || !r.alive || l.id != bg.l_id || r.id != bg.r_id)
        continue; // stale
      l.id = bg.result;
      r.alive = false;
      l.next = r.next;
      if (r.next >= 0)
        syms[r.next].prev = bg.left;
      try_add(l.prev, bg.left);
      try_add(bg.left, l.next);
    }

    for (const symbol& s : syms) {
      if (!s.alive)
        continue;
      if (s.id >= 0) {
        out.push_back(s.id);
        continue;
      }
      // a byte whose alphabet character is no token: llama.cpp looks up each
      // byte of that character's UTF-8 as a one-byte token
      std::string ch;
      unicode::append_utf8(ch, unicode::byte_to_cpt(s.byte));
      for (char c : ch)
        if (const int32_t id = find(std::string_view(&c, 1)); id >= 0)
          out.push_back(id);
    }
  }
}

std::vector<int32_t> tokenizer::encode(std::string_view text, bool add_special,
                                       bool parse_special) const {
  const impl& t = *impl_;
  text = text.substr(0, max_encode_bytes);
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  std::vector<fragment> frags;
  if (!text.empty())
    t.partition(text, parse_special, frags);

  if (add_special && t.add_bos && t.bos >= 0)
    out.push_back(t.bos);
  bool prev_special = true; // SPM: a space goes before the first text
  std::string buf;
  for (const fragment& fr : frags) {
    if (fr.token >= 0) {
      out.push_back(fr.token);
      prev_special = true;
      continue;
    }
    const std::string_view s = text.substr(fr.offset, fr.length);
    if (t.model == tokenizer_model::bpe) {
      t.encode_bpe(s, out);
      continue;
    }
    buf.clear();
    if (t.add_space_prefix && prev_special)
      buf += space_marker;
    for (char c : s) {
      if (c == ' ')
        buf += space_marker;
      else
        buf += c;
    }
    t.encode_spm(buf, out);
    prev_special = false;
  }
  if (add_special && t.add_eos && t.eos >= 0)
    out.push_back(t.eos);
  return out;
}

// ---------------------------------------------------------------------------
// decoding and accessors

std::string_view tokenizer::token_to_piece(int32_t id, bool special) const {
  const impl& t = *impl_;
  if (id < 0 || id >= t.n_vocab)
    return {};
  if (!special && (t.types[id] == token_type::control || t.types[id] == token_type::unknown))
    return {};
  return t.piece(id);
}

std::string tokenizer::decode(std::span<const int32_t> ids, bool remove_special,
                              bool unparse_special) const {
  const impl& t = *impl_;
  bool remove_space = t.add_space_prefix;
  if (remove_special && t.add_bos && !ids.empty() && ids.front() == t.bos) {
    remove_space = false;
    ids = ids.subspan(1);
  }
  if (remove_special && t.add_eos && !ids.empty() && ids.back() == t.eos)
    ids = ids.subspan(0, ids.size() - 1);

  std::string s;
  for (const int32_t id : ids) {
    if (id < 0 || id >= t.n_vocab)
      continue;
    std::string_view p = token_to_piece(id, unparse_special);
    if (remove_space && !p.empty() && p.front() == ' ')
      p.remove_prefix(1);
    remove_space = false;
    s += p;
  }
  if (!t.pre_cfg.clean_spaces || s.empty())
    return s;

  // llama.cpp's clean-up passes (llama_vocab::impl::detokenize), in place
  char* x = s.data();
  size_t total = s.size();
  // 1: " ?", " !", " .", " ," lose the space
  size_t n = total;
  total = 1;
  for (size_t i = 1; i < n; ++i) {
    const char c = x[i];
    if (x[i - 1] == ' ' && (c == '?' || c == '!' || c == '.' || c == ','))
      --total;
    x[total++] = c;
  }
  // 2: " ' " loses both spaces
  n = total;
  total = 1;
  for (size_t i = 1; i < n; ++i) {
    const char c = x[i];
    if (c == '\'' && i + 1 < n && x[i - 1] == ' ' && x[i + 1] == ' ') {
      --total;
      x[++i] = '\0';
    }
    x[total++] = c;
  }
  // 3: " 's", " 'm", " 're", " 've" lose the space
  n = total;
  total = 1;
  for (size_t i = 1; i < n; ++i) {
    const char c = x[i];
    if (x[i - 1] == ' ' && c == '\'' && i + 1 < n) {
      const char c1 = x[i + 1];
      if (c1 == 's' || c1 == 'm')
        --total;
      else if (i + 2 < n && ((c1 == 'r' && x[i + 2] == 'e') || (c1 == 'v' && x[i + 2] == 'e')))
        --total;
    }
    x[total++] = c;
  }
  s.resize(total);
  return s;
}

std::string_view tokenizer::token_text(int32_t id) const {
  return id >= 0 && id < impl_->n_vocab ? impl_->text(id) : std::string_view{};
}

std::optional<int32_t> tokenizer::find(std::string_view text) const {
  const int32_t id = impl_->find(text);
  return id >= 0 ? std::optional<int32_t>(id) : std::nullopt;
}

token_type tokenizer::type(int32_t id) const {
  return id >= 0 && id < impl_->n_vocab ? impl_->types[id] : token_type::undefined;
}

float tokenizer::score(int32_t id) const {
  return id >= 0 && id < impl_->n_vocab && !impl_->scores.empty() ? impl_->scores[id] : 0.0f;
}

bool tokenizer::is_eog(int32_t id) const {
  return std::binary_search(impl_->eog.begin(), impl_->eog.end(), id);
}

std::span<const int32_t> tokenizer::eog_ids() const {
  return impl_->eog;
}
tokenizer_model tokenizer::model() const {
  return impl_->model;
}
std::string_view tokenizer::pre() const {
  return impl_->pre;
}
int32_t tokenizer::n_vocab() const {
  return impl_->n_vocab;
}
int32_t tokenizer::bos() const {
  return impl_->bos;
}
int32_t tokenizer::eos() const {
  return impl_->eos;
}
int32_t tokenizer::eot() const {
  return impl_->eot;
}
int32_t tokenizer::unk() const {
  return impl_->unk;
}
int32_t tokenizer::pad() const {
  return impl_->pad;
}
bool tokenizer::add_bos() const {
  return impl_->add_bos;
}
bool tokenizer::add_eos() const {
  return impl_->add_eos;
}
bool tokenizer::add_space_prefix() const {
  return impl_->add_space_prefix;
}

// ---------------------------------------------------------------------------
// streaming

stream_decoder::stream_decoder(tokenizer tok, bool special)
  : tok_(std::move(tok)), special_(special) {}

std::string_view stream_decoder::push(int32_t id) {
  return push_bytes(tok_.token_to_piece(id, special_));
}

std::string_view stream_decoder::push_bytes(std::string_view bytes) {
  static constexpr std::string_view fffd = "\xEF\xBF\xBD";
  out_.clear();
  std::string buf = std::move(pending_);
  pending_.clear();
  buf += bytes;
  const auto at = [&](size_t i) { return static_cast<uint8_t>(buf[i]); };
  for (size_t i = 0; i < buf.size();) {
    const uint8_t b = at(i);
    if (b < 0x80) {
      out_ += static_cast<char>(b);
      ++i;
      continue;
    }
    // length and the range of the second byte (Unicode Table 3-7)
    size_t len = 0;
    uint8_t lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      len = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3;
      lo = b == 0xE0 ? 0xA0 : 0x80;
      hi = b == 0xED ? 0x9F : 0xBF;
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4;
      lo = b == 0xF0 ? 0x90 : 0x80;
      hi = b == 0xF4 ? 0x8F : 0xBF;
    } else {
      out_ += fffd;
      ++i;
      continue;
    }
    size_t j = i + 1;
    for (; j < i + len; ++j) {
      if (j >= buf.size()) { // incomplete so far: hold back
        pending_.assign(buf, i, std::string::npos);
        return out_;
      }
      const uint8_t c = at(j);
      if (c < lo || c > hi)
        break;
      lo = 0x80;
      hi = 0xBF;
    }
    if (j == i + len)
      out_.append(buf, i, len);
    else
      out_ += fffd; // the maximal invalid subpart [i, j)
    i = j;
  }
  return out_;
}

std::string_view stream_decoder::finish() {
  out_.clear();
  if (!pending_.empty())
    out_ = "\xEF\xBF\xBD";
  pending_.clear();
  return out_;
}

std::vector<size_t> token_offsets(const tokenizer& tok, std::string_view text,
                                  std::span<const int32_t> ids) {
  std::vector<size_t> out;
  out.reserve(ids.size());
  size_t pos = 0;
  for (int32_t id : ids) {
    std::string_view piece = tok.token_to_piece(id);
    const std::string_view rest = text.substr(pos);
    out.push_back(pos);
    if (!piece.empty() && rest.starts_with(piece)) {
      pos += piece.size();
    } else if (piece.size() > 1 && piece.front() == ' ' && rest.starts_with(piece.substr(1))) {
      pos += piece.size() - 1; // the added space prefix
    } else if (tok.type(id) == token_type::control || tok.type(id) == token_type::unknown) {
      // BOS / EOS and other specials the tokenizer added: not in the text.
    } else {
      pos = std::min(text.size(), pos + piece.size());
    }
  }
  return out;
}

} // namespace shoal::engine
