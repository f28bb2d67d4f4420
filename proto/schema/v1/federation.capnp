@0xa3f1c2e4b5d60718;
# FROZEN copy of federation.capnp as first committed (before DeltaBatch.changedUs),
# kept only so a test can write messages the way such a node did and read them
# with today's schema. Never edit: the file id and namespace differ.
# Federation messages: the NATS payloads Shoal nodes exchange (DESIGN.md,
# Federation). Every payload travels inside a signed Envelope.
# Schema evolution: append fields only (new ordinals at the end), never
# renumber, retype or remove. Readers treat absent fields as their defaults.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("shoal::proto::capnp::v1");
using Store = import "store.capnp";

# What a signed payload is; part of the signed bytes, so a payload of one
# kind cannot be replayed as another.
enum Kind {
  deltaBatch   @0;
  digest       @1;
  telemetry    @2;
  resync       @3;
}

# Subject shoal.<cluster>.{patterns.<node>|digest|telemetry.<node>|resync}.
struct Envelope {
  kind         @0 :Kind;
  payload      @1 :Data;              # the encoded DeltaBatch, Digest, Telemetry or Resync
  signer       @2 :Text;              # the sender's name in the receivers' trust lists
  signature    @3 :Data;              # Ed25519 (64 bytes) over [kind as u8] ++ payload
}

# The sender's own contribution to one pattern.
struct PatternDelta {
  originNode   @0 :UInt64;            # node that created the pattern
  originId     @1 :UInt64;            # the pattern's id there
  centroid     @2 :Data;              # [dim] f32, L2-normalised, when the pattern is
                                      # announced (by its creator); else empty
  version      @3 :UInt64;            # the sender's clock at its last change; highest wins
  tiers        @4 :List(Store.TierStat); # the sender's observations, indexed like the tiers
}

# Subject shoal.<cluster>.patterns.<node>, kept in the JetStream stream.
struct DeltaBatch {
  node         @0 :UInt64;            # sender id: first 8 bytes of its Ed25519 key, LE
  nodeName     @1 :Text;
  seq          @2 :UInt64;            # the sender's batch counter (since its start)
  sentMs       @3 :Int64;             # UTC ms since the Unix epoch
  dim          @4 :UInt32;            # embedding dimension of the centroids
  nTiers       @5 :UInt32;            # length of every tiers list
  deltas       @6 :List(PatternDelta);
}

# What a node holds of one origin's contributions.
struct OriginSummary {
  node         @0 :UInt64;
  count        @1 :UInt64;            # contributions held
  maxVersion   @2 :UInt64;            # highest version among them
  hash         @3 :UInt64;            # XOR over them of XXH3-64(originNode, originId, version)
}

# Subject shoal.<cluster>.digest: anti-entropy, sent periodically.
struct Digest {
  node         @0 :UInt64;
  nodeName     @1 :Text;
  sentMs       @2 :Int64;
  patterns     @3 :UInt64;            # patterns in the sender's bank
  origins      @4 :List(OriginSummary);
}

# Subject shoal.<cluster>.resync: asks nodes to republish their contributions.
struct Resync {
  node         @0 :UInt64;            # who asks
  nodeName     @1 :Text;
  sentMs       @2 :Int64;
  target       @3 :UInt64;            # node that should republish; 0 = every node
}

# Subject shoal.<cluster>.telemetry.<node>: counters, sent periodically.
struct Telemetry {
  node         @0 :UInt64;
  nodeName     @1 :Text;
  sentMs       @2 :Int64;
  patterns     @3 :UInt64;
  routed       @4 :UInt64;
  learned      @5 :UInt64;
  deltasSent   @6 :UInt64;
  deltasMerged @7 :UInt64;
  dropped      @8 :UInt64;            # federation messages rejected
}
