#!/usr/bin/env bash
# Checks the module graph of DESIGN.md ("Modules and their dependencies")
# against the code: every `#include "M/..."` in a module's sources and
# headers, every `shoal::M` its CMakeLists.txt links, and the third-party
# headers each module may see (STYLE.md rule 2). A module may use the
# modules its arrow lists and, through them, everything below (the
# transitive closure); nothing above or beside it.
#
# Known edges the restructuring (issue 19) has not removed yet are listed in
# ops/layering-debt.txt, one "file -> module-or-library" per line with the
# reason: they are reported, not failed. Anything else fails, and so does a
# debt entry the code no longer has (the list only shrinks).
#
# Test sources (*.test.cpp, *.fuzz.cpp, testing.hpp) are outside the graph:
# a module's tests may use what they need. tests/ and bench/ sit on top.
#
# Usage: ops/check-layering.sh [--quiet]
# Exit status: 0 when the code follows the graph, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
quiet=0
[[ ${1:-} == --quiet ]] && quiet=1

# -- the graph (DESIGN.md), bottom to top: module -> modules it may use -------
declare -A arrows=(
  [core]=""
  [proto]="core"
  [kernels]="core"
  [crypto]="core"
  [engine]="kernels core"
  [store]="proto core crypto"
  [router]="kernels store proto core"
  [learn]="kernels core"
  [actors]="proto core router learn engine store"
  [federation]="proto core crypto"
  [sim]="proto core engine"
  [node]="actors federation sim"
)
# Third-party headers (the include's first path component or file) and the
# only modules that may include them.
declare -A third_party=(
  [nats]="federation"
  [lmdb.h]="store"
  [hnswlib]="store"
  [httplib.h]="node sim"
  [CLI]="node"
  [sodium.h]="crypto"
  [zstd.h]="store"
  [capnp]="proto store federation"
  [toml++]="node"
)

# Transitive closure of the arrows.
declare -A allowed
closure() {
  local m=$1 seen=" $1 " queue=($1) x y
  while ((${#queue[@]})); do
    x=${queue[0]}
    queue=("${queue[@]:1}")
    for y in ${arrows[$x]}; do
      if [[ $seen != *" $y "* ]]; then
        seen+="$y "
        queue+=("$y")
      fi
    done
  done
  allowed[$m]=$seen
}
for m in "${!arrows[@]}"; do closure "$m"; done

# -- what the code does ----------------------------------------------------------
edges=$(mktemp)
trap 'rm -f "$edges"' EXIT
for m in "${!arrows[@]}"; do
  [[ -d $m ]] || continue
  while IFS= read -r f; do
    case $f in *.test.cpp | *.fuzz.cpp | */testing.hpp) continue ;; esac
    # Project includes: "module/file".
    grep -oE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"[a-z_]+/' "$f" 2>/dev/null \
      | sed -E 's/.*"([a-z_]+)\//\1/' | sort -u | while read -r to; do
        [[ -n ${arrows[$to]+x} ]] || continue
        [[ $to == "$m" ]] && continue
        echo "$f -> $to" >>"$edges.inc"
      done || true
    # Third-party includes: <name/...> or <name.h>.
    grep -oE '^[[:space:]]*#[[:space:]]*include[[:space:]]*<[^>]+>' "$f" 2>/dev/null \
      | sed -E 's/.*<([^>]+)>/\1/' | sed -E 's/\/.*//' | sort -u | while read -r lib; do
        [[ -n ${third_party[$lib]+x} ]] || continue
        echo "$f -> <$lib>" >>"$edges.lib"
      done || true
  done < <(find "$m" -maxdepth 1 -type f \( -name '*.hpp' -o -name '*.cpp' -o -name '*.inc' \) | sort)
  # Links: shoal::X in the module's CMakeLists.txt.
  if [[ -f $m/CMakeLists.txt ]]; then
    # (lines naming a test target, <module>_tests, are tests: outside the graph)
    grep -v '_tests' "$m/CMakeLists.txt" | grep -oE 'shoal::[a-z_]+' | sed 's/shoal:://' \
      | sort -u | while read -r to; do
      [[ -n ${arrows[$to]+x} ]] || continue
      [[ $to == "$m" ]] && continue
      echo "$m/CMakeLists.txt -> $to" >>"$edges.inc"
    done || true
  fi
done
touch "$edges.inc" "$edges.lib"
trap 'rm -f "$edges" "$edges.inc" "$edges.lib"' EXIT

debt=ops/layering-debt.txt
declare -A owed
if [[ -f $debt ]]; then
  while IFS= read -r line; do
    line=${line%%#*}
    line=$(echo "$line" | sed -E 's/[[:space:]]+$//')
    [[ -z $line ]] && continue
    owed["$line"]=0
  done <"$debt"
fi

fail=0 n_edges=0 n_owed=0
report() { # kind file target why
  local key="$2 -> $3"
  if [[ -n ${owed[$key]+x} ]]; then
    owed[$key]=1
    n_owed=$((n_owed + 1))
    ((quiet)) || echo "owed:      $key ($4)"
  else
    echo "forbidden: $key ($4)" >&2
    fail=1
  fi
}
while read -r f _ to; do
  n_edges=$((n_edges + 1))
  m=${f%%/*}
  [[ ${allowed[$m]} == *" $to "* ]] && continue
  report include "$f" "$to" "$m may use:${allowed[$m]% }"
done < <(sort -u "$edges.inc")
while read -r f _ lib; do
  n_edges=$((n_edges + 1))
  m=${f%%/*}
  name=${lib#<}
  name=${name%>}
  [[ " ${third_party[$name]} " == *" $m "* ]] && continue
  report library "$f" "$lib" "only ${third_party[$name]// /, } may include it"
done < <(sort -u "$edges.lib")
for key in "${!owed[@]}"; do
  if [[ ${owed[$key]} == 0 ]]; then
    echo "stale debt: '$key' is in $debt but not in the code: remove the line" >&2
    fail=1
  fi
done
if ((fail)); then
  echo "check-layering: the code breaks the module graph of DESIGN.md (see above)" >&2
  exit 1
fi
((quiet)) || echo "check-layering: $n_edges edges checked; all follow the graph but $n_owed owed ones listed in $debt"
