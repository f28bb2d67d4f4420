#!/usr/bin/env bash
# SONA in a real node: router v2 on (sona.v2=true, the default) next to
# router v1 alone (sona.v2=false), each on a fresh node taught by `shoal
# replay` over HTTP with the evaluator's feedback — the whole path: gateway,
# router, trajectory ring, SONA's instant loop, background runs on their own
# thread (every sona.background_trajectories feedbacks), model swaps.
# By default in the latency world (bench/sona_learning.cpp's "tight" one):
# the largest tier decodes at 150 ms/token and 90% of requests carry a
# latency_budget_ms, log-uniform in [300, 10000] ms, which router v1 cannot
# see. --ms-per-token 0 gives the default world; --sampling-sensitivity S the
# sampling world (each domain has a hidden best temperature and top_p: router
# v2 chooses them for every request, router v1 leaves OpenAI's defaults).
# For each evaluator seed (--seeds), both nodes replay the same prompts;
# prints the learning curves (% of the oracle's reward per window, median
# over seeds), the best single tier's share (hindsight) and the last window.
# Usage: bench/sona_node.sh [--build DIR] [--prompts FILE] [--requests N]
#          [--window N] [--seeds N] [--ms-per-token MS] [--budget-share S]
#          [--sampling-sensitivity S]
set -euo pipefail
cd "$(dirname "$0")/.."
build=build prompts=prompts.jsonl requests=8000 window=1000 seeds=3 ms=150 share=0.9 sampling=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --prompts) prompts=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --window) window=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --ms-per-token) ms=$2; shift 2 ;;
    --budget-share) share=$2; shift 2 ;;
    --sampling-sensitivity) sampling=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "sona_node.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
# No latency model, no budgets (as shoal_sona_learning): they would only be noise.
[[ $ms == 0 ]] && share=0
source bench/node.sh

for s in $(seq 1 "$seeds"); do
  for v2 in true false; do
    n=v2-$v2-$s
    start_node "$n" --set "sona.v2=$v2"
    "$shoal" replay --url "$node_url" --prompts "$prompts" --limit "$requests" \
      --window "$window" --eval-seed "$((41 + s))" --eval-ms-per-token "$ms" \
      --budget-share "$share" --eval-sampling-sensitivity "$sampling" --curve-out "$dir/$n.csv" >"$dir/$n.replay"
    kill -INT "$node_pid"
    wait "$node_pid" || true
  done
done

echo "## SONA in the node: router v2 vs router v1 ($(date -u +%FT%TZ), $(nproc) cores, $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
echo
sed -n 's/^latency budgets: /latency budgets: /p' "$dir/v2-true-1.replay"
/usr/bin/python3 - "$dir" "$seeds" <<'EOF'
import csv, re, statistics, sys
d, seeds = sys.argv[1], int(sys.argv[2])
def load(p):
    return [(int(r["requests"]), 100 * float(r["ratio"])) for r in csv.DictReader(open(p))]
curves = {v: [load(f"{d}/v2-{v}-{s}.csv") for s in range(1, seeds + 1)] for v in ("true", "false")}
def best_fixed(s):
    text = open(f"{d}/v2-true-{s}.replay").read()
    line = next(l for l in text.splitlines() if l.startswith("baseline, one fixed tier"))
    return max(float(x) for x in re.findall(r" (-?[0-9.]+)%", line))
med = statistics.median
print(f"\n% of the oracle's reward per window, median over {seeds} evaluator seeds; the best "
      f"single tier for every request (hindsight): {med(best_fixed(s) for s in range(1, seeds + 1)):.1f}%\n")
print("| requests | router v1 (sona.v2=false) | router v2 (sona.v2=true) |")
print("|---:|---:|---:|")
for t in range(len(curves["true"][0])):
    n = curves["true"][0][t][0]
    print(f"| {n} | {med(c[t][1] for c in curves['false']):.1f}% | "
          f"{med(c[t][1] for c in curves['true']):.1f}% |")
print("\nlast window per seed: v1 " + ", ".join(f"{c[-1][1]:.1f}%" for c in curves["false"]) +
      "; v2 " + ", ".join(f"{c[-1][1]:.1f}%" for c in curves["true"]))
EOF
