#include "node/config.hpp"

#include "engine/chat_template.hpp"

#include <toml++/toml.h>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

namespace shoal::node {

namespace {

// Environment variables with the SHOAL_ prefix that are not config keys
// (process-level overrides read elsewhere, and the project scripts' own:
// the model cache of node/models.hpp, the peer and npm directories of
// ops/install-peer.sh and ops/install-npm.sh, the build directory of the
// bench scripts). Anything else is an unknown key.
const std::set<std::string> non_config_env = {"SHOAL_KERNELS", "SHOAL_MODEL_CACHE",
                                              "SHOAL_PEER_DIR", "SHOAL_NPM_DIR", "SHOAL_BUILD_DIR"};

// The registry's entries: make_<type>(key, field accessor, [min, max,] doc).
// The accessor, a lambda `(Config&) -> field&` (SHOAL_FIELD, SHOAL_TIER_FIELD),
// fixes Config: node_config for dotted keys, router::tier_config for tier keys.

template <class F>
struct accessor_config : accessor_config<decltype(&F::operator())> {};
template <class L, class R, class C>
struct accessor_config<R (L::*)(C&) const> {
  using type = C;
};

template <class Member, class Config = typename accessor_config<Member>::type>
basic_setting<Config> make_uint(std::string key, Member member, double min, double max,
                                std::string doc) {
  basic_setting<Config> s;
  s.key = std::move(key);
  s.type = 'i';
  s.min = min;
  s.max = max;
  s.doc = std::move(doc);
  s.set = [member](Config& c, const setting_value& v) {
    auto& field = member(c);
    field = static_cast<std::remove_reference_t<decltype(field)>>(std::get<int64_t>(v));
  };
  s.get = [member](const Config& c) -> setting_value {
    return static_cast<int64_t>(member(const_cast<Config&>(c)));
  };
  return s;
}

template <class Member, class Config = typename accessor_config<Member>::type>
basic_setting<Config> make_double(std::string key, Member member, double min, double max,
                                  std::string doc) {
  basic_setting<Config> s;
  s.key = std::move(key);
  s.type = 'd';
  s.min = min;
  s.max = max;
  s.doc = std::move(doc);
  s.set = [member](Config& c, const setting_value& v) {
    auto& field = member(c);
    field = static_cast<std::remove_reference_t<decltype(field)>>(std::get<double>(v));
  };
  s.get = [member](const Config& c) -> setting_value {
    return static_cast<double>(member(const_cast<Config&>(c)));
  };
  return s;
}

template <class Member, class Config = typename accessor_config<Member>::type>
basic_setting<Config> make_bool(std::string key, Member member, std::string doc) {
  basic_setting<Config> s;
  s.key = std::move(key);
  s.type = 'b';
  s.doc = std::move(doc);
  s.set = [member](Config& c, const setting_value& v) { member(c) = std::get<bool>(v); };
  s.get = [member](const Config& c) -> setting_value {
    return static_cast<bool>(member(const_cast<Config&>(c)));
  };
  return s;
}

template <class Member, class Config = typename accessor_config<Member>::type>
basic_setting<Config> make_string(std::string key, Member member, std::string doc) {
  basic_setting<Config> s;
  s.key = std::move(key);
  s.type = 's';
  s.doc = std::move(doc);
  s.set = [member](Config& c, const setting_value& v) { member(c) = std::get<std::string>(v); };
  s.get = [member](const Config& c) -> setting_value {
    return std::string(member(const_cast<Config&>(c)));
  };
  return s;
}

#define SHOAL_FIELD(path)                                                                          \
  [](node_config & c) -> auto& {                                                                   \
    return c.path;                                                                                 \
  }

std::vector<setting> build_settings() {
  std::vector<setting> s;
  s.push_back(
    make_string("node.name", SHOAL_FIELD(name), "Name of this node, used in metrics and logs."));
  s.push_back(make_string("node.log_level", SHOAL_FIELD(log_level),
                          "Log level: trace, debug, info, warn, error or off."));
  s.push_back(make_uint("node.scheduler_threads", SHOAL_FIELD(scheduler_threads), 0, 256,
                        "CAF scheduler worker threads; 0 uses CAF's default max(cores, 4)."));
  s.push_back(
    make_string("http.address", SHOAL_FIELD(http.address), "Address the HTTP API listens on."));
  s.push_back(make_uint("http.port", SHOAL_FIELD(http.port), 0, 65535,
                        "TCP port of the HTTP API; 0 picks a free port (see http.port_file)."));
  s.push_back(make_string("http.port_file", SHOAL_FIELD(http.port_file),
                          "If set, the bound address:port is written to this file once the "
                          "node listens."));
  s.push_back(make_uint("http.max_body_bytes", SHOAL_FIELD(http.max_body_bytes), 1024, 1073741824,
                        "Largest request body accepted, bytes; larger bodies get "
                        "413 payload_too_large."));
  s.push_back(make_uint("http.threads", SHOAL_FIELD(http.threads), 1, 256, "HTTP worker threads."));
  s.push_back(make_uint("http.request_timeout_ms", SHOAL_FIELD(http.request_timeout_ms), 1, 600000,
                        "Longest an HTTP request waits for one answer from an actor or an "
                        "engine, ms: a routing decision, feedback, statistics, a KV policy, "
                        "a learning run started by POST /v1/learn/trigger, an engine's "
                        "admission of a generation. Then 503 unavailable (a triggered learning "
                        "run goes on: GET /v1/learn/status shows it). A generation under way "
                        "is bounded by http.generation_timeout_ms instead."));
  s.push_back(make_uint("http.generation_timeout_ms", SHOAL_FIELD(http.generation_timeout_ms), 1,
                        86400000,
                        "Longest an engine may go without a result for a request it admitted, "
                        "ms: the next token of a generation (time queued for a batch slot or "
                        "for KV memory included) or an embedding. Then the generation is "
                        "cancelled and answered 503 unavailable (a streamed one ends with an "
                        "error event). A generation that keeps producing tokens is not cut: "
                        "its length is bounded by max_tokens and the tier's n_ctx."));
  s.push_back(setting{
    "store.data_dir", 's', 0, 0,
    "Directory of the LMDB environment (shoal.lmdb/) and the pattern index "
    "file (patterns.hnsw), created if missing; relative paths are relative "
    "to the working directory.",
    [](node_config& c, const setting_value& v) { c.store.data_dir = std::get<std::string>(v); },
    [](const node_config& c) -> setting_value { return c.store.data_dir.string(); }});
  s.push_back(make_uint("store.map_bytes", SHOAL_FIELD(store.map_bytes), 1 << 20, 1ull << 40,
                        "Initial LMDB map size, bytes; doubled when full."));
  s.push_back(make_uint("store.max_map_bytes", SHOAL_FIELD(store.max_map_bytes), 1 << 20,
                        1ull << 44, "Largest LMDB map size, bytes; writes fail beyond it."));
  s.push_back(make_uint("embedder.dim", SHOAL_FIELD(embedder.dim), 16, 4096,
                        "Dimension of the hashing embedder's vectors. Changing it makes "
                        "stored patterns unusable (the node refuses to start)."));
  s.push_back(make_uint("embedder.char_ngram_min", SHOAL_FIELD(embedder.char_ngram_min), 1, 8,
                        "Shortest character n-gram feature."));
  s.push_back(make_uint("embedder.char_ngram_max", SHOAL_FIELD(embedder.char_ngram_max), 1, 8,
                        "Longest character n-gram feature (>= char_ngram_min)."));
  s.push_back(make_double("embedder.word_weight", SHOAL_FIELD(embedder.word_weight), 0, 10,
                          "Weight of word unigram features."));
  s.push_back(make_double("embedder.bigram_weight", SHOAL_FIELD(embedder.bigram_weight), 0, 10,
                          "Weight of word bigram features."));
  s.push_back(make_double("embedder.char_weight", SHOAL_FIELD(embedder.char_weight), 0, 10,
                          "Weight of character n-gram features."));
  s.push_back(make_uint("router.k", SHOAL_FIELD(router.k), 1, 256,
                        "Nearest patterns pooled per routing decision (16, 32 and 64 reach "
                        "the same reward on the Debian replay; smaller is faster)."));
  s.push_back(make_double("router.new_pattern_threshold", SHOAL_FIELD(router.new_pattern_threshold),
                          0, 1,
                          "Cosine similarity at or above which a request joins its nearest "
                          "pattern instead of creating a new one (similarities come from the "
                          "int8 index: within about 0.01 of the exact cosine)."));
  s.push_back(make_double("router.similarity_power", SHOAL_FIELD(router.similarity_power), 0, 64,
                          "Exponent p of neighbour i's weight (max(sim_i, 0) / sim_1)^p when "
                          "its statistics are pooled, sim_1 being the nearest neighbour's "
                          "similarity (at least 1e-6): an adaptive bandwidth, so sparse "
                          "regions still pool their neighbours; 0 weighs all router.k "
                          "neighbours equally."));
  s.push_back(make_double("router.prior", SHOAL_FIELD(router.prior), 1e-3, 100,
                          "Pseudo-observations of a uniform quality (mean 1/2, variance 1/12) "
                          "in every tier's prior. Positive: a tier nobody has tried rests on "
                          "it alone."));
  s.push_back(make_double("router.global_prior", SHOAL_FIELD(router.global_prior), 0, 1000,
                          "Strength (pseudo-observations, at most as many as the tier really "
                          "has) of the empirical-Bayes prior that centres each tier's "
                          "posterior on its mean quality over the whole bank, so an unfamiliar "
                          "request starts from what works on average; 0 disables it."));
  s.push_back(make_double("router.exploration", SHOAL_FIELD(router.exploration), 0, 10,
                          "Scale of the posterior standard deviation in Thompson draws: 1 is "
                          "Thompson sampling, 0 is greedy on the posterior mean."));
  s.push_back(make_uint("router.max_patterns", SHOAL_FIELD(router.max_patterns), 1, 1e9,
                        "Most patterns kept; beyond it requests join their nearest pattern."));
  s.push_back(make_uint("router.seed", SHOAL_FIELD(router.seed), 0, 9.0e15,
                        "Seed of the exploration RNG; 0 draws a random seed at start."));
  s.push_back(make_uint("router.flush_interval_ms", SHOAL_FIELD(router.flush_interval_ms), 10,
                        600000, "How often changed patterns are written to LMDB, ms."));
  s.push_back(make_uint("router.checkpoint_interval_s", SHOAL_FIELD(router.checkpoint_interval_s),
                        1, 86400, "How often the HNSW index file is saved, s (also at shutdown)."));
  s.push_back(make_uint("index.m", SHOAL_FIELD(router.index.m), 4, 64, "HNSW graph degree M."));
  s.push_back(make_uint("index.ef_construction", SHOAL_FIELD(router.index.ef_construction), 8, 1000,
                        "HNSW candidate list size while inserting."));
  s.push_back(make_uint("index.ef_search", SHOAL_FIELD(router.index.ef_search), 8, 1000,
                        "HNSW candidate list size while searching: recall against latency "
                        "(raised to router.k)."));
  s.push_back(make_uint("index.initial_capacity", SHOAL_FIELD(router.index.initial_capacity), 16,
                        1e9, "Initial capacity of the HNSW index; it doubles when full."));
  s.push_back(make_uint("witness.batch_max", SHOAL_FIELD(witness.batch_max), 1, 100000,
                        "Most witness records per LMDB write transaction."));
  s.push_back(make_uint("witness.archive_after_s", SHOAL_FIELD(witness.archive_after_s), 0,
                        315360000,
                        "Witness records older than this (s) move to zstd archive segments in "
                        "<data_dir>/witness-archive when the deep loop runs; look-ups still "
                        "find them. 0: never."));
  s.push_back(make_uint("witness.archive_segment_records",
                        SHOAL_FIELD(witness.archive_segment_records), 100, 1000000,
                        "Most witness records per archive segment."));
  s.push_back(make_uint("witness.flush_interval_ms", SHOAL_FIELD(witness.flush_interval_ms), 1,
                        60000, "Longest a witness record waits for its transaction, ms."));
  s.push_back(make_uint("sona.trajectory_capacity", SHOAL_FIELD(sona.trajectory_capacity), 16,
                        16777216,
                        "Trajectories kept in memory to join feedback; older "
                        "ones are joined through the witness log."));
  s.push_back(make_bool("sona.v2", SHOAL_FIELD(sona.v2),
                        "Router v2 routes (a FastGRNN reward model correcting router v1, "
                        "trained by the instant and background loops); off: router v1 alone."));
  s.push_back(make_double("sona.v2_threshold", SHOAL_FIELD(sona.v2_threshold), 0, 1,
                          "Router v2's confidence below which router v1's choice stands."));
  s.push_back(make_uint("sona.v2_pending", SHOAL_FIELD(sona.v2_pending), 16, 1048576,
                        "Router v2 decisions kept with their features until feedback "
                        "(about 1.7 KB each; 1024 covers 10 s of feedback delay at 100 "
                        "requests/s)."));
  s.push_back(make_uint("sona.v2_sessions", SHOAL_FIELD(sona.v2_sessions), 0, 16777216,
                        "Sessions whose recurrent state router v2 keeps across turns (least "
                        "recently used forgotten; 0: every turn starts afresh)."));
  s.push_back(make_double("sona.latency_budget_max_ms", SHOAL_FIELD(sona.latency_budget_max_ms), 1,
                          86400000,
                          "A request's latency_budget_ms reaches router v2 as min(1, budget / "
                          "this); a request without one as 1."));
  s.push_back(make_bool("sona.sampling", SHOAL_FIELD(sona.sampling),
                        "Router v2 chooses temperature and top_p for requests that leave "
                        "them unset, and learns which pay."));
  s.push_back(make_double("sona.sampling_explore", SHOAL_FIELD(sona.sampling_explore), 0, 1,
                          "Per parameter, how often router v2 serves a random grid value "
                          "instead of the best one."));
  s.push_back(make_double("sona.instant_lr", SHOAL_FIELD(sona.instant_lr), 0, 1,
                          "Instant loop: MicroLoRA learning rate per feedback."));
  s.push_back(make_uint("sona.background_interval_s", SHOAL_FIELD(sona.background_interval_s), 1,
                        2592000, "Background loop: seconds between runs."));
  s.push_back(make_uint("sona.background_trajectories", SHOAL_FIELD(sona.background_trajectories),
                        1, 10000000,
                        "Background loop: also run after this many trajectories got feedback."));
  s.push_back(make_uint("sona.train_window", SHOAL_FIELD(sona.train_window), 16, 1000000,
                        "Background loop: recent trajectories with feedback a run trains on."));
  s.push_back(make_double("sona.train_lr", SHOAL_FIELD(sona.train_lr), 0, 1,
                          "Background loop: learning rate of its Adam steps (eps 1e-2, so "
                          "gradients below 1e-2 step like SGD at lr/1e-2: a rate tuned for "
                          "SGD is about 100 times too large)."));
  s.push_back(make_uint("sona.train_epochs", SHOAL_FIELD(sona.train_epochs), 1, 100,
                        "Background loop: epochs per run."));
  s.push_back(make_bool("sona.ewc", SHOAL_FIELD(sona.ewc),
                        "Background loop: online EWC++ keeps what earlier tasks taught."));
  s.push_back(
    make_double("sona.ewc_lambda", SHOAL_FIELD(sona.ewc_lambda), 0, 1e6, "EWC++ strength lambda."));
  s.push_back(make_uint("sona.deep_interval_s", SHOAL_FIELD(sona.deep_interval_s), 60, 31536000,
                        "Deep loop (pattern-bank consolidation): seconds between runs."));
  s.push_back(make_bool("federation.enabled", SHOAL_FIELD(federation.enabled),
                        "Join a federation over NATS: share learned pattern statistics with "
                        "the peers in federation.trusted. Off: the node learns alone."));
  s.push_back(make_string("federation.cluster", SHOAL_FIELD(federation.cluster),
                          "Cluster name: subjects shoal.<cluster>.* and the JetStream stream "
                          "SHOAL_<CLUSTER>. Letters, digits, '-' and '_'."));
  s.push_back(
    make_string("federation.urls", SHOAL_FIELD(federation.urls),
                "NATS server URLs, comma-separated (nats:// or tls://), tried in order."));
  s.push_back(make_bool("federation.ignore_discovered_servers",
                        SHOAL_FIELD(federation.ignore_discovered_servers),
                        "Connect only to federation.urls, never to servers the NATS cluster "
                        "advertises (pins an edge node to its site's server)."));
  s.push_back(make_string("federation.jetstream_domain", SHOAL_FIELD(federation.jetstream_domain),
                          "JetStream domain that holds the stream (a hub reached through a "
                          "leaf-node server); empty uses the connected server's JetStream."));
  s.push_back(make_string("federation.user", SHOAL_FIELD(federation.user),
                          "NATS user name (with federation.password: both or neither)."));
  s.push_back(make_string("federation.password", SHOAL_FIELD(federation.password),
                          "NATS password (with federation.user)."));
  s.push_back(make_string("federation.token", SHOAL_FIELD(federation.token),
                          "NATS authentication token (instead of user and password)."));
  s.push_back(
    make_bool("federation.tls", SHOAL_FIELD(federation.tls), "Require TLS to the NATS servers."));
  s.push_back(make_string("federation.tls_ca", SHOAL_FIELD(federation.tls_ca),
                          "PEM file of the CAs that sign the NATS servers' certificates."));
  s.push_back(make_string("federation.tls_cert", SHOAL_FIELD(federation.tls_cert),
                          "PEM client certificate for NATS (with federation.tls_key)."));
  s.push_back(make_string("federation.tls_key", SHOAL_FIELD(federation.tls_key),
                          "PEM private key of federation.tls_cert."));
  s.push_back(make_string("federation.key_file", SHOAL_FIELD(federation.key_file),
                          "This node's Ed25519 key file (64 hex digits of seed); empty means "
                          "<store.data_dir>/node.key. Created, mode 0600, when missing; "
                          "`shoal key` prints its public key."));
  s.push_back(make_string("federation.trusted", SHOAL_FIELD(federation.trusted),
                          "Peers whose messages are accepted: name=hexkey pairs, "
                          "comma-separated (each key from that peer's `shoal key`); empty "
                          "trusts nobody."));
  s.push_back(make_uint("federation.batch_max", SHOAL_FIELD(federation.batch_max), 1, 100000,
                        "Most pattern deltas per published batch."));
  s.push_back(make_uint("federation.batch_delay_ms", SHOAL_FIELD(federation.batch_delay_ms), 0,
                        10000, "How long changes gather before they are published, ms."));
  s.push_back(make_uint("federation.reconnect_wait_ms", SHOAL_FIELD(federation.reconnect_wait_ms),
                        1, 600000,
                        "First delay before reconnecting to NATS, ms; doubled per failed "
                        "attempt up to federation.reconnect_max_ms, with 25% jitter."));
  s.push_back(make_uint("federation.reconnect_max_ms", SHOAL_FIELD(federation.reconnect_max_ms), 1,
                        3600000, "Longest delay between reconnect attempts, ms."));
  s.push_back(make_uint("federation.stream_max_bytes", SHOAL_FIELD(federation.stream_max_bytes),
                        1 << 20, 1ull << 50,
                        "Size limit of the JetStream stream of pattern deltas, bytes; the "
                        "oldest messages go first (missed ones are repaired by resync)."));
  s.push_back(make_uint("federation.stream_max_age_s", SHOAL_FIELD(federation.stream_max_age_s), 0,
                        1ull << 31, "Age limit of the stream's messages, s; 0 = none."));
  s.push_back(make_uint("federation.stream_replicas", SHOAL_FIELD(federation.stream_replicas), 1, 5,
                        "Replicas of the stream in a NATS cluster (used when the node "
                        "creates it)."));
  s.push_back(make_uint("federation.digest_interval_ms", SHOAL_FIELD(federation.digest_interval_ms),
                        100, 86400000, "Period of anti-entropy digests, ms."));
  s.push_back(make_uint("federation.telemetry_interval_ms",
                        SHOAL_FIELD(federation.telemetry_interval_ms), 100, 86400000,
                        "Period of telemetry messages to peers, ms."));
  s.push_back(make_uint("federation.max_message_bytes", SHOAL_FIELD(federation.max_message_bytes),
                        1024, 1ull << 30,
                        "Largest federation message accepted, bytes; larger ones are dropped "
                        "and counted."));
  s.push_back(make_string("kernels.isa", SHOAL_FIELD(kernels.isa),
                          "Highest instruction set the kernels use: empty for all the CPU "
                          "has, or scalar, avx2, avx512 (the environment variable "
                          "SHOAL_KERNELS_ISA caps it too; the lower wins). `shoal kernels` "
                          "shows what each kernel uses and why."));
  s.push_back(make_bool("kernels.autotune", SHOAL_FIELD(kernels.autotune),
                        "Measure every kernel's variants at start (about 5 ms each) and use "
                        "the fastest instead of the widest."));
  s.push_back(make_string("kernels.packs", SHOAL_FIELD(kernels.packs),
                          "Kernel packs to load, comma-separated paths of shared libraries; "
                          "each needs a PATH.sig made by `shoal kernels sign` with a key in "
                          "kernels.pack_keys, else it is refused (logged) and the node runs "
                          "on its built-in kernels."));
  s.push_back(make_string("kernels.pack_keys", SHOAL_FIELD(kernels.pack_keys),
                          "Keys trusted to sign kernel packs: name=hexkey,... (the line "
                          "`shoal kernels sign` prints)."));
  s.push_back(make_uint("kv.page_tokens", SHOAL_FIELD(kv.page_tokens), 1, 1024,
                        "Tokens per KV cache page (vLLM's block size; 16 wastes at most 15 "
                        "tokens of a sequence)."));
  s.push_back(make_uint("kv.recent_tokens", SHOAL_FIELD(kv.recent_tokens), 0, 1048576,
                        "Newest tokens of each sequence kept in F16; whole pages older than "
                        "this move to kv.old_k_type / kv.old_v_type (KIVI's full-precision "
                        "window)."));
  s.push_back(make_uint("kv.migrate_pages", SHOAL_FIELD(kv.migrate_pages), 1, 1024,
                        "Pages moved to the old tier together, once that many are eligible."));
  s.push_back(make_string("kv.old_k_type", SHOAL_FIELD(kv.old_k_type),
                          "Key type of the old tier: f16, q8_0 or q4_0 (per token, blocks of "
                          "32 channels, llama.cpp's layout)."));
  s.push_back(make_string("kv.old_v_type", SHOAL_FIELD(kv.old_v_type),
                          "Value type of the old tier: f16, q8_0 or q4_0."));
  s.push_back(make_bool("kv.prefix_caching", SHOAL_FIELD(kv.prefix_caching),
                        "Share the KV pages of identical prompt prefixes between requests "
                        "(vLLM's automatic prefix caching); a follow-up turn of a chat does "
                        "not prefill the earlier turns again."));
  s.push_back(make_uint("memory.budget_mb", SHOAL_FIELD(memory_budget_mb), 1, 1048576,
                        "One byte budget, MiB, for the KV pages of every tier (and later LoRA "
                        "adapters and router weights); never exceeded: unused cached pages are "
                        "evicted first, then requests wait or fail with a clear error."));
  s.push_back(make_string("memory.seal_key", SHOAL_FIELD(memory_seal_key),
                          "64 hex digits (`openssl rand -hex 32`): the key sealing session data "
                          "and spilled KV pages at rest (XChaCha20-Poly1305). Set it here or in "
                          "SHOAL_MEMORY_SEAL_KEY. Empty: KV pages the budget evicts are dropped "
                          "instead of spilled to LMDB. A store sealed with another key, or "
                          "holding sealed data while no key is set, is refused at start."));
  s.push_back(make_uint("memory.session_idle_s", SHOAL_FIELD(memory_session_idle_s), 1, 31536000,
                        "Sessions (requests naming a session_id) idle this many seconds are "
                        "removed from the session index."));
  s.push_back(make_uint("memory.spill_max_mb", SHOAL_FIELD(memory_spill_max_mb), 1, 1048576,
                        "Most MiB of spilled KV pages kept per tier in LMDB; the oldest go "
                        "first."));
  return s;
}

#undef SHOAL_FIELD

#define SHOAL_TIER_FIELD(name)                                                                     \
  [](router::tier_config & t) -> auto& {                                                           \
    return t.name;                                                                                 \
  }

/// The keys of one [[tiers]] table, in the order configs/node.toml lists them.
std::vector<tier_setting> build_tier_settings() {
  std::vector<tier_setting> s;
  s.push_back(make_string("name", SHOAL_TIER_FIELD(name),
                          "Name of the tier (required, unique): the model name of the OpenAI "
                          "API and the tier's label in /v1/stats and /metrics."));
  s.push_back(make_double("cost", SHOAL_TIER_FIELD(cost), 0, 1,
                          "Cost of the tier in quality units: the router maximises quality "
                          "minus cost."));
  s.push_back(make_double("params_m", SHOAL_TIER_FIELD(params_m), 0, 1e9,
                          "Model size, millions of parameters: reported in /v1/stats, where "
                          "the replay tool's evaluator reads it to simulate the tier; routing "
                          "does not use it."));
  s.push_back(make_string("model", SHOAL_TIER_FIELD(model),
                          "The tier's model: a GGUF file (llama, qwen2), or "
                          "\"demo:<shape>:<type>\" for a RANDOM-WEIGHT demo model written once "
                          "into ~/.cache/shoal/models (shapes tiny, 15M, 110M, 260M; types f32, "
                          "f16, q8_0, q4_0, ...): its text is noise, its speed is real. \"\" "
                          "makes a routing-only tier (no generation)."));
  s.push_back(make_uint("n_ctx", SHOAL_TIER_FIELD(n_ctx), 16, 1 << 20,
                        "Context per sequence, tokens (at most the model's training "
                        "context)."));
  s.push_back(
    make_uint("threads", SHOAL_TIER_FIELD(threads), 1, 256, "Forward-pass threads of this tier."));
  s.push_back(make_uint("max_sequences", SHOAL_TIER_FIELD(max_sequences), 1, 4096,
                        "Sequences decoded together (continuous batching); more wait for a "
                        "slot."));
  s.push_back(make_string("chat_format", SHOAL_TIER_FIELD(chat_format),
                          "Chat template, used when the GGUF's own template is not one this "
                          "node recognises: chatml, llama2 or llama3."));
  return s;
}

#undef SHOAL_TIER_FIELD

std::string type_name(char t) {
  switch (t) {
    case 'b':
      return "a boolean";
    case 'i':
      return "an integer";
    case 'd':
      return "a number";
    default:
      return "a string";
  }
}

std::string render(const setting_value& v) {
  std::ostringstream out;
  out.precision(15);
  std::visit(
    [&](const auto& x) {
      using T = std::decay_t<decltype(x)>;
      if constexpr (std::is_same_v<T, std::string>)
        out << '"' << x << '"';
      else if constexpr (std::is_same_v<T, bool>)
        out << (x ? "true" : "false");
      else
        out << x;
    },
    v);
  return out.str();
}

/// Type- and range-checks `v` for `s`, converting integers to floats where a
/// float is expected. Returns an error message or "".
template <class Config>
std::string check(const basic_setting<Config>& s, setting_value& v) {
  if (s.type == 'd' && std::holds_alternative<int64_t>(v))
    v = static_cast<double>(std::get<int64_t>(v));
  bool ok = (s.type == 'b' && std::holds_alternative<bool>(v))
            || (s.type == 'i' && std::holds_alternative<int64_t>(v))
            || (s.type == 'd' && std::holds_alternative<double>(v))
            || (s.type == 's' && std::holds_alternative<std::string>(v));
  if (!ok)
    return "must be " + type_name(s.type);
  double x = 0;
  if (s.type == 'i')
    x = static_cast<double>(std::get<int64_t>(v));
  else if (s.type == 'd')
    x = std::get<double>(v);
  else
    return "";
  if (!std::isfinite(x) || x < s.min || x > s.max) {
    std::ostringstream out;
    out.precision(15);
    out << "is " << render(v) << ", out of range [" << s.min << ", " << s.max << "]";
    return out.str();
  }
  return "";
}

/// Parses the text of an override or environment variable by the key's type.
std::optional<setting_value> parse_text(const setting& s, const std::string& text) {
  try {
    size_t used = 0;
    switch (s.type) {
      case 'b':
        if (text == "true" || text == "1")
          return setting_value{true};
        if (text == "false" || text == "0")
          return setting_value{false};
        return std::nullopt;
      case 'i': {
        auto v = std::stoll(text, &used);
        if (used != text.size())
          return std::nullopt;
        return setting_value{static_cast<int64_t>(v)};
      }
      case 'd': {
        auto v = std::stod(text, &used);
        if (used != text.size())
          return std::nullopt;
        return setting_value{v};
      }
      default:
        return setting_value{text};
    }
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

template <class Config>
const basic_setting<Config>* find(const std::vector<basic_setting<Config>>& registry,
                                  const std::string& key) {
  for (const auto& s : registry)
    if (s.key == key)
      return &s;
  return nullptr;
}

std::string env_name(const std::string& key) {
  std::string out = "SHOAL_";
  for (char c : key)
    out += c == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

/// Top-level keys of the file map to "node.<key>" (name, log_level, ...).
std::string file_key(const std::string& dotted) {
  if (dotted.find('.') == std::string::npos)
    return "node." + dotted;
  return dotted;
}

/// A config error about `key` (as the file, environment or --set spells it).
core::error bad_key(std::string key, std::string message) {
  return {errc::invalid_argument, std::move(message), std::move(key)};
}

/// Sets `s` in `cfg` from the TOML value `v`, type- and range-checked;
/// errors name the key `name` as the file spells it.
template <class Config>
core::error assign(const basic_setting<Config>& s, Config& cfg, const toml::node& v,
                   const std::string& name) {
  setting_value val;
  if (v.is_boolean())
    val = *v.value<bool>();
  else if (v.is_integer())
    val = *v.value<int64_t>();
  else if (v.is_floating_point())
    val = *v.value<double>();
  else if (v.is_string())
    val = *v.value<std::string>();
  else
    return bad_key(name, "must be " + type_name(s.type));
  if (auto msg = check(s, val); !msg.empty())
    return bad_key(name, msg);
  s.set(cfg, val);
  return {};
}

/// Each [[tiers]] table through tier_settings(), then what no single key
/// can check: a name, unique; a known chat format; 1 to 64 tiers.
core::error apply_tiers(node_config& cfg, const toml::node& n) {
  auto* arr = n.as_array();
  if (arr == nullptr)
    return bad_key("tiers", "must be an array of tables ([[tiers]])");
  std::vector<router::tier_config> tiers;
  std::set<std::string> names;
  for (size_t i = 0; i < arr->size(); ++i) {
    std::string key = "tiers[" + std::to_string(i) + "]";
    auto* t = arr->get(i)->as_table();
    if (t == nullptr)
      return bad_key(key, "must be a table ([[tiers]])");
    router::tier_config tc;
    for (auto&& [k, v] : *t) {
      const tier_setting* s = find(tier_settings(), std::string(k.str()));
      if (s == nullptr)
        return bad_key(key + "." + std::string(k.str()), "unknown key");
      if (auto err = assign(*s, tc, v, key + "." + s->key))
        return err;
    }
    if (tc.name.empty())
      return bad_key(key + ".name", "is missing or empty");
    if (!names.insert(tc.name).second)
      return bad_key(key + ".name", "\"" + tc.name + "\" is used twice");
    if (!engine::parse_chat_format(tc.chat_format))
      return bad_key(key + ".chat_format", "must be chatml, llama2 or llama3");
    tiers.push_back(std::move(tc));
  }
  if (tiers.empty() || tiers.size() > 64)
    return bad_key("tiers", "must list between 1 and 64 tiers");
  cfg.router.tiers = std::move(tiers);
  return {};
}

core::error apply_table(node_config& cfg, const toml::table& tbl, const std::string& prefix) {
  for (auto&& [k, v] : tbl) {
    std::string dotted =
      prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (prefix.empty() && dotted == "tiers") {
      if (auto err = apply_tiers(cfg, v))
        return err;
      continue;
    }
    if (auto* sub = v.as_table()) {
      if (auto err = apply_table(cfg, *sub, dotted))
        return err;
      continue;
    }
    const setting* s = find(settings(), file_key(dotted));
    if (s == nullptr)
      return bad_key(dotted, "unknown key");
    if (auto err = assign(*s, cfg, v, dotted))
      return err;
  }
  return {};
}

core::error validate(const node_config& c) {
  if (c.embedder.char_ngram_max < c.embedder.char_ngram_min)
    return bad_key("embedder.char_ngram_max", "must be >= embedder.char_ngram_min");
  if (c.store.map_bytes > c.store.max_map_bytes)
    return bad_key("store.map_bytes", "must be <= store.max_map_bytes");
  static const std::set<std::string> levels{"trace", "debug", "info", "warn", "error", "off"};
  if (levels.count(c.log_level) == 0)
    return bad_key("node.log_level", "must be one of trace, debug, info, warn, error, off");
  if (c.http.address.empty())
    return bad_key("http.address", "must not be empty");
  if (c.store.data_dir.empty())
    return bad_key("store.data_dir", "must not be empty");
  if (!c.kernels.isa.empty() && !kernels::parse_isa(c.kernels.isa))
    return bad_key("kernels.isa", "must be empty or one of scalar, avx2, avx512");
  if (auto keys = crypto::trust_list::parse(c.kernels.pack_keys); !keys)
    return bad_key("kernels.pack_keys", keys.err().message);
  for (auto [key, value] : {std::pair{"kv.old_k_type", &c.kv.old_k_type},
                            std::pair{"kv.old_v_type", &c.kv.old_v_type}}) {
    auto t = kernels::parse_kv_type(*value);
    if (!t || *t == kernels::kv_type::f32)
      return bad_key(key, "must be one of f16, q8_0, q4_0");
  }
  if (auto e = federation::validate(c.federation, c.name))
    return e;
  return {};
}

} // namespace

engine::kv_tier_config kv_tier(const node_config& c) {
  engine::kv_tier_config k;
  k.page_tokens = c.kv.page_tokens;
  k.recent_tokens = c.kv.recent_tokens;
  k.migrate_pages = c.kv.migrate_pages;
  k.old_k_type = kernels::parse_kv_type(c.kv.old_k_type).value_or(kernels::kv_type::q8_0);
  k.old_v_type = kernels::parse_kv_type(c.kv.old_v_type).value_or(kernels::kv_type::q8_0);
  k.prefix_caching = c.kv.prefix_caching;
  return k;
}

const std::vector<setting>& settings() {
  static const std::vector<setting> all = build_settings();
  return all;
}

const std::vector<tier_setting>& tier_settings() {
  static const std::vector<tier_setting> all = build_tier_settings();
  return all;
}

core::result<node_config> load_config(const std::string& path,
                                      const std::vector<std::string>& overrides,
                                      char** environ_ptr) {
  node_config cfg;
  if (!path.empty()) {
    try {
      auto tbl = toml::parse_file(path);
      if (auto err = apply_table(cfg, tbl, ""))
        return err;
    } catch (const toml::parse_error& e) {
      std::ostringstream out;
      out << e.description() << " at line " << e.source().begin.line;
      return bad_key(path, out.str());
    }
  }
  for (char** e = environ_ptr; e != nullptr && *e != nullptr; ++e) {
    std::string kv(*e);
    if (kv.rfind("SHOAL_", 0) != 0)
      continue;
    auto eq = kv.find('=');
    std::string name = kv.substr(0, eq);
    std::string text = eq == std::string::npos ? "" : kv.substr(eq + 1);
    if (non_config_env.count(name) != 0)
      continue;
    const setting* s = nullptr;
    for (const auto& cand : settings())
      if (env_name(cand.key) == name)
        s = &cand;
    if (s == nullptr)
      return bad_key(name, "unknown key (environment variable)");
    auto v = parse_text(*s, text);
    if (!v)
      return bad_key(s->key, "must be " + type_name(s->type) + ", got \"" + text + "\" (from "
                               + name + ")");
    if (auto msg = check(*s, *v); !msg.empty())
      return bad_key(s->key, msg + " (from " + name + ")");
    s->set(cfg, *v);
  }
  for (const auto& o : overrides) {
    auto eq = o.find('=');
    if (eq == std::string::npos)
      return bad_key(o, "--set expects key=value");
    std::string key = file_key(o.substr(0, eq));
    std::string text = o.substr(eq + 1);
    if (key == "node.tiers")
      return bad_key("tiers", "set tiers in the config file ([[tiers]])");
    const setting* s = find(settings(), key);
    if (s == nullptr)
      return bad_key(o.substr(0, eq), "unknown key");
    auto v = parse_text(*s, text);
    if (!v)
      return bad_key(key, "must be " + type_name(s->type) + ", got \"" + text + "\"");
    if (auto msg = check(*s, *v); !msg.empty())
      return bad_key(key, msg);
    s->set(cfg, *v);
  }
  if (auto err = validate(cfg))
    return err;
  return cfg;
}

namespace {

/// One key as configs/node.toml shows it: its description (and range) as a
/// comment, then `name = value`, the line itself commented out by `prefix`.
template <class Config>
void render_key(std::ostream& out, const basic_setting<Config>& s, const std::string& name,
                const Config& defaults, const char* prefix = "") {
  out << "# " << s.doc;
  if (s.type == 'i' || s.type == 'd')
    out << " Range [" << s.min << ", " << s.max << "].";
  out << "\n" << prefix << name << " = " << render(s.get(defaults)) << "\n";
}

} // namespace

std::string render_default_toml() {
  node_config defaults;
  std::ostringstream out;
  out.precision(15);
  out << "# Shoal node configuration. Every key is listed with its default value.\n"
         "# Override any key with --set key=value or the environment variable\n"
         "# SHOAL_<KEY> (dots as underscores, upper case), e.g. SHOAL_HTTP_PORT=9000.\n"
         "# Precedence: defaults < this file < environment < --set.\n"
         "# Keys of [node] may also be written at the top level.\n"
         "# Generated by `shoal config --defaults`; a test checks it stays in sync.\n";
  std::string section;
  for (const auto& s : settings()) {
    auto dot = s.key.find('.');
    std::string sec = s.key.substr(0, dot);
    if (sec != section) {
      out << "\n[" << sec << "]\n";
      section = sec;
    }
    render_key(out, s, s.key.substr(dot + 1), defaults);
  }
  out << "\n# Model tiers the router chooses between, cheapest first: one [[tiers]]\n"
         "# table each, 1 to 64 (only in this file, not --set or SHOAL_*). The keys\n"
         "# of a table, with the value a key left out takes:\n";
  const router::tier_config tier_defaults;
  for (const auto& s : tier_settings())
    render_key(out, s, s.key, tier_defaults, "# ");
  for (const auto& t : defaults.router.tiers) {
    out << "\n[[tiers]]\n";
    for (const auto& s : tier_settings())
      out << s.key << " = " << render(s.get(t)) << "\n";
  }
  return out.str();
}

} // namespace shoal::node
