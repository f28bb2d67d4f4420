#!/usr/bin/env bash
# A local Shoal cluster on loopback: a 3-server NATS cluster with JetStream
# (configs/nats/cluster.conf) and N federated `shoal node`s
# (configs/node.toml + per-node --set), each node trusting every other.
#
# Usage: ops/cluster.sh up N      start (or extend to) N nodes; idempotent
#        ops/cluster.sh status    each node's name, HTTP address and state; NATS URLs
#        ops/cluster.sh down      stop nodes (gracefully) and servers; keeps state
#        ops/cluster.sh clean     down, then delete the state directory
# Environment (not SHOAL_*: those are config keys of the node): CLUSTER_DIR (state; default ./cluster), CLUSTER_NATS_PORT
# (first NATS client port; default 4222, then +1, +2), CLUSTER_HTTP_PORT
# (first node HTTP port; default 8081), CLUSTER_SHOAL_BIN (the shoal binary; when set,
# `up` neither installs packages nor builds).
# Ports used: NATS clients P..P+2, routes P+2000..P+2002, monitoring P+4000..P+4002.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
dir=${CLUSTER_DIR:-$root/cluster}
nats_port=${CLUSTER_NATS_PORT:-4222}
http_port=${CLUSTER_HTTP_PORT:-8081}
shoal=${CLUSTER_SHOAL_BIN:-$root/build/node/shoal}
nats_server=$(command -v nats-server || echo /usr/sbin/nats-server)

usage() { sed -n '6,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

nats_urls() {
  local urls="" i
  for i in 0 1 2; do urls+="${urls:+,}nats://127.0.0.1:$((nats_port + i))"; done
  echo "$urls"
}

wait_port() { # port, what, log (30 s: a node loads its tiers' models first)
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "cluster: $2 did not come up on port $1; see $3" >&2
  return 1
}

start_nats() {
  local i
  for i in 0 1 2; do
    local d=$dir/nats/s$i
    mkdir -p "$d"
    alive "$d/pid" && continue
    SHOAL_NATS_NAME=s$i SHOAL_NATS_PORT=$((nats_port + i)) \
    SHOAL_NATS_HTTP=127.0.0.1:$((nats_port + 4000 + i)) \
    SHOAL_NATS_CLUSTER_PORT=$((nats_port + 2000 + i)) SHOAL_NATS_STORE=$d/js \
    SHOAL_NATS_ROUTE_0=nats-route://127.0.0.1:$((nats_port + 2000)) \
    SHOAL_NATS_ROUTE_1=nats-route://127.0.0.1:$((nats_port + 2001)) \
    SHOAL_NATS_ROUTE_2=nats-route://127.0.0.1:$((nats_port + 2002)) \
      "$nats_server" -c "$root/configs/nats/cluster.conf" >>"$d/nats.log" 2>&1 &
    echo $! >"$d/pid"
  done
  for i in 0 1 2; do wait_port $((nats_port + i)) "nats-server s$i" "$dir/nats/s$i/nats.log"; done
}

trust_list() { # n
  local list="" i
  for i in $(seq 1 "$1"); do
    local d=$dir/nodes/node-$i
    mkdir -p "$d"
    list+="${list:+,}$("$shoal" key --config "$root/configs/node.toml" \
      --set node.name=node-$i --set store.data_dir="$d")"
  done
  echo "$list"
}

up() {
  local n=$1
  [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] || usage
  if [ -z "${CLUSTER_SHOAL_BIN:-}" ]; then
    ops/install-deps.sh
    ops/build.sh build >/dev/null
  fi
  start_nats
  local trusted urls i
  trusted=$(trust_list "$n")
  for i in $(seq 1 "$n"); do
    local d=$dir/nodes/node-$i port=$((http_port + i - 1))
    alive "$d/pid" && continue
    # Each node prefers its own server, then fails over to the others.
    urls="nats://127.0.0.1:$((nats_port + (i - 1) % 3))"
    urls+=",$(nats_urls)"
    "$shoal" node --config "$root/configs/node.toml" \
      --set node.name=node-$i --set store.data_dir="$d" \
      --set http.port=$port --set http.port_file="$d/address" \
      --set federation.enabled=true --set federation.cluster=local \
      --set federation.urls="$urls" --set federation.trusted="$trusted" \
      --set federation.stream_replicas=3 --set federation.stream_max_bytes=1073741824 \
      >>"$d/node.log" 2>&1 &
    echo $! >"$d/pid"
  done
  for i in $(seq 1 "$n"); do
    wait_port $((http_port + i - 1)) "node-$i" "$dir/nodes/node-$i/node.log"
  done
  status
}

status() {
  echo "NATS: $(nats_urls)  (monitoring: http://127.0.0.1:$((nats_port + 4000))/jsz)"
  local i
  for i in 0 1 2; do
    local d=$dir/nats/s$i state=stopped
    alive "$d/pid" && state=running
    printf '  s%d  nats://127.0.0.1:%d  %s\n' "$i" $((nats_port + i)) "$state"
  done
  [ -d "$dir/nodes" ] || return 0
  printf '%-8s %-22s %-8s %-10s %-9s %s\n' node http state federation patterns server
  for d in "$dir"/nodes/node-*; do
    local name state=stopped addr="-" fed="-" patterns="-" server="-"
    name=$(basename "$d")
    [ -f "$d/address" ] && addr=$(cat "$d/address")
    if alive "$d/pid"; then
      state=running
      local s
      if s=$(curl -sf --max-time 2 "http://$addr/v1/stats"); then
        read -r fed patterns server < <(echo "$s" | /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin); f = d["federation"]
print("connected" if f.get("connected") else "offline", d["patterns"], f.get("server") or "-")')
      else
        state=unhealthy
      fi
    fi
    printf '%-8s %-22s %-8s %-10s %-9s %s\n' "$name" "$addr" "$state" "$fed" "$patterns" "$server"
  done
}

down() {
  local f
  for f in "$dir"/nodes/*/pid; do
    [ -f "$f" ] || continue
    alive "$f" && kill -INT "$(cat "$f")"
  done
  for f in "$dir"/nodes/*/pid; do
    [ -f "$f" ] || continue
    for _ in $(seq 1 300); do alive "$f" || break; sleep 0.1; done
    rm -f "$f"
  done
  for f in "$dir"/nats/*/pid; do
    [ -f "$f" ] || continue
    alive "$f" && kill -TERM "$(cat "$f")"
    for _ in $(seq 1 100); do alive "$f" || break; sleep 0.1; done
    rm -f "$f"
  done
  echo "cluster: stopped (state kept in $dir)"
}

case "${1:-}" in
  up) [ $# -eq 2 ] || usage; up "$2" ;;
  status) status ;;
  down) down ;;
  clean) down; rm -rf "$dir"; echo "cluster: removed $dir" ;;
  *) usage ;;
esac
