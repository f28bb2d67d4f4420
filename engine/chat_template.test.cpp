#include "engine/chat_template.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using shoal::engine::chat_format;
using shoal::engine::chat_message;
using shoal::engine::chat_stop_strings;
using shoal::engine::detect_chat_format;
using shoal::engine::parse_chat_format;
using shoal::engine::render_chat;
using shoal::engine::text_includes_bos;

namespace {

// The reference templates, as the Jinja source strings the GGUF's
// tokenizer.chat_template holds (tokenizer_config.json's "chat_template"
// after JSON unescaping).

/// Qwen/Qwen2-7B-Instruct.
constexpr const char* qwen2_template =
  R"({% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})";

/// teknium/OpenHermes-2.5-Mistral-7B (plain ChatML).
constexpr const char* openhermes_template =
  R"({% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})";

/// meta-llama/Llama-2-7b-chat-hf.
constexpr const char* llama2_template =
  R"({% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %})";

/// meta-llama/Meta-Llama-3-8B-Instruct (the JSON's "\n\n" are real newlines).
constexpr const char* llama3_template =
  "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
  "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
  "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ "
  "content }}{% endfor %}{% if add_generation_prompt %}{{ "
  "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

/// mistralai/Mistral-7B-Instruct-v0.2: [INST] without <<SYS>>, not Llama-2.
constexpr const char* mistral_template =
  R"({{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %})";

/// microsoft/phi-4: ChatML markers in another layout.
constexpr const char* phi4_template =
  R"({% for message in messages %}{% if (message['role'] == 'system') %}{{'<|im_start|>system<|im_sep|>' + message['content'] + '<|im_end|>'}}{% elif (message['role'] == 'user') %}{{'<|im_start|>user<|im_sep|>' + message['content'] + '<|im_end|>'}}{% elif (message['role'] == 'assistant') %}{{'<|im_start|>assistant<|im_sep|>' + message['content'] + '<|im_end|>'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %})";

/// google/gemma-7b-it.
constexpr const char* gemma_template =
  R"({{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %})";

/// llama.cpp's test conversation (tests/test-chat-template.cpp): system
/// first, padded assistant content, ends with a user turn.
const std::vector<chat_message> conversation = {
  {"system", "You are a helpful assistant"},
  {"user", "Hello"},
  {"assistant", "Hi there"},
  {"user", "Who are you"},
  {"assistant", "   I am an assistant   "},
  {"user", "Another question"},
};

std::string render(chat_format f, const std::vector<chat_message>& messages, bool gen,
                   std::string_view bos) {
  auto r = render_chat(f, messages, gen, bos);
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.err().message));
  return std::move(r).value();
}

std::string render_error(chat_format f, const std::vector<chat_message>& messages) {
  auto r = render_chat(f, messages, true, "<s>");
  REQUIRE_FALSE(r.ok());
  return r.err().message;
}

} // namespace

// Expected texts below were rendered from the reference templates above with
// Jinja2 3.1 in Hugging Face's environment (trim_blocks, lstrip_blocks); a
// randomised comparison against them (18,000 conversations with Unicode
// whitespace) differed only where render_chat documents a stricter error.

TEST_CASE("chat template: chatml renders a multi-turn conversation as OpenHermes / Qwen2 do") {
  const std::string body = "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
                           "<|im_start|>user\nHello<|im_end|>\n"
                           "<|im_start|>assistant\nHi there<|im_end|>\n"
                           "<|im_start|>user\nWho are you<|im_end|>\n"
                           "<|im_start|>assistant\n   I am an assistant   <|im_end|>\n"
                           "<|im_start|>user\nAnother question<|im_end|>\n";
  CHECK(render(chat_format::chatml, conversation, true, "<s>") == body + "<|im_start|>assistant\n");
  CHECK(render(chat_format::chatml, conversation, false, "<s>") == body);
  // No trimming, no BOS: content passes verbatim.
  CHECK(render(chat_format::chatml, {{"user", " \n x \n"}}, false, "")
        == "<|im_start|>user\n \n x \n<|im_end|>\n");
}

TEST_CASE("chat template: llama2 renders Meta's Llama-2-chat layout") {
  const std::string expected =
    "<s>[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]"
    " Hi there </s><s>[INST] Who are you [/INST] I am an assistant </s>"
    "<s>[INST] Another question [/INST]";
  CHECK(render(chat_format::llama2, conversation, true, "<s>") == expected);
  // The reference has no generation prompt: the flag changes nothing.
  CHECK(render(chat_format::llama2, conversation, false, "<s>") == expected);

  // Without a system message; ending with an assistant turn.
  CHECK(render(chat_format::llama2, {{"user", "Hello"}, {"assistant", "Hi there"}}, true, "<s>")
        == "<s>[INST] Hello [/INST] Hi there </s>");
  // strip() applies to the folded first turn as a whole: the system text and
  // the user's leading spaces sit inside it and are kept.
  CHECK(render(chat_format::llama2, {{"system", "  S  "}, {"user", "  U  "}}, true, "<s>")
        == "<s>[INST] <<SYS>>\n  S  \n<</SYS>>\n\n  U [/INST]");
  CHECK(render(chat_format::llama2, {{"system", ""}, {"user", ""}}, true, "<s>")
        == "<s>[INST] <<SYS>>\n\n<</SYS>> [/INST]");
  CHECK(render(chat_format::llama2, {{"user", "\t U \n"}}, true, "") == "[INST] U [/INST]");
}

TEST_CASE("chat template: llama3 renders Meta's Llama-3-instruct layout") {
  const std::string body =
    "<|begin_of_text|>"
    "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|>";
  const std::string gen = "<|start_header_id|>assistant<|end_header_id|>\n\n";
  CHECK(render(chat_format::llama3, conversation, true, "<|begin_of_text|>") == body + gen);
  CHECK(render(chat_format::llama3, conversation, false, "<|begin_of_text|>") == body);
  // Jinja's trim is Python's str.strip(): Unicode whitespace (U+00A0,
  // U+3000, U+2029) goes, U+200B (zero-width space, not whitespace) stays.
  CHECK(render(chat_format::llama3, {{"user", "\xC2\xA0 hi\xE3\x80\x80\n\xE2\x80\xA9"}}, false, "")
        == "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>");
  CHECK(render(chat_format::llama3, {{"user", "\xE2\x80\x8Bhi\xE2\x80\x8B"}}, false, "")
        == "<|start_header_id|>user<|end_header_id|>\n\n\xE2\x80\x8Bhi\xE2\x80\x8B<|eot_id|>");
  CHECK(render(chat_format::llama3, {{"user", " \n\t "}}, false, "")
        == "<|start_header_id|>user<|end_header_id|>\n\n<|eot_id|>");
}

TEST_CASE("chat template: detect_chat_format recognises the real templates") {
  CHECK(detect_chat_format(qwen2_template) == chat_format::chatml);
  CHECK(detect_chat_format(openhermes_template) == chat_format::chatml);
  CHECK(detect_chat_format(llama2_template) == chat_format::llama2);
  CHECK(detect_chat_format(llama3_template) == chat_format::llama3);
  // Lookalikes and others fall back to the configured format.
  CHECK_FALSE(detect_chat_format(mistral_template).has_value());
  CHECK_FALSE(detect_chat_format(phi4_template).has_value());
  CHECK_FALSE(detect_chat_format(gemma_template).has_value());
  CHECK_FALSE(detect_chat_format("").has_value());
  // Two signatures at once is ambiguous.
  CHECK_FALSE(detect_chat_format(std::string(qwen2_template) + llama3_template).has_value());
}

TEST_CASE("chat template: format names, BOS rule and stop strings") {
  for (auto f : {chat_format::chatml, chat_format::llama2, chat_format::llama3}) {
    auto parsed = parse_chat_format(to_string(f));
    REQUIRE(parsed.ok());
    CHECK(*parsed == f);
  }
  auto bad = parse_chat_format("llama-3");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.err().message.find("'llama-3'") != std::string::npos);

  CHECK_FALSE(text_includes_bos(chat_format::chatml));
  CHECK(text_includes_bos(chat_format::llama2));
  CHECK(text_includes_bos(chat_format::llama3));
  CHECK(render(chat_format::chatml, conversation, true, "<s>").find("<s>") == std::string::npos);
  CHECK(render(chat_format::llama3, conversation, true, "<|begin_of_text|>")
          .rfind("<|begin_of_text|>", 0)
        == 0);

  CHECK(chat_stop_strings(chat_format::chatml) == std::vector<std::string>{"<|im_end|>"});
  CHECK(chat_stop_strings(chat_format::llama3) == std::vector<std::string>{"<|eot_id|>"});
  CHECK(chat_stop_strings(chat_format::llama2) == std::vector<std::string>{"</s>", "[INST]"});
}

TEST_CASE("chat template: bad conversations are errors naming the message") {
  for (auto f : {chat_format::chatml, chat_format::llama2, chat_format::llama3}) {
    CAPTURE(to_string(f));
    CHECK(render_error(f, {}).find("no messages") != std::string::npos);
    const auto e = render_error(f, {{"user", "hi"}, {"tool", "42"}});
    CHECK(e.find("message 1") != std::string::npos);
    CHECK(e.find("'tool'") != std::string::npos);
  }
  // Llama-2: roles must alternate user/assistant after an optional system.
  auto e = render_error(chat_format::llama2, {{"system", "s"}, {"user", "a"}, {"user", "b"}});
  CHECK(e.find("message 2") != std::string::npos);
  CHECK(e.find("alternate") != std::string::npos);
  e = render_error(chat_format::llama2, {{"assistant", "a"}, {"user", "b"}});
  CHECK(e.find("message 0") != std::string::npos);
  e = render_error(chat_format::llama2, {{"user", "a"}, {"system", "s"}});
  CHECK(e.find("message 1") != std::string::npos);
  CHECK(e.find("only allowed first") != std::string::npos);
  e = render_error(chat_format::llama2, {{"system", "s"}});
  CHECK(e.find("followed by a user message") != std::string::npos);
  // ChatML and Llama-3 accept any order of the three roles, as their templates do.
  CHECK(render_chat(chat_format::chatml, std::vector<chat_message>{{"user", "a"}, {"user", "b"}},
                    true, "")
          .ok());
  CHECK(render_chat(chat_format::llama3,
                    std::vector<chat_message>{{"assistant", "a"}, {"system", "b"}}, true, "")
          .ok());
}
