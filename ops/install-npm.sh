#!/usr/bin/env bash
# Installs the npm packages the integration tests use (tests/npm/package.json,
# pinned by its package-lock.json; today the official `openai` client) into
# the cache with `npm ci`, outside the source tree.
# Idempotent: prints nothing and exits 0 when the installed lock matches.
#
# Usage: ops/install-npm.sh
# Environment:
#   SHOAL_NPM_DIR   where the packages go
#                   (default: ${XDG_CACHE_HOME:-~/.cache}/shoal/test-npm)
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${SHOAL_NPM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/test-npm}
if [ $# -gt 0 ]; then
  echo "install-npm: takes no arguments (it installs tests/npm/package.json)" >&2
  exit 2
fi
if ! command -v npm >/dev/null; then
  echo "install-npm: npm is not installed (ops/install-deps.sh installs it)" >&2
  exit 1
fi

# The copy of the lock beside node_modules is the one it was installed from.
if ! cmp -s tests/npm/package-lock.json "$dir/package-lock.json" || [ ! -d "$dir/node_modules" ]; then
  echo "install-npm: installing tests/npm/package.json into $dir" >&2
  mkdir -p "$dir"
  cp tests/npm/package.json tests/npm/package-lock.json "$dir/"
  npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >&2
fi
