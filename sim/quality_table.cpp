#include "sim/quality_table.hpp"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>

namespace shoal::sim {

namespace {

using json = nlohmann::json;

core::error failure(std::string message, std::string context = "") {
  return core::error{errc::invalid_argument, std::move(message), std::move(context)};
}

std::vector<std::string> words(std::string_view s) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) && c < 0x80) {
      cur += static_cast<char>(std::tolower(c));
    } else if (!cur.empty()) {
      out.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty())
    out.push_back(std::move(cur));
  return out;
}

/// The document a tier was trained on, up to the answer (ops/train/train.py's render).
std::string chat_prefix(const std::string& prompt) {
  return "<|im_start|>user\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n";
}

/// Cuts `text` to about `share` of its length, at a word boundary.
std::string cut(const std::string& text, double share) {
  size_t n = static_cast<size_t>(static_cast<double>(text.size()) * share);
  while (n > 0 && text[n] != ' ')
    --n;
  return text.substr(0, n);
}

std::string error_text(const httplib::Result& r) {
  if (!r)
    return httplib::to_string(r.error());
  auto j = json::parse(r->body, nullptr, false);
  if (!j.is_discarded() && j.contains("error") && j["error"].contains("message"))
    return std::to_string(r->status) + " " + j["error"]["message"].get<std::string>();
  return std::to_string(r->status) + " " + r->body.substr(0, 200);
}

bool context_exceeded(const httplib::Result& r) {
  if (!r || r->status != 400)
    return false;
  auto j = json::parse(r->body, nullptr, false);
  return !j.is_discarded() && j.contains("error")
         && j["error"].value("code", "") == "context_length_exceeded";
}

/// quality and scored token count of one document under one tier.
core::result<std::pair<double, uint32_t>> score(httplib::Client& cli, const std::string& tier,
                                                const eval_document& d) {
  const std::string prefix = chat_prefix(d.prompt);
  std::string reference = d.reference;
  for (int attempt = 0; attempt < 12 && !reference.empty(); ++attempt) {
    json req = {{"model", tier},
                {"prompt", prefix + reference},
                {"echo", true},
                {"logprobs", 0},
                {"max_tokens", 0}};
    auto r = cli.Post("/v1/completions", req.dump(), "application/json");
    if (context_exceeded(r)) {
      reference = cut(reference, 0.75);
      continue;
    }
    if (!r || r->status != 200)
      return failure("scoring " + d.id + " on " + tier + ": " + error_text(r));
    auto j = json::parse(r->body, nullptr, false);
    const auto& lp = j["choices"][0]["logprobs"];
    double sum = 0;
    uint32_t n = 0;
    for (size_t i = 0; i < lp["tokens"].size(); ++i) {
      if (lp["text_offset"][i].get<size_t>() < prefix.size()
          || !lp["token_logprobs"][i].is_number())
        continue;
      sum += lp["token_logprobs"][i].get<double>();
      ++n;
    }
    if (n == 0)
      return failure("scoring " + d.id + " on " + tier + ": no reference tokens in the echo");
    return std::pair{std::exp(sum / n), n};
  }
  return failure("scoring " + d.id + " on " + tier
                 + ": the prompt alone does not fit the tier's context");
}

struct answer {
  std::string text;
  uint32_t tokens = 0;
  double ms = 0;
};

core::result<answer> greedy(httplib::Client& cli, const std::string& tier, const eval_document& d) {
  json req = {{"model", tier},
              {"messages", json::array({{{"role", "user"}, {"content", d.prompt}}})},
              {"temperature", 0}};
  auto t0 = std::chrono::steady_clock::now();
  auto r = cli.Post("/v1/chat/completions", req.dump(), "application/json");
  auto t1 = std::chrono::steady_clock::now();
  if (!r || r->status != 200)
    return failure("answering " + d.id + " on " + tier + ": " + error_text(r));
  auto j = json::parse(r->body, nullptr, false);
  answer a;
  a.text = j["choices"][0]["message"]["content"].get<std::string>();
  a.tokens = j["usage"]["completion_tokens"].get<uint32_t>();
  a.ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
  return a;
}

template <class T>
core::result<bool> read_column(const json& j, const char* key, size_t n, std::vector<T>& out,
                               const std::string& path) {
  if (!j.contains(key) || !j[key].is_array() || j[key].size() != n)
    return failure(path + ": " + key + " must be an array of " + std::to_string(n), key);
  try {
    out = j[key].get<std::vector<T>>();
  } catch (const json::exception& e) {
    return failure(path + ": " + key + ": " + e.what(), key);
  }
  return true;
}

} // namespace

core::result<std::vector<eval_document>> load_eval_documents(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    return failure("cannot open " + path, "documents");
  std::vector<eval_document> out;
  std::string line;
  for (size_t lineno = 1; std::getline(in, line); ++lineno) {
    if (line.empty())
      continue;
    auto j = json::parse(line, nullptr, false);
    auto str = [&](const char* k) { return j.contains(k) && j[k].is_string(); };
    if (j.is_discarded() || !j.is_object() || !str("id") || !str("prompt") || !str("reference")
        || !str("domain"))
      return failure(path + ":" + std::to_string(lineno)
                       + ": need a JSON object with string id, prompt, reference and domain",
                     "documents");
    out.push_back({j["id"], j["prompt"], j["reference"], j["domain"]});
  }
  if (out.empty())
    return failure(path + ": no documents", "documents");
  return out;
}

double rouge_l(std::string_view candidate, std::string_view reference) {
  const auto c = words(candidate), r = words(reference);
  if (c.empty() || r.empty())
    return 0;
  std::vector<uint32_t> prev(r.size() + 1, 0), cur(r.size() + 1, 0);
  for (const auto& w : c) {
    for (size_t j = 1; j <= r.size(); ++j)
      cur[j] = w == r[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  const double lcs = prev[r.size()];
  if (lcs == 0)
    return 0;
  const double p = lcs / static_cast<double>(c.size()), rec = lcs / static_cast<double>(r.size());
  return 2 * p * rec / (p + rec);
}

namespace {

double mean_of(const std::vector<double>& v) {
  return v.empty() ? 0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

} // namespace

double quality_table::tier::mean_ms() const {
  return mean_of(ms);
}
double quality_table::tier::mean_quality() const {
  return mean_of(quality);
}
double quality_table::tier::mean_rouge_l() const {
  return mean_of(rouge_l);
}

core::result<quality_table> build_quality_table(const std::vector<eval_document>& docs,
                                                const std::string& source,
                                                const table_options& opts) {
  httplib::Client cli(opts.url);
  cli.set_read_timeout(600, 0);
  cli.set_keep_alive(true);
  cli.set_tcp_nodelay(true); // else Nagle and delayed ACKs add ~40 ms to every timed answer
  auto models = cli.Get("/v1/models");
  if (!models || models->status != 200)
    return failure("cannot reach " + opts.url + "/v1/models: " + error_text(models), "url");
  auto mj = json::parse(models->body, nullptr, false);
  quality_table table;
  table.source = source;
  for (const auto& d : docs) {
    table.ids.push_back(d.id);
    table.domains.push_back(d.domain);
  }
  for (const auto& m : mj["data"]) {
    if (!m.contains("meta") || !m["meta"].value("serving", false))
      continue;
    quality_table::tier t;
    t.name = m["id"].get<std::string>();
    t.fingerprint = m["meta"].value("fingerprint", "");
    table.tiers.push_back(std::move(t));
  }
  if (table.tiers.empty())
    return failure("the node at " + opts.url + " serves no tiers", "url");

  // Tiers the cache already holds for these documents and models.
  if (!opts.path.empty() && std::filesystem::exists(opts.path)) {
    auto cached = load_quality_table(opts.path);
    if (cached && cached->ids == table.ids)
      for (auto& t : table.tiers)
        for (auto& c : cached->tiers)
          if (c.name == t.name && c.fingerprint == t.fingerprint && !t.fingerprint.empty())
            t = std::move(c);
  }
  const size_t n = docs.size();
  for (auto& t : table.tiers) {
    if (t.quality.size() == n)
      continue; // from the cache
    t.quality.assign(n, 0);
    t.scored.assign(n, 0);
    t.rouge_l.assign(n, 0);
    t.ms.assign(n, 0);
    t.tokens.assign(n, 0);
    t.answer.assign(n, "");
    for (size_t i = 0; i < n; ++i) {
      auto s = score(cli, t.name, docs[i]);
      if (!s)
        return std::move(s).err();
      auto a = greedy(cli, t.name, docs[i]);
      if (!a)
        return std::move(a).err();
      t.quality[i] = s->first;
      t.scored[i] = s->second;
      t.rouge_l[i] = rouge_l(a->text, docs[i].reference);
      t.ms[i] = a->ms;
      t.tokens[i] = a->tokens;
      t.answer[i] = std::move(a->text);
      if (opts.progress)
        opts.progress(t.name, i + 1, n);
    }
    if (!opts.path.empty())
      if (auto w = save_quality_table(table, opts.path); !w)
        return std::move(w).err();
  }
  return table;
}

core::result<bool> save_quality_table(const quality_table& t, const std::string& path) {
  json j = {{"format", "shoal quality table 1"},
            {"source", t.source},
            {"ids", t.ids},
            {"domains", t.domains}};
  j["tiers"] = json::array();
  for (const auto& x : t.tiers) {
    if (x.quality.size() != t.ids.size())
      continue; // not measured yet
    j["tiers"].push_back({{"name", x.name},
                          {"fingerprint", x.fingerprint},
                          {"quality", json(x.quality)},
                          {"scored", json(x.scored)},
                          {"rouge_l", json(x.rouge_l)},
                          {"ms", json(x.ms)},
                          {"tokens", json(x.tokens)},
                          {"answer", json(x.answer)}});
  }
  const auto dir = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!dir.empty())
    std::filesystem::create_directories(dir, ec);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    if (!out)
      return failure("cannot write " + tmp, "path");
    out << j.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
    if (!out)
      return failure("cannot write " + tmp, "path");
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec)
    return failure("cannot rename " + tmp + " to " + path + ": " + ec.message(), "path");
  return true;
}

core::result<quality_table> load_quality_table(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    return failure("cannot open " + path, "path");
  auto j = json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value("format", "") != "shoal quality table 1")
    return failure(path + ": not a quality table (format \"shoal quality table 1\")", "format");
  quality_table t;
  t.source = j.value("source", "");
  if (auto r = read_column(j, "ids", j.contains("ids") ? j["ids"].size() : 0, t.ids, path); !r)
    return std::move(r).err();
  const size_t n = t.ids.size();
  if (auto r = read_column(j, "domains", n, t.domains, path); !r)
    return std::move(r).err();
  if (!j.contains("tiers") || !j["tiers"].is_array())
    return failure(path + ": tiers must be an array", "tiers");
  for (const auto& x : j["tiers"]) {
    quality_table::tier tier;
    if (!x.contains("name") || !x["name"].is_string())
      return failure(path + ": every tier needs a name", "tiers");
    tier.name = x["name"];
    tier.fingerprint = x.value("fingerprint", "");
    for (auto ok :
         {read_column(x, "quality", n, tier.quality, path),
          read_column(x, "scored", n, tier.scored, path),
          read_column(x, "rouge_l", n, tier.rouge_l, path), read_column(x, "ms", n, tier.ms, path),
          read_column(x, "tokens", n, tier.tokens, path),
          read_column(x, "answer", n, tier.answer, path)})
      if (!ok)
        return std::move(ok).err();
    t.tiers.push_back(std::move(tier));
  }
  return t;
}

} // namespace shoal::sim
