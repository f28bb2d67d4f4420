#!/usr/bin/env bash
# Engine prefill and decode tokens/s next to llama.cpp's llama-bench on the
# same GGUF files, in one run: the 15M and 110M demo shapes in Q8_0 and Q4_0,
# at 1 and 2 threads. Both sides run the same tests (pp512: one forward pass
# over 512 prompt tokens; tg128: 128 single-token steps from an empty KV
# cache; F16 KV cache; one warm-up each) — see bench/engine_bench.cpp.
# Rounds alternate which side goes first; every repetition is one sample.
# The table gives, per test, the median tokens/s and the p99 run (the slowest
# 1% of repetitions, as tokens/s) of each side and the ratio of medians, next
# to the targets (decode >= 1.0x, prefill >= 0.8x llama.cpp).
#
# llama-bench is built once from the llama.cpp source that ops/install-peer.sh
# clones (the commit node-llama-cpp 3.22.1 bundles) into
# <peer dir>/llama.cpp/build-bench, ~15 min on 2 cores. Native CPU flags
# except AMX: this machine advertises AMX but its kernel does not grant the
# tile state (ggml's AMX kernels die with SIGILL), so the build lists the ISA
# extensions /proc/cpuinfo shows, without AMX.
#
# Usage: bench/engine.sh [--rounds N] [--repetitions N] [--models LIST] [--threads LIST]
#   --rounds N        alternating rounds (default 3)
#   --repetitions N   repetitions per side, test and round (default 3)
#   --models LIST     demo specs, comma-separated
#                     (default demo:15M:q8_0,demo:15M:q4_0,demo:110M:q8_0,demo:110M:q4_0)
#   --threads LIST    comma-separated (default 1,2)
# Environment: SHOAL_BUILD_DIR (default build), JOBS (build parallelism, default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${SHOAL_BUILD_DIR:-build}
rounds=3 reps=3 threads=1,2
models=demo:15M:q8_0,demo:15M:q4_0,demo:110M:q8_0,demo:110M:q4_0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --repetitions) reps=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "engine.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done

# 1. ours
cmake -S . -B "$build" -DSHOAL_BUILD_BENCH=ON >/dev/null
cmake --build "$build" -j"${JOBS:-2}" --target shoal shoal_engine_bench >&2

# 2. llama-bench from the peer's llama.cpp source
peer=$(ops/install-peer.sh --print-dir)
src=$peer/llama.cpp
flags=(-DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF
       -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=OFF)
has() { grep -qw "$1" /proc/cpuinfo; }
for pair in avx:AVX avx2:AVX2 bmi2:BMI2 fma:FMA f16c:F16C avx_vnni:AVX_VNNI \
            avx512f:AVX512 avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI \
            avx512_bf16:AVX512_BF16; do
  if has "${pair%%:*}"; then flags+=("-DGGML_${pair#*:}=ON"); else flags+=("-DGGML_${pair#*:}=OFF"); fi
done
stamp=$src/build-bench/shoal-flags
if [[ ! -x $src/build-bench/bin/llama-bench || $(cat "$stamp" 2>/dev/null) != "${flags[*]}" ]]; then
  echo "engine.sh: building llama-bench in $src/build-bench (once; ~15 min on 2 cores)" >&2
  rm -rf "$src/build-bench"
  cmake -S "$src" -B "$src/build-bench" "${flags[@]}" >&2
  cmake --build "$src/build-bench" --target llama-bench -j"${JOBS:-2}" >&2
  echo "${flags[*]}" >"$stamp"
fi
llama_bench=$src/build-bench/bin/llama-bench

# 3. the models (random weights, written once into the model cache)
IFS=, read -r -a specs <<<"$models"
IFS=, read -r -a thread_list <<<"$threads"
files=()
for spec in "${specs[@]}"; do
  files+=("$("$build/node/shoal" models "$spec" | cut -f2)")
done

# 4. side by side, alternating
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ours() { "$build/bench/shoal_engine_bench" "$1" -t "$2" -p 512 -n 128 -r "$reps" >>"$tmp/ours.jsonl"; }
theirs() {
  "$llama_bench" -m "$1" -t "$2" -p 512 -n 128 -r "$reps" -o jsonl 2>/dev/null >>"$tmp/peer.jsonl"
}
for ((r = 1; r <= rounds; ++r)); do
  echo "engine.sh: round $r of $rounds" >&2
  for f in "${files[@]}"; do
    for t in "${thread_list[@]}"; do
      if ((r % 2)); then ours "$f" "$t"; theirs "$f" "$t"; else theirs "$f" "$t"; ours "$f" "$t"; fi
    done
  done
done

# 5. the table
echo "## Engine vs llama.cpp ($(date -u +%FT%TZ), $(nproc) cores, $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
echo
echo "llama.cpp $(git -C "$src" rev-parse --short HEAD) llama-bench; $rounds rounds x $reps repetitions per side; tokens/s."
echo
/usr/bin/python3 - "$tmp/ours.jsonl" "$tmp/peer.jsonl" <<'EOF'
import json, math, os, statistics, sys
samples = {}  # (model, threads, test, side) -> [tokens/s]
for line in open(sys.argv[1]):
    d = json.loads(line)
    samples.setdefault((d["model"], d["threads"], d["test"], "shoal"), []).append(d["tokens_per_s"])
for line in open(sys.argv[2]):
    d = json.loads(line)
    test = f"pp{d['n_prompt']}" if d["n_prompt"] else f"tg{d['n_gen']}"
    key = (os.path.basename(d["model_filename"]), d["n_threads"], test, "llama.cpp")
    samples.setdefault(key, []).extend(d["samples_ts"])

def p99_run(v):  # the p99 run time as tokens/s: nearest-rank 1st percentile of tokens/s
    return sorted(v)[math.ceil(0.01 * len(v)) - 1]

print("| model | threads | test | shoal median | shoal p99 run | llama.cpp median | llama.cpp p99 run | ratio | target | |")
print("|---|---:|---|---:|---:|---:|---:|---:|---:|---|")
keys = sorted({k[:3] for k in samples}, key=lambda k: (k[0], k[1], k[2]))
fails = 0
for model, threads, test in keys:
    a = samples.get((model, threads, test, "shoal"), [])
    b = samples.get((model, threads, test, "llama.cpp"), [])
    if not a or not b:
        continue
    ma, mb = statistics.median(a), statistics.median(b)
    target = 0.8 if test.startswith("pp") else 1.0
    ok = ma / mb >= target
    fails += not ok
    print(f"| {model.removeprefix('shoal-demo-').removesuffix('.gguf')} | {threads} | {test} "
          f"| {ma:.0f} | {p99_run(a):.0f} | {mb:.0f} | {p99_run(b):.0f} "
          f"| {ma / mb:.2f}x | {target:.1f}x | {'met' if ok else 'MISSED'} |")
print()
print(f"{len(keys) - fails} of {len(keys)} rows meet their target.")
EOF
