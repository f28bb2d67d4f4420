#!/usr/bin/env bash
# Learning benefit of federation, with the replay evaluator on the Debian
# prompts: how many requests a fresh node needs to reach 95% of the oracle's
# reward when it joins a cluster that has already learned, next to a fresh
# isolated node, in one run (same prompts, same evaluator seed).
#   1. nodes a and b (federated over a real nats-server with JetStream) learn
#      from --learned prompts between them;
#   2. a "joiner" node starts fresh, federated, and catches up from the stream;
#      an "isolated" node starts fresh without federation;
#   3. both replay the same --limit prompts that a and b never saw.
#   Steps 2-3 run --repeats times (fresh nodes, other exploration seeds); the
#   curves are averaged, since 95% lies close to the router's plateau and a
#   single run's first crossing is mostly noise.
# Prints the mean learning curves and where each first reaches 95% of the oracle.
# Usage: bench/federation_learning.sh [--build DIR] [--prompts FILE]
#          [--learned N] [--limit N] [--window N] [--eval-seed S] [--repeats N]
#          [--world "REPLAY ARGS"]
#          [--reference TABLES --lambda L]
#   --world  further `shoal replay` options for every replay, e.g. the
#            evaluator's latency model: "--eval-ms-per-token 50 --budget-share 0.5"
#   --reference TABLES  the reference world instead of the simulated one
#            (issue 20): every node serves the trained tiers of models/ with
#            costs λ × ms (--lambda; the tables' validation times); a and b
#            learn from the validation split (models/valid.jsonl, --learned
#            ignored), joiners and isolated nodes replay the evaluation split
#            (models/eval.jsonl, --limit ignored) with feedback from the
#            quality tables TABLES/valid.json and TABLES/eval.json
#            (bench/routers.sh writes them).
set -euo pipefail
cd "$(dirname "$0")/.."
build=build prompts=prompts.jsonl learned=20000 limit=10000 window=250 seed=42 repeats=5 world=
reference="" lambda=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --prompts) prompts=$2; shift 2 ;;
    --learned) learned=$2; shift 2 ;;
    --limit) limit=$2; shift 2 ;;
    --window) window=$2; shift 2 ;;
    --eval-seed) seed=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    --world) world=$2; shift 2 ;;
    --reference) reference=$2; shift 2 ;;
    --lambda) lambda=$2; shift 2 ;;
    *) echo "federation_learning.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
source bench/node.sh
# What a and b learn from and what the fresh nodes are tested on: the same
# file at different offsets (simulated world), or the two splits (reference).
learn=(--prompts "$prompts") test=(--prompts "$prompts" --offset "$learned") config=()
if [[ -n $reference ]]; then
  learn=(--evaluator reference --prompts models/valid.jsonl --table "$reference/valid.json"
         --lambda "$lambda")
  test=(--evaluator reference --prompts models/eval.jsonl --table "$reference/eval.json"
        --lambda "$lambda")
  learned=$(wc -l <models/valid.jsonl) limit=$(wc -l <models/eval.jsonl)
  bench/reference_tiers.py "$reference/valid.json" "$lambda" >"$dir/tiers.toml"
  config=(--config "$dir/tiers.toml")
fi

source bench/nats.sh
start_nats "$dir/nats"
pids+=("$nats_pid")

# a and b trust each other; each joiner trusts a, b and itself only, so what
# one joiner learns on the unseen prompts never reaches the next one.
declare -A key
for n in a b $(seq -f 'joiner%g' 1 "$repeats"); do
  key[$n]=$("$shoal" key --set node.name=$n --set store.data_dir="$dir/$n")
done
cluster_trust="${key[a]},${key[b]}"

# A node of the cluster (federated 1, trusting the given keys) or isolated (0).
start_fed_node() { # name, federated (0/1), trust list
  local n=$1 args=() trusted=${3:-}
  if [[ $2 == 1 ]]; then
    args=(--set federation.enabled=true --set "federation.urls=$nats_url"
          --set "federation.trusted=$trusted" --set federation.stream_max_bytes=1073741824)
  fi
  start_node "$n" "${config[@]}" "${args[@]}"
}

stat() { # url, python expression over d (the /v1/stats JSON)
  curl -s "$1/v1/stats" | /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print($2)"
}

wait_same_patterns() { # url url: until both hold the same number of patterns
  for _ in $(seq 600); do
    [[ $(stat "$1" 'd["patterns"]') == $(stat "$2" 'd["patterns"]') ]] && return 0
    sleep 0.2
  done
  echo "federation_learning.sh: nodes did not converge" >&2
  exit 1
}

start_fed_node a 1 "$cluster_trust"; a=$node_url
start_fed_node b 1 "$cluster_trust"; b=$node_url
half=$((learned / 2))
t0=$(date +%s.%N)
"$shoal" replay --url "$a" "${learn[@]}" --limit "$half" --window "$half" \
  --eval-seed "$seed" $world >"$dir/a.replay" &
ra=$!
"$shoal" replay --url "$b" "${learn[@]}" --offset "$half" --limit "$half" \
  --window "$half" --eval-seed "$seed" $world >"$dir/b.replay" &
rb=$!
wait $ra $rb
wait_same_patterns "$a" "$b"
echo "## Federation: learning benefit ($(date -u +%FT%TZ), $(nproc) cores, $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
echo
printf 'cluster: nodes a and b learned from %d prompts (%d each) in %.1f s; %s patterns\n' \
  "$learned" "$half" "$(echo "$(date +%s.%N) - $t0" | bc)" "$(stat "$a" 'd["patterns"]')"

for r in $(seq 1 "$repeats"); do
  t1=$(date +%s.%N)
  start_fed_node joiner$r 1 "$cluster_trust,${key[joiner$r]}"
  joiner=$node_url joiner_pid=$node_pid
  wait_same_patterns "$a" "$joiner"
  printf 'joiner %d: caught up from JetStream in %.1f s (%s stream messages)\n' "$r" \
    "$(echo "$(date +%s.%N) - $t1" | bc)" "$(stat "$joiner" 'd["federation"]["stream_seq"]')"
  start_fed_node isolated$r 0
  isolated=$node_url isolated_pid=$node_pid
  for n in joiner isolated; do
    url=$joiner
    [[ $n == isolated ]] && url=$isolated
    "$shoal" replay --url "$url" "${test[@]}" --limit "$limit" \
      --window "$window" --eval-seed "$seed" --curve-out "$dir/$n$r.csv" $world >"$dir/$n$r.replay"
  done
  kill -INT "$joiner_pid" "$isolated_pid"
  wait "$joiner_pid" "$isolated_pid" || true
done

/usr/bin/python3 - "$dir" "$repeats" "$window" <<'EOF'
import csv, sys
d, repeats, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def load(p):
    return [(int(r["requests"]), float(r["ratio"])) for r in csv.DictReader(open(p))]
runs = {n: [load(f"{d}/{n}{r}.csv") for r in range(1, repeats + 1)] for n in ("joiner", "isolated")}
def mean_curve(cs):
    return [(cs[0][t][0], sum(c[t][1] for c in cs) / len(cs)) for t in range(len(cs[0]))]
def first(curve, level=0.95):
    return next((n for n, r in curve if r >= level), None)
j, i = mean_curve(runs["joiner"]), mean_curve(runs["isolated"])
print()
print(f"mean learning curves over {repeats} runs on the same {len(j) * w} unseen prompts "
      f"(window {w}), % of the oracle's reward:")
print()
print("| requests | joiner (federated) | isolated |")
print("|---:|---:|---:|")
step = max(1, len(j) // 20)
for t in list(range(0, len(j), step)):
    print(f"| {j[t][0]} | {100 * j[t][1]:.1f}% | {100 * i[t][1]:.1f}% |")
print()
fj, fi = first(j), first(i)
print(f"mean curve first >= 95%: joiner {fj}, isolated {fi}" +
      (f" -> the joiner needs {fj / fi:.3f} of the isolated node's requests" if fj and fi else ""))
print("per run, first window >= 95%: joiner " + ", ".join(str(first(c)) for c in runs["joiner"]) +
      "; isolated " + ", ".join(str(first(c)) for c in runs["isolated"]))
def cumulative(curve):  # mean reward ratio over all requests so far (equal windows)
    out, total = [], 0.0
    for t, (n, r) in enumerate(curve):
        total += r
        out.append((n, total / (t + 1)))
    return out
cj, ci = first(cumulative(j)), first(cumulative(i))
print(f"cumulative mean (all requests so far) first >= 95%: joiner {cj}, isolated {ci}")
m = lambda c, a, b: 100 * sum(r for n, r in c if a < n <= b) / max(1, sum(1 for n, r in c if a < n <= b))
print(f"mean over requests 1-1000: joiner {m(j, 0, 1000):.1f}%, isolated {m(i, 0, 1000):.1f}%; "
      f"over the last 4000: joiner {m(j, len(j) * w - 4000, len(j) * w):.1f}%, "
      f"isolated {m(i, len(i) * w - 4000, len(i) * w):.1f}%")
EOF
