#include "engine/scheduler.hpp"

#include "engine/model_writer.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>

using namespace shoal;
using namespace shoal::engine;

namespace {

/// The "tiny" random-weight model and its tokenizer.
struct tiny_model {
  std::shared_ptr<const model> m;
  std::shared_ptr<const tokenizer> tok;
  tiny_model() {
    auto dir = std::filesystem::temp_directory_path()
               / ("shoal-scheduler-" + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(dir);
    auto path = (dir / "tiny.gguf").string();
    REQUIRE(write_random_model(*random_model_preset("tiny"), path));
    auto loaded = model::load(path);
    REQUIRE(loaded);
    m = *loaded;
    auto t = tokenizer::from_gguf(m->file());
    REQUIRE(t);
    tok = std::make_shared<const tokenizer>(std::move(*t));
    std::filesystem::remove_all(dir);
  }
};

generation_request greedy(std::string prompt, uint32_t max_tokens) {
  generation_request r;
  r.prompt = std::move(prompt);
  r.sampling.temperature = 0;
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  return r;
}

/// Steps until idle; the token ids each sequence sampled, and its last event.
struct run_result {
  std::map<uint64_t, std::vector<int32_t>> tokens;
  std::map<uint64_t, sequence_event> last;
  std::map<uint64_t, std::vector<token_report>> prompt_logprobs;
  size_t steps = 0;
};

run_result run(scheduler& s) {
  run_result out;
  while (!s.idle() && out.steps < 10000) {
    ++out.steps;
    for (auto& e : s.step()) {
      if (e.token)
        out.tokens[e.id].push_back(e.token->id);
      if (!e.prompt_logprobs.empty())
        out.prompt_logprobs[e.id] = e.prompt_logprobs;
      out.last[e.id] = e;
    }
  }
  return out;
}

const char* prompts[] = {"the quick brown fox", "a library for parsing",
                         "GNU C compiler for embedded targets"};

} // namespace

TEST_CASE("scheduler: sequences beyond max_sequences wait, all finish with max_tokens") {
  tiny_model t;
  scheduler_config cfg;
  cfg.n_ctx = 128;
  cfg.max_sequences = 2;
  scheduler s(t.m, t.tok, cfg, nullptr);
  for (uint64_t id = 0; id < 3; ++id)
    REQUIRE(s.submit(id, greedy(prompts[id], 6)).ok());
  CHECK(s.n_waiting() + s.n_running() == 3);
  s.step();
  CHECK(s.n_running() == 2);
  CHECK(s.n_waiting() == 1);
  auto r = run(s);
  for (uint64_t id = 0; id < 3; ++id) {
    CAPTURE(id);
    CHECK(r.last[id].finish == finish_reason::length);
    CHECK(r.last[id].completion_tokens == 6);
    CHECK_FALSE(r.last[id].error);
  }
  CHECK(s.stats().generated_tokens == 18);
}

TEST_CASE("scheduler: a greedy sequence writes the same tokens alone and in a batch") {
  tiny_model t;
  scheduler_config cfg;
  cfg.n_ctx = 128;
  std::vector<std::vector<int32_t>> alone;
  for (uint64_t id = 0; id < 3; ++id) {
    scheduler s(t.m, t.tok, cfg, nullptr);
    REQUIRE(s.submit(id, greedy(prompts[id], 8)).ok());
    alone.push_back(run(s).tokens[id]);
  }
  scheduler batched(t.m, t.tok, cfg, nullptr);
  for (uint64_t id = 0; id < 3; ++id)
    REQUIRE(batched.submit(id, greedy(prompts[id], 8)).ok());
  auto r = run(batched);
  for (uint64_t id = 0; id < 3; ++id) {
    CAPTURE(id);
    REQUIRE(r.tokens[id].size() == 8);
    CHECK(r.tokens[id] == alone[id]);
  }
}

TEST_CASE("scheduler: bad requests are refused with the reason and nothing is queued") {
  tiny_model t;
  scheduler_config cfg;
  cfg.n_ctx = 32;
  scheduler s(t.m, t.tok, cfg, nullptr);
  auto no_tokens = greedy("", 4);
  no_tokens.add_special = false; // no BOS either: nothing to prefill
  auto empty = s.submit(1, no_tokens);
  REQUIRE_FALSE(empty.ok());
  CHECK(empty.err().code == errc::invalid_argument);
  std::string long_prompt;
  for (int i = 0; i < 40; ++i)
    long_prompt += "word ";
  auto too_long = s.submit(2, greedy(long_prompt, 4));
  REQUIRE_FALSE(too_long.ok());
  CHECK(too_long.err().code == errc::invalid_argument);
  auto hot = greedy("hello", 4);
  hot.sampling.temperature = 5;
  CHECK_FALSE(s.submit(3, hot).ok());
  CHECK(s.idle());
}

TEST_CASE("scheduler: a cancelled sequence stops, the others go on") {
  tiny_model t;
  scheduler_config cfg;
  cfg.n_ctx = 128;
  scheduler s(t.m, t.tok, cfg, nullptr);
  REQUIRE(s.submit(1, greedy(prompts[0], 20)).ok());
  REQUIRE(s.submit(2, greedy(prompts[1], 20)).ok());
  s.step();
  s.step();
  CHECK(s.cancel(1));
  CHECK_FALSE(s.cancel(1));
  CHECK_FALSE(s.cancel(99));
  auto r = run(s);
  CHECK(r.last.count(1) == 0);
  CHECK(r.last[2].completion_tokens == 20);
}

TEST_CASE("scheduler: a repeated prompt takes its full pages from the prefix cache") {
  tiny_model t;
  scheduler_config cfg;
  cfg.n_ctx = 256;
  scheduler s(t.m, t.tok, cfg, nullptr);
  std::string prompt;
  for (int i = 0; i < 12; ++i)
    prompt += "the same long prompt ";
  REQUIRE(s.submit(1, greedy(prompt, 2)).ok());
  auto first = run(s);
  CHECK(first.last[1].cached_tokens == 0);
  REQUIRE(s.submit(2, greedy(prompt, 2)).ok());
  auto second = run(s);
  CHECK(second.last[2].cached_tokens > 0);
  CHECK(second.last[2].cached_tokens < second.last[2].prompt_tokens);
  CHECK(second.tokens[2] == first.tokens[1]); // same prompt, same greedy answer
}

namespace {

/// log-softmax of every prompt position through context::eval (all logits),
/// in double: ref[t] = log p(prompt[t] | prompt[<t]) for t >= 1.
std::vector<double> reference_logprobs(const tiny_model& t, const std::vector<int32_t>& prompt) {
  const size_t V = t.m->hparams().n_vocab;
  kv_cache cache(t.m->hparams(), prompt.size() + 1);
  context ctx(t.m, prompt.size(), nullptr);
  std::vector<float> logits(prompt.size() * V);
  REQUIRE(ctx.eval(cache, prompt, logits, true));
  std::vector<double> ref(prompt.size(), 0.0);
  for (size_t p = 0; p + 1 < prompt.size(); ++p) {
    const float* l = &logits[p * V];
    double mx = *std::max_element(l, l + V), sum = 0;
    for (size_t i = 0; i < V; ++i)
      sum += std::exp(static_cast<double>(l[i]) - mx);
    ref[p + 1] = static_cast<double>(l[prompt[p + 1]]) - mx - std::log(sum);
  }
  return ref;
}

} // namespace

TEST_CASE("scheduler: prompt logprobs equal the model's log-softmax at every prompt position") {
  tiny_model t;
  const std::string text = "a library for parsing GNU C compiler output on embedded targets";
  const auto prompt = t.tok->encode(text, true, true);
  REQUIRE(prompt.size() > 8);
  const auto ref = reference_logprobs(t, prompt);
  for (uint32_t max_batch : {256u, 3u}) { // one chunk, and chunked prefill
    CAPTURE(max_batch);
    scheduler_config cfg;
    cfg.n_ctx = 128;
    cfg.max_batch = max_batch;
    scheduler s(t.m, t.tok, cfg, nullptr);
    auto req = greedy(text, 4);
    req.prompt_logprobs = true;
    req.sampling.n_logprobs = 3;
    REQUIRE(s.submit(1, req).ok());
    REQUIRE(s.submit(2, greedy(text, 4)).ok()); // the same without prompt logprobs
    auto r = run(s);
    REQUIRE(r.prompt_logprobs[1].size() == prompt.size());
    CHECK(r.prompt_logprobs.count(2) == 0);
    const auto& rep = r.prompt_logprobs[1];
    CHECK(std::isnan(rep[0].logprob));
    CHECK(rep[0].top_logprobs.empty());
    for (size_t i = 1; i < prompt.size(); ++i) {
      CAPTURE(i);
      CHECK(rep[i].id == prompt[i]);
      CHECK(rep[i].piece == t.tok->token_to_piece(prompt[i]));
      CHECK(rep[i].logprob == doctest::Approx(ref[i]).epsilon(1e-4));
      REQUIRE(rep[i].top_logprobs.size() == 3);
      CHECK(rep[i].top_logprobs[0].second >= rep[i].logprob - 1e-6f);
    }
    CHECK(r.tokens[1] == r.tokens[2]); // scoring the prompt leaves generation alone
    CHECK(r.last[1].cached_tokens == 0);
  }
}

TEST_CASE("scheduler: a prompt-only request generates nothing and may fill the whole context") {
  tiny_model t;
  scheduler_config cfg;
  cfg.n_ctx = 16;
  scheduler s(t.m, t.tok, cfg, nullptr);
  std::string text;
  std::vector<int32_t> prompt;
  const std::string source = "the quick brown fox jumps over the lazy dog and keeps running";
  for (char c : source) { // grow a character at a time to exactly n_ctx tokens
    text += c;
    prompt = t.tok->encode(text, true, true);
    if (prompt.size() >= cfg.n_ctx)
      break;
  }
  REQUIRE(prompt.size() == cfg.n_ctx);
  auto req = greedy(text, 0);
  req.prompt_only = true;
  req.prompt_logprobs = true;
  REQUIRE(s.submit(1, req).ok());
  CHECK_FALSE(s.submit(2, greedy(text, 0)).ok()); // generating needs room for one more
  auto r = run(s);
  CHECK(r.tokens.count(1) == 0);
  CHECK(r.last[1].finish == finish_reason::length);
  CHECK(r.last[1].completion_tokens == 0);
  CHECK(r.last[1].prompt_tokens == cfg.n_ctx);
  CHECK(r.prompt_logprobs[1].size() == cfg.n_ctx);
  CHECK(s.stats().generated_tokens == 0);
  CHECK(s.stats().prompt_tokens == cfg.n_ctx);
  CHECK(s.idle());
}
