#!/usr/bin/env bash
# SONA learning loops, cost: Shoal's router v2 (shoal_router_v2_bench: the
# instant loop per request, background training on 1,000 trajectories with and
# without EWC++) next to the npm package @ruvector/sona (RuVector's SONA
# engine, native Node binding: beginTrajectory … endTrajectory per request,
# forceLearn() on 1,000 trajectories), in one run, as one table of median and
# p99, the ratio, and issue 7's targets (≤ 5 µs per request, ≤ 20 ms).
#
# Usage: bench/sona_peer.sh [--batch N] [--batches N] [--learn-runs N]
# Environment:
#   SHOAL_BUILD_DIR  build directory (default: build); configured with
#                    -DSHOAL_BUILD_BENCH=ON (and RelWithDebInfo if new), only
#                    shoal_router_v2_bench is built
#   JOBS             build parallelism (default 1)
#   REPS             Google Benchmark repetitions of our cases (default 20)
#   PEER_VERSION     @ruvector/sona version (default 0.1.8; MIT OR Apache-2.0)
#   XDG_CACHE_HOME   the package goes to ${XDG_CACHE_HOME:-~/.cache}/shoal/npm
set -euo pipefail
cd "$(dirname "$0")/.."
build=${SHOAL_BUILD_DIR:-build}
version=${PEER_VERSION:-0.1.8}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/shoal/npm
pkg_dir=$cache/node_modules/@ruvector/sona

# 1. the peer, from the npm registry into the cache (once per version); it
#    ships prebuilt .node binaries (linux x64 gnu among them)
mkdir -p "$cache"
if [[ $(node -p "try{require('$pkg_dir/package.json').version}catch(e){''}" 2>/dev/null) != "$version" ]]; then
  echo "installing @ruvector/sona@$version into $cache" >&2
  npm install --prefix "$cache" --no-audit --no-fund --loglevel=error "@ruvector/sona@$version" >&2
fi
if ! err=$(node -e "new (require('$pkg_dir').SonaEngine)(8)" 2>&1); then
  echo "@ruvector/sona@$version has no working Node binding for $(node -p 'process.platform+"-"+process.arch'):" >&2
  echo "$err" >&2
  exit 1
fi

# 2. ours
type=()
[[ -f $build/CMakeCache.txt ]] || type=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
cmake -S . -B "$build" -DSHOAL_BUILD_BENCH=ON "${type[@]}" >/dev/null
cmake --build "$build" -j"${JOBS:-1}" --target shoal_router_v2_bench >&2

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$build/bench/shoal_router_v2_bench" \
  --benchmark_filter='^router_v2/(instant_loop|instant_step|train_1000)' \
  --benchmark_repetitions="${REPS:-20}" --benchmark_report_aggregates_only=false \
  --benchmark_out="$tmp/ours.json" --benchmark_out_format=json >"$tmp/ours.txt" 2>&1 ||
  { cat "$tmp/ours.txt" >&2; exit 1; }

# 3. the peer, then the table
node bench/sona_peer.mjs --pkg "$pkg_dir" --ours "$tmp/ours.json" "$@"
