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
#include <spdlog/spdlog.h>

#include <csignal>
#include <fstream>
#include <pthread.h>
#include <thread>

namespace shoal::node {

std::filesystem::path key_path(const node_config& cfg) {
  return cfg.federation.key_file.empty() ? cfg.store.data_dir / "node.key"
                                         : std::filesystem::path(cfg.federation.key_file);
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
  {
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
  }

  auto env = store::environment::open(cfg.store);
  if (!env) {
    spdlog::critical("cannot open storage: {}", view(env.error()).message);
    return 1;
  }
  if (auto err = (*env)->ensure_schema(cfg.embedder.dim, core::utc_now_ms())) {
    spdlog::critical("cannot use storage: {}", view(err).message);
    return 1;
  }
  std::shared_ptr<const crypto::sealer> seal;
  if (!cfg.memory_seal_key.empty()) {
    auto s = crypto::sealer::from_hex(cfg.memory_seal_key, "memory.seal_key");
    if (!s) {
      spdlog::critical("{}", s.err().message);
      return 1;
    }
    seal = std::make_shared<const crypto::sealer>(*s);
  }
  if (auto err = store::check_seal_key(**env, seal.get())) {
    spdlog::critical("cannot use storage: {}", view(err).message);
    return 1;
  }
  if (!seal)
    spdlog::info("memory: memory.seal_key is not set: KV pages the budget evicts are dropped, "
                 "not spilled");
  auto router_cfg = cfg.router;
  std::optional<crypto::identity> self_id;
  if (cfg.federation.enabled) {
    auto id = crypto::identity::load_or_create(key_path(cfg));
    if (!id) {
      spdlog::critical("cannot load the node key: {}", id.err().message);
      return 1;
    }
    self_id = *id;
    router_cfg.node_id = id->id();
    spdlog::info("federation: node {} has id {} and public key {}", cfg.name,
                 proto::format_request_id(id->id()), crypto::to_hex(id->pk()));
    if (crypto::trust_list::parse(cfg.federation.trusted)->size() == 0)
      spdlog::warn("federation: federation.trusted is empty: this node publishes what it "
                   "learns but accepts nothing from peers");
  }
  auto bank = router::pattern_bank::open(cfg.embedder.dim, router_cfg, *env);
  if (!bank) {
    spdlog::critical("cannot open the pattern bank: {}", view(bank.error()).message);
    return 1;
  }
  spdlog::info("pattern bank: {} patterns{}", (*bank)->size(),
               (*bank)->rebuilt_index() ? " (index rebuilt from LMDB)" : "");
  // One byte budget for the router's patterns, KV pages and (later) adapters.
  auto budget = std::make_shared<core::memory_budget>(cfg.memory_budget_mb << 20);
  if (auto err = (*bank)->set_budget(budget)) {
    spdlog::critical("memory budget: {}", view(err).message);
    return 1;
  }

  // Router v2: its checkpoint from the policies table, or a new model.
  std::optional<learn::router_v2_model> v2;
  if (cfg.sona.v2) {
    learn::router_v2_config mc;
    mc.embed_dim = cfg.embedder.dim;
    mc.n_tiers = static_cast<uint32_t>(cfg.router.tiers.size());
    auto restored = actors::load_router_v2(**env, mc);
    if (!restored) {
      spdlog::critical("router v2: {}", view(restored.error()).message);
      return 1;
    }
    v2 = std::move(*restored);
    if (v2)
      spdlog::info("router v2 restored from the policies table");
    // Its model copies and trajectory buffers come out of the node's budget.
    const uint64_t bytes = actors::sona_fixed_bytes(cfg.sona, v2 ? *v2 : learn::router_v2_model(mc));
    if (!budget->try_reserve(core::memory_budget::use::adapter, bytes)) {
      spdlog::critical("memory budget: router v2 needs {:.1f} MiB for its models and trajectory "
                       "buffers (sona.v2_pending, sona.train_window), but memory.budget_mb = {} "
                       "has {:.1f} MiB left; raise the budget, lower those keys or set "
                       "sona.v2 = false",
                       bytes / 1048576.0, cfg.memory_budget_mb,
                       (budget->limit() - budget->used()) / 1048576.0);
      return 1;
    }
    spdlog::info("router v2: {:.1f} MiB of the memory budget for its models and trajectories",
                 bytes / 1048576.0);
  }

  caf::actor_system_config sys_cfg;
  // Work sharing (one queue, workers wait on a condition variable): CAF's
  // default work stealing polls with 50 µs sleeps when idle, which on a
  // small edge machine costs tens of thousands of context switches per
  // second. The hot actors (router, witness) are detached anyway.
  sys_cfg.set("scheduler.policy", caf::atom("sharing"));
  if (cfg.scheduler_threads > 0)
    sys_cfg.set("scheduler.max-threads", static_cast<size_t>(cfg.scheduler_threads));
  int rc = 0;
  {
    caf::actor_system sys{sys_cfg};
    std::vector<double> costs;
    for (const auto& t : cfg.router.tiers)
      costs.push_back(t.cost);
    gateway_actors a;
    a.telemetry = actors::spawn_telemetry(sys, cfg.router.tiers.size());
    auto sessions = actors::session_index::open(*env, seal);
    if (!sessions) {
      spdlog::critical("cannot load the session index: {}", view(sessions.error()).message);
      return 1;
    }
    a.sessions = *sessions;
    spdlog::info("sessions: {} loaded ({}), idle expiry after {} s", a.sessions->size(),
                 a.sessions->persistent() ? "sealed in LMDB" : "memory only: no memory.seal_key",
                 cfg.memory_session_idle_s);
    const int64_t idle_ms = static_cast<int64_t>(cfg.memory_session_idle_s) * 1000;
    auto reaper = actors::spawn_session_reaper(
      sys, a.sessions, std::chrono::milliseconds(std::clamp<int64_t>(idle_ms / 4, 1000, 60000)),
      idle_ms);
    a.witness = actors::spawn_witness(sys, cfg.witness, *env);
    uint64_t stream_seq = (*bank)->stream_seq();
    a.router = actors::spawn_router(sys, std::shared_ptr<router::pattern_bank>(std::move(*bank)),
                                    a.witness, a.telemetry);
    if (self_id) {
      federation::bridge_args ba{cfg.federation,
                                 cfg.name,
                                 *self_id,
                                 *crypto::trust_list::parse(cfg.federation.trusted),
                                 a.router,
                                 cfg.embedder.dim,
                                 static_cast<uint32_t>(cfg.router.tiers.size()),
                                 stream_seq};
      a.bridge = federation::spawn_bridge(sys, std::move(ba));
    }
    a.sona = actors::spawn_sona(sys, cfg.sona, costs, a.router, a.witness, a.telemetry, *env,
                                std::move(v2), budget);
    {
      // SONA hands the router its model as it starts; once it answers, that
      // handoff is in the router's mailbox ahead of any request the gateway
      // sends, so the first request already routes with router v2.
      caf::scoped_actor self{sys};
      self->request(a.sona, std::chrono::seconds(30), actors::status_atom::value)
        .receive([](actors::learn_status&) {},
                 [](caf::error& e) {
                   spdlog::warn("sona did not start in time ({}); the first requests may "
                                "route with router v1 alone", view(e).message);
                 });
    }
    std::vector<caf::actor> engines;
    auto memory = actors::spawn_memory_pool(sys, budget, *env);
    a.memory = memory;
    const auto kv = kv_tier(cfg);
    for (const auto& tc : cfg.router.tiers) {
      api_tier t;
      t.name = tc.name;
      if (!tc.model.empty()) {
        auto loaded = load_tier(tc, kv, budget);
        if (auto* err = std::get_if<std::string>(&loaded)) {
          spdlog::critical("{}", *err);
          rc = 1;
          break;
        }
        auto& et = std::get<actors::engine_tier>(loaded);
        if (seal)
          et.spill = std::make_shared<actors::kv_spill_store>(std::make_unique<store::kv_spill_table>(
            *env, seal, et.model->fingerprint(), cfg.memory_spill_max_mb << 20));
        const auto& hp = et.model->hparams();
        t.tokenizer = et.tokenizer;
        t.n_ctx = et.scheduler.n_ctx;
        t.model_file = et.model->file().find("general.name") ? std::string(hp.name) : tc.model;
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
        et.memory = memory;
        // A KV policy changed at run time (operator, learning loops) outlives restarts.
        auto stored = actors::load_kv_policy(**env, tc.name);
        if (!stored) {
          spdlog::critical("tier {}: {}", tc.name, view(stored.error()).message);
          rc = 1;
          break;
        }
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
        t.engine = actors::spawn_engine(sys, std::move(et));
        caf::anon_send(memory, actors::register_atom::value, tc.name, t.engine);
        engines.push_back(t.engine);
      }
      a.tiers.push_back(std::move(t));
    }
    if (rc == 0) {
    {
      gateway gw(sys, cfg, a);
      auto bound = gw.bind();
      if (auto* err = std::get_if<std::string>(&bound)) {
        spdlog::critical("{}", *err);
        rc = 1;
      } else {
        int port = std::get<int>(bound);
        std::string where = cfg.http.address + ":" + std::to_string(port);
        if (!cfg.http.port_file.empty()) {
          auto tmp = cfg.http.port_file + ".tmp";
          std::ofstream(tmp) << where << "\n";
          std::rename(tmp.c_str(), cfg.http.port_file.c_str());
        }
        spdlog::info("node {} serving on http://{} (data in {})", cfg.name, where,
                     cfg.store.data_dir.string());
        std::thread waiter([&] {
          int sig = 0;
          sigwait(&sigs, &sig);
          spdlog::info("received {}, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
          gw.stop();
        });
        gw.serve();
        // serve() also returns on a listener failure: wake the waiter then.
        pthread_kill(waiter.native_handle(), SIGTERM);
        waiter.join();
      }
    } // gateway destroyed: no more requests reach the actors
    }
    a.tiers.clear();
    caf::anon_send_exit(reaper, caf::exit_reason::user_shutdown);
    reaper = caf::actor{};
    a.sessions->flush(); // the turns of the last 200 ms
    caf::anon_send_exit(memory, caf::exit_reason::user_shutdown);
    memory = caf::actor{};
    a.memory = caf::actor{};
    for (auto& e : engines)
      caf::anon_send_exit(e, caf::exit_reason::user_shutdown);
    engines.clear();
    // The router goes before the bridge, so its last changes are published;
    // the bridge, then, so it no longer hands merges to a router that left.
    caf::scoped_actor waiter{sys};
    waiter->monitor(a.router);
    for (auto* h : {&a.sona, &a.router, &a.bridge, &a.witness, &a.telemetry}) {
      if (!*h)
        continue;
      caf::anon_send_exit(*h, caf::exit_reason::user_shutdown);
      if (h == &a.router && a.bridge)
        waiter->receive([](const caf::down_msg&) {});
      *h = caf::actor{}; // the system waits for detached actors' last handle
    }
  } // ~actor_system: waits until every actor has quit (router and witness flush)
  if (auto err = (*env)->sync())
    spdlog::error("final LMDB sync failed: {}", view(err).message);
  env->reset(); // closes LMDB
  spdlog::info("node stopped cleanly");
  return rc;
}

} // namespace shoal::node
