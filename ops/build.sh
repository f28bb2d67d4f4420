#!/usr/bin/env bash
# Configures and builds Shoal into BUILD_DIR (default: build), using ccache
# when it is installed. Usage: ops/build.sh [BUILD_DIR] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${1:-build}"
shift || true
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
fi
cmake --build "$build_dir" -j "$(nproc)" 2>&1 | grep -Ev '^\[ *[0-9]+%\]|^-- |Consolidate compiler generated dependencies|^make\[' || true
test "${PIPESTATUS[0]}" -eq 0
