# Sourced by the federation benchmarks: starts a JetStream-enabled
# nats-server on a free loopback port with its store in $1 and small limits.
# Sets nats_url and nats_pid; the caller stops it (kill -INT "$nats_pid").
start_nats() {
  local dir=$1 port bin
  bin=$(command -v nats-server || echo /usr/sbin/nats-server)
  port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$dir"
  cat >"$dir/nats.conf" <<CONF
host: 127.0.0.1
port: $port
jetstream { store_dir: "$dir/js", max_memory_store: 64MB, max_file_store: 2GB }
CONF
  "$bin" -c "$dir/nats.conf" >"$dir/nats.log" 2>&1 &
  nats_pid=$!
  nats_url=nats://127.0.0.1:$port
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nats-server did not start; see $dir/nats.log" >&2
  return 1
}
