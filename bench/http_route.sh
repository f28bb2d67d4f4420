#!/usr/bin/env bash
# HTTP route throughput: wrk against a real `shoal node`, POST /v1/route with
# real prompts, next to GET /healthz (the HTTP server's floor) in the same run.
# The node is first taught with a replay of --warm prompts (route + feedback).
# Usage: bench/http_route.sh [--build DIR] [--prompts FILE] [--duration S]
#                            [--connections N] [--threads N] [--warm N]
#                            [--set key=value (passed to the node)]
set -euo pipefail
cd "$(dirname "$0")/.."
build=build prompts=prompts.jsonl duration=10 connections=8 threads=2 warm=10000
node_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --prompts) prompts=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --warm) warm=$2; shift 2 ;;
    --set) node_args+=(--set "$2"); shift 2 ;;
    *) echo "http_route.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
shoal=$build/node/shoal
[[ -x $shoal ]] || { echo "http_route.sh: $shoal not built (ops/build.sh)" >&2; exit 1; }
[[ -s $prompts ]] || { echo "http_route.sh: $prompts missing (ops/make-prompts.sh)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "http_route.sh: wrk missing (ops/install-deps.sh)" >&2; exit 1; }

dir=$(mktemp -d /tmp/shoal-http-bench.XXXXXX)
node_pid=
cleanup() {
  [[ -n $node_pid ]] && kill -INT "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# Every wrk connection holds one HTTP worker thread while it is kept alive,
# so the node gets at least as many workers as wrk opens connections.
http_threads=$(( connections > 8 ? connections : 8 ))
"$shoal" node --set http.port=0 --set "http.port_file=$dir/port" --set "store.data_dir=$dir/data" \
  --set node.log_level=warn --set "http.threads=$http_threads" "${node_args[@]}" >"$dir/node.log" 2>&1 &
node_pid=$!
for _ in $(seq 200); do [[ -s $dir/port ]] && break; sleep 0.05; done
[[ -s $dir/port ]] || { cat "$dir/node.log" >&2; exit 1; }
url="http://$(cat "$dir/port")"

"$shoal" replay --url "$url" --prompts "$prompts" --limit "$warm" --window "$warm" \
  --concurrency 2 >"$dir/warm.log"
patterns=$(curl -s "$url/v1/stats" | sed -n 's/.*"patterns":\([0-9]*\).*/\1/p')

run() { # name, wrk args...
  local name=$1; shift
  local out
  out=$(PROMPTS=$prompts wrk -t "$threads" -c "$connections" -d "${duration}s" "$@")
  local rps p50 p99 errors
  rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' <<<"$out")
  p50=$(sed -n 's/.*p50_us=\([0-9]*\).*/\1/p' <<<"$out")
  p99=$(sed -n 's/.*p99_us=\([0-9]*\).*/\1/p' <<<"$out")
  errors=$(sed -n 's/.*errors=\([0-9]*\).*/\1/p' <<<"$out")
  printf '| %s | %s | %s µs | %s µs | %s req/s | %s errors |\n' \
    "$name" "$connections conn" "$p50" "$p99" "$rps" "$errors"
}

echo "HTTP on $(nproc) cores, wrk -t$threads -c$connections -d${duration}s; node warmed with $warm prompts ($patterns patterns)"
echo
echo "| request | load | median | p99 | throughput | notes |"
echo "|---|---:|---:|---:|---:|---|"
run "GET /healthz (server floor)" -s bench/summary.lua "$url/healthz"
run "POST /v1/route (real prompts)" -s bench/route.lua "$url/v1/route"
echo
curl -s "$url/v1/stats" | sed 's/.*"route_latency_ms":\({[^}]*}\).*/node-side route latency (ms): \1/'
echo
