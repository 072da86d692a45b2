#!/usr/bin/env bash
# Failover campaign: the cluster scenarios of issue "Cluster", re-run from outside with the
# project's own binaries and the load tool. Three release nodes behind HAProxy (RTS
# balanced by source address, devices round robin, both health-checked on /readyz),
# PostgreSQL reached through an HAProxy frontend that can be cut, and a private Redis the
# script may kill. For each scenario the load tool runs steady traffic both ways through
# the load balancer (1 VES, DEVICES devices, RATE frames/s) and, FAULT_AT seconds in, the
# script injects the fault:
#
#   kill9     kill -9 of node 3 (it comes back after OUTAGE seconds)
#   redis     Redis killed, restarted after OUTAGE seconds (it comes back empty)
#   postgres  PostgreSQL cut off from every node for OUTAGE seconds
#   drain     SIGTERM to node 2 (a graceful drain), restarted after OUTAGE seconds
#   sentinel  (REDIS_MODE=sentinel) the Redis primary killed; the sentinel promotes the
#             replica, and the old primary comes back as a replica after OUTAGE seconds
#
# REDIS_MODE=sentinel deploys Redis as a primary, a replica and a sentinel (the nodes find
# the primary through the sentinel) and runs the sentinel scenario by default.
# REDIS_MODE=cluster deploys a Redis Cluster of three primaries with a replica each and
# runs the shard scenario: the primary holding node 1's inbox killed, its replica takes
# the slots over, the old primary comes back as a replica.
#
# The table gives, per direction, the frames sent, acknowledged end to end, answered
# undeliverable and lost (neither, after the load tool's drain), the reconnects and the
# errors the tool saw. The load tool resends only what a relay CLOSE left unresolved (as
# protocol.md §7.1 asks of a client), never after a crash, so what a crash takes with it
# shows up as lost; a drain and a PostgreSQL outage must lose nothing (the script fails if
# they do). Writes results under bench/results/ and a section of docs/benchmarks.md.
#
# Usage: bench/cluster_failover.sh      (SCENARIOS="kill9 redis postgres drain")
#        REDIS_MODE=sentinel bench/cluster_failover.sh     (SCENARIOS="sentinel")
# Needs PostgreSQL (127.0.0.1:5432, trust auth as user postgres), redis-server and
# haproxy: scripts/test.sh installs and starts them on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
source bench/peers_lib.sh
source bench/cluster_lib.sh

REDIS_MODE=${REDIS_MODE:-standalone}
if [ "$REDIS_MODE" = sentinel ]; then
  SCENARIOS=${SCENARIOS:-"sentinel"}
elif [ "$REDIS_MODE" = cluster ]; then
  SCENARIOS=${SCENARIOS:-"shard"}
else
  SCENARIOS=${SCENARIOS:-"kill9 redis postgres drain"}
fi
# HAProxy holds two descriptors per connection (maxconn 9000 fits a 20 000 open-file limit).
DEVICES=${DEVICES:-1000}
RATE=${RATE:-2000}
DURATION=${DURATION:-40}
FAULT_AT=${FAULT_AT:-12}
OUTAGE=${OUTAGE:-8}
LB_HTTP=${LB_HTTP:-28443}
LB_DEVICE=${LB_DEVICE:-28444}
PG_PROXY=${PG_PROXY:-25432}
REDIS_PORT=${REDIS_PORT:-26379}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="bench/results/cluster_failover-$STAMP"
WORK=$(mktemp -d /tmp/noc-bench.XXXXXX)
HAPROXY_PID=""
REDIS_PID=""
declare -A NODE_PID
# Sentinel mode: redis-server processes by port (primary, replica, sentinel).
declare -A REDIS_PIDS

cleanup() {
  stop_nodes
  [ -n "$HAPROXY_PID" ] && kill "$HAPROXY_PID" 2>/dev/null || true
  [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null || true
  for pid in "${REDIS_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v haproxy >/dev/null || { echo "haproxy is not installed (apt-get install haproxy)" >&2; exit 2; }
cluster_prepare
bench_build
mkdir -p "$OUT"

start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "redis-server did not start" >&2
  exit 2
}
# redis_server PORT [ARGS...]: a redis-server on PORT (more arguments appended).
redis_server() {
  local port=$1
  shift
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" "$@" \
    >"$WORK/redis-$port.log" 2>&1 &
  REDIS_PIDS[$port]=$!
  for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "redis-server on port $port did not start" >&2
  exit 2
}
SENTINEL_PORT=$(( REDIS_PORT + 2 ))
sentinel_primary() {
  redis-cli -p "$SENTINEL_PORT" sentinel get-master-addr-by-name noc | sed -n 2p
}
start_sentinel_group() {
  redis_server "$REDIS_PORT"
  redis_server $(( REDIS_PORT + 1 )) --replicaof 127.0.0.1 "$REDIS_PORT"
  cat >"$WORK/sentinel.conf" <<CONF
port $SENTINEL_PORT
bind 127.0.0.1
dir $WORK
sentinel monitor noc 127.0.0.1 $REDIS_PORT 1
sentinel down-after-milliseconds noc 1000
sentinel failover-timeout noc 5000
CONF
  redis-server "$WORK/sentinel.conf" --sentinel >"$WORK/sentinel.log" 2>&1 &
  REDIS_PIDS[$SENTINEL_PORT]=$!
  for _ in $(seq 1 300); do
    redis-cli -p "$SENTINEL_PORT" sentinel replicas noc 2>/dev/null | grep -qx $(( REDIS_PORT + 1 )) && return 0
    sleep 0.1
  done
  echo "the sentinel did not find the replica" >&2
  exit 2
}
# Cluster mode: three primaries with a replica each on REDIS_PORT..REDIS_PORT+5 (their
# cluster bus on port + 10000), a primary declared failed after 1 s.
cluster_primary_of() { # KEY: the port of the live primary serving KEY's slot
  local slot via
  for via in "${!REDIS_PIDS[@]}"; do
    slot=$(redis-cli -p "$via" cluster keyslot "$1" 2>/dev/null) || continue
    redis-cli -p "$via" cluster nodes 2>/dev/null | awk -v slot="$slot" '
      $3 ~ /master/ && $3 !~ /fail/ { for (i = 9; i <= NF; i++) { n = split($i, r, "-"); lo = r[1]; hi = (n > 1) ? r[2] : r[1];
        if (slot + 0 >= lo + 0 && slot + 0 <= hi + 0) { split($2, a, "[:@]"); print a[2]; exit } } }'
    return 0
  done
}
start_cluster_group() {
  local ports=() p
  for p in $(seq "$REDIS_PORT" $(( REDIS_PORT + 5 ))); do
    redis_server "$p" --cluster-enabled yes --cluster-config-file "nodes-$p.conf" --cluster-node-timeout 1000
    ports+=("127.0.0.1:$p")
  done
  redis-cli --cluster create "${ports[@]}" --cluster-replicas 1 --cluster-yes >"$WORK/cluster-create.log" 2>&1 \
    || { cat "$WORK/cluster-create.log" >&2; exit 2; }
  for _ in $(seq 1 100); do
    redis-cli -p "$REDIS_PORT" cluster info | grep -q cluster_state:ok \
      && [ "$(redis-cli -p "$REDIS_PORT" cluster nodes | grep -c slave)" -eq 3 ] && return 0
    sleep 0.2
  done
  echo "the Redis Cluster did not form" >&2
  exit 2
}
# The nodes reach PostgreSQL through HAProxy (so it can be taken away) and use the
# private Redis (in sentinel mode: through the sentinel).
PG_URL="postgres://postgres@127.0.0.1:$PG_PROXY/$BENCH_PG_DB"
if [ "$REDIS_MODE" = sentinel ]; then
  start_sentinel_group
  REDIS_URL="redis://127.0.0.1:$SENTINEL_PORT/0"
  export NODE_REDIS_MODE=sentinel NODE_SENTINEL_MASTER=noc
elif [ "$REDIS_MODE" = cluster ]; then
  start_cluster_group
  REDIS_URL=$(seq -s, "$REDIS_PORT" $(( REDIS_PORT + 5 )) | sed -E 's/([0-9]+)/redis:\/\/127.0.0.1:\1/g')
  export NODE_REDIS_MODE=cluster
else
  start_redis
  REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
fi
NODE_PUBLIC_URL="https://127.0.0.1:$LB_HTTP"
NODE_PUBLIC_DEVICE_PORT=$LB_DEVICE
NODE_LEASE_SECONDS=3

# Node i: https 18443+10i, devices 18444+10i, admin 19090+i.
ports() { echo $(( 18443 + 10 * $1 )) $(( 18444 + 10 * $1 )) $(( 19090 + $1 )); }

{
  cat <<CFG
global
  maxconn 9000
  stats socket $WORK/haproxy.sock mode 600 level admin
defaults
  mode tcp
  timeout connect 2s
  timeout client 1h
  timeout server 1h
frontend rts
  bind 127.0.0.1:$LB_HTTP
  default_backend rts
frontend devices
  bind 127.0.0.1:$LB_DEVICE
  default_backend devices
frontend pg
  bind 127.0.0.1:$PG_PROXY
  default_backend pg
backend pg
  server db 127.0.0.1:5432
CFG
  for backend in rts devices; do
    balance=roundrobin
    [ "$backend" = rts ] && balance=source
    printf 'backend %s\n  balance %s\n  option httpchk GET /readyz\n' "$backend" "$balance"
    for i in 1 2 3; do
      read -r http device admin < <(ports "$i")
      port=$device
      [ "$backend" = rts ] && port=$http
      echo "  server n$i 127.0.0.1:$port check port $admin inter 500 fall 2 rise 2"
    done
  done
} >"$WORK/haproxy.cfg"
# HAProxy before the nodes: they reach PostgreSQL through it.
haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
sleep 0.5
kill -0 "$HAPROXY_PID" 2>/dev/null || { echo "haproxy did not start:" >&2; cat "$WORK/haproxy.log" >&2; exit 2; }
haproxy_cmd() { echo "$1" | socat - "UNIX-CONNECT:$WORK/haproxy.sock" >/dev/null; }

start_node() {
  local i=$1
  # shellcheck disable=SC2046
  node "n$i" $(ports "$i")
  NODE_PID[$i]=${PIDS[-1]}
}
for i in 1 2 3; do start_node "$i"; done
# Servers start as down in HAProxy (their first checks ran before the nodes): wait until
# every node is up in both backends.
lb_up() {
  echo "show servers state" | socat - "UNIX-CONNECT:$WORK/haproxy.sock" \
    | awk '$4 ~ /^n[0-9]$/ && $6 == 2 {n++} END {print n + 0}'
}
for _ in $(seq 1 50); do [ "$(lb_up)" -eq 6 ] && break; sleep 0.2; done
[ "$(lb_up)" -eq 6 ] || { echo "HAProxy does not see the nodes up" >&2; exit 2; }

# One load-tool run through the load balancer; setup (license, users, devices) happens in
# the first and is reused.
run_load() {
  "${NICE[@]}" env "${BENCH_NOC_ENV[@]}" "$LOADTEST" run --relay-url "https://127.0.0.1:$LB_HTTP" \
    --device-addr "127.0.0.1:$LB_DEVICE" --cacert "$WORK/tls/peer-cert.pem" --noc-bin "$NOC" \
    --data-dir "$WORK/n1/data" --noc-config "$WORK/n1/noc.toml" --credentials "$WORK/credentials.json" \
    --scenario loadtest/scenarios/many-to-one.toml --devices-per-ves "$DEVICES" \
    --rate-frames-per-second "$RATE" --duration-seconds "$DURATION" --ramp-up-seconds 5 --quiet "$@"
}

# The fault of a scenario, FAULT_AT seconds after traffic starts (after setup and ramp).
inject() {
  local scenario=$1
  case $scenario in
    kill9)
      kill -9 "${NODE_PID[3]}"
      echo "   kill -9 node 3 (pid ${NODE_PID[3]})"
      sleep "$OUTAGE"
      start_node 3
      ;;
    redis)
      kill -9 "$REDIS_PID"
      echo "   Redis killed"
      sleep "$OUTAGE"
      start_redis
      echo "   Redis restarted (empty)"
      ;;
    postgres)
      haproxy_cmd "set server pg/db state maint"
      haproxy_cmd "shutdown sessions server pg/db"
      echo "   PostgreSQL cut off"
      sleep "$OUTAGE"
      haproxy_cmd "set server pg/db state ready"
      echo "   PostgreSQL back"
      ;;
    sentinel)
      local primary replica started=$SECONDS
      primary=$(sentinel_primary)
      kill -9 "${REDIS_PIDS[$primary]}"
      echo "   Redis primary (port $primary) killed"
      while replica=$(sentinel_primary) && [ "$replica" = "$primary" ]; do
        [ $(( SECONDS - started )) -gt 30 ] && { echo "the sentinel promoted nothing" >&2; exit 2; }
        sleep 0.1
      done
      echo "   the sentinel promoted port $replica after $(( SECONDS - started )) s"
      sleep "$OUTAGE"
      redis_server "$primary" --replicaof 127.0.0.1 "$replica"
      echo "   the old primary is back as a replica"
      ;;
    shard)
      local primary replica started=$SECONDS
      primary=$(cluster_primary_of "noc:inbox:{bench-n1}")
      kill -9 "${REDIS_PIDS[$primary]}"
      unset "REDIS_PIDS[$primary]"
      echo "   Redis Cluster primary of node 1's inbox (port $primary) killed"
      while replica=$(cluster_primary_of "noc:inbox:{bench-n1}") && { [ -z "$replica" ] || [ "$replica" = "$primary" ]; }; do
        [ $(( SECONDS - started )) -gt 30 ] && { echo "no replica took over" >&2; exit 2; }
        sleep 0.1
      done
      echo "   port $replica took the slots over after $(( SECONDS - started )) s"
      sleep "$OUTAGE"
      redis_server "$primary" --cluster-enabled yes --cluster-config-file "nodes-$primary.conf" --cluster-node-timeout 1000
      echo "   the old primary is back as a replica"
      ;;
    drain)
      kill -TERM "${NODE_PID[2]}"
      echo "   SIGTERM to node 2 (pid ${NODE_PID[2]})"
      wait "${NODE_PID[2]}" 2>/dev/null || true
      sleep "$OUTAGE"
      start_node 2
      ;;
  esac
}

ROWS="$WORK/rows.md"
: >"$ROWS"

# The nodes' drop and bounce counters, before and after each scenario, in
# $OUT/<scenario>-counters.txt: where the frames and acknowledgements the tool counts as
# undeliverable or lost were refused or dropped (a node restarted by the scenario starts
# from zero).
counters() {
  local label=$1 file=$2 i admin
  for i in 1 2 3; do
    read -r _ _ admin < <(ports "$i")
    curl -s --max-time 2 "http://127.0.0.1:$admin/metrics" \
      | grep -E '^noc_(frames_dropped|frames_undeliverable|bus_messages_returned|bus_messages_sent|bus_messages_received|acks_relayed)_total' \
      | sed "s/^/$label n$i /" >>"$file" || echo "$label n$i unreachable" >>"$file"
  done
}

status=0
for scenario in $SCENARIOS; do
  echo "== $scenario: $DEVICES devices, $RATE frames/s for $DURATION s, fault at $FAULT_AT s"
  # The setup (first run only) has to finish before the fault clock starts: run it alone.
  if [ ! -f "$WORK/credentials.json" ]; then run_load --setup-only >"$OUT/setup.txt" 2>&1; fi
  : >"$OUT/$scenario-counters.txt"
  counters before "$OUT/$scenario-counters.txt"
  run_load --out "$OUT/$scenario.json" --html "$OUT/$scenario.html" >"$OUT/$scenario.txt" 2>&1 &
  load=$!
  sleep $(( 5 + FAULT_AT ))
  inject "$scenario"
  wait "$load" || { echo "load tool failed:" >&2; cat "$OUT/$scenario.txt" >&2; exit 2; }
  counters after "$OUT/$scenario-counters.txt"
  row=$(python3 - "$OUT/$scenario.json" "$scenario" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); scenario = sys.argv[2]
def cell(d):
    und = sum(d["undeliverable"].values())
    return f"{d['sent']} / {d['acked']} / {und} / {d['lost']} / {d.get('resent', 0)}"
up, down = r["device_to_ves"], r["ves_to_device"]
errors = ", ".join(f"{k}={v}" for k, v in sorted(r["errors"].items())) or "none"
lost = up["lost"] + down["lost"]
print(f"| {scenario} | {cell(up)} | {cell(down)} | {r['sessions']['reconnects']} | {errors} |\t{lost}")
PY
)
  lost=${row##*$'\t'}
  echo "${row%$'\t'*}" | tee -a "$ROWS"
  if [ "$lost" -gt 0 ] && { [ "$scenario" = drain ] || [ "$scenario" = postgres ]; }; then
    echo "!! $scenario lost $lost frames: a drain or a PostgreSQL outage must lose nothing" >&2
    status=1
  fi
done

SECTION="$WORK/section.md"
{
  if [ "$REDIS_MODE" = sentinel ]; then
    echo "## Failover campaign with Redis Sentinel (\`REDIS_MODE=sentinel bench/cluster_failover.sh\`)"
  elif [ "$REDIS_MODE" = cluster ]; then
    echo "## Failover campaign on Redis Cluster with replicas (\`REDIS_MODE=cluster bench/cluster_failover.sh\`)"
  else
    echo "## Failover campaign through a load balancer (\`bench/cluster_failover.sh\`)"
  fi
  echo
  echo "* Date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit \`$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\`$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "* Machine: $(bench_machine); three nodes, HAProxy, PostgreSQL, Redis and the load tool share it."
  echo "* Command: \`REDIS_MODE=$REDIS_MODE SCENARIOS=\"$SCENARIOS\" DEVICES=$DEVICES RATE=$RATE DURATION=$DURATION FAULT_AT=$FAULT_AT OUTAGE=$OUTAGE bench/cluster_failover.sh\`; results in \`$OUT/\`"
  echo "* 3 nodes behind HAProxy (RTS by source address, devices round robin, health check \`/readyz\` every 0.5 s), node lease 3 s; 1 VES and $DEVICES devices, 256-byte frames at $RATE frames/s, half each way, for $DURATION s; the fault $FAULT_AT s into the traffic, the outage $OUTAGE s. The load tool reconnects as a client should (reconnect hints, backoff) and resends the frames a relay CLOSE left unresolved (protocol §7.1; \"resent\" below), but never resends after a crash, so frames a crash takes with it count as lost; their real senders would resend them after their end-to-end timeout."
  echo
  echo "| scenario | device→VES sent / acked / undeliverable / lost / resent | VES→device sent / acked / undeliverable / lost / resent | reconnects | errors seen by the tool |"
  echo "|---|---|---|---|---|"
  cat "$ROWS"
} >"$SECTION"
section_name=cluster_failover
[ "$REDIS_MODE" = sentinel ] && section_name=cluster_failover_sentinel
[ "$REDIS_MODE" = cluster ] && section_name=cluster_failover_redis_cluster
bench_write_section "$section_name" "$SECTION"
cat "$SECTION"
exit $status
