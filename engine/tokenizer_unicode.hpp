#pragma once
/// @file The Unicode layer of the tokenizers (internal to shoal::engine; the
/// public API is engine/tokenizer.hpp): UTF-8 decoding as llama.cpp decodes it,
/// code point categories (ICU's u_charType mapped to llama.cpp's flags), GPT-2's
/// byte <-> code point table, and the BPE pre-tokenizer splits.
///
/// Source of every rule: llama.cpp v0.5.0 (de3ff81) src/unicode.cpp — the
/// hand-written splits `unicode_regex_split_custom_{gpt2,llama3,qwen2,qwen35}`
/// and the std::regex fallback used for the other expressions. The splits
/// reproduce those functions, quirks included, because the GGUF tokenizer
/// test vectors were checked against them.
///
/// Thread-safety: every function is pure (the category table is built once,
/// thread-safely, on first use).

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::engine::unicode {

/// Category flags of a code point, as llama.cpp's unicode_cpt_flags: one
/// general-category bit (Cn → undefined) plus the White_Space bit.
enum cpt_flag : uint16_t {
  flag_undefined = 0x0001,   ///< Cn, and anything above U+10FFFF
  flag_number = 0x0002,      ///< \p{N}: Nd Nl No
  flag_letter = 0x0004,      ///< \p{L}: Lu Ll Lt Lm Lo
  flag_separator = 0x0008,   ///< \p{Z}: Zs Zl Zp
  flag_mark = 0x0010,        ///< \p{M}: Mn Mc Me
  flag_punctuation = 0x0020, ///< \p{P}: Pc Pd Ps Pe Pi Pf Po
  flag_symbol = 0x0040,      ///< \p{S}: Sm Sc Sk So
  flag_control = 0x0080,     ///< \p{C}: Cc Cf Co Cs
  flag_whitespace =
    0x0100, ///< \s: U+0009–000D, 0020, 0085, 00A0, 1680, 2000–200A, 2028, 2029, 202F, 205F, 3000
};

/// The flags of one code point (never 0). Thread-safe.
uint16_t flags_of(uint32_t cpt) noexcept;

/// Decodes UTF-8 as llama.cpp's unicode_cpts_from_utf8: sequences are taken
/// by their lead byte without checking for overlong forms or surrogates; a
/// byte that starts no complete sequence becomes U+FFFD and decoding resumes
/// at the next byte. Values above U+10FFFF (lead bytes F5–F7) also become
/// U+FFFD (llama.cpp throws there). Appends to `out`.
void decode_utf8(std::string_view text, std::vector<uint32_t>& out);

/// Appends the UTF-8 form of `cpt` (≤ U+10FFFF) to `out`.
void append_utf8(std::string& out, uint32_t cpt);

/// Length of the UTF-8 sequence a lead byte announces, from its high nibble
/// (1 for ASCII and stray continuation bytes), as llama.cpp's unicode_len_utf8.
inline size_t utf8_len(char lead) noexcept {
  static constexpr uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return lookup[static_cast<uint8_t>(lead) >> 4];
}

/// GPT-2's byte-level BPE alphabet: the code point that stands for byte `b`
/// (printable Latin-1 bytes stand for themselves, the other 68 map to
/// U+0100…U+0143 in byte order).
uint32_t byte_to_cpt(uint8_t b) noexcept;
/// The byte a GPT-2 alphabet code point stands for, or -1.
int cpt_to_byte(uint32_t cpt) noexcept;

/// One stage of a BPE pre-tokenizer. Each stage splits every current word
/// further; text between matches stays a word of its own.
enum class split_rule : uint8_t {
  /// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  gpt2,
  /// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
  ///  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  llama3,
  /// As llama3 with \p{N} (one digit per word).
  qwen2,
  /// As qwen2 with letters [\p{L}\p{M}]+ and punctuation [^\s\p{L}\p{M}\p{N}]+.
  qwen35,
  /// \p{N}: every number code point a word of its own.
  each_number,
  /// \p{N}+
  number_runs,
  /// [\p{P}\$\+<=>\^~\|]+ (llama.cpp's default pre-tokenizer)
  punct_runs,
  /// [\p{P}\$\+<=>\^~\|`]+ (falcon)
  punct_runs_falcon,
  /// [0-9][0-9][0-9]: runs of three ASCII digits, left to right.
  ascii_digit_triples,
};

/// Applies one rule. `cpts` and `flags` (flags_of each) describe the whole
/// fragment; `words` holds word lengths in code points (summing to
/// cpts.size()); the refined lengths are written to `out` (cleared first).
void split(split_rule rule, std::span<const uint32_t> cpts, std::span<const uint16_t> flags,
           std::span<const uint32_t> words, std::vector<uint32_t>& out);

} // namespace shoal::engine::unicode
