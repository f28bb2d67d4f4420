#!/usr/bin/env bash
# Runs every benchmark of this folder and prints Markdown tables:
#   shoal_bench     embed; route at 1K/10K/100K patterns next to an exact scan
#                   (latency, recall@k); witness ingest (actor, batches, 1/txn)
#   http_route.sh   HTTP POST /v1/route with wrk, next to GET /healthz
#   federation.sh   node-to-node propagation latency and throughput over NATS,
#                   next to NATS's publish -> delivery floor
#   federation_learning.sh  a node joining a cluster that learned vs an isolated one
#   engine.sh       prefill/decode tokens/s next to llama.cpp's llama-bench
#   kv_quality.sh   KL of the KV cache stores against F32, next to llama.cpp's
#   shoal_session_bench  session look-up next to unordered_map; KV page alloc,
#                   migration next to memcpy; decode and its KV share
#   sessions_node.sh 10,000 sessions on a node within memory.budget_mb; RSS
#   shoal_sona_learning  router v1 vs v2 on the replay evaluator: curves,
#                   regret, CPT, domain shift with and without EWC++; in the
#                   default world, with the latency model and with the
#                   sampling model (sampling and context heads)
#   sona_node.sh    the same through real nodes (sona.v2 on vs off) over HTTP
#   sona_peer.sh    SONA's instant and background loops next to @ruvector/sona
#   shoal_consolidation_bench  the deep loop's pattern-bank consolidation
# Usage: bench/run.sh [--quick]   (--quick: 1K/10K patterns, 5 s of HTTP)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=1000,10000,100000 duration=10
if [[ ${1:-} == --quick ]]; then sizes=1000,10000 duration=5; fi
ops/install-deps.sh
ops/build.sh build
[[ -s prompts.jsonl ]] || ops/make-prompts.sh
echo "## shoal_bench ($(date -u +%FT%TZ), $(nproc) cores, $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
echo
build/bench/shoal_bench --prompts prompts.jsonl --sizes "$sizes"
echo
echo "## HTTP"
echo
bench/http_route.sh --prompts prompts.jsonl --duration "$duration"
echo
if [[ ${1:-} == --quick ]]; then
  bench/federation.sh --patterns 10000 --seconds 2 --burst 100000
else
  bench/federation.sh
  echo
  bench/federation_learning.sh
fi
echo
if [[ ${1:-} == --quick ]]; then
  bench/engine.sh --rounds 1 --models demo:15M:q8_0,demo:15M:q4_0
else
  bench/engine.sh
fi
echo
bench/kv_quality.sh
echo
if [[ ${1:-} == --quick ]]; then
  build/bench/shoal_session_bench --sizes 10000 --samples 50000 --repetitions 5
  echo
  SHOAL_BUILD_DIR=build bench/sessions_node.sh --sessions 2000
else
  build/bench/shoal_session_bench
  echo
  SHOAL_BUILD_DIR=build bench/sessions_node.sh
fi
echo
if [[ ${1:-} == --quick ]]; then
  build/bench/shoal_sona_learning --requests 3000 --seeds 3 --shift-phase 3000
  echo
  bench/sona_node.sh --requests 4000 --seeds 1
  echo
  build/bench/shoal_consolidation_bench --patterns 10000 --duplicates 1000 --repeats 3
else
  build/bench/shoal_sona_learning --requests 6000 --seeds 7
  echo
  build/bench/shoal_sona_learning --requests 12000 --window 1000 --seeds 7 --no-shift \
    --ms-per-token 50 --budget-share 0.5
  echo
  build/bench/shoal_sona_learning --requests 6000 --seeds 7 --ms-per-token 150 --budget-share 0.9
  echo
  build/bench/shoal_sona_learning --requests 6000 --seeds 7 --ms-per-token 150 --budget-share 0.9 \
    --shift-by length
  echo
  build/bench/shoal_sona_learning --requests 6000 --seeds 7 --sampling-sensitivity 0.1
  echo
  bench/sona_node.sh
  echo
  bench/sona_node.sh --ms-per-token 0 --sampling-sensitivity 0.1 --seeds 3 --requests 8000
  echo
  build/bench/shoal_consolidation_bench
fi
echo
SHOAL_BUILD_DIR=build bench/sona_peer.sh
