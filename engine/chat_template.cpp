#include "engine/chat_template.hpp"

#include <cstddef>
#include <cstdint>

namespace shoal::engine {

namespace {

/// Python's str.isspace() (Unicode White_Space minus U+180E, plus U+001C-F).
bool is_python_space(uint32_t cp) noexcept {
  if (cp <= 0x20)
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20);
  switch (cp) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

/// Length of the whitespace code point starting at s[i], 0 if none (or if
/// the bytes there are not well-formed UTF-8 for one of those code points).
size_t space_at(std::string_view s, size_t i) noexcept {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80)
    return is_python_space(b0) ? 1 : 0;
  size_t n = b0 >= 0xE0 && b0 < 0xF0 ? 3 : b0 >= 0xC0 && b0 < 0xE0 ? 2 : 0;
  if (n == 0 || i + n > s.size())
    return 0;
  uint32_t cp = b0 & (n == 2 ? 0x1Fu : 0x0Fu);
  for (size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80)
      return 0;
    cp = (cp << 6) | (b & 0x3Fu);
  }
  if (cp < (n == 2 ? 0x80u : 0x800u))
    return 0; // overlong: not UTF-8
  return is_python_space(cp) ? n : 0;
}

/// Python str.strip() on UTF-8 text (all whitespace code points are 1-3
/// bytes, so looking back at most 3 bytes finds a trailing one).
std::string_view strip(std::string_view s) noexcept {
  size_t begin = 0;
  while (begin < s.size()) {
    const size_t n = space_at(s, begin);
    if (n == 0)
      break;
    begin += n;
  }
  size_t end = s.size();
  while (end > begin) {
    size_t n = 0;
    for (size_t len = 1; len <= 3 && len <= end - begin; ++len)
      if (space_at(s, end - len) == len) {
        n = len;
        break;
      }
    if (n == 0)
      break;
    end -= n;
  }
  return s.substr(begin, end - begin);
}

std::string describe(size_t i, std::string_view role) {
  return "chat message " + std::to_string(i) + " (role '" + std::string(role) + "')";
}

core::result<std::string> render_chatml(std::span<const chat_message> messages,
                                        bool add_generation_prompt) {
  std::string out;
  for (const auto& m : messages) {
    out += "<|im_start|>";
    out += m.role;
    out += '\n';
    out += m.content;
    out += "<|im_end|>\n";
  }
  if (add_generation_prompt)
    out += "<|im_start|>assistant\n";
  return out;
}

core::result<std::string> render_llama3(std::span<const chat_message> messages,
                                        bool add_generation_prompt, std::string_view bos_text) {
  std::string out(bos_text);
  for (const auto& m : messages) {
    out += "<|start_header_id|>";
    out += m.role;
    out += "<|end_header_id|>\n\n";
    out += strip(m.content);
    out += "<|eot_id|>";
  }
  if (add_generation_prompt)
    out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

core::result<std::string> render_llama2(std::span<const chat_message> messages,
                                        std::string_view bos_text) {
  const bool has_system = messages.front().role == "system";
  const size_t first = has_system ? 1 : 0;
  if (first == messages.size())
    return core::error{errc::invalid_argument,
                       "llama2 chat: the system message must be followed by a user message"};
  std::string out;
  for (size_t i = first; i < messages.size(); ++i) {
    const auto& m = messages[i];
    const bool want_user = (i - first) % 2 == 0;
    if (m.role != (want_user ? "user" : "assistant"))
      return core::error{
        errc::invalid_argument,
        "llama2 chat: " + describe(i, m.role)
          + " breaks the order: after an optional "
            "first system message, roles must alternate user, assistant, user, ... (expected "
          + (want_user ? "user" : "assistant") + ")"};
    if (want_user) {
      out += bos_text;
      out += "[INST] ";
      if (i == first && has_system) {
        std::string content = "<<SYS>>\n" + messages.front().content + "\n<</SYS>>\n\n" + m.content;
        out += strip(content);
      } else {
        out += strip(m.content);
      }
      out += " [/INST]";
    } else {
      out += ' ';
      out += strip(m.content);
      out += " </s>";
    }
  }
  return out;
}

} // namespace

std::string_view to_string(chat_format f) noexcept {
  switch (f) {
    case chat_format::chatml:
      return "chatml";
    case chat_format::llama2:
      return "llama2";
    case chat_format::llama3:
      return "llama3";
  }
  return "unknown";
}

core::result<chat_format> parse_chat_format(std::string_view name) {
  for (auto f : {chat_format::chatml, chat_format::llama2, chat_format::llama3})
    if (name == to_string(f))
      return f;
  return core::error{errc::invalid_argument, "unknown chat format '" + std::string(name)
                                               + "' (expected chatml, llama2 or llama3)"};
}

std::optional<chat_format> detect_chat_format(std::string_view t) noexcept {
  auto has = [t](std::string_view s) { return t.find(s) != std::string_view::npos; };
  const bool chatml =
    has("<|im_start|>") && has("<|im_end|>") && !has("<|im_sep|>") && !has("<end_of_utterance>");
  const bool llama3 = has("<|start_header_id|>") && has("<|end_header_id|>") && has("<|eot_id|>");
  const bool llama2 = has("[INST]") && has("[/INST]") && has("<<SYS>>");
  if (chatml + llama3 + llama2 != 1)
    return std::nullopt;
  return chatml ? chat_format::chatml : llama3 ? chat_format::llama3 : chat_format::llama2;
}

core::result<std::string> render_chat(chat_format format, std::span<const chat_message> messages,
                                      bool add_generation_prompt, std::string_view bos_text) {
  if (messages.empty())
    return core::error{errc::invalid_argument, "chat: no messages to render"};
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant")
      return core::error{errc::invalid_argument,
                         "chat: " + describe(i, role)
                           + " has an unsupported role (expected system, user or "
                             "assistant)"};
    if (format == chat_format::llama2 && role == "system" && i != 0)
      return core::error{errc::invalid_argument, "llama2 chat: " + describe(i, role)
                                                   + ": a system message is only allowed first"};
  }
  switch (format) {
    case chat_format::chatml:
      return render_chatml(messages, add_generation_prompt);
    case chat_format::llama2:
      return render_llama2(messages, bos_text);
    case chat_format::llama3:
      return render_llama3(messages, add_generation_prompt, bos_text);
  }
  return core::error{errc::invalid_argument, "chat: unknown chat format"};
}

bool text_includes_bos(chat_format format) noexcept {
  return format == chat_format::llama2 || format == chat_format::llama3;
}

std::vector<std::string> chat_stop_strings(chat_format format) {
  switch (format) {
    case chat_format::chatml:
      return {"<|im_end|>"};
    case chat_format::llama2:
      return {"</s>", "[INST]"};
    case chat_format::llama3:
      return {"<|eot_id|>"};
  }
  return {};
}

} // namespace shoal::engine
