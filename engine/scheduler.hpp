#pragma once
/// @file Continuous batching for one model: sequences join and leave between
/// steps; each step runs ONE forward pass over a batch holding the next
/// token of every decoding sequence plus chunks of the prompts still being
/// prefilled (Orca's iteration-level scheduling, Yu et al. OSDI 2022; vLLM's
/// chunked prefill), then samples one token for each sequence whose prompt
/// is done.
///
/// Thread-safety: a scheduler belongs to one thread (the tier's engine
/// actor). The model and tokenizer are shared read-only.

#include "engine/model.hpp"
#include "engine/sampler.hpp"
#include "engine/tokenizer.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace shoal::engine {

/// What a client asks one sequence to do.
struct generation_request {
  /// Prompt text, already rendered by a chat template if any.
  std::string prompt;
  /// Tokenize with the model's BOS/EOS rules (false when the text already
  /// holds them, e.g. a chat template that writes BOS).
  bool add_special = true;
  /// Control tokens written in the prompt text (e.g. "<|im_start|>") are
  /// single tokens. True for chat templates; OpenAI completions too.
  bool parse_special = true;
  sampling_params sampling;
  /// Most tokens to generate; 0 = until the context is full. Default: 16
  /// (OpenAI's completions default).
  uint32_t max_tokens = 16;
  /// Generate nothing: prefill the prompt, report it (and its logprobs when
  /// `prompt_logprobs`) and finish with finish_reason::length (OpenAI
  /// completions' max_tokens 0, as lm-evaluation-harness scores text).
  bool prompt_only = false;
  /// Report every prompt token's log-probability given the tokens before it
  /// (and `sampling.n_logprobs` alternatives) in the sequence's first event.
  /// Such a sequence computes logits at every prompt position and does not
  /// take its prompt from the prefix cache.
  bool prompt_logprobs = false;
  std::vector<std::string> stop;
  /// Keep going after an end-of-generation token (benchmarks).
  bool ignore_eos = false;
  /// Part of a session: its KV pages are evicted after other cached pages.
  bool important = false;
};

/// Why a sequence ended (OpenAI finish_reason).
enum class finish_reason : uint8_t { none, stop, length };
const char* to_string(finish_reason r) noexcept;

/// One sampled token as reported to the client.
struct token_report {
  int32_t id = 0;
  std::string piece; ///< the token's bytes (for logprobs "token")
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top_logprobs;
};

/// What one step produced for one sequence.
struct sequence_event {
  uint64_t id = 0;                   ///< the sequence
  std::string text;                  ///< newly complete text (may be empty)
  std::optional<token_report> token; ///< the sampled token (absent on errors)
  finish_reason finish = finish_reason::none;
  core::error error; ///< set (code != ok): the sequence failed and is gone
  uint32_t prompt_tokens = 0, completion_tokens = 0;
  /// Prompt tokens whose KV came from the prefix cache (not prefilled).
  uint32_t cached_tokens = 0;
  /// With generation_request::prompt_logprobs, in the sequence's first
  /// event: one report per prompt token, in order (special tokens such as
  /// BOS included). The first token has no context: its logprob is NaN and
  /// it has no alternatives.
  std::vector<token_report> prompt_logprobs;
};

/// Scheduler limits.
struct scheduler_config {
  /// Context (KV-cache tokens) per sequence. Default: 2048.
  uint32_t n_ctx = 2048;
  /// Most tokens per forward pass (decode tokens + prefill chunks). Default: 256.
  uint32_t max_batch = 256;
  /// Most sequences running at once; more wait in the queue. Default: 16.
  uint32_t max_sequences = 16;
  /// Paging, tiers and prefix caching of the sequences' KV caches.
  kv_tier_config kv;
};

class scheduler {
public:
  /// @param pool threads for the forward pass (nullptr: the calling thread).
  /// @param budget the node's byte budget the KV pages are reserved from
  ///        (nullptr: unlimited).
  scheduler(std::shared_ptr<const model> m, std::shared_ptr<const tokenizer> tok,
            scheduler_config cfg, kernels::thread_pool* pool,
            std::shared_ptr<core::memory_budget> budget = nullptr);
  ~scheduler();
  scheduler(const scheduler&) = delete;
  scheduler& operator=(const scheduler&) = delete;

  /// Validates and tokenizes a request and queues it. Errors (nothing is
  /// queued): bad sampling parameters or stop strings, an empty prompt, a
  /// prompt (plus max_tokens when given) longer than the context — the text
  /// says which, with the numbers. Returns the prompt's token count.
  core::result<uint32_t> submit(uint64_t id, const generation_request& req);

  /// Embedding of a text: the model's final normalized hidden states, mean
  /// over the text's tokens, L2-normalized ([n_embd]). Runs at once (between
  /// steps) in a scratch KV cache. Errors: empty text, longer than the context.
  core::result<std::vector<float>> embed(std::string_view text);

  /// Drops a sequence (client gone): releases its KV pages (full pages stay
  /// cached for prefix hits until the budget needs them). False if unknown.
  bool cancel(uint64_t id);

  /// Runs one forward pass if any sequence has work; returns the events of
  /// this step (one per sequence that sampled a token, finished or failed).
  std::vector<sequence_event> step();

  /// Sequences admitted (running) and waiting.
  size_t n_running() const noexcept { return running_.size(); }
  size_t n_waiting() const noexcept { return waiting_.size(); }
  bool idle() const noexcept { return running_.empty() && waiting_.empty(); }

  const model& get_model() const noexcept { return *model_; }
  const tokenizer& get_tokenizer() const noexcept { return *tok_; }
  const scheduler_config& config() const noexcept { return cfg_; }

  /// Counters since construction.
  struct counters {
    /// prompt_tokens: prefilled; cached_tokens: prompt tokens taken from the prefix cache.
    uint64_t prompt_tokens = 0, cached_tokens = 0, generated_tokens = 0, steps = 0;
    uint64_t batch_tokens = 0;
    uint64_t prefill_ns = 0, decode_ns = 0;
  };
  const counters& stats() const noexcept { return stats_; }
  /// The KV pages (thread-safe snapshot).
  kv_pool_stats kv_stats() const noexcept { return kv_->stats(); }
  /// Evicted prefix pages go to `spill` and come back from it (kv_pool::set_spill).
  void set_spill(std::shared_ptr<kv_spill> spill) { kv_->set_spill(std::move(spill)); }
  /// Frees cached KV pages (kv_pool::trim); returns the bytes freed.
  size_t trim(size_t bytes) { return kv_->trim(bytes); }
  /// The KV tier policy (kv_pool::policy / set_policy).
  engine::kv_policy kv_policy() const noexcept { return kv_->policy(); }
  core::result<engine::kv_policy> set_kv_policy(const engine::kv_policy& p) {
    return kv_->set_policy(p);
  }
  /// True when the last step could not run a sequence (a prefill to start
  /// or a decode to continue) for lack of KV memory: the caller should ask other budget users to free some (the
  /// memory pool) and step again a little later. A sequence still without
  /// memory after `memory_wait_steps` such steps fails with the reason.
  bool memory_stalled() const noexcept { return stalled_; }
  static constexpr uint32_t memory_wait_steps = 200;

private:
  struct sequence;
  void admit();
  std::shared_ptr<const model> model_;
  std::shared_ptr<const tokenizer> tok_;
  scheduler_config cfg_;
  context ctx_;
  std::unique_ptr<kv_pool> kv_; ///< before the sequences: they hold its pages
  bool stalled_ = false;
  std::vector<std::unique_ptr<sequence>> running_, waiting_;
  std::vector<float> logits_;
  counters stats_;
};

} // namespace shoal::engine
