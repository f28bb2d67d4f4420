#pragma once
/// @file Tokenizers built from GGUF metadata: SentencePiece-style (`llama`)
/// and byte-level BPE (`gpt2`), matching llama.cpp token for token.
///
/// Caveats first:
///   - The algorithms are llama.cpp's (v0.5.0, de3ff81, src/llama-vocab.cpp
///     and src/unicode.cpp), not SentencePiece's or Hugging Face's: SPM merges
///     adjacent pieces by highest score (a greedy bigram merge, not the unigram
///     Viterbi search), unknown characters fall back to <0xXX> byte tokens;
///     BPE merges by rank after a hand-written pre-tokenizer split. Checked
///     against llama.cpp's test vectors (models/ggml-vocab-*.gguf.inp/.out,
///     see tokenizer.test.cpp).
///   - Code point categories come from ICU (Unicode 15.0 on Debian 12);
///     llama.cpp's table may be a newer Unicode: code points assigned since
///     can split differently.
///   - Supported pre-tokenizers (tokenizer.ggml.pre): llama3 family
///     ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
///     "midm-2.0", "lfm2", "jina-v5-nano", "dbrx", "smaug-bpe"), qwen2 family
///     ("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez",
///     "stablelm2"), "qwen35", gpt2 family ("gpt-2", "phi-2", "jina-es",
///     "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
///     "mellum", "modern-bert", "exaone4", "mpt", "olmo", "jais"), starcoder
///     family ("starcoder", "refact", "command-r", "smollm", "codeshell",
///     "exaone", "minerva-7b", "mellum2"), "falcon", and "default" (also used
///     when the key is absent). Others are refused with an error at load.
///   - Vocabulary facts llama.cpp infers from token texts are inferred here
///     too: end-of-turn, end-of-message and fill-in-the-middle tokens
///     (<|eot_id|>, <|im_end|>, </s>, <fim_pad>, ... become control tokens;
///     EOS, EOT, EOM and FIM pad / repo / file-separator end generation), and
///     phi-3's right-stripping of special tokens (general.name contains
///     "phi-3" / "phi3"). llama.cpp's gpt-oss and gemma4 exceptions are not.
///   - One deliberate difference: a normal BPE token holding a character
///     outside GPT-2's byte alphabet (command-r has such tokens) decodes to
///     that character's UTF-8; llama.cpp prints "[UNK_BYTE_0x…]" instead.
///
/// Thread-safety: a `tokenizer` is immutable after construction and cheap to
/// copy (it shares its tables); any number of threads may call its const
/// functions. A `stream_decoder` belongs to one thread at a time.

#include "core/error.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::engine {

class gguf_file;

/// tokenizer.ggml.model values this engine implements.
enum class tokenizer_model : uint8_t {
  spm, ///< "llama": SentencePiece-style bigram merges by score
  bpe, ///< "gpt2": byte-level BPE, merges by rank
};

/// tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum class token_type : int32_t {
  undefined = 0,
  normal = 1,
  unknown = 2,
  control = 3,
  user_defined = 4,
  unused = 5,
  byte = 6,
};

/// A vocabulary in plain vectors: what `tokenizer::from_gguf` reads, for
/// building a tokenizer in tests or for generated models. Ids are indexes.
struct vocab {
  tokenizer_model model = tokenizer_model::spm;
  /// Pre-tokenizer name (BPE only; see the supported list above).
  std::string pre = "default";
  /// [n_vocab] token texts: SPM uses U+2581 for a space, BPE GPT-2's byte
  /// alphabet. Distinct; an empty text is renamed "[EMPTY_<id>]" (llama.cpp).
  std::vector<std::string> tokens;
  /// [n_vocab] merge priorities (SPM: higher merges first), or empty (all 0).
  std::vector<float> scores;
  /// [n_vocab] token_type values as int32 (out-of-range values count as
  /// undefined), or empty (all normal).
  std::vector<int32_t> types;
  /// BPE merges "left right", highest priority first; both halves and their
  /// concatenation must be tokens. Ignored for SPM.
  std::vector<std::string> merges;
  /// Special token ids, -1 for none.
  int32_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1, eot_id = -1, eom_id = -1;
  /// encode(add_special=true) prepends BOS / appends EOS.
  /// Default: llama.cpp's per model: SPM bos true, eos false; BPE both false
  /// except the llama3 pre-tokenizers (bos true).
  std::optional<bool> add_bos, add_eos;
  /// SPM: a space is prepended to the text (and to text after a special
  /// token); decode removes it again. Default: true for SPM, false for BPE.
  std::optional<bool> add_space_prefix;
  /// Token ids whose right / left whitespace is eaten when they are matched
  /// as special tokens in the text (llama.cpp's RSTRIP / LSTRIP attributes).
  std::vector<int32_t> rstrip_ids, lstrip_ids;
};

/// A tokenizer. Encoding cost: O(n log n) in the text's bytes, one hash
/// look-up per candidate merge; a KiB of English takes ~0.03 ms (BPE) to
/// ~0.15 ms (SPM) on one 2020s x86 core. Loading a 128K-token vocabulary
/// with 280K merges takes ~45 ms.
class tokenizer {
public:
  /// Longest text `encode` reads (1 GiB); requests are capped far below.
  static constexpr size_t max_encode_bytes = size_t{1} << 30;

  /// Reads tokenizer.ggml.* (model, pre, tokens, scores, token_type, merges,
  /// bos/eos/unknown/padding/eot/eom/fim_*_token_id, add_bos_token,
  /// add_eos_token, add_space_prefix) and general.name. Errors (one line, naming the key or
  /// token): missing or mistyped keys, arrays whose length differs from the
  /// token list, an unsupported model or pre-tokenizer, duplicate tokens,
  /// merges without a space or naming unknown tokens, special ids out of range
  /// (a padding id out of range is ignored, as llama.cpp does), byte tokens
  /// that are not <0xXX>. Absent ids take llama.cpp's defaults (SPM: bos 1,
  /// eos 2, unk 0). The tokenizer copies what it needs: the file may close.
  static core::result<tokenizer> from_gguf(const gguf_file& file);

  /// Builds from plain vectors with the same checks as from_gguf.
  static core::result<tokenizer> from_vocab(const vocab& v);

  /// Tokenizes UTF-8 `text` (invalid bytes tokenize as U+FFFD for BPE and
  /// as byte tokens for SPM, as in llama.cpp) as llama_tokenize does:
  ///   - add_special: BOS / EOS as add_bos / add_eos say;
  ///   - parse_special: control and unknown-type token texts in `text`
  ///     become those tokens; user-defined tokens always do (both longest
  ///     text first, left to right, llama.cpp's tokenizer_st_partition).
  /// Text beyond max_encode_bytes is ignored. Thread-safe.
  std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const;

  /// The bytes a token stands for (llama_token_to_piece): a normal token's
  /// text decoded (SPM: U+2581 → space; BPE: GPT-2 alphabet → bytes), a byte
  /// token's byte, and the raw text of control / unknown tokens when
  /// `special` (else empty) and of user-defined tokens always. Unused and
  /// undefined tokens give empty. Not necessarily valid UTF-8 on its own.
  /// A view into the tokenizer; empty for ids out of range.
  std::string_view token_to_piece(int32_t id, bool special = true) const;

  /// Detokenizes as llama_detokenize: pieces concatenated; SPM drops the
  /// leading space add_space_prefix added; `remove_special` drops a leading
  /// BOS / trailing EOS the tokenizer adds; `unparse_special` renders control
  /// tokens; BPE vocabularies with clean-up (all but the qwen2, qwen35,
  /// command-r and smollm pre-tokenizers) remove spaces before ?!., and a few
  /// contractions, as Hugging Face's clean_up_tokenization_spaces. Ids out of
  /// range are skipped.
  std::string decode(std::span<const int32_t> ids, bool remove_special = false,
                     bool unparse_special = false) const;

  /// The token's text as stored in the vocabulary; empty out of range.
  std::string_view token_text(int32_t id) const;
  /// The id of the token with exactly this text, if any.
  std::optional<int32_t> find(std::string_view text) const;
  /// The token's type (control for the end-of-generation tokens inferred
  /// from their text); undefined out of range.
  token_type type(int32_t id) const;
  /// The token's score (SPM); 0 for BPE and out of range.
  float score(int32_t id) const;

  /// End of generation: EOS, EOT, EOM, FIM pad / repo / file separator, and
  /// the tokens llama.cpp recognizes by text (<|eot_id|>, <|im_end|>,
  /// <|end|>, <end_of_turn>, <|endoftext|>, <|eom_id|>, </s>, ...).
  bool is_eog(int32_t id) const;
  /// All end-of-generation ids, ascending.
  std::span<const int32_t> eog_ids() const;

  tokenizer_model model() const;
  /// Pre-tokenizer name (BPE; "default" for SPM).
  std::string_view pre() const;
  int32_t n_vocab() const;
  int32_t bos() const; ///< -1 if none
  int32_t eos() const; ///< -1 if none
  int32_t eot() const; ///< -1 if none (explicit key or found by text)
  int32_t unk() const; ///< -1 if none
  int32_t pad() const; ///< -1 if none
  bool add_bos() const;
  bool add_eos() const;
  bool add_space_prefix() const;

  struct impl;

private:
  explicit tokenizer(std::shared_ptr<const impl> p) : impl_(std::move(p)) {}
  /// Shared, immutable: copies of a tokenizer (one per session or engine)
  /// use the same tables.
  std::shared_ptr<const impl> impl_;
};

/// Where each token of `ids` = tok.encode(text, ...) starts in `text`, as
/// byte offsets (OpenAI completions' `text_offset` for echoed prompts).
/// Aligns each token's piece (token_to_piece) to the text from where the
/// previous one ended: a piece found there starts there; so does one whose
/// leading space the tokenizer added (SentencePiece's space prefix, at the
/// start and after control tokens); a BOS/EOS or other special token whose
/// text is not there takes the current offset without advancing; a byte
/// token or any other mismatch advances by its length (clamped to the text).
/// Offsets never decrease and are <= text.size(). Thread-safe (pure).
std::vector<size_t> token_offsets(const tokenizer& tok, std::string_view text,
                                  std::span<const int32_t> ids);

/// Turns a stream of token ids into UTF-8 text as it is generated: each
/// `push` returns the text that is complete so far, holding back the bytes
/// of a multi-byte character whose remaining bytes may come with a later
/// token. The output is always valid UTF-8: a byte sequence that can never
/// become a character is replaced by U+FFFD (one per maximal invalid
/// subpart, as the WHATWG / Unicode "best practice" decoder does), and so is
/// an incomplete tail at `finish`. Pieces are not cleaned up (no leading
/// space removal): as llama.cpp's server streams them.
/// One thread at a time; movable; keeps a copy of the tokenizer.
class stream_decoder {
public:
  /// @param special render control / unknown tokens (e.g. "</s>") as text.
  explicit stream_decoder(tokenizer tok, bool special = false);

  /// Appends token `id`'s piece; returns the newly complete text (a view
  /// valid until the next call).
  std::string_view push(int32_t id);
  /// Appends raw bytes (e.g. a piece obtained elsewhere); same contract.
  std::string_view push_bytes(std::string_view bytes);
  /// Ends the stream: the held-back tail as U+FFFD (or empty). The decoder
  /// can be reused afterwards.
  std::string_view finish();
  /// Bytes currently held back (0..3).
  size_t pending() const noexcept { return pending_.size(); }

private:
  tokenizer tok_;
  bool special_;
  std::string pending_; ///< an incomplete but so far valid UTF-8 prefix
  std::string out_;
};

} // namespace shoal::engine
