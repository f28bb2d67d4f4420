// The `shoal` command: node, replay, key, kernels, config.
#include "node/kernel_packs.hpp"
#include "kernels/registry.hpp"
#include "engine/model_writer.hpp"
#include "node/config.hpp"
#include "node/models.hpp"
#include "node/node.hpp"
#include "sim/replay.hpp"
#include "node/witness_read.hpp"
#include "proto/error.hpp"
#include "proto/messages.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <variant>

extern char** environ;

int main(int argc, char** argv) {
  CLI::App app{"Shoal: a self-learning, federated runtime for serving LLMs on edge machines"};
  app.require_subcommand(1);

  auto* node = app.add_subcommand("node", "Run a node: router, witness log, learning loops, "
                                          "HTTP API");
  std::string config_path;
  std::vector<std::string> sets;
  node->add_option("--config,-c", config_path, "TOML config file (configs/node.toml)");
  node->add_option("--set", sets, "Override a config key: --set key=value (repeatable)");

  auto* replay = app.add_subcommand("replay", "Replay prompts against a running node, send "
                                              "evaluator feedback, print the learning curve");
  shoal::sim::replay_options ro;
  replay->add_option("--url", ro.url, "Node address")->capture_default_str();
  replay
    ->add_option("--prompts", ro.prompts,
                 "JSONL file of {id, text, domain} (reference: {id, prompt, reference, domain})")
    ->capture_default_str();
  replay->add_option("--limit", ro.limit, "Requests to send (0 = every prompt once)")
    ->capture_default_str();
  replay->add_option("--offset", ro.offset, "Prompts to skip first")->capture_default_str();
  replay->add_option("--rate", ro.rate, "Requests per second (0 = as fast as possible)")
    ->capture_default_str();
  replay->add_option("--concurrency", ro.concurrency, "Parallel connections")
    ->capture_default_str()
    ->check(CLI::Range(1, 256));
  replay->add_option("--window", ro.window, "Requests per learning-curve row")
    ->capture_default_str()
    ->check(CLI::Range(1, 100000000));
  replay->add_option("--curve-out", ro.curve_out, "Also write the curve as CSV here");
  replay->add_option("--by-domain", ro.by_domain,
                     "Print this many domains ranked by regret, with their tier shares");
  replay->add_option("--requests-out", ro.requests_out,
                     "Also write one CSV row per request (tier, quality, reward, oracle)");
  replay
    ->add_option("--evaluator", ro.evaluator,
                 "simulated: the synthetic world (sim/evaluator.hpp); reference: the tiers' "
                 "measured quality on the evaluation split (--prompts models/eval.jsonl)")
    ->capture_default_str()
    ->check(CLI::IsMember({"simulated", "reference"}));
  replay->add_option("--table", ro.table, "Reference world: the quality table cache")
    ->capture_default_str();
  replay
    ->add_option("--lambda", ro.lambda,
                 "Reference world: cost per ms of a tier's mean answer time, quality units")
    ->capture_default_str()
    ->check(CLI::NonNegativeNumber);
  replay
    ->add_option("--order-seed", ro.order_seed,
                 "Shuffle the prompts with this seed (0: file order)")
    ->capture_default_str();
  replay->add_option("--eval-seed", ro.eval.seed, "Evaluator seed")->capture_default_str();
  replay
    ->add_option("--eval-difficulty-min", ro.eval.difficulty_min, "Lowest hidden domain difficulty")
    ->capture_default_str();
  replay
    ->add_option("--eval-difficulty-max", ro.eval.difficulty_max,
                 "Highest hidden domain difficulty")
    ->capture_default_str();
  replay->add_option("--eval-slope", ro.eval.slope, "Steepness of quality in ability - difficulty")
    ->capture_default_str();
  replay
    ->add_option("--eval-concentration", ro.eval.concentration,
                 "Beta concentration of quality draws (higher = less noise)")
    ->capture_default_str()
    ->check(CLI::PositiveNumber);
  replay
    ->add_option("--eval-ms-per-token", ro.eval.largest_ms_per_token,
                 "Latency model: the largest tier's decode time per token, ms (0: off); "
                 "an answer that overruns the request's budget is cut")
    ->capture_default_str()
    ->check(CLI::NonNegativeNumber);
  replay
    ->add_option("--eval-sampling-sensitivity", ro.eval.sampling_sensitivity,
                 "Sampling model: how much an answer sampled away from its domain's best "
                 "temperature and top_p loses (0: off)")
    ->capture_default_str()
    ->check(CLI::NonNegativeNumber);
  replay
    ->add_option("--eval-answer-tokens-max", ro.eval.answer_tokens_max,
                 "Longest domain answer, tokens (completion lengths sent with feedback)")
    ->capture_default_str()
    ->check(CLI::PositiveNumber);
  replay
    ->add_option("--budget-share", ro.budgets.share,
                 "Share of requests sent with a latency_budget_ms")
    ->capture_default_str()
    ->check(CLI::Range(0.0, 1.0));
  replay->add_option("--budget-min-ms", ro.budgets.min_ms, "Smallest latency budget (log-uniform)")
    ->capture_default_str()
    ->check(CLI::Range(1.0, shoal::proto::max_latency_budget_ms));
  replay->add_option("--budget-max-ms", ro.budgets.max_ms, "Largest latency budget")
    ->capture_default_str()
    ->check(CLI::Range(1.0, shoal::proto::max_latency_budget_ms));

  auto* key = app.add_subcommand("key", "Print this node's federation public key as "
                                        "name=hexkey (for peers' federation.trusted); "
                                        "creates the key file when missing");
  key->add_option("--config,-c", config_path, "TOML config file (configs/node.toml)");
  key->add_option("--set", sets, "Override a config key: --set key=value (repeatable)");

  auto* kern = app.add_subcommand("kernels", "Print the CPU's features and, per compute "
                                             "kernel, its variants, the one in use and why");
  bool tune = false;
  kern->add_flag("--tune", tune, "Measure every variant first and use the fastest");
  kern->add_option("--config,-c", config_path, "TOML config file (kernels.* keys apply)");
  kern->add_option("--set", sets, "Override a config key: --set key=value (repeatable)");
  auto* sign = kern->add_subcommand("sign", "Sign kernel packs: writes PACK.sig and prints "
                                            "the name=hexkey line for kernels.pack_keys");
  std::string sign_key, sign_name = "ops";
  std::vector<std::string> sign_packs;
  sign->add_option("--key", sign_key, "Ed25519 key file (created, mode 0600, if missing)")
    ->required();
  sign->add_option("--name", sign_name, "Name of the key in kernels.pack_keys")
    ->capture_default_str();
  sign->add_option("packs", sign_packs, "Shared libraries to sign")->required();

  auto* models = app.add_subcommand(
    "models", "Resolve every tier's model (writing random-weight demo models into the model "
              "cache if absent) and print one line per tier: name and GGUF path; with "
              "specs, resolve those instead (e.g. demo:110M:q8_0)");
  std::vector<std::string> model_specs;
  models->add_option("--config", config_path, "TOML config file");
  models->add_option("--set", sets, "Override a key: key=value (repeatable)");
  models->add_option("specs", model_specs,
                     "Models to resolve instead of the tiers': demo:<shape>:<type> or a path");
  auto* learn = app.add_subcommand("learn", "The learning loops of a running node");
  learn->require_subcommand(1);
  std::string learn_url = "http://127.0.0.1:8080";
  auto* learn_status = learn->add_subcommand(
    "status", "Print router v2's state and the instant, background and deep loops' last runs");
  auto* learn_trigger =
    learn->add_subcommand("trigger", "Run a loop now and print the status when it is done");
  std::string learn_loop;
  learn_trigger->add_option("loop", learn_loop, "background or deep")
    ->required()
    ->check(CLI::IsMember({"background", "deep"}));
  for (auto* c : {learn_status, learn_trigger})
    c->add_option("--url", learn_url, "Node address")->capture_default_str();
  auto* witness = app.add_subcommand("witness", "The witness log's archive");
  witness->require_subcommand(1);
  auto* witness_read = witness->add_subcommand(
    "read", "Print the records of archive segments (data/witness-archive/*.shoalarc) as JSON "
            "lines");
  std::vector<std::string> witness_files;
  witness_read->add_option("files", witness_files, "Archive segment files")->required();
  auto* qtable = app.add_subcommand(
    "quality-table", "Measure every tier a node serves on evaluation documents (the reference "
                     "world of `replay --evaluator reference`): quality, ROUGE-L, ms per answer");
  std::string qt_url = "http://127.0.0.1:8080", qt_docs = "models/eval.jsonl",
              qt_table = "data/quality-table.json";
  qtable->add_option("--url", qt_url, "Node address")->capture_default_str();
  qtable->add_option("--prompts", qt_docs, "JSONL of {id, prompt, reference, domain}")
    ->capture_default_str();
  qtable->add_option("--table", qt_table, "The table (reused when its models match)")
    ->capture_default_str();
  auto* quantize = app.add_subcommand(
    "quantize", "Write a model's matrices in another weight type (as llama-quantize): an F32, "
                "F16 or BF16 GGUF in, the same model in q8_0, q4_0, f16, bf16 or f32 out");
  std::string quantize_in, quantize_out, quantize_type = "q8_0";
  quantize->add_option("input", quantize_in, "GGUF model (F32, F16 or BF16 weights)")->required();
  quantize->add_option("output", quantize_out, "GGUF file to write")->required();
  quantize->add_option("--type", quantize_type, "q8_0, q4_0, f16, bf16 or f32")
    ->capture_default_str();
  std::string quantize_output_type;
  quantize->add_option("--output-type", quantize_output_type,
                       "Type of output.weight when it should differ (as llama-quantize's "
                       "--output-tensor-type)");
  auto* config = app.add_subcommand("config", "Print or check configuration");
  bool print_defaults = false;
  std::string check_path;
  config->add_flag("--defaults", print_defaults, "Print every key with its default as TOML");
  config->add_option("--check", check_path, "Validate a config file and exit");

  CLI11_PARSE(app, argc, argv);

  if (witness_read->parsed())
    return shoal::node::witness_read(witness_files, std::cout, std::cerr);
  if (qtable->parsed())
    return shoal::sim::run_quality_table(qt_url, qt_docs, qt_table);
  if (quantize->parsed()) {
    auto type = shoal::engine::weight_type_from_name(quantize_type);
    if (!type) {
      std::fprintf(stderr, "shoal: --type: unknown weight type %s\n", quantize_type.c_str());
      return 2;
    }
    std::optional<uint32_t> output_type;
    if (!quantize_output_type.empty()) {
      output_type = shoal::engine::weight_type_from_name(quantize_output_type);
      if (!output_type) {
        std::fprintf(stderr, "shoal: --output-type: unknown weight type %s\n",
                     quantize_output_type.c_str());
        return 2;
      }
    }
    auto rep = shoal::engine::quantize_model(quantize_in, quantize_out, *type, output_type);
    if (!rep) {
      std::fprintf(stderr, "shoal: quantize: %s\n", rep.err().message.c_str());
      return 1;
    }
    std::printf("%s: %u matrices quantized (%s), %u tensors kept; %.2f MB -> %.2f MB\n",
                quantize_out.c_str(), rep->quantized, quantize_type.c_str(), rep->kept,
                rep->bytes_in / 1e6, rep->bytes_out / 1e6);
    return 0;
  }
  if (sign->parsed()) {
    auto id = shoal::crypto::identity::load_or_create(sign_key);
    if (!id) {
      std::fprintf(stderr, "shoal: %s\n", id.err().message.c_str());
      return 1;
    }
    for (const auto& p : sign_packs)
      if (auto err = shoal::node::sign_kernel_pack(p, *id)) {
        std::fprintf(stderr, "shoal: %s\n", err.message.c_str());
        return 1;
      }
    std::printf("%s=%s\n", sign_name.c_str(), shoal::crypto::to_hex(id->pk()).c_str());
    return 0;
  }
  if (node->parsed() || key->parsed() || kern->parsed() || models->parsed()
      || !check_path.empty()) {
    auto loaded =
      shoal::node::load_config(check_path.empty() ? config_path : check_path, sets, environ);
    if (!loaded) {
      std::fprintf(stderr, "shoal: invalid config: %s: %s\n", loaded.err().context.c_str(),
                   loaded.err().message.c_str());
      return 2;
    }
    const auto& cfg = *loaded;
    if (key->parsed()) {
      auto id = shoal::crypto::identity::load_or_create(shoal::node::key_path(cfg));
      if (!id) {
        std::fprintf(stderr, "shoal: %s\n", id.err().message.c_str());
        return 1;
      }
      std::printf("%s=%s\n", cfg.name.c_str(), shoal::crypto::to_hex(id->pk()).c_str());
      return 0;
    }
    if (models->parsed()) {
      // (label, spec): the specs given, else the config's tiers.
      std::vector<std::pair<std::string, std::string>> wanted;
      for (const auto& spec : model_specs)
        wanted.emplace_back(spec, spec);
      if (model_specs.empty())
        for (const auto& t : cfg.router.tiers)
          wanted.emplace_back(t.name, t.model);
      int rc = 0;
      for (const auto& [label, spec] : wanted) {
        if (spec.empty()) {
          std::printf("%s\t(routing only)\n", label.c_str());
          continue;
        }
        auto where = shoal::node::resolve_model(spec);
        if (!where) {
          std::fprintf(stderr, "shoal: %s: %s\n", label.c_str(), where.err().message.c_str());
          rc = 1;
        } else {
          std::printf("%s\t%s\n", label.c_str(), where->c_str());
        }
      }
      return rc;
    }
    if (kern->parsed()) {
      auto log = shoal::node::apply_kernels_config(cfg.kernels);
      if (!log) {
        std::fprintf(stderr, "shoal: %s: %s\n", log.err().context.c_str(),
                     log.err().message.c_str());
        return 2;
      }
      for (const auto& line : *log)
        std::fprintf(stderr, "%s\n", line.c_str());
      if (tune)
        shoal::kernels::registry::instance().tune();
      std::fputs(shoal::kernels::registry::instance().describe().c_str(), stdout);
      return 0;
    }
    if (!node->parsed()) {
      std::printf("%s: ok\n", check_path.c_str());
      return 0;
    }
    return shoal::node::run_node(cfg);
  }
  if (replay->parsed())
    return shoal::sim::run_replay(ro);
  if (learn->parsed())
    return shoal::sim::run_learn(learn_url, learn_trigger->parsed() ? learn_loop : "");
  if (print_defaults) {
    std::fputs(shoal::node::render_default_toml().c_str(), stdout);
    return 0;
  }
  std::cerr << config->help();
  return 2;
}
