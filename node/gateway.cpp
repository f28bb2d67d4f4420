#include "node/gateway.hpp"
#include "node/errors.hpp"
#include "node/stats.hpp"
#include "node/validate.hpp"

#include "actors/memory.hpp"

#include "core/clock.hpp"
#include "kernels/vector.hpp"
#include "proto/error.hpp"
#include "proto/messages.hpp"

#include <caf/all.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <sstream>

namespace shoal::node {

namespace {

using json = nlohmann::json;
using namespace proto;

constexpr size_t max_id_field_bytes = 256;

/// The error code of the response being written on this thread (for telemetry).
thread_local std::string current_error_code;

void send_error(httplib::Response& res, errc code, const std::string& message) {
  res.status = http_mapping(code).status;
  current_error_code = std::string(to_string(code));
  json body = {{"error", {{"code", current_error_code}, {"message", message}}}};
  res.set_content(body.dump(), "application/json");
}

void send_json(httplib::Response& res, const json& body) {
  res.status = 200;
  res.set_content(body.dump(), "application/json");
}

/// Parses a JSON object body or writes a 400 and returns nullopt.
std::optional<json> parse_object(const httplib::Request& req, httplib::Response& res) {
  auto body = parse_json_object(req.body);
  if (!body) {
    send_error(res, body.err().code, body.err().message);
    return std::nullopt;
  }
  return std::move(*body);
}

/// Reads an optional string field bounded in length; false after writing a 400.
bool optional_string(const json& body, const char* field, std::string& out,
                     httplib::Response& res) {
  if (auto err = read_optional_string(body, field, max_id_field_bytes, out)) {
    send_error(res, err.code, err.message);
    return false;
  }
  return true;
}

json to_json(const route_decision& d) {
  json ns = json::array();
  for (const auto& n : d.neighbors)
    ns.push_back({{"pattern_id", n.pattern_id}, {"similarity", n.similarity}});
  json out = {{"request_id", format_request_id(d.request_id)},
              {"tier", d.tier_name},
              {"tier_index", d.tier},
              {"confidence", d.confidence},
              {"expected_reward", d.expected_reward},
              {"pattern_id", d.pattern_id},
              {"new_pattern", d.new_pattern},
              {"neighbors", std::move(ns)},
              {"latency_us",
               {{"embed", d.latency.embed / 1e3},
                {"search", d.latency.search / 1e3},
                {"decide", d.latency.decide / 1e3},
                {"total", d.latency.total / 1e3}}}};
  // Router v2's sampling and context bucket, when it made them.
  if (d.temperature >= 0)
    out["temperature"] = d.temperature;
  if (d.top_p >= 0)
    out["top_p"] = d.top_p;
  if (d.context_tokens > 0)
    out["context_tokens"] = d.context_tokens;
  return out;
}

/// An optional number field in [lo, hi] (lo_open: (lo, hi]); false after
/// sending the error that names it and its range.
bool optional_number(const json& body, const char* name, double lo, double hi, bool lo_open,
                     double& out, httplib::Response& res) {
  if (auto err = read_optional_number(body, name, lo, hi, lo_open, out)) {
    send_error(res, err.code, err.message);
    return false;
  }
  return true;
}

} // namespace

struct gateway::impl {
  caf::actor_system& sys;
  node_config cfg;
  gateway_actors actors;
  engine::embedder embedder;
  httplib::Server server;
  caf::duration timeout; ///< http.request_timeout_ms: every wait on an actor
  /// HTTP responses, and error responses by code (written by every HTTP
  /// worker: an atomic, and a mutex taken only for errors).
  std::atomic<uint64_t> n_http{0};
  std::mutex errors_mutex;
  std::map<std::string, uint64_t> errors;
  int port = 0; ///< bound port, once bind() succeeded
  std::unique_ptr<openai_api> openai;

  impl(caf::actor_system& s, const node_config& c, gateway_actors a)
    : sys(s), cfg(c), actors(std::move(a)), embedder(c.embedder),
      timeout(std::chrono::milliseconds(c.http.request_timeout_ms)) {}

  /// Sends a request to `dest` and waits for the reply of type T, at most
  /// http.request_timeout_ms (then caf::sec::request_timeout).
  template <class T, class Handle, class... Ts>
  caf::expected<T> ask(const Handle& dest, Ts&&... xs) {
    caf::scoped_actor self{sys};
    caf::expected<T> out{caf::error{}};
    self->request(dest, timeout, std::forward<Ts>(xs)...)
      .receive([&](T& x) { out = std::move(x); }, [&](caf::error& e) { out = std::move(e); });
    return out;
  }

  /// `err` as an HTTP error; a timeout is 503 unavailable, saying which
  /// limit expired (and `after_timeout`, what the caller should know then).
  void reply_error(httplib::Response& res, const caf::error& err,
                   const std::string& after_timeout = "") {
    auto v = view(err);
    if (err == caf::sec::request_timeout)
      v = {errc::unavailable, fmt::format("the node did not answer within "
                                          "http.request_timeout_ms ({} ms){}",
                                          cfg.http.request_timeout_ms, after_timeout)};
    send_error(res, v.code, v.message);
  }

  void handle_route(const httplib::Request& req, httplib::Response& res) {
    auto start = core::steady_now_ns();
    auto body = parse_object(req, res);
    if (!body)
      return;
    route_query q;
    q.start_ns = start;
    if (!optional_string(*body, "session_id", q.session_id, res)
        || !optional_string(*body, "user", q.user, res))
      return;
    if (auto b = body->find("latency_budget_ms"); b != body->end() && !b->is_null()) {
      if (!b->is_number())
        return send_error(res, errc::invalid_argument,
                          "latency_budget_ms must be a number of milliseconds");
      q.latency_budget_ms = b->get<double>();
      if (auto why = check_latency_budget(q.latency_budget_ms); !why.empty())
        return send_error(res, errc::invalid_argument, why);
    }
    // The sampling the caller will use, when it decided already (OpenAI's ranges).
    if (!optional_number(*body, "temperature", 0, 2, false, q.temperature, res)
        || !optional_number(*body, "top_p", 0, 1, true, q.top_p, res))
      return;
    auto text = body->find("text");
    auto emb = body->find("embedding");
    bool has_text = text != body->end() && !text->is_null();
    bool has_emb = emb != body->end() && !emb->is_null();
    if (has_text == has_emb)
      return send_error(res, errc::invalid_argument,
                        "give exactly one of \"text\" or \"embedding\"");
    if (has_text) {
      if (!text->is_string())
        return send_error(res, errc::invalid_argument, "text must be a string");
      const auto& s = text->get_ref<const std::string&>();
      if (s.find_first_not_of(" \t\r\n") == std::string::npos)
        return send_error(res, errc::invalid_argument, "text is empty");
      q.embedding.resize(embedder.dim());
      embedder.embed(s, q.embedding);
      q.text_bytes = static_cast<uint32_t>(s.size());
      q.embed_ns = static_cast<uint64_t>(core::steady_now_ns() - start);
      if (!(kernels::dot(q.embedding, q.embedding) > 0))
        return send_error(res, errc::invalid_argument,
                          "text contains no words (letters or digits) to embed");
    } else {
      if (!emb->is_array())
        return send_error(res, errc::invalid_argument, "embedding must be an array of numbers");
      if (emb->size() != embedder.dim())
        return send_error(res, errc::invalid_argument,
                          "embedding has dimension " + std::to_string(emb->size()) + ", expected "
                            + std::to_string(embedder.dim()));
      q.embedding.reserve(emb->size());
      for (const auto& x : *emb) {
        if (!x.is_number())
          return send_error(res, errc::invalid_argument, "embedding must be an array of numbers");
        q.embedding.push_back(x.get<float>());
      }
      if (!kernels::all_finite(q.embedding))
        return send_error(res, errc::invalid_argument, "embedding contains NaN or infinite values");
      float norm = kernels::normalize(q.embedding);
      if (!(norm > 0) || !std::isfinite(norm))
        return send_error(res, errc::invalid_argument,
                          "embedding must have a finite, non-zero norm");
    }
    auto d = ask<route_decision>(actors.router, route_atom::value, std::move(q));
    if (!d)
      return reply_error(res, d.error());
    send_json(res, to_json(*d));
  }

  void handle_feedback(const httplib::Request& req, httplib::Response& res) {
    auto body = parse_object(req, res);
    if (!body)
      return;
    auto id = body->find("request_id");
    if (id == body->end() || !id->is_string())
      return send_error(res, errc::invalid_argument, "request_id must be a string");
    feedback fb;
    if (!parse_request_id(id->get_ref<const std::string&>(), fb.request_id))
      return send_error(res, errc::invalid_argument, "request_id must be 16 hex digits");
    auto q = body->find("quality");
    if (q == body->end() || !q->is_number())
      return send_error(res, errc::invalid_argument, "quality must be a number in [0, 1]");
    fb.quality = q->get<double>();
    if (!(fb.quality >= 0.0 && fb.quality <= 1.0))
      return send_error(res, errc::invalid_argument, "quality must be a number in [0, 1]");
    // Optional usage of the answer (OpenAI's usage fields): router v2's
    // context head learns the tokens the request needed.
    for (auto [name, out] : {std::pair{"prompt_tokens", &fb.prompt_tokens},
                             std::pair{"completion_tokens", &fb.completion_tokens}}) {
      auto v = body->find(name);
      if (v == body->end() || v->is_null())
        continue;
      if (!v->is_number_integer() || v->get<int64_t>() < 0 || v->get<int64_t>() > 100'000'000)
        return send_error(res, errc::invalid_argument,
                          std::string(name) + " must be an integer in [0, 100000000]");
      *out = static_cast<uint32_t>(v->get<int64_t>());
    }
    auto up = ask<learn_update>(actors.sona, feedback_atom::value, fb);
    if (!up)
      return reply_error(res, up.error());
    const auto& tiers = cfg.router.tiers;
    send_json(res, {{"request_id", format_request_id(fb.request_id)},
                    {"accepted", true},
                    {"tier", up->tier < tiers.size() ? tiers[up->tier].name : ""},
                    {"pattern_id", up->pattern_id},
                    {"reward", fb.quality - (up->tier < tiers.size() ? tiers[up->tier].cost : 0)}});
  }

  static json learn_json(const actors::learn_status& s) {
    return {
      {"router_v2", {{"enabled", s.v2}, {"ready", s.v2_ready}, {"model_version", s.model_version}}},
      {"instant",
       {{"steps", s.instant_steps},
        {"mean_loss", s.instant_loss},
        {"pending", s.pending},
        {"dropped", s.dropped},
        {"scoped_adapters", s.scoped_adapters},
        {"adapter_refusals", s.adapter_refusals}}},
      {"background",
       {{"runs", s.background_runs},
        {"last_ms", s.background_last_ms},
        {"last_loss", s.background_loss},
        {"last_duration_ms", s.background_ms},
        {"task_boundaries", s.task_boundaries},
        {"trajectories", s.completed},
        {"since_last_run", s.since_background}}},
      {"deep", {{"runs", s.deep_runs}, {"last_ms", s.deep_last_ms}, {"last", s.deep_summary}}},
      {"last_error", s.last_error}};
  }

  /// GET /v1/learn/status, POST /v1/learn/trigger {"loop": "background" | "deep"}
  /// (answers when the run is done).
  void handle_learn(const httplib::Request* trigger, httplib::Response& res) {
    caf::expected<actors::learn_status> st{caf::error{}};
    if (!trigger) {
      st = ask<actors::learn_status>(actors.sona, actors::status_atom::value);
    } else {
      auto body = parse_object(*trigger, res);
      if (!body)
        return;
      auto loop = body->find("loop");
      if (loop == body->end() || !loop->is_string())
        return send_error(res, errc::invalid_argument, "loop must be \"background\" or \"deep\"");
      st = ask<actors::learn_status>(actors.sona, actors::trigger_atom::value,
                                     loop->get<std::string>());
    }
    if (!st)
      return reply_error(res, st.error(),
                         trigger ? "; the run goes on: GET /v1/learn/status shows when it is done"
                                 : "");
    send_json(res, learn_json(*st));
  }

  std::map<std::string, uint64_t> error_counts() {
    std::lock_guard<std::mutex> guard(errors_mutex);
    return errors;
  }

  void observe_response(const httplib::Response& res) {
    n_http.fetch_add(1, std::memory_order_relaxed);
    if (res.status >= 400) {
      std::lock_guard<std::mutex> guard(errors_mutex);
      ++errors[current_error_code.empty() ? std::to_string(res.status) : current_error_code];
    }
    current_error_code.clear();
  }

  /// One snapshot of every actor's statistics (node/stats.hpp), each asked
  /// once with the request timeout. With `with_learn`, SONA's loops too
  /// (left out if SONA does not answer, so the rest still comes).
  caf::expected<stats_snapshot> collect(bool with_learn) {
    stats_snapshot snap;
    snap.node = cfg.name;
    snap.tiers = cfg.router.tiers;
    snap.now_ms = core::utc_now_ms();
    auto r = ask<router_stats>(actors.router, stats_atom::value);
    if (!r)
      return r.error();
    snap.router = *r;
    auto w = ask<witness_stats>(actors.witness, stats_atom::value);
    if (!w)
      return w.error();
    snap.witness = *w;
    auto t = ask<telemetry_snapshot>(actors.telemetry, stats_atom::value);
    if (!t)
      return t.error();
    snap.telemetry = std::move(*t);
    if (actors.memory) {
      auto m = ask<actors::memory_stats>(actors.memory, stats_atom::value);
      if (!m)
        return m.error();
      snap.memory = *m;
    }
    for (const auto& tier : actors.tiers) {
      if (!tier.engine)
        continue;
      auto e = ask<actors::engine_stats>(tier.engine, stats_atom::value);
      if (!e)
        return e.error();
      snap.engines.push_back(std::move(*e));
    }
    if (actors.bridge) {
      auto f = ask<federation::federation_stats>(actors.bridge, stats_atom::value);
      if (!f)
        return f.error();
      auto d = ask<proto::router_digest>(actors.router, proto::digest_atom::value);
      if (!d)
        return d.error();
      snap.fed = std::move(*f);
      snap.digest = std::move(*d);
    }
    if (with_learn && actors.sona)
      if (auto l = ask<actors::learn_status>(actors.sona, actors::status_atom::value))
        snap.learn = std::move(*l);
    snap.http_requests = n_http.load();
    snap.http_errors = error_counts();
    return snap;
  }

  void handle_stats(const httplib::Request&, httplib::Response& res) {
    auto s = collect(false);
    if (!s)
      return reply_error(res, s.error());
    send_json(res, render_stats_json(*s));
  }

  void handle_metrics(const httplib::Request&, httplib::Response& res) {
    auto s = collect(true);
    if (!s)
      return reply_error(res, s.error());
    res.status = 200;
    res.set_content(render_metrics(*s), "text/plain; version=0.0.4; charset=utf-8");
  }

  static json policy_json(const std::string& tier, const engine::kv_policy& p) {
    return {{"tier", tier},
            {"recent_tokens", p.recent_tokens},
            {"old_k_type", kernels::to_string(p.old_k_type)},
            {"old_v_type", kernels::to_string(p.old_v_type)},
            {"migrate_pages", p.migrate_pages}};
  }

  /// GET: the tier's KV policy; PUT: changes the fields given (kept in LMDB).
  void handle_kv_policy(const std::string& tier, const httplib::Request* put,
                        httplib::Response& res) {
    if (!actors.memory)
      return send_error(res, errc::not_found, "no memory pool on this node");
    auto cur = ask<engine::kv_policy>(actors.memory, actors::policy_atom::value, tier);
    if (!cur)
      return reply_error(res, cur.error());
    if (!put)
      return send_json(res, policy_json(tier, *cur));
    auto body = parse_object(*put, res);
    if (!body)
      return;
    engine::kv_policy p = *cur;
    for (const auto& [key, v] : body->items()) {
      if (key == "recent_tokens" || key == "migrate_pages") {
        if (!v.is_number_integer() || v.get<int64_t>() < (key == "recent_tokens" ? 0 : 1)
            || v.get<int64_t>() > (key == "recent_tokens" ? 1048576 : 1024))
          return send_error(res, errc::invalid_argument,
                            key
                              + (key == "recent_tokens" ? " must be an integer in [0, 1048576]"
                                                        : " must be an integer in [1, 1024]"));
        (key == "recent_tokens" ? p.recent_tokens : p.migrate_pages) = v.get<uint32_t>();
      } else if (key == "old_k_type" || key == "old_v_type") {
        auto t = v.is_string() ? kernels::parse_kv_type(v.get<std::string>()) : std::nullopt;
        if (!t || *t == kernels::kv_type::f32)
          return send_error(res, errc::invalid_argument, key + " must be f16, q8_0 or q4_0");
        (key == "old_k_type" ? p.old_k_type : p.old_v_type) = *t;
      } else {
        return send_error(res, errc::invalid_argument,
                          "unknown field " + key
                            + " (recent_tokens, old_k_type, old_v_type, "
                              "migrate_pages)");
      }
    }
    auto applied = ask<engine::kv_policy>(actors.memory, actors::policy_atom::value, tier, p);
    if (!applied)
      return reply_error(res, applied.error());
    send_json(res, policy_json(tier, *applied));
  }
};

gateway::gateway(caf::actor_system& sys, const node_config& cfg, gateway_actors actors)
  : impl_(std::make_unique<impl>(sys, cfg, std::move(actors))) {
  auto& svr = impl_->server;
  auto* self = impl_.get();
  svr.new_task_queue = [n = cfg.http.threads] { return new httplib::ThreadPool(n); };
  svr.set_payload_max_length(cfg.http.max_body_bytes);
  svr.set_keep_alive_max_count(100000);
  svr.set_keep_alive_timeout(30);
  svr.set_tcp_nodelay(true);
  self->openai =
    std::make_unique<openai_api>(sys, cfg, self->actors.tiers, self->actors.router, self->embedder,
                                 self->actors.sessions, self->actors.sona);
  self->openai->install(svr);
  svr.Post("/v1/route",
           [self](const httplib::Request& q, httplib::Response& r) { self->handle_route(q, r); });
  svr.Post("/v1/feedback", [self](const httplib::Request& q, httplib::Response& r) {
    self->handle_feedback(q, r);
  });
  svr.Get("/v1/stats",
          [self](const httplib::Request& q, httplib::Response& r) { self->handle_stats(q, r); });
  svr.Get("/metrics",
          [self](const httplib::Request& q, httplib::Response& r) { self->handle_metrics(q, r); });
  svr.Get(R"(/v1/tiers/([A-Za-z0-9._\-]+)/kv_policy)",
          [self](const httplib::Request& q, httplib::Response& r) {
            self->handle_kv_policy(q.matches[1], nullptr, r);
          });
  svr.Put(R"(/v1/tiers/([A-Za-z0-9._\-]+)/kv_policy)",
          [self](const httplib::Request& q, httplib::Response& r) {
            self->handle_kv_policy(q.matches[1], &q, r);
          });
  svr.Get("/v1/learn/status", [self](const httplib::Request&, httplib::Response& r) {
    self->handle_learn(nullptr, r);
  });
  svr.Post("/v1/learn/trigger",
           [self](const httplib::Request& q, httplib::Response& r) { self->handle_learn(&q, r); });
  svr.Get("/healthz", [](const httplib::Request&, httplib::Response& r) {
    r.set_content(R"({"status":"ok"})", "application/json");
  });
  // Errors httplib raises itself (unknown path, body too large, bad request
  // line) get the same JSON error shape as ours.
  svr.set_error_handler(
    httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty())
        return httplib::Server::HandlerResponse::Unhandled;
      errc code = errc::invalid_argument;
      std::string msg = "bad request";
      if (res.status == 404) {
        code = errc::not_found;
        msg = "no endpoint " + req.method + " " + req.path;
      } else if (res.status == 413) {
        code = errc::payload_too_large;
        msg = "request body exceeds http.max_body_bytes";
      } else if (res.status >= 500) {
        code = errc::internal;
        msg = "internal error";
      }
      int status = res.status;
      send_error(res, code, msg);
      res.status = status;
      return httplib::Server::HandlerResponse::Handled;
    }));
  svr.set_exception_handler(
    [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown exception";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      spdlog::error("http: handler threw: {}", what);
      send_error(res, errc::internal, "internal error");
    });
  svr.set_logger(
    [self](const httplib::Request&, const httplib::Response& res) { self->observe_response(res); });
}

gateway::~gateway() = default;

core::result<int> gateway::bind() {
  const auto& h = impl_->cfg.http;
  int port = static_cast<int>(h.port);
  if (port == 0)
    port = impl_->server.bind_to_any_port(h.address);
  else if (!impl_->server.bind_to_port(h.address, port))
    port = -1;
  if (port < 0)
    return core::error{errc::unavailable,
                       "cannot listen on " + h.address + ":" + std::to_string(h.port), "http.port"};
  impl_->port = port;
  return port;
}

void gateway::serve() {
  impl_->server.listen_after_bind();
}

namespace {

/// Shuts down the reading side of every connected TCP socket of this process
/// whose local port is `port`: idle keep-alive connections then see end of
/// file and close, while a request being handled still writes its response.
/// cpp-httplib 0.11 (Debian 12) otherwise waits out the keep-alive timeout
/// of each idle connection before stop() lets listen() return.
void shutdown_connections(int port) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    int fd = -1;
    try {
      fd = std::stoi(entry.path().filename().string());
    } catch (const std::exception&) {
      continue;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
      continue;
    sockaddr_storage local{}, peer{};
    socklen_t len = sizeof(local);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0)
      continue;
    int local_port = -1;
    if (local.ss_family == AF_INET)
      local_port = ntohs(reinterpret_cast<sockaddr_in*>(&local)->sin_port);
    else if (local.ss_family == AF_INET6)
      local_port = ntohs(reinterpret_cast<sockaddr_in6*>(&local)->sin6_port);
    len = sizeof(peer);
    if (local_port != port || getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0)
      continue; // another socket, or the listening socket itself
    ::shutdown(fd, SHUT_RD);
  }
}

} // namespace

void gateway::stop() {
  impl_->server.stop();
  if (impl_->port > 0)
    shutdown_connections(impl_->port);
}

} // namespace shoal::node
