// Shoal's engine on the trained tier models (models/*.gguf), checked against
// SentencePiece and PyTorch: the first check of the engine on weights that
// are not random. The reference side is tests/models/reference.py (a CTest
// fixture, run before these tests) which writes SHOAL_MODEL_REFS.
#include "engine/model.hpp"
#include "engine/tokenizer.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

using namespace shoal;
using namespace shoal::engine;
using json = nlohmann::json;

namespace {

const std::filesystem::path models_dir = std::filesystem::path(SHOAL_SOURCE_DIR) / "models";
const std::filesystem::path refs_dir = SHOAL_MODEL_REFS;

std::vector<json> read_jsonl(const std::filesystem::path& p) {
  std::ifstream in(p);
  REQUIRE_MESSAGE(in, "missing " << p.string() << " (tests/models/reference.py writes it)");
  std::vector<json> out;
  for (std::string line; std::getline(in, line);)
    out.push_back(json::parse(line));
  return out;
}

template <class T>
std::vector<T> read_binary(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE_MESSAGE(in, "missing " << p.string() << " (tests/models/reference.py writes it)");
  in.seekg(0, std::ios::end);
  std::vector<T> out(static_cast<size_t>(in.tellg()) / sizeof(T));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(out.data()),
          static_cast<std::streamsize>(out.size() * sizeof(T)));
  return out;
}

/// The manifest's models: (tier, file) for one type.
std::vector<std::pair<std::string, std::string>> models_of_type(const std::string& type) {
  std::ifstream in(models_dir / "manifest.json");
  REQUIRE(in);
  auto m = json::parse(in);
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& e : m["models"])
    if (e["type"] == type)
      out.emplace_back(e["tier"].get<std::string>(), e["file"].get<std::string>());
  REQUIRE_FALSE(out.empty());
  return out;
}

std::shared_ptr<const model> load(const std::string& file) {
  auto m = model::load((models_dir / file).string());
  REQUIRE_MESSAGE(m, (m ? "" : m.err().message));
  return *m;
}

/// Shoal's logits at every position of `ids` (cut to the model's context),
/// with the KV cache in `kv` (the node's default: F16).
std::vector<float> logits_of(const std::shared_ptr<const model>& m, std::vector<int32_t> ids,
                             kernels::kv_type kv = kernels::kv_type::f16) {
  ids.resize(std::min<size_t>(ids.size(), m->hparams().n_ctx_train));
  const size_t V = m->hparams().n_vocab;
  kv_cache cache(m->hparams(), ids.size(), kv);
  context ctx(m, ids.size(), nullptr);
  std::vector<float> out(ids.size() * V);
  auto r = ctx.eval(cache, ids, out, true);
  REQUIRE_MESSAGE(r, (r ? "" : r.err().message));
  return out;
}

std::vector<int32_t> ids_of(const json& j) {
  return j["ids"].get<std::vector<int32_t>>();
}

} // namespace

TEST_CASE("trained models: Shoal's tokenizer gives SentencePiece's ids on every evaluation "
          "prompt and reference") {
  const auto texts = read_jsonl(refs_dir / "tokens.jsonl");
  REQUIRE(texts.size() >= 1000);
  std::vector<std::string> vocab;
  for (const auto& [tier, file] : models_of_type("f16")) {
    CAPTURE(file);
    auto m = load(file);
    auto tok = tokenizer::from_gguf(m->file());
    REQUIRE(tok);
    // Every tier carries the one vocabulary (models/tokenizer.model).
    std::vector<std::string> pieces;
    for (int32_t i = 0; i < tok->n_vocab(); ++i)
      pieces.emplace_back(tok->token_text(i));
    if (vocab.empty())
      vocab = pieces;
    CHECK(pieces == vocab);
  }
  auto tok = tokenizer::from_gguf(load(models_of_type("f16")[0].second)->file());
  REQUIRE(tok);
  size_t mismatched = 0;
  for (const auto& t : texts) {
    const auto text = t["text"].get<std::string>();
    const auto ours = tok->encode(text, false, false);
    if (ours != ids_of(t) && ++mismatched <= 5)
      CHECK_MESSAGE(false, "ids differ for: " << text);
  }
  CHECK(mismatched == 0);
  MESSAGE(texts.size() << " texts, " << mismatched << " tokenized differently");
  // The training documents (ChatML, split at its symbols) tokenize alike too.
  for (const auto& p : read_jsonl(refs_dir / "prompts.jsonl")) {
    CAPTURE(p["text"].get<std::string>());
    CHECK(tok->encode(p["text"].get<std::string>(), true, true) == ids_of(p));
  }
}

TEST_CASE("trained models: F16 logits match PyTorch's within 1e-3 of the largest logit (F32 KV "
          "cache)") {
  const auto prompts = read_jsonl(refs_dir / "prompts.jsonl");
  // With an F32 KV cache the difference is the engine's; with the served
  // F16 cache, how much more the cache's rounding adds.
  for (const auto& [tier, file] : models_of_type("f16"))
    for (auto kv : {kernels::kv_type::f16, kernels::kv_type::f32}) {
      CAPTURE(file);
      const std::string kv_name = kernels::to_string(kv);
      CAPTURE(kv_name);
      auto m = load(file);
      const size_t V = m->hparams().n_vocab;
      const auto ref = read_binary<float>(refs_dir / (tier + ".logits.f32"));
      size_t at = 0, positions = 0;
      double worst = 0;
      for (size_t i = 0; at < ref.size(); ++i) {
        REQUIRE(i < prompts.size());
        const auto ours = logits_of(m, ids_of(prompts[i]), kv);
        REQUIRE(at + ours.size() <= ref.size());
        for (size_t p = 0; p < ours.size() / V; ++p, ++positions) {
          const float* a = &ours[p * V];
          const float* b = &ref[at + p * V];
          double largest = 0, diff = 0;
          for (size_t k = 0; k < V; ++k) {
            largest = std::max(largest, std::fabs(static_cast<double>(b[k])));
            diff = std::max(diff, std::fabs(static_cast<double>(a[k]) - b[k]));
          }
          worst = std::max(worst, diff / largest);
        }
        at += ours.size();
      }
      MESSAGE(tier << " (KV " << std::string(kernels::to_string(kv)) << "): " << positions
                   << " positions, max |Δ| / max |logit| = " << worst);
      // The engine's arithmetic on F16 weights (F32 cache): within 1e-3. The
      // node's default F16 cache also rounds K and V to 11 significant bits
      // (relative 4.9e-4 each), which the layers carry: within 5e-3.
      CHECK(worst <= (kv == kernels::kv_type::f32 ? 1e-3 : 5e-3));
    }
}

TEST_CASE("trained models: Q8_0 argmax agrees with PyTorch's at >= 99% of positions") {
  const auto prompts = read_jsonl(refs_dir / "prompts.jsonl");
  for (const auto& [tier, file] : models_of_type("q8_0")) {
    CAPTURE(file);
    auto m = load(file);
    CHECK(m->weight_type_name() == "Q8_0");
    const size_t V = m->hparams().n_vocab;
    const auto ref = read_binary<int32_t>(refs_dir / (tier + ".argmax.i32"));
    size_t at = 0, agree = 0;
    for (const auto& p : prompts) {
      const auto ours = logits_of(m, ids_of(p));
      for (size_t q = 0; q < ours.size() / V; ++q, ++at) {
        REQUIRE(at < ref.size());
        const float* l = &ours[q * V];
        agree += std::max_element(l, l + V) - l == ref[at];
      }
    }
    CHECK(at == ref.size());
    const double share = static_cast<double>(agree) / static_cast<double>(at);
    MESSAGE(tier << " Q8_0: argmax agrees at " << agree << " of " << at << " positions ("
                 << share * 100 << "%)");
    CHECK(share >= 0.99);
  }
}
