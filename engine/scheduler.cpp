#include "engine/scheduler.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

namespace shoal::engine {

const char* to_string(finish_reason r) noexcept {
  switch (r) {
    case finish_reason::none:
      return "none";
    case finish_reason::stop:
      return "stop";
    case finish_reason::length:
      return "length";
  }
  return "none";
}

struct scheduler::sequence {
  uint64_t id;
  uint32_t max_tokens;
  bool ignore_eos;
  std::vector<int32_t> prompt;
  size_t n_prefilled = 0;
  kv_cache cache;
  sampler smp;
  stop_matcher stops;
  stream_decoder decoder;
  int32_t next = -1; ///< sampled token not yet in the cache
  uint32_t generated = 0;
  int32_t n_logprobs = 0;
  bool prompt_only = false;
  bool prompt_logprobs = false;
  /// With prompt_logprobs: one report per prompt token, filled as the
  /// prefill's logits arrive; moved into the first event.
  std::vector<token_report> prompt_report;

  uint32_t cached = 0;       ///< prompt tokens adopted from the prefix cache
  uint32_t memory_waits = 0; ///< steps this sequence waited for KV memory

  sequence(uint64_t id_, const generation_request& r, std::vector<int32_t> p, kv_pool& pool,
           uint32_t n_ctx, sampler s, stop_matcher st, const tokenizer& tok)
    : id(id_), max_tokens(r.max_tokens), ignore_eos(r.ignore_eos), prompt(std::move(p)),
      cache(pool, n_ctx), smp(std::move(s)), stops(std::move(st)), decoder(tok),
      n_logprobs(r.sampling.n_logprobs), prompt_only(r.prompt_only),
      prompt_logprobs(r.prompt_logprobs) {
    cache.set_important(r.important);
    if (prompt_logprobs) {
      prompt_report.resize(prompt.size());
      prompt_report[0].id = prompt[0];
      prompt_report[0].piece = std::string(tok.token_to_piece(prompt[0]));
      prompt_report[0].logprob = std::numeric_limits<float>::quiet_NaN();
    }
  }

  bool prefilling() const noexcept { return n_prefilled < prompt.size(); }
};

scheduler::scheduler(std::shared_ptr<const model> m, std::shared_ptr<const tokenizer> tok,
                     scheduler_config cfg, kernels::thread_pool* pool,
                     std::shared_ptr<core::memory_budget> budget)
  : model_(std::move(m)), tok_(std::move(tok)), cfg_(cfg), ctx_(model_, cfg.max_batch, pool),
    kv_(std::make_unique<kv_pool>(model_->hparams(), cfg.kv, std::move(budget))) {}

scheduler::~scheduler() = default;

core::result<uint32_t> scheduler::submit(uint64_t id, const generation_request& req) {
  if (auto v = validate(req.sampling); !v)
    return std::move(v).err();
  auto stops = stop_matcher::create(req.stop);
  if (!stops)
    return std::move(stops).err();
  auto smp = sampler::create(req.sampling, static_cast<int32_t>(model_->hparams().n_vocab));
  if (!smp)
    return std::move(smp).err();
  auto prompt = tok_->encode(req.prompt, req.add_special, req.parse_special);
  if (prompt.empty())
    return core::error{errc::invalid_argument, "the prompt is empty"};
  // A prompt-only request needs no room for a next token.
  if (prompt.size() >= cfg_.n_ctx + (req.prompt_only ? 1 : 0))
    return core::error{errc::invalid_argument, "the prompt has " + std::to_string(prompt.size())
                                                 + " tokens, but the model's context holds "
                                                 + std::to_string(cfg_.n_ctx)
                                                 + " (prompt and completion together)"};
  if (!req.prompt_only && req.max_tokens > 0 && prompt.size() + req.max_tokens > cfg_.n_ctx)
    return core::error{errc::invalid_argument,
                       "the prompt has " + std::to_string(prompt.size())
                         + " tokens and max_tokens is " + std::to_string(req.max_tokens)
                         + ": together more than the context of " + std::to_string(cfg_.n_ctx)
                         + " tokens; lower max_tokens or shorten the prompt"};
  auto n = static_cast<uint32_t>(prompt.size());
  waiting_.push_back(std::make_unique<sequence>(id, req, std::move(prompt), *kv_, cfg_.n_ctx,
                                                std::move(*smp), std::move(*stops), *tok_));
  return n;
}

core::result<std::vector<float>> scheduler::embed(std::string_view text) {
  auto toks = tok_->encode(text, true, false);
  if (toks.empty())
    return core::error{errc::invalid_argument, "the input is empty"};
  if (toks.size() > cfg_.n_ctx)
    return core::error{errc::invalid_argument, "the input has " + std::to_string(toks.size())
                                                 + " tokens, more than the model's context of "
                                                 + std::to_string(cfg_.n_ctx)};
  const size_t E = model_->hparams().n_embd;
  kv_cache cache(model_->hparams(), toks.size());
  std::vector<float> hidden, sum(E, 0.0f);
  std::vector<batch_token> batch;
  for (size_t done = 0; done < toks.size();) {
    size_t n = std::min<size_t>(cfg_.max_batch, toks.size() - done);
    batch.clear();
    for (size_t i = 0; i < n; ++i)
      batch.push_back({toks[done + i], &cache, false});
    hidden.resize(n * E);
    auto r = ctx_.eval(batch, {}, hidden);
    if (!r)
      return std::move(r).err();
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < E; ++j)
        sum[j] += hidden[i * E + j];
    done += n;
  }
  double norm = 0;
  for (float x : sum)
    norm += static_cast<double>(x) * x;
  float inv = norm > 0 ? static_cast<float>(1.0 / std::sqrt(norm)) : 0.0f;
  for (auto& x : sum)
    x *= inv;
  return sum;
}

bool scheduler::cancel(uint64_t id) {
  for (auto* list : {&running_, &waiting_}) {
    auto it = std::find_if(list->begin(), list->end(), [&](const auto& s) { return s->id == id; });
    if (it != list->end()) {
      list->erase(it);
      return true;
    }
  }
  return false;
}

void scheduler::admit() {
  while (!waiting_.empty() && running_.size() < cfg_.max_sequences) {
    auto& s = waiting_.front();
    // Prompt logprobs need the logits of every prompt position: no prefix hits.
    if (s->cache.n_tokens() == 0 && s->n_prefilled == 0 && !s->prompt_logprobs) {
      s->n_prefilled = s->cache.adopt_prefix(s->prompt);
      s->cached = static_cast<uint32_t>(s->n_prefilled);
    }
    running_.push_back(std::move(s));
    waiting_.erase(waiting_.begin());
  }
}

std::vector<sequence_event> scheduler::step() {
  std::vector<sequence_event> events;
  stalled_ = false;
  admit();
  if (running_.empty())
    return events;
  // Decode tokens first (one per sequence), then prefill chunks in arrival
  // order with what is left of the batch budget.
  // KV pages are reserved before the batch is built: a sequence that cannot
  // get them does not join this step. A prefilling one goes back to the
  // queue (its pages released) while others run and free memory; one that
  // is decoding, or alone, fails with the reason.
  std::vector<batch_token> batch;
  // One per logits row, in batch order: the sequence and the prompt index
  // the row's logits score (prompt logprobs), or -1: sample the next token.
  struct logits_row {
    sequence* s;
    int64_t target;
  };
  std::vector<logits_row> rows;
  std::vector<sequence*> prompt_done; // prompt-only sequences whose prefill ends this step
  std::vector<uint64_t> out_of_memory, requeue;
  size_t budget = cfg_.max_batch;
  bool has_prefill = false;
  bool decode_waits = false;
  for (auto& s : running_)
    if (!s->prefilling() && s->next >= 0 && budget > 0) {
      if (!s->cache.reserve(s->cache.n_tokens() + 1)) {
        // Skips this step, waiting for memory like a prefill (below).
        if (++s->memory_waits > memory_wait_steps)
          out_of_memory.push_back(s->id);
        else
          decode_waits = true;
        continue;
      }
      batch.push_back({s->next, &s->cache, true});
      rows.push_back({s.get(), -1});
      --budget;
    }
  for (auto& s : running_) {
    if (!s->prefilling() || budget == 0)
      continue;
    size_t n = std::min(budget, s->prompt.size() - s->n_prefilled);
    if (!s->cache.reserve(s->cache.n_tokens() + n)) {
      // Wait for memory (others finishing, the pool trimming other tiers)
      // a bounded number of steps, then fail with the reason.
      (++s->memory_waits <= memory_wait_steps ? requeue : out_of_memory).push_back(s->id);
      continue;
    }
    for (size_t i = 0; i < n; ++i) {
      const size_t pos = s->n_prefilled + i;
      const bool last = pos + 1 == s->prompt.size();
      const bool want = last ? !s->prompt_only : s->prompt_logprobs;
      batch.push_back({s->prompt[pos], &s->cache, want});
      if (want)
        rows.push_back({s.get(), last ? -1 : static_cast<int64_t>(pos + 1)});
      if (last && s->prompt_only)
        prompt_done.push_back(s.get());
    }
    s->n_prefilled += n;
    budget -= n;
    has_prefill = true;
  }
  for (auto id : out_of_memory) {
    sequence_event e;
    e.id = id;
    e.error =
      core::error{errc::resource_exhausted,
                  "the KV cache budget is exhausted (memory.budget_mb): no room for this sequence",
                  "memory.budget_mb"};
    events.push_back(std::move(e));
    cancel(id);
  }
  stalled_ = !requeue.empty() || decode_waits;
  for (auto id : requeue) {
    auto it =
      std::find_if(running_.begin(), running_.end(), [&](const auto& s) { return s->id == id; });
    auto& s = **it;
    s.cache.truncate(0);
    s.n_prefilled = 0;
    waiting_.insert(waiting_.begin(), std::move(*it));
    running_.erase(it);
  }
  if (batch.empty())
    return events;

  const size_t V = model_->hparams().n_vocab;
  logits_.resize(rows.size() * V);
  auto t0 = std::chrono::steady_clock::now();
  auto r = ctx_.eval(batch, logits_);
  auto ns = static_cast<uint64_t>(
    std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
      .count());
  ++stats_.steps;
  stats_.batch_tokens += batch.size();
  (has_prefill ? stats_.prefill_ns : stats_.decode_ns) += ns;
  if (!r) {
    // A batch error is a bug or a resource problem: fail every sequence in it.
    std::vector<sequence*> in_batch;
    for (const auto& row : rows)
      if (std::find(in_batch.begin(), in_batch.end(), row.s) == in_batch.end())
        in_batch.push_back(row.s);
    for (auto* s : prompt_done)
      if (std::find(in_batch.begin(), in_batch.end(), s) == in_batch.end())
        in_batch.push_back(s);
    for (auto* s : in_batch) {
      sequence_event e;
      e.id = s->id;
      e.error = r.err();
      events.push_back(std::move(e));
      cancel(s->id);
    }
    return events;
  }

  // Pages older than the recent window move to the old tier.
  for (auto& s : running_)
    s->cache.migrate();

  std::vector<uint64_t> finished;
  auto failed = [&](const sequence& s) {
    return std::find(finished.begin(), finished.end(), s.id) != finished.end();
  };
  auto first_event = [&](sequence& s) {
    sequence_event e;
    e.id = s.id;
    e.prompt_tokens = static_cast<uint32_t>(s.prompt.size());
    e.cached_tokens = s.cached;
    stats_.prompt_tokens += s.prompt.size() - s.cached;
    stats_.cached_tokens += s.cached;
    e.prompt_logprobs = std::move(s.prompt_report);
    return e;
  };
  for (size_t k = 0; k < rows.size(); ++k) {
    sequence& s = *rows[k].s;
    if (failed(s))
      continue;
    if (rows[k].target >= 0) {
      // Prompt logprobs: this row's logits score the next prompt token.
      const auto t = static_cast<size_t>(rows[k].target);
      auto scored = s.smp.score({&logits_[k * V], V}, s.prompt[t]);
      if (!scored) {
        sequence_event e;
        e.id = s.id;
        e.error = scored.err();
        finished.push_back(s.id);
        events.push_back(std::move(e));
        continue;
      }
      token_report& rep = s.prompt_report[t];
      rep.id = s.prompt[t];
      rep.piece = std::string(tok_->token_to_piece(rep.id));
      rep.logprob = scored->logprob;
      rep.top_logprobs.clear(); // a requeued prefill scores the prompt again
      for (const auto& [id, lp] : scored->top_logprobs)
        rep.top_logprobs.emplace_back(std::string(tok_->token_to_piece(id)), lp);
      continue;
    }
    sequence_event e;
    if (s.next < 0) {
      e = first_event(s);
    } else {
      e.id = s.id;
      e.prompt_tokens = static_cast<uint32_t>(s.prompt.size());
      e.cached_tokens = s.cached;
    }
    auto tok = s.smp.sample({&logits_[k * V], V}, s.cache.tokens());
    if (!tok) {
      e.error = tok.err();
      finished.push_back(s.id);
      events.push_back(std::move(e));
      continue;
    }
    ++s.generated;
    ++stats_.generated_tokens;
    s.next = tok->id;
    token_report rep;
    rep.id = tok->id;
    rep.piece = std::string(tok_->token_to_piece(tok->id));
    rep.logprob = tok->logprob;
    for (const auto& [id, lp] : tok->top_logprobs)
      rep.top_logprobs.emplace_back(std::string(tok_->token_to_piece(id)), lp);
    e.token = std::move(rep);
    bool eog = tok_->is_eog(tok->id) && !s.ignore_eos;
    if (!eog) {
      auto st = s.stops.feed(s.decoder.push(tok->id));
      e.text = std::string(st.text);
      if (st.stopped)
        e.finish = finish_reason::stop;
    } else {
      e.finish = finish_reason::stop;
    }
    if (e.finish == finish_reason::none
        && ((s.max_tokens > 0 && s.generated >= s.max_tokens)
            || s.cache.n_tokens() + 1 >= s.cache.capacity()))
      e.finish = finish_reason::length;
    if (e.finish != finish_reason::none && !s.stops.stopped()) {
      // Flush what the decoder and the stop matcher still hold.
      auto st = s.stops.feed(s.decoder.finish());
      e.text += st.text;
      if (!st.stopped)
        e.text += s.stops.finish();
    }
    e.completion_tokens = s.generated;
    if (e.finish != finish_reason::none)
      finished.push_back(s.id);
    events.push_back(std::move(e));
  }
  for (auto* s : prompt_done) {
    if (failed(*s))
      continue;
    sequence_event e = first_event(*s);
    e.finish = finish_reason::length;
    finished.push_back(s->id);
    events.push_back(std::move(e));
  }
  for (auto id : finished)
    cancel(id);
  return events;
}

} // namespace shoal::engine
