#!/usr/bin/env bash
# Quick start: sets up and builds Shoal, starts `shoal node` on the embedded
# default (configs/node.toml: no NATS, LMDB in ./data, HTTP on 127.0.0.1:8080),
# replays Debian's package descriptions against it with evaluator feedback,
# prints the learning curve, and leaves the node serving (Ctrl-C stops it
# gracefully). Run it again: the node remembers what it learned.
# Usage: ops/run.sh [--limit N] [--detach]
set -euo pipefail
cd "$(dirname "$0")/.."
limit=20000
detach=0
while [ $# -gt 0 ]; do
  case "$1" in
    --limit) limit="$2"; shift 2 ;;
    --detach) detach=1; shift ;;
    *) echo "usage: ops/run.sh [--limit N] [--detach]" >&2; exit 2 ;;
  esac
done

ops/install-deps.sh
ops/build.sh build
[ -s prompts.jsonl ] || ops/make-prompts.sh prompts.jsonl

url=http://127.0.0.1:8080
if curl -sf "$url/healthz" >/dev/null 2>&1; then
  echo "run: something already answers on $url; stop it first" >&2
  exit 1
fi
mkdir -p data
# Its log (stdout and stderr) goes to data/node.log, so a detached node holds
# none of the caller's output streams open.
build/node/shoal node --config configs/node.toml >>data/node.log 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -sf "$url/healthz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { echo "run: the node exited; see data/node.log" >&2; exit 1; }
  sleep 0.1
done
build/node/shoal replay --url "$url" --prompts prompts.jsonl --limit "$limit" --window 1000 \
  --curve-out data/last-curve.csv
echo
echo "node serving on $url (pid $pid; log in data/node.log)."
echo "try: curl -s $url/v1/stats | head -c 400; curl -s $url/metrics | head"
if [ "$detach" -eq 1 ]; then
  echo "stop it with: kill -INT $pid"
  exit 0
fi
echo "Ctrl-C stops it."
trap 'kill -INT "$pid" 2>/dev/null || true' INT TERM
wait "$pid" || true
wait "$pid" 2>/dev/null || true
