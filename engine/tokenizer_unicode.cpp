#include "engine/tokenizer_unicode.hpp"

#include <unicode/uchar.h>

#include <array>
#include <memory>

namespace shoal::engine::unicode {

namespace {

constexpr uint32_t replacement = 0xFFFD;
constexpr uint32_t out_of_range = 0xFFFFFFFF;

bool is_whitespace(uint32_t c) noexcept {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680
         || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F
         || c == 0x3000;
}

uint16_t flags_from_icu(uint32_t c) noexcept {
  uint16_t f = 0;
  switch (u_charType(static_cast<UChar32>(c))) {
    case U_UPPERCASE_LETTER:
    case U_LOWERCASE_LETTER:
    case U_TITLECASE_LETTER:
    case U_MODIFIER_LETTER:
    case U_OTHER_LETTER:
      f = flag_letter;
      break;
    case U_NON_SPACING_MARK:
    case U_ENCLOSING_MARK:
    case U_COMBINING_SPACING_MARK:
      f = flag_mark;
      break;
    case U_DECIMAL_DIGIT_NUMBER:
    case U_LETTER_NUMBER:
    case U_OTHER_NUMBER:
      f = flag_number;
      break;
    case U_SPACE_SEPARATOR:
    case U_LINE_SEPARATOR:
    case U_PARAGRAPH_SEPARATOR:
      f = flag_separator;
      break;
    case U_CONTROL_CHAR:
    case U_FORMAT_CHAR:
    case U_PRIVATE_USE_CHAR:
    case U_SURROGATE:
      f = flag_control;
      break;
    case U_DASH_PUNCTUATION:
    case U_START_PUNCTUATION:
    case U_END_PUNCTUATION:
    case U_CONNECTOR_PUNCTUATION:
    case U_OTHER_PUNCTUATION:
    case U_INITIAL_PUNCTUATION:
    case U_FINAL_PUNCTUATION:
      f = flag_punctuation;
      break;
    case U_MATH_SYMBOL:
    case U_CURRENCY_SYMBOL:
    case U_MODIFIER_SYMBOL:
    case U_OTHER_SYMBOL:
      f = flag_symbol;
      break;
    default:
      f = flag_undefined;
      break;
  }
  if (is_whitespace(c))
    f |= flag_whitespace;
  return f;
}

/// Flags of the Basic Multilingual Plane, looked up once (64K ICU calls, ~1 ms).
const std::array<uint16_t, 0x10000>& bmp_flags() {
  static const std::unique_ptr<const std::array<uint16_t, 0x10000>> table = [] {
    auto t = std::make_unique<std::array<uint16_t, 0x10000>>();
    for (uint32_t c = 0; c < 0x10000; ++c)
      (*t)[c] = flags_from_icu(c);
    return t;
  }();
  return *table;
}

struct byte_tables {
  std::array<uint32_t, 256> to_cpt{};
  std::array<int16_t, 0x144> to_byte{}; // the alphabet lies below U+0144
};

const byte_tables& gpt2_bytes() {
  static const byte_tables t = [] {
    byte_tables b;
    b.to_byte.fill(-1);
    uint32_t next = 256;
    for (uint32_t c = 0; c < 256; ++c) {
      const bool printable = (c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE;
      b.to_cpt[c] = printable ? c : next++;
      b.to_byte[b.to_cpt[c]] = static_cast<int16_t>(c);
    }
    return b;
  }();
  return t;
}

/// A view of one word for the splits: positions outside [begin, end) read as
/// out_of_range / flags 0, as in llama.cpp's _get_cpt / _get_flags.
struct word_view {
  std::span<const uint32_t> cpts;
  std::span<const uint16_t> flags;
  size_t begin, end;
  std::vector<uint32_t>& out;
  size_t prev_end;

  uint32_t cpt(size_t pos) const { return pos >= begin && pos < end ? cpts[pos] : out_of_range; }
  uint16_t flag(size_t pos) const { return pos >= begin && pos < end ? flags[pos] : 0; }
  /// Ends the current word at `pos`; returns its length (0 adds nothing).
  size_t emit(size_t pos) {
    const size_t n = pos - prev_end;
    if (n > 0)
      out.push_back(static_cast<uint32_t>(n));
    prev_end = pos;
    return n;
  }
};

uint32_t ascii_lower(uint32_t c) {
  return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/// The contractions 's 't 'm 'd 're 've 'll at pos (lower-cased when
/// `any_case`); returns their length in code points or 0.
size_t contraction(const word_view& w, size_t pos, bool any_case) {
  if (w.cpt(pos) != '\'' || pos + 1 >= w.end)
    return 0;
  auto low = [&](uint32_t c) { return any_case ? ascii_lower(c) : c; };
  const uint32_t c1 = low(w.cpt(pos + 1));
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd')
    return 2;
  if (pos + 2 < w.end) {
    const uint32_t c2 = low(w.cpt(pos + 2));
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
      return 3;
  }
  return 0;
}

/// Whitespace at pos: \s+(?!\S) keeps the last blank for the next word unless
/// the run ends the word, then \s+. Returns the new position or pos.
size_t whitespace_run(word_view& w, size_t pos) {
  size_t n = 0;
  while (w.flag(pos + n) & flag_whitespace)
    ++n;
  if (n > 1 && w.cpt(pos + n) != out_of_range)
    pos += n - 1;
  else
    pos += n;
  w.emit(pos);
  return pos;
}

void split_gpt2(word_view& w) {
  constexpr uint16_t wln = flag_whitespace | flag_letter | flag_number;
  for (size_t pos = w.begin; pos < w.end;) {
    if (const size_t n = contraction(w, pos, false)) {
      pos += w.emit(pos + n);
      continue;
    }
    const uint32_t c = w.cpt(pos);
    uint16_t f2 = c == ' ' ? w.flag(pos + 1) : w.flag(pos);
    // <space>?\p{L}+ | <space>?\p{N}+ | <space>?[^\s\p{L}\p{N}]+
    const uint16_t cls = f2 & flag_letter ? flag_letter : f2 & flag_number ? flag_number : 0;
    const bool other = !(f2 & wln) && f2 != 0;
    if (cls != 0 || other) {
      pos += c == ' ';
      if (cls != 0) {
        while (f2 & cls)
          f2 = w.flag(++pos);
      } else {
        while (!(f2 & wln) && f2 != 0)
          f2 = w.flag(++pos);
      }
      w.emit(pos);
      continue;
    }
    const size_t next = whitespace_run(w, pos);
    pos = next != pos ? next : pos + w.emit(pos + 1);
  }
}

/// llama3 / qwen2 / qwen35 (llama.cpp's unicode_regex_split_custom_llama3 and
/// its copies): `max_digits` per number word, `letters` the letter class.
void split_llama3(word_view& w, size_t max_digits, uint16_t letters) {
  const uint16_t wln = flag_whitespace | letters | flag_number;
  for (size_t pos = w.begin; pos < w.end;) {
    if (const size_t n = contraction(w, pos, true)) {
      pos += w.emit(pos + n);
      continue;
    }
    const uint32_t c = w.cpt(pos);
    const uint16_t f = w.flag(pos);
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (!(c == '\r' || c == '\n' || (f & flag_number))
        && ((f & letters) || (w.flag(pos + 1) & letters))) {
      ++pos;
      while (w.flag(pos) & letters)
        ++pos;
      w.emit(pos);
      continue;
    }
    // \p{N}{1,max_digits}
    if (f & flag_number) {
      size_t first = pos;
      while (w.flag(pos) & flag_number) {
        if (++pos - first >= max_digits) {
          w.emit(pos);
          first = pos;
        }
      }
      w.emit(pos);
      continue;
    }
    // <space>?[^\s\p{L}\p{N}]+[\r\n]*  (the first test reads f, as llama.cpp)
    uint16_t f2 = c == ' ' ? w.flag(pos + 1) : f;
    if (!(f2 & wln) && f != 0) {
      pos += c == ' ';
      while (!(f2 & wln) && f2 != 0)
        f2 = w.flag(++pos);
      while (w.cpt(pos) == '\r' || w.cpt(pos) == '\n')
        ++pos;
      w.emit(pos);
      continue;
    }
    // \s*[\r\n]+ : up to the last line break of the blank run
    size_t n = 0, last_break = 0;
    while (w.flag(pos + n) & flag_whitespace) {
      const uint32_t c2 = w.cpt(pos + n);
      if (c2 == '\r' || c2 == '\n')
        last_break = pos + n + 1;
      ++n;
    }
    if (last_break > 0) {
      pos = last_break;
      w.emit(pos);
      continue;
    }
    const size_t next = whitespace_run(w, pos);
    pos = next != pos ? next : pos + w.emit(pos + 1);
  }
}

/// Isolates runs (at most `max_run` long, 0 = unbounded) of code points that
/// satisfy `pred`, as std::regex_iterator over "[class]+" does.
template <class Pred>
void split_runs(word_view& w, Pred pred, size_t max_run) {
  for (size_t pos = w.begin; pos < w.end;) {
    if (!pred(pos)) {
      ++pos;
      continue;
    }
    w.emit(pos);
    size_t n = 0;
    while (pos < w.end && pred(pos) && (max_run == 0 || n < max_run)) {
      ++pos;
      ++n;
    }
    w.emit(pos);
  }
  w.emit(w.end);
}

bool is_default_punct(uint32_t c, uint16_t f, bool backtick) {
  if (c < 0x80) {
    return (f & flag_punctuation) || c == '$' || c == '+' || c == '<' || c == '=' || c == '>'
           || c == '^' || c == '~' || c == '|' || (backtick && c == '`');
  }
  return (f & flag_punctuation) && !(f & flag_whitespace);
}

} // namespace

uint16_t flags_of(uint32_t cpt) noexcept {
  if (cpt < 0x10000)
    return bmp_flags()[cpt];
  if (cpt > 0x10FFFF)
    return flag_undefined;
  return flags_from_icu(cpt);
}

void decode_utf8(std::string_view s, std::vector<uint32_t>& out) {
  const size_t n = s.size();
  auto byte = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  auto cont = [&](size_t i) { return (byte(i) & 0xC0) == 0x80; };
  for (size_t i = 0; i < n;) {
    const uint8_t b0 = byte(i);
    if (b0 < 0x80) {
      out.push_back(b0);
      i += 1;
    } else if (!(b0 & 0x40)) {
      out.push_back(replacement);
      i += 1;
    } else if (!(b0 & 0x20)) {
      if (i + 1 < n && cont(i + 1)) {
        out.push_back(((b0 & 0x1Fu) << 6) | (byte(i + 1) & 0x3Fu));
        i += 2;
      } else {
        out.push_back(replacement);
        i += 1;
      }
    } else if (!(b0 & 0x10)) {
      if (i + 2 < n && cont(i + 1) && cont(i + 2)) {
        out.push_back(((b0 & 0x0Fu) << 12) | ((byte(i + 1) & 0x3Fu) << 6) | (byte(i + 2) & 0x3Fu));
        i += 3;
      } else {
        out.push_back(replacement);
        i += 1;
      }
    } else if (!(b0 & 0x08)) {
      if (i + 3 < n && cont(i + 1) && cont(i + 2) && cont(i + 3)) {
        const uint32_t c = ((b0 & 0x07u) << 18) | ((byte(i + 1) & 0x3Fu) << 12)
                           | ((byte(i + 2) & 0x3Fu) << 6) | (byte(i + 3) & 0x3Fu);
        out.push_back(c <= 0x10FFFF ? c : replacement);
        i += 4;
      } else {
        out.push_back(replacement);
        i += 1;
      }
    } else {
      out.push_back(replacement);
      i += 1;
    }
  }
}

void append_utf8(std::string& out, uint32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

uint32_t byte_to_cpt(uint8_t b) noexcept {
  return gpt2_bytes().to_cpt[b];
}

int cpt_to_byte(uint32_t cpt) noexcept {
  return cpt < gpt2_bytes().to_byte.size() ? gpt2_bytes().to_byte[cpt] : -1;
}

void split(split_rule rule, std::span<const uint32_t> cpts, std::span<const uint16_t> flags,
           std::span<const uint32_t> words, std::vector<uint32_t>& out) {
  out.clear();
  size_t begin = 0;
  for (const uint32_t len : words) {
    word_view w{cpts, flags, begin, begin + len, out, begin};
    begin += len;
    switch (rule) {
      case split_rule::gpt2:
        split_gpt2(w);
        break;
      case split_rule::llama3:
        split_llama3(w, 3, flag_letter);
        break;
      case split_rule::qwen2:
        split_llama3(w, 1, flag_letter);
        break;
      case split_rule::qwen35:
        split_llama3(w, 1, flag_letter | flag_mark);
        break;
      case split_rule::each_number:
        split_runs(
          w, [&](size_t p) { return (flags[p] & flag_number) != 0; }, 1);
        break;
      case split_rule::number_runs:
        split_runs(
          w, [&](size_t p) { return (flags[p] & flag_number) != 0; }, 0);
        break;
      case split_rule::punct_runs:
      case split_rule::punct_runs_falcon: {
        const bool backtick = rule == split_rule::punct_runs_falcon;
        split_runs(
          w, [&](size_t p) { return is_default_punct(cpts[p], flags[p], backtick); }, 0);
        break;
      }
      case split_rule::ascii_digit_triples: {
        auto digit = [&](size_t p) { return p < w.end && cpts[p] >= '0' && cpts[p] <= '9'; };
        for (size_t pos = w.begin; pos < w.end;) {
          if (digit(pos) && digit(pos + 1) && digit(pos + 2)) {
            w.emit(pos);
            pos += 3;
            w.emit(pos);
          } else {
            ++pos;
          }
        }
        w.emit(w.end);
        break;
      }
    }
  }
}

} // namespace shoal::engine::unicode
