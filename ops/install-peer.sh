#!/usr/bin/env bash
# Installs the llama.cpp peer from the npm registry alone (no other network):
#   1. node-llama-cpp + its prebuilt linux-x64 binaries (llama.cpp v0.5.0,
#      commit de3ff81) into $dir/node_modules — the logits peer;
#   2. llama.cpp's source, cloned from the git bundle that package carries,
#      into $dir/llama.cpp — for llama-bench / llama-quantize builds and for
#      the tokenizer test vectors models/ggml-vocab-*.gguf (+ .inp / .out).
# Idempotent: prints nothing and exits 0 when both are already there; progress
# goes to stderr. node-llama-cpp's postinstall (which probes or builds
# binaries) is skipped: callers use getLlama({build: "never"}).
#
# Usage: ops/install-peer.sh [--print-dir]
#   --print-dir   after installing, print the peer directory on stdout
# Environment:
#   SHOAL_PEER_DIR  the peer directory
#                   (default: ${XDG_CACHE_HOME:-~/.cache}/shoal/peer)
#   PEER_VERSION    node-llama-cpp version (default 3.22.1)
set -euo pipefail

version=${PEER_VERSION:-3.22.1}
dir=${SHOAL_PEER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/peer}
print_dir=0
for arg in "$@"; do
  case $arg in
    --print-dir) print_dir=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-peer: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

pkg=$dir/node_modules/node-llama-cpp
bin=$dir/node_modules/@node-llama-cpp/linux-x64
src=$dir/llama.cpp
bundle=$pkg/llama/gitRelease.bundle

installed_version() { # package dir -> its version, or nothing
  [ -f "$1/package.json" ] && node -p "require('$1/package.json').version" 2>/dev/null || true
}

# 1. the npm packages
if [[ $(installed_version "$pkg") != "$version" || $(installed_version "$bin") != "$version" ]]; then
  echo "install-peer: installing node-llama-cpp@$version into $dir" >&2
  mkdir -p "$dir"
  NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --prefix "$dir" --omit=optional \
    --no-audit --no-fund --loglevel=error \
    "node-llama-cpp@$version" "@node-llama-cpp/linux-x64@$version" >&2
fi
if [ ! -f "$bundle" ]; then
  echo "install-peer: $bundle is missing (node-llama-cpp@$version without its llama.cpp bundle?)" >&2
  exit 1
fi

# 2. llama.cpp's source at the bundle's commit
want=$(git bundle list-heads "$bundle" | awk '$2 == "HEAD" {print $1; exit}')
have=$(git -C "$src" rev-parse -q --verify HEAD 2>/dev/null || true)
if [[ -z $want ]]; then
  echo "install-peer: $bundle has no HEAD" >&2
  exit 1
fi
if [[ $have != "$want" ]]; then
  echo "install-peer: checking out llama.cpp ${want:0:7} into $src" >&2
  rm -rf "$src.tmp"
  git -c advice.detachedHead=false clone -q "$bundle" "$src.tmp"
  git -C "$src.tmp" -c advice.detachedHead=false checkout -q "$want"
  rm -rf "$src"
  mv "$src.tmp" "$src"
fi

if [ "$print_dir" -eq 1 ]; then
  echo "$dir"
fi
