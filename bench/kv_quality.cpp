/// @file Quality of the KV cache stores (issue 6): how far the next-token
/// distributions move when the KV cache is kept in F16, Q8_0 or Q4_0, or in
/// the two-tier default, measured against an F32 KV cache on one generated
/// model and one long prompt. bench/kv_quality.sh runs this next to
/// llama.cpp's KV cache types on the same file and prompt.
///
/// Metric, per prompt position t: KL(P_ref,t || P_var,t) in nats, P = softmax
/// of the logits (computed in double), and whether the argmax agrees
/// (top-1). Summaries over positions: mean, median and p99 (nearest rank:
/// the ⌈0.99·n⌉-th smallest), max, top-1 agreement as a share of positions.
///
/// Subcommands (all output on stdout, errors on stderr with exit code 1):
///   write-model OUT.gguf   the generated model: llama, vocab 32000, n_embd
///                          512, 8 heads of head_dim 64 (quantized KV needs
///                          head_dim % 32 == 0), 8 layers, n_ff 1376, F16
///                          weights, context 4096, seed 20240601
///   prompt [-n N]          the prompt as comma-separated ids: N
///                          pseudo-random ids in [300, 32000) (fixed seed;
///                          no specials, no byte tokens)
///   ours MODEL [-n N] [--step S] [--dump-ref F]
///                          our engine over the prompt with each store; one
///                          JSON line per store (F32 reference first)
///   compare REF VAR --kv NAME [--engine NAME]
///                          two raw logit files ([n][n_vocab] little-endian
///                          f32, as tests/peer/llama_logits.mjs writes them);
///                          one JSON line
/// JSON line: {"engine":"shoal","kv":"Q8_0","n":1024,"kl_mean":…,
///   "kl_median":…,"kl_p99":…,"kl_max":…,"top1":0.998,
///   "bytes_per_token":…,"bytes_per_token_avg":…,"entropy_mean":…}
/// entropy_mean is the reference distribution's mean entropy (nats), for
/// scale: ln(32000) = 10.37 is a uniform distribution.
///
/// Our stores (`ours`): F32 (standalone kv_cache, the reference), F16
/// (standalone), Q8_0 and Q4_0 (a kv_pool with recent_tokens 0 and
/// migrate_pages 1: every full page is quantized, the newest, not yet full
/// page stays F16) and the two-tier default (kv_tier_config's defaults:
/// newest 256 tokens F16, older pages Q8_0, migrated 4 pages at a time). The
/// prompt is evaluated one page (16 tokens) per step with migrate() after
/// each step, as the scheduler does. Migration only becomes possible at page
/// boundaries, so this gives the logits that token-by-token evaluation
/// (--step 1) gives while costing 16 times fewer weight passes. Every store
/// uses the same steps, so the stores differ only in what the KV cache holds.
/// bytes_per_token: page_bytes / page_tokens of the store's (old) tier, all
/// layers, K and V; bytes_per_token_avg: the cache's bytes / n after the prompt.
#include "engine/model.hpp"
#include "engine/model_writer.hpp"
#include "kernels/parallel.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

using namespace shoal;
using kernels::kv_type;

namespace {

constexpr uint32_t n_vocab = 32000;
constexpr int32_t first_prompt_id = 300; ///< past <unk>, <s>, </s>, bytes, ChatML

engine::random_model_spec model_spec() {
  engine::random_model_spec s;
  s.name = "shoal-kv-quality";
  s.n_vocab = n_vocab;
  s.n_embd = 512;
  s.n_layer = 8;
  s.n_ff = 1376;
  s.n_head = s.n_head_kv = 8;
  s.n_ctx = 4096;
  s.weight_type = 1; // F16
  s.seed = 20240601;
  return s;
}

std::vector<int32_t> make_prompt(size_t n) {
  std::mt19937 rng(6);
  std::vector<int32_t> t(n);
  for (auto& id : t)
    id = first_prompt_id + static_cast<int32_t>(rng() % (n_vocab - first_prompt_id));
  return t;
}

/// KL(P_ref || P_var) and top-1 agreement, accumulated position by position.
/// Each position's logits are n_vocab floats; softmax in double.
class kl_meter {
public:
  explicit kl_meter(size_t n_vocab) : n_vocab_(n_vocab) {}

  /// Adds one position: `ref` and `var` are its [n_vocab] logits.
  void add(const float* ref, const float* var) {
    const double lse_r = log_sum_exp(ref), lse_v = log_sum_exp(var);
    double kl = 0, entropy = 0;
    for (size_t i = 0; i < n_vocab_; ++i) {
      const double lp = ref[i] - lse_r, lq = var[i] - lse_v, p = std::exp(lp);
      kl += p * (lp - lq);
      entropy -= p * lp;
    }
    kl_.push_back(std::max(kl, 0.0)); // rounding can leave -1e-17
    entropy_sum_ += entropy;
    agree_ +=
      std::max_element(ref, ref + n_vocab_) - ref == std::max_element(var, var + n_vocab_) - var;
  }

  /// One JSON line (see the file comment); bytes < 0: left out.
  void print(const char* engine, const std::string& kv, double bytes_per_token = -1,
             double bytes_per_token_avg = -1) const {
    auto sorted = kl_;
    std::sort(sorted.begin(), sorted.end());
    const size_t n = sorted.size();
    auto rank = [&](double q) { return sorted[std::max<size_t>(1, size_t(std::ceil(q * n))) - 1]; };
    double sum = 0;
    for (double v : sorted)
      sum += v;
    std::printf("{\"engine\":\"%s\",\"kv\":\"%s\",\"n\":%zu,\"kl_mean\":%.6e,\"kl_median\":%.6e,"
                "\"kl_p99\":%.6e,\"kl_max\":%.6e,\"top1\":%.6f,\"entropy_mean\":%.4f",
                engine, kv.c_str(), n, sum / n, rank(0.5), rank(0.99), sorted.back(),
                double(agree_) / n, entropy_sum_ / n);
    if (bytes_per_token >= 0)
      std::printf(",\"bytes_per_token\":%.1f,\"bytes_per_token_avg\":%.1f", bytes_per_token,
                  bytes_per_token_avg);
    std::printf("}\n");
    std::fflush(stdout);
  }

private:
  double log_sum_exp(const float* x) const {
    const double m = *std::max_element(x, x + n_vocab_);
    double s = 0;
    for (size_t i = 0; i < n_vocab_; ++i)
      s += std::exp(x[i] - m);
    return m + std::log(s);
  }

  size_t n_vocab_;
  std::vector<double> kl_;
  double entropy_sum_ = 0;
  size_t agree_ = 0;
};

int fail(const std::string& what) {
  std::fprintf(stderr, "kv_quality: %s\n", what.c_str());
  return 1;
}

/// Reads a raw logit file of `n_vocab`-float rows; nullopt (with `why`) when
/// unreadable, empty or not a whole number of rows.
std::optional<std::vector<float>> read_logits(const std::string& path, size_t n_vocab,
                                              std::string& why) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) {
    why = "cannot open " + path;
    return std::nullopt;
  }
  const auto bytes = static_cast<size_t>(in.tellg());
  const size_t row = n_vocab * sizeof(float);
  if (bytes == 0 || bytes % row != 0) {
    why = path + ": " + std::to_string(bytes) + " bytes is not a whole number of "
          + std::to_string(n_vocab) + "-float rows";
    return std::nullopt;
  }
  std::vector<float> v(bytes / sizeof(float));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(bytes));
  if (!in) {
    why = "cannot read " + path;
    return std::nullopt;
  }
  return v;
}

/// One store of ours: a standalone cache of `type` (one tier, no
/// migration), or, when `tiers` is set, a cache over a kv_pool with it.
struct store {
  std::string name;
  kv_type type = kv_type::f16;
  std::optional<engine::kv_tier_config> tiers;
};

/// Runs the prompt through `cache` one page per step, migrating after each;
/// writes [n][n_vocab] logits to `out`.
core::result<bool> run_prompt(engine::context& ctx, engine::kv_cache& cache,
                              const std::vector<int32_t>& prompt, size_t step,
                              std::vector<float>& out) {
  const size_t nv = ctx.get_model().hparams().n_vocab;
  out.resize(prompt.size() * nv);
  for (size_t t = 0; t < prompt.size(); t += step) {
    const size_t n = std::min(step, prompt.size() - t);
    auto ok = ctx.eval(cache, std::span(prompt).subspan(t, n),
                       std::span(out).subspan(t * nv, n * nv), true);
    if (!ok)
      return ok;
    cache.migrate();
  }
  return true;
}

int run_ours(const std::string& path, size_t n, size_t step, uint32_t threads,
             const std::string& dump_ref) {
  auto m = engine::model::load(path);
  if (!m)
    return fail(m.err().message);
  const auto& hp = (*m)->hparams();
  if (hp.n_vocab != n_vocab)
    return fail(path + ": vocabulary of " + std::to_string(hp.n_vocab) + " tokens, expected "
                + std::to_string(n_vocab) + " (write the model with write-model)");
  if (hp.head_dim % 32 != 0)
    return fail(path + ": head_dim " + std::to_string(hp.head_dim)
                + " is not a multiple of 32; quantized KV stores would fall back to F16");
  std::unique_ptr<kernels::thread_pool> pool;
  if (threads > 1)
    pool = std::make_unique<kernels::worker_pool>(threads);
  const engine::kv_tier_config defaults;
  if (step == 0)
    step = defaults.page_tokens;
  engine::context ctx(*m, step, pool.get());
  const auto prompt = make_prompt(n);

  auto quantized = [](kv_type t) {
    engine::kv_tier_config c;
    c.recent_tokens = 0;
    c.migrate_pages = 1;
    c.old_k_type = c.old_v_type = t;
    c.prefix_caching = false;
    return c;
  };
  const std::vector<store> stores = {
    {"F32", kv_type::f32, std::nullopt},
    {"F16", kv_type::f16, std::nullopt},
    {"Q8_0", kv_type::f16, quantized(kv_type::q8_0)},
    {"Q4_0", kv_type::f16, quantized(kv_type::q4_0)},
    {"two-tier", kv_type::f16, defaults},
  };

  std::vector<float> ref, got; // [n][n_vocab] logits: the F32 store's, the current store's
  for (size_t i = 0; i < stores.size(); ++i) {
    const store& s = stores[i];
    std::unique_ptr<engine::kv_pool> kv_pool;
    std::unique_ptr<engine::kv_cache> cache;
    if (s.tiers) {
      kv_pool = std::make_unique<engine::kv_pool>(hp, *s.tiers, nullptr);
      cache = std::make_unique<engine::kv_cache>(*kv_pool, n);
    } else {
      cache = std::make_unique<engine::kv_cache>(hp, n, s.type);
    }
    auto& logits = i == 0 ? ref : got;
    auto ok = run_prompt(ctx, *cache, prompt, step, logits);
    if (!ok)
      return fail(s.name + ": " + ok.err().message);
    const auto& p = cache->pool();
    const auto& cfg = p.config();
    const bool old = s.tiers.has_value();
    const size_t first_migration = cfg.recent_tokens + size_t{cfg.page_tokens} * cfg.migrate_pages;
    if (old && cache->pages(true) == 0 && n >= first_migration)
      return fail(s.name + ": no page reached the old tier");
    kl_meter meter(n_vocab);
    for (size_t t = 0; t < n; ++t)
      meter.add(&ref[t * n_vocab], &logits[t * n_vocab]);
    meter.print("shoal", s.name, double(p.page_bytes(old)) / cfg.page_tokens,
                double(cache->bytes()) / n);
    if (i == 0 && !dump_ref.empty()) {
      std::ofstream out(dump_ref, std::ios::binary);
      out.write(reinterpret_cast<const char*>(ref.data()),
                static_cast<std::streamsize>(ref.size() * sizeof(float)));
      if (!out)
        return fail("cannot write " + dump_ref);
    }
  }
  return 0;
}

int run_compare(const std::string& ref_path, const std::string& var_path, const std::string& engine,
                const std::string& kv) {
  std::string why;
  auto ref = read_logits(ref_path, n_vocab, why);
  if (!ref)
    return fail(why);
  auto var = read_logits(var_path, n_vocab, why);
  if (!var)
    return fail(why);
  if (ref->size() != var->size())
    return fail(ref_path + " and " + var_path + " hold different numbers of positions ("
                + std::to_string(ref->size() / n_vocab) + " vs "
                + std::to_string(var->size() / n_vocab) + ")");
  kl_meter meter(n_vocab);
  for (size_t t = 0; t < ref->size() / n_vocab; ++t)
    meter.add(&(*ref)[t * n_vocab], &(*var)[t * n_vocab]);
  meter.print(engine.c_str(), kv);
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"KV cache quality: KL divergence of next-token distributions against an F32 KV "
               "cache (JSON lines)"};
  app.require_subcommand(1);
  size_t n = 1024;
  uint32_t threads = 1;
  std::string model_path, out_path, ref_path, var_path, dump_ref, engine_name = "llama.cpp",
                                                                  kv_name;

  auto* write = app.add_subcommand("write-model", "Write the generated model");
  write->add_option("out", out_path, "GGUF file to write")->required();

  auto* prompt = app.add_subcommand("prompt", "Print the prompt's token ids, comma-separated");
  prompt->add_option("-n,--tokens", n, "Prompt tokens")
    ->check(CLI::Range(size_t{16}, size_t{4096}))
    ->capture_default_str();

  auto* ours = app.add_subcommand("ours", "KL of our KV stores against our F32 KV cache");
  ours->add_option("model", model_path, "GGUF file from write-model")->required();
  ours->add_option("-n,--tokens", n, "Prompt tokens")
    ->check(CLI::Range(size_t{16}, size_t{4096}))
    ->capture_default_str();
  ours->add_option("-t,--threads", threads, "Threads (the calling one included)")
    ->check(CLI::Range(1u, 256u))
    ->capture_default_str();
  size_t step = 0;
  ours
    ->add_option("--step", step,
                 "Tokens per eval (0 = one page, 16; 1 = token by token: "
                 "the same logits, 16x the time)")
    ->check(CLI::Range(size_t{0}, size_t{4096}))
    ->capture_default_str();
  ours->add_option("--dump-ref", dump_ref,
                   "Also write the F32-KV logits here (raw f32 [n][n_vocab])");

  auto* compare = app.add_subcommand("compare", "KL of VAR's logits against REF's");
  compare->add_option("ref", ref_path, "Reference logits (raw f32 [n][n_vocab])")->required();
  compare->add_option("var", var_path, "Variant logits, same shape")->required();
  compare->add_option("--engine", engine_name, "Engine name for the JSON line")
    ->capture_default_str();
  compare->add_option("--kv", kv_name, "KV store name for the JSON line")->required();

  CLI11_PARSE(app, argc, argv);

  if (*write) {
    auto ok = engine::write_random_model(model_spec(), out_path);
    return ok ? 0 : fail(ok.err().message);
  }
  if (*prompt) {
    const auto ids = make_prompt(n);
    for (size_t i = 0; i < ids.size(); ++i)
      std::printf(i ? ",%d" : "%d", ids[i]);
    std::printf("\n");
    return 0;
  }
  if (*ours)
    return run_ours(model_path, n, step, threads, dump_ref);
  return run_compare(ref_path, var_path, engine_name, kv_name);
}
