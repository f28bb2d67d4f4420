#include "engine/model_writer.hpp"

#include "engine/gguf.hpp"
#include "kernels/blocks.hpp"
#include "kernels/quant.hpp"

#include <cmath>
#include <cstring>
#include <random>
#include <unordered_set>

namespace shoal::engine {

namespace {

/// general.file_type is llama.cpp's llama_ftype ("mostly <type>"), not the
/// ggml tensor type id: Q8_0 is ftype 7 but tensor type 8 (llama.h).
uint32_t llama_file_type(uint32_t ggml_type) {
  switch (ggml_type) {
    case 0:
      return 0; // ALL_F32
    case 1:
      return 1; // MOSTLY_F16
    case 2:
      return 2; // MOSTLY_Q4_0
    case 8:
      return 7; // MOSTLY_Q8_0
    case 12:
      return 15; // MOSTLY_Q4_K_M
    case 14:
      return 18; // MOSTLY_Q6_K
    case 30:
      return 32; // MOSTLY_BF16
    default:
      return 0;
  }
}

/// Box-Muller normal samples from a 64-bit generator (reproducible across
/// standard libraries, unlike std::normal_distribution).
class normal_source {
public:
  explicit normal_source(uint64_t seed) : rng_(seed) {}
  float next() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = (static_cast<double>(rng_() >> 11) + 1.0) * 0x1.0p-53;
    double u2 = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
    double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = static_cast<float>(r * std::sin(2 * M_PI * u2));
    has_spare_ = true;
    return static_cast<float>(r * std::cos(2 * M_PI * u2));
  }

private:
  std::mt19937_64 rng_;
  float spare_ = 0;
  bool has_spare_ = false;
};

std::vector<std::byte> encode(const std::vector<float>& x, uint32_t type) {
  std::vector<std::byte> out;
  auto as = [&](auto* tag, size_t per) {
    using block = std::remove_pointer_t<decltype(tag)>;
    out.resize(x.size() / per * sizeof(block));
    return std::span<block>(reinterpret_cast<block*>(out.data()), x.size() / per);
  };
  switch (type) {
    case 0:
      out.resize(x.size() * 4);
      std::memcpy(out.data(), x.data(), out.size());
      break;
    case 1:
      kernels::convert_f32_to_f16(x, as(static_cast<uint16_t*>(nullptr), 1));
      break;
    case 30:
      kernels::convert_f32_to_bf16(x, as(static_cast<uint16_t*>(nullptr), 1));
      break;
    case 8:
      kernels::quantize_q8_0(x, as(static_cast<kernels::block_q8_0*>(nullptr), 32));
      break;
    case 2:
      kernels::quantize_q4_0(x, as(static_cast<kernels::block_q4_0*>(nullptr), 32));
      break;
    case 12:
      kernels::quantize_q4_k(x, as(static_cast<kernels::block_q4_k*>(nullptr), 256));
      break;
    case 14:
      kernels::quantize_q6_k(x, as(static_cast<kernels::block_q6_k*>(nullptr), 256));
      break;
    default:
      break;
  }
  return out;
}

} // namespace

std::optional<random_model_spec> random_model_preset(std::string_view shape) {
  random_model_spec s;
  if (shape == "tiny") {
    s.n_vocab = 512, s.n_embd = 64, s.n_layer = 2, s.n_ff = 128, s.n_head = 2, s.n_head_kv = 2;
    s.n_ctx = 512;
  } else if (shape == "15M") {
    s.n_vocab = 32000, s.n_embd = 288, s.n_layer = 6, s.n_ff = 768, s.n_head = 6, s.n_head_kv = 6;
  } else if (shape == "110M") {
    s.n_vocab = 32000, s.n_embd = 768, s.n_layer = 12, s.n_ff = 2048, s.n_head = 12,
    s.n_head_kv = 12;
  } else if (shape == "260M") {
    s.n_vocab = 32000, s.n_embd = 1024, s.n_layer = 16, s.n_ff = 2816, s.n_head = 16,
    s.n_head_kv = 16;
  } else {
    return std::nullopt;
  }
  s.name = "shoal-random-" + std::string(shape);
  return s;
}

std::optional<uint32_t> weight_type_from_name(std::string_view name) {
  std::string n(name);
  for (auto& c : n)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (n == "f32")
    return 0;
  if (n == "f16")
    return 1;
  if (n == "bf16")
    return 30;
  if (n == "q8_0")
    return 8;
  if (n == "q4_0")
    return 2;
  if (n == "q4_k")
    return 12;
  if (n == "q6_k")
    return 14;
  return std::nullopt;
}

synthetic_vocab make_synthetic_vocab(uint32_t n_vocab) {
  synthetic_vocab v;
  std::unordered_set<std::string> seen;
  auto add = [&](std::string piece, float score, int32_t type) {
    if (v.tokens.size() >= n_vocab || !seen.insert(piece).second)
      return;
    v.tokens.push_back(std::move(piece));
    v.scores.push_back(score);
    v.types.push_back(type);
  };
  add("<unk>", 0, 2);
  add("<s>", 0, 3);
  add("</s>", 0, 3);
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    add(buf, 0, 6);
  }
  add("<|im_start|>", 0, 3);
  add("<|im_end|>", 0, 3);
  const std::string marker = "\xE2\x96\x81"; // U+2581
  const std::string letters = "etaoinshrdlcumwfgypbvkjxqz";
  std::string singles =
    letters + "ETAOINSHRDLCUMWFGYPBVKJXQZ0123456789.,!?;:'\"-()[]{}/\\@#$%&*+=<>_|~`^";
  float score = -1;
  add(marker, score--, 1);
  for (char c : singles) {
    add(marker + c, score--, 1);
    add(std::string(1, c), score--, 1);
  }
  // Letter pairs and triples, most frequent letters first, with and without
  // the word marker, until the vocabulary is full.
  for (char a : letters)
    for (char b : letters) {
      add(marker + a + b, score--, 1);
      add(std::string{a, b}, score--, 1);
    }
  for (char a : letters)
    for (char b : letters)
      for (char c : letters) {
        add(marker + a + b + c, score--, 1);
        add(std::string{a, b, c}, score--, 1);
      }
  for (uint32_t i = 0; v.tokens.size() < n_vocab; ++i)
    add("<extra_" + std::to_string(i) + ">", score--, 5);
  return v;
}

core::result<bool> write_random_model(const random_model_spec& s, const std::string& path) {
  auto info = ggml_type_info(s.weight_type);
  if (!info || !weight_type_from_name(info->name))
    return core::error{errc::invalid_argument, "weight type " + std::to_string(s.weight_type)
                                                 + " is not one the engine computes"};
  if (s.arch != "llama" && s.arch != "qwen2")
    return core::error{errc::invalid_argument,
                       "architecture \"" + s.arch + "\" is not supported (llama, qwen2)"};
  if (s.n_vocab < 300)
    return core::error{errc::invalid_argument, "n_vocab must be at least 300"};
  if (s.n_head == 0 || s.n_head_kv == 0 || s.n_embd % s.n_head != 0 || s.n_head % s.n_head_kv != 0)
    return core::error{errc::invalid_argument,
                       "n_embd must be a multiple of n_head, and n_head a multiple of n_head_kv"};
  const uint32_t hd = s.n_embd / s.n_head;
  if (hd % 2 != 0)
    return core::error{errc::invalid_argument, "head dimension " + std::to_string(hd) + " is odd"};
  for (uint32_t cols : {s.n_embd, s.n_ff})
    if (cols % info->block_elems != 0)
      return core::error{errc::invalid_argument, "rows of " + std::to_string(cols)
                                                   + " elements are not a multiple of "
                                                   + std::string(info->name) + "'s block size "
                                                   + std::to_string(info->block_elems)};

  gguf_writer w;
  const std::string a = s.arch;
  w.set_string("general.architecture", a);
  w.set_string("general.name", s.name);
  w.set_u32("general.file_type", llama_file_type(s.weight_type));
  w.set_u32(a + ".context_length", s.n_ctx);
  w.set_u32(a + ".embedding_length", s.n_embd);
  w.set_u32(a + ".block_count", s.n_layer);
  w.set_u32(a + ".feed_forward_length", s.n_ff);
  w.set_u32(a + ".attention.head_count", s.n_head);
  w.set_u32(a + ".attention.head_count_kv", s.n_head_kv);
  w.set_u32(a + ".rope.dimension_count", hd);
  w.set_f32(a + ".rope.freq_base", s.rope_base);
  w.set_f32(a + ".attention.layer_norm_rms_epsilon", s.rms_eps);
  w.set_u32(a + ".vocab_size", s.n_vocab);

  auto vocab = make_synthetic_vocab(s.n_vocab);
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_string("tokenizer.ggml.pre", "default");
  w.set_strings("tokenizer.ggml.tokens", vocab.tokens);
  w.set_f32s("tokenizer.ggml.scores", vocab.scores);
  w.set_i32s("tokenizer.ggml.token_type", vocab.types);
  w.set_u32("tokenizer.ggml.unknown_token_id", 0);
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  w.set_bool("tokenizer.ggml.add_eos_token", false);
  w.set_string("tokenizer.chat_template",
               "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
               "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt "
               "%}{{ '<|im_start|>assistant\\n' }}{% endif %}");

  normal_source rng(s.seed);
  std::string failure;
  auto tensor = [&](const std::string& name, std::vector<uint64_t> ne, uint32_t type, float std_dev,
                    float mean = 0.0f) {
    size_t n = 1;
    for (auto d : ne)
      n *= d;
    std::vector<float> x(n);
    for (auto& v : x)
      v = mean + std_dev * rng.next();
    auto r = w.add_tensor(name, std::move(ne), type, encode(x, type));
    if (!r && failure.empty())
      failure = r.err().message;
  };
  const uint32_t t = s.weight_type, E = s.n_embd, Ekv = s.n_head_kv * hd, F = s.n_ff;
  const float std_e = 1.0f / std::sqrt(static_cast<float>(E));
  // Tied embeddings double as the output matrix: keep logits in a realistic
  // range (std ~3) rather than ~sqrt(E).
  tensor("token_embd.weight", {E, s.n_vocab}, t, s.tied_embeddings ? 3.0f * std_e : 1.0f);
  if (s.rope_freqs) {
    constexpr double factor = 8, low = 1, high = 4, old_ctx = 8192, pi = 3.14159265358979323846;
    std::vector<float> ff(hd / 2);
    for (size_t i = 0; i < ff.size(); ++i) {
      double freq = std::pow(static_cast<double>(s.rope_base), -2.0 * i / hd);
      double wavelen = 2 * pi / freq;
      if (wavelen < old_ctx / high) {
        ff[i] = 1.0f;
      } else if (wavelen > old_ctx / low) {
        ff[i] = static_cast<float>(factor);
      } else {
        double smooth = (old_ctx / wavelen - low) / (high - low);
        ff[i] = static_cast<float>(1.0 / ((1 - smooth) / factor + smooth));
      }
    }
    auto r = w.add_tensor("rope_freqs.weight", {ff.size()}, 0, encode(ff, 0));
    if (!r && failure.empty())
      failure = r.err().message;
  }
  tensor("output_norm.weight", {E}, 0, 0.1f, 1.0f);
  if (!s.tied_embeddings)
    tensor("output.weight", {E, s.n_vocab}, t, 3.0f * std_e);
  for (uint32_t i = 0; i < s.n_layer; ++i) {
    std::string p = "blk." + std::to_string(i) + ".";
    tensor(p + "attn_norm.weight", {E}, 0, 0.1f, 1.0f);
    tensor(p + "attn_q.weight", {E, E}, t, std_e);
    tensor(p + "attn_k.weight", {E, Ekv}, t, std_e);
    tensor(p + "attn_v.weight", {E, Ekv}, t, std_e);
    tensor(p + "attn_output.weight", {E, E}, t, 0.5f * std_e);
    if (s.arch == "qwen2") {
      tensor(p + "attn_q.bias", {E}, 0, 0.1f);
      tensor(p + "attn_k.bias", {Ekv}, 0, 0.1f);
      tensor(p + "attn_v.bias", {Ekv}, 0, 0.1f);
    }
    tensor(p + "ffn_norm.weight", {E}, 0, 0.1f, 1.0f);
    tensor(p + "ffn_gate.weight", {E, F}, t, std_e);
    tensor(p + "ffn_up.weight", {E, F}, t, std_e);
    tensor(p + "ffn_down.weight", {F, E}, t, 0.5f / std::sqrt(static_cast<float>(F)));
  }
  if (!failure.empty())
    return core::error{errc::invalid_argument, failure};
  return w.write(path);
}

core::result<quantize_report> quantize_model(const std::string& in_path,
                                             const std::string& out_path, uint32_t type,
                                             std::optional<uint32_t> output_type) {
  auto writable = [](uint32_t t) { return t == 0 || t == 1 || t == 2 || t == 8 || t == 30; };
  if (!writable(type))
    return core::error{errc::invalid_argument,
                       "the target type must be f32, f16, bf16, q8_0 or q4_0", "type"};
  if (output_type && !writable(*output_type))
    return core::error{errc::invalid_argument,
                       "the output type must be f32, f16, bf16, q8_0 or q4_0", "output_type"};
  auto file = gguf_file::open(in_path);
  if (!file)
    return std::move(file).err();
  const gguf_file& f = **file;
  gguf_writer w(f.alignment());
  bool has_file_type = false;
  for (const auto& kv : f.metadata()) {
    if (kv.key == "general.alignment" || kv.key == "general.quantization_version")
      continue; // the writer sets the first; the second is set below
    if (kv.key == "general.file_type") {
      w.set_u32("general.file_type", llama_file_type(type));
      has_file_type = true;
    } else {
      w.copy_kv(kv);
    }
  }
  if (!has_file_type)
    w.set_u32("general.file_type", llama_file_type(type));
  w.set_u32("general.quantization_version", 2);

  quantize_report rep;
  std::vector<float> x;
  for (const auto& t : f.tensors()) {
    rep.bytes_in += t.n_bytes;
    const uint32_t want = output_type && t.name == "output.weight" ? *output_type : type;
    const bool matrix = t.ne.size() == 2 && t.ne[0] % ggml_type_info(want)->block_elems == 0;
    std::vector<std::byte> bytes;
    uint32_t out_type = t.type;
    if (!matrix) {
      bytes.assign(t.data, t.data + t.n_bytes);
      ++rep.kept;
    } else {
      x.resize(t.n_elements);
      if (t.type == 0) {
        std::memcpy(x.data(), t.data, t.n_bytes);
      } else if (t.type == 1 || t.type == 30) {
        std::span<const uint16_t> src(reinterpret_cast<const uint16_t*>(t.data), t.n_elements);
        (t.type == 1 ? kernels::convert_f16_to_f32 : kernels::convert_bf16_to_f32)(src, x);
      } else {
        auto info = ggml_type_info(t.type);
        return core::error{errc::invalid_argument,
                           in_path + ": tensor " + std::string(t.name) + " is already "
                             + std::string(info ? info->name : "quantized")
                             + "; quantize from an F32, F16 or BF16 file",
                           "input"};
      }
      for (float v : x)
        if (!std::isfinite(v))
          return core::error{errc::corrupt_data,
                             in_path + ": tensor " + std::string(t.name) + " holds NaN or Inf"};
      bytes = encode(x, want);
      out_type = want;
      ++rep.quantized;
    }
    rep.bytes_out += bytes.size();
    auto r = w.add_tensor(std::string(t.name), t.ne, out_type, std::move(bytes));
    if (!r)
      return std::move(r).err();
  }
  auto r = w.write(out_path);
  if (!r)
    return std::move(r).err();
  return rep;
}

} // namespace shoal::engine
