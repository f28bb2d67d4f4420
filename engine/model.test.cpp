#include "engine/model.hpp"
#include "engine/model_writer.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

using namespace shoal::engine;

namespace {

std::string temp_path(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / "shoal-model-test";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

std::shared_ptr<const model> make_model(random_model_spec s, const std::string& name) {
  auto path = temp_path(name);
  auto w = write_random_model(s, path);
  REQUIRE_MESSAGE(w, (w ? "" : w.err().message));
  auto m = model::load(path);
  REQUIRE_MESSAGE(m, (m ? "" : m.err().message));
  return *m;
}

random_model_spec tiny(uint32_t type = 0) {
  auto s = *random_model_preset("tiny");
  s.weight_type = type;
  return s;
}

/// A straightforward double-precision llama forward pass over F32 weights
/// read from the GGUF (no kernels, no cache): the logits of every position.
std::vector<double> reference_logits(const model& m, const std::vector<int32_t>& toks) {
  const auto& hp = m.hparams();
  const auto& f = m.file();
  auto W = [&](const std::string& name) {
    const gguf_tensor* t = f.tensor(name);
    REQUIRE(t);
    REQUIRE(t->type == 0);
    std::vector<double> out(t->n_elements);
    for (size_t i = 0; i < out.size(); ++i) {
      float v;
      std::memcpy(&v, t->data + 4 * i, 4);
      out[i] = v;
    }
    return out;
  };
  const size_t E = hp.n_embd, hd = hp.head_dim, T = toks.size(), V = hp.n_vocab;
  const size_t Eq = hp.n_embd_q(), Ekv = hp.n_embd_kv();
  auto matvec = [](const std::vector<double>& w, const std::vector<double>& x, size_t rows) {
    size_t cols = x.size();
    std::vector<double> y(rows);
    for (size_t r = 0; r < rows; ++r)
      for (size_t c = 0; c < cols; ++c)
        y[r] += w[r * cols + c] * x[c];
    return y;
  };
  auto norm = [&](const std::vector<double>& x, const std::vector<double>& w) {
    double ss = 0;
    for (double v : x)
      ss += v * v;
    double k = 1.0 / std::sqrt(ss / x.size() + hp.rms_eps);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i)
      y[i] = x[i] * k * w[i];
    return y;
  };
  // Llama 3.1 per-pair divisors, read from the file itself.
  std::vector<double> freq_div(hp.n_rot / 2, 1.0);
  if (f.tensor("rope_freqs.weight"))
    freq_div = W("rope_freqs.weight");
  auto rope = [&](std::vector<double>& x, size_t n_heads, size_t pos) {
    for (size_t h = 0; h < n_heads; ++h)
      for (size_t i = 0; i < hp.n_rot / 2; ++i) {
        double theta =
          pos * std::pow(static_cast<double>(hp.rope.base), -2.0 * i / hp.n_rot) / freq_div[i];
        size_t a = h * hd + (hp.arch == "qwen2" ? i : 2 * i);
        size_t b = h * hd + (hp.arch == "qwen2" ? i + hp.n_rot / 2 : 2 * i + 1);
        double xa = x[a], xb = x[b];
        x[a] = xa * std::cos(theta) - xb * std::sin(theta);
        x[b] = xa * std::sin(theta) + xb * std::cos(theta);
      }
  };
  auto emb = W("token_embd.weight");
  std::vector<std::vector<double>> x(T, std::vector<double>(E));
  for (size_t t = 0; t < T; ++t)
    for (size_t i = 0; i < E; ++i)
      x[t][i] = emb[toks[t] * E + i];
  for (size_t l = 0; l < hp.n_layer; ++l) {
    std::string p = "blk." + std::to_string(l) + ".";
    auto wq = W(p + "attn_q.weight"), wk = W(p + "attn_k.weight"), wv = W(p + "attn_v.weight");
    auto wo = W(p + "attn_output.weight"), an = W(p + "attn_norm.weight"),
         fn = W(p + "ffn_norm.weight");
    auto wg = W(p + "ffn_gate.weight"), wu = W(p + "ffn_up.weight"), wd = W(p + "ffn_down.weight");
    std::vector<std::vector<double>> q(T), k(T), v(T);
    for (size_t t = 0; t < T; ++t) {
      auto n = norm(x[t], an);
      q[t] = matvec(wq, n, Eq);
      k[t] = matvec(wk, n, Ekv);
      v[t] = matvec(wv, n, Ekv);
      if (hp.qkv_bias) {
        auto bq = W(p + "attn_q.bias"), bk = W(p + "attn_k.bias"), bv = W(p + "attn_v.bias");
        for (size_t i = 0; i < Eq; ++i)
          q[t][i] += bq[i];
        for (size_t i = 0; i < Ekv; ++i)
          k[t][i] += bk[i], v[t][i] += bv[i];
      }
      rope(q[t], hp.n_head, t);
      rope(k[t], hp.n_head_kv, t);
    }
    for (size_t t = 0; t < T; ++t) {
      std::vector<double> att(Eq);
      for (size_t h = 0; h < hp.n_head; ++h) {
        size_t g = h / (hp.n_head / hp.n_head_kv);
        std::vector<double> s(t + 1);
        double mx = -1e300;
        for (size_t u = 0; u <= t; ++u) {
          for (size_t d = 0; d < hd; ++d)
            s[u] += q[t][h * hd + d] * k[u][g * hd + d];
          s[u] /= std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[u]);
        }
        double z = 0;
        for (auto& e : s)
          z += (e = std::exp(e - mx));
        for (size_t u = 0; u <= t; ++u)
          for (size_t d = 0; d < hd; ++d)
            att[h * hd + d] += s[u] / z * v[u][g * hd + d];
      }
      auto o = matvec(wo, att, E);
      for (size_t i = 0; i < E; ++i)
        x[t][i] += o[i];
      auto n = norm(x[t], fn);
      auto g = matvec(wg, n, hp.n_ff), u = matvec(wu, n, hp.n_ff);
      for (size_t i = 0; i < g.size(); ++i)
        g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      auto d = matvec(wd, g, E);
      for (size_t i = 0; i < E; ++i)
        x[t][i] += d[i];
    }
  }
  auto on = W("output_norm.weight");
  auto out = hp.tied_embeddings ? emb : W("output.weight");
  std::vector<double> logits;
  for (size_t t = 0; t < T; ++t) {
    auto y = matvec(out, norm(x[t], on), V);
    logits.insert(logits.end(), y.begin(), y.end());
  }
  return logits;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

const std::vector<int32_t> prompt = {1, 300, 301, 302, 17, 400, 401, 5, 77, 300, 511, 260};

} // namespace

TEST_CASE("model: F32 logits match a double-precision reference (MHA, GQA, tied, Qwen2 bias)") {
  struct variant {
    const char* name;
    uint32_t n_head_kv;
    bool tied;
    const char* arch;
  };
  for (auto v : {variant{"mha", 2, false, "llama"}, variant{"gqa", 1, false, "llama"},
                 variant{"tied", 2, true, "llama"}, variant{"qwen2", 1, false, "qwen2"}}) {
    CAPTURE(v.name);
    auto s = tiny();
    s.n_head = 4;
    s.n_head_kv = v.n_head_kv * 2;
    s.tied_embeddings = v.tied;
    s.arch = v.arch;
    auto m = make_model(s, std::string("ref-") + v.name + ".gguf");
    CHECK(m->hparams().tied_embeddings == v.tied);
    CHECK(m->hparams().qkv_bias == (s.arch == "qwen2"));
    context ctx(m, 64, nullptr);
    kv_cache cache(m->hparams(), 64, shoal::kernels::kv_type::f32);
    std::vector<float> logits(prompt.size() * m->hparams().n_vocab);
    auto r = ctx.eval(cache, prompt, logits, true);
    REQUIRE_MESSAGE(r, (r ? "" : r.err().message));
    auto ref = reference_logits(*m, prompt);
    double scale = 0;
    for (double x : ref)
      scale = std::max(scale, std::abs(x));
    CHECK(scale > 1.0); // logits are spread, not all near zero
    CHECK(max_abs_diff(logits, ref) < 1e-4 * scale);
    CHECK(cache.n_tokens() == prompt.size());
  }
}

TEST_CASE("model: Llama 3.1 rope_freqs.weight divides the angles (double-precision reference)") {
  auto s = tiny();
  s.rope_base = 500000.0f; // Llama 3's base: most pairs are low-frequency
  std::vector<int32_t> toks;
  for (int32_t i = 0; i < 128; ++i)
    toks.push_back(300 + (i * 37) % 200);
  auto run = [&](const std::shared_ptr<const model>& m) {
    context ctx(m, 128, nullptr);
    kv_cache cache(m->hparams(), 128, shoal::kernels::kv_type::f32);
    std::vector<float> logits(toks.size() * m->hparams().n_vocab);
    REQUIRE(ctx.eval(cache, toks, logits, true));
    return logits;
  };
  auto plain = make_model(s, "rope-plain.gguf");
  s.rope_freqs = true;
  auto scaled = make_model(s, "rope-freqs.gguf");
  REQUIRE(scaled->hparams().rope.freq_factors != nullptr);
  auto ref = reference_logits(*scaled, toks);
  double scale = 0;
  for (double x : ref)
    scale = std::max(scale, std::abs(x));
  auto ours = run(scaled);
  CHECK(max_abs_diff(ours, ref) < 1e-4 * scale);
  // The factors matter: without them the logits differ 10x beyond that.
  auto without = run(plain);
  CHECK(max_abs_diff(ours, std::vector<double>(without.begin(), without.end())) > 1e-3 * scale);
}

TEST_CASE("model: decoding token by token equals one batched prefill, sequences batch together") {
  auto m = make_model(tiny(8), "q8.gguf");
  const size_t V = m->hparams().n_vocab;
  context ctx(m, 32, nullptr);
  kv_cache all(m->hparams(), 64);
  std::vector<float> batched(prompt.size() * V);
  REQUIRE(ctx.eval(all, prompt, batched, true));

  kv_cache one(m->hparams(), 64);
  std::vector<float> step(V);
  for (size_t t = 0; t < prompt.size(); ++t) {
    REQUIRE(ctx.eval(one, {&prompt[t], 1}, step));
    for (size_t i = 0; i < V; ++i)
      REQUIRE(step[i] == doctest::Approx(batched[t * V + i]).epsilon(1e-5).scale(1.0));
  }

  // Two sequences interleaved in one batch give each its own logits.
  kv_cache a(m->hparams(), 64), b(m->hparams(), 64);
  std::vector<int32_t> other = {1, 9, 8, 7};
  std::vector<batch_token> batch;
  for (size_t i = 0; i < 4; ++i) {
    batch.push_back({prompt[i], &a, i == 3});
    batch.push_back({other[i], &b, i == 3});
  }
  std::vector<float> two(2 * V);
  REQUIRE(ctx.eval(batch, two));
  kv_cache c(m->hparams(), 64);
  std::vector<float> alone(V);
  REQUIRE(ctx.eval(c, other, alone));
  for (size_t i = 0; i < V; ++i) {
    REQUIRE(two[i] == doctest::Approx(batched[3 * V + i]).epsilon(1e-5).scale(1.0));
    REQUIRE(two[V + i] == doctest::Approx(alone[i]).epsilon(1e-5).scale(1.0));
  }
  CHECK(a.n_tokens() == 4);
  CHECK(std::vector<int32_t>(b.tokens().begin(), b.tokens().end()) == other);
}

TEST_CASE("model: threads do not change the logits") {
  auto m = make_model(tiny(2), "q4.gguf");
  const size_t V = m->hparams().n_vocab;
  shoal::kernels::worker_pool pool(2);
  context serial(m, 16, nullptr), parallel(m, 16, &pool);
  kv_cache c1(m->hparams(), 32), c2(m->hparams(), 32);
  std::vector<float> l1(V), l2(V);
  REQUIRE(serial.eval(c1, prompt, l1));
  REQUIRE(parallel.eval(c2, prompt, l2));
  CHECK(l1 == l2);
}

TEST_CASE("model: bad input is an error and changes nothing") {
  auto m = make_model(tiny(), "f32.gguf");
  const size_t V = m->hparams().n_vocab;
  context ctx(m, 8, nullptr);
  kv_cache cache(m->hparams(), 16);
  std::vector<float> logits(V);
  std::vector<int32_t> bad = {1, static_cast<int32_t>(V)};
  auto r = ctx.eval(cache, bad, logits);
  REQUIRE_FALSE(r);
  CHECK(r.err().message.find("outside the vocabulary") != std::string::npos);
  CHECK(cache.n_tokens() == 0);
  std::vector<int32_t> neg = {-1};
  CHECK_FALSE(ctx.eval(cache, neg, logits));
  std::vector<int32_t> many(17, 5);
  auto full = ctx.eval(cache, many, logits);
  REQUIRE_FALSE(full);
  CHECK(full.err().message.find("exceed the sequence's context of 16") != std::string::npos);
  CHECK(cache.n_tokens() == 0);
  std::vector<float> small(V - 1);
  CHECK_FALSE(ctx.eval(cache, prompt, small));
  CHECK_FALSE(ctx.eval(cache, {}, logits));
  // a cache for another shape
  auto other = make_model(*random_model_preset("15M"), "other.gguf");
  kv_cache foreign(other->hparams(), 16);
  batch_token t{1, &foreign, true};
  auto wrong = ctx.eval({&t, 1}, logits);
  REQUIRE_FALSE(wrong);
  CHECK(wrong.err().message.find("no KV cache for this model") != std::string::npos);
}

TEST_CASE("model: loading refuses files that are not a usable llama model") {
  SUBCASE("unsupported architecture") {
    gguf_writer w;
    w.set_string("general.architecture", "mamba");
    auto path = temp_path("mamba.gguf");
    REQUIRE(w.write(path));
    auto m = model::load(path);
    REQUIRE_FALSE(m);
    CHECK(m.err().message.find("architecture \"mamba\" is not supported") != std::string::npos);
  }
  SUBCASE("missing key") {
    gguf_writer w;
    w.set_string("general.architecture", "llama");
    auto path = temp_path("nokeys.gguf");
    REQUIRE(w.write(path));
    auto m = model::load(path);
    REQUIRE_FALSE(m);
    CHECK(m.err().message.find("llama.context_length is missing") != std::string::npos);
  }
  SUBCASE("shape mismatch and missing tensor") {
    // Re-write a tiny model with n_ff declared differently from the tensors.
    auto s = tiny();
    auto path = temp_path("shape.gguf");
    REQUIRE(write_random_model(s, path));
    auto f = gguf_file::open(path);
    REQUIRE(f);
    gguf_writer w;
    for (const auto& kv : (*f)->metadata()) {
      if (kv.key == "llama.feed_forward_length")
        w.set_u32(std::string(kv.key), 96);
      else if (kv.type == gguf_type::u32)
        w.set_u32(std::string(kv.key), *(*f)->get_uint(kv.key));
      else if (kv.type == gguf_type::string)
        w.set_string(std::string(kv.key), std::string(kv.strings[0]));
      else if (kv.type == gguf_type::f32)
        w.set_f32(std::string(kv.key), static_cast<float>(*(*f)->get_float(kv.key)));
    }
    for (const auto& t : (*f)->tensors())
      if (t.name != "blk.1.ffn_up.weight")
        REQUIRE(w.add_tensor(std::string(t.name), t.ne, t.type,
                             std::vector<std::byte>(t.data, t.data + t.n_bytes)));
    auto bad = temp_path("shape-bad.gguf");
    REQUIRE(w.write(bad));
    auto m = model::load(bad);
    REQUIRE_FALSE(m);
    CHECK(m.err().message.find("blk.0.ffn_gate.weight has shape [64, 128], expected [64, 96]")
          != std::string::npos);
  }
}

TEST_CASE("random models carry llama.cpp's general.file_type (llama_ftype, not the tensor type)") {
  // llama.h: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q4_0 2, MOSTLY_Q8_0 7.
  for (auto [type, ftype] : {std::pair{0u, 0u}, {1u, 1u}, {2u, 2u}, {8u, 7u}}) {
    CAPTURE(type);
    auto m = make_model(tiny(type), "ftype.gguf");
    auto ft = m->file().get_uint("general.file_type");
    REQUIRE(ft);
    CHECK(*ft == ftype);
  }
}

TEST_CASE("quantize_model: an F32 model quantized to Q8_0 or Q4_0 is the model written in that "
          "type, metadata kept") {
  auto f32 = tiny(0);
  f32.rope_freqs = true; // a 1-D tensor besides the norms
  const auto src = temp_path("quantize-src.gguf");
  REQUIRE(write_random_model(f32, src));
  auto in = gguf_file::open(src);
  REQUIRE(in);
  for (uint32_t type : {8u, 2u}) {
    CAPTURE(type);
    const auto out = temp_path("quantize-out.gguf");
    auto rep = quantize_model(src, out, type);
    REQUIRE_MESSAGE(rep, (rep ? "" : rep.err().message));
    auto direct_spec = f32;
    direct_spec.weight_type = type;
    const auto direct_path = temp_path("quantize-direct.gguf");
    REQUIRE(write_random_model(direct_spec, direct_path));
    auto q = gguf_file::open(out);
    auto direct = gguf_file::open(direct_path);
    REQUIRE(q);
    REQUIRE(direct);
    // Tensor for tensor the bytes of writing the same weights in that type.
    REQUIRE((*q)->tensors().size() == (*direct)->tensors().size());
    uint32_t matrices = 0;
    for (size_t i = 0; i < (*q)->tensors().size(); ++i) {
      const auto& a = (*q)->tensors()[i];
      const auto& b = (*direct)->tensors()[i];
      CAPTURE(a.name);
      CHECK(a.name == b.name);
      CHECK(a.type == b.type);
      CHECK(a.ne == b.ne);
      REQUIRE(a.n_bytes == b.n_bytes);
      CHECK(std::memcmp(a.data, b.data, a.n_bytes) == 0);
      matrices += a.ne.size() == 2;
    }
    CHECK(rep->quantized == matrices);
    CHECK(rep->kept == (*q)->tensors().size() - matrices);
    CHECK(rep->bytes_out < rep->bytes_in);
    // Every pair but the two the quantizer writes is copied unchanged.
    CHECK((*q)->get_uint("general.file_type").value() == (type == 8 ? 7u : 2u));
    CHECK((*q)->get_uint("general.quantization_version").value() == 2u);
    for (const auto& kv : (*in)->metadata()) {
      if (kv.key == "general.file_type")
        continue;
      CAPTURE(kv.key);
      const gguf_kv* c = (*q)->find(kv.key);
      REQUIRE(c);
      CHECK(c->type == kv.type);
      CHECK(c->count == kv.count);
      CHECK(c->strings == kv.strings);
    }
    CHECK(model::load(out));
  }
  // A quantized input is refused (requantizing compounds the error), and so
  // is a type the quantizer does not write; neither leaves a file behind.
  const auto q8 = temp_path("quantize-q8.gguf");
  REQUIRE(write_random_model(tiny(8), q8));
  const auto none = temp_path("quantize-none.gguf");
  std::filesystem::remove(none);
  auto again = quantize_model(q8, none, 2);
  REQUIRE_FALSE(again);
  CHECK(again.err().message.find("already Q8_0") != std::string::npos);
  auto k = quantize_model(src, none, 12);
  REQUIRE_FALSE(k);
  CHECK(k.err().context == "type");
  CHECK_FALSE(quantize_model(temp_path("missing.gguf"), none, 8));
  CHECK(quantize_model(src, none, 8, 12).err().context == "output_type");
  // output.weight in its own type (llama-quantize's --output-tensor-type).
  const auto mixed = temp_path("quantize-mixed.gguf");
  REQUIRE(quantize_model(src, mixed, 8, 1));
  auto mf = gguf_file::open(mixed);
  REQUIRE(mf);
  CHECK((*mf)->tensor("output.weight")->type == 1u);
  CHECK((*mf)->tensor("blk.0.attn_q.weight")->type == 8u);
  CHECK((*mf)->tensor("token_embd.weight")->type == 8u);
  CHECK(model::load(mixed));
  CHECK_FALSE(std::filesystem::exists(none));
}
