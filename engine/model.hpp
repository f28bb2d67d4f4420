#pragma once
/// @file The llama-family model: hyper-parameters and weights read from a
/// GGUF file (zero-copy views into the map), a per-sequence KV cache, and
/// the forward pass over a batch of tokens that may belong to several
/// sequences (continuous batching).
///
/// Architecture (llama.cpp's LLM_ARCH_LLAMA graph; Touvron et al. 2023):
///   x = token_embd[token]
///   per layer:  h = x + Wo·attn(rope(Wq·n), rope(Wk·n), Wv·n),  n = rms_norm(x)·attn_norm
///               x = h + Wdown·(silu(Wgate·m) ⊙ Wup·m),           m = rms_norm(h)·ffn_norm
///   logits = Wout·(rms_norm(x)·output_norm), Wout = output.weight or, when
///   absent, token_embd.weight (tied embeddings).
/// Grouped-query attention (head_count_kv < head_count), llama RoPE
/// (adjacent pairs, freq_base, linear scaling, Llama 3.1's per-pair factors
/// from rope_freqs.weight), and Qwen2's Q/K/V biases.
/// Weights: every format kernels::gemm computes (F32, F16, BF16, Q8_0, Q4_0,
/// Q4_K, Q6_K); norms F32/F16/BF16.
///
/// Thread-safety: a `model` is immutable after load and shared by any number
/// of threads. A `kv_cache` and a `context` belong to one thread at a time.

#include "engine/gguf.hpp"
#include "engine/kv_cache.hpp"
#include "kernels/matmul.hpp"
#include "kernels/nn.hpp"
#include "kernels/parallel.hpp"

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace shoal::engine {

/// Hyper-parameters (GGUF keys `<arch>.*`).
struct llama_hparams {
  std::string arch;             ///< general.architecture: "llama" or "qwen2"
  std::string name;             ///< general.name, if any
  uint32_t n_vocab = 0;         ///< rows of token_embd
  uint32_t n_ctx_train = 0;     ///< <arch>.context_length
  uint32_t n_embd = 0;          ///< <arch>.embedding_length
  uint32_t n_layer = 0;         ///< <arch>.block_count
  uint32_t n_ff = 0;            ///< <arch>.feed_forward_length
  uint32_t n_head = 0;          ///< <arch>.attention.head_count
  uint32_t n_head_kv = 0;       ///< <arch>.attention.head_count_kv (default n_head)
  uint32_t head_dim = 0;        ///< <arch>.attention.key_length (default n_embd / n_head)
  uint32_t n_rot = 0;           ///< <arch>.rope.dimension_count (default head_dim)
  float rms_eps = 1e-5f;        ///< <arch>.attention.layer_norm_rms_epsilon
  kernels::rope_params rope;    ///< freq_base, linear scaling factor
  bool tied_embeddings = false; ///< no output.weight: logits use token_embd
  bool qkv_bias = false;        ///< attn_q/k/v.bias present (Qwen2)

  uint32_t n_embd_kv() const noexcept { return n_head_kv * head_dim; }
  uint32_t n_embd_q() const noexcept { return n_head * head_dim; }
};

/// One transformer block's weights (views into the GGUF map; norms and
/// biases converted to f32 and owned).
struct llama_layer {
  std::vector<float> attn_norm, ffn_norm; ///< [n_embd]
  std::vector<float> bq, bk, bv;          ///< [n_embd_q], [n_embd_kv] ×2; empty without bias
  kernels::weight_view wq, wk, wv,
    wo; ///< [n_embd_q, n_embd], [n_embd_kv, n_embd] ×2, [n_embd, n_embd_q]
  kernels::weight_view w_gate, w_up, w_down; ///< [n_ff, n_embd] ×2, [n_embd, n_ff]
};

class model {
public:
  /// Opens and maps a GGUF file and loads the model. Errors name the file
  /// and the problem: unsupported architecture, missing or mistyped keys,
  /// missing tensors, shapes that disagree with the hyper-parameters,
  /// weight types the kernels cannot compute with.
  static core::result<std::shared_ptr<const model>> load(const std::string& path);
  /// The same from an already parsed file (kept alive by the model).
  static core::result<std::shared_ptr<const model>>
  from_gguf(std::shared_ptr<const gguf_file> file);

  const llama_hparams& hparams() const noexcept { return hp_; }
  const gguf_file& file() const noexcept { return *file_; }
  std::span<const llama_layer> layers() const noexcept { return layers_; }
  const kernels::weight_view& token_embd() const noexcept { return tok_embd_; }
  const kernels::weight_view& output() const noexcept { return output_; }
  std::span<const float> output_norm() const noexcept { return output_norm_; }
  /// Bytes of weights in the map.
  uint64_t weight_bytes() const noexcept { return weight_bytes_; }
  /// Identifies the model's bytes (xxh3-64 of the file size, the
  /// hyper-parameters and the first 64 KiB of token_embd): keys of state
  /// kept across restarts, such as spilled KV pages.
  uint64_t fingerprint() const noexcept { return fingerprint_; }
  /// The weight type of most matrices (that of blk.0.attn_q.weight), e.g. "Q4_0".
  std::string_view weight_type_name() const noexcept;

  /// Writes token `id`'s embedding row (dequantized) to out [n_embd].
  /// @pre id < n_vocab.
  void embed_token(int32_t id, std::span<float> out) const noexcept;

private:
  model() = default;
  std::shared_ptr<const gguf_file> file_;
  llama_hparams hp_;
  std::vector<llama_layer> layers_;
  kernels::weight_view tok_embd_, output_;
  std::vector<float> output_norm_;
  std::vector<float> rope_freqs_; ///< rope_freqs.weight; hparams().rope points here
  uint64_t weight_bytes_ = 0;
  uint64_t fingerprint_ = 0;
};

/// One token of a batch: its id, the sequence (cache) it extends, and
/// whether its logits are wanted.
struct batch_token {
  int32_t id = 0;
  kv_cache* cache = nullptr;
  bool logits = false;
};

/// Scratch buffers and threads for running a model. Not thread-safe: one
/// context per engine thread.
class context {
public:
  /// @param max_batch most tokens per `eval` call. @param pool threads for
  /// the matrix products and attention (nullptr = calling thread only).
  context(std::shared_ptr<const model> m, size_t max_batch, kernels::thread_pool* pool);

  const model& get_model() const noexcept { return *model_; }
  size_t max_batch() const noexcept { return max_batch_; }

  /// Runs the batch: every token is appended to its cache (positions follow
  /// on from what the cache holds; a sequence's tokens keep batch order) and
  /// attends causally to its sequence. For the i-th token with `logits` set
  /// (in batch order), writes n_vocab floats at logits[i·n_vocab]; when
  /// `hidden` is not empty also writes the final normalized hidden state of
  /// EVERY token at hidden[t·n_embd] (embeddings).
  /// Errors (nothing is appended): empty or oversized batch, token id out of
  /// range, a cache that would overflow its capacity, logits/hidden spans of
  /// the wrong size, a cache made for another model shape.
  core::result<bool> eval(std::span<const batch_token> batch, std::span<float> logits,
                          std::span<float> hidden = {});

  /// Convenience for one sequence: appends `tokens` and writes the logits of
  /// the last token (all_logits = false) or of every token to `logits`.
  core::result<bool> eval(kv_cache& cache, std::span<const int32_t> tokens, std::span<float> logits,
                          bool all_logits = false);

private:
  std::shared_ptr<const model> model_;
  size_t max_batch_;
  kernels::thread_pool* pool_;
  std::vector<float> x_, xn_, q_, k_, v_, attn_, gate_, up_, out_;
  std::vector<float> rope_tables_;
  std::vector<std::byte> scratch_;
  std::vector<uint32_t> pos_;
};

} // namespace shoal::engine
