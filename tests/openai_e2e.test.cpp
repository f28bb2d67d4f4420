// The OpenAI-compatible API of a real `shoal node` with the default config's
// demo tiers (random-weight GGUFs from the model cache): completions, chat,
// streaming over SSE, embeddings, models, and the errors OpenAI clients
// expect. The official `openai` npm client is driven by tests/openai_client.mjs.
#include "node_process.hpp"
#include "proto/messages.hpp"
#include "proto/records.hpp"
#include "store/environment.hpp"

#include <doctest/doctest.h>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <thread>

using namespace shoal::testing;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

/// A seal key for tests (memory.seal_key: sessions and spilled pages).
const std::string seal_key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

std::unique_ptr<node_process> start_node(const temp_dir& dir, std::vector<std::string> args = {}) {
  std::string log;
  auto node = node_process::start(dir.path(), std::move(args), &log);
  REQUIRE_MESSAGE(node, "node did not start: " << log);
  return node;
}

/// A node with sessions (memory.seal_key set).
std::unique_ptr<node_process> start_sealed(const temp_dir& dir) {
  return start_node(dir, {"--set", "memory.seal_key=" + seal_key});
}

json post(httplib::Client& c, const char* path, const json& body, int expect_status) {
  auto r = c.Post(path, body.dump(), "application/json");
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == expect_status);
  auto j = json::parse(r->body, nullptr, false);
  REQUIRE_FALSE(j.is_discarded());
  return j;
}

/// The /v1/stats entry of one tier's engine.
json engine_json(httplib::Client& c, const std::string& tier) {
  auto s = c.Get("/v1/stats");
  REQUIRE(s);
  auto all = json::parse(s->body);
  for (auto& x : all["engines"])
    if (x["tier"] == tier)
      return x;
  FAIL("no engine for tier " << tier << " in /v1/stats");
  return json();
}

/// Parses an SSE body into its data payloads.
std::vector<std::string> sse_data(const std::string& body) {
  std::vector<std::string> out;
  size_t at = 0;
  while ((at = body.find("data: ", at)) != std::string::npos) {
    size_t end = body.find("\n\n", at);
    REQUIRE(end != std::string::npos);
    out.push_back(body.substr(at + 6, end - at - 6));
    at = end + 2;
  }
  return out;
}

} // namespace

TEST_CASE("openai: completions and chat completions generate with usage and logprobs") {
  temp_dir dir;
  auto node = start_node(dir);
  auto c = node->client();
  c.set_read_timeout(60, 0);

  auto models = c.Get("/v1/models");
  REQUIRE(models);
  auto m = json::parse(models->body);
  CHECK(m["object"] == "list");
  std::vector<std::string> ids;
  for (auto& x : m["data"])
    ids.push_back(x["id"]);
  CHECK(std::find(ids.begin(), ids.end(), "auto") != ids.end());
  CHECK(std::find(ids.begin(), ids.end(), "demo-15m") != ids.end());

  auto r = post(c, "/v1/completions",
                {{"model", "demo-15m"},
                 {"prompt", "Debian is"},
                 {"max_tokens", 7},
                 {"temperature", 0},
                 {"logprobs", 3}},
                200);
  CHECK(r["object"] == "text_completion");
  CHECK(r["model"] == "demo-15m");
  CHECK(r["choices"][0]["finish_reason"] == "length");
  CHECK(r["usage"]["completion_tokens"] == 7);
  CHECK(r["usage"]["prompt_tokens"].get<int>() > 1);
  CHECK(r["usage"]["total_tokens"] == r["usage"]["prompt_tokens"].get<int>() + 7);
  auto lp = r["choices"][0]["logprobs"];
  REQUIRE(lp["tokens"].size() == 7);
  for (size_t i = 0; i < 7; ++i) {
    CHECK(lp["token_logprobs"][i].get<double>() <= 0.0);
    CHECK(lp["top_logprobs"][i].size() <= 3);
  }
  // Greedy decoding is deterministic: the same request gives the same text.
  auto again = post(
    c, "/v1/completions",
    {{"model", "demo-15m"}, {"prompt", "Debian is"}, {"max_tokens", 7}, {"temperature", 0}}, 200);
  CHECK(again["choices"][0]["text"] == r["choices"][0]["text"]);

  auto chat = post(
    c, "/v1/chat/completions",
    {{"model", "demo-tiny"},
     {"messages",
      {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hello"}}}},
     {"max_tokens", 5},
     {"seed", 3},
     {"logprobs", true},
     {"top_logprobs", 2}},
    200);
  CHECK(chat["object"] == "chat.completion");
  CHECK(chat["id"].get<std::string>().rfind("chatcmpl-", 0) == 0);
  CHECK(chat["choices"][0]["message"]["role"] == "assistant");
  CHECK(chat["choices"][0]["message"]["content"].is_string());
  CHECK(chat["choices"][0]["logprobs"]["content"].size() == 5);
  CHECK(chat["choices"][0]["logprobs"]["content"][0]["top_logprobs"].size() == 2);

  // model "auto" goes through the router; its id carries the routing request id.
  auto routed = post(c, "/v1/chat/completions",
                     {{"model", "auto"},
                      {"messages", {{{"role", "user"}, {"content", "GNU C compiler"}}}},
                      {"max_tokens", 2}},
                     200);
  auto rid = routed["id"].get<std::string>().substr(std::string("chatcmpl-").size());
  CHECK(rid.size() == 16);
  auto fb =
    c.Post("/v1/feedback", json{{"request_id", rid}, {"quality", 0.7}}.dump(), "application/json");
  REQUIRE(fb);
  CHECK(fb->status == 200);
}

TEST_CASE("openai: echo with logprobs scores the prompt (max_tokens 0), as lm-evaluation-harness "
          "asks") {
  temp_dir dir;
  auto node = start_node(dir);
  auto c = node->client();
  c.set_read_timeout(60, 0);
  const std::string prompt = "Debian is a free operating system for your computer";
  json base = {{"model", "demo-15m"}, {"prompt", prompt}, {"temperature", 0}, {"logprobs", 2}};

  json scored = base;
  scored["echo"] = true;
  scored["max_tokens"] = 0;
  auto s = post(c, "/v1/completions", scored, 200);
  const auto& ch = s["choices"][0];
  CHECK(ch["text"] == prompt); // nothing generated, the prompt echoed
  CHECK(ch["finish_reason"] == "length");
  CHECK(s["usage"]["completion_tokens"] == 0);
  const auto& lp = ch["logprobs"];
  const size_t n = lp["tokens"].size();
  CHECK(n + 1 == s["usage"]["prompt_tokens"].get<size_t>()); // all but the BOS
  REQUIRE(lp["token_logprobs"].size() == n);
  REQUIRE(lp["text_offset"].size() == n);
  CHECK(lp["text_offset"][0] == 0);
  std::string joined;
  for (size_t i = 0; i < n; ++i) {
    CAPTURE(i);
    REQUIRE(lp["token_logprobs"][i].is_number()); // after the BOS every token has context
    const double l = lp["token_logprobs"][i].get<double>();
    CHECK(l <= 0.0);
    CHECK(lp["top_logprobs"][i].size() == 2);
    double best = -1e30;
    for (auto& [tok, v] : lp["top_logprobs"][i].items())
      best = std::max(best, v.get<double>());
    CHECK(l <= best + 1e-6);
    if (i > 0)
      CHECK(lp["text_offset"][i].get<size_t>() >= lp["text_offset"][i - 1].get<size_t>());
    joined += lp["tokens"][i].get<std::string>();
  }
  CHECK(joined == " " + prompt); // SentencePiece's space prefix on the first word

  // Echo and generation together: the prompt's entries, then the greedy
  // token with the logprob a plain request reports for it.
  json plain = base;
  plain["max_tokens"] = 1;
  auto one = post(c, "/v1/completions", plain, 200);
  json both = plain;
  both["echo"] = true;
  auto b = post(c, "/v1/completions", both, 200);
  const auto& blp = b["choices"][0]["logprobs"];
  REQUIRE(blp["tokens"].size() == n + 1);
  CHECK(b["choices"][0]["text"] == prompt + one["choices"][0]["text"].get<std::string>());
  const auto& olp = one["choices"][0]["logprobs"];
  CHECK(blp["tokens"][n] == olp["tokens"][0]);
  CHECK(blp["token_logprobs"][n].get<double>()
        == doctest::Approx(olp["token_logprobs"][0].get<double>()).epsilon(1e-5));
  CHECK(blp["text_offset"][n] == prompt.size());
  for (size_t i = 0; i < n; ++i)
    CHECK(blp["token_logprobs"][i].get<double>()
          == doctest::Approx(lp["token_logprobs"][i].get<double>()).epsilon(1e-5));

  // Streaming: the echo comes first, in one chunk with the prompt's logprobs.
  json streamed = both;
  streamed["stream"] = true;
  auto r = c.Post("/v1/completions", streamed.dump(), "application/json");
  REQUIRE(r);
  REQUIRE(r->status == 200);
  auto events = sse_data(r->body);
  REQUIRE(events.size() >= 2);
  auto first = json::parse(events[0]);
  CHECK(first["choices"][0]["text"].get<std::string>().rfind(prompt, 0) == 0);
  CHECK(first["choices"][0]["logprobs"]["tokens"].size() >= n);
}

TEST_CASE("openai: streaming sends SSE chunks, usage and [DONE]") {
  temp_dir dir;
  auto node = start_node(dir);
  auto c = node->client();
  c.set_read_timeout(60, 0);
  auto r = c.Post("/v1/chat/completions",
                  json{{"model", "demo-tiny"},
                       {"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                       {"max_tokens", 6},
                       {"stream", true},
                       {"stream_options", {{"include_usage", true}}}}
                    .dump(),
                  "application/json");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->get_header_value("Content-Type").find("text/event-stream") == 0);
  auto data = sse_data(r->body);
  REQUIRE(data.size() >= 3);
  CHECK(data.back() == "[DONE]");
  auto first = json::parse(data.front());
  CHECK(first["object"] == "chat.completion.chunk");
  CHECK(first["choices"][0]["delta"]["role"] == "assistant");
  auto usage = json::parse(data[data.size() - 2]);
  CHECK(usage["choices"].empty());
  CHECK(usage["usage"]["completion_tokens"] == 6);
  auto last = json::parse(data[data.size() - 3]);
  CHECK(last["choices"][0]["finish_reason"] == "length");
}

TEST_CASE("openai: bad requests get OpenAI errors and the node keeps serving") {
  temp_dir dir;
  auto node = start_node(dir);
  auto c = node->client();
  c.set_read_timeout(60, 0);
  json msgs = {{{"role", "user"}, {"content", "Hi"}}};
  auto e = post(c, "/v1/chat/completions", {{"model", "gpt-9"}, {"messages", msgs}}, 404);
  CHECK(e["error"]["code"] == "model_not_found");
  CHECK(e["error"]["param"] == "model");
  e = post(c, "/v1/chat/completions",
           {{"model", "demo-tiny"}, {"messages", msgs}, {"temperature", 3}}, 400);
  CHECK(e["error"]["type"] == "invalid_request_error");
  CHECK(e["error"]["param"] == "temperature");
  e = post(c, "/v1/chat/completions", {{"model", "demo-tiny"}, {"messages", msgs}, {"top_p", 0}},
           400);
  CHECK(e["error"]["param"] == "top_p");
  for (json budget : {json("soon"), json(-1), json(1e12)}) {
    e = post(c, "/v1/chat/completions",
             {{"model", "auto"}, {"messages", msgs}, {"latency_budget_ms", budget}}, 400);
    CHECK(e["error"]["param"] == "latency_budget_ms");
  }
  e = post(c, "/v1/chat/completions", {{"model", "demo-tiny"}, {"messages", json::array()}}, 400);
  CHECK(e["error"]["param"] == "messages");
  e = post(c, "/v1/chat/completions",
           {{"model", "demo-tiny"}, {"messages", {{{"role", "wizard"}, {"content", "x"}}}}}, 400);
  CHECK(e["error"]["message"].get<std::string>().find("wizard") != std::string::npos);
  std::string long_prompt;
  for (int i = 0; i < 400; ++i)
    long_prompt += "lorem ipsum ";
  e = post(c, "/v1/completions", {{"model", "demo-tiny"}, {"prompt", long_prompt}}, 400);
  CHECK(e["error"]["code"] == "context_length_exceeded");
  e = post(c, "/v1/completions", {{"model", "demo-tiny"}, {"prompt", "x"}, {"max_tokens", 100000}},
           400);
  CHECK(e["error"]["param"] == "max_tokens");
  auto raw = c.Post("/v1/completions", "{not json", "application/json");
  REQUIRE(raw);
  CHECK(raw->status == 400);

  // A client that disconnects mid-stream: the node frees the sequence and
  // keeps answering.
  {
    httplib::Client quitter("127.0.0.1", node->port());
    quitter.set_read_timeout(5, 0);
    size_t seen = 0;
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = json{
      {"model", "demo-260m"},
      {"prompt", "a long story"},
      {"max_tokens", 2000},
      {"ignore_eos", true},
      {"stream",
       true}}.dump();
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char*, size_t n, uint64_t, uint64_t) {
      seen += n;
      return seen < 2000; // hang up after a few chunks
    };
    auto res = quitter.send(req);
    CHECK(seen > 0);
  }
  auto ok = post(c, "/v1/completions",
                 {{"model", "demo-tiny"}, {"prompt", "still here"}, {"max_tokens", 3}}, 200);
  CHECK(ok["usage"]["completion_tokens"] == 3);
  // The abandoned sequence is cancelled and leaves the batch (its KV pages
  // go with it): the 260M engine reports nothing running.
  json engine = json::object();
  for (int i = 0; i < 100; ++i) {
    engine = engine_json(c, "demo-260m");
    if (engine.value("cancelled", 0) == 1 && engine.value("running", 1) == 0)
      break;
    std::this_thread::sleep_for(50ms);
  }
  INFO(engine.dump());
  CHECK(engine["cancelled"] == 1);
  CHECK(engine["running"] == 0);
  CHECK(engine["waiting"] == 0);
  auto metrics = c.Get("/metrics");
  REQUIRE(metrics);
  CHECK(metrics->body.find(
          "shoal_engine_requests_cancelled_total{node=\"shoal-1\",tier=\"demo-260m\"} 1\n")
        != std::string::npos);

  // embeddings: hashing and a tier's model
  auto emb = post(c, "/v1/embeddings", {{"model", "hashing"}, {"input", {"a b c", "d e f"}}}, 200);
  CHECK(emb["data"].size() == 2);
  CHECK(emb["data"][0]["embedding"].size() == 384);
  auto memb = post(c, "/v1/embeddings", {{"model", "demo-15m"}, {"input", "hello world"}}, 200);
  CHECK(memb["data"][0]["embedding"].size() == 288);
  e = post(c, "/v1/embeddings", {{"model", "hashing"}, {"input", 5}}, 400);
  CHECK(e["error"]["param"] == "input");
  CHECK(node->stop(SIGTERM) == 0);
}

namespace {

/// The official openai package, as ops/install-npm.sh installs it.
std::filesystem::path openai_package() {
  std::filesystem::path dir;
  if (const char* d = std::getenv("SHOAL_NPM_DIR"); d && *d)
    dir = d;
  else if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    dir = std::filesystem::path(x) / "shoal/test-npm";
  else
    dir = std::filesystem::path(std::getenv("HOME") ? std::getenv("HOME") : "/root")
          / ".cache/shoal/test-npm";
  return dir / "node_modules/openai";
}

} // namespace

TEST_CASE("openai: the official openai npm client works unchanged") {
  auto pkg = openai_package();
  REQUIRE_MESSAGE(std::filesystem::exists(pkg / "index.mjs"),
                  pkg.string() << " is missing: run ops/install-npm.sh");
  temp_dir dir;
  auto node = start_node(dir);
  auto r = run_program(SHOAL_NODEJS,
                       {SHOAL_SOURCE_DIR "/tests/openai_client.mjs", node->url(), pkg.string()}, {},
                       std::chrono::seconds(120));
  INFO(r.output);
  CHECK(r.exit_code == 0);
  // Every check printed its line (the script stops at the first failure).
  CHECK(r.output.find("ok - aborting a stream mid-way") != std::string::npos);
  CHECK(node->stop(SIGTERM) == 0);
}

TEST_CASE("openai: a follow-up chat turn reuses the first turn's KV cache (prefix caching)") {
  temp_dir dir;
  auto node = start_node(dir);
  auto c = node->client();
  c.set_read_timeout(60, 0);
  json msgs = {{{"role", "system"},
                {"content", "You are a terse assistant for Debian packaging questions. Answer in "
                            "one short sentence and never use lists."}},
               {{"role", "user"}, {"content", "What does dpkg-buildpackage do?"}}};
  auto engine_stats = [&] { return engine_json(c, "demo-tiny"); };
  auto first =
    post(c, "/v1/chat/completions",
         {{"model", "demo-tiny"}, {"messages", msgs}, {"max_tokens", 12}, {"temperature", 0}}, 200);
  const int p1 = first["usage"]["prompt_tokens"];
  CHECK(p1 > 32);
  CHECK(first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0);
  auto before = engine_stats();

  msgs.push_back({{"role", "assistant"}, {"content", first["choices"][0]["message"]["content"]}});
  msgs.push_back({{"role", "user"}, {"content", "And dpkg-source?"}});
  auto second =
    post(c, "/v1/chat/completions",
         {{"model", "demo-tiny"}, {"messages", msgs}, {"max_tokens", 4}, {"temperature", 0}}, 200);
  const int p2 = second["usage"]["prompt_tokens"];
  const int cached = second["usage"]["prompt_tokens_details"]["cached_tokens"];
  auto after = engine_stats();
  INFO("turn 1 prompt " << p1 << ", turn 2 prompt " << p2 << ", cached " << cached);
  // Every full page of the first turn's prompt is reused (pages of 16 tokens).
  CHECK(cached >= p1 / 16 * 16);
  CHECK(cached % 16 == 0);
  // The engine prefilled only the rest.
  CHECK(after["prompt_tokens"].get<int>() - before["prompt_tokens"].get<int>() == p2 - cached);
  CHECK(after["cached_tokens"].get<int>() - before["cached_tokens"].get<int>() == cached);
  CHECK(after["kv"]["prefix_hits"].get<int>() >= cached / 16);
  CHECK(node->stop(SIGTERM) == 0);
}

TEST_CASE(
  "openai: pages evicted under a small budget are spilled sealed and restored for a follow-up") {
  temp_dir dir;
  const std::string& key = seal_key;
  std::string log;
  auto node = node_process::start(
    dir.path(),
    {"--set", "memory.budget_mb=1", "--set", "memory.seal_key=" + key, "--set", "sona.v2=false"},
    &log);
  REQUIRE_MESSAGE(node, log);
  auto c = node->client();
  c.set_read_timeout(60, 0);
  auto kv = [&] { return engine_json(c, "demo-tiny")["kv"]; };
  std::string story = "A long conversation about packaging Debian software: ";
  for (int i = 0; i < 2; ++i)
    story += "maintainers upload source packages, buildds compile them, ";
  json msgs = {{{"role", "user"}, {"content", story}}};
  auto first = post(c, "/v1/chat/completions",
                    {{"model", "demo-tiny"}, {"messages", msgs}, {"max_tokens", 4}}, 200);
  const int p1 = first["usage"]["prompt_tokens"];
  // Other prompts fill the 1 MiB budget (demo-tiny: 8 KiB per page) and
  // push the first conversation's pages out.
  for (int i = 0; i < 12; ++i) {
    std::string other = "Unrelated prompt number " + std::to_string(i) + ": ";
    for (int j = 0; j < 25; ++j)
      other += "word" + std::to_string(i * 100 + j) + " ";
    post(c, "/v1/completions", {{"model", "demo-tiny"}, {"prompt", other}, {"max_tokens", 2}}, 200);
  }
  auto mid = kv();
  INFO(mid.dump());
  CHECK(mid["spills"].get<int>() > 0);
  CHECK(mid["evictions"].get<int>() > 0);
  msgs.push_back({{"role", "assistant"}, {"content", first["choices"][0]["message"]["content"]}});
  msgs.push_back({{"role", "user"}, {"content", "Go on."}});
  auto second = post(c, "/v1/chat/completions",
                     {{"model", "demo-tiny"}, {"messages", msgs}, {"max_tokens", 2}}, 200);
  auto after = kv();
  INFO(after.dump());
  CHECK(second["usage"]["prompt_tokens_details"]["cached_tokens"].get<int>() >= p1 / 16 * 16);
  CHECK(after["restores"].get<int>() > mid["restores"].get<int>());
  auto metrics = c.Get("/metrics");
  REQUIRE(metrics);
  CHECK(metrics->body.find("shoal_kv_restores_total{") != std::string::npos);
  CHECK(node->stop(SIGTERM) == 0);

  // The store is sealed now: another key, or none, is refused clearly.
  auto wrong =
    run_shoal({"node", "--set", "http.port=0", "--set", "store.data_dir=" + dir.path().string(),
               "--set", "memory.seal_key=ff" + key.substr(2)});
  CHECK(wrong.exit_code != 0);
  CHECK(wrong.output.find("does not match") != std::string::npos);
  auto none =
    run_shoal({"node", "--set", "http.port=0", "--set", "store.data_dir=" + dir.path().string()});
  CHECK(none.exit_code != 0);
  CHECK(none.output.find("memory.seal_key is not set") != std::string::npos);
}

TEST_CASE("openai: a routed turn's session_id, user and latency budget reach the router and the "
          "witness log") {
  temp_dir dir;
  auto node = start_sealed(dir);
  auto c = node->client();
  c.set_read_timeout(60, 0);
  auto routed = post(c, "/v1/chat/completions",
                     {{"model", "auto"},
                      {"messages", {{{"role", "user"}, {"content", "GNU C compiler"}}}},
                      {"max_tokens", 2},
                      {"user", "alice"},
                      {"session_id", "s-audit"},
                      {"latency_budget_ms", 1500}},
                     200);
  uint64_t id = 0;
  REQUIRE(shoal::proto::parse_request_id(
    routed["id"].get<std::string>().substr(std::string("chatcmpl-").size()), id));
  CHECK(node->stop(SIGTERM) == 0); // commits the witness record
  shoal::store::store_config sc;
  sc.data_dir = dir.path();
  auto env = shoal::store::environment::open(sc);
  REQUIRE(env);
  auto bytes = (*env)->get(shoal::store::table::witness, shoal::store::u64_key(id));
  REQUIRE(bytes);
  REQUIRE(bytes->has_value());
  auto w = shoal::proto::decode_witness(**bytes);
  REQUIRE(w);
  CHECK(w->session_id == "s-audit");
  CHECK(w->user == "alice");
  CHECK(w->decision.request_id == id);
  CHECK(w->latency_budget_ms == 1500);
  // The client left sampling to the node: router v2's grid values were
  // served; the engine's usage joined the record.
  CHECK(w->decision.temperature >= 0);
  CHECK(w->decision.top_p > 0);
  CHECK(w->prompt_tokens == routed["usage"]["prompt_tokens"]);
  CHECK(w->completion_tokens == routed["usage"]["completion_tokens"]);
  CHECK(w->completion_tokens > 0);
}

TEST_CASE("sessions: turns are recorded by session_id, looked up by id, user and similarity, "
          "sealed, expired") {
  temp_dir dir;
  const std::string& key = seal_key;
  std::string log;
  auto node = node_process::start(dir.path(), {"--set", "memory.seal_key=" + key}, &log);
  REQUIRE_MESSAGE(node, log);
  auto c = node->client();
  c.set_read_timeout(60, 0);
  auto turn = [&](const std::string& sid, const std::string& text) {
    return post(c, "/v1/chat/completions",
                {{"model", "demo-tiny"},
                 {"messages", {{{"role", "user"}, {"content", text}}}},
                 {"max_tokens", 3},
                 {"user", "alice"},
                 {"session_id", sid}},
                200);
  };
  turn("s-kernel", "How do I rebuild the Linux kernel package with a custom config?");
  auto r2 = turn("s-kernel", "And how do I install the resulting kernel image?");
  turn("s-fonts", "Which package provides TrueType fonts with wide Unicode coverage?");
  auto s =
    post(c, "/v1/sessions/search", {{"text", "install a custom Linux kernel"}, {"k", 2}}, 200);
  REQUIRE(s["data"].size() == 2);
  CHECK(s["data"][0]["id"] == "s-kernel");
  CHECK(s["data"][0]["similarity"].get<double>() > s["data"][1]["similarity"].get<double>());
  auto one = c.Get("/v1/sessions/s-kernel");
  REQUIRE(one);
  REQUIRE(one->status == 200);
  auto j = json::parse(one->body);
  CHECK(j["turns"] == 2);
  CHECK(j["user"] == "alice");
  CHECK(j["kv"]["tier"] == "demo-tiny");
  CHECK(j["kv"]["tokens"] == r2["usage"]["total_tokens"]);
  auto mine = c.Get("/v1/sessions?user=alice");
  REQUIRE(mine);
  CHECK(json::parse(mine->body)["data"].size() == 2);
  auto e = post(c, "/v1/chat/completions",
                {{"model", "demo-tiny"},
                 {"messages", {{{"role", "user"}, {"content", "x"}}}},
                 {"session_id", "no spaces allowed"}},
                400);
  CHECK(e["error"]["param"] == "session_id");
  auto missing = c.Get("/v1/sessions/nope");
  REQUIRE(missing);
  CHECK(missing->status == 404);
  auto del = c.Delete("/v1/sessions/s-fonts");
  REQUIRE(del);
  CHECK(del->status == 200);
  CHECK(c.Get("/v1/sessions/s-fonts")->status == 404);
  CHECK(node->stop(SIGTERM) == 0);

  // Sealed in LMDB: back after a restart.
  node = node_process::start(dir.path(), {"--set", "memory.seal_key=" + key}, &log);
  REQUIRE_MESSAGE(node, log);
  auto c2 = node->client();
  auto back = c2.Get("/v1/sessions/s-kernel");
  REQUIRE(back);
  REQUIRE(back->status == 200);
  CHECK(json::parse(back->body)["turns"] == 2);
  CHECK(node->stop(SIGTERM) == 0);

  // Idle longer than memory.session_idle_s: expired (and deleted from LMDB).
  node = node_process::start(
    dir.path(), {"--set", "memory.seal_key=" + key, "--set", "memory.session_idle_s=1"}, &log);
  REQUIRE_MESSAGE(node, log);
  auto c3 = node->client();
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = c3.Get("/v1/sessions/s-kernel")->status == 404;
    if (!gone)
      std::this_thread::sleep_for(100ms);
  }
  CHECK(gone);
  CHECK(node->stop(SIGTERM) == 0);
  node = node_process::start(dir.path(), {"--set", "memory.seal_key=" + key}, &log);
  REQUIRE_MESSAGE(node, log);
  CHECK(node->client().Get("/v1/sessions/s-kernel")->status == 404);
  CHECK(node->stop(SIGTERM) == 0);
}

TEST_CASE("memory pool: a tier short of KV memory gets it from another tier's cached pages") {
  temp_dir dir;
  std::string log;
  // 4 MiB: demo-tiny pages are 8 KiB, demo-110m pages 576 KiB. Router v2's
  // buffers (~10 MiB by default) would not fit: this node routes with v1.
  auto node = node_process::start(dir.path(),
                                  {"--set", "memory.budget_mb=4", "--set", "sona.v2=false"}, &log);
  REQUIRE_MESSAGE(node, log);
  auto c = node->client();
  c.set_read_timeout(60, 0);
  // demo-tiny's released pages fill the budget with cached pages.
  for (int i = 0; i < 30; ++i) {
    std::string p = "Filler " + std::to_string(i) + ": ";
    for (int j = 0; j < 40; ++j)
      p += "w" + std::to_string(i * 1000 + j) + " ";
    post(c, "/v1/completions", {{"model", "demo-tiny"}, {"prompt", p}, {"max_tokens", 1}}, 200);
  }
  auto tiny = engine_json(c, "demo-tiny");
  INFO(tiny.dump());
  CHECK(tiny["kv"]["bytes_cached"].get<uint64_t>() > (3u << 20));
  // demo-110m needs several of its large pages: only trimming demo-tiny's
  // cache makes room.
  auto r = post(c, "/v1/completions",
                {{"model", "demo-110m"},
                 {"prompt", "A prompt for the bigger model, long enough "
                            "to need a few pages of KV cache."},
                 {"max_tokens", 8}},
                200);
  CHECK(r["usage"]["completion_tokens"] == 8);
  auto s = c.Get("/v1/stats");
  REQUIRE(s);
  auto mem = json::parse(s->body)["memory"];
  INFO(mem.dump());
  CHECK(mem["pressure_events"].get<int>() >= 1);
  CHECK(mem["trimmed_bytes"].get<uint64_t>() > 0);
  CHECK(mem["used_bytes"].get<uint64_t>() <= mem["limit_bytes"].get<uint64_t>());
  CHECK(engine_json(c, "demo-tiny")["kv"]["evictions"].get<int>() > 0);
  CHECK(node->stop(SIGTERM) == 0);
}

TEST_CASE("kv policy: read, changed over HTTP, applied to the tier, kept across a restart") {
  temp_dir dir;
  std::string log;
  auto node = node_process::start(dir.path(), {}, &log);
  REQUIRE_MESSAGE(node, log);
  auto c = node->client();
  auto get = [&](const std::string& tier) {
    auto r = c.Get("/v1/tiers/" + tier + "/kv_policy");
    REQUIRE(r);
    INFO(r->body);
    REQUIRE(r->status == 200);
    return json::parse(r->body);
  };
  auto put = [&](const std::string& tier, const json& body) {
    auto r = c.Put("/v1/tiers/" + tier + "/kv_policy", body.dump(), "application/json");
    REQUIRE(r);
    return std::pair{r->status, json::parse(r->body, nullptr, false)};
  };
  auto p = get("demo-110m");
  CHECK(p["recent_tokens"] == 256);
  CHECK(p["old_k_type"] == "q8_0");
  auto [st, changed] = put("demo-110m", {{"old_k_type", "q4_0"}, {"recent_tokens", 32}});
  CHECK(st == 200);
  CHECK(changed["old_k_type"] == "q4_0");
  CHECK(changed["old_v_type"] == "q8_0");
  CHECK(changed["recent_tokens"] == 32);
  // The tier uses it: a 100-token prompt migrates pages to the Q4_0/Q8_0 tier.
  std::string prompt;
  for (int i = 0; i < 30; ++i)
    prompt += "token" + std::to_string(i) + " ";
  post(c, "/v1/completions", {{"model", "demo-110m"}, {"prompt", prompt}, {"max_tokens", 2}}, 200);
  auto kv = engine_json(c, "demo-110m")["kv"];
  CHECK(kv["migrations"].get<int>() > 0);
  CHECK(kv["page_bytes_old"].get<int>() < kv["page_bytes_recent"].get<int>() / 2);
  // head_dim 48 cannot hold 32-channel blocks: demo-15m keeps F16.
  auto [st15, p15] = put("demo-15m", {{"old_k_type", "q4_0"}});
  CHECK(st15 == 200);
  CHECK(p15["old_k_type"] == "f16");
  CHECK(put("demo-110m", {{"old_k_type", "q3_k"}}).first == 400);
  CHECK(put("demo-110m", {{"recent_tokens", -1}}).first == 400);
  CHECK(put("demo-110m", {{"colour", 1}}).first == 400);
  CHECK(put("nope", {{"recent_tokens", 1}}).first == 404);
  CHECK(node->stop(SIGTERM) == 0);

  node = node_process::start(dir.path(), {}, &log);
  REQUIRE_MESSAGE(node, log);
  auto c2 = node->client();
  auto r = c2.Get("/v1/tiers/demo-110m/kv_policy");
  REQUIRE(r);
  auto again = json::parse(r->body);
  CHECK(again["old_k_type"] == "q4_0");
  CHECK(again["recent_tokens"] == 32);
  CHECK(node->stop(SIGTERM) == 0);
}
