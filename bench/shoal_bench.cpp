// shoal_bench: in-process benchmarks of the node's hot paths, each next to a
// reference measured in the same run.
//   embed    hashing embedder on short / medium / long real text
//   route    embed + HNSW search + Thompson decision at 1K/10K/100K patterns,
//            next to an exact brute-force scan (latency and recall@k)
//   witness  witness records into LMDB: the witness actor (batches of 100),
//            raw batches of 100, and one record per transaction
// Text comes from prompts.jsonl (ops/make-prompts.sh: Debian package
// descriptions). Output: one Markdown table.
#include "actors/actors.hpp"
#include "router/pattern_bank.hpp"
#include "core/clock.hpp"
#include "bench/harness.hpp"
#include "engine/embedder.hpp"
#include "kernels/vector.hpp"
#include "proto/records.hpp"
#include "store/environment.hpp"

#include <CLI/CLI.hpp>
#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <unordered_set>

using namespace shoal;
using namespace shoal::bench;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> load_texts(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    throw std::runtime_error("cannot read " + path + " (run ops/make-prompts.sh first)");
  std::vector<std::string> out;
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("text") || !j["text"].is_string())
      throw std::runtime_error(path + ":" + std::to_string(line_no)
                               + ": expected a JSON object with a string \"text\"");
    out.push_back(j["text"].get<std::string>());
  }
  if (out.size() < 10000)
    throw std::runtime_error(path + ": need at least 10000 prompts, found "
                             + std::to_string(out.size()));
  return out;
}

/// Keeps the optimiser from dropping a result.
volatile float sink = 0;

void bench_embed(const std::vector<std::string>& texts) {
  engine::embedder emb;
  std::vector<float> out(emb.dim());
  std::mt19937_64 rng(1);
  struct kind {
    const char* name;
    size_t parts; // prompts concatenated per text
  };
  for (auto k : {kind{"short (1 prompt)", 1}, kind{"medium (5 prompts)", 5},
                 kind{"long (40 prompts)", 40}}) {
    std::vector<std::string> inputs;
    size_t bytes = 0;
    for (int i = 0; i < 2000; ++i) {
      std::string s;
      for (size_t p = 0; p < k.parts; ++p)
        s += texts[rng() % texts.size()] + " ";
      bytes += s.size();
      inputs.push_back(std::move(s));
    }
    std::vector<double> ns;
    for (int rep = 0; rep < 3; ++rep)
      for (const auto& s : inputs) {
        auto t0 = now_ns();
        emb.embed(s, out);
        ns.push_back(double(now_ns() - t0));
        sink = sink + out[0];
      }
    auto s = summarize(ns);
    print_row(std::string("embed ") + k.name, s, 1e9 / s.mean_ns, "texts",
              "mean " + std::to_string(bytes / inputs.size()) + " bytes/text, dim "
                + std::to_string(emb.dim()));
  }
}

/// Top-k ids by exact cosine (vectors are unit length: dot product).
std::vector<uint64_t> exact_top_k(const std::vector<std::vector<float>>& rows,
                                  const std::vector<uint64_t>& ids, std::span<const float> q,
                                  size_t k) {
  std::vector<std::pair<float, uint64_t>> scored(rows.size());
  for (size_t i = 0; i < rows.size(); ++i)
    scored[i] = {kernels::dot(rows[i], q), ids[i]};
  k = std::min(k, scored.size());
  std::partial_sort(scored.begin(), scored.begin() + static_cast<ptrdiff_t>(k), scored.end(),
                    [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<uint64_t> out;
  for (size_t i = 0; i < k; ++i)
    out.push_back(scored[i].second);
  return out;
}

void bench_route(const std::vector<std::string>& texts, const std::vector<size_t>& sizes,
                 size_t n_queries, size_t n_exact, const router::router_config& base) {
  engine::embedder emb;
  const uint32_t dim = emb.dim();
  // The last n_queries prompts are queries; patterns come from the others
  // (and, past their number, from pairs of them).
  std::vector<std::string> queries(texts.end() - static_cast<ptrdiff_t>(n_queries), texts.end());
  const size_t pool = texts.size() - n_queries;
  for (size_t n : sizes) {
    router::router_config cfg = base;
    auto bank = router::pattern_bank::open(dim, cfg, nullptr);
    if (!bank)
      throw std::runtime_error("pattern bank: " + bank.err().message);
    std::mt19937_64 rng(n);
    std::uniform_real_distribution<double> unif(0, 1);
    std::vector<std::vector<float>> rows;
    std::vector<uint64_t> ids;
    rows.reserve(n + n_queries);
    auto t_build = now_ns();
    for (size_t i = 0; i < n; ++i) {
      std::string text = texts[i % pool];
      if (i >= pool)
        text += " " + texts[(i * 7919) % pool];
      proto::pattern_record rec;
      rec.id = i + 1;
      rec.centroid = emb.embed(text);
      for (size_t t = 0; t < cfg.tiers.size(); ++t) {
        uint64_t c = 1 + rng() % 20;
        double m = unif(rng);
        rec.tiers.push_back({m * double(c), m * m * double(c), c});
      }
      rows.push_back(rec.centroid);
      ids.push_back(rec.id);
      if (auto err = (*bank)->insert(std::move(rec)))
        throw std::runtime_error("insert: " + err.message);
    }
    double build_s = double(now_ns() - t_build) / 1e9;
    std::vector<double> total_ns, embed_ns, search_ns, decide_ns, exact_ns, insert_ns;
    // What the exact reference needs, computed after the timed loop (an
    // exact scan of every row would evict the index from the caches and
    // slow the next timed route).
    struct probe {
      std::vector<float> q;
      size_t n_rows;
      std::vector<uint64_t> got;
    };
    std::vector<probe> probes;
    std::vector<float> q(dim);
    for (size_t i = 0; i < n_queries; ++i) {
      auto t0 = now_ns();
      emb.embed(queries[i], q);
      auto t1 = now_ns();
      if (!(kernels::dot(q, q) > 0))
        continue; // no words: the gateway rejects such text
      auto r = (*bank)->route(q, core::utc_now_ms());
      auto t2 = now_ns();
      if (r.new_pattern) { // the router actor does this after answering
        auto t3 = now_ns();
        if (auto err = (*bank)->index_pending())
          throw std::runtime_error("index: " + err.message);
        insert_ns.push_back(double(now_ns() - t3));
      }
      embed_ns.push_back(double(t1 - t0));
      total_ns.push_back(double(t2 - t0));
      search_ns.push_back(double(r.search_ns));
      decide_ns.push_back(double(r.decide_ns));
      if (probes.size() < n_exact) {
        probe p{q, rows.size(), {}};
        for (const auto& nb : r.neighbors)
          p.got.push_back(nb.pattern_id);
        probes.push_back(std::move(p));
      }
      if (r.new_pattern) {
        rows.emplace_back(q.begin(), q.end());
        ids.push_back(r.pattern_id);
      }
    }
    double recall_sum = 0;
    size_t recall_n = 0;
    for (const auto& p : probes) {
      // The bank as it was when the query was routed: the first n_rows rows.
      std::vector<std::vector<float>> prefix(rows.begin(),
                                             rows.begin() + static_cast<ptrdiff_t>(p.n_rows));
      std::vector<uint64_t> prefix_ids(ids.begin(), ids.begin() + static_cast<ptrdiff_t>(p.n_rows));
      auto e0 = now_ns();
      auto truth = exact_top_k(prefix, prefix_ids, p.q, cfg.k);
      exact_ns.push_back(double(now_ns() - e0) + embed_ns[recall_n]);
      std::unordered_set<uint64_t> got(p.got.begin(), p.got.end());
      size_t hit = 0;
      for (auto id : truth)
        hit += got.count(id);
      recall_sum += truth.empty() ? 1.0 : double(hit) / double(truth.size());
      ++recall_n;
    }
    std::string at = " @" + std::to_string(n / 1000) + "K";
    char notes[160];
    std::snprintf(notes, sizeof notes, "k=%u ef=%u; build %.1f s (%.0f patterns/s)", cfg.k,
                  std::max(cfg.index.ef_search, cfg.k), build_s, double(n) / build_s);
    auto total = summarize(total_ns);
    // Throughput of one router thread: every query's route plus the pattern
    // insertions it triggered.
    double busy_ns = 0;
    for (double x : total_ns)
      busy_ns += x;
    for (double x : insert_ns)
      busy_ns += x;
    print_row("route (embed+search+decide)" + at, total, 1e9 * double(total_ns.size()) / busy_ns,
              "req", notes);
    print_row("  search (HNSW)" + at, summarize(search_ns), 0, "", "");
    print_row("  decide (Thompson)" + at, summarize(decide_ns), 0, "", "");
    print_row("  index a new pattern" + at, summarize(insert_ns), 0, "",
              "after the answer; " + std::to_string(insert_ns.size()) + " of "
                + std::to_string(total_ns.size()) + " queries created a pattern");
    auto ex = summarize(exact_ns);
    char rnote[96];
    std::snprintf(rnote, sizeof rnote, "reference; HNSW recall@%u = %.3f over %zu queries", cfg.k,
                  recall_n ? recall_sum / double(recall_n) : 0.0, recall_n);
    print_row("  embed+exact scan" + at, ex, 1e9 / ex.mean_ns, "req", rnote);
  }
}

proto::witness_entry make_entry(uint64_t id, const std::vector<float>& emb) {
  proto::witness_entry e;
  e.decision.request_id = id;
  e.decision.time_ms = core::utc_now_ms();
  e.decision.tier = static_cast<uint32_t>(id % 4);
  e.decision.tier_name = "demo-110m";
  e.decision.confidence = 0.7;
  e.decision.pattern_id = id % 1000;
  for (uint64_t i = 0; i < 32; ++i) // router.k neighbours
    e.decision.neighbors.push_back({i, 0.5f});
  e.embedding = emb;
  e.session_id = "session-" + std::to_string(id % 97);
  e.user = "user";
  e.text_bytes = 120;
  return e;
}

void bench_witness(const std::vector<std::string>& texts, size_t n_records) {
  engine::embedder emb;
  std::vector<std::vector<float>> embs;
  for (size_t i = 0; i < 256; ++i)
    embs.push_back(emb.embed(texts[i]));
  auto dir = fs::temp_directory_path() / ("shoal-bench-" + std::to_string(getpid()));
  fs::remove_all(dir);
  auto open_env = [&](const std::string& sub) {
    store::store_config sc;
    sc.data_dir = dir / sub;
    auto env = store::environment::open(sc);
    if (!env)
      throw std::runtime_error("lmdb: " + env.err().message);
    return *env;
  };
  std::string one_size = std::to_string(proto::encode(make_entry(1, embs[0])).size());

  // Raw LMDB: batches of 100 records per transaction, and one per transaction.
  for (size_t batch : {size_t{100}, size_t{1}}) {
    auto env = open_env("raw" + std::to_string(batch));
    size_t n = batch == 1 ? std::min<size_t>(n_records / 10, 2000) : n_records;
    std::vector<double> txn_ns;
    auto t0 = now_ns();
    for (size_t i = 0; i < n; i += batch) {
      std::vector<store::write_op> ops;
      for (size_t j = i; j < std::min(n, i + batch); ++j)
        ops.push_back({store::table::witness, store::u64_key(j + 1),
                       proto::encode(make_entry(j + 1, embs[j % embs.size()]))});
      auto s = now_ns();
      if (auto err = env->write(ops))
        throw std::runtime_error("write: " + err.message);
      txn_ns.push_back(double(now_ns() - s));
    }
    double secs = double(now_ns() - t0) / 1e9;
    print_row("witness LMDB write, " + std::to_string(batch) + " record(s)/txn", summarize(txn_ns),
              double(n) / secs, "records",
              "per-transaction latency (durable commit); " + one_size + " bytes/record");
  }

  // The witness actor as the node runs it (batch_max 100, 1 s interval).
  {
    auto env = open_env("actor");
    caf::actor_system_config cfg;
    caf::actor_system sys{cfg};
    auto w = actors::spawn_witness(sys, actors::witness_config{}, env);
    caf::scoped_actor self{sys};
    auto t0 = now_ns();
    for (size_t i = 0; i < n_records; ++i)
      self->send(w, proto::record_atom::value, make_entry(i + 1, embs[i % embs.size()]));
    uint64_t done = 0;
    while (done < n_records) {
      self->request(w, caf::infinite, proto::stats_atom::value)
        .receive([&](proto::witness_stats& s) { done = s.n_records; },
                 [&](caf::error& e) { throw std::runtime_error(caf::to_string(e)); });
      if (done < n_records)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    double secs = double(now_ns() - t0) / 1e9;
    summary s;
    s.n = n_records;
    s.median_ns = s.p99_ns = secs * 1e9 / double(n_records);
    print_row("witness actor ingest (batch_max 100)", s, double(n_records) / secs, "records",
              "send to committed; median/p99 = mean time per record");
    self->send_exit(w, caf::exit_reason::user_shutdown);
    w = decltype(w){};
  }
  fs::remove_all(dir);
}

std::vector<size_t> parse_sizes(const std::string& s) {
  std::vector<size_t> out;
  size_t pos = 0;
  while (pos < s.size()) {
    auto comma = s.find(',', pos);
    out.push_back(std::stoul(s.substr(pos, comma - pos)));
    if (comma == std::string::npos)
      break;
    pos = comma + 1;
  }
  return out;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"shoal_bench: in-process benchmarks with references in the same run"};
  std::string prompts = "prompts.jsonl";
  std::vector<std::string> only;
  std::string sizes = "1000,10000,100000";
  size_t queries = 2000, exact = 300, records = 20000;
  router::router_config rc; // node defaults
  rc.seed = 1;
  app.add_option("--prompts", prompts, "JSONL prompts ({text, ...} per line)")
    ->capture_default_str();
  app.add_option("--only", only, "Sections to run: embed, route, witness")
    ->check(CLI::IsMember({"embed", "route", "witness"}));
  app.add_option("--sizes", sizes, "Pattern-bank sizes for route")->capture_default_str();
  app.add_option("--queries", queries, "Route queries per size")
    ->capture_default_str()
    ->check(CLI::Range(10, 20000));
  app.add_option("--exact", exact, "Queries also answered by exact scan (recall)")
    ->capture_default_str();
  app.add_option("--records", records, "Witness records per run")
    ->capture_default_str()
    ->check(CLI::Range(100, 10000000));
  app.add_option("--k", rc.k, "router.k: neighbours per decision")->capture_default_str();
  app.add_option("--ef", rc.index.ef_search, "index.ef_search")->capture_default_str();
  app.add_option("--m", rc.index.m, "index.m: HNSW degree")->capture_default_str();
  app.add_option("--threshold", rc.new_pattern_threshold, "router.new_pattern_threshold")
    ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  auto want = [&](const char* s) {
    return only.empty() || std::find(only.begin(), only.end(), s) != only.end();
  };
  try {
    auto texts = load_texts(prompts);
    std::printf("shoal_bench: %zu prompts from %s; kernels: %s\n\n", texts.size(), prompts.c_str(),
                kernels::dot_f32_kernel().active_name().c_str());
    print_header();
    if (want("embed"))
      bench_embed(texts);
    if (want("route"))
      bench_route(texts, parse_sizes(sizes), std::min(queries, texts.size() / 2), exact, rc);
    if (want("witness"))
      bench_witness(texts, records);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shoal_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
