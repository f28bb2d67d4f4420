#include "node/node.hpp"

#include "node/kernel_packs.hpp"

#include "actors/actors.hpp"
#include "actors/memory.hpp"
#include "actors/sessions.hpp"
#include "core/clock.hpp"
#include "federation/bridge.hpp"
#include "node/gateway.hpp"
#include "node/models.hpp"
#include "proto/error.hpp"
#include "actors/kv_spill.hpp"
#include "store/sealed.hpp"

#include <caf/all.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <fstream>
#include <pthread.h>
#include <thread>
#include <utility>

namespace shoal::node {

std::filesystem::path key_path(const node_config& cfg) {
  return cfg.federation.key_file.empty() ? cfg.store.data_dir / "node.key"
                                         : std::filesystem::path(cfg.federation.key_file);
}

namespace {

/// Longest actor_stop waits for an actor to quit. The router (the one actor
/// awaited, when federated) writes its last changes first; past this bound
/// shutdown goes on without it (logged), and the actor system still waits
/// for it when it is destroyed.
constexpr auto actor_exit_wait = std::chrono::seconds(60);

/// Sends an actor its exit message when destroyed; with `wait_in`, also
/// waits until it has quit (at most actor_exit_wait).
class actor_stop {
public:
  actor_stop() = default;
  /// @param hdl any actor handle, dynamically or statically typed.
  template <class Handle>
  explicit actor_stop(Handle hdl, caf::actor_system* wait_in = nullptr)
    : hdl_(caf::actor_cast<caf::actor>(std::move(hdl))), wait_in_(wait_in) {}
  actor_stop(actor_stop&& x) noexcept
    : hdl_(std::exchange(x.hdl_, caf::actor{})), wait_in_(x.wait_in_) {}
  actor_stop& operator=(actor_stop&& x) noexcept {
    stop();
    hdl_ = std::exchange(x.hdl_, caf::actor{});
    wait_in_ = x.wait_in_;
    return *this;
  }
  ~actor_stop() { stop(); }

  const caf::actor& get() const noexcept { return hdl_; }

  void stop() {
    if (!hdl_)
      return;
    if (wait_in_ != nullptr) {
      caf::scoped_actor waiter{*wait_in_};
      waiter->monitor(hdl_);
      caf::anon_send_exit(hdl_, caf::exit_reason::user_shutdown);
      waiter->receive([](const caf::down_msg&) {},
                      caf::after(actor_exit_wait) >>
                        [this] {
                          spdlog::error("actor {} did not stop within {} s; shutting down "
                                        "without waiting for it",
                                        hdl_.id(), actor_exit_wait.count());
                        });
    } else {
      caf::anon_send_exit(hdl_, caf::exit_reason::user_shutdown);
    }
    hdl_ = caf::actor{}; // the system waits for detached actors' last handle
  }

private:
  caf::actor hdl_;
  caf::actor_system* wait_in_ = nullptr;
};

/// The LMDB environment, synced and closed when destroyed.
struct synced_store {
  std::shared_ptr<store::environment> env;
  ~synced_store() {
    if (!env)
      return;
    if (auto err = env->sync())
      spdlog::error("final LMDB sync failed: {}", err.message);
    env.reset(); // closes LMDB (the last handle)
  }
};

/// The session index and its reaper: the reaper stops, then the turns of
/// the last 200 ms are flushed.
struct session_service {
  std::shared_ptr<actors::session_index> index;
  actor_stop reaper;
  ~session_service() {
    reaper.stop();
    if (index)
      index->flush();
  }
};

core::error fail(errc code, std::string message) {
  return {code, std::move(message)};
}

} // namespace

/// Members in start order; the destructor runs them backwards, which is the
/// shutdown order (see node.hpp).
struct node_runtime::impl {
  node_config cfg;
  synced_store store;                          ///< closed last
  std::shared_ptr<const crypto::sealer> seal;  ///< memory.seal_key, or null
  std::shared_ptr<core::memory_budget> budget; ///< one budget: patterns, KV, adapters
  // Opened before the actor system, handed to actors as it starts.
  std::shared_ptr<router::pattern_bank> bank;
  std::optional<learn::router_v2_model> v2;
  std::optional<crypto::identity> self_id; ///< with federation on
  caf::actor_system_config sys_cfg;        ///< the system keeps a reference to it
  std::unique_ptr<caf::actor_system> sys;  ///< waits for every actor as it goes
  gateway_actors handles;                  ///< the gateway's copies, dropped before sys
  actor_stop telemetry, witness, bridge, router, sona;
  std::vector<actor_stop> engines;
  actor_stop memory;
  session_service sessions;
  std::unique_ptr<gateway> gw; ///< stopped first: no more requests

  explicit impl(const node_config& c) : cfg(c) {}

  core::error open_storage();
  core::error open_learning();
  core::error spawn_actors();
  core::error spawn_engines();
};

core::error node_runtime::impl::open_storage() {
  auto env = store::environment::open(cfg.store);
  if (!env)
    return fail(errc::storage_failure, "cannot open storage: " + env.err().message);
  store.env = *env;
  if (!cfg.memory_seal_key.empty()) {
    auto s = crypto::sealer::from_hex(cfg.memory_seal_key, "memory.seal_key");
    if (!s)
      return s.err();
    seal = std::make_shared<const crypto::sealer>(*s);
  }
  // An older store is upgraded here; the sealed records it rewrites need the key.
  if (auto err = store.env->ensure_schema(cfg.embedder.dim, core::utc_now_ms(), seal.get()))
    return fail(errc::storage_failure, "cannot use storage: " + err.message);
  if (auto err = store::check_seal_key(*store.env, seal.get()))
    return fail(errc::storage_failure, "cannot use storage: " + err.message);
  if (!seal)
    spdlog::info("memory: memory.seal_key is not set: KV pages the budget evicts are dropped, "
                 "not spilled");
  return {};
}

core::error node_runtime::impl::open_learning() {
  auto router_cfg = cfg.router;
  if (cfg.federation.enabled) {
    auto id = crypto::identity::load_or_create(key_path(cfg));
    if (!id)
      return fail(id.err().code, "cannot load the node key: " + id.err().message);
    self_id = *id;
    router_cfg.node_id = id->id();
    spdlog::info("federation: node {} has id {} and public key {}", cfg.name,
                 proto::format_request_id(id->id()), crypto::to_hex(id->pk()));
    if (crypto::trust_list::parse(cfg.federation.trusted)->size() == 0)
      spdlog::warn("federation: federation.trusted is empty: this node publishes what it "
                   "learns but accepts nothing from peers");
  }
  auto b = router::pattern_bank::open(cfg.embedder.dim, router_cfg, store.env);
  if (!b)
    return fail(errc::storage_failure, "cannot open the pattern bank: " + b.err().message);
  bank = std::shared_ptr<router::pattern_bank>(std::move(*b));
  spdlog::info("pattern bank: {} patterns{}", bank->size(),
               bank->rebuilt_index() ? " (index rebuilt from LMDB)" : "");
  budget = std::make_shared<core::memory_budget>(cfg.memory_budget_mb << 20);
  if (auto err = bank->set_budget(budget))
    return fail(errc::resource_exhausted, "memory budget: " + err.message);
  if (!cfg.sona.v2)
    return {};
  // Router v2: its checkpoint from the policies table, or a new model.
  learn::router_v2_config mc;
  mc.embed_dim = cfg.embedder.dim;
  mc.n_tiers = static_cast<uint32_t>(cfg.router.tiers.size());
  auto restored = actors::load_router_v2(*store.env, mc);
  if (!restored)
    return fail(errc::corrupt_data, "router v2: " + restored.err().message);
  v2 = std::move(*restored);
  if (v2)
    spdlog::info("router v2 restored from the policies table");
  // Its model copies and trajectory buffers come out of the node's budget.
  const uint64_t bytes = actors::sona_fixed_bytes(cfg.sona, v2 ? *v2 : learn::router_v2_model(mc));
  if (!budget->try_reserve(core::memory_budget::use::adapter, bytes))
    return fail(errc::resource_exhausted,
                fmt::format("memory budget: router v2 needs {:.1f} MiB for its models and "
                            "trajectory buffers (sona.v2_pending, sona.train_window), but "
                            "memory.budget_mb = {} has {:.1f} MiB left; raise the budget, lower "
                            "those keys or set sona.v2 = false",
                            bytes / 1048576.0, cfg.memory_budget_mb,
                            (budget->limit() - budget->used()) / 1048576.0));
  spdlog::info("router v2: {:.1f} MiB of the memory budget for its models and trajectories",
               bytes / 1048576.0);
  return {};
}

core::error node_runtime::impl::spawn_actors() {
  // Work sharing (one queue, workers wait on a condition variable): CAF's
  // default work stealing polls with 50 µs sleeps when idle, which on a
  // small edge machine costs tens of thousands of context switches per
  // second. The hot actors (router, witness) are detached anyway.
  sys_cfg.set("scheduler.policy", caf::atom("sharing"));
  if (cfg.scheduler_threads > 0)
    sys_cfg.set("scheduler.max-threads", static_cast<size_t>(cfg.scheduler_threads));
  sys = std::make_unique<caf::actor_system>(sys_cfg);
  std::vector<double> costs;
  for (const auto& t : cfg.router.tiers)
    costs.push_back(t.cost);
  handles.telemetry = actors::spawn_telemetry(*sys, cfg.router.tiers.size());
  telemetry = actor_stop(handles.telemetry);
  auto index = actors::session_index::open(store.env, seal);
  if (!index)
    return fail(errc::storage_failure, "cannot load the session index: " + index.err().message);
  sessions.index = *index;
  spdlog::info("sessions: {} loaded ({}), idle expiry after {} s", sessions.index->size(),
               sessions.index->persistent() ? "sealed in LMDB" : "memory only: no memory.seal_key",
               cfg.memory_session_idle_s);
  const int64_t idle_ms = static_cast<int64_t>(cfg.memory_session_idle_s) * 1000;
  sessions.reaper = actor_stop(actors::spawn_session_reaper(
    *sys, sessions.index, std::chrono::milliseconds(std::clamp<int64_t>(idle_ms / 4, 1000, 60000)),
    idle_ms));
  handles.witness = actors::spawn_witness(*sys, cfg.witness, store.env);
  witness = actor_stop(handles.witness);
  const uint64_t stream_seq = bank->stream_seq();
  // The router goes before the bridge at shutdown, so its last changes are
  // published; with a bridge, its exit is awaited.
  handles.router = actors::spawn_router(*sys, std::move(bank), handles.witness, handles.telemetry);
  router = actor_stop(handles.router, self_id ? sys.get() : nullptr);
  if (self_id) {
    handles.bridge = federation::spawn_bridge(
      *sys, {cfg.federation, cfg.name, *self_id, *crypto::trust_list::parse(cfg.federation.trusted),
             handles.router, cfg.embedder.dim, static_cast<uint32_t>(cfg.router.tiers.size()),
             stream_seq});
    bridge = actor_stop(handles.bridge);
  }
  handles.sona =
    actors::spawn_sona(*sys, cfg.sona, cfg.embedder.dim, costs, handles.router, handles.witness,
                       handles.telemetry, store.env, std::move(v2), budget);
  sona = actor_stop(handles.sona);
  {
    // SONA hands the router its model as it starts; once it answers, that
    // handoff is in the router's mailbox ahead of any request the gateway
    // sends, so the first request already routes with router v2.
    caf::scoped_actor self{*sys};
    self->request(handles.sona, std::chrono::seconds(30), actors::status_atom::value)
      .receive([](actors::learn_status&) {},
               [](caf::error& e) {
                 spdlog::warn("sona did not start in time ({}); the first requests may "
                              "route with router v1 alone",
                              view(e).message);
               });
  }
  handles.memory = actors::spawn_memory_pool(*sys, budget, store.env);
  memory = actor_stop(handles.memory);
  handles.sessions = sessions.index;
  return {};
}

core::error node_runtime::impl::spawn_engines() {
  const auto kv = kv_tier(cfg);
  for (const auto& tc : cfg.router.tiers) {
    api_tier t;
    t.name = tc.name;
    if (!tc.model.empty()) {
      auto loaded = load_tier(tc, kv, budget);
      if (!loaded)
        return loaded.err();
      auto& et = *loaded;
      if (seal)
        et.spill = std::make_shared<actors::kv_spill_store>(std::make_unique<store::kv_spill_table>(
          store.env, seal, et.model->fingerprint(), cfg.memory_spill_max_mb << 20));
      const auto& hp = et.model->hparams();
      t.tokenizer = et.tokenizer;
      t.n_ctx = et.scheduler.n_ctx;
      t.model_file = et.model->file().find("general.name") ? std::string(hp.name) : tc.model;
      t.fingerprint = fmt::format("{:016x}", et.model->fingerprint());
      t.weight_type = std::string(et.model->weight_type_name());
      t.chat = *engine::parse_chat_format(tc.chat_format);
      auto tmpl = et.model->file().find_string("tokenizer.chat_template");
      if (tmpl && *tmpl)
        if (auto f = engine::detect_chat_format(**tmpl))
          t.chat = *f;
      spdlog::info("tier {}: {} ({} {}, {} layers, n_embd {}, vocab {}, {:.1f} MB of weights), "
                   "context {}, chat format {}, {} thread(s)",
                   tc.name, tc.model, hp.arch, et.model->weight_type_name(), hp.n_layer, hp.n_embd,
                   hp.n_vocab, et.model->weight_bytes() / 1e6, t.n_ctx, engine::to_string(t.chat),
                   et.threads);
      et.memory = handles.memory;
      // A KV policy changed at run time (operator, learning loops) outlives restarts.
      auto stored = actors::load_kv_policy(*store.env, tc.name);
      if (!stored)
        return fail(errc::corrupt_data, "tier " + tc.name + ": " + stored.err().message);
      if (*stored) {
        auto& k = et.scheduler.kv;
        k.recent_tokens = (*stored)->recent_tokens;
        k.old_k_type = (*stored)->old_k_type;
        k.old_v_type = (*stored)->old_v_type;
        k.migrate_pages = (*stored)->migrate_pages;
        spdlog::info("tier {}: stored KV policy: recent {} tokens, old tier {}/{}", tc.name,
                     k.recent_tokens, kernels::to_string(k.old_k_type),
                     kernels::to_string(k.old_v_type));
      }
      t.engine = actors::spawn_engine(*sys, std::move(et));
      caf::anon_send(handles.memory, actors::register_atom::value, tc.name, t.engine);
      engines.emplace_back(t.engine);
    }
    handles.tiers.push_back(std::move(t));
  }
  return {};
}

node_runtime::node_runtime(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
node_runtime::~node_runtime() = default;

core::result<std::unique_ptr<node_runtime>> node_runtime::start(const node_config& cfg) {
  auto p = std::make_unique<impl>(cfg);
  for (auto step :
       {&impl::open_storage, &impl::open_learning, &impl::spawn_actors, &impl::spawn_engines})
    if (auto err = ((*p).*step)())
      return err; // ~impl stops what was started, in order
  p->gw = std::make_unique<gateway>(*p->sys, p->cfg, p->handles);
  return std::unique_ptr<node_runtime>(new node_runtime(std::move(p)));
}

core::error node_runtime::serve() {
  auto& cfg = impl_->cfg;
  auto bound = impl_->gw->bind();
  if (!bound)
    return bound.err();
  std::string where = cfg.http.address + ":" + std::to_string(*bound);
  if (!cfg.http.port_file.empty()) {
    auto tmp = cfg.http.port_file + ".tmp";
    std::ofstream(tmp) << where << "\n";
    std::rename(tmp.c_str(), cfg.http.port_file.c_str());
  }
  spdlog::info("node {} serving on http://{} (data in {})", cfg.name, where,
               cfg.store.data_dir.string());
  impl_->gw->serve();
  return {};
}

void node_runtime::stop() {
  impl_->gw->stop();
}

int run_node(const node_config& cfg) {
  // Block the shutdown signals in every thread (threads inherit the mask);
  // one thread waits for them with sigwait.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  spdlog::set_level(spdlog::level::from_str(cfg.log_level));
  auto log = apply_kernels_config(cfg.kernels);
  if (!log) {
    spdlog::critical("{}: {}", log.err().context, log.err().message);
    return 1;
  }
  for (const auto& line : *log)
    spdlog::info("{}", line);
  spdlog::info("kernels: dispatching to {} (cpu {}, cap {} from {})",
               kernels::to_string(kernels::active_isa()), kernels::to_string(kernels::cpu().level),
               kernels::to_string(kernels::isa_cap()), kernels::isa_cap_source());
  int rc = 0;
  {
    auto node = node_runtime::start(cfg);
    if (!node) {
      spdlog::critical("{}", node.err().message);
      return 1;
    }
    std::thread waiter([&] {
      int sig = 0;
      sigwait(&sigs, &sig);
      spdlog::info("received {}, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
      (*node)->stop();
    });
    if (auto err = (*node)->serve()) {
      spdlog::critical("{}", err.message);
      rc = 1;
    }
    // serve() also returns on a listener failure: wake the waiter then.
    pthread_kill(waiter.native_handle(), SIGTERM);
    waiter.join();
  } // ~node_runtime: everything stops, in order; LMDB is synced and closed
  spdlog::info("node stopped cleanly");
  return rc;
}

} // namespace shoal::node
