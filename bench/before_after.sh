#!/usr/bin/env bash
# Two revisions side by side in one run on one machine: shoal_bench's route
# (embed + HNSW search + Thompson decision at 1K and 10K patterns, as
# bench/run.sh --quick) and witness (LMDB writes, the witness actor) sections,
# and the engine's prefill (pp512) and decode (tg128) tokens/s on one demo
# model at 1 thread (shoal_engine_bench, as bench/engine.sh runs it; Shoal
# only, no llama.cpp). For "no measurable slowdown" checks after a refactor.
#
# Each revision is checked out into a detached git worktree
# <cache>/<short hash> and built there (RelWithDebInfo, as ops/build.sh; ccache
# with CCACHE_BASEDIR so that files the revisions share compile once; build
# log in <cache>/<short hash>/build.log). Only shoal_bench and
# shoal_engine_bench are built, plus `shoal` on the after side, whose
# `shoal models SPEC` writes the model (as bench/engine.sh): both sides run the
# same GGUF file. Existing worktrees and builds are reused; a cold build takes
# ~10 min per revision on 2 cores.
#
# Rounds alternate which side goes first. The tables give, per row, the
# median over rounds of each side's per-round p50 and p99 latency and
# throughput (shoal_bench prints one p50/p99 per run) and the after/before
# ratio: above 1 is slower for latencies, faster for throughputs. Engine rows
# pool every repetition of every round (as bench/engine.sh): median tokens/s
# and the p99 run (the slowest 1% of repetitions, as tokens/s). The benches'
# raw outputs of the last run stay in <cache>/last-run.
#
# Usage: bench/before_after.sh [--before REV] [--after REV] [--rounds N]
#                              [--model SPEC] [--repetitions N] [--sizes LIST]
#                              [--cache DIR]
#   --before REV      the baseline (default 39e286d, the last commit before the
#                     module restructuring)
#   --after REV       the revision to check (default HEAD)
#   --rounds N        alternating rounds (default 3)
#   --model SPEC      engine model: demo:<shape>:<type> or a GGUF path
#                     (default demo:15M:q8_0)
#   --repetitions N   engine repetitions per side, test and round (default 3)
#   --sizes LIST      route pattern-bank sizes (default 1000,10000)
#   --cache DIR       worktrees and builds (default .bench-cache, git-ignored)
# Environment: JOBS (build parallelism, default 2); builds run under nice.
set -euo pipefail
cd "$(dirname "$0")/.."
before=39e286d after=HEAD rounds=3 model=demo:15M:q8_0 reps=3 sizes=1000,10000
cache=.bench-cache
while [[ $# -gt 0 ]]; do
  case "$1" in
    --before) before=$2; shift 2 ;;
    --after) after=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --repetitions) reps=$2; shift 2 ;;
    --sizes) sizes=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "before_after.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done

ops/install-deps.sh
[[ -s prompts.jsonl ]] || ops/make-prompts.sh
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# 1. worktrees and builds. checkout REV TARGETS... prints the build directory.
checkout() {
  local rev=$1 sha short dir
  shift
  sha=$(git rev-parse --verify "$rev^{commit}")
  short=$(git rev-parse --short=7 "$sha")
  dir=$cache/$short
  if [[ ! -e $dir/.git ]]; then
    git worktree prune
    git worktree add --detach "$dir" "$sha" >&2
  fi
  if [[ $(git -C "$dir" rev-parse HEAD) != "$sha" ]]; then
    echo "before_after.sh: $dir is not at $sha; remove it (git worktree remove)" >&2
    exit 1
  fi
  echo "before_after.sh: building $short ($*)" >&2
  if ! (export CCACHE_BASEDIR=$dir CCACHE_NOHASHDIR=1
        { [[ -f $dir/build/CMakeCache.txt ]] ||
            cmake -S "$dir" -B "$dir/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
              -DSHOAL_BUILD_BENCH=ON; } &&
          nice cmake --build "$dir/build" -j"${JOBS:-2}" --target "$@") >"$dir/build.log" 2>&1; then
    tail -n 30 "$dir/build.log" >&2
    echo "before_after.sh: building $short failed (log: $dir/build.log)" >&2
    exit 1
  fi
  echo "$dir/build"
}
before_build=$(checkout "$before" shoal_bench shoal_engine_bench)
after_build=$(checkout "$after" shoal_bench shoal_engine_bench shoal)
declare -A build=([before]=$before_build [after]=$after_build)

# 2. the model (random weights, written once into the model cache)
gguf=$("$after_build/node/shoal" models "$model" | cut -f2)

# 3. side by side, alternating; raw outputs stay in <cache>/last-run
out=$cache/last-run
rm -rf "$out"
mkdir -p "$out"
bench() {
  echo "@round $2" >>"$out/$1.bench.md"
  "${build[$1]}/bench/shoal_bench" --prompts prompts.jsonl --only route witness \
    --sizes "$sizes" >>"$out/$1.bench.md"
}
engine() {
  "${build[$1]}/bench/shoal_engine_bench" "$gguf" -t 1 -p 512 -n 128 -r "$reps" \
    >>"$out/$1.engine.jsonl"
}
start=$SECONDS
for ((r = 1; r <= rounds; ++r)); do
  echo "before_after.sh: round $r of $rounds" >&2
  if ((r % 2)); then sides=(before after); else sides=(after before); fi
  for s in "${sides[@]}"; do bench "$s" "$r"; done
  for s in "${sides[@]}"; do engine "$s"; done
done

# 4. the tables
label() { git -C "${build[$1]}/.." log -1 --format='%h (%cs)' --abbrev=7; }
echo "## Before/after ($(date -u +%FT%TZ), $(nproc) cores)"
echo
echo "before: $(label before) from --before $before; after: $(label after) from --after $after."
echo "Rounds: $rounds, alternating ($((SECONDS - start)) s); shoal_bench --only route witness" \
  "--sizes $sizes; shoal_engine_bench $(basename "$gguf") -t 1 -p 512 -n 128 -r $reps."
echo
/usr/bin/python3 - "$out" <<'EOF'
import json, math, re, statistics, sys
out = sys.argv[1]
units = {"ns": 1, "µs": 1e3, "ms": 1e6, "s": 1e9}

def parse_bench(side):
    """shoal_bench's Markdown table, per round: row -> (p50 ns, p99 ns, throughput, unit)."""
    rows, kernels = {}, set()  # name -> {"p50": [...], "p99": [...], "tp": [...]}
    order = []
    for line in open(f"{out}/{side}.bench.md", encoding="utf-8"):
        if m := re.search(r"kernels: (\S+)", line):
            kernels.add(m.group(1))
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 6 or cells[0] in ("benchmark", "---"):
            continue
        name, _, p50, p99, tp, _ = cells
        if name not in rows:
            rows[name] = {"p50": [], "p99": [], "tp": [], "unit": ""}
            order.append(name)
        for key, cell in (("p50", p50), ("p99", p99)):
            if cell != "-":
                value, unit = cell.split()
                rows[name][key].append(float(value) * units[unit])
        if tp:
            value, unit = tp.split()
            rows[name]["tp"].append(float(value))
            rows[name]["unit"] = unit
    return rows, order, kernels

def fmt_time(ns):
    if ns < 1e3: return f"{ns:.0f} ns"
    if ns < 1e6: return f"{ns / 1e3:.1f} µs"
    return f"{ns / 1e6:.2f} ms"

def triple(a, b, fmt):
    if not a or not b:
        return ["-", "-", "-"]
    ma, mb = statistics.median(a), statistics.median(b)
    return [fmt(ma), fmt(mb), f"{mb / ma:.2f}x" if ma else "-"]

before, order, kb = parse_bench("before")
after, order_after, ka = parse_bench("after")
print(f"kernels: before {', '.join(sorted(kb))}; after {', '.join(sorted(ka))}.")
for title, pick in (("Route", lambda n: "@" in n), ("Witness", lambda n: n.startswith("witness"))):
    print()
    print(f"### {title} (shoal_bench; median over rounds)")
    print()
    print("| benchmark | p50 before | p50 after | after/before | p99 before | p99 after | after/before "
          "| throughput before | throughput after | after/before |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in [n for n in order if pick(n)] + [n for n in order_after if pick(n) and n not in order]:
        b, a = before.get(name), after.get(name)
        if not b or not a:
            print(f"| {name} | only {'after' if a else 'before'} | | | | | | | | |")
            continue
        unit = b["unit"] or a["unit"]
        cells = (triple(b["p50"], a["p50"], fmt_time) + triple(b["p99"], a["p99"], fmt_time)
                 + triple(b["tp"], a["tp"], lambda x: f"{x:.0f} {unit}"))
        print(f"| {name} | " + " | ".join(cells) + " |")
    if title == "Witness":
        print()
        print("The witness actor's p50 and p99 are its mean time per record (send to committed).")

def parse_engine(side):
    samples = {}  # (model, threads, test) -> [tokens/s]
    for line in open(f"{out}/{side}.engine.jsonl"):
        d = json.loads(line)
        samples.setdefault((d["model"], d["threads"], d["test"]), []).append(d["tokens_per_s"])
    return samples

def p99_run(v):  # the p99 run time as tokens/s: nearest-rank 1st percentile of tokens/s
    return sorted(v)[math.ceil(0.01 * len(v)) - 1]

eb, ea = parse_engine("before"), parse_engine("after")
print()
print("### Engine (shoal_engine_bench; tokens/s, every repetition a sample)")
print()
print("| model | threads | test | before median | before p99 run | after median | after p99 run "
      "| after/before |")
print("|---|---:|---|---:|---:|---:|---:|---:|")
for key in sorted(set(eb) | set(ea)):
    b, a = eb.get(key, []), ea.get(key, [])
    if not b or not a:
        continue
    mb, ma = statistics.median(b), statistics.median(a)
    model, threads, test = key
    print(f"| {model.removeprefix('shoal-demo-').removesuffix('.gguf')} | {threads} | {test} "
          f"| {mb:.0f} | {p99_run(b):.0f} | {ma:.0f} | {p99_run(a):.0f} | {ma / mb:.2f}x |")
EOF
