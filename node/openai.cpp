#include "node/openai.hpp"

#include "core/clock.hpp"
#include "node/errors.hpp"
#include "kernels/vector.hpp"
#include "proto/error.hpp"
#include "proto/messages.hpp"

#include <caf/all.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <random>

namespace shoal::node {

namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

/// JSON text with invalid UTF-8 (a token's piece may be part of a
/// character) replaced by U+FFFD instead of throwing.
std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

/// An OpenAI-shaped error; thrown inside request parsing, caught per handler.
struct api_error {
  int status;
  std::string message;
  std::string param;
  std::string code;
  std::string type = "invalid_request_error";
};

api_error bad(std::string param, std::string message) {
  return {400, std::move(message), std::move(param), "invalid_value"};
}

/// 503 unavailable (node/errors.cpp): an actor or an engine did not answer in time.
api_error unavailable(std::string message) {
  const auto& m = http_mapping(errc::unavailable);
  return {m.status, std::move(message), "", std::string(m.openai_code), std::string(m.openai_type)};
}

void send_api_error(httplib::Response& res, const api_error& e) {
  res.status = e.status;
  json err = {{"message", e.message},
              {"type", e.type},
              {"param", e.param.empty() ? json(nullptr) : json(e.param)},
              {"code", e.code.empty() ? json(nullptr) : json(e.code)}};
  res.set_content(dump(json{{"error", err}}), "application/json");
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

std::string random_hex() {
  static std::atomic<uint64_t> counter{std::random_device{}()};
  uint64_t x = counter.fetch_add(0x9E3779B97F4A7C15ull) * 0xBF58476D1CE4E5B9ull;
  return proto::format_request_id(x ^ (x >> 31));
}

// ---- field readers (throw api_error) ------------------------------------------

const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

double number(const json& body, const char* name, double dflt, double lo, double hi) {
  const json* v = field(body, name);
  if (!v)
    return dflt;
  if (!v->is_number())
    throw bad(name, std::string(name) + " must be a number");
  double x = v->get<double>();
  if (!(x >= lo && x <= hi))
    throw bad(name, std::string(name) + " must be in [" + json(lo).dump() + ", " + json(hi).dump()
                      + "], got " + v->dump());
  return x;
}

int64_t integer(const json& body, const char* name, int64_t dflt, int64_t lo, int64_t hi) {
  const json* v = field(body, name);
  if (!v)
    return dflt;
  if (!v->is_number_integer())
    throw bad(name, std::string(name) + " must be an integer");
  int64_t x = v->get<int64_t>();
  if (x < lo || x > hi)
    throw bad(name, std::string(name) + " must be in [" + std::to_string(lo) + ", "
                      + std::to_string(hi) + "], got " + std::to_string(x));
  return x;
}

bool boolean(const json& body, const char* name, bool dflt) {
  const json* v = field(body, name);
  if (!v)
    return dflt;
  if (!v->is_boolean())
    throw bad(name, std::string(name) + " must be true or false");
  return v->get<bool>();
}

std::vector<std::string> stop_list(const json& body) {
  const json* v = field(body, "stop");
  if (!v)
    return {};
  if (v->is_string())
    return {v->get<std::string>()};
  if (!v->is_array())
    throw bad("stop", "stop must be a string or an array of strings");
  std::vector<std::string> out;
  for (const auto& s : *v) {
    if (!s.is_string())
      throw bad("stop", "stop must be a string or an array of strings");
    out.push_back(s.get<std::string>());
  }
  return out;
}

/// Sampling fields shared by both endpoints.
engine::sampling_params sampling(const json& body) {
  engine::sampling_params p;
  p.temperature = static_cast<float>(number(body, "temperature", 1.0, 0.0, 2.0));
  p.top_p = static_cast<float>(number(body, "top_p", 1.0, 0.0, 1.0));
  if (p.top_p <= 0)
    throw bad("top_p", "top_p must be in (0, 1]");
  p.top_k = static_cast<int32_t>(integer(body, "top_k", 0, 0, 1 << 30));
  p.min_p = static_cast<float>(number(body, "min_p", 0.0, 0.0, 1.0));
  p.presence_penalty = static_cast<float>(number(body, "presence_penalty", 0.0, -2.0, 2.0));
  p.frequency_penalty = static_cast<float>(number(body, "frequency_penalty", 0.0, -2.0, 2.0));
  p.repetition_penalty = static_cast<float>(number(body, "repeat_penalty", 1.0, 1e-3, 10.0));
  if (const json* s = field(body, "seed")) {
    if (!s->is_number_integer())
      throw bad("seed", "seed must be an integer");
    p.seed = static_cast<uint64_t>(s->get<int64_t>());
  }
  if (integer(body, "n", 1, 1, 1) != 1)
    throw bad("n", "n must be 1");
  return p;
}

json logprob_entry(const engine::token_report& t) {
  auto bytes = [](const std::string& s) {
    json b = json::array();
    for (unsigned char c : s)
      b.push_back(c);
    return b;
  };
  json top = json::array();
  for (const auto& [piece, lp] : t.top_logprobs)
    top.push_back({{"token", piece}, {"logprob", lp}, {"bytes", bytes(piece)}});
  return {{"token", t.piece},
          {"logprob", t.logprob},
          {"bytes", bytes(t.piece)},
          {"top_logprobs", std::move(top)}};
}

} // namespace

struct openai_api::impl {
  caf::actor_system& sys;
  node_config cfg;
  std::vector<api_tier> tiers;
  actors::router_actor router;
  const engine::embedder& embedder;
  std::shared_ptr<actors::session_index> sessions;
  actors::sona_actor sona;

  /// http.request_timeout_ms: the wait for one answer of an actor, or for
  /// an engine's admission of a generation.
  std::chrono::milliseconds request_timeout() const {
    return std::chrono::milliseconds(cfg.http.request_timeout_ms);
  }
  /// http.generation_timeout_ms: the wait for an admitted request's next
  /// result from its engine (a token, an embedding).
  std::chrono::milliseconds generation_timeout() const {
    return std::chrono::milliseconds(cfg.http.generation_timeout_ms);
  }
  /// Why a generation on `tier` ended when its engine fell silent.
  std::string stalled(const std::string& tier) const {
    return fmt::format("the engine of tier {} produced nothing for http.generation_timeout_ms "
                       "({} ms); the generation was cancelled",
                       tier, cfg.http.generation_timeout_ms);
  }
  /// What a failed wait on an actor's answer says (a timeout names its key).
  std::string failure_text(const caf::error& e, const char* key, uint32_t ms) const {
    if (e == caf::sec::request_timeout)
      return fmt::format("no answer within {} ({} ms)", key, ms);
    return view(e).message;
  }

  /// The tier for a request's `model`; "auto" asks the router with `text`.
  /// Returns the tier index and the routing request id (0 when not routed).
  /// With `sampling` (the request's, parsed), a routed request that left
  /// temperature or top_p unset is served with router v2's choice.
  std::pair<size_t, uint64_t> pick_tier(const json& body, const std::string& text,
                                        engine::sampling_params* sampling = nullptr) {
    // Extension: the client's latency budget, which router v2 weighs.
    double budget_ms = 0;
    if (const json* b = field(body, "latency_budget_ms")) {
      if (!b->is_number())
        throw bad("latency_budget_ms", "latency_budget_ms must be a number of milliseconds");
      budget_ms = b->get<double>();
      if (auto why = proto::check_latency_budget(budget_ms); !why.empty())
        throw bad("latency_budget_ms", why);
    }
    const json* m = field(body, "model");
    if (!m || !m->is_string())
      throw bad("model", "model must be a string: a tier name or \"auto\"");
    auto name = m->get<std::string>();
    if (name == "auto") {
      proto::route_query q;
      q.start_ns = core::steady_now_ns();
      q.embedding.resize(embedder.dim());
      embedder.embed(text, q.embedding);
      q.text_bytes = static_cast<uint32_t>(text.size());
      q.latency_budget_ms = budget_ms;
      // The conversation (router v2 carries its state across turns) and the
      // user, when given; session_fields validates them.
      if (const json* sid = field(body, "session_id"); sid && sid->is_string())
        q.session_id = sid->get<std::string>();
      if (const json* u = field(body, "user"); u && u->is_string())
        q.user = u->get<std::string>();
      // The client's own sampling (already validated), which the router
      // then leaves as it is.
      const bool own_t = field(body, "temperature") != nullptr;
      const bool own_p = field(body, "top_p") != nullptr;
      if (sampling && own_t)
        q.temperature = sampling->temperature;
      if (sampling && own_p)
        q.top_p = sampling->top_p;
      if (!(kernels::dot(q.embedding, q.embedding) > 0))
        return {0, 0}; // nothing to route on: the cheapest tier
      caf::scoped_actor self{sys};
      std::optional<proto::route_decision> d;
      std::string failure;
      self->request(router, request_timeout(), proto::route_atom::value, std::move(q))
        .receive([&](proto::route_decision& x) { d = std::move(x); },
                 [&](caf::error& e) {
                   failure =
                     failure_text(e, "http.request_timeout_ms", cfg.http.request_timeout_ms);
                 });
      if (!d)
        throw unavailable("the router did not answer: " + failure);
      if (sampling && !own_t && d->temperature >= 0)
        sampling->temperature = static_cast<float>(d->temperature);
      if (sampling && !own_p && d->top_p > 0)
        sampling->top_p = static_cast<float>(d->top_p);
      return {d->tier, d->request_id};
    }
    for (size_t i = 0; i < tiers.size(); ++i)
      if (tiers[i].name == name)
        return {i, 0};
    std::string known = "\"auto\"";
    for (const auto& t : tiers)
      known += ", \"" + t.name + "\"";
    throw api_error{404, "The model `" + name + "` does not exist (known: " + known + ")", "model",
                    "model_not_found"};
  }

  const api_tier& serving_tier(size_t i) {
    if (i >= tiers.size() || !tiers[i].engine)
      throw api_error{
        400,
        "tier " + (i < tiers.size() ? tiers[i].name : std::to_string(i))
          + " has no model configured (routing only): set model in its [[tiers]] entry",
        "model", "model_not_available"};
    return tiers[i];
  }

  /// Sends the job and waits for the engine's verdict.
  std::shared_ptr<actors::generation_job> start(const api_tier& t, engine::generation_request req,
                                                bool req_is_chat) {
    auto job = std::make_shared<actors::generation_job>();
    static std::atomic<uint64_t> next_id{1};
    job->id = next_id.fetch_add(1);
    job->request = std::move(req);
    caf::anon_send(t.engine, actors::generate_atom::value, job);
    auto refused = job->stream->wait_accepted(request_timeout());
    if (refused) {
      if (*refused == "timeout") {
        job->stream->cancel();
        throw unavailable(fmt::format("the engine of tier {} did not admit the generation "
                                      "within http.request_timeout_ms ({} ms)",
                                      t.name, cfg.http.request_timeout_ms));
      }
      bool ctx = refused->find("context") != std::string::npos;
      throw api_error{400, *refused, ctx ? (req_is_chat ? "messages" : "prompt") : "",
                      ctx ? "context_length_exceeded" : "invalid_value"};
    }
    return job;
  }

  struct parsed {
    size_t tier = 0;
    uint64_t route_id = 0;
    engine::generation_request req;
    bool stream = false;
    bool include_usage = false;
    bool chat = false;
    int logprobs = 0; ///< completions: top-n count; chat: 1 + top_logprobs when on
    bool want_logprobs = false;
    bool echo = false;        ///< completions: the prompt comes back before the completion
    std::string session_id;   ///< extension: the conversation this turn belongs to
    std::string user;         ///< OpenAI's end-user id
    std::string session_text; ///< what the turn is about (last user message / prompt)
  };

  /// `session_id` (extension) and `user` (OpenAI).
  void session_fields(const json& body, parsed& p, const std::string& text) {
    if (const json* u = field(body, "user")) {
      if (!u->is_string() || u->get_ref<const std::string&>().size() > 256)
        throw bad("user", "user must be a string of at most 256 characters");
      p.user = u->get<std::string>();
    }
    if (const json* sid = field(body, "session_id")) {
      if (!sid->is_string())
        throw bad("session_id", "session_id must be a string");
      if (auto why = actors::check_session_id(sid->get_ref<const std::string&>()))
        throw bad(why.context, why.message);
      if (!sessions)
        throw bad("session_id", "sessions are not enabled on this node");
      p.session_id = sid->get<std::string>();
      p.session_text = text;
      p.req.important = true; // session pages are evicted last
    }
  }

  /// Records a finished turn in the session index.
  /// A finished answer: its usage to SONA (routed requests: the context
  /// head learns what they needed) and the turn to the session index.
  void note_turn(const parsed& p, uint32_t prompt_tokens, uint32_t completion) {
    if (p.route_id != 0 && sona)
      caf::anon_send(sona, proto::usage_atom::value, p.route_id, prompt_tokens, completion);
    if (p.session_id.empty() || !sessions)
      return;
    std::vector<float> e(embedder.dim());
    embedder.embed(p.session_text, e);
    uint32_t tokens = prompt_tokens + completion;
    uint32_t pt = std::max<uint32_t>(1, cfg.kv.page_tokens);
    sessions->record_turn(p.session_id, p.user, e,
                          {tiers[p.tier].name, tokens, (tokens + pt - 1) / pt}, core::utc_now_ms());
  }

  parsed parse_completion(const json& body) {
    parsed p;
    const json* prompt = field(body, "prompt");
    std::string text;
    if (prompt && prompt->is_string())
      text = prompt->get<std::string>();
    else if (prompt && prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string())
      text = (*prompt)[0].get<std::string>();
    else
      throw bad("prompt", "prompt must be a string (or an array of one string)");
    p.echo = boolean(body, "echo", false);
    p.req.sampling = sampling(body);
    std::tie(p.tier, p.route_id) = pick_tier(body, text, &p.req.sampling);
    const auto& t = serving_tier(p.tier);
    p.req.prompt = std::move(text);
    p.req.add_special = true;
    p.req.max_tokens = static_cast<uint32_t>(integer(body, "max_tokens", 16, 0, t.n_ctx));
    p.req.prompt_only = p.req.max_tokens == 0; // OpenAI: nothing generated
    p.req.stop = stop_list(body);
    p.req.ignore_eos = boolean(body, "ignore_eos", false);
    session_fields(body, p, p.req.prompt);
    p.logprobs = static_cast<int>(integer(body, "logprobs", -1, 0, 5));
    p.want_logprobs = p.logprobs >= 0;
    p.req.sampling.n_logprobs = std::max(0, p.logprobs);
    p.req.prompt_logprobs = p.echo && p.want_logprobs;
    stream_flags(body, p);
    return p;
  }

  parsed parse_chat(const json& body) {
    parsed p;
    p.chat = true;
    const json* msgs = field(body, "messages");
    if (!msgs || !msgs->is_array() || msgs->empty())
      throw bad("messages", "messages must be a non-empty array");
    std::vector<engine::chat_message> chat;
    std::string last_user;
    for (size_t i = 0; i < msgs->size(); ++i) {
      const json& m = (*msgs)[i];
      std::string where = "messages[" + std::to_string(i) + "]";
      if (!m.is_object() || !field(m, "role") || !m["role"].is_string())
        throw bad(where, where + " must be an object with a string role");
      engine::chat_message cm;
      cm.role = m["role"].get<std::string>();
      if (cm.role == "developer")
        cm.role = "system"; // OpenAI's newer name for system messages
      const json* c = field(m, "content");
      if (c && c->is_string()) {
        cm.content = c->get<std::string>();
      } else if (c && c->is_array()) {
        for (const auto& part : *c) {
          if (!part.is_object() || part.value("type", "") != "text" || !field(part, "text")
              || !part["text"].is_string())
            throw bad(where + ".content", "only text content parts are supported");
          cm.content += part["text"].get<std::string>();
        }
      } else if (!(cm.role == "assistant" && !c)) {
        throw bad(where + ".content", where + ".content must be a string or text parts");
      }
      if (cm.role == "user")
        last_user = cm.content;
      chat.push_back(std::move(cm));
    }
    p.req.sampling = sampling(body);
    std::tie(p.tier, p.route_id) = pick_tier(body, last_user, &p.req.sampling);
    const auto& t = serving_tier(p.tier);
    std::string bos =
      t.tokenizer->bos() >= 0 ? std::string(t.tokenizer->token_text(t.tokenizer->bos())) : "";
    auto text = engine::render_chat(t.chat, chat, true, bos);
    if (!text)
      throw bad("messages", text.err().message);
    p.req.prompt = std::move(*text);
    p.req.add_special = !engine::text_includes_bos(t.chat);
    uint32_t max_default = 0; // until the context is full
    int64_t mt = integer(body, "max_completion_tokens", -1, 1, t.n_ctx);
    if (mt < 0)
      mt = integer(body, "max_tokens", max_default, 1, t.n_ctx);
    p.req.max_tokens = static_cast<uint32_t>(mt);
    p.req.stop = stop_list(body);
    for (auto& s : engine::chat_stop_strings(t.chat))
      if (p.req.stop.size() < engine::max_stop_strings)
        p.req.stop.push_back(s);
    p.req.ignore_eos = boolean(body, "ignore_eos", false);
    p.want_logprobs = boolean(body, "logprobs", false);
    int64_t top = integer(body, "top_logprobs", 0, 0, 20);
    if (top > 0 && !p.want_logprobs)
      throw bad("top_logprobs", "top_logprobs requires logprobs: true");
    p.req.sampling.n_logprobs = static_cast<int32_t>(top);
    session_fields(body, p, last_user);
    stream_flags(body, p);
    return p;
  }

  void stream_flags(const json& body, parsed& p) {
    p.stream = boolean(body, "stream", false);
    if (const json* so = field(body, "stream_options")) {
      if (!so->is_object())
        throw bad("stream_options", "stream_options must be an object");
      p.include_usage = boolean(*so, "include_usage", false);
    }
  }

  std::string response_id(const parsed& p) const {
    return std::string(p.chat ? "chatcmpl-" : "cmpl-")
           + (p.route_id ? proto::format_request_id(p.route_id) : random_hex());
  }

  /// OpenAI's usage object; prompt_tokens_details.cached_tokens counts the
  /// prompt tokens whose KV came from the prefix cache.
  json usage(uint32_t prompt, uint32_t completion, uint32_t cached) const {
    return {{"prompt_tokens", prompt},
            {"completion_tokens", completion},
            {"total_tokens", prompt + completion},
            {"prompt_tokens_details", {{"cached_tokens", cached}}}};
  }

  /// Completions-style logprobs of one token.
  static void add_completion_logprobs(json& lp, const engine::token_report& t, size_t offset) {
    lp["tokens"].push_back(t.piece);
    lp["token_logprobs"].push_back(t.logprob);
    json top = json::object();
    for (const auto& [piece, v] : t.top_logprobs)
      top[piece] = v;
    lp["top_logprobs"].push_back(top);
    lp["text_offset"].push_back(offset);
  }

  /// Echo (completions): the prompt tokens' logprobs, in front of the
  /// completion's. The BOS the tokenizer added is not in the prompt text and
  /// is left out; a first token without context has null logprobs.
  void add_prompt_logprobs(json& lp, const parsed& p,
                           const std::vector<engine::token_report>& prompt) const {
    const auto& tok = *tiers[p.tier].tokenizer;
    std::vector<int32_t> ids;
    ids.reserve(prompt.size());
    for (const auto& t : prompt)
      ids.push_back(t.id);
    const auto offsets = engine::token_offsets(tok, p.req.prompt, ids);
    for (size_t i = 0; i < prompt.size(); ++i) {
      if (i == 0 && p.req.add_special && prompt[i].id == tok.bos())
        continue;
      if (std::isnan(prompt[i].logprob)) {
        lp["tokens"].push_back(prompt[i].piece);
        lp["token_logprobs"].push_back(nullptr);
        lp["top_logprobs"].push_back(nullptr);
        lp["text_offset"].push_back(offsets[i]);
      } else {
        add_completion_logprobs(lp, prompt[i], offsets[i]);
      }
    }
  }

  static json empty_completion_logprobs() {
    return {{"tokens", json::array()},
            {"token_logprobs", json::array()},
            {"top_logprobs", json::array()},
            {"text_offset", json::array()}};
  }

  // ---- sessions ---------------------------------------------------------------

  static json session_json(const actors::session& s) {
    return {{"id", s.id},
            {"object", "session"},
            {"user", s.user},
            {"turns", s.turns},
            {"adapter", s.adapter},
            {"created", s.created_ms / 1000},
            {"last_activity", s.last_ms / 1000},
            {"kv", {{"tier", s.kv.tier}, {"tokens", s.kv.tokens}, {"pages", s.kv.pages}}}};
  }

  bool sessions_enabled(httplib::Response& res) {
    if (sessions)
      return true;
    send_api_error(res, {404, "sessions are not enabled on this node", "", "not_found"});
    return false;
  }

  void handle_session(const std::string& id, bool erase, httplib::Response& res) {
    if (!sessions_enabled(res))
      return;
    if (erase) {
      if (!sessions->erase(id))
        return send_api_error(res, {404, "no session " + id, "", "session_not_found"});
      res.set_content(dump(json{{"id", id}, {"object", "session"}, {"deleted", true}}),
                      "application/json");
      return;
    }
    auto s = sessions->find(id);
    if (!s)
      return send_api_error(res, {404, "no session " + id, "", "session_not_found"});
    res.set_content(dump(session_json(*s)), "application/json");
  }

  void handle_sessions_of_user(const httplib::Request& req, httplib::Response& res) {
    if (!sessions_enabled(res))
      return;
    if (!req.has_param("user"))
      return send_api_error(res, bad("user", "GET /v1/sessions needs ?user=<user id>"));
    json data = json::array();
    for (const auto& s : sessions->by_user(req.get_param_value("user")))
      data.push_back(session_json(s));
    res.set_content(dump(json{{"object", "list"}, {"data", data}}), "application/json");
  }

  void handle_sessions_search(const httplib::Request& req, httplib::Response& res) {
    if (!sessions_enabled(res))
      return;
    try {
      json body = json::parse(req.body, nullptr, false);
      if (body.is_discarded() || !body.is_object())
        throw api_error{400, "the body must be a JSON object", "", "invalid_json"};
      const json* text = field(body, "text");
      if (!text || !text->is_string())
        throw bad("text", "text must be a string");
      auto k = static_cast<size_t>(integer(body, "k", 5, 1, 100));
      std::vector<float> e(embedder.dim());
      embedder.embed(text->get<std::string>(), e);
      json data = json::array();
      for (const auto& [s, sim] : sessions->similar(e, k)) {
        auto j = session_json(s);
        j["similarity"] = sim;
        data.push_back(std::move(j));
      }
      res.set_content(dump(json{{"object", "list"}, {"data", data}}), "application/json");
    } catch (const api_error& e) {
      send_api_error(res, e);
    }
  }

  void handle(const httplib::Request& req, httplib::Response& res, bool chat) {
    parsed p;
    std::shared_ptr<actors::generation_job> job;
    try {
      json body = json::parse(req.body, nullptr, false);
      if (body.is_discarded() || !body.is_object())
        throw api_error{400, "the body must be a JSON object", "", "invalid_json"};
      p = chat ? parse_chat(body) : parse_completion(body);
      job = start(tiers[p.tier], p.req, chat);
    } catch (const api_error& e) {
      return send_api_error(res, e);
    }
    const std::string id = response_id(p);
    const int64_t created = unix_now();
    const std::string model = tiers[p.tier].name;
    const uint32_t prompt_tokens = job->stream->prompt_tokens();
    if (!p.stream)
      return finish_blocking(res, p, job, id, created, model, prompt_tokens);

    res.set_header("Cache-Control", "no-cache");
    auto chunk = [p, id, created, model](json choice) {
      json c = {{"id", id},
                {"object", p.chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", model},
                {"choices", json::array({std::move(choice)})}};
      return "data: " + dump(c) + "\n\n";
    };
    auto self = this;
    auto sent_role = std::make_shared<bool>(false);
    auto offset = std::make_shared<size_t>(0);
    auto echoed = std::make_shared<bool>(!p.echo);
    res.set_chunked_content_provider(
      "text/event-stream",
      [self, p, job, chunk, sent_role, offset, echoed, id, created, model,
       prompt_tokens](size_t, httplib::DataSink& sink) {
        auto write = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
        if (p.chat && !*sent_role) {
          *sent_role = true;
          if (!write(chunk({{"index", 0},
                            {"delta", {{"role", "assistant"}, {"content", ""}}},
                            {"logprobs", nullptr},
                            {"finish_reason", nullptr}})))
            return false;
        }
        // Polled every 100 ms to notice a client that left; an engine silent
        // for http.generation_timeout_ms ends the stream with an error event.
        auto last_event = std::chrono::steady_clock::now();
        for (;;) {
          auto e = job->stream->next(100ms);
          if (!e) {
            if (!sink.is_writable())
              return false; // client gone: the releaser cancels
            if (std::chrono::steady_clock::now() - last_event >= self->generation_timeout()) {
              job->stream->cancel();
              auto err = unavailable(self->stalled(model));
              write("data: "
                    + dump({{"error",
                             {{"message", err.message}, {"type", err.type}, {"code", err.code}}}})
                    + "\n\n");
              sink.done();
              return true;
            }
            continue;
          }
          last_event = std::chrono::steady_clock::now();
          if (e->error) {
            json err = {{"error", {{"message", e->error.message}, {"type", "server_error"}}}};
            write("data: " + dump(err) + "\n\n");
            sink.done();
            return true;
          }
          bool last = e->finish != engine::finish_reason::none;
          const bool echo = !*echoed; // the echo goes out once, with the first event
          if (echo) {
            *echoed = true;
            e->text.insert(0, p.req.prompt);
          }
          if (!e->text.empty() || last || (p.want_logprobs && e->token)) {
            json choice = {{"index", 0}, {"logprobs", nullptr}};
            if (p.want_logprobs && (e->token || echo)) {
              if (p.chat) {
                choice["logprobs"] = {{"content", json::array({logprob_entry(*e->token)})}};
              } else {
                json lp = empty_completion_logprobs();
                if (echo)
                  self->add_prompt_logprobs(lp, p, e->prompt_logprobs);
                if (e->token)
                  add_completion_logprobs(lp, *e->token,
                                          *offset + (echo ? p.req.prompt.size() : 0));
                choice["logprobs"] = lp;
              }
            }
            *offset += e->text.size();
            if (p.chat)
              choice["delta"] = e->text.empty() ? json::object() : json{{"content", e->text}};
            else
              choice["text"] = e->text;
            choice["finish_reason"] = last ? json(to_string(e->finish)) : json(nullptr);
            if (!write(chunk(choice)))
              return false;
          }
          if (last) {
            self->note_turn(p, prompt_tokens, e->completion_tokens);
            if (p.include_usage) {
              json u = {
                {"id", id},
                {"object", p.chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", model},
                {"choices", json::array()},
                {"usage", self->usage(prompt_tokens, e->completion_tokens, e->cached_tokens)}};
              write("data: " + dump(u) + "\n\n");
            }
            write("data: [DONE]\n\n");
            sink.done();
            return true;
          }
        }
      },
      [job](bool success) {
        if (!success)
          job->stream->cancel();
      });
  }

  void finish_blocking(httplib::Response& res, const parsed& p,
                       const std::shared_ptr<actors::generation_job>& job, const std::string& id,
                       int64_t created, const std::string& model, uint32_t prompt_tokens) {
    std::string text;
    json lp_chat = json::array();
    json lp_cmpl = empty_completion_logprobs();
    engine::finish_reason finish = engine::finish_reason::none;
    uint32_t completion = 0, cached = 0;
    if (p.echo)
      text = p.req.prompt;
    for (;;) {
      auto e = job->stream->next(generation_timeout());
      if (!e) {
        job->stream->cancel();
        return send_api_error(res, unavailable(stalled(model)));
      }
      if (e->error) {
        bool memory = e->error.code == errc::resource_exhausted;
        api_error err{memory ? 503 : 500, e->error.message, "",
                      memory ? "insufficient_memory" : "engine_error", "server_error"};
        return send_api_error(res, err);
      }
      cached = e->cached_tokens;
      if (p.want_logprobs && !e->prompt_logprobs.empty())
        add_prompt_logprobs(lp_cmpl, p, e->prompt_logprobs);
      if (p.want_logprobs && e->token) {
        if (p.chat)
          lp_chat.push_back(logprob_entry(*e->token));
        else
          add_completion_logprobs(lp_cmpl, *e->token, text.size());
      }
      text += e->text;
      completion = e->completion_tokens;
      if (e->finish != engine::finish_reason::none) {
        finish = e->finish;
        break;
      }
    }
    note_turn(p, prompt_tokens, completion);
    json choice = {{"index", 0}, {"finish_reason", to_string(finish)}, {"logprobs", nullptr}};
    if (p.chat) {
      choice["message"] = {{"role", "assistant"}, {"content", text}};
      if (p.want_logprobs)
        choice["logprobs"] = {{"content", lp_chat}};
    } else {
      choice["text"] = text;
      if (p.want_logprobs)
        choice["logprobs"] = lp_cmpl;
    }
    json out = {{"id", id},
                {"object", p.chat ? "chat.completion" : "text_completion"},
                {"created", created},
                {"model", model},
                {"choices", json::array({choice})},
                {"usage", usage(prompt_tokens, completion, cached)}};
    res.status = 200;
    res.set_content(dump(out), "application/json");
  }

  void handle_embeddings(const httplib::Request& req, httplib::Response& res) {
    try {
      json body = json::parse(req.body, nullptr, false);
      if (body.is_discarded() || !body.is_object())
        throw api_error{400, "the body must be a JSON object", "", "invalid_json"};
      std::vector<std::string> inputs;
      const json* in = field(body, "input");
      if (in && in->is_string()) {
        inputs.push_back(in->get<std::string>());
      } else if (in && in->is_array() && !in->empty() && in->size() <= 2048) {
        for (const auto& s : *in) {
          if (!s.is_string())
            throw bad("input", "input must be a string or an array of strings");
          inputs.push_back(s.get<std::string>());
        }
      } else {
        throw bad("input", "input must be a string or an array of 1-2048 strings");
      }
      for (const auto& s : inputs)
        if (s.empty())
          throw bad("input", "input strings must not be empty");
      std::string fmt = "float";
      if (const json* f = field(body, "encoding_format")) {
        if (!f->is_string()
            || (f->get<std::string>() != "float" && f->get<std::string>() != "base64"))
          throw bad("encoding_format", "encoding_format must be \"float\" or \"base64\"");
        fmt = f->get<std::string>();
      }
      const json* m = field(body, "model");
      if (!m || !m->is_string())
        throw bad("model", "model must be a string: \"hashing\" or a tier name");
      std::string model = m->get<std::string>();
      json data = json::array();
      uint64_t n_tokens = 0;
      for (size_t i = 0; i < inputs.size(); ++i) {
        std::vector<float> v;
        if (model == "hashing") {
          v.resize(embedder.dim());
          embedder.embed(inputs[i], v);
          n_tokens += inputs[i].size() / 4 + 1;
        } else {
          json probe = {{"model", model}};
          auto [tier, rid] = pick_tier(probe, inputs[i]);
          (void)rid;
          const auto& t = serving_tier(tier);
          n_tokens += t.tokenizer->encode(inputs[i], true, false).size();
          caf::scoped_actor self{sys};
          std::string failure;
          bool timed_out = false;
          self->request(t.engine, generation_timeout(), actors::embed_atom::value, inputs[i])
            .receive([&](std::vector<float>& x) { v = std::move(x); },
                     [&](caf::error& e) {
                       timed_out = e == caf::sec::request_timeout;
                       failure = failure_text(e, "http.generation_timeout_ms",
                                              cfg.http.generation_timeout_ms);
                     });
          if (timed_out)
            throw unavailable("the engine of tier " + t.name + " did not embed input["
                              + std::to_string(i) + "]: " + failure);
          if (!failure.empty())
            throw bad("input", failure);
        }
        json emb;
        if (fmt == "base64") {
          std::string raw(reinterpret_cast<const char*>(v.data()), v.size() * 4);
          static const char* tbl =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
          std::string b64;
          for (size_t k = 0; k < raw.size(); k += 3) {
            uint32_t n = static_cast<unsigned char>(raw[k]) << 16;
            if (k + 1 < raw.size())
              n |= static_cast<unsigned char>(raw[k + 1]) << 8;
            if (k + 2 < raw.size())
              n |= static_cast<unsigned char>(raw[k + 2]);
            b64 += tbl[(n >> 18) & 63];
            b64 += tbl[(n >> 12) & 63];
            b64 += k + 1 < raw.size() ? tbl[(n >> 6) & 63] : '=';
            b64 += k + 2 < raw.size() ? tbl[n & 63] : '=';
          }
          emb = b64;
        } else {
          emb = v;
        }
        data.push_back({{"object", "embedding"}, {"index", i}, {"embedding", std::move(emb)}});
      }
      json out = {{"object", "list"},
                  {"data", std::move(data)},
                  {"model", model},
                  {"usage", {{"prompt_tokens", n_tokens}, {"total_tokens", n_tokens}}}};
      res.status = 200;
      res.set_content(dump(out), "application/json");
    } catch (const api_error& e) {
      send_api_error(res, e);
    }
  }

  void handle_models(httplib::Response& res) {
    json data = json::array();
    int64_t now = unix_now();
    data.push_back({{"id", "auto"}, {"object", "model"}, {"created", now}, {"owned_by", "shoal"}});
    for (const auto& t : tiers)
      data.push_back({{"id", t.name},
                      {"object", "model"},
                      {"created", now},
                      {"owned_by", "shoal"},
                      {"meta",
                       {{"file", t.model_file},
                        {"n_ctx", t.n_ctx},
                        {"serving", static_cast<bool>(t.engine)},
                        {"fingerprint", t.fingerprint},
                        {"weight_type", t.weight_type},
                        {"chat_format", engine::to_string(t.chat)}}}});
    data.push_back(
      {{"id", "hashing"}, {"object", "model"}, {"created", now}, {"owned_by", "shoal"}});
    res.set_content(dump(json{{"object", "list"}, {"data", data}}), "application/json");
  }
};

openai_api::openai_api(caf::actor_system& sys, const node_config& cfg, std::vector<api_tier> tiers,
                       actors::router_actor router, const engine::embedder& embedder,
                       std::shared_ptr<actors::session_index> sessions, actors::sona_actor sona)
  : impl_(new impl{sys, cfg, std::move(tiers), std::move(router), embedder, std::move(sessions),
                   std::move(sona)}) {}

openai_api::~openai_api() = default;

void openai_api::install(httplib::Server& svr) {
  auto* self = impl_.get();
  svr.Post("/v1/completions",
           [self](const httplib::Request& q, httplib::Response& r) { self->handle(q, r, false); });
  svr.Post("/v1/chat/completions",
           [self](const httplib::Request& q, httplib::Response& r) { self->handle(q, r, true); });
  svr.Post("/v1/embeddings", [self](const httplib::Request& q, httplib::Response& r) {
    self->handle_embeddings(q, r);
  });
  svr.Get("/v1/models",
          [self](const httplib::Request&, httplib::Response& r) { self->handle_models(r); });
  svr.Get(R"(/v1/sessions/([A-Za-z0-9._:\-]+))",
          [self](const httplib::Request& q, httplib::Response& r) {
            self->handle_session(q.matches[1], false, r);
          });
  svr.Delete(R"(/v1/sessions/([A-Za-z0-9._:\-]+))",
             [self](const httplib::Request& q, httplib::Response& r) {
               self->handle_session(q.matches[1], true, r);
             });
  svr.Get("/v1/sessions", [self](const httplib::Request& q, httplib::Response& r) {
    self->handle_sessions_of_user(q, r);
  });
  svr.Post("/v1/sessions/search", [self](const httplib::Request& q, httplib::Response& r) {
    self->handle_sessions_search(q, r);
  });
}

} // namespace shoal::node
