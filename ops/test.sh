#!/usr/bin/env bash
# Sets up, builds and runs every test (unit and integration) with CTest.
# Usage: ops/test.sh [ctest args...]   e.g. ops/test.sh -L unit
set -euo pipefail
cd "$(dirname "$0")/.."
ops/check-layering.sh --quiet  # the module graph of DESIGN.md, before the long build
ops/install-deps.sh --train  # with PyTorch and SentencePiece: tests/models/reference.py
ops/install-peer.sh
ops/install-npm.sh
ops/build.sh build
cd build
ctest --output-on-failure -j "$(nproc)" --timeout 300 "$@"
