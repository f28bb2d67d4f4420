#include "node/models.hpp"

#include "engine/model_writer.hpp"

#include <cstdlib>
#include <system_error>

namespace shoal::node {

std::filesystem::path model_cache_dir() {
  if (const char* d = std::getenv("SHOAL_MODEL_CACHE"); d && *d)
    return d;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return std::filesystem::path(x) / "shoal" / "models";
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home && *home ? home : "/tmp") / ".cache" / "shoal" / "models";
}

std::vector<std::filesystem::path> trained_model_dirs() {
  std::vector<std::filesystem::path> dirs;
  if (const char* d = std::getenv("SHOAL_MODELS_DIR"); d && *d)
    dirs.emplace_back(d);
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto bin = exe.parent_path();
    dirs.push_back(bin.parent_path().parent_path() / "models");       // build/node/shoal
    dirs.push_back(bin.parent_path() / "share" / "shoal" / "models"); // <prefix>/bin/shoal
  }
  dirs.emplace_back("models");
  return dirs;
}

namespace {

core::result<std::filesystem::path> resolve_trained(const std::string& spec) {
  auto rest = spec.substr(6);
  auto colon = rest.find(':');
  const std::string name = rest.substr(0, colon);
  const std::string type = colon == std::string::npos ? "q8_0" : rest.substr(colon + 1);
  if (name.empty() || name.find('/') != std::string::npos || type.empty()
      || type.find('/') != std::string::npos)
    return core::error{errc::invalid_argument,
                       "model \"" + spec + "\": expected shoal:<name>[:<type>]", spec};
  const std::string file = name + "." + type + ".gguf";
  std::string tried;
  for (const auto& d : trained_model_dirs()) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(d / file, ec))
      return d / file;
    tried += (tried.empty() ? "" : ", ") + d.string();
  }
  return core::error{errc::not_found,
                     "model \"" + spec + "\": " + file + " is in none of " + tried
                       + " (set SHOAL_MODELS_DIR to the models/ directory)",
                     spec};
}

} // namespace

core::result<std::filesystem::path> resolve_model(const std::string& spec) {
  if (spec.rfind("shoal:", 0) == 0)
    return resolve_trained(spec);
  if (spec.rfind("demo:", 0) != 0)
    return std::filesystem::path(spec);
  auto rest = spec.substr(5);
  auto colon = rest.find(':');
  std::string shape = rest.substr(0, colon);
  std::string type = colon == std::string::npos ? "q8_0" : rest.substr(colon + 1);
  auto preset = engine::random_model_preset(shape);
  if (!preset)
    return core::error{errc::invalid_argument,
                       "model \"" + spec + "\": unknown demo shape \"" + shape
                         + "\" (known: tiny, 15M, 110M, 260M)",
                       spec};
  auto wt = engine::weight_type_from_name(type);
  if (!wt)
    return core::error{errc::invalid_argument,
                       "model \"" + spec + "\": unknown weight type \"" + type
                         + "\" (known: f32, f16, bf16, q8_0, q4_0, q4_k, q6_k)",
                       spec};
  preset->weight_type = *wt;
  preset->name = "shoal-demo-" + shape + "-" + type;
  auto dir = model_cache_dir();
  auto path = dir / (preset->name + ".gguf");
  if (std::filesystem::exists(path))
    return path;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return core::error{errc::storage_failure,
                       "cannot create the model cache " + dir.string() + ": " + ec.message(),
                       dir.string()};
  // A unique temporary name per writer: concurrent nodes each write the
  // same bytes and rename atomically.
  auto tmp = path.string() + "." + std::to_string(::getpid());
  auto w = engine::write_random_model(*preset, tmp);
  if (!w)
    return core::error{errc::storage_failure,
                       "cannot write demo model " + path.string() + ": " + w.err().message,
                       path.string()};
  std::filesystem::rename(tmp, path, ec);
  if (ec)
    return core::error{errc::storage_failure,
                       "cannot write demo model " + path.string() + ": " + ec.message(),
                       path.string()};
  return path;
}

core::result<actors::engine_tier> load_tier(const router::tier_config& tc,
                                            const engine::kv_tier_config& kv,
                                            std::shared_ptr<core::memory_budget> budget) {
  auto in_tier = [&tc](const core::error& e, const std::string& what) {
    return core::error{e.code, "tier " + tc.name + ": " + what + e.message, e.context};
  };
  auto where = resolve_model(tc.model);
  if (!where)
    return in_tier(where.err(), "");
  const auto path = *where;
  auto m = engine::model::load(path.string());
  if (!m)
    return in_tier(m.err(), "");
  auto tok = engine::tokenizer::from_gguf((*m)->file());
  if (!tok)
    return in_tier(tok.err(), path.string() + ": ");
  actors::engine_tier t;
  t.name = tc.name;
  t.model = std::move(*m);
  t.tokenizer = std::make_shared<const engine::tokenizer>(std::move(*tok));
  t.scheduler.n_ctx = std::min<uint32_t>(tc.n_ctx, t.model->hparams().n_ctx_train);
  t.scheduler.max_sequences = tc.max_sequences;
  t.scheduler.kv = kv;
  t.threads = tc.threads;
  t.budget = std::move(budget);
  return t;
}

} // namespace shoal::node
