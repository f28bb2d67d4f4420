#!/usr/bin/env bash
# The routers judged as the field judges routers (issue 20), on the reference
# world: the trained tiers of models/ (Q8_0) and their measured quality on
# Debian package descriptions.
#   1. One node serves the tiers; `shoal quality-table` measures every tier on
#      the validation split (models/valid.jsonl) and the evaluation split
#      (models/eval.jsonl): quality = exp(mean log p(reference | prompt)),
#      ROUGE-L and ms of the greedy answer (cached in --tables by the models'
#      fingerprints: a rerun reuses them).
#   2. For every seed (request order), λ (cost per ms of a tier's mean answer
#      time) and router (v1: sona.v2=false; v2: the default), a fresh node
#      whose tier costs are λ × ms replays the validation split as warm-up
#      traffic, then the evaluation split once; its per-request choices go to
#      <runs>/<router>_<λ>_<seed>.csv.
#   3. build/bench/shoal_router_report prints the tiers, the quality–cost
#      points, AIQ (RouterBench), APGR and CPT(50%/80%) (RouteLLM, weak = the
#      cheapest tier, strong = the dearest), the Zero router, a random router,
#      the per-prompt oracle, cumulative regret and the per-domain evidence.
# Nothing is tuned on the evaluation split: the routers run with the node's
# defaults, and the λ grid is fixed here before any evaluation run.
# Usage: bench/routers.sh [--build DIR] [--seeds N] [--lambdas "L1 L2 ..."]
#          [--tables DIR] [--runs DIR] [--routers "v1 v2"] [--limit N]
#   --limit N   only the first N documents of each split (a smoke run; its
#               tables go to --tables like the full ones: use another DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
build=build seeds=5 lambdas="0 1e-5 2e-5 5e-5 1e-4 2e-4 5e-4 1e-3" tables=data/quality
runs="" routers="v1 v2" limit=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --lambdas) lambdas=$2; shift 2 ;;
    --tables) tables=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --routers) routers=$2; shift 2 ;;
    --limit) limit=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "routers.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
prompts=models/eval.jsonl
source bench/node.sh
report=$build/bench/shoal_router_report
[[ -x $report ]] || { echo "routers.sh: $report not built (ops/build.sh)" >&2; exit 1; }
runs=${runs:-$dir/runs}
mkdir -p "$tables" "$runs"
# The splits (cut to --limit documents).
for split in valid eval; do
  if [[ $limit -gt 0 ]]; then head -n "$limit" "models/$split.jsonl"; else cat "models/$split.jsonl"; fi \
    >"$dir/$split.jsonl"
done

# 1. The tables.
bench/reference_tiers.py >"$dir/tables.toml"
start_node tables --config "$dir/tables.toml"
for split in valid eval; do
  "$shoal" quality-table --url "$node_url" --prompts "$dir/$split.jsonl" \
    --table "$tables/$split.json"
done
kill -INT "$node_pid"; wait "$node_pid" || true

# 2. The runs.
for seed in $(seq 1 "$seeds"); do
  for lambda in $lambdas; do
    # Costs from the validation split's times (known before any evaluation run).
    bench/reference_tiers.py "$tables/valid.json" "$lambda" >"$dir/run.toml"
    for router in $routers; do
      v2=true
      [[ $router == v1 ]] && v2=false
      name=${router}_${lambda}_${seed}
      start_node "$name" --config "$dir/run.toml" --set sona.v2=$v2 --set router.seed=$seed
      "$shoal" replay --url "$node_url" --evaluator reference --prompts "$dir/valid.jsonl" \
        --table "$tables/valid.json" --lambda "$lambda" --order-seed "$seed" >/dev/null
      "$shoal" replay --url "$node_url" --evaluator reference --prompts "$dir/eval.jsonl" \
        --table "$tables/eval.json" --lambda "$lambda" --order-seed "$seed" \
        --requests-out "$runs/$name.csv" >"$dir/$name.out"
      kill -INT "$node_pid"; wait "$node_pid" || true
      echo "routers.sh: $name: $(tail -1 "$dir/$name.out")" >&2
    done
  done
done

# 3. The report.
"$report" --table "$tables/eval.json" --runs "$runs"
