/// @file Prefill and decode throughput of the engine on one GGUF file,
/// measured the way llama.cpp's llama-bench measures them, so that
/// bench/engine.sh can put the two side by side:
///   pp<N>  one forward pass over N prompt tokens in a fresh KV cache, logits
///          of the last token only (llama-bench test_prompt with n_ubatch ≥ N);
///          tokens/s = N / time.
///   tg<N>  N single-token forward passes from an empty KV cache, logits of
///          every token, no sampling (llama-bench test_gen: random token ids);
///          tokens/s = N / time.
/// One warm-up run of each test precedes the timed repetitions (llama-bench
/// does the same). KV cache F16, the engine's and llama.cpp's default.
///
/// Output: one JSON object per line and repetition:
///   {"engine":"shoal","model":"<file name>","weights":"Q4_0","threads":2,
///    "test":"pp512","n_tokens":512,"seconds":0.0123,"tokens_per_s":41626.0}
/// Errors (unreadable model, bad option) go to stderr with exit code 1.
#include "engine/model.hpp"
#include "kernels/parallel.hpp"

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <random>
#include <vector>

using namespace shoal;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"Engine prefill/decode throughput on a GGUF file (JSON lines)"};
  std::string path;
  uint32_t threads = 1, n_prompt = 512, n_gen = 128, reps = 5;
  app.add_option("model", path, "GGUF file")->required();
  app.add_option("-t,--threads", threads, "Threads (the calling one included)")
    ->check(CLI::Range(1u, 256u))
    ->capture_default_str();
  app.add_option("-p,--n-prompt", n_prompt, "Prompt tokens (pp test; 0 = skip)")
    ->capture_default_str();
  app.add_option("-n,--n-gen", n_gen, "Generated tokens (tg test; 0 = skip)")
    ->capture_default_str();
  app.add_option("-r,--repetitions", reps, "Timed repetitions of each test")
    ->check(CLI::Range(1u, 1000u))
    ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  auto m = engine::model::load(path);
  if (!m) {
    std::fprintf(stderr, "engine_bench: %s\n", m.err().message.c_str());
    return 1;
  }
  const auto& hp = (*m)->hparams();
  std::unique_ptr<kernels::thread_pool> pool;
  if (threads > 1)
    pool = std::make_unique<kernels::worker_pool>(threads);
  size_t max_batch = std::max<size_t>(n_prompt, 1);
  engine::context ctx(*m, max_batch, pool.get());
  std::vector<float> logits(hp.n_vocab);
  std::mt19937 rng(42);
  auto random_token = [&] { return int32_t(rng() % hp.n_vocab); };
  const std::string name = std::filesystem::path(path).filename().string();
  const std::string weights((*m)->weight_type_name());

  auto report = [&](const char* test, uint32_t n, double seconds) {
    std::printf("{\"engine\":\"shoal\",\"model\":\"%s\",\"weights\":\"%s\",\"threads\":%u,"
                "\"test\":\"%s%u\",\"n_tokens\":%u,\"seconds\":%.9f,\"tokens_per_s\":%.3f}\n",
                name.c_str(), weights.c_str(), threads, test, n, n, seconds, n / seconds);
    std::fflush(stdout);
  };
  auto fail = [](const core::error& e) {
    std::fprintf(stderr, "engine_bench: %s\n", e.message.c_str());
    return 1;
  };

  if (n_prompt > 0) {
    std::vector<int32_t> prompt(n_prompt);
    for (uint32_t r = 0; r <= reps; ++r) { // r == 0: warm-up
      for (auto& t : prompt)
        t = random_token();
      engine::kv_cache cache(hp, n_prompt + n_gen);
      double t0 = now_s();
      auto ok = ctx.eval(cache, prompt, logits);
      double dt = now_s() - t0;
      if (!ok)
        return fail(ok.err());
      if (r > 0)
        report("pp", n_prompt, dt);
    }
  }
  if (n_gen > 0) {
    for (uint32_t r = 0; r <= reps; ++r) {
      engine::kv_cache cache(hp, n_gen);
      double t0 = now_s();
      for (uint32_t i = 0; i < n_gen; ++i) {
        int32_t token = random_token();
        auto ok = ctx.eval(cache, std::span<const int32_t>(&token, 1), logits);
        if (!ok)
          return fail(ok.err());
      }
      double dt = now_s() - t0;
      if (r > 0)
        report("tg", n_gen, dt);
    }
  }
  return 0;
}
