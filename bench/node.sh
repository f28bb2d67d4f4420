# Sourced by the benchmarks that run nodes (after $build and $prompts are
# set; $0's name prefixes errors):
#   - checks that $build/node/shoal is built and $prompts exists, sets shoal;
#   - makes the temporary directory $dir and the pids array; on exit every
#     process in pids gets SIGINT and is waited for, and $dir is removed.
bench_name=$(basename "$0")
shoal=$build/node/shoal
[[ -x $shoal ]] || { echo "$bench_name: $shoal not built (ops/build.sh)" >&2; exit 1; }
[[ -s $prompts ]] || { echo "$bench_name: $prompts missing (ops/make-prompts.sh)" >&2; exit 1; }
dir=$(mktemp -d "/tmp/shoal-${bench_name%.sh}.XXXXXX")
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap stop_all EXIT

# start_node NAME [ARGS...]: starts `$shoal node` named $1
# with its data in $dir/$1, a free port (written to $dir/$1.port), warnings
# only in $dir/$1.log, configs/demo.toml unless a --config is among the
# further arguments (e.g. --set key=value).
# Sets node_url and node_pid and appends the pid to the caller's pids array
# (not in a subshell, so that stop_all knows every pid).
start_node() {
  local n=$1
  shift
  # The random-weight demo tiers unless the caller brings a config.
  [[ " $* " == *" --config "* ]] || set -- --config configs/demo.toml "$@"
  "$shoal" node --set node.name="$n" --set http.port=0 --set "http.port_file=$dir/$n.port" \
    --set "store.data_dir=$dir/$n" --set node.log_level=warn "$@" >"$dir/$n.log" 2>&1 &
  node_pid=$!
  pids+=("$node_pid")
  for _ in $(seq 200); do [[ -s $dir/$n.port ]] && break; sleep 0.05; done
  [[ -s $dir/$n.port ]] || { cat "$dir/$n.log" >&2; exit 1; }
  node_url="http://$(cat "$dir/$n.port")"
}
