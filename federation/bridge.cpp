#include "federation/bridge.hpp"
#include "federation/bridge_logic.hpp"

#include "proto/error.hpp"
#include "proto/messages.hpp"

#include <caf/all.hpp>
#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

namespace shoal::federation {

namespace {

using proto::digest_atom;
using proto::federate_atom;
using proto::link_atom;
using proto::merge_atom;
using proto::merge_stats;
using proto::publish_atom;
using proto::republish_atom;
using proto::router_digest;
using proto::stats_atom;
using proto::tick_atom;

/// nats callback -> bridge: an envelope and its stream sequence (0 for core NATS).
using inbound_atom = caf::atom_constant<caf::atom("inbound")>;
/// nats callback -> bridge: a message dropped before decoding, and why.
using dropped_atom = caf::atom_constant<caf::atom("dropped")>;
/// nats callback -> bridge: connection events.
using up_atom = caf::atom_constant<caf::atom("up")>;
using down_atom = caf::atom_constant<caf::atom("down")>;
/// bridge timers.
using digest_tick_atom = caf::atom_constant<caf::atom("dtick")>;

using telemetry_tick_atom = caf::atom_constant<caf::atom("ttick")>;
using setup_atom = caf::atom_constant<caf::atom("setup")>;
using retry_atom = caf::atom_constant<caf::atom("retry")>;
/// JetStream -> bridge: a delta batch was not stored (no ack, or an error).
using lost_atom = caf::atom_constant<caf::atom("lost")>;
using relost_atom = caf::atom_constant<caf::atom("relost")>;

int64_t utc_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

int64_t utc_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

std::string upper(std::string s) {
  for (auto& c : s)
    c = (c == '-') ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::vector<std::string> split_urls(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    auto comma = s.find(',', pos);
    auto item = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!item.empty())
      out.push_back(item);
    if (comma == std::string::npos)
      break;
    pos = comma + 1;
  }
  return out;
}

/// What NATS callbacks see. Callbacks may still run while a connection
/// closes, so links live until the process ends (one per bridge); the
/// bridge handle is dropped when it closes (a strong handle would keep the
/// detached actor, and the actor system, from ever finishing).
struct nats_link {
  std::mutex mtx;
  caf::actor bridge_handle;
  caf::actor bridge() {
    std::lock_guard guard(mtx);
    return bridge_handle;
  }
  void reset() {
    std::lock_guard guard(mtx);
    bridge_handle = caf::actor{};
  }
  template <class... Ts>
  void send(Ts&&... xs) {
    if (auto b = bridge())
      caf::anon_send(b, std::forward<Ts>(xs)...);
  }
  std::string own_patterns_subject;
  uint64_t max_message_bytes = 0;
  uint32_t reconnect_wait_ms = 100;
  uint32_t reconnect_max_ms = 5000;
  std::mt19937_64 rng{std::random_device{}()}; // guarded by mtx
};

nats_link* new_link() {
  static std::mutex mtx;
  static std::list<std::unique_ptr<nats_link>> links;
  std::lock_guard guard(mtx);
  return links.emplace_back(std::make_unique<nats_link>()).get();
}

void on_message(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto* link = static_cast<nats_link*>(closure);
  uint64_t seq = 0;
  jsMsgMetaData* meta = nullptr;
  if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
    seq = meta->Sequence.Stream;
    jsMsgMetaData_Destroy(meta);
  }
  const char* subject = natsMsg_GetSubject(msg);
  int len = natsMsg_GetDataLength(msg);
  if (subject != nullptr && link->own_patterns_subject == subject) {
    // Our own batch coming back from the stream: only its position matters.
    link->send(inbound_atom::value, proto::envelope{}, seq, true);
  } else if (static_cast<uint64_t>(std::max(len, 0)) > link->max_message_bytes) {
    link->send(dropped_atom::value, static_cast<int>(drop_reason::oversized),
               std::string(subject ? subject : ""), seq);
  } else if (auto e = proto::decode_envelope({natsMsg_GetData(msg), static_cast<size_t>(len)})) {
    link->send(inbound_atom::value, std::move(*e), seq, false);
  } else {
    link->send(dropped_atom::value, static_cast<int>(drop_reason::malformed),
               std::string(subject ? subject : ""), seq);
  }
  natsMsg_Destroy(msg);
}

void on_connected(natsConnection*, void* closure) {
  static_cast<nats_link*>(closure)->send(up_atom::value);
}

void on_disconnected(natsConnection*, void* closure) {
  static_cast<nats_link*>(closure)->send(down_atom::value);
}

/// A batch published with js_PublishAsync got an error or no ack in time.
void on_publish_error(jsCtx*, jsPubAckErr* pae, void* closure) {
  std::string why = pae->ErrText != nullptr ? pae->ErrText : natsStatus_GetText(pae->Err);
  static_cast<nats_link*>(closure)->send(lost_atom::value, std::move(why));
}

void on_error(natsConnection*, natsSubscription*, natsStatus s, void*) {
  spdlog::warn("federation: NATS: {}", natsStatus_GetText(s));
}

/// Exponential backoff with ±25% jitter.
int64_t reconnect_delay(natsConnection*, int attempts, void* closure) {
  auto* link = static_cast<nats_link*>(closure);
  double d = link->reconnect_wait_ms;
  for (int i = 1; i < attempts && d < link->reconnect_max_ms; ++i)
    d *= 2;
  d = std::min<double>(d, link->reconnect_max_ms);
  std::lock_guard guard(link->mtx);
  std::uniform_real_distribution<double> jitter(0.75, 1.25);
  return static_cast<int64_t>(d * jitter(link->rng));
}

/// What the JetStream set-up needs; it runs on its own thread, as its
/// requests block (seconds while a NATS cluster elects a stream leader).
struct setup_input {
  natsConnection* nc = nullptr;
  nats_link* link = nullptr;
  federation_config cfg;
  std::string stream, prefix;
  uint64_t start_seq = 0;
};

struct setup_result {
  jsCtx* js = nullptr;
  natsSubscription* stream_sub = nullptr;
  std::vector<natsSubscription*> core_subs;
  uint64_t first = 0, last = 0;
  bool reset = false; ///< the stream ends before what this node merged: it was recreated
  std::string error;  ///< "" on success
};

/// Creates the stream when missing and subscribes to everything.
setup_result run_setup(const setup_input& in) {
  setup_result r;
  auto subject = [&](const char* tail) { return in.prefix + tail; };
  auto fail = [&](std::string msg) {
    for (auto* sub : r.core_subs)
      natsSubscription_Destroy(sub);
    r.core_subs.clear();
    if (r.stream_sub != nullptr)
      natsSubscription_Destroy(r.stream_sub);
    r.stream_sub = nullptr;
    if (r.js != nullptr)
      jsCtx_Destroy(r.js);
    r.js = nullptr;
    r.error = std::move(msg);
    return r;
  };
  jsOptions jo;
  jsOptions_Init(&jo);
  if (!in.cfg.jetstream_domain.empty())
    jo.Domain = in.cfg.jetstream_domain.c_str();
  jo.PublishAsync.ErrHandler = on_publish_error;
  jo.PublishAsync.ErrHandlerClosure = in.link;
  if (auto s = natsConnection_JetStream(&r.js, in.nc, &jo); s != NATS_OK)
    return fail(std::string("JetStream context: ") + natsStatus_GetText(s));
  jsErrCode jerr{};
  jsStreamInfo* si = nullptr;
  natsStatus s = js_GetStreamInfo(&si, r.js, in.stream.c_str(), nullptr, &jerr);
  if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    auto subj = subject("patterns.>");
    const char* subjects[] = {subj.c_str()};
    sc.Name = in.stream.c_str();
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.MaxBytes = static_cast<int64_t>(in.cfg.stream_max_bytes);
    sc.MaxAge = int64_t{1'000'000'000} * in.cfg.stream_max_age_s;
    sc.Replicas = in.cfg.stream_replicas;
    sc.Discard = js_DiscardOld;
    jerr = {};
    s = js_AddStream(&si, r.js, &sc, nullptr, &jerr);
    if (s != NATS_OK) { // a peer may have been quicker (name exists, or its
                        // reservation of the storage made ours fail)
      jsErrCode again{};
      if (js_GetStreamInfo(&si, r.js, in.stream.c_str(), nullptr, &again) == NATS_OK)
        s = NATS_OK;
    }
  }
  if (s != NATS_OK && jerr == JSStorageResourcesExceededErr)
    return fail("stream " + in.stream
                + ": the NATS server has less JetStream storage than "
                  "federation.stream_max_bytes ("
                + std::to_string(in.cfg.stream_max_bytes)
                + " bytes) times federation.stream_replicas; lower them or raise the "
                  "server's max_file_store");
  if (s != NATS_OK)
    return fail("stream " + in.stream + ": " + natsStatus_GetText(s) + " (JetStream error "
                + std::to_string(static_cast<int>(jerr)) + ")");
  // In a NATS cluster a new stream first elects a leader; until then core
  // publishes to its subjects are not stored. Wait for one (10 s at most)
  // before this node starts publishing.
  for (int i = 0; i < 100 && si->Cluster != nullptr
                  && (si->Cluster->Leader == nullptr || *si->Cluster->Leader == 0);
       ++i) {
    jsStreamInfo_Destroy(si);
    si = nullptr;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    jsErrCode again{};
    if (js_GetStreamInfo(&si, r.js, in.stream.c_str(), nullptr, &again) != NATS_OK)
      return fail("stream " + in.stream + ": no information while waiting for its leader");
  }
  if (si->Cluster != nullptr && (si->Cluster->Leader == nullptr || *si->Cluster->Leader == 0)) {
    jsStreamInfo_Destroy(si);
    return fail("stream " + in.stream + " has no leader yet");
  }
  r.first = si->State.FirstSeq;
  r.last = si->State.LastSeq;
  jsStreamInfo_Destroy(si);
  r.reset = in.start_seq > r.last;
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = in.stream.c_str();
  so.Ordered = true;
  if (in.start_seq > 0 && !r.reset) {
    so.Config.DeliverPolicy = js_DeliverByStartSequence;
    so.Config.OptStartSeq = in.start_seq + 1;
  } else {
    so.Config.DeliverPolicy = js_DeliverAll;
  }
  auto subj = subject("patterns.>");
  jerr = {};
  s = js_Subscribe(&r.stream_sub, r.js, subj.c_str(), on_message, in.link, &jo, &so, &jerr);
  if (s != NATS_OK)
    return fail("subscribing to " + subj + ": " + natsStatus_GetText(s) + " (JetStream error "
                + std::to_string(static_cast<int>(jerr)) + ")");
  for (const char* tail : {"digest", "resync", "telemetry.>"}) {
    natsSubscription* sub = nullptr;
    auto t = subject(tail);
    if (auto cs = natsConnection_Subscribe(&sub, in.nc, t.c_str(), on_message, in.link);
        cs != NATS_OK)
      return fail("subscribing to " + t + ": " + natsStatus_GetText(cs));
    r.core_subs.push_back(sub);
  }
  return r;
}

/// Longest the bridge waits for the router (a merge, a digest, statistics);
/// a late answer is dropped and the next round asks again.
constexpr auto router_timeout = std::chrono::seconds(60);

/// Logs at most once per second per kind of problem.
struct rate_limited_log {
  std::map<std::string, int64_t> last;
  void warn(const std::string& kind, const std::string& msg) {
    auto now = utc_ms();
    auto& t = last[kind];
    if (now - t >= 1000) {
      t = now;
      spdlog::warn("federation: {}", msg);
    }
  }
};

struct bridge_state;

/// The bridge's whole protocol: the node's view (bridge_handle) and the
/// messages of its NATS callbacks, set-up thread and timers.
using bridge_full =
  bridge_handle::extend<caf::reacts_to<up_atom>, caf::reacts_to<down_atom>,
                        caf::reacts_to<setup_atom>, caf::reacts_to<retry_atom>,
                        caf::reacts_to<lost_atom, std::string>, caf::reacts_to<relost_atom>,
                        caf::reacts_to<inbound_atom, proto::envelope, uint64_t, bool>,
                        caf::reacts_to<dropped_atom, int, std::string, uint64_t>,
                        caf::reacts_to<digest_tick_atom>, caf::reacts_to<telemetry_tick_atom>>;

using bridge_self = bridge_full::stateful_pointer<bridge_state>;

std::string connect(bridge_state& s);

/// The bridge actor's state: the NATS connection and its subscriptions, the
/// JetStream set-up, and the ledger (bridge_logic.hpp) that decides and
/// counts. Each handler of bridge_behavior calls one member function.
struct bridge_state {
  bridge_self self;
  bridge_args a;
  nats_link* link = nullptr;
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  natsSubscription* stream_sub = nullptr;
  std::vector<natsSubscription*> core_subs;
  std::string prefix; // shoal.<cluster>.
  std::string stream;
  bridge_ledger ledger{{}, 0, 0};
  uint64_t batch_seq = 0;
  bool lost_deltas = false; // a publish failed: republish on the next link up
  rate_limited_log log;
  // The JetStream set-up in flight (see run_setup), and where it reports.
  std::thread setup_thread;
  std::shared_ptr<setup_result> setup_out;
  static inline const char* name = "federation_bridge";

  explicit bridge_state(bridge_self ptr) : self(ptr) {}

  federation_stats& st() noexcept { return ledger.stats(); }

  /// Takes the arguments, connects (in the background when NATS is not up
  /// yet), attaches to the router and starts the timers.
  void start(bridge_args args) {
    a = std::move(args);
    prefix = "shoal." + a.cfg.cluster + ".";
    stream = "SHOAL_" + upper(a.cfg.cluster);
    ledger = bridge_ledger({a.self.id(), a.dim, a.n_tiers}, a.cfg.digest_interval_ms, a.start_seq);
    st().public_key = crypto::to_hex(a.self.pk());
    link = new_link();
    link->bridge_handle = caf::actor_cast<caf::actor>(self);
    link->own_patterns_subject = subject("patterns." + a.node_name);
    link->max_message_bytes = a.cfg.max_message_bytes;
    link->reconnect_wait_ms = a.cfg.reconnect_wait_ms;
    link->reconnect_max_ms = a.cfg.reconnect_max_ms;
    if (auto err = connect(*this); !err.empty())
      spdlog::error("federation: {}; the node serves without federation", err);
    self->send(a.router, federate_atom::value, caf::actor_cast<proto::bridge_actor>(self),
               a.cfg.batch_max, a.cfg.batch_delay_ms);
    self->delayed_send(self, std::chrono::milliseconds(a.cfg.digest_interval_ms),
                       digest_tick_atom::value);
    self->delayed_send(self, std::chrono::milliseconds(a.cfg.telemetry_interval_ms),
                       telemetry_tick_atom::value);
  }

  /// Starts the set-up on its own thread unless it is done or running.
  void start_setup() {
    if (st().stream_ready || setup_thread.joinable() || nc == nullptr)
      return;
    setup_input in{nc, link, a.cfg, stream, prefix, a.start_seq};
    auto out = std::make_shared<setup_result>();
    setup_out = out;
    setup_thread = std::thread([in = std::move(in), out] {
      *out = run_setup(in);
      in.link->send(setup_atom::value);
    });
  }

  /// Collects the finished set-up. @returns its error, or "" when ready.
  std::string finish_setup() {
    if (!setup_thread.joinable())
      return "no set-up running";
    setup_thread.join();
    auto r = std::move(*setup_out);
    setup_out.reset();
    if (!r.error.empty())
      return r.error;
    js = r.js;
    stream_sub = r.stream_sub;
    core_subs = std::move(r.core_subs);
    st().stream_ready = true;
    if (r.reset) {
      // The stream holds less than this node merged: it was deleted and
      // recreated. Read it from the start; everyone, this node included,
      // republishes what it contributed.
      spdlog::warn("federation: stream {} ends at {} but this node merged up to {}: it was "
                   "recreated; reading it from the start and asking every node to republish",
                   stream, r.last, a.start_seq);
      a.start_seq = 0;
      ledger.reset_seen();
      request_resync(0);
      caf::anon_send(a.router, republish_atom::value);
      return {};
    }
    spdlog::info("federation: stream {} ready (messages {}..{}), consuming from {}", stream,
                 r.first, r.last, a.start_seq + 1);
    if (a.start_seq + 1 < r.first && r.last > 0) {
      // Messages this node never merged were discarded by the stream's
      // limits: ask every node for its contributions.
      spdlog::warn("federation: the stream starts at {} but this node merged up to {}; "
                   "asking peers to republish",
                   r.first, a.start_seq);
      request_resync(0);
    }
    return {};
  }

  std::string subject(const std::string& tail) const { return prefix + tail; }

  void publish(proto::wire_kind kind, const std::string& subj, std::string payload) {
    if (nc == nullptr)
      return;
    auto bytes = proto::encode(seal(a.self, kind, std::move(payload), a.node_name));
    natsStatus s;
    if (kind == proto::wire_kind::delta_batch && js != nullptr) {
      // Into the stream with an ack: a batch the stream did not store comes
      // back through on_publish_error (lost_atom).
      jsPubOptions po;
      jsPubOptions_Init(&po);
      po.MaxWait = 5000;
      s = js_PublishAsync(js, subj.c_str(), bytes.data(), static_cast<int>(bytes.size()), &po);
    } else {
      s = natsConnection_Publish(nc, subj.c_str(), bytes.data(), static_cast<int>(bytes.size()));
    }
    if (s != NATS_OK) {
      ++st().publish_errors;
      if (kind == proto::wire_kind::delta_batch)
        lost_deltas = true;
      log.warn("publish", "publishing on " + subj + " failed: " + natsStatus_GetText(s));
    }
  }

  void request_resync(uint64_t target) {
    ++st().resyncs_requested;
    proto::resync_request r{a.self.id(), a.node_name, utc_ms(), target};
    publish(proto::wire_kind::resync, subject("resync"), proto::encode(r));
  }

  // -- handlers of bridge_behavior ---------------------------------------------

  /// NATS is (again) connected: set up the stream, or tell the router.
  void on_up() {
    if (nc == nullptr)
      return;
    if (!st().connected) {
      ++st().reconnects;
      char buf[256] = {0};
      if (natsConnection_GetConnectedUrl(nc, buf, sizeof buf) == NATS_OK)
        st().url = buf;
      spdlog::info("federation: connected to {}", st().url);
    }
    st().connected = true;
    if (!st().stream_ready) {
      start_setup();
      return;
    }
    link_up();
  }

  /// The set-up thread finished.
  void on_setup_done() {
    if (auto err = finish_setup(); !err.empty()) {
      spdlog::warn("federation: {}; retrying in 1 s", err);
      self->delayed_send(self, std::chrono::seconds(1), retry_atom::value);
      return;
    }
    if (st().connected)
      link_up();
  }

  /// Connected with a stream: the router may publish; what was given up
  /// while NATS was away is asked for again.
  void link_up() {
    self->send(a.router, link_atom::value, true);
    if (lost_deltas) {
      lost_deltas = false;
      self->send(a.router, republish_atom::value);
    }
  }

  void on_retry() {
    if (st().connected)
      start_setup();
  }

  void on_down() {
    if (st().connected)
      spdlog::warn("federation: disconnected from NATS; learning locally until it returns");
    st().connected = false;
    self->send(a.router, link_atom::value, false);
  }

  /// JetStream did not store a batch: republish in a second.
  void on_lost(const std::string& why) {
    ++st().publish_errors;
    log.warn("lost", "a delta batch was not stored in the stream (" + why
                       + "); republishing this node's contributions shortly");
    if (!lost_deltas) {
      lost_deltas = true;
      self->delayed_send(self, std::chrono::seconds(1), relost_atom::value);
    }
  }

  /// A second after a lost batch: republish once connected with a stream.
  void on_relost() {
    if (!lost_deltas)
      return; // a reconnect already asked for them
    if (!st().connected || !st().stream_ready) {
      self->delayed_send(self, std::chrono::seconds(1), relost_atom::value);
      return;
    }
    lost_deltas = false;
    ledger.force_republish(utc_ms());
    spdlog::info("federation: republishing this node's contributions (a batch was not stored)");
    self->send(a.router, republish_atom::value);
  }

  /// The router's changed contributions: signed batches into the stream.
  void publish_deltas(std::vector<proto::pattern_delta>& deltas, int64_t changed_us) {
    if (!st().connected) {
      lost_deltas = true; // the router gave them up: ask again on reconnect
      return;
    }
    // Batches that fit the server's max_payload (1 MiB by default).
    int64_t limit = std::min<int64_t>(natsConnection_GetMaxPayload(nc),
                                      static_cast<int64_t>(a.cfg.max_message_bytes));
    limit = std::max<int64_t>(limit - 1024, 4096); // envelope, header, signature
    proto::delta_batch header{a.self.id(), a.node_name, 0, 0, a.dim, a.n_tiers, {}, changed_us};
    for (auto& b : cut_batches(deltas, header, limit, batch_seq, utc_ms())) {
      st().deltas_sent += b.deltas.size();
      ++st().batches_sent;
      publish(proto::wire_kind::delta_batch, link->own_patterns_subject, proto::encode(b));
    }
  }

  /// A message from NATS, decoded (`own`: this node's batch coming back
  /// from the stream; only its position `seq` matters).
  void on_inbound(const proto::envelope& e, uint64_t seq, bool own) {
    ledger.saw(seq);
    if (own)
      return;
    auto v = ledger.check(e, a.trusted);
    if (v.dropped)
      log.warn(log_kind(*v.dropped), v.problem);
    if (!v.accepted)
      return;
    auto& m = *v.accepted;
    if (auto* b = std::get_if<proto::delta_batch>(&m.body))
      on_batch(std::move(*b), seq);
    else if (auto* d = std::get_if<proto::digest>(&m.body))
      on_digest(m.sender, *d);
    else if (auto* r = std::get_if<proto::resync_request>(&m.body))
      on_resync(*r);
    else if (auto* t = std::get_if<proto::telemetry_report>(&m.body))
      ledger.note_peer(m.signer, *t, utc_ms());
  }

  /// A message the NATS callback dropped before decoding.
  void on_dropped(int reason, const std::string& subj, uint64_t seq) {
    ledger.saw(seq);
    auto r = reason == static_cast<int>(drop_reason::oversized) ? drop_reason::oversized
                                                                : drop_reason::malformed;
    ledger.count_drop(r);
    log.warn(log_kind(r), std::string("dropped ")
                            + (r == drop_reason::oversized ? "an oversized" : "a malformed")
                            + " message on " + subj);
  }

  /// Hands a checked delta batch to the router. `seq`: this message's
  /// stream sequence (the consumer delivers in order).
  void on_batch(proto::delta_batch b, uint64_t seq) {
    ledger.count_batch_received();
    auto n = b.deltas.size();
    auto changed_us = b.changed_us;
    self->request(a.router, router_timeout, merge_atom::value, std::move(b), seq)
      .then(
        [this, changed_us](const merge_stats& m) { ledger.count_merge(m, changed_us, utc_us()); },
        [this, n](caf::error& err) { on_merge_failed(n, err); });
  }

  void on_merge_failed(size_t n_deltas, const caf::error& err) {
    if (err == caf::sec::request_timeout) {
      // Still in the router's mailbox: it merges it, unreported here.
      log.warn("slow", "the router took over a minute to merge a batch of "
                         + std::to_string(n_deltas) + " deltas");
      return;
    }
    ledger.count_drop(drop_reason::invalid);
    log.warn("invalid", "dropped a delta batch of " + std::to_string(n_deltas)
                          + " deltas: " + view(err).message);
  }

  void on_digest(uint64_t sender, const proto::digest& d) {
    if (auto why = ledger.on_digest(sender, d, utc_ms()))
      republish(*why);
  }

  void on_resync(const proto::resync_request& r) {
    if (resync_applies(r, a.self.id(), utc_ms()))
      republish("resync requested by " + r.node_name);
  }

  /// Asks the router to republish this node's contributions, at most once a second.
  void republish(const std::string& why) {
    if (!ledger.admit_republish(utc_ms()))
      return;
    spdlog::info("federation: republishing this node's contributions ({})", why);
    self->send(a.router, republish_atom::value);
  }

  /// Digest timer: asks the router what it holds, and publishes it.
  void on_digest_tick() {
    self->delayed_send(self, std::chrono::milliseconds(a.cfg.digest_interval_ms),
                       digest_tick_atom::value);
    self->request(a.router, router_timeout, digest_atom::value)
      .then([this](const router_digest& rd) { publish_digest(rd); },
            [this](caf::error& err) { // no digest this round
              log.warn("slow", "the router gave no digest: " + view(err).message);
            });
  }

  void publish_digest(const router_digest& rd) {
    ledger.set_own(rd);
    if (!st().connected)
      return;
    proto::digest d{a.self.id(), a.node_name, utc_ms(), rd.n_patterns, rd.origins};
    publish(proto::wire_kind::digest, subject("digest"), proto::encode(d));
  }

  /// Telemetry timer: a set-up watchdog, then the node's counters.
  void on_telemetry_tick() {
    self->delayed_send(self, std::chrono::milliseconds(a.cfg.telemetry_interval_ms),
                       telemetry_tick_atom::value);
    // Watchdog: connected but without a stream and no set-up running (its
    // retry chain broken somehow): start one.
    if (st().connected && !st().stream_ready && !setup_thread.joinable())
      start_setup();
    if (!st().connected) {
      warn_offline();
      return;
    }
    // The router's counters (cheap), not a digest (a walk over every pattern).
    self->request(a.router, router_timeout, stats_atom::value)
      .then(
        [this](const proto::router_stats& rs) {
          auto t = ledger.telemetry(rs, a.node_name, utc_ms());
          publish(proto::wire_kind::telemetry, subject("telemetry." + a.node_name),
                  proto::encode(t));
        },
        [this](caf::error& err) { // no telemetry this round
          log.warn("slow", "the router gave no statistics: " + view(err).message);
        });
  }

  void warn_offline() {
    if (nc == nullptr)
      return;
    const char* why = nullptr;
    natsConnection_GetLastError(nc, &why);
    log.warn("offline", "not connected to " + a.cfg.urls + " ("
                          + (why != nullptr && *why != 0 ? why : "no server answered")
                          + "); serving and learning locally");
  }

  ~bridge_state() { close(); } // also when the actor ends without an exit message

  void close() {
    if (link != nullptr)
      link->reset(); // callbacks still in flight send nothing from here on
    if (setup_thread.joinable()) {
      if (nc != nullptr)
        natsConnection_Close(nc); // unblocks the set-up's requests
      finish_setup();
    }
    if (stream_sub != nullptr) {
      natsSubscription_Unsubscribe(stream_sub); // an ordered consumer is ephemeral
      natsSubscription_Destroy(stream_sub);
      stream_sub = nullptr;
    }
    for (auto* s : core_subs) {
      natsSubscription_Unsubscribe(s);
      natsSubscription_Destroy(s);
    }
    core_subs.clear();
    if (js != nullptr) {
      jsPubOptions po;
      jsPubOptions_Init(&po);
      po.MaxWait = 2000; // the last batches of a graceful stop
      js_PublishAsyncComplete(js, &po);
      jsCtx_Destroy(js);
      js = nullptr;
    }
    if (nc != nullptr) {
      natsConnection_FlushTimeout(nc, 1000);
      natsConnection_Close(nc);
      natsConnection_Destroy(nc);
      nc = nullptr;
    }
  }
};

/// Starts the connection; errors in the options are returned as text.
std::string connect(bridge_state& s) {
  natsOptions* o = nullptr;
  if (natsOptions_Create(&o) != NATS_OK)
    return "cannot allocate NATS options";
  std::unique_ptr<natsOptions, void (*)(natsOptions*)> guard(o, natsOptions_Destroy);
  auto urls = split_urls(s.a.cfg.urls);
  std::vector<const char*> ptrs;
  for (auto& u : urls)
    ptrs.push_back(u.c_str());
  natsStatus st = natsOptions_SetServers(o, ptrs.data(), static_cast<int>(ptrs.size()));
  auto check = [&](natsStatus x, const char* what) -> std::string {
    return x == NATS_OK ? std::string{} : std::string(what) + ": " + natsStatus_GetText(x);
  };
  if (auto e = check(st, "federation.urls"); !e.empty())
    return e;
  natsOptions_SetName(o, ("shoal " + s.a.node_name).c_str());
  const auto& c = s.a.cfg;
  if (!c.user.empty())
    natsOptions_SetUserInfo(o, c.user.c_str(), c.password.c_str());
  if (!c.token.empty())
    natsOptions_SetToken(o, c.token.c_str());
  if (c.tls) {
    if (auto e = check(natsOptions_SetSecure(o, true), "federation.tls"); !e.empty())
      return e;
    if (!c.tls_ca.empty())
      if (auto e =
            check(natsOptions_LoadCATrustedCertificates(o, c.tls_ca.c_str()), "federation.tls_ca");
          !e.empty())
        return e;
    if (!c.tls_cert.empty())
      if (auto e =
            check(natsOptions_LoadCertificatesChain(o, c.tls_cert.c_str(), c.tls_key.c_str()),
                  "federation.tls_cert");
          !e.empty())
        return e;
  }
  natsOptions_SetIgnoreDiscoveredServers(o, c.ignore_discovered_servers);
  natsOptions_SetNoRandomize(o, true); // federation.urls in order: the first is preferred
  natsOptions_SetAllowReconnect(o, true);
  natsOptions_SetMaxReconnect(o, -1);
  natsOptions_SetCustomReconnectDelay(o, reconnect_delay, s.link);
  natsOptions_SetReconnectBufSize(o, 8 * 1024 * 1024);
  natsOptions_SetReconnectedCB(o, on_connected, s.link);
  natsOptions_SetDisconnectedCB(o, on_disconnected, s.link);
  natsOptions_SetErrorHandler(o, on_error, s.link);
  natsOptions_SetTimeout(o, 2000);
  // A first attempt in this thread says why it failed (the server's
  // "Authorization Violation", "No server available", ...) in this thread's
  // error (nats_GetLastError). The retrying connection's own error is shared
  // with its reconnect thread, which overwrites it, so it is read from here.
  natsOptions_SetRetryOnFailedConnect(o, false, nullptr, nullptr);
  st = natsConnection_Connect(&s.nc, o);
  if (st == NATS_OK) {
    s.link->send(up_atom::value);
    return {};
  }
  std::string why;
  if (const char* e = nats_GetLastError(nullptr); e != nullptr) {
    why = e;
    if (auto p = why.find("): "); !why.empty() && why.front() == '(' && p != std::string::npos)
      why.erase(0, p + 3); // NATS.c's "(conn.c:1905): " source prefix
  }
  s.nc = nullptr;
  natsOptions_SetRetryOnFailedConnect(o, true, on_connected, s.link);
  st = natsConnection_Connect(&s.nc, o);
  if (st == NATS_OK) {
    s.link->send(up_atom::value);
    return {};
  }
  if (st == NATS_NOT_YET_CONNECTED) {
    // Retried in the background; on_connected reports success.
    spdlog::warn("federation: not connected to {} yet ({}); retrying in the background", c.urls,
                 why.empty() ? "no server answered" : why);
    return {};
  }
  s.nc = nullptr;
  return std::string("connecting to ") + c.urls + ": " + natsStatus_GetText(st);
}

bridge_full::behavior_type bridge_behavior(bridge_self self, bridge_args args) {
  self->state.start(std::move(args));
  self->set_exit_handler([self](caf::exit_msg& msg) {
    self->state.close();
    self->quit(msg.reason);
  });
  return {
    [self](up_atom) { self->state.on_up(); },
    [self](setup_atom) { self->state.on_setup_done(); },
    [self](lost_atom, const std::string& why) { self->state.on_lost(why); },
    [self](relost_atom) { self->state.on_relost(); },
    [self](retry_atom) { self->state.on_retry(); },
    [self](down_atom) { self->state.on_down(); },
    [self](publish_atom, std::vector<proto::pattern_delta>& deltas, int64_t changed_us) {
      self->state.publish_deltas(deltas, changed_us);
    },
    [self](inbound_atom, proto::envelope& e, uint64_t seq, bool own) {
      self->state.on_inbound(e, seq, own);
    },
    [self](dropped_atom, int reason, const std::string& subject, uint64_t seq) {
      self->state.on_dropped(reason, subject, seq);
    },
    [self](digest_tick_atom) { self->state.on_digest_tick(); },
    [self](telemetry_tick_atom) { self->state.on_telemetry_tick(); },
    [self](stats_atom) { return self->state.ledger.snapshot(); },
  };
}

} // namespace

core::error validate(const federation_config& c, const std::string& node_name) {
  auto bad = [](std::string key, std::string message) {
    return core::error{errc::invalid_argument, std::move(message), std::move(key)};
  };
  if (!c.enabled)
    return {};
  auto subject_safe = [](const std::string& x) {
    return !x.empty() && std::all_of(x.begin(), x.end(), [](char ch) {
      return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_';
    });
  };
  if (!subject_safe(node_name))
    return bad(
      "node.name",
      "'" + node_name
        + "' must be letters, digits, '-' or '_' with federation on (it is a NATS subject token)");
  if (split_urls(c.urls).empty())
    return bad("federation.urls", "no NATS server URL given");
  if (!subject_safe(c.cluster))
    return bad("federation.cluster",
               "'" + c.cluster
                 + "' must be letters, digits, '-' or '_' (it is part of NATS subjects)");
  if (c.user.empty() != c.password.empty())
    return bad("federation.user", "user and password go together");
  for (auto [key, path] :
       {std::pair{"federation.tls_ca", &c.tls_ca}, std::pair{"federation.tls_cert", &c.tls_cert},
        std::pair{"federation.tls_key", &c.tls_key}})
    if (!path->empty() && !std::filesystem::exists(*path))
      return bad(key, "no such file '" + *path + "'");
  if (c.tls_cert.empty() != c.tls_key.empty())
    return bad("federation.tls_cert", "certificate and key go together");
  if (c.reconnect_max_ms < c.reconnect_wait_ms)
    return bad("federation.reconnect_max_ms", "must be at least federation.reconnect_wait_ms");
  if (auto t = crypto::trust_list::parse(c.trusted); !t)
    return bad("federation.trusted", t.err().message);
  return {};
}

bridge_handle spawn_bridge(caf::actor_system& sys, bridge_args args) {
  return sys.spawn<caf::detached>(bridge_behavior, std::move(args));
}

} // namespace shoal::federation
