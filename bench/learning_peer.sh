#!/usr/bin/env bash
# MicroLoRA d=256 rank 2, forward and update: Shoal's kernels (every variant,
# shoal_kernels_bench --benchmark_filter=MicroLoRA) next to the npm package
# @ruvector/learning-wasm (WasmMicroLoRA, zero-copy API), in one run, as one
# table of median and p99 per-call times and the ratio.
#
# Usage: bench/learning_peer.sh [--batches N] [--batch N]
# Environment:
#   SHOAL_BUILD_DIR  build directory (default: build); configured with
#                    -DSHOAL_BUILD_BENCH=ON, only shoal_kernels_bench is built
#   JOBS             build parallelism (default 1)
#   PEER_VERSION     @ruvector/learning-wasm version (default 0.1.29)
#   XDG_CACHE_HOME   the package goes to ${XDG_CACHE_HOME:-~/.cache}/shoal/npm
set -euo pipefail
cd "$(dirname "$0")/.."
build=${SHOAL_BUILD_DIR:-build}
version=${PEER_VERSION:-0.1.29}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/shoal/npm
pkg_dir=$cache/node_modules/@ruvector/learning-wasm

# 1. the peer, from the npm registry into the cache (once per version)
mkdir -p "$cache"
if [[ $(node -p "try{require('$pkg_dir/package.json').version}catch(e){''}" 2>/dev/null) != "$version" ]]; then
  echo "installing @ruvector/learning-wasm@$version into $cache" >&2
  npm install --prefix "$cache" --no-audit --no-fund --loglevel=error \
    "@ruvector/learning-wasm@$version" >&2
fi

# 2. ours
cmake -S . -B "$build" -DSHOAL_BUILD_BENCH=ON >/dev/null
cmake --build "$build" -j"${JOBS:-1}" --target shoal_kernels_bench >&2

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$build/bench/shoal_kernels_bench" --benchmark_filter='MicroLoRA' \
  --benchmark_out="$tmp/ours.json" --benchmark_out_format=json >"$tmp/ours.txt" 2>&1

# 3. the peer, then the table
node bench/learning_peer.mjs --pkg "$pkg_dir" --ours "$tmp/ours.json" "$@"
