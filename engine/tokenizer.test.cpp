#include "engine/tokenizer.hpp"

#include "engine/gguf.hpp"
#include "engine/tokenizer_unicode.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

using namespace shoal::engine;

namespace {

// ---------------------------------------------------------------------------
// llama.cpp's vocabularies and test vectors (ops/install-peer.sh puts them in
// the peer directory: $SHOAL_PEER_DIR, else ${XDG_CACHE_HOME:-~/.cache}/shoal/peer)

std::filesystem::path peer_dir() {
  if (const char* d = std::getenv("SHOAL_PEER_DIR"); d && *d)
    return d;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return std::filesystem::path(x) / "shoal" / "peer";
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home ? home : ".") / ".cache" / "shoal" / "peer";
}

std::filesystem::path vocab_path(const std::string& name) {
  return peer_dir() / "llama.cpp" / "models" / ("ggml-vocab-" + name + ".gguf");
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Loads a vocabulary GGUF; fails the test loudly when the peer is missing.
tokenizer load_vocab(const std::string& name) {
  const auto path = vocab_path(name);
  if (!std::filesystem::exists(path))
    FAIL("missing ", path.string(),
         ": run ops/install-peer.sh (it installs llama.cpp's vocabularies)");
  auto file = gguf_file::open(path.string());
  REQUIRE_MESSAGE(file.ok(), (file ? "" : file.err().message));
  auto tok = tokenizer::from_gguf(**file);
  REQUIRE_MESSAGE(tok.ok(), (tok ? "" : tok.err().message));
  return std::move(tok).value();
}

struct vector_case {
  std::string text;
  std::vector<int32_t> ids;
};

/// Reads ggml-vocab-<name>.gguf.inp / .out exactly as llama.cpp's
/// tests/test-tokenizer-0.cpp does: inputs separated by
/// "\n__ggml_vocab_test__\n", one line of space-separated ids per input.
std::vector<vector_case> read_vectors(const std::string& name) {
  const auto base = vocab_path(name).string();
  if (!std::filesystem::exists(base + ".inp"))
    FAIL("missing ", base, ".inp: run ops/install-peer.sh");
  const std::string raw = read_file(base + ".inp");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> inputs;
  for (size_t pos = 0; pos < raw.size();) {
    const size_t next = raw.find(sep, pos);
    if (next == std::string::npos) {
      inputs.push_back(raw.substr(pos));
      break;
    }
    inputs.push_back(raw.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::ifstream out(base + ".out");
  std::vector<vector_case> cases;
  std::string line;
  for (size_t i = 0; std::getline(out, line); ++i) {
    REQUIRE(i < inputs.size());
    vector_case c{inputs[i], {}};
    std::istringstream ids(line);
    for (int32_t id; ids >> id;)
      c.ids.push_back(id);
    cases.push_back(std::move(c));
  }
  REQUIRE(cases.size() == inputs.size());
  return cases;
}

std::string show(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids)
    s += std::to_string(id) + " ";
  return s;
}

/// Every vector with add_special = false, parse_special = false (as
/// test-tokenizer-0 does); returns how many matched.
size_t check_vectors(const tokenizer& tok, const std::string& name) {
  const auto cases = read_vectors(name);
  size_t passed = 0;
  for (const auto& c : cases) {
    const auto got = tok.encode(c.text, false, false);
    CHECK_MESSAGE(got == c.ids, name, ": '", c.text, "'\n  want ", show(c.ids), "\n  got  ",
                  show(got));
    passed += got == c.ids;
  }
  MESSAGE(name, ": ", passed, "/", cases.size(), " llama.cpp vectors match");
  REQUIRE(!cases.empty());
  return passed;
}

std::string utf8(uint32_t cpt) {
  std::string s;
  unicode::append_utf8(s, cpt);
  return s;
}

/// llama.cpp's test-tokenizer-1-{spm,bpe} unicode loop: every code point
/// (but surrogates and U+40000..U+E0000, and U+2581) detokenizes back to itself.
void check_codepoint_round_trip(const tokenizer& tok) {
  size_t failures = 0, checked = 0;
  for (uint32_t cp = 0; cp < 0x110000; ++cp) {
    if ((cp >= 0xD800 && cp <= 0xDFFF) || (cp >= 0x40000 && cp <= 0xE0000) || cp == 0x2581)
      continue;
    ++checked;
    const std::string s = utf8(cp);
    const auto ids = tok.encode(s, false, true);
    const std::string back = tok.decode(ids, false, true);
    if (back != s && ++failures <= 5)
      CHECK_MESSAGE(back == s, "code point U+", cp, " comes back as '", back, "'");
  }
  CHECK(checked == 456702);
  CHECK(failures == 0);
}

/// The metadata of a tiny SentencePiece vocabulary; tests spoil one field.
struct tiny_spm {
  std::string model = "llama";
  std::vector<std::string> tokens{"<unk>",
                                  "<s>",
                                  "</s>",
                                  "\xE2\x96\x81"
                                  "a",
                                  "a",
                                  "b"};
  std::vector<float> scores{0, 0, 0, -1, -2, -3};
  std::vector<int32_t> types{2, 3, 3, 1, 1, 1};
  bool with_tokens = true;
  uint32_t eos_id = 2;
  bool bos_as_string = false;

  gguf_writer writer() const {
    gguf_writer w;
    w.set_string("general.architecture", "llama");
    w.set_string("tokenizer.ggml.model", model);
    if (with_tokens)
      w.set_strings("tokenizer.ggml.tokens", tokens);
    w.set_f32s("tokenizer.ggml.scores", scores);
    w.set_i32s("tokenizer.ggml.token_type", types);
    w.set_u32("tokenizer.ggml.eos_token_id", eos_id);
    if (bos_as_string)
      w.set_string("tokenizer.ggml.bos_token_id", "one");
    return w;
  }
};

std::string load_error(const gguf_writer& w) {
  const auto bytes = w.bytes();
  auto file = gguf_file::parse(bytes);
  REQUIRE(file.ok());
  auto tok = tokenizer::from_gguf(**file);
  return tok ? std::string() : tok.err().message;
}

std::string vocab_error(const vocab& v) {
  auto tok = tokenizer::from_vocab(v);
  return tok ? std::string() : tok.err().message;
}

/// A byte-level BPE vocabulary over the 256 alphabet characters plus merges
/// "a b" -> "ab", "ab c" -> "abc" and Ġ-prefixed words.
vocab tiny_bpe() {
  vocab v;
  v.model = tokenizer_model::bpe;
  v.pre = "gpt-2";
  for (int b = 0; b < 256; ++b)
    v.tokens.push_back(utf8(unicode::byte_to_cpt(static_cast<uint8_t>(b))));
  for (const char* t : {"ab", "abc",
                        "\xC4\xA0"
                        "a",
                        "<|endoftext|>"})
    v.tokens.push_back(t);
  v.types.assign(v.tokens.size(), 1);
  v.types.back() = 3;
  v.merges = {"a b", "ab c", "\xC4\xA0 a"};
  v.eos_id = static_cast<int32_t>(v.tokens.size()) - 1;
  return v;
}

} // namespace

// ---------------------------------------------------------------------------
// llama.cpp's test vectors

TEST_CASE("tokenizer: LLaMA-2 SentencePiece vocabulary matches llama.cpp's test vectors") {
  const tokenizer tok = load_vocab("llama-spm");
  CHECK(tok.model() == tokenizer_model::spm);
  CHECK(tok.n_vocab() == 32000);
  CHECK(check_vectors(tok, "llama-spm") == read_vectors("llama-spm").size());
}

TEST_CASE("tokenizer: LLaMA-3 BPE vocabulary matches llama.cpp's test vectors") {
  const tokenizer tok = load_vocab("llama-bpe");
  CHECK(tok.model() == tokenizer_model::bpe);
  CHECK(tok.n_vocab() == 128256);
  CHECK(check_vectors(tok, "llama-bpe") == read_vectors("llama-bpe").size());
}

TEST_CASE("tokenizer: Qwen2 BPE vocabulary matches llama.cpp's test vectors") {
  const tokenizer tok = load_vocab("qwen2");
  CHECK(tok.pre() == "qwen2");
  CHECK(check_vectors(tok, "qwen2") == read_vectors("qwen2").size());
}

TEST_CASE("tokenizer: other supported vocabularies match llama.cpp's test vectors") {
  // gpt-2 / mpt: GPT-2 regex (mpt also splits out its user-defined runs of
  // spaces first); starcoder / refact / command-r: digits isolated first;
  // falcon: punctuation runs and digit triples; qwen35: letters with marks;
  // phi-3: SentencePiece.
  for (const std::string name :
       {"gpt-2", "mpt", "starcoder", "refact", "command-r", "falcon", "qwen35", "phi-3"}) {
    CAPTURE(name);
    const tokenizer tok = load_vocab(name);
    CHECK(check_vectors(tok, name) == read_vectors(name).size());
  }
}

TEST_CASE("tokenizer: vocabularies whose pre-tokenizer is not implemented are refused") {
  for (const std::string name : {"deepseek-llm", "deepseek-coder"}) {
    CAPTURE(name);
    const auto path = vocab_path(name);
    if (!std::filesystem::exists(path))
      FAIL("missing ", path.string(), ": run ops/install-peer.sh");
    auto file = gguf_file::open(path.string());
    REQUIRE(file.ok());
    auto tok = tokenizer::from_gguf(**file);
    REQUIRE_FALSE(tok.ok());
    CHECK(tok.err().message.find("unsupported pre-tokenizer") != std::string::npos);
  }
}

// ---------------------------------------------------------------------------
// round trips (llama.cpp's test-tokenizer-1-spm / -1-bpe)

TEST_CASE("tokenizer: SentencePiece round trips every token and code point") {
  const tokenizer tok = load_vocab("llama-spm");
  // every token: its piece (special rendered) re-tokenizes to the same text
  size_t failures = 0;
  for (int32_t id = 0; id < tok.n_vocab(); ++id) {
    const std::string s = tok.decode(std::vector<int32_t>{id}, false, true);
    const std::string back = tok.decode(tok.encode(s, false, true), false, true);
    if (back != s && ++failures <= 5)
      CHECK_MESSAGE(back == s, "token ", id, " '", s, "' comes back as '", back, "'");
  }
  CHECK(failures == 0);
  check_codepoint_round_trip(tok);
}

TEST_CASE("tokenizer: byte-level BPE round trips every code point") {
  check_codepoint_round_trip(load_vocab("llama-bpe"));
  check_codepoint_round_trip(load_vocab("qwen2"));
}

TEST_CASE(
  "tokenizer: decode(encode(x)) == x for the test vectors of the SPM and qwen2 vocabularies") {
  // Qwen2 detokenizes without clean-up; SPM removes the space it adds.
  // (LLaMA-3 cleans " ," and " 's" up, so its round trip is not the identity.)
  for (const std::string name : {"llama-spm", "qwen2"}) {
    CAPTURE(name);
    const tokenizer tok = load_vocab(name);
    for (const auto& c : read_vectors(name))
      CHECK(tok.decode(tok.encode(c.text, false, false)) == c.text);
  }
}

// ---------------------------------------------------------------------------
// special tokens

TEST_CASE("tokenizer: LLaMA-3 special tokens, BOS and end of generation") {
  const tokenizer tok = load_vocab("llama-bpe");
  CHECK(tok.bos() == 128000);
  CHECK(tok.eos() == 128001);
  CHECK(tok.add_bos());
  CHECK_FALSE(tok.add_eos());
  const std::string chat = "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>";
  const auto parsed = tok.encode(chat, true, true);
  CHECK(parsed == std::vector<int32_t>{128000, 128006, 882, 128007, 271, 13347, 128009});
  // without parse_special the markers are plain text
  const auto plain = tok.encode(chat, false, false);
  CHECK(plain.size() > 10);
  CHECK(std::find(plain.begin(), plain.end(), 128009) == plain.end());
  CHECK(tok.decode(plain) == chat);
  // control tokens render only when asked
  CHECK(tok.token_to_piece(128009, false).empty());
  CHECK(tok.token_to_piece(128009, true) == "<|eot_id|>");
  CHECK(tok.decode(parsed, true, false) == "user\n\nHi");
  CHECK(tok.is_eog(128001));
  CHECK(tok.is_eog(128009)); // <|eot_id|>, found by its text
  CHECK(tok.eot() == 128009);
  CHECK_FALSE(tok.is_eog(128000));
  CHECK_FALSE(tok.is_eog(13347));
}

TEST_CASE("tokenizer: SentencePiece BOS, space prefix and special tokens in text") {
  const tokenizer tok = load_vocab("llama-spm");
  CHECK(tok.add_bos());
  CHECK(tok.add_space_prefix());
  const auto a = tok.encode("Hello world", true, false);
  REQUIRE(a.size() == 3);
  CHECK(a[0] == 1);
  CHECK(tok.token_text(a[1]) == "\xE2\x96\x81Hello");
  CHECK(tok.decode(std::vector<int32_t>(a.begin() + 1, a.end())) == "Hello world");
  // llama.cpp keeps the space when it removes a BOS (llama_detokenize)
  CHECK(tok.decode(a, true) == " Hello world");
  // "</s>" is a control token: text unless parse_special; after it, a space is prefixed again
  const auto b = tok.encode("Hi</s>there", false, true);
  REQUIRE(b.size() >= 3);
  CHECK(std::find(b.begin(), b.end(), 2) != b.end());
  CHECK(tok.token_text(b.back()).substr(0, 3) == "\xE2\x96\x81");
  const auto c = tok.encode("Hi</s>there", false, false);
  CHECK(std::find(c.begin(), c.end(), 2) == c.end());
  CHECK(tok.is_eog(2));
  // unknown characters fall back to bytes: U+1F999 (🦙) is 4 byte tokens
  const auto d = tok.encode("\xF0\x9F\xA6\x99", false, false);
  CHECK(d == std::vector<int32_t>{29871, 243, 162, 169, 156});
}

TEST_CASE("tokenizer: Qwen2 user-defined tokens are split out even without parse_special") {
  const tokenizer tok = load_vocab("qwen2");
  const auto pad = tok.find("[PAD151646]");
  REQUIRE(pad);
  CHECK(tok.type(*pad) == token_type::user_defined);
  const auto ids = tok.encode("a[PAD151646]b", false, false);
  CHECK(ids.size() == 3);
  CHECK(ids[1] == *pad);
  const auto im_end = tok.find("<|im_end|>");
  REQUIRE(im_end);
  CHECK(tok.is_eog(*im_end));
  CHECK(tok.encode("<|im_end|>", false, true) == std::vector<int32_t>{*im_end});
}

// ---------------------------------------------------------------------------
// streaming detokenizer

TEST_CASE("tokenizer: the stream decoder holds back split UTF-8 and replaces what is invalid") {
  const tokenizer tok = load_vocab("llama-spm");
  // 🦙 arrives as 4 byte tokens (<0xF0> <0x9F> <0xA6> <0x99>)
  const auto ids = tok.encode("llama \xF0\x9F\xA6\x99!", false, false);
  stream_decoder dec(tok);
  std::string text;
  size_t max_pending = 0;
  for (int32_t id : ids) {
    const std::string_view s = dec.push(id);
    text += s;
    max_pending = std::max(max_pending, dec.pending());
    // never a partial character
    std::vector<uint32_t> cpts;
    unicode::decode_utf8(s, cpts);
    CHECK(std::find(cpts.begin(), cpts.end(), 0xFFFDu) == cpts.end());
  }
  text += dec.finish();
  CHECK(max_pending == 3);
  CHECK(text == " llama \xF0\x9F\xA6\x99!");

  // bytes directly: a split 3-byte character, then garbage
  stream_decoder raw(tok);
  CHECK(raw.push_bytes("a\xE2\x82").empty() == false);
  CHECK(raw.pending() == 2);
  CHECK(raw.push_bytes("\xAC") == "\xE2\x82\xAC"); // €
  CHECK(raw.push_bytes("\xFF"
                       "b")
        == "\xEF\xBF\xBD"
           "b");
  CHECK(raw.push_bytes("\xE2\x82"
                       "c")
        == "\xEF\xBF\xBD"
           "c"); // truncated sequence: one U+FFFD
  CHECK(raw.push_bytes("\xED\xA0\x80") == "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"); // surrogate
  CHECK(raw.push_bytes("\xF0\x9F").empty());
  CHECK(raw.finish() == "\xEF\xBF\xBD"); // incomplete at the end
  CHECK(raw.pending() == 0);
  CHECK(raw.push_bytes("ok") == "ok");

  // control tokens only when asked
  stream_decoder quiet(tok), loud(tok, true);
  CHECK(quiet.push(2).empty());
  CHECK(loud.push(2) == "</s>");
}

// ---------------------------------------------------------------------------
// vocabularies from plain vectors, and bad vocabularies

TEST_CASE("tokenizer: a byte-level BPE vocabulary from plain vectors") {
  auto tok = tokenizer::from_vocab(tiny_bpe());
  REQUIRE_MESSAGE(tok.ok(), (tok ? "" : tok.err().message));
  const int32_t ab = *tok->find("ab"), abc = *tok->find("abc"),
                ga = *tok->find("\xC4\xA0"
                                "a");
  CHECK(tok->encode("abc", false, false) == std::vector<int32_t>{abc});
  CHECK(tok->encode("abd", false, false) == std::vector<int32_t>{ab, 'd'});
  CHECK(tok->encode("x a", false, false) == std::vector<int32_t>{'x', ga});
  CHECK(tok->decode(tok->encode("x abc\n\xC3\xA9", false, false)) == "x abc\n\xC3\xA9");
  CHECK(tok->token_to_piece(ga) == " a");
  const int32_t eot = *tok->find("<|endoftext|>");
  CHECK(tok->encode("a<|endoftext|>", false, true).back() == eot);
  CHECK(tok->is_eog(eot));
  // invalid UTF-8 is tokenized as U+FFFD, as llama.cpp does
  CHECK(tok->decode(tok->encode("\xFF", false, false)) == "\xEF\xBF\xBD");
}

TEST_CASE("tokenizer: SentencePiece from GGUF metadata, with llama.cpp's default ids") {
  const auto bytes = tiny_spm{}.writer().bytes();
  auto file = gguf_file::parse(bytes);
  REQUIRE(file.ok());
  auto tok = tokenizer::from_gguf(**file);
  REQUIRE_MESSAGE(tok.ok(), (tok ? "" : tok.err().message));
  CHECK(tok->bos() == 1);
  CHECK(tok->eos() == 2);
  CHECK(tok->unk() == 0);
  CHECK(tok->encode("ab", true, false) == std::vector<int32_t>{1, 3, 5});
  // no byte tokens: each byte of an unknown piece ("\u2581" and "c") becomes <unk>
  CHECK(tok->encode("c", false, false) == std::vector<int32_t>{0, 0, 0, 0});
}

TEST_CASE("tokenizer: bad vocabularies give clear errors") {
  tiny_spm t;
  t.model = "t5";
  CHECK(load_error(t.writer()).find("unsupported tokenizer.ggml.model 't5'") != std::string::npos);
  t = tiny_spm{};
  t.with_tokens = false;
  CHECK(load_error(t.writer()).find("tokenizer.ggml.tokens") != std::string::npos);
  t = tiny_spm{};
  t.scores = {0, 0};
  CHECK(load_error(t.writer()).find("scores has 2 entries for 6 tokens") != std::string::npos);
  t = tiny_spm{};
  t.types = {1};
  CHECK(load_error(t.writer()).find("token_type has 1 entries") != std::string::npos);
  t = tiny_spm{};
  t.eos_id = 99;
  CHECK(load_error(t.writer()).find("eos_token_id = 99 is out of range") != std::string::npos);
  t = tiny_spm{};
  t.bos_as_string = true;
  CHECK(load_error(t.writer()).find("tokenizer.ggml.bos_token_id") != std::string::npos);
  t = tiny_spm{};
  t.tokens[4] = t.tokens[3].substr(3);
  t.tokens[3] = "a";
  CHECK(load_error(t.writer()).find("tokens 3 and 4 have the same text 'a'") != std::string::npos);
  vocab v = tiny_bpe();
  v.merges.push_back("a zz");
  CHECK(vocab_error(v).find("merge 3 'a zz' names 'zz', which is not a token")
        != std::string::npos);
  v = tiny_bpe();
  v.merges.push_back("ab");
  CHECK(vocab_error(v).find("is not two tokens separated by a space") != std::string::npos);
  v = tiny_bpe();
  v.merges.push_back("c a"); // "ca" is no token
  CHECK(vocab_error(v).find("'ca', which is not a token") != std::string::npos);
  v = tiny_bpe();
  v.merges.clear();
  CHECK(vocab_error(v).find("needs tokenizer.ggml.merges") != std::string::npos);
  v = tiny_bpe();
  v.pre = "tekken";
  CHECK(vocab_error(v).find("unsupported pre-tokenizer tokenizer.ggml.pre = 'tekken'")
        != std::string::npos);
  v = tiny_bpe();
  v.types[5] = 6;
  CHECK(vocab_error(v).find("has type byte but is not <0xXX>") != std::string::npos);
  v = tiny_bpe();
  v.add_bos = true;
  CHECK(vocab_error(v).find("there is no BOS token") != std::string::npos);
  CHECK(vocab_error(vocab{}).find("no tokens") != std::string::npos);
}

TEST_CASE("tokenizer: token_offsets place every token of a prompt at its text") {
  const tokenizer tok = load_vocab("llama-spm");
  const std::string text = "Hi</s>there, a library for \xF0\x9F\xA6\x99 parsing";
  const auto ids = tok.encode(text, true, true);
  const auto off = token_offsets(tok, text, ids);
  REQUIRE(off.size() == ids.size());
  CHECK(off[0] == 0); // BOS: not in the text
  for (size_t i = 1; i < ids.size(); ++i) {
    CAPTURE(i);
    CHECK(off[i] >= off[i - 1]);
    CHECK(off[i] <= text.size());
    std::string piece(tok.token_to_piece(ids[i]));
    if (tok.type(ids[i]) == token_type::byte)
      continue;
    if (off[i] == 0 || text.compare(off[i], piece.size(), piece) != 0)
      piece.erase(0, 1); // the space prefix
    CHECK(text.compare(off[i], piece.size(), piece) == 0);
  }
  // The emoji's four byte tokens cover its four bytes, and "parsing" follows.
  const size_t emoji = text.find("\xF0");
  const size_t k = static_cast<size_t>(std::find(off.begin(), off.end(), emoji) - off.begin());
  REQUIRE(k + 4 < off.size());
  CHECK(off[k + 4] == emoji + 4);
  CHECK(off.back() == text.find("parsing") - 1); // "▁parsing" begins at its space
}
