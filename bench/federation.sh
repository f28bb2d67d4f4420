#!/usr/bin/env bash
# Node-to-node pattern propagation over a real nats-server (JetStream):
# shoal_fed_bench (latency and sustained throughput, next to NATS's own
# publish -> delivery floor in the same run).
# Usage: bench/federation.sh [--build DIR] [shoal_fed_bench options...]
set -euo pipefail
cd "$(dirname "$0")/.."
build=build
if [[ ${1:-} == --build ]]; then build=$2; shift 2; fi
[[ -x $build/bench/shoal_fed_bench ]] || { echo "federation.sh: $build/bench/shoal_fed_bench not built" >&2; exit 1; }
source bench/nats.sh
dir=$(mktemp -d /tmp/shoal-fed-bench.XXXXXX)
nats_pid=
cleanup() {
  [[ -n $nats_pid ]] && kill -INT "$nats_pid" 2>/dev/null && wait "$nats_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
start_nats "$dir"
"$build/bench/shoal_fed_bench" --nats "$nats_url" "$@"
