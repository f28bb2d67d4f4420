#include "node/gateway.hpp"
#include "node/errors.hpp"

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
  json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded()) {
    send_error(res, errc::invalid_argument, "body is not valid JSON");
    return std::nullopt;
  }
  if (!body.is_object()) {
    send_error(res, errc::invalid_argument, "body must be a JSON object");
    return std::nullopt;
  }
  return body;
}

/// Reads an optional string field bounded in length; false after writing a 400.
bool optional_string(const json& body, const char* field, std::string& out,
                     httplib::Response& res) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null())
    return true;
  if (!it->is_string()) {
    send_error(res, errc::invalid_argument, std::string(field) + " must be a string");
    return false;
  }
  out = it->get<std::string>();
  if (out.size() > max_id_field_bytes) {
    send_error(res, errc::invalid_argument,
               std::string(field) + " is longer than " + std::to_string(max_id_field_bytes)
                 + " bytes");
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
  auto v = body.find(name);
  if (v == body.end() || v->is_null())
    return true;
  const double x = v->is_number() ? v->get<double>() : NAN;
  if (!(lo_open ? x > lo : x >= lo) || !(x <= hi)) {
    send_error(res, errc::invalid_argument,
               fmt::format("{} must be a number in {}{}, {}]", name, lo_open ? "(" : "[", lo, hi));
    return false;
  }
  out = x;
  return true;
}

} // namespace

struct gateway::impl {
  caf::actor_system& sys;
  node_config cfg;
  gateway_actors actors;
  engine::embedder embedder;
  httplib::Server server;
  caf::duration timeout;
  /// HTTP responses, and error responses by code (written by every HTTP
  /// worker: an atomic, and a mutex taken only for errors).
  std::atomic<uint64_t> n_http{0};
  std::mutex errors_mutex;
  std::map<std::string, uint64_t> errors;
  int port = 0; ///< bound port, once bind() succeeded
  std::unique_ptr<openai_api> openai;

  impl(caf::actor_system& s, const node_config& c, gateway_actors a)
    : sys(s), cfg(c), actors(std::move(a)), embedder(c.embedder),
      timeout(c.http.request_timeout_ms > 0
                ? caf::duration(std::chrono::milliseconds(c.http.request_timeout_ms))
                : caf::infinite) {}

  /// Sends a request to `dest` and waits for the reply of type T.
  template <class T, class... Ts>
  caf::expected<T> ask(const caf::actor& dest, Ts&&... xs) {
    caf::scoped_actor self{sys};
    caf::expected<T> out{caf::error{}};
    self->request(dest, timeout, std::forward<Ts>(xs)...)
      .receive([&](T& x) { out = std::move(x); }, [&](caf::error& e) { out = std::move(e); });
    return out;
  }

  void reply_error(httplib::Response& res, const caf::error& err) {
    auto v = view(err);
    if (err == caf::sec::request_timeout)
      v = {errc::unavailable, "the node did not answer in time"};
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
                          "embedding has dimension " + std::to_string(emb->size())
                            + ", expected " + std::to_string(embedder.dim()));
      q.embedding.reserve(emb->size());
      for (const auto& x : *emb) {
        if (!x.is_number())
          return send_error(res, errc::invalid_argument,
                            "embedding must be an array of numbers");
        q.embedding.push_back(x.get<float>());
      }
      if (!kernels::all_finite(q.embedding))
        return send_error(res, errc::invalid_argument,
                          "embedding contains NaN or infinite values");
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
    return {{"router_v2",
             {{"enabled", s.v2},
              {"ready", s.v2_ready},
              {"model_version", s.model_version}}},
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
            {"deep",
             {{"runs", s.deep_runs}, {"last_ms", s.deep_last_ms}, {"last", s.deep_summary}}},
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
        return send_error(res, errc::invalid_argument,
                          "loop must be \"background\" or \"deep\"");
      st = ask<actors::learn_status>(actors.sona, actors::trigger_atom::value,
                                     loop->get<std::string>());
    }
    if (!st)
      return reply_error(res, st.error());
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

  struct snapshot {
    router_stats router;
    witness_stats witness;
    telemetry_snapshot telemetry;
    std::optional<federation::federation_stats> fed;
    std::optional<proto::router_digest> digest;
    std::vector<actors::engine_stats> engines; ///< one per tier with a model
    std::optional<actors::memory_stats> memory;
  };

  caf::expected<snapshot> collect() {
    auto r = ask<router_stats>(actors.router, stats_atom::value);
    if (!r)
      return r.error();
    auto w = ask<witness_stats>(actors.witness, stats_atom::value);
    if (!w)
      return w.error();
    auto t = ask<telemetry_snapshot>(actors.telemetry, stats_atom::value);
    if (!t)
      return t.error();
    snapshot snap{*r, *w, std::move(*t), std::nullopt, std::nullopt, {}, std::nullopt};
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
    return snap;
  }

  void handle_stats(const httplib::Request&, httplib::Response& res) {
    auto s = collect();
    if (!s)
      return reply_error(res, s.error());
    const auto& t = s->telemetry;
    json tiers = json::array();
    for (size_t i = 0; i < cfg.router.tiers.size(); ++i) {
      const auto& tc = cfg.router.tiers[i];
      uint64_t fb = i < t.tier_feedback.size() ? t.tier_feedback[i] : 0;
      tiers.push_back({{"name", tc.name},
                       {"cost", tc.cost},
                       {"params_m", tc.params_m},
                       {"routed", i < t.tier_routed.size() ? t.tier_routed[i] : 0},
                       {"share", t.n_routed > 0 ? double(t.tier_routed[i]) / t.n_routed : 0.0},
                       {"feedback", fb},
                       {"mean_quality", fb > 0 ? t.tier_quality_sum[i] / fb : 0.0}});
    }
    json errors = json::object();
    for (const auto& [code, n] : error_counts())
      errors[code] = n;
    json fed = {{"enabled", false}};
    if (s->fed) {
      const auto& f = *s->fed;
      json origins = json::array();
      for (const auto& o : s->digest->origins)
        origins.push_back({{"node", proto::format_request_id(o.node)},
                           {"contributions", o.count},
                           {"max_version", o.max_version},
                           {"hash", proto::format_request_id(o.hash)}});
      json peers = json::array();
      for (const auto& p : f.peers)
        peers.push_back({{"name", p.name},
                         {"node", proto::format_request_id(p.node)},
                         {"last_seen_ms", p.last_seen_ms},
                         {"patterns", p.last.n_patterns}});
      fed = {{"enabled", true},
             {"node_id", proto::format_request_id(f.node_id)},
             {"public_key", f.public_key},
             {"connected", f.connected},
             {"stream_ready", f.stream_ready},
             {"server", f.url},
             {"stream_seq", f.stream_seq},
             {"stream_seq_stored", s->digest->stream_seq},
             {"batches_sent", f.batches_sent},
             {"deltas_sent", f.deltas_sent},
             {"publish_errors", f.publish_errors},
             {"batches_received", f.batches_received},
             {"deltas_merged", f.deltas_merged},
             {"deltas_stale", f.deltas_stale},
             {"patterns_created", f.patterns_created},
             {"orphans", s->digest->orphans},
             {"republishes", f.republishes},
             {"propagation_ms",
              {{"p50", f.lag.quantile(0.5) / 1e6},
               {"p99", f.lag.quantile(0.99) / 1e6},
               {"batches", f.lag.count()}}},
             {"resyncs_requested", f.resyncs_requested},
             {"dropped",
              {{"untrusted", f.dropped_untrusted},
               {"bad_signature", f.dropped_bad_signature},
               {"malformed", f.dropped_malformed},
               {"oversized", f.dropped_oversized},
               {"invalid", f.dropped_invalid}}},
             {"origins", std::move(origins)},
             {"peers", std::move(peers)}};
    }
    send_json(res, {{"node", cfg.name},
                    {"uptime_s", (core::utc_now_ms() - t.started_ms) / 1e3},
                    {"requests", t.n_routed},
                    {"new_patterns", t.n_new_patterns},
                    {"patterns", s->router.n_patterns},
                    {"feedback", t.n_feedback},
                    {"mean_reward", t.n_feedback > 0 ? t.reward_sum / t.n_feedback : 0.0},
                    {"tiers", std::move(tiers)},
                    {"route_latency_ms",
                     {{"count", t.latency_count},
                      {"mean", t.latency_count > 0 ? 1e3 * t.latency_sum_s / t.latency_count : 0.0},
                      {"p50", 1e3 * t.p50_s},
                      {"p90", 1e3 * t.p90_s},
                      {"p99", 1e3 * t.p99_s},
                      {"p999", 1e3 * t.p999_s}}},
                    {"witness",
                     {{"records", s->witness.n_records},
                      {"pending", s->witness.n_pending},
                      {"transactions", s->witness.n_transactions},
                      {"feedback_joined", s->witness.n_feedback},
                      {"write_errors", s->witness.n_errors},
                      {"archived", s->witness.n_archived},
                      {"archive_segments", s->witness.n_archive_files}}},
                    {"engines", engines_json(s->engines)},
                    {"memory", memory_json(s->memory)},
                    {"index_rebuilds", s->router.n_index_rebuilds},
                    {"http", {{"requests", n_http.load()}, {"errors", std::move(errors)}}},
                    {"federation", std::move(fed)}});
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
                            key + (key == "recent_tokens" ? " must be an integer in [0, 1048576]"
                                                          : " must be an integer in [1, 1024]"));
        (key == "recent_tokens" ? p.recent_tokens : p.migrate_pages) = v.get<uint32_t>();
      } else if (key == "old_k_type" || key == "old_v_type") {
        auto t = v.is_string() ? kernels::parse_kv_type(v.get<std::string>()) : std::nullopt;
        if (!t || *t == kernels::kv_type::f32)
          return send_error(res, errc::invalid_argument, key + " must be f16, q8_0 or q4_0");
        (key == "old_k_type" ? p.old_k_type : p.old_v_type) = *t;
      } else {
        return send_error(res, errc::invalid_argument,
                          "unknown field " + key + " (recent_tokens, old_k_type, old_v_type, "
                          "migrate_pages)");
      }
    }
    auto applied = ask<engine::kv_policy>(actors.memory, actors::policy_atom::value, tier, p);
    if (!applied)
      return reply_error(res, applied.error());
    send_json(res, policy_json(tier, *applied));
  }

  static json memory_json(const std::optional<actors::memory_stats>& m) {
    if (!m)
      return json::object();
    return {{"limit_bytes", m->limit_bytes},
            {"used_bytes", m->used_bytes},
            {"used_by",
             {{"kv", m->kv_bytes}, {"adapters", m->adapter_bytes}, {"router", m->router_bytes}}},
            {"pressure_events", m->pressure_events},
            {"trims", m->trims},
            {"trimmed_bytes", m->trimmed_bytes}};
  }

  static json engines_json(const std::vector<actors::engine_stats>& engines) {
    json out = json::array();
    for (const auto& e : engines)
      out.push_back({{"tier", e.tier},
                     {"running", e.running},
                     {"waiting", e.waiting},
                     {"requests", e.requests},
                     {"refused", e.refused},
                     {"cancelled", e.cancelled},
                     {"prompt_tokens", e.prompt_tokens},
                     {"cached_tokens", e.cached_tokens},
                     {"generated_tokens", e.generated_tokens},
                     {"steps", e.steps},
                     {"prefill_seconds", e.prefill_seconds},
                     {"decode_seconds", e.decode_seconds},
                     {"kv",
                      {{"pages_recent", e.kv.pages_recent},
                       {"pages_old", e.kv.pages_old},
                       {"pages_cached", e.kv.pages_cached},
                       {"bytes_cached", e.kv.bytes_cached},
                       {"bytes_recent", e.kv.bytes_recent},
                       {"bytes_old", e.kv.bytes_old},
                       {"page_bytes_recent", e.kv.page_bytes_recent},
                       {"page_bytes_old", e.kv.page_bytes_old},
                       {"prefix_hits", e.kv.prefix_hits},
                       {"prefix_misses", e.kv.prefix_misses},
                       {"evictions", e.kv.evictions},
                       {"migrations", e.kv.migrations},
                       {"copies", e.kv.copies},
                       {"alloc_failures", e.kv.alloc_failures},
                       {"spills", e.kv.spills},
                       {"restores", e.kv.restores},
                       {"spill_failures", e.kv.spill_failures}}},
                     {"memory_budget", {{"used_bytes", e.budget_used}, {"limit_bytes", e.budget_limit}}}});
    return out;
  }

  void handle_metrics(const httplib::Request&, httplib::Response& res) {
    auto s = collect();
    if (!s)
      return reply_error(res, s.error());
    const auto& t = s->telemetry;
    std::ostringstream out;
    out.precision(17);
    auto metric = [&](const char* name, const char* type, const char* help) {
      out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
    };
    const std::string node_label = "node=\"" + cfg.name + "\"";
    metric("shoal_route_requests_total", "counter", "Routed requests by chosen tier.");
    for (size_t i = 0; i < cfg.router.tiers.size(); ++i)
      out << "shoal_route_requests_total{" << node_label << ",tier=\""
          << cfg.router.tiers[i].name << "\"} " << t.tier_routed[i] << '\n';
    metric("shoal_feedback_total", "counter", "Feedback accepted, by tier.");
    for (size_t i = 0; i < cfg.router.tiers.size(); ++i)
      out << "shoal_feedback_total{" << node_label << ",tier=\"" << cfg.router.tiers[i].name
          << "\"} " << t.tier_feedback[i] << '\n';
    metric("shoal_feedback_quality_sum", "counter", "Sum of feedback quality, by tier.");
    for (size_t i = 0; i < cfg.router.tiers.size(); ++i)
      out << "shoal_feedback_quality_sum{" << node_label << ",tier=\""
          << cfg.router.tiers[i].name << "\"} " << t.tier_quality_sum[i] << '\n';
    metric("shoal_reward_sum", "counter", "Sum of reward (quality minus tier cost).");
    out << "shoal_reward_sum{" << node_label << "} " << t.reward_sum << '\n';
    metric("shoal_patterns", "gauge", "Patterns in the router's bank.");
    out << "shoal_patterns{" << node_label << "} " << s->router.n_patterns << '\n';
    metric("shoal_patterns_created_total", "counter", "Patterns created by routed requests.");
    out << "shoal_patterns_created_total{" << node_label << "} " << t.n_new_patterns << '\n';
    metric("shoal_route_latency_seconds", "histogram",
           "Time from request parsed to routing decision.");
    for (size_t i = 0; i < t.bucket_le_s.size(); ++i)
      out << "shoal_route_latency_seconds_bucket{" << node_label << ",le=\"" << t.bucket_le_s[i]
          << "\"} " << t.bucket_counts[i] << '\n';
    out << "shoal_route_latency_seconds_bucket{" << node_label << ",le=\"+Inf\"} "
        << t.latency_count << '\n';
    out << "shoal_route_latency_seconds_sum{" << node_label << "} " << t.latency_sum_s << '\n';
    out << "shoal_route_latency_seconds_count{" << node_label << "} " << t.latency_count
        << '\n';
    metric("shoal_witness_records_total", "counter", "Witness records committed to LMDB.");
    out << "shoal_witness_records_total{" << node_label << "} " << s->witness.n_records << '\n';
    metric("shoal_witness_pending", "gauge", "Witness records waiting for their transaction.");
    out << "shoal_witness_pending{" << node_label << "} " << s->witness.n_pending << '\n';
    metric("shoal_witness_transactions_total", "counter", "Witness write transactions.");
    out << "shoal_witness_transactions_total{" << node_label << "} "
        << s->witness.n_transactions << '\n';
    metric("shoal_witness_write_errors_total", "counter", "Failed witness transactions.");
    out << "shoal_witness_write_errors_total{" << node_label << "} " << s->witness.n_errors
        << '\n';
    metric("shoal_witness_archived_total", "counter",
           "Witness records moved from LMDB to archive segments.");
    out << "shoal_witness_archived_total{" << node_label << "} " << s->witness.n_archived
        << '\n';
    metric("shoal_witness_archive_segments_total", "counter", "Witness archive segments written.");
    out << "shoal_witness_archive_segments_total{" << node_label << "} "
        << s->witness.n_archive_files << '\n';
    metric("shoal_http_requests_total", "counter", "HTTP requests answered.");
    out << "shoal_http_requests_total{" << node_label << "} " << n_http.load() << '\n';
    metric("shoal_http_errors_total", "counter", "HTTP error responses by error code.");
    for (const auto& [code, n] : error_counts())
      out << "shoal_http_errors_total{" << node_label << ",code=\"" << code << "\"} " << n
          << '\n';
    if (s->fed) {
      const auto& f = *s->fed;
      metric("shoal_federation_connected", "gauge", "1 when connected to a NATS server.");
      out << "shoal_federation_connected{" << node_label << "} " << (f.connected ? 1 : 0)
          << '\n';
      metric("shoal_federation_deltas_sent_total", "counter", "Pattern deltas published.");
      out << "shoal_federation_deltas_sent_total{" << node_label << "} " << f.deltas_sent
          << '\n';
      metric("shoal_federation_batches_sent_total", "counter", "Delta batches published.");
      out << "shoal_federation_batches_sent_total{" << node_label << "} " << f.batches_sent
          << '\n';
      metric("shoal_federation_deltas_merged_total", "counter",
             "Peers' deltas that changed a pattern here.");
      out << "shoal_federation_deltas_merged_total{" << node_label << "} " << f.deltas_merged
          << '\n';
      metric("shoal_federation_stream_sequence", "gauge",
             "Last JetStream sequence of the pattern stream received.");
      out << "shoal_federation_stream_sequence{" << node_label << "} " << f.stream_seq
          << '\n';
      metric("shoal_federation_dropped_total", "counter",
             "Federation messages dropped, by reason.");
      for (auto [reason, n] : {std::pair{"untrusted", f.dropped_untrusted},
                               std::pair{"bad_signature", f.dropped_bad_signature},
                               std::pair{"malformed", f.dropped_malformed},
                               std::pair{"oversized", f.dropped_oversized},
                               std::pair{"invalid", f.dropped_invalid}})
        out << "shoal_federation_dropped_total{" << node_label << ",reason=\"" << reason
            << "\"} " << n << '\n';
      metric("shoal_federation_propagation_seconds", "histogram",
             "Lag from the oldest change in a peer's batch to its merge here (assumes "
             "synchronised clocks).");
      for (double le : {0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0})
        out << "shoal_federation_propagation_seconds_bucket{" << node_label << ",le=\"" << le
            << "\"} " << f.lag.cumulative_le(le * 1e9) << '\n';
      out << "shoal_federation_propagation_seconds_bucket{" << node_label << ",le=\"+Inf\"} "
          << f.lag.count() << '\n';
      out << "shoal_federation_propagation_seconds_sum{" << node_label << "} "
          << f.lag.sum_ns() / 1e9 << '\n';
      out << "shoal_federation_propagation_seconds_count{" << node_label << "} "
          << f.lag.count() << '\n';
      metric("shoal_federation_republishes_total", "counter",
             "Times this node republished its contributions (anti-entropy, resync).");
      out << "shoal_federation_republishes_total{" << node_label << "} " << f.republishes
          << '\n';
    }
    // Engines, one series per tier with a model (names after vLLM's).
    auto per_engine = [&](const char* name, const char* type, const char* help, auto value) {
      if (s->engines.empty())
        return;
      metric(name, type, help);
      for (const auto& e : s->engines)
        out << name << '{' << node_label << ",tier=\"" << e.tier << "\"} " << value(e) << '\n';
    };
    per_engine("shoal_engine_requests_running", "gauge", "Sequences in the running batch.",
               [](const auto& e) { return e.running; });
    per_engine("shoal_engine_requests_waiting", "gauge", "Sequences queued for a batch slot.",
               [](const auto& e) { return e.waiting; });
    per_engine("shoal_engine_requests_total", "counter", "Generation requests submitted.",
               [](const auto& e) { return e.requests; });
    per_engine("shoal_engine_requests_refused_total", "counter",
               "Generation requests refused (bad parameters, context overflow).",
               [](const auto& e) { return e.refused; });
    per_engine("shoal_engine_requests_cancelled_total", "counter",
               "Sequences cancelled because their client left.",
               [](const auto& e) { return e.cancelled; });
    per_engine("shoal_engine_prompt_tokens_total", "counter", "Prompt tokens prefilled.",
               [](const auto& e) { return e.prompt_tokens; });
    per_engine("shoal_engine_prompt_cached_tokens_total", "counter",
               "Prompt tokens taken from the prefix cache instead of prefilled.",
               [](const auto& e) { return e.cached_tokens; });
    per_engine("shoal_kv_pages_recent", "gauge", "KV pages in the recent (F16) tier.",
               [](const auto& e) { return e.kv.pages_recent; });
    per_engine("shoal_kv_pages_old", "gauge", "KV pages in the old (quantized) tier.",
               [](const auto& e) { return e.kv.pages_old; });
    per_engine("shoal_kv_pages_free", "gauge",
               "Recent-tier KV pages the memory budget still has room for (shared by all "
               "tiers: each tier's figure assumes the room goes to it).",
               [](const auto& e) {
                 return e.kv.page_bytes_recent == 0 || e.budget_limit < e.budget_used
                          ? 0
                          : (e.budget_limit - e.budget_used) / e.kv.page_bytes_recent;
               });
    per_engine("shoal_kv_pages_cached", "gauge",
               "KV pages no sequence uses, kept for prefix hits (evictable).",
               [](const auto& e) { return e.kv.pages_cached; });
    per_engine("shoal_kv_bytes_per_token_recent", "gauge",
               "Bytes of KV cache per token in the recent tier (all layers, K and V).",
               [](const auto& e) { return double(e.kv.page_bytes_recent) / e.kv.page_tokens; });
    per_engine("shoal_kv_bytes_per_token_old", "gauge",
               "Bytes of KV cache per token in the old tier (all layers, K and V).",
               [](const auto& e) { return double(e.kv.page_bytes_old) / e.kv.page_tokens; });
    per_engine("shoal_kv_prefix_hits_total", "counter", "Prompt pages found in the prefix cache.",
               [](const auto& e) { return e.kv.prefix_hits; });
    per_engine("shoal_kv_prefix_misses_total", "counter",
               "Prompt pages looked up and not found.",
               [](const auto& e) { return e.kv.prefix_misses; });
    per_engine("shoal_kv_evictions_total", "counter",
               "Cached KV pages freed to make room within the budget.",
               [](const auto& e) { return e.kv.evictions; });
    per_engine("shoal_kv_migrations_total", "counter", "KV pages moved to the old tier.",
               [](const auto& e) { return e.kv.migrations; });
    per_engine("shoal_kv_spills_total", "counter",
               "Evicted KV pages sealed and written to LMDB (kv_spill).",
               [](const auto& e) { return e.kv.spills; });
    per_engine("shoal_kv_restores_total", "counter",
               "Spilled KV pages read back for a prompt prefix.",
               [](const auto& e) { return e.kv.restores; });
    per_engine("shoal_engine_generation_tokens_total", "counter", "Tokens generated.",
               [](const auto& e) { return e.generated_tokens; });
    per_engine("shoal_engine_steps_total", "counter", "Forward passes (batched steps).",
               [](const auto& e) { return e.steps; });
    per_engine("shoal_engine_prefill_seconds_total", "counter",
               "Time spent in steps that prefilled prompt tokens.",
               [](const auto& e) { return e.prefill_seconds; });
    per_engine("shoal_engine_decode_seconds_total", "counter",
               "Time spent in decode-only steps.",
               [](const auto& e) { return e.decode_seconds; });
    if (s->memory) {
      const auto& m = *s->memory;
      metric("shoal_memory_budget_bytes", "gauge",
             "The node's memory budget (KV pages, adapters, router weights).");
      out << "shoal_memory_budget_bytes{" << node_label << "} " << m.limit_bytes << '\n';
      metric("shoal_memory_used_bytes", "gauge", "Bytes reserved from the memory budget, by use.");
      for (auto [use, n] : {std::pair{"kv", m.kv_bytes}, std::pair{"adapters", m.adapter_bytes},
                            std::pair{"router", m.router_bytes}})
        out << "shoal_memory_used_bytes{" << node_label << ",use=\"" << use << "\"} " << n << '\n';
      metric("shoal_memory_pressure_total", "counter",
             "Times a tier found no KV memory after evicting its own cached pages.");
      out << "shoal_memory_pressure_total{" << node_label << "} " << m.pressure_events << '\n';
      metric("shoal_memory_trimmed_bytes_total", "counter",
             "Cached KV bytes other tiers freed at the memory pool's request.");
      out << "shoal_memory_trimmed_bytes_total{" << node_label << "} " << m.trimmed_bytes << '\n';
    }
    // SONA's loops (the same figures as GET /v1/learn/status); left out if
    // SONA does not answer, so the other metrics still come.
    std::optional<actors::learn_status> learn;
    if (actors.sona)
      if (auto l = ask<actors::learn_status>(actors.sona, actors::status_atom::value))
        learn = std::move(*l);
    if (learn) {
      const auto& l = *learn;
      auto one = [&](const char* name, const char* type, const char* help, double v) {
        metric(name, type, help);
        out << name << '{' << node_label << "} " << v << '\n';
      };
      one("shoal_sona_v2_ready", "gauge", "1 when a trained router v2 routes, else 0.",
          l.v2_ready ? 1 : 0);
      one("shoal_sona_model_version", "gauge", "Background runs behind the routing model.",
          static_cast<double>(l.model_version));
      one("shoal_sona_instant_steps_total", "counter", "Instant-loop steps (one per feedback).",
          static_cast<double>(l.instant_steps));
      one("shoal_sona_instant_loss", "gauge", "Mean loss of the last 100 instant steps.",
          l.instant_loss);
      one("shoal_sona_trajectories_pending", "gauge",
          "Router v2 decisions waiting for feedback.", static_cast<double>(l.pending));
      one("shoal_sona_trajectories_dropped_total", "counter",
          "Decisions the full trajectory ring refused (no instant step for them).",
          static_cast<double>(l.dropped));
      one("shoal_sona_background_runs_total", "counter", "Background-loop training runs.",
          static_cast<double>(l.background_runs));
      one("shoal_sona_background_last_duration_seconds", "gauge",
          "Duration of the last background run.", l.background_ms / 1e3);
      one("shoal_sona_background_last_loss", "gauge", "Mean training loss of the last run.",
          l.background_loss);
      one("shoal_sona_task_boundaries_total", "counter", "EWC++ task boundaries detected.",
          static_cast<double>(l.task_boundaries));
      one("shoal_sona_deep_runs_total", "counter", "Deep-loop consolidation runs.",
          static_cast<double>(l.deep_runs));
      one("shoal_sona_scoped_adapters", "gauge", "Scopes with their own MicroLoRA adapter.",
          static_cast<double>(l.scoped_adapters));
      one("shoal_sona_adapter_refusals_total", "counter",
          "Scoped adapters the memory budget refused.", static_cast<double>(l.adapter_refusals));
    }
    metric("shoal_start_time_seconds", "gauge", "Node start time, seconds since the epoch.");
    out << "shoal_start_time_seconds{" << node_label << "} " << t.started_ms / 1e3 << '\n';
    res.status = 200;
    res.set_content(out.str(), "text/plain; version=0.0.4; charset=utf-8");
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
  self->openai = std::make_unique<openai_api>(sys, cfg, self->actors.tiers, self->actors.router,
                                              self->embedder, self->actors.sessions,
                                              self->actors.sona);
  self->openai->install(svr);
  svr.Post("/v1/route", [self](const httplib::Request& q, httplib::Response& r) {
    self->handle_route(q, r);
  });
  svr.Post("/v1/feedback", [self](const httplib::Request& q, httplib::Response& r) {
    self->handle_feedback(q, r);
  });
  svr.Get("/v1/stats", [self](const httplib::Request& q, httplib::Response& r) {
    self->handle_stats(q, r);
  });
  svr.Get("/metrics", [self](const httplib::Request& q, httplib::Response& r) {
    self->handle_metrics(q, r);
  });
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
  svr.Post("/v1/learn/trigger", [self](const httplib::Request& q, httplib::Response& r) {
    self->handle_learn(&q, r);
  });
  svr.Get("/healthz", [](const httplib::Request&, httplib::Response& r) {
    r.set_content(R"({"status":"ok"})", "application/json");
  });
  // Errors httplib raises itself (unknown path, body too large, bad request
  // line) get the same JSON error shape as ours.
  svr.set_error_handler(httplib::Server::HandlerWithResponse(
    [](const httplib::Request& req, httplib::Response& res) {
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
  svr.set_logger([self](const httplib::Request&, const httplib::Response& res) {
    self->observe_response(res);
  });
}

gateway::~gateway() = default;

std::variant<int, std::string> gateway::bind() {
  const auto& h = impl_->cfg.http;
  int port = static_cast<int>(h.port);
  if (port == 0)
    port = impl_->server.bind_to_any_port(h.address);
  else if (!impl_->server.bind_to_port(h.address, port))
    port = -1;
  if (port < 0)
    return "cannot listen on " + h.address + ":" + std::to_string(h.port);
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
