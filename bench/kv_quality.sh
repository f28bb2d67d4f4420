#!/usr/bin/env bash
# KV cache quality (issue 6): how far the next-token distributions move when
# the KV cache is kept in F16, Q8_0 or Q4_0, or in the two-tier default (the
# newest 256 tokens F16, older pages Q8_0), against an F32 KV cache — ours
# next to llama.cpp's KV cache types on the same generated GGUF and prompt.
#   1. bench/kv_quality.cpp writes the model (llama, n_embd 512, 8 heads of
#      head_dim 64, 8 layers, n_ff 1376, vocab 32000, F16 weights, fixed seed)
#      and the prompt (N pseudo-random token ids >= 300), and measures ours;
#   2. tests/peer/llama_logits.mjs runs llama.cpp (node-llama-cpp 3.22.1, CPU,
#      1 thread) with K and V in F16, Q8_0 and Q4_0 with flash attention on
#      (llama.cpp needs it for a quantized V cache; on for all three so they
#      are comparable), and its reference, K and V in F32, with flash
#      attention OFF: llama.cpp's flash attention casts an F32 K/V cache to
#      F16 first (src/llama-graph.cpp, build_attn_mha), so an F32 run with it
#      on would be an F16 run;
#   3. each engine's stores are compared with its OWN F32 run.
# Metric per position: KL(P_F32 || P_store) in nats over the full vocabulary;
# the table gives mean and p99 over positions, and top-1 agreement (share of
# positions whose argmax matches the F32 run). ~2 minutes at 1024 tokens on
# 2 cores; llama.cpp's side needs ~2.2 GB of memory at 1024 tokens.
#
# Usage: bench/kv_quality.sh [--tokens N]
#   --tokens N   prompt length (default 1024, at most 4096)
# Environment: SHOAL_BUILD_DIR (default build), JOBS (build parallelism,
# default 2), SHOAL_PEER_DIR (the peer; default ~/.cache/shoal/peer).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${SHOAL_BUILD_DIR:-build}
tokens=1024
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tokens) tokens=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "kv_quality.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
if ! [[ $tokens =~ ^[0-9]+$ ]] || ((tokens < 16 || tokens > 4096)); then
  echo "kv_quality.sh: --tokens must be a number from 16 to 4096, not '$tokens'" >&2
  exit 2
fi
peer=${SHOAL_PEER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/peer}
if ! command -v node >/dev/null || [[ ! -d $peer/node_modules/node-llama-cpp ]]; then
  echo "kv_quality.sh: the llama.cpp peer is not installed in $peer (needs node and" \
       "node-llama-cpp); run ops/install-peer.sh first" >&2
  exit 1
fi

cmake -S . -B "$build" -DSHOAL_BUILD_BENCH=ON >/dev/null
cmake --build "$build" -j"${JOBS:-2}" --target shoal_kv_quality >&2
tool=$build/bench/shoal_kv_quality

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
model=$tmp/kv-quality.gguf
"$tool" write-model "$model"
ids=$("$tool" prompt -n "$tokens")

# 1. ours (JSON lines), keeping our F32 logits for the cross-engine check
"$tool" ours "$model" -n "$tokens" --dump-ref "$tmp/shoal-F32.bin" >"$tmp/results.jsonl"

# 2. llama.cpp, each store against its own F32 run
for kv in F32 F16 Q8_0 Q4_0; do
  fa=on
  if [[ $kv == F32 ]]; then fa=off; fi
  echo "kv_quality.sh: llama.cpp, KV $kv, flash attention $fa" >&2
  SHOAL_PEER_DIR=$peer node tests/peer/llama_logits.mjs "$model" "$ids" "$tmp/llama-$kv.bin" \
    "$kv" "$fa" >/dev/null
  if [[ $kv != F32 ]]; then
    "$tool" compare "$tmp/llama-F32.bin" "$tmp/llama-$kv.bin" --kv "$kv" >>"$tmp/results.jsonl"
    rm "$tmp/llama-$kv.bin"
  fi
done
# Both engines' F32 runs against each other: the floor the table sits on.
"$tool" compare "$tmp/llama-F32.bin" "$tmp/shoal-F32.bin" --engine cross --kv F32 \
  >>"$tmp/results.jsonl"

echo "## KV cache quality ($(date -u +%FT%TZ), $(nproc) cores, $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
echo
/usr/bin/python3 - "$tmp/results.jsonl" "$tokens" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
n = int(sys.argv[2])
by = {(r["engine"], r["kv"]): r for r in rows}
ref, cross = by[("shoal", "F32")], by[("cross", "F32")]
def kl(x):
    return "0" if x == 0 else f"{x:.2e}"
def cells(r):
    if r is None:
        return ["n/a"] * 3
    return [kl(r["kl_mean"]), kl(r["kl_p99"]), f"{100 * r['top1']:.1f}%"]
print(f"Generated llama GGUF (n_embd 512, 8 heads x head_dim 64, 8 layers, n_ff 1376, "
      f"vocab 32000, F16 weights), prompt of {n} pseudo-random tokens. KL(P_F32 || P_store) "
      f"of the next-token distribution at every position, in nats; mean and p99 over the "
      f"{n} positions; top-1 = positions whose argmax matches the F32 KV cache's. Each "
      f"engine against its own F32 KV cache (llama.cpp's: flash attention off, since with it "
      f"llama.cpp casts F32 K/V to F16; its F16, Q8_0 and Q4_0 runs: flash attention on). "
      f"Mean entropy of the reference "
      f"distributions: {ref['entropy_mean']:.2f} nats (uniform: 10.37).")
print()
print("| KV store | bytes/token (ours) | Shoal KL mean | Shoal KL p99 | Shoal top-1 "
      "| llama.cpp KL mean | llama.cpp KL p99 | llama.cpp top-1 |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for kv, label in (("F16", "F16"), ("Q8_0", "Q8_0"), ("Q4_0", "Q4_0"),
                  ("two-tier", "two-tier default (256 F16 + Q8_0)")):
    ours = by[("shoal", kv)]
    size = f"{ours['bytes_per_token']:.0f}"
    if kv == "two-tier":
        size = (f"{ours['bytes_per_token']:.0f} past 256 "
                f"(avg {ours['bytes_per_token_avg']:.0f} at {n})")
    row = [label, size] + cells(ours) + cells(by.get(("llama.cpp", kv)))
    print("| " + " | ".join(row) + " |")
print()
print(f"F32 reference: {ref['bytes_per_token']:.0f} bytes/token (all 8 layers, K and V). "
      f"Our F32 run against llama.cpp's F32 run (the cross-engine floor): KL mean "
      f"{kl(cross['kl_mean'])}, p99 {kl(cross['kl_p99'])}, top-1 {100 * cross['top1']:.1f}%.")
print()
print("Notes: our Q8_0 / Q4_0 stores keep the newest, not yet full page (up to 15 tokens) "
      "in F16 and quantize whole pages after each step, while llama.cpp quantizes every "
      "token as it is written. llama.cpp's flash attention also rounds the query to the "
      "key type's dot-product type (F16 for an F16 cache, Q8_0 for Q8_0 and Q4_0 keys) and "
      "accumulates an F16 V in F16; ours dots an F32 query with the dequantized keys and "
      "accumulates in F32.")
EOF
