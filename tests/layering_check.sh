#!/usr/bin/env bash
# ops/check-layering.sh on a copy of the source tree: it passes on the tree
# as committed, and fails, naming the file and the edge, when a module
# includes a module above it, a third-party header it may not see, or when
# ops/layering-debt.txt lists an edge the code no longer has.
# Usage: tests/layering_check.sh SOURCE_DIR
set -euo pipefail
src=${1:?usage: layering_check.sh SOURCE_DIR}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fresh() {
  rm -rf "$tmp/tree"
  mkdir -p "$tmp/tree"
  (cd "$src" && tar --exclude=./build --exclude='./build-*' --exclude=./node_modules \
    --exclude=./data --exclude=./.git -cf - .) | tar -C "$tmp/tree" -xf -
}
expect_fail() { # what-is-added expected-message
  local out rc=0
  out=$("$tmp/tree/ops/check-layering.sh" --quiet 2>&1) || rc=$?
  if [[ $rc -ne 1 || $out != *"$2"* ]]; then
    echo "FAIL: with $1 the check answered rc=$rc:" >&2
    echo "$out" >&2
    exit 1
  fi
  echo "ok: $1 -> $2"
}

fresh
"$tmp/tree/ops/check-layering.sh" --quiet || { echo "FAIL: the committed tree breaks the graph" >&2; exit 1; }
echo "ok: the committed tree follows the graph"

echo '#include "node/gateway.hpp"' >>"$tmp/tree/engine/embedder.hpp"
expect_fail "engine including node" "forbidden: engine/embedder.hpp -> node"

fresh
echo '#include <lmdb.h>' >>"$tmp/tree/router/crdt.cpp"
expect_fail "router including LMDB" "forbidden: router/crdt.cpp -> <lmdb.h>"

fresh
echo 'core/error.cpp -> node  # an edge that is not there' >>"$tmp/tree/ops/layering-debt.txt"
expect_fail "a stale debt line" "stale debt: 'core/error.cpp -> node'"

fresh
echo 'target_link_libraries(shoal_engine PRIVATE shoal::actors)' >>"$tmp/tree/engine/CMakeLists.txt"
expect_fail "engine linking actors" "forbidden: engine/CMakeLists.txt -> actors"

# A module's test binary may link what its tests need.
fresh
echo 'target_link_libraries(engine_tests PRIVATE shoal::actors)' >>"$tmp/tree/engine/CMakeLists.txt"
"$tmp/tree/ops/check-layering.sh" --quiet || { echo "FAIL: a test target's link was refused" >&2; exit 1; }
echo "ok: a test target may link modules above"
