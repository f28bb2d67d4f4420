#!/usr/bin/env bash
# Kernel benchmarks, side by side in one run:
#   1. GEMV over a 4096x4096 matrix per weight format (1 and 2 threads, weights
#      cold in memory), as GB/s of weight bytes next to the memory bandwidth
#      one core (and two) reach on this machine, measured in the same binary;
#      small-batch GEMM for Q8_0/Q4_0;
#   2. MicroLoRA d=256 rank 2 forward and update next to the npm package
#      @ruvector/learning-wasm (bench/learning_peer.sh).
# Every row is the median and the worst of --repetitions runs (Google
# Benchmark repetitions; each repetition is itself a mean over many calls).
# Usage: bench/kernels.sh [--repetitions N] [--no-peer]
# Environment: SHOAL_BUILD_DIR (default build), JOBS (build parallelism).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${SHOAL_BUILD_DIR:-build}
reps=7 peer=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --repetitions) reps=$2; shift 2 ;;
    --no-peer) peer=0; shift ;;
    *) echo "kernels.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
cmake -S . -B "$build" -DSHOAL_BUILD_BENCH=ON >/dev/null
cmake --build "$build" -j"${JOBS:-2}" --target shoal_kernels_bench shoal >&2

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "## Kernels ($(date -u +%FT%TZ), $(nproc) cores, $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
echo
echo '```'
"$build/node/shoal" kernels | sed -n 1,2p
echo '```'
"$build/bench/shoal_kernels_bench" --benchmark_filter='^(mem_read|gemv/|gemm/)' \
  --benchmark_repetitions="$reps" --benchmark_out="$tmp/gemv.json" \
  --benchmark_out_format=json >"$tmp/gemv.txt" 2>&1

/usr/bin/python3 - "$tmp/gemv.json" <<'EOF'
import json, re, statistics, sys
runs = {}
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    if b.get("run_type") != "iteration":
        continue
    runs.setdefault(b["run_name"], []).append(b)
def gbps(name):
    rs = runs.get(name, [])
    if not rs:
        return None
    v = sorted(r["bytes_per_second"] / 1e9 for r in rs)
    return statistics.median(v), v[0]  # median, worst (slowest)
def label(name):
    r = runs[name][0]
    return r.get("label", "")
# The bandwidth reference: the faster of a plain streaming read and one with
# software prefetch (as the GEMV kernels do) over 256 MiB.
def best(*gs):
    gs = [g for g in gs if g]
    return max(gs) if gs else None
bw = {t: best(gbps(f"mem_read/256MiB/threads:{t}/real_time"),
              gbps(f"mem_read_prefetch/256MiB/threads:{t}/real_time")) for t in (1, 2)}
print()
print("GEMV 4096x4096, weights cold (GB/s of weight bytes, median / worst of "
      f"{len(next(iter(runs.values())))} repetitions); memory bandwidth (streaming read of 256 MiB, with or without prefetch, the faster) measured in the same run: "
      + ", ".join(f"{t} thread{'s' if t > 1 else ''} {bw[t][0]:.1f} GB/s" for t in (1, 2) if bw[t]))
print()
print("| weights | 1 thread GB/s | % of 1-core bandwidth | 2 threads GB/s | % of 2-thread bandwidth | variant |")
print("|---|---:|---:|---:|---:|---|")
for fmt in ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K", "Q6_K"):
    row = [fmt]
    for t in (1, 2):
        g = gbps(f"gemv/{fmt}/threads:{t}/cold/real_time")
        if g is None:
            row += ["-", "-"]
            continue
        row += [f"{g[0]:.1f} / {g[1]:.1f}", f"{100 * g[0] / bw[t][0]:.0f}%" if bw[t] else "-"]
    name = f"gemv/{fmt}/threads:1/cold/real_time"
    row.append(label(name) if name in runs else "")
    print("| " + " | ".join(row) + " |")
print()
print("GEMM (X[batch, 4096] x W^T, 4096x4096), weights GB/s counted once per call:")
print()
print("| weights | batch | 1 thread GB/s | 2 threads GB/s |")
print("|---|---:|---:|---:|")
for fmt in ("Q8_0", "Q4_0"):
    for batch in (8, 32):
        cells = []
        for t in (1, 2):
            g = gbps(f"gemm/{fmt}/batch:{batch}/threads:{t}/real_time")
            cells.append("-" if g is None else f"{g[0]:.1f} / {g[1]:.1f}")
        print(f"| {fmt} | {batch} | " + " | ".join(cells) + " |")
EOF

if [[ $peer == 1 ]]; then
  echo
  echo "MicroLoRA d=256 rank 2, ours (every variant) next to @ruvector/learning-wasm:"
  echo
  SHOAL_BUILD_DIR=$build bench/learning_peer.sh
fi
