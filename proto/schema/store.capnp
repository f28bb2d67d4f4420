@0xeaecd681f91f7fe6;
# Stored records of a Shoal node: the values of its LMDB tables.
# Schema evolution: append fields only (new ordinals at the end), never
# renumber, retype or remove. Readers treat absent fields as their defaults.
# Vectors are stored as Data holding little-endian IEEE-754 f32 values, which
# reads without alignment or list-iterator pitfalls (see STACK.md).

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("shoal::proto::capnp");

# Per-tier statistics of the quality observed on one pattern.
struct TierStat {
  sumQuality   @0 :Float64;   # sum of observed quality in [0, 1]
  sumQuality2  @1 :Float64;   # sum of squared quality
  count        @2 :UInt64;    # number of observations
}

# One origin node's contribution to a pattern's statistics: the CRDT element
# of federation (per origin, the highest version wins). Since schema 2.
struct Contribution {
  node         @0 :UInt64;            # origin node id (first 8 bytes of its Ed25519 key, LE)
  version      @1 :UInt64;            # the origin's clock at its last change
  tiers        @2 :List(TierStat);    # the origin's observations, indexed like the tiers
}

# Table `patterns`, key = pattern id (u64 big-endian; local to this node).
struct Pattern {
  id           @0 :UInt64;
  centroid     @1 :Data;              # [dim] f32, L2-normalised
  tiers        @2 :List(TierStat);    # indexed like the configured tiers
  hits         @3 :UInt64;            # routed requests assigned to this pattern
  createdMs    @4 :Int64;             # UTC ms since the Unix epoch
  updatedMs    @5 :Int64;
  version      @6 :UInt64;            # this node's clock at its last change of `tiers`
  # Since schema 2 (federation). A v1 record reads as originNode 0 = this node.
  originNode   @7 :UInt64;            # node that created the pattern; 0 = this node
  originId     @8 :UInt64;            # the pattern's id on that node
  peers        @9 :List(Contribution); # other nodes' contributions (`tiers` is this node's)
}

struct Neighbor {
  patternId    @0 :UInt64;
  similarity   @1 :Float32;           # cosine similarity in [-1, 1]
}

# Latency of one routed request, nanoseconds.
struct Latency {
  embedNs      @0 :UInt64;
  searchNs     @1 :UInt64;
  decideNs     @2 :UInt64;
  totalNs      @3 :UInt64;            # from HTTP body parsed to decision made
}

# Table `witness`, key = request id (u64 big-endian; time-ordered).
struct WitnessRecord {
  requestId    @0 :UInt64;
  timeMs       @1 :Int64;             # UTC ms since the Unix epoch
  sessionId    @2 :Text;
  user         @3 :Text;
  textBytes    @4 :UInt32;            # length of the routed text (text itself is not kept)
  embedding    @5 :Data;              # [dim] f32
  tier         @6 :UInt32;            # index into the configured tiers
  tierName     @7 :Text;
  confidence   @8 :Float64;
  patternId    @9 :UInt64;
  newPattern   @10 :Bool;
  neighbors    @11 :List(Neighbor);
  latency      @12 :Latency;
  hasFeedback  @13 :Bool;
  quality      @14 :Float64;          # valid when hasFeedback
  feedbackMs   @15 :Int64;            # valid when hasFeedback
  latencyBudgetMs @16 :Float64;       # the client's latency budget, ms; 0 = none (and in older records)
  temperature  @17 :Float64 = -1;     # sampling served (router v2's or the client's); -1 = none (and in older records)
  topP         @18 :Float64 = -1;     # as temperature
  contextTokens @19 :UInt32;          # router v2's context bucket, tokens; 0 = none
  promptTokens @20 :UInt32;           # usage reported with the feedback; 0 = not reported
  completionTokens @21 :UInt32;       # as promptTokens
}

# Table `meta`, key "schema".
struct Meta {
  schemaVersion @0 :UInt32;
  embeddingDim  @1 :UInt32;
  createdMs     @2 :Int64;
}

# Table `meta`, key "pattern_index": what the index file beside the env holds.
struct IndexCheckpoint {
  fileHash     @0 :UInt64;            # XXH3-64 of the index file's bytes
  nPatterns    @1 :UInt64;            # patterns in the file
  savedMs      @2 :Int64;
}

# Table `policies`, name "router/v2", kind "router_v2": router v2's weights
# (learn/router_v2.hpp). Before schema 3 the value was hand-rolled
# little-endian bytes (version byte 1 or 2, then the fields below in order);
# decode_router_v2_checkpoint still reads those.
struct RouterV2Checkpoint {
  version       @0 :UInt32;   # parameter layout: 1 up to b_q, 2 with the sampling and context heads
  embedDim      @1 :UInt32;
  nTiers        @2 :UInt32;
  proj          @3 :UInt32;
  hidden        @4 :UInt32;
  rankW         @5 :UInt32;
  rankU         @6 :UInt32;
  loraRank      @7 :UInt32;
  loraAlpha     @8 :Float32;
  temperature   @9 :Float32;
  maxImportance @10 :Float32;
  seed          @11 :UInt64;
  params        @12 :Data;    # [n_params] f32, the model's flat parameter vector
}

# Table `kv_spill`, key = u64 model key ‖ u64 page hash (big-endian): a KV
# page the memory budget evicted, sealed at rest (the sealed bytes are this
# message). Since schema 3 (before: hand-rolled little-endian bytes; such
# records do not decode and are dropped like any damaged cache entry).
struct KvPage {
  parent   @0 :UInt64;   # hash of the page before it in the prefix chain (0: first)
  old      @1 :Bool;     # tier of the bytes: false recent, true old (quantized)
  kType    @2 :UInt8;    # kernels::kv_type of the K bytes
  vType    @3 :UInt8;    # kernels::kv_type of the V bytes
  tokens   @4 :Data;     # [n] i32 little-endian: the token ids the page holds
  bytes    @5 :Data;     # the page, all layers, K and V, in those types
}

# -- Since schema 3: every record in a typed table (meta holds "schema" only) --

# Table `router_state`, key "ids": pattern ids up to `reservedUpTo` may have
# been handed out (and announced); a restart never reuses them.
struct PatternIds {
  reservedUpTo  @0 :UInt64;
}

# Table `router_state`, key "categories": the pattern bank's categories from
# the last deep run (k-means++ clusters), and each kept pattern's category.
struct Categories {
  dim           @0 :UInt32;            # embedding dimension of the means
  nextCategory  @1 :UInt32;            # the next category id to hand out
  labels        @2 :List(UInt32);      # [k] category ids
  means         @3 :Data;              # [k, dim] f32 little-endian, row per category
  patternIds    @4 :List(UInt64);      # [n] patterns with a category
  patternCategories @5 :List(UInt32);  # [n] their category ids
}

# Table `federation_state`, key "stream": the last JetStream sequence of the
# pattern stream whose deltas are committed with the patterns.
struct StreamPosition {
  seq           @0 :UInt64;
}

# Table `policies`, key = policy name ("router/v2", "kv/<tier>"): what the
# learning loops or an operator decided (store/policy_table.hpp).
struct Policy {
  kind          @0 :Text;              # e.g. "router", "kv"
  loop          @1 :Text;              # who decided: "background", "deep", "operator"
  confidence    @2 :Float64;           # [0, 1]
  version       @3 :UInt64;            # previous version + 1
  updatedMs     @4 :Int64;             # UTC ms
  value         @5 :Data;              # the policy: a Cap'n Proto message of its kind
}

# The value of a policy of kind "kv" (name "kv/<tier>"): a tier's KV-cache
# tiering (engine::kv_policy).
struct KvPolicy {
  recentTokens  @0 :UInt32;            # tokens kept in the recent (F16) tier
  oldKType      @1 :UInt8;             # kernels::kv_type of old K pages
  oldVType      @2 :UInt8;             # kernels::kv_type of old V pages
  migratePages  @3 :UInt32;            # pages moved to the old tier at a time
}

# Table `sessions`, key = session id; sealed (XChaCha20-Poly1305, ad = key).
struct Session {
  id            @0 :Text;
  user          @1 :Text;              # OpenAI `user`, "" if none
  context       @2 :Data;              # [dim] f32: L2-normalised mean of the turns' embeddings
  turns         @3 :UInt32;
  adapter       @4 :Text;              # active LoRA adapter, "" = none
  createdMs     @5 :Int64;
  lastMs        @6 :Int64;
  kvTier        @7 :Text;              # the tier holding its KV pages
  kvTokens      @8 :UInt32;            # prompt + completion tokens of the last turn
  kvPages       @9 :UInt32;
}
