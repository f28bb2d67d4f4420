#!/usr/bin/env bash
# Installs every Debian package that Shoal's build, tests and benchmarks need.
# Idempotent: when everything is already installed it prints nothing and exits 0.
# Usage: ops/install-deps.sh [--train]  (as root, or with sudo available)
#   --train  also what training the tier models (ops/train-tiers.sh) and
#            checking them (tests/models/reference.py) need:
#            Debian's PyTorch (CPU), SentencePiece and OpenBLAS. Without
#            libopenblas0-pthread, PyTorch 1.13 runs on the generic reference
#            BLAS, 2.5-7x slower (installing it switches the libblas.so.3
#            alternative to OpenBLAS).
set -euo pipefail

packages=(
  build-essential cmake pkg-config ccache git
  libcaf-dev libnats-dev nats-server capnproto libcapnp-dev libhnswlib-dev
  liblmdb-dev lmdb-utils doctest-dev
  libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev libcpp-httplib-dev
  libtomlplusplus-dev libsodium-dev libbenchmark-dev libxxhash-dev libzstd-dev libicu-dev
  curl wrk openssl clang
)
if [[ ${1:-} == --train ]]; then
  packages+=(python3-torch python3-sentencepiece python3-numpy libopenblas0-pthread)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# Node.js with npm runs the peers and test clients (tests/npm, ops/install-peer.sh).
# A machine may carry its own Node.js build with npm inside; only when npm is
# missing are Debian's nodejs and npm added.
if ! command -v npm >/dev/null; then missing+=(nodejs npm); fi
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
