# Local clusters for the bench scripts: release nodes on loopback sharing PostgreSQL
# (accounts) and Redis (session registry and the bus between nodes). Source it after
# bench/lib.sh and bench/peers_lib.sh; set WORK first. Uses the database BENCH_PG_DB
# (dropped and created again) and Redis database BENCH_REDIS_DB (flushed).

BENCH_PG_DB=${BENCH_PG_DB:-noc_bench}
BENCH_REDIS_DB=${BENCH_REDIS_DB:-7}
PG_URL="postgres://postgres@127.0.0.1:5432/$BENCH_PG_DB"
REDIS_URL="redis://127.0.0.1:6379/$BENCH_REDIS_DB"
# PIDs of the running nodes, in start order.
PIDS=()

stop_nodes() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}

# Checks PostgreSQL and Redis, empties the bench database and Redis database, and makes
# one certificate for every node (localhost, 127.0.0.1) under $WORK/tls.
cluster_prepare() {
  pg_isready -q -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not running on 127.0.0.1:5432" >&2; exit 2; }
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { echo "Redis is not running on 127.0.0.1:6379" >&2; exit 2; }
  psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $BENCH_PG_DB" \
    -c "CREATE DATABASE $BENCH_PG_DB" >/dev/null
  redis-cli -h 127.0.0.1 -p 6379 -n "$BENCH_REDIS_DB" flushdb >/dev/null
  peers_cert "$WORK/tls"
}

# How the nodes' bus carries frames between them: CLUSTER_LINKS=1 gives every node a
# direct link listener (cluster.link_listen, on its admin port + 1000) and the shared
# key, so frames skip Redis; 0 (the default) leaves them on Redis pub/sub.
CLUSTER_LINKS=${CLUSTER_LINKS:-0}
cluster_bus() {
  if [ "$CLUSTER_LINKS" = 1 ]; then echo "direct links between nodes"; else echo "Redis pub/sub"; fi
}

# node NAME HTTP DEVICE ADMIN: writes the node's configuration under $WORK/NAME and
# starts it; returns once it is ready. Behind a load balancer, NODE_PUBLIC_URL and
# NODE_PUBLIC_DEVICE_PORT name its addresses (what activation tells devices).
node() {
  local name=$1 http=$2 device=$3 admin=$4 dir="$WORK/$1" links=""
  mkdir -p "$dir"
  if [ "$CLUSTER_LINKS" = 1 ]; then
    links="link_listen = \"127.0.0.1:$((admin + 1000))\"
link_key = \"bench-link-key-0123456789abcdef-0123456789\""
  fi
  cat >"$dir/noc.toml" <<TOML
data_dir = "$dir/data"
node_id = "bench-$name"
postgres_url = "$PG_URL"
redis_url = "$REDIS_URL"

[listen]
http = "127.0.0.1:$http"
device = "127.0.0.1:$device"
admin = "127.0.0.1:$admin"
console = "127.0.0.1:0"

[public]
url = "${NODE_PUBLIC_URL:-https://127.0.0.1:$http}"
device_host = "127.0.0.1"
device_port = ${NODE_PUBLIC_DEVICE_PORT:-$device}

[cluster]
node_lease_seconds = ${NODE_LEASE_SECONDS:-10}
redis_mode = "${NODE_REDIS_MODE:-standalone}"
redis_sentinel_master = "${NODE_SENTINEL_MASTER:-mymaster}"
$links

[tls]
cert_path = "$WORK/tls/peer-cert.pem"
key_path = "$WORK/tls/peer-key.pem"

[accounts]
argon2_memory_kib = 1024
argon2_iterations = 1
max_concurrent_hashes = 8

[shutdown]
drain_seconds = 1
grace_seconds = 1
TOML
  ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  RUST_LOG=${RELAY_LOG:-warn} "${NICE[@]}" "$NOC" serve --config "$dir/noc.toml" >"$dir/relay.log" 2>&1 &
  PIDS+=($!)
  bench_wait_ready "$admin" "$dir/relay.log" \
    "node $name pid $! ready (https 127.0.0.1:$http, devices 127.0.0.1:$device)"
}

# The two nodes of bench/cross_node.sh and bench/profile_cross_node.sh: node A (the VES's;
# https 18443, devices 18444, admin 19090) and node B (https 18453, devices 18454, admin
# 19091); their PIDs, comma-separated, in NODE_PIDS.
two_nodes() {
  node a 18443 18444 19090
  node b 18453 18454 19091
  NODE_PIDS=$(IFS=,; echo "${PIDS[*]}")
}

# many_to_one RATE DEVICE_ADDR [load tool options...]: one run of the many-to-one shape
# on two_nodes at RATE frames/s for DURATION seconds, the VES on node A and its DEVICES
# devices on DEVICE_ADDR.
many_to_one() {
  local rate=$1 addr=$2
  shift 2
  "${NICE[@]}" "$LOADTEST" run --relay-url https://127.0.0.1:18443 --cacert "$WORK/tls/peer-cert.pem" \
    --device-addr "$addr" --noc-bin "$NOC" --data-dir "$WORK/a/data" --noc-config "$WORK/a/noc.toml" \
    --credentials "$WORK/credentials.json" --relay-pid "$NODE_PIDS" \
    --relay-metrics-url "http://127.0.0.1:19090/metrics,http://127.0.0.1:19091/metrics" --quiet \
    --scenario loadtest/scenarios/many-to-one.toml --devices-per-ves "$DEVICES" \
    --rate-frames-per-second "$rate" --duration-seconds "$DURATION" "$@"
}
