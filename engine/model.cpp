#include "engine/model.hpp"

#include "kernels/blocks.hpp"
#include "kernels/quant.hpp"

#include <algorithm>
#include <xxhash.h>

#include <cmath>
#include <cstring>

namespace shoal::engine {

namespace {

using kernels::weight_type;
using kernels::weight_view;

/// Loads the pieces of a model, remembering the first error.
struct loader {
  const gguf_file& f;
  const std::string& arch;
  std::string failure;

  bool fail(std::string what) {
    if (failure.empty())
      failure = std::move(what);
    return false;
  }

  std::string key(std::string_view suffix) const { return arch + "." + std::string(suffix); }

  bool get(std::string_view suffix, uint32_t& out, uint32_t lo, uint32_t hi) {
    auto v = f.get_uint(key(suffix));
    if (!v)
      return fail(v.err().message);
    if (*v < lo || *v > hi)
      return fail("metadata key " + key(suffix) + " is " + std::to_string(*v) + ", outside ["
                  + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    out = static_cast<uint32_t>(*v);
    return true;
  }

  bool find(std::string_view suffix, uint32_t& out, uint32_t lo, uint32_t hi) {
    if (!f.find(key(suffix)))
      return true;
    return get(suffix, out, lo, hi);
  }

  bool find(std::string_view suffix, float& out, double lo, double hi) {
    auto v = f.find_float(key(suffix));
    if (!v)
      return fail(v.err().message);
    if (!*v)
      return true;
    if (!(**v >= lo && **v <= hi))
      return fail("metadata key " + key(suffix) + " is " + std::to_string(**v) + ", outside ["
                  + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    out = static_cast<float>(**v);
    return true;
  }

  const gguf_tensor* tensor(const std::string& name, bool required = true) {
    const gguf_tensor* t = f.tensor(name);
    if (!t && required)
      fail("tensor " + name + " is missing");
    return t;
  }

  static std::string shape(const std::vector<uint64_t>& ne) {
    std::string s = "[";
    for (size_t i = 0; i < ne.size(); ++i)
      s += (i ? ", " : "") + std::to_string(ne[i]);
    return s + "]";
  }

  /// A 2-D weight of shape ne = [cols, rows] in a computable type.
  bool matrix(const std::string& name, uint64_t cols, uint64_t rows, weight_view& out) {
    const gguf_tensor* t = tensor(name);
    if (!t)
      return false;
    if (t->ne.size() != 2 || t->ne[0] != cols || t->ne[1] != rows)
      return fail("tensor " + name + " has shape " + shape(t->ne) + ", expected "
                  + shape({cols, rows}));
    auto type = kernels::weight_type_from_id(t->type);
    if (!type)
      return fail("tensor " + name + " has type " + std::string(ggml_type_info(t->type)->name)
                  + ", which the engine cannot compute with (supported: F32, F16, BF16, Q8_0, "
                    "Q4_0, Q4_K, Q6_K)");
    out = weight_view{t->data, *type, rows, cols};
    return true;
  }

  /// A 1-D f32/f16/bf16 vector of n elements, converted to f32.
  bool vector(const std::string& name, uint64_t n, std::vector<float>& out, bool required = true) {
    const gguf_tensor* t = tensor(name, required);
    if (!t)
      return !required;
    if (t->ne.size() != 1 || t->ne[0] != n)
      return fail("tensor " + name + " has shape " + shape(t->ne) + ", expected ["
                  + std::to_string(n) + "]");
    out.resize(n);
    switch (t->type) {
      case 0:
        std::memcpy(out.data(), t->data, n * 4);
        return true;
      case 1:
      case 30: {
        std::vector<uint16_t> h(n);
        std::memcpy(h.data(), t->data, n * 2);
        if (t->type == 1)
          kernels::convert_f16_to_f32(h, out);
        else
          kernels::convert_bf16_to_f32(h, out);
        return true;
      }
      default:
        return fail("tensor " + name + " has type " + std::string(ggml_type_info(t->type)->name)
                    + ", expected F32, F16 or BF16");
    }
  }
};

} // namespace

core::result<std::shared_ptr<const model>> model::load(const std::string& path) {
  auto f = gguf_file::open(path);
  if (!f)
    return std::move(f).err();
  auto m = from_gguf(std::move(f).value());
  if (!m)
    return core::error{errc::corrupt_data, path + ": " + m.err().message};
  return m;
}

core::result<std::shared_ptr<const model>> model::from_gguf(std::shared_ptr<const gguf_file> file) {
  std::shared_ptr<model> m(new model());
  m->file_ = file;
  const gguf_file& f = *file;
  llama_hparams& hp = m->hp_;
  auto arch = f.get_string("general.architecture");
  if (!arch)
    return arch.err();
  hp.arch = std::string(*arch);
  if (hp.arch != "llama" && hp.arch != "qwen2")
    return core::error{errc::corrupt_data, "architecture \"" + hp.arch
                                             + "\" is not supported (supported: llama, qwen2)"};
  if (auto n = f.find_string("general.name"); n && *n)
    hp.name = std::string(**n);

  loader ld{f, hp.arch, {}};
  constexpr uint32_t big = 1u << 20;
  ld.get("context_length", hp.n_ctx_train, 1, 1u << 24);
  ld.get("embedding_length", hp.n_embd, 1, 65536);
  ld.get("block_count", hp.n_layer, 1, 1024);
  ld.get("feed_forward_length", hp.n_ff, 1, big);
  ld.get("attention.head_count", hp.n_head, 1, 1024);
  hp.n_head_kv = hp.n_head;
  ld.find("attention.head_count_kv", hp.n_head_kv, 1, 1024);
  if (!ld.failure.empty())
    return core::error{errc::corrupt_data, ld.failure};
  if (hp.n_head % hp.n_head_kv != 0)
    return core::error{errc::corrupt_data, "head_count " + std::to_string(hp.n_head)
                                             + " is not a multiple of head_count_kv "
                                             + std::to_string(hp.n_head_kv)};
  hp.head_dim = hp.n_embd / hp.n_head;
  ld.find("attention.key_length", hp.head_dim, 1, 4096);
  uint32_t v_len = hp.head_dim;
  ld.find("attention.value_length", v_len, 1, 4096);
  if (v_len != hp.head_dim)
    return core::error{errc::corrupt_data,
                       "attention.value_length differs from key_length, which is not supported"};
  if (hp.head_dim * hp.n_head != hp.n_embd && !f.find(ld.key("attention.key_length")))
    return core::error{errc::corrupt_data, "embedding_length " + std::to_string(hp.n_embd)
                                             + " is not a multiple of head_count "
                                             + std::to_string(hp.n_head)};
  hp.n_rot = hp.head_dim;
  ld.find("rope.dimension_count", hp.n_rot, 2, hp.head_dim);
  if (hp.n_rot % 2 != 0)
    return core::error{errc::corrupt_data,
                       "rope.dimension_count " + std::to_string(hp.n_rot) + " is odd"};
  hp.rope.n_dims = hp.n_rot;
  ld.find("attention.layer_norm_rms_epsilon", hp.rms_eps, 1e-12, 1e-1);
  ld.find("rope.freq_base", hp.rope.base, 1.0, 1e12);
  if (auto st = f.find_string(ld.key("rope.scaling.type")); st && *st) {
    if (**st == "linear") {
      ld.find("rope.scaling.factor", hp.rope.linear_factor, 1e-3, 1e6);
    } else if (**st != "none") {
      return core::error{errc::corrupt_data, "rope.scaling.type \"" + std::string(**st)
                                               + "\" is not supported (supported: none, linear)"};
    }
  }
  // Llama 3.1 "llama3" rope scaling: per-pair angle divisors.
  if (const gguf_tensor* rf = f.tensor("rope_freqs.weight")) {
    if (rf->type != 0 || rf->n_elements != hp.n_rot / 2)
      return core::error{errc::corrupt_data,
                         "tensor rope_freqs.weight must be F32 with rope.dimension_count / 2 = "
                           + std::to_string(hp.n_rot / 2) + " elements"};
    m->rope_freqs_.resize(rf->n_elements);
    std::memcpy(m->rope_freqs_.data(), rf->data, rf->n_elements * sizeof(float));
    for (float v : m->rope_freqs_)
      if (!(v > 0.0f) || !std::isfinite(v))
        return core::error{
          errc::corrupt_data,
          "tensor rope_freqs.weight holds a factor that is not positive and finite"};
    hp.rope.freq_factors = m->rope_freqs_.data();
  }
  if (!ld.failure.empty())
    return core::error{errc::corrupt_data, ld.failure};

  const gguf_tensor* te = ld.tensor("token_embd.weight");
  if (!te)
    return core::error{errc::corrupt_data, ld.failure};
  if (te->ne.size() != 2 || te->ne[0] != hp.n_embd || te->ne[1] == 0 || te->ne[1] > (1u << 24))
    return core::error{errc::corrupt_data, "tensor token_embd.weight has shape "
                                             + loader::shape(te->ne) + ", expected ["
                                             + std::to_string(hp.n_embd) + ", n_vocab]"};
  hp.n_vocab = static_cast<uint32_t>(te->ne[1]);
  ld.matrix("token_embd.weight", hp.n_embd, hp.n_vocab, m->tok_embd_);
  hp.tied_embeddings = f.tensor("output.weight") == nullptr;
  if (hp.tied_embeddings)
    m->output_ = m->tok_embd_;
  else
    ld.matrix("output.weight", hp.n_embd, hp.n_vocab, m->output_);
  ld.vector("output_norm.weight", hp.n_embd, m->output_norm_);

  m->layers_.resize(hp.n_layer);
  hp.qkv_bias = f.tensor("blk.0.attn_q.bias") != nullptr;
  for (uint32_t i = 0; i < hp.n_layer && ld.failure.empty(); ++i) {
    auto& L = m->layers_[i];
    std::string p = "blk." + std::to_string(i) + ".";
    ld.vector(p + "attn_norm.weight", hp.n_embd, L.attn_norm);
    ld.vector(p + "ffn_norm.weight", hp.n_embd, L.ffn_norm);
    ld.matrix(p + "attn_q.weight", hp.n_embd, hp.n_embd_q(), L.wq);
    ld.matrix(p + "attn_k.weight", hp.n_embd, hp.n_embd_kv(), L.wk);
    ld.matrix(p + "attn_v.weight", hp.n_embd, hp.n_embd_kv(), L.wv);
    ld.matrix(p + "attn_output.weight", hp.n_embd_q(), hp.n_embd, L.wo);
    ld.matrix(p + "ffn_gate.weight", hp.n_embd, hp.n_ff, L.w_gate);
    ld.matrix(p + "ffn_up.weight", hp.n_embd, hp.n_ff, L.w_up);
    ld.matrix(p + "ffn_down.weight", hp.n_ff, hp.n_embd, L.w_down);
    if (hp.qkv_bias) {
      ld.vector(p + "attn_q.bias", hp.n_embd_q(), L.bq);
      ld.vector(p + "attn_k.bias", hp.n_embd_kv(), L.bk);
      ld.vector(p + "attn_v.bias", hp.n_embd_kv(), L.bv);
    }
  }
  if (!ld.failure.empty())
    return core::error{errc::corrupt_data, ld.failure};
  for (const auto& t : f.tensors())
    m->weight_bytes_ += t.n_bytes;
  {
    const gguf_tensor* emb = f.tensor("token_embd.weight");
    uint64_t head[] = {f.size(),  hp.n_vocab,   hp.n_embd, hp.n_layer,
                       hp.n_head, hp.n_head_kv, hp.n_ff};
    uint64_t h = XXH3_64bits(head, sizeof(head));
    m->fingerprint_ = XXH3_64bits_withSeed(emb->data, std::min<uint64_t>(emb->n_bytes, 1 << 16), h);
  }
  return std::shared_ptr<const model>(std::move(m));
}

std::string_view model::weight_type_name() const noexcept {
  return kernels::to_string(layers_.empty() ? tok_embd_.type : layers_[0].wq.type);
}

void model::embed_token(int32_t id, std::span<float> out) const noexcept {
  const auto& w = tok_embd_;
  size_t n = w.cols;
  const std::byte* row =
    static_cast<const std::byte*>(w.data) + static_cast<size_t>(id) * kernels::row_bytes(w.type, n);
  switch (w.type) {
    case weight_type::f32:
      std::memcpy(out.data(), row, n * 4);
      break;
    case weight_type::f16:
      kernels::convert_f16_to_f32({reinterpret_cast<const uint16_t*>(row), n}, out);
      break;
    case weight_type::bf16:
      kernels::convert_bf16_to_f32({reinterpret_cast<const uint16_t*>(row), n}, out);
      break;
    case weight_type::q8_0:
      kernels::dequantize_q8_0({reinterpret_cast<const kernels::block_q8_0*>(row), n / 32}, out);
      break;
    case weight_type::q4_0:
      kernels::dequantize_q4_0({reinterpret_cast<const kernels::block_q4_0*>(row), n / 32}, out);
      break;
    case weight_type::q4_k:
      kernels::dequantize_q4_k({reinterpret_cast<const kernels::block_q4_k*>(row), n / 256}, out);
      break;
    case weight_type::q6_k:
      kernels::dequantize_q6_k({reinterpret_cast<const kernels::block_q6_k*>(row), n / 256}, out);
      break;
  }
}

// ---- forward pass --------------------------------------------------------------

context::context(std::shared_ptr<const model> m, size_t max_batch, kernels::thread_pool* pool)
  : model_(std::move(m)), max_batch_(std::max<size_t>(1, max_batch)), pool_(pool) {
  const auto& hp = model_->hparams();
  size_t n = max_batch_;
  x_.resize(n * hp.n_embd);
  xn_.resize(n * hp.n_embd);
  q_.resize(n * hp.n_embd_q());
  k_.resize(n * hp.n_embd_kv());
  v_.resize(n * hp.n_embd_kv());
  attn_.resize(n * hp.n_embd_q());
  gate_.resize(n * hp.n_ff);
  up_.resize(n * hp.n_ff);
  out_.resize(n * hp.n_embd);
  rope_tables_.resize(n * kernels::rope_table_size(hp.n_rot));
  pos_.resize(n);
  size_t scratch = 0;
  auto need = [&](const weight_view& w) {
    scratch = std::max(scratch, kernels::matmul_scratch_bytes(w.type, w.cols, n));
  };
  for (const auto& L : model_->layers()) {
    for (const auto* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
      need(*w);
  }
  need(model_->output());
  scratch_.resize(scratch);
}

namespace {

void add_bias(std::span<float> y, const std::vector<float>& b, size_t n) {
  if (b.empty())
    return;
  for (size_t t = 0; t < n; ++t)
    for (size_t i = 0; i < b.size(); ++i)
      y[t * b.size() + i] += b[i];
}

/// Most tier runs one sequence's page table may have (kv_cache::segments).
constexpr size_t max_segments = 8;

void store_row(std::byte* dst, kernels::kv_type type, const float* src, size_t n) {
  if (type == kernels::kv_type::f32)
    std::memcpy(dst, src, n * 4);
  else
    kernels::convert_f32_to_f16({src, n}, {reinterpret_cast<uint16_t*>(dst), n});
}

} // namespace

core::result<bool> context::eval(std::span<const batch_token> batch, std::span<float> logits,
                                 std::span<float> hidden) {
  const auto& hp = model_->hparams();
  const size_t n = batch.size();
  if (n == 0)
    return core::error{errc::corrupt_data, "empty batch"};
  if (n > max_batch_)
    return core::error{errc::corrupt_data, "batch of " + std::to_string(n)
                                             + " tokens exceeds the context's maximum of "
                                             + std::to_string(max_batch_)};
  size_t n_out = 0;
  for (size_t i = 0; i < n; ++i) {
    const auto& b = batch[i];
    if (b.id < 0 || static_cast<uint32_t>(b.id) >= hp.n_vocab)
      return core::error{errc::corrupt_data, "token id " + std::to_string(b.id)
                                               + " is outside the vocabulary [0, "
                                               + std::to_string(hp.n_vocab) + ")"};
    if (!b.cache || b.cache->pool().n_layer() != hp.n_layer
        || b.cache->pool().layout(false).row_elems != hp.n_embd_kv()
        || b.cache->n_runs() > max_segments)
      return core::error{errc::corrupt_data,
                         "batch token " + std::to_string(i) + " has no KV cache for this model"};
    n_out += b.logits ? 1 : 0;
  }
  if (logits.size() != n_out * hp.n_vocab)
    return core::error{errc::corrupt_data, "logits span holds " + std::to_string(logits.size())
                                             + " floats, " + std::to_string(n_out * hp.n_vocab)
                                             + " needed"};
  if (!hidden.empty() && hidden.size() != n * hp.n_embd)
    return core::error{errc::corrupt_data, "hidden span holds " + std::to_string(hidden.size())
                                             + " floats, " + std::to_string(n * hp.n_embd)
                                             + " needed"};
  // Positions: each token follows what its cache holds and earlier batch
  // tokens of the same sequence.
  for (size_t i = 0; i < n; ++i) {
    size_t before = 0;
    for (size_t j = 0; j < i; ++j)
      before += batch[j].cache == batch[i].cache ? 1 : 0;
    pos_[i] = static_cast<uint32_t>(batch[i].cache->n_tokens() + before);
    if (pos_[i] >= batch[i].cache->capacity())
      return core::error{errc::corrupt_data, "the sequence is full: its context holds "
                                               + std::to_string(batch[i].cache->capacity())
                                               + " tokens"};
  }
  for (size_t i = 0; i < n; ++i)
    if (auto r = batch[i].cache->reserve(pos_[i] + 1); !r)
      return r.err(); // pages reserved so far stay with their sequences, unused

  const size_t E = hp.n_embd, Eq = hp.n_embd_q(), Ekv = hp.n_embd_kv(), F = hp.n_ff;
  const size_t hd = hp.head_dim, tab = kernels::rope_table_size(hp.n_rot);
  for (size_t i = 0; i < n; ++i) {
    model_->embed_token(batch[i].id, {&x_[i * E], E});
    kernels::rope_table({&rope_tables_[i * tab], tab}, hp.n_rot, pos_[i], hp.rope);
  }
  // Qwen2 rotates NeoX-style pairs (llama.cpp: LLAMA_ROPE_TYPE_NEOX).
  auto* rope = hp.arch == "qwen2" ? &kernels::rope_neox : kernels::rope_kernel().get();
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  auto mm = [&](std::vector<float>& y, const weight_view& w, const std::vector<float>& x) {
    auto st = kernels::gemm({y.data(), n * w.rows}, w, {x.data(), n * w.cols}, n, scratch_, pool_);
    (void)st; // shapes were validated at load
  };

  for (size_t l = 0; l < hp.n_layer; ++l) {
    const llama_layer& L = model_->layers()[l];
    for (size_t i = 0; i < n; ++i)
      kernels::rms_norm({&xn_[i * E], E}, {&x_[i * E], E}, L.attn_norm, hp.rms_eps);
    mm(q_, L.wq, xn_);
    mm(k_, L.wk, xn_);
    mm(v_, L.wv, xn_);
    add_bias(q_, L.bq, n);
    add_bias(k_, L.bk, n);
    add_bias(v_, L.bv, n);
    for (size_t i = 0; i < n; ++i) {
      rope(hp.n_head, hd, hp.n_rot, &q_[i * Eq], &rope_tables_[i * tab]);
      rope(hp.n_head_kv, hd, hp.n_rot, &k_[i * Ekv], &rope_tables_[i * tab]);
      kv_cache& c = *batch[i].cache;
      const auto& layout = c.pool().layout(false);
      store_row(c.k_row(l, pos_[i]), layout.k_type, &k_[i * Ekv], Ekv);
      store_row(c.v_row(l, pos_[i]), layout.v_type, &v_[i * Ekv], Ekv);
    }
    kernels::parallel_for(pool_, n * hp.n_head, [&](size_t task) {
      size_t i = task / hp.n_head, h = task % hp.n_head;
      kernels::kv_segment segs[max_segments];
      size_t ns = batch[i].cache->segments(l, pos_[i] + 1, segs, max_segments);
      kernels::attention_paged({&attn_[i * Eq + h * hd], hd}, {&q_[i * Eq + h * hd], hd},
                               {segs, ns}, kernels::gqa_kv_head(h, hp.n_head, hp.n_head_kv), scale);
    });
    mm(out_, L.wo, attn_);
    for (size_t j = 0; j < n * E; ++j)
      x_[j] += out_[j];
    for (size_t i = 0; i < n; ++i)
      kernels::rms_norm({&xn_[i * E], E}, {&x_[i * E], E}, L.ffn_norm, hp.rms_eps);
    mm(gate_, L.w_gate, xn_);
    mm(up_, L.w_up, xn_);
    kernels::swiglu({gate_.data(), n * F}, {gate_.data(), n * F}, {up_.data(), n * F});
    mm(out_, L.w_down, gate_);
    for (size_t j = 0; j < n * E; ++j)
      x_[j] += out_[j];
  }

  // Final norm: all rows for `hidden`, else only the rows whose logits are wanted.
  size_t r = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!hidden.empty()) {
      kernels::rms_norm({&hidden[i * E], E}, {&x_[i * E], E}, model_->output_norm(), hp.rms_eps);
      if (batch[i].logits)
        std::copy_n(&hidden[i * E], E, &xn_[r++ * E]);
    } else if (batch[i].logits) {
      kernels::rms_norm({&xn_[r++ * E], E}, {&x_[i * E], E}, model_->output_norm(), hp.rms_eps);
    }
  }
  if (n_out > 0) {
    const auto& w = model_->output();
    auto st = kernels::gemm(logits, w, {xn_.data(), n_out * E}, n_out, scratch_, pool_);
    (void)st;
  }
  for (size_t i = 0; i < n; ++i) {
    batch[i].cache->append({&batch[i].id, 1});
  }
  return true;
}

core::result<bool> context::eval(kv_cache& cache, std::span<const int32_t> tokens,
                                 std::span<float> logits, bool all_logits) {
  const size_t V = model_->hparams().n_vocab;
  if (tokens.empty())
    return core::error{errc::corrupt_data, "no tokens to evaluate"};
  if (cache.n_tokens() + tokens.size() > cache.capacity())
    return core::error{errc::corrupt_data, std::to_string(cache.n_tokens() + tokens.size())
                                             + " tokens exceed the sequence's context of "
                                             + std::to_string(cache.capacity())};
  size_t want = all_logits ? tokens.size() * V : V;
  if (logits.size() != want)
    return core::error{errc::corrupt_data, "logits span holds " + std::to_string(logits.size())
                                             + " floats, " + std::to_string(want) + " needed"};
  std::vector<batch_token> batch;
  for (size_t done = 0; done < tokens.size();) {
    size_t n = std::min(max_batch_, tokens.size() - done);
    batch.clear();
    for (size_t i = 0; i < n; ++i)
      batch.push_back({tokens[done + i], &cache, all_logits || done + i + 1 == tokens.size()});
    std::span<float> out;
    if (all_logits)
      out = logits.subspan(done * V, n * V);
    else if (done + n == tokens.size())
      out = logits;
    auto r = eval(batch, out);
    if (!r)
      return r;
    done += n;
  }
  return true;
}

} // namespace shoal::engine
