#pragma once
/// @file Writes llama-architecture GGUF files with random weights, of any
/// shape and weight type, that both Shoal and llama.cpp load: for tests,
/// benchmarks and the demo tiers of the default config. The weights are
/// random (seeded, reproducible): the text such a model writes is noise.
///
/// The vocabulary is a synthetic SentencePiece (`tokenizer.ggml.model =
/// llama`) one: <unk>, <s>, </s>, the 256 byte-fallback tokens <0x00>..<0xFF>,
/// ChatML's <|im_start|> and <|im_end|> (control), then pieces built from
/// letters, digits and punctuation with and without the U+2581 word marker,
/// so that any UTF-8 text tokenizes. The chat template is ChatML.
///
/// Thread-safety: pure functions.

#include "core/error.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::engine {

/// Shape and format of a random model.
struct random_model_spec {
  std::string arch = "llama"; ///< "llama", or "qwen2" (adds Q/K/V biases)
  std::string name = "shoal-random";
  uint32_t n_vocab = 32000; ///< ≥ 300 (specials + bytes + a few pieces)
  uint32_t n_embd = 288;
  uint32_t n_layer = 6;
  uint32_t n_ff = 768;
  uint32_t n_head = 6;
  uint32_t n_head_kv = 6; ///< < n_head: grouped-query attention
  uint32_t n_ctx = 2048;  ///< <arch>.context_length
  float rope_base = 10000.0f;
  float rms_eps = 1e-5f;
  /// ggml type id of the matrices: 0 F32, 1 F16, 30 BF16, 8 Q8_0, 2 Q4_0,
  /// 12 Q4_K, 14 Q6_K. Norms and biases are always F32 (as llama.cpp writes them).
  uint32_t weight_type = 0;
  /// No output.weight: logits use token_embd (tied embeddings).
  bool tied_embeddings = false;
  /// Write rope_freqs.weight with Llama 3.1's factors (rope_scaling factor
  /// 8, low/high frequency factors 1/4, original context 8192; the formula
  /// of Meta's apply_scaling, as llama.cpp's converter writes it).
  bool rope_freqs = false;
  uint64_t seed = 1;
};

/// Named shapes: "tiny" (vocab 512, 64-dim, 2 layers), "15M" and "110M"
/// (llama2.c's stories15M / stories110M: dim 288/768, 6/12 layers, 6/12
/// heads, ffn 768/2048, vocab 32000), "260M" (dim 1024, 16 layers, ffn
/// 2816). nullopt for other names.
std::optional<random_model_spec> random_model_preset(std::string_view shape);

/// Parses a weight type name ("f32", "F16", "bf16", "q8_0", "Q4_0", "q4_k",
/// "q6_k"); nullopt for others.
std::optional<uint32_t> weight_type_from_name(std::string_view name);

/// Writes the model to `path` (atomically: path.tmp, then rename).
/// Errors: a shape the weight type cannot hold (rows not a multiple of its
/// block size), inconsistent heads, an unwritable path.
core::result<bool> write_random_model(const random_model_spec& spec, const std::string& path);

/// What `quantize_model` did.
struct quantize_report {
  uint32_t quantized = 0; ///< matrices written in the new type
  uint32_t kept = 0;      ///< tensors copied as they were (1-D, or rows the type cannot block)
  uint64_t bytes_in = 0, bytes_out = 0; ///< tensor data, before and after
};

/// Rewrites a GGUF model with its matrices in another weight type, as
/// llama.cpp's llama-quantize does for the types both implement (its
/// llama_model_quantize with a "mostly <type>" ftype): every 2-D tensor
/// (token_embd and output included) is converted to f32 and quantized with
/// the kernels' quantizers (Q8_0 and Q4_0 byte-identical to ggml's
/// reference); 1-D tensors (norms, biases, rope_freqs) and matrices whose
/// rows are not a multiple of the type's block stay as they are. Metadata is
/// copied in order; general.file_type becomes the new type and
/// general.quantization_version 2 (GGML_QNT_VERSION) is added. Written
/// atomically (out.tmp, then rename). Reads the input through the map, one
/// tensor at a time (peak memory ≈ the output file plus one tensor in f32).
/// @param type ggml type id: 8 Q8_0, 2 Q4_0, 1 F16, 30 BF16, 0 F32
///        (weight_type_from_name; k-quants are refused: ours are not ggml's).
/// Errors: unreadable input; a matrix already in a quantized type (quantize
/// from F32/F16/BF16 only: requantizing compounds the error); another type.
/// @param output_type the type of output.weight (the logits' projection),
///        when it should differ (llama-quantize's --output-tensor-type), e.g.
///        F16 for small vocabularies where the logits' precision decides
///        near-ties; nullopt: `type`.
core::result<quantize_report> quantize_model(const std::string& in_path,
                                             const std::string& out_path, uint32_t type,
                                             std::optional<uint32_t> output_type = std::nullopt);

/// The synthetic vocabulary (pieces, scores, token types) for n tokens.
struct synthetic_vocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
};
synthetic_vocab make_synthetic_vocab(uint32_t n_vocab);

} // namespace shoal::engine
