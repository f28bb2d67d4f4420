#!/usr/bin/env bash
# Learning benefit of federation, with the replay evaluator on the Debian
# prompts: how many requests a fresh node needs to reach 95% of the oracle's
# reward when it joins a cluster that has already learned, next to a fresh
# isolated node, in one run (same prompts, same evaluator seed).
#   1. nodes a and b (federated over a real nats-server with JetStream) learn
#      from --learned prompts between them;
#   2. node "joiner" starts fresh, federated, and catches up from the stream;
#      node "isolated" starts fresh without federation;
#   3. both replay the same --limit prompts that a and b never saw.
# Prints both learning curves and the first window at >= 95% of the oracle.
# Usage: bench/federation_learning.sh [--build DIR] [--prompts FILE]
#          [--learned N] [--limit N] [--window N] [--eval-seed S]
set -euo pipefail
cd "$(dirname "$0")/.."
build=build prompts=prompts.jsonl learned=20000 limit=10000 window=250 seed=42
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --prompts) prompts=$2; shift 2 ;;
    --learned) learned=$2; shift 2 ;;
    --limit) limit=$2; shift 2 ;;
    --window) window=$2; shift 2 ;;
    --eval-seed) seed=$2; shift 2 ;;
    *) echo "federation_learning.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
shoal=$build/node/shoal
[[ -x $shoal ]] || { echo "federation_learning.sh: $shoal not built (ops/build.sh)" >&2; exit 1; }
[[ -s $prompts ]] || { echo "federation_learning.sh: $prompts missing (ops/make-prompts.sh)" >&2; exit 1; }

dir=$(mktemp -d /tmp/shoal-fed-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

source bench/nats.sh
start_nats "$dir/nats"
pids+=("$nats_pid")

trusted=""
for n in a b joiner; do
  trusted+="${trusted:+,}$("$shoal" key --set node.name=$n --set store.data_dir="$dir/$n")"
done

start_node() { # name, federated (0/1)
  local n=$1 args=()
  if [[ $2 == 1 ]]; then
    args=(--set federation.enabled=true --set "federation.urls=$nats_url"
          --set "federation.trusted=$trusted" --set federation.stream_max_bytes=1073741824)
  fi
  "$shoal" node --set node.name=$n --set http.port=0 --set "http.port_file=$dir/$n.port" \
    --set "store.data_dir=$dir/$n" --set node.log_level=warn "${args[@]}" >"$dir/$n.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do [[ -s $dir/$n.port ]] && break; sleep 0.05; done
  [[ -s $dir/$n.port ]] || { cat "$dir/$n.log" >&2; exit 1; }
  echo "http://$(cat "$dir/$n.port")"
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

a=$(start_node a 1)
b=$(start_node b 1)
half=$((learned / 2))
t0=$(date +%s.%N)
"$shoal" replay --url "$a" --prompts "$prompts" --limit "$half" --window "$half" \
  --eval-seed "$seed" >"$dir/a.replay" &
ra=$!
"$shoal" replay --url "$b" --prompts "$prompts" --offset "$half" --limit "$half" \
  --window "$half" --eval-seed "$seed" >"$dir/b.replay" &
rb=$!
wait $ra $rb
wait_same_patterns "$a" "$b"
echo "## Federation: learning benefit ($(date -u +%FT%TZ), $(nproc) cores, $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
echo
printf 'cluster: nodes a and b learned from %d prompts (%d each) in %.1f s; %s patterns\n' \
  "$learned" "$half" "$(echo "$(date +%s.%N) - $t0" | bc)" "$(stat "$a" 'd["patterns"]')"

t1=$(date +%s.%N)
joiner=$(start_node joiner 1)
wait_same_patterns "$a" "$joiner"
printf 'joiner: caught up from JetStream in %.1f s (%s stream messages)\n' \
  "$(echo "$(date +%s.%N) - $t1" | bc)" "$(stat "$joiner" 'd["federation"]["stream_seq"]')"
isolated=$(start_node isolated 0)

for n in joiner isolated; do
  url=$joiner
  [[ $n == isolated ]] && url=$isolated
  "$shoal" replay --url "$url" --prompts "$prompts" --offset "$learned" --limit "$limit" \
    --window "$window" --eval-seed "$seed" --curve-out "$dir/$n.csv" >"$dir/$n.replay"
done

/usr/bin/python3 - "$dir/joiner.csv" "$dir/isolated.csv" "$window" <<'EOF'
import csv, sys
def load(p):
    return [(int(r["requests"]), float(r["ratio"])) for r in csv.DictReader(open(p))]
j, i, w = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
def first(curve, level=0.95):
    return next((n for n, r in curve if r >= level), None)
def sustained(curve, level=0.95, k=4):
    # first window from which the mean of the next k windows stays >= level
    for s in range(len(curve) - k + 1):
        if all(sum(r for _, r in curve[t:t + k]) / k >= level for t in range(s, len(curve) - k + 1)):
            return curve[s][0]
    return None
print()
print(f"learning curves on the same {len(j) * w} unseen prompts (window {w}), % of the oracle's reward:")
print()
print("| requests | joiner (federated) | isolated |")
print("|---:|---:|---:|")
step = max(1, len(j) // 20)
for t in range(0, len(j), step):
    print(f"| {j[t][0]} | {100 * j[t][1]:.1f}% | {100 * i[t][1]:.1f}% |")
fj, fi = first(j), first(i)
sj, si = sustained(j), sustained(i)
print()
print(f"first window >= 95%: joiner {fj}, isolated {fi}" +
      (f" -> joiner needs {fj / fi:.3f} of the isolated node's requests" if fj and fi else ""))
print(f"from which the mean of 4 windows stays >= 95%: joiner {sj}, isolated {si}")
mean = lambda c, a, b: 100 * sum(r for n, r in c if a < n <= b) / max(1, sum(1 for n, r in c if a < n <= b))
print(f"mean over the first 1000 requests: joiner {mean(j, 0, 1000):.1f}%, isolated {mean(i, 0, 1000):.1f}%")
EOF
