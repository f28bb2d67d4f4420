#pragma once
/// @file Chat templates: turns a list of chat messages into the prompt text a
/// chat model was trained on, for three fixed formats (ChatML, Llama-2-chat,
/// Llama-3-instruct). There is no Jinja engine: the GGUF
/// `tokenizer.chat_template` string is only recognised by signature
/// (`detect_chat_format`), then rendered by hand-written code.
///
/// Caveats first:
///   - Each format reproduces one reference Jinja template byte for byte, as
///     Hugging Face's `apply_chat_template(tokenize=False)` renders it with
///     `bos_token` = the caller's `bos_text` (references named at
///     `chat_format`). Models whose template is a variant of these (Qwen2's
///     default system prompt, Llama-3.1's date preamble and tool blocks,
///     Llama-2 fine-tunes that strip differently) are detected as the base
///     format and rendered without the variation, as llama.cpp's
///     llama_chat_apply_template does.
///   - BOS rule: the text contains the BOS token text exactly where the
///     reference template writes `bos_token` (Llama-2: before every `[INST]`;
///     Llama-3: once, at the start; ChatML: nowhere). `text_includes_bos`
///     says which; when it is true, tokenize with add_special=false (the text
///     already holds BOS) and parse_special=true; when false, tokenize with
///     add_special=true so the model's tokenizer.ggml.add_bos_token decides.
///     llama.cpp differs for the first BOS (its chat apply leaves it to the
///     tokenizer); the token ids come out the same.
///   - "Trim"/"strip" below is Python's str.strip(): it removes the code
///     points for which str.isspace() is true (ASCII \t\n\v\f\r, space,
///     U+001C-U+001F, U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029,
///     U+202F, U+205F, U+3000) from both ends of the UTF-8 text.
///
/// Thread-safety: every function here is pure; any thread may call it.

#include "core/error.hpp"

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::engine {

/// One turn of a conversation (OpenAI message shape, text content only).
struct chat_message {
  /// "system", "user" or "assistant"; anything else is refused by
  /// `render_chat`.
  std::string role;
  /// UTF-8 text, inserted verbatim except where a format trims it.
  std::string content;
};

/// The chat formats Shoal renders. Names (`to_string`) are llama.cpp's
/// template names, used in configs.
enum class chat_format {
  /// "chatml": `<|im_start|>{role}\n{content}<|im_end|>\n` per message,
  /// content untouched; generation prompt `<|im_start|>assistant\n`.
  /// Reference: teknium/OpenHermes-2.5-Mistral-7B's template (= Qwen2's
  /// when the conversation has a system message; Qwen2 otherwise inserts
  /// "You are a helpful assistant.", which we do not).
  chatml,
  /// "llama2": Llama-2-chat as in meta-llama/Llama-2-7b-chat-hf's
  /// tokenizer_config.json (llama.cpp's LLM_CHAT_TEMPLATE_LLAMA_2_SYS_BOS
  /// shape, with Meta's spacing): an optional first system message is folded
  /// into the first user turn; each user turn is
  /// `{bos}[INST] strip(content) [/INST]`, each assistant turn
  /// ` strip(content) </s>`, where the first user turn's content is
  /// `<<SYS>>\n{system}\n<</SYS>>\n\n{user}` (system text not stripped on
  /// its own; the whole is). Example, system S, user U1, assistant A1, U2:
  /// `<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU1 [/INST] A1 </s><s>[INST] U2 [/INST]`.
  /// The reference has no generation prompt: a conversation ending with a
  /// user turn already ends at ` [/INST]`, where the answer starts.
  llama2,
  /// "llama3": Llama-3-instruct as in meta-llama/Meta-Llama-3-8B-Instruct's
  /// tokenizer_config.json: `{bos}` once, then per message
  /// `<|start_header_id|>{role}<|end_header_id|>\n\n{trim(content)}<|eot_id|>`;
  /// generation prompt `<|start_header_id|>assistant<|end_header_id|>\n\n`.
  llama3,
};

/// The format's config name: "chatml", "llama2" or "llama3".
std::string_view to_string(chat_format f) noexcept;

/// Parses a config name ("chatml", "llama2", "llama3"; exact, lower case).
/// Error: the unknown name and the accepted ones.
core::result<chat_format> parse_chat_format(std::string_view name);

/// Recognises a GGUF `tokenizer.chat_template` (Jinja source) by signature:
///   - chatml: contains `<|im_start|>` and `<|im_end|>`, but neither
///     `<|im_sep|>` (Phi-4) nor `<end_of_utterance>` (SmolVLM), which reuse
///     the ChatML markers in another layout;
///   - llama3: contains `<|start_header_id|>`, `<|end_header_id|>` and
///     `<|eot_id|>` (Llama-3.1/3.2/3.3 templates match too; see the caveats);
///   - llama2: contains `[INST]`, `[/INST]` and `<<SYS>>` (Mistral's
///     templates have no `<<SYS>>` and are not matched).
/// @return the one format whose signature matches; nullopt when none or
/// more than one matches (the caller then uses the configured format).
std::optional<chat_format> detect_chat_format(std::string_view jinja_template) noexcept;

/// Renders `messages` as the reference template of `format` does (see
/// `chat_format` for each layout).
/// @param add_generation_prompt append the header that opens an assistant
///   turn (chatml, llama3); ignored by llama2, whose template has none.
/// @param bos_text the text of the model's BOS token (`<s>` for Llama-2,
///   `<|begin_of_text|>` for Llama-3), written where the reference writes
///   `bos_token`; ignored by chatml. Empty = no BOS in the text.
/// Errors (message names the message index, 0-based, and role):
///   - `messages` empty;
///   - a role other than system, user, assistant;
///   - llama2 only: turns after the optional first system message not
///     alternating user, assistant, user, ... starting with user (the
///     reference raises "Conversation roles must alternate"); a system
///     message anywhere but first, or a system message alone (stricter than
///     the reference, which silently drops such a system message or renders
///     "").
/// Cost: O(total content bytes); one allocation pattern of a growing string.
core::result<std::string> render_chat(chat_format format, std::span<const chat_message> messages,
                                      bool add_generation_prompt, std::string_view bos_text);

/// True if `render_chat` writes the BOS text for this format (llama2,
/// llama3); then tokenize with add_special=false so BOS is not doubled.
bool text_includes_bos(chat_format format) noexcept;

/// The strings that end an assistant turn in this format, for
/// `stop_matcher` (the end-of-generation token ids are stopped on anyway):
/// chatml {"<|im_end|>"}; llama3 {"<|eot_id|>"}; llama2 {"</s>", "[INST]"}.
std::vector<std::string> chat_stop_strings(chat_format format);

} // namespace shoal::engine
