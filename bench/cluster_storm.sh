#!/usr/bin/env bash
# Reconnect storm on a local cluster: DEVICES idle authenticated TLS devices spread over
# NODES release nodes (sharing PostgreSQL and Redis, as in production) all lose their
# sessions at the same moment and reconnect straight away, without backoff. One load-tool
# worker per node, each with its own VES and devices, started together with
# `--start-at-unix-ms` so that their storms coincide; `loadtest merge` times the
# campaign's storm from the first drop to the last re-authentication. Reports that time,
# the reconnect rate, and reconnects per CPU-second of all nodes together.
#
# Why a cluster: one process can hold only as many sessions as its open-file limit allows
# (20 000 on the machine these figures come from, and it cannot be raised there), so a
# 50 000-device storm on one machine needs several processes on both sides. Devices
# connect straight to their node's device port (no load balancer: one in front would need
# two descriptors per session). Every reconnection also re-registers the session in Redis.
#
# IDLE=1 holds the sessions without a storm instead (HOLD=120 s by default, two default
# heartbeat intervals) and reports the nodes' memory per session and their CPU while
# idle: the way to put 100 000 idle sessions on one machine whose processes may hold
# 20 000 each (DEVICES=100000 NODES=6 IDLE=1). With PROFILE=1 it also samples the nodes
# with perf for a third of the hold from its middle (self.txt, children.txt in the results;
# the sampling adds a little to the CPU figure of that run); without it, threads.txt has
# each node thread's CPU and wake-ups over the hold's second half, and redis-threads.txt
# those of Redis (127.0.0.1:6379, shared by the nodes) over the same window. The devices
# answer the relay's heartbeats, as the device client does; DEVICE_ANSWERS_HEARTBEATS=false
# makes each keep its own phase instead.
#
# Usage: bench/cluster_storm.sh       (DEVICES=50000 NODES=3 by default)
# Needs PostgreSQL (127.0.0.1:5432, trust auth as user postgres) and Redis
# (127.0.0.1:6379): scripts/test.sh starts both on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
source bench/peers_lib.sh
source bench/cluster_lib.sh

DEVICES=${DEVICES:-50000}
NODES=${NODES:-3}
IDLE=${IDLE:-}
STORM_AT=${STORM_AT:-5}
HOLD=${HOLD:-60}
[ -n "$IDLE" ] && HOLD=${HOLD_IDLE:-120}
MODE=storm
[ -n "$IDLE" ] && MODE=idle
# Whether the devices answer the relay's heartbeats (docs/protocol.md §6.4.2); false for
# devices that keep their own phase.
ANSWER=${DEVICE_ANSWERS_HEARTBEATS:-true}
# Handshakes each worker keeps in flight at once.
CONCURRENCY=${CONCURRENCY:-2048}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="bench/results/cluster_storm-$STAMP"
WORK=$(mktemp -d /tmp/noc-bench.XXXXXX)
trap 'stop_nodes; rm -rf "$WORK"' EXIT

PER_NODE=$(( (DEVICES + NODES - 1) / NODES ))
bench_raise_fd_limit
bench_fits_fd_limit "$PER_NODE" || { echo "use more NODES: $PER_NODE sessions per process do not fit" >&2; exit 2; }
cluster_prepare
bench_build
mkdir -p "$OUT"

start_all_nodes() {
  METRICS=()
  for i in $(seq 0 $(( NODES - 1 ))); do
    node "n$i" $(( 18443 + 10 * i )) $(( 18444 + 10 * i )) $(( 19090 + i ))
    METRICS+=("http://127.0.0.1:$(( 19090 + i ))/metrics")
  done
  NODE_PIDS=$(IFS=,; echo "${PIDS[*]}")
  METRICS_URLS=$(IFS=,; echo "${METRICS[*]}")
}
start_all_nodes

# worker I [loadtest flags]: node I's own VES and devices, from its own source addresses.
worker() {
  local i=$1
  shift
  local n=$PER_NODE
  [ "$i" -eq $(( NODES - 1 )) ] && n=$(( DEVICES - PER_NODE * (NODES - 1) ))
  "${NICE[@]}" "$LOADTEST" run --relay-url "https://127.0.0.1:$(( 18443 + 10 * i ))" \
    --cacert "$WORK/tls/peer-cert.pem" --noc-bin "$NOC" --data-dir "$WORK/n$i/data" \
    --noc-config "$WORK/n$i/noc.toml" --credentials "$WORK/credentials-$i.json" \
    --relay-pid "$NODE_PIDS" --relay-metrics-url "$METRICS_URLS" --quiet \
    --scenario loadtest/scenarios/idle-sessions.toml --devices-per-ves "$n" --device-answers-heartbeats "$ANSWER" \
    --source-ips "127.0.$(( i + 1 )).1-127.0.$(( i + 1 )).8" "$@"
}

echo "== setup: $DEVICES devices over $NODES nodes"
SETUPS=()
for i in $(seq 0 $(( NODES - 1 ))); do
  worker "$i" --setup-only >"$OUT/setup-$i.txt" 2>&1 &
  SETUPS+=($!)
done
for i in "${!SETUPS[@]}"; do
  wait "${SETUPS[$i]}" || { echo "setup of worker $i failed:" >&2; cat "$OUT/setup-$i.txt" >&2; exit 2; }
done
# Fresh node processes on the same data: memory the allocator kept from setup (argon2,
# activations) must not hide what the sessions cost.
stop_nodes
start_all_nodes

# Every worker ramps its devices up over the same window, holds, and (unless IDLE) drops
# them all STORM_AT seconds into the hold.
RAMP=$(( DEVICES / 1500 + 10 ))
START=$(( $(date +%s%3N) + 5000 ))
STORM_FLAGS=(--storm-at-seconds "$STORM_AT")
if [ -n "$IDLE" ]; then
  STORM_FLAGS=()
  echo "== idle: ramp ${RAMP} s from $(date -u -d "@$(( START / 1000 ))" +%H:%M:%S), then a ${HOLD} s hold"
else
  echo "== storm: ramp ${RAMP} s from $(date -u -d "@$(( START / 1000 ))" +%H:%M:%S), storm ${STORM_AT} s into a ${HOLD} s hold"
fi
RUNS=()
for i in $(seq 0 $(( NODES - 1 ))); do
  worker "$i" --ramp-up-seconds "$RAMP" --duration-seconds "$HOLD" ${STORM_FLAGS[@]+"${STORM_FLAGS[@]}"} \
    --connect-concurrency "$CONCURRENCY" --start-at-unix-ms "$START" \
    --out "$OUT/$MODE-$i.json" --html "$OUT/$MODE-$i.html" >"$OUT/$MODE-$i.txt" 2>&1 &
  RUNS+=($!)
done
if [ -n "$IDLE" ]; then
  # Halfway through the hold, the nodes' own count of device sessions, to set beside the
  # load tool's.
  (
    sleep $(( (START - $(date +%s%3N)) / 1000 + RAMP + HOLD / 2 ))
    total=0
    for url in "${METRICS[@]}"; do
      n=$(curl -sf "$url" | awk '/^noc_sessions\{kind="device"\}/ {print int($2)}')
      total=$(( total + ${n:-0} ))
    done
    echo "$total" >"$WORK/relay-sessions"
    # The nodes' CPU over the hold's second half, read from /proc (no perf): by then each
    # node's usage flush has written every session's once-a-day "device active" row, so
    # this is what the idle sessions cost in steady state.
    if [ -z "${PROFILE:-}" ]; then
      node_ticks() {
        local t=0 p
        for p in "${PIDS[@]}"; do t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat") )); done
        echo "$t"
      }
      t0=$(node_ticks); s0=$(date +%s%3N)
      # Meanwhile, each thread's CPU and wake-ups (voluntary context switches).
      # And Redis's, whose work for idle sessions is the nodes' ownership checks.
      REDIS_PID=$(redis-cli -h 127.0.0.1 -p 6379 info server | tr -d '\r' | awk -F: '$1 == "process_id" {print $2}')
      python3 bench/thread_cpu.py "$REDIS_PID" $(( HOLD / 2 - 5 )) >"$OUT/redis-threads.txt" &
      python3 bench/thread_cpu.py "$NODE_PIDS" $(( HOLD / 2 - 5 )) >"$OUT/threads.txt"
      wait $!
      t1=$(node_ticks); s1=$(date +%s%3N)
      python3 -c "import sys; t, ms, hz = map(int, sys.argv[1:]); print(f'{100 * t / hz / (ms / 1000):.1f}')" \
        "$(( t1 - t0 ))" "$(( s1 - s0 ))" "$(getconf CLK_TCK)" >"$WORK/steady-cpu"
    fi
    # PROFILE=1: where the idle nodes' CPU goes, sampled for a third of the hold from its middle.
    if [ -n "${PROFILE:-}" ]; then
      perf record -e cpu-clock -F 999 -g -p "$NODE_PIDS" -o "$OUT/perf.data" -- sleep $(( HOLD / 3 )) \
        >"$OUT/perf-record.txt" 2>&1
      perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --percent-limit 0.7 --stdio -g none \
        >"$OUT/self.txt" 2>/dev/null
      perf report -i "$OUT/perf.data" --children --sort symbol --percent-limit 2 --stdio -g none \
        >"$OUT/children.txt" 2>/dev/null
      rm -f "$OUT/perf.data"
    fi
  ) &
  SAMPLER=$!
fi
for i in "${!RUNS[@]}"; do
  wait "${RUNS[$i]}" || { echo "worker $i failed:" >&2; cat "$OUT/$MODE-$i.txt" >&2; exit 2; }
done
"$LOADTEST" merge --out "$OUT/$MODE.json" --html "$OUT/$MODE.html" "$OUT"/"$MODE"-[0-9]*.json >"$OUT/merge.txt"
cat "$OUT/merge.txt"

if [ -n "$IDLE" ]; then
  # Every worker samples every node, so the nodes' figures come from one worker's result.
  wait "$SAMPLER"
  RELAY_SESSIONS=$(cat "$WORK/relay-sessions" 2>/dev/null || echo "n/a")
  STEADY_CPU=$(cat "$WORK/steady-cpu" 2>/dev/null || echo "n/a")
  row=$(python3 - "$OUT/idle.json" "$OUT/idle-0.json" "$NODES" "$RELAY_SESSIONS" "$STEADY_CPU" <<'PY'
import json, sys
merged, one, nodes, relay_sessions, steady = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3], sys.argv[4], sys.argv[5]
online = merged["sessions"]["devices_at_traffic_start"]
relay = one.get("relay") or {}
rss, base = relay.get("rss_kib_at_traffic_start"), relay.get("rss_kib_before_sessions", 0)
rss_s = "n/a" if not rss or not online else f"{rss / 1024:.0f} MiB ({(rss - base) / online:.2f} KiB per session)"
cpu = relay.get("cpu_percent_traffic")
cpu_s = "n/a" if cpu is None else f"{cpu:.1f}% of one core"
per100k = "n/a" if cpu is None or not online else f"{cpu * 100000 / online:.1f}%"
steady_s = "n/a" if steady == "n/a" else f"{steady}%"
errors = ", ".join(f"{k}={v}" for k, v in merged["errors"].items()) or "none"
print(f"| {merged['sessions']['devices_target']} | {nodes} | {online} | {relay_sessions} | {rss_s} | {cpu_s} | {steady_s} | {per100k} | {errors} |")
PY
)
  echo "$row"
  SECTION="$WORK/section.md"
  {
    echo "## Idle sessions on a local cluster (\`IDLE=1 bench/cluster_storm.sh\`)"
    echo
    echo "* Date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit \`$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\`$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "* Machine: $(bench_machine); every node, PostgreSQL, Redis and the load-tool workers share it."
    echo "* Command: \`DEVICES=$DEVICES NODES=$NODES IDLE=1 bench/cluster_storm.sh\`; results in \`$OUT/\`"
    echo "* $NODES nodes with PostgreSQL and Redis on one machine (a process may hold only as many sessions as its open-file limit allows); after the setup the nodes are restarted (so that memory kept from setup does not hide what sessions cost), then one load-tool worker per node connects that node's share of the devices over ${RAMP} s, and every session idles for ${HOLD} s with the default heartbeats (60 s each way). RSS is summed over the nodes, growth per session is over the fresh nodes' RSS before the first session; CPU is the nodes' together during the hold (the load tool's figure), and in the hold's second half alone (\`/proc\`, once every session's first usage flush is behind it: the steady state; n/a with PROFILE=1)."
    echo
    echo "| devices | nodes | online at hold start (load tool) | device sessions mid-hold (nodes' \`noc_sessions\`) | RSS of all nodes (growth per session) | CPU of all nodes while idle | of which steady (second half) | per 100 000 sessions | errors |"
    echo "|---|---|---|---|---|---|---|---|---|"
    echo "$row"
  } >"$SECTION"
  bench_write_section cluster_idle "$SECTION"
  cat "$SECTION"
  exit 0
fi

row=$(python3 - "$OUT/storm.json" "$NODES" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); st = r.get("storm") or {}; nodes = sys.argv[2]
rec = st.get("recovery_seconds"); cpu = st.get("relay_cpu_seconds"); per = st.get("reconnects_per_relay_cpu_second")
rec_s = "**not all back**" if rec is None else f"**{rec:.2f}**"
cpu_s = "n/a" if cpu is None else f"{cpu:.1f}"
per_s = "n/a" if per is None else f"{per:.0f}"
relay = r.get("relay") or {}
rss, base = relay.get("rss_kib_at_traffic_start"), relay.get("rss_kib_before_sessions", 0)
online = r["sessions"]["devices_at_traffic_start"]
rss_s = "n/a" if not rss or not online else f"{rss / 1024:.0f} MiB ({(rss - base) / online:.1f} KiB per session)"
errors = ", ".join(f"{k}={v}" for k, v in r["errors"].items()) or "none"
print(f"| {r['sessions']['devices_target']} | {nodes} | {r['workers']} | {st.get('devices_dropped', 0)} | {st.get('reconnected', 0)} | {rec_s} | "
      f"{st.get('reconnects_per_second', 0):.0f} | {cpu_s} | {per_s} | {rss_s} | {errors} |")
PY
)
echo "$row"

SECTION="$WORK/section.md"
{
  echo "## Reconnect storm on a local cluster (\`bench/cluster_storm.sh\`)"
  echo
  echo "* Date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit \`$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\`$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "* Machine: $(bench_machine); every node, PostgreSQL, Redis and the load-tool workers share it."
  echo "* Command: \`DEVICES=$DEVICES NODES=$NODES bench/cluster_storm.sh\`; results in \`$OUT/\`"
  echo "* $NODES nodes with PostgreSQL and Redis; one load-tool worker per node with its own VES and devices, connecting straight to that node's device port from its own 8 source addresses. The workers ramp up together over ${RAMP} s (\`--start-at-unix-ms\`); ${STORM_AT} s into the hold every device drops its session and reconnects at once (TCP + TLS 1.3 + HELLO + AUTH_TOKEN, and the session's claim in Redis), up to $CONCURRENCY handshakes in flight per worker. \`loadtest merge\` times the storm from the first drop to the last device back."
  echo
  echo "| devices | nodes | workers | dropped | re-authenticated | all back after (s) | reconnects/s | CPU-seconds of all nodes | reconnects per node CPU-second | RSS of all nodes at hold start (growth per session) | errors |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  echo "$row"
} >"$SECTION"
bench_write_section cluster_storm "$SECTION"
cat "$SECTION"
