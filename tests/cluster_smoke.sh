#!/usr/bin/env bash
# Integration test of ops/cluster.sh: brings up the 3-server NATS cluster and
# two federated nodes on random ports, teaches node-1, checks that `status`
# shows both nodes connected with the same patterns, then stops and cleans.
# Usage: tests/cluster_smoke.sh CLUSTER_SHOAL_BINARY
set -euo pipefail
cd "$(dirname "$0")/.."
export CLUSTER_SHOAL_BIN=$1
export CLUSTER_DIR=$(mktemp -d /tmp/shoal-cluster-test.XXXXXX)
# Below the kernel's ephemeral range (32768-60999), where the other tests'
# nodes and servers get their ports (bind to port 0).
export CLUSTER_NATS_PORT=$((20000 + RANDOM % 9000))
export CLUSTER_HTTP_PORT=$((10000 + RANDOM % 9000))
trap 'ops/cluster.sh clean >/dev/null 2>&1 || true' EXIT
ops/cluster.sh up 2
url=http://127.0.0.1:$CLUSTER_HTTP_PORT
texts=(
  "GNU C compiler for embedded ARM targets" "Python library for parsing YAML files"
  "TrueType fonts with wide Unicode coverage" "daemon that monitors disk health"
  "documentation for the Perl regular expression engine" "network packet analyzer"
)
for t in "${texts[@]}"; do
  id=$(curl -sf -XPOST "$url/v1/route" -d "{\"text\": \"$t\"}" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["request_id"])')
  curl -sf -XPOST "$url/v1/feedback" -d "{\"request_id\": \"$id\", \"quality\": 0.7}" >/dev/null
done
for _ in $(seq 300); do
  out=$(ops/cluster.sh status)
  n1=$(awk '$1 == "node-1" {print $4 " " $5}' <<<"$out")
  n2=$(awk '$1 == "node-2" {print $4 " " $5}' <<<"$out")
  if [[ $n1 == "connected 6" && $n2 == "connected 6" ]]; then
    echo "$out"
    ops/cluster.sh down
    after=$(ops/cluster.sh status)
    grep -q "node-1 .* stopped" <<<"$after" || { echo "node-1 still running: $after" >&2; exit 1; }
    exit 0
  fi
  sleep 0.2
done
echo "cluster did not converge; last status:" >&2
echo "$out" >&2
for f in "$CLUSTER_DIR"/nodes/*/node.log; do echo "== $f" >&2; tail -5 "$f" >&2; done
exit 1
