#!/usr/bin/env bash
# Where the CPU of a frame that crosses nodes goes. Two release nodes as in
# bench/cross_node.sh (PostgreSQL for accounts, Redis for the registry and the bus), the
# many-to-one shape (1 VES on node A, DEVICES devices, 256-byte frames, 50/50 both ways,
# TLS on every hop) at each of RATES frames/s: first with the devices on node A
# (same-node), then on node B (cross-node, every frame and acknowledgement through Redis
# pub/sub). Over WINDOW seconds in the middle of each run it records
#   * each node thread's CPU and context switches (/proc),
#   * each node thread's system calls (perf stat; left out without perf),
#   * Redis's CPU and its PUBLISH calls (INFO commandstats),
#   * the messages and bundles each node put on the bus (the nodes' own metrics),
# and writes a summary per rate and delivery to bench/results/profile_cross_node-*/.
#
# Usage: bench/profile_cross_node.sh       (RATES="2000 24000" WINDOW=10 DURATION=40)
# CLUSTER_LINKS=1 gives the nodes direct links (bench/cluster_lib.sh): frames then cross
# on them and not through Redis.
# Needs what bench/cross_node.sh needs. Nothing here is a target's verdict: it says
# which thread, process and system call a cross-node frame costs, to aim the next change.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
source bench/peers_lib.sh
source bench/cluster_lib.sh

DEVICES=${DEVICES:-1000}
RATES=${RATES:-"2000 12000 24000"}
WINDOW=${WINDOW:-10}
DURATION=${DURATION:-40}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="bench/results/profile_cross_node-$STAMP"
WORK=$(mktemp -d /tmp/noc-bench.XXXXXX)
trap 'stop_nodes; rm -rf "$WORK"' EXIT
[ "$DURATION" -ge $(( WINDOW + 15 )) ] || { echo "DURATION must be at least WINDOW + 15 seconds" >&2; exit 2; }

cluster_prepare
bench_build
mkdir -p "$RESULTS"
two_nodes
REDIS_PID=$(redis-cli -h 127.0.0.1 -p 6379 info server | tr -d '\r' | awk -F: '/^process_id:/ { print $2 }')
HAVE_PERF=0
command -v perf >/dev/null && perf stat -e context-switches -p "${PIDS[0]}" -- true >/dev/null 2>&1 && HAVE_PERF=1

# One load-tool run at $1 frames/s with the devices on $2, results as $3.json and $3.txt
# (in the background: its pid in LT).
traffic() {
  many_to_one "$1" "$2" --out "$3.json" >"$3.txt" 2>&1 &
  LT=$!
}

# Frames both nodes have relayed so far (their own counters).
relayed() {
  curl -s http://127.0.0.1:19090/metrics http://127.0.0.1:19091/metrics \
    | awk '/^noc_frames_relayed_total/ { n += $2 } END { printf "%d", n }'
}

# Everything counted, at one moment, as "key value" lines.
snapshot() {
  local node pid t
  # The window's length is measured between the snapshots' starts (each takes a while).
  echo "time $(date +%s.%N)"
  # utime + stime: fields 14 and 15, counted after the name in brackets (which may hold spaces).
  awk '{ sub(/.*\) /, ""); print "redis_ticks", $12 + $13 }' /proc/"$REDIS_PID"/stat
  redis-cli -h 127.0.0.1 -p 6379 info commandstats | tr -d '\r' |
    awk -F'[:=,]' '/^cmdstat_(publish|spublish):/ { print "redis_publish", $3 }'
  for node in a b; do
    if [ "$node" = a ]; then port=19090; else port=19091; fi
    curl -s "http://127.0.0.1:$port/metrics" | awk -v n="$node" '
      /^noc_bus_messages_sent_total/ { s += $2 } /^noc_bus_publish_duration_seconds_count/ { b += $2 }
      /^noc_frames_relayed_total/ { f += $2 }
      END { print "bus_sent", n, s + 0; print "bundles", n, b + 0; print "relayed", n, f + 0 }'
  done
  for node in a b; do
    if [ "$node" = a ]; then pid=${PIDS[0]}; else pid=${PIDS[1]}; fi
    for t in /proc/"$pid"/task/*; do
      # tid, name (spaces made _), voluntary and involuntary switches; CPU ticks. A thread
      # that ended meanwhile is left out.
      { awk -v n="$node" -v tid="${t##*/}" -v name="$(tr ' ' _ <"$t/comm")" \
          '/^voluntary_ctxt_switches/ { v = $2 } /^nonvoluntary_ctxt_switches/ { i = $2 }
           END { print "thread", n, tid, name, v, i }' "$t/status"
        awk -v tid="${t##*/}" '{ sub(/.*\) /, ""); print "ticks", tid, $12 + $13 }' "$t/stat"; } 2>/dev/null || true
    done
  done
}

for rate in $RATES; do
  for mode in same-node cross-node; do
    if [ "$mode" = same-node ]; then addr=127.0.0.1:18444; else addr=127.0.0.1:18454; fi
    out="$RESULTS/$rate-$mode"
    echo "== $mode at $rate frames/s"
    start=$(relayed)
    traffic "$rate" "$addr" "$out"
    # Past setup (accounts on the first run, then the sessions) and 5 s of traffic.
    until [ "$(relayed)" -gt "$start" ]; do
      kill -0 "$LT" 2>/dev/null || { echo "the load tool ended early:" >&2; cat "$out.txt" >&2; exit 2; }
      sleep 1
    done
    sleep 5
    snapshot >"$out.before"
    if [ "$HAVE_PERF" = 1 ]; then
      perf stat --per-thread -x, -o "$out.perf" -p "$NODE_PIDS" -e context-switches \
        -e 'syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_read' \
        -e 'syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_epoll_wait' \
        -- sleep "$WINDOW" 2>/dev/null
    else
      sleep "$WINDOW"
    fi
    snapshot >"$out.after"
    wait "$LT" || { echo "the load tool failed:" >&2; cat "$out.txt" >&2; exit 2; }
  done
done

python3 - "$RESULTS" "$WINDOW" "$(getconf CLK_TCK)" "$RATES" <<'PY' | tee "$RESULTS/summary.txt"
import collections, os, sys
results, window, hz, rates = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4].split()

def load(path):
    threads, values = {}, collections.Counter()
    for line in open(path):
        f = line.split()
        if f[0] == "thread":
            threads[f[2]] = (f[1], f[3])
            values[("vol", f[2])] = int(f[4]); values[("invol", f[2])] = int(f[5])
        elif f[0] == "ticks":
            values[("ticks", f[1])] = int(f[2])
        elif f[0] in ("redis_ticks", "redis_publish"):
            values[f[0]] = int(f[1])
        elif f[0] == "time":
            values["time"] = float(f[1])
        else:
            values[(f[0], f[1])] = float(f[2])
    return threads, values

def perf(path):
    """{tid: {event: count}} from `perf stat --per-thread -x,` output."""
    counts = collections.defaultdict(dict)
    if not os.path.exists(path):
        return counts
    for line in open(path):
        f = line.strip().split(",")
        if len(f) < 4 or not f[1].strip().isdigit():
            continue
        tid = f[0].rsplit("-", 1)[-1]
        counts[tid][f[3].replace("syscalls:sys_enter_", "")] = int(f[1])
    return counts

events = ["recvfrom", "sendto", "read", "write", "writev", "epoll_wait"]
for rate in rates:
    for mode in ("same-node", "cross-node"):
        base = f"{results}/{rate}-{mode}"
        threads, before = load(base + ".before")
        _, after = load(base + ".after")
        elapsed = after["time"] - before["time"]  # /proc and counters; perf counted `window`
        d = lambda k: after[k] - before[k]
        frames = (d(("relayed", "a")) + d(("relayed", "b"))) / elapsed
        calls = perf(base + ".perf")
        print(f"## {mode} at {rate} frames/s offered: {frames:.0f} relayed/s over {elapsed:.1f} s")
        print()
        print("| node | thread | CPU % of a core | µs per frame | switches/s (voluntary, involuntary) | " + " | ".join(f"{e}/s" for e in events) + " |")
        print("|---|---|---|---|---|" + "---|" * len(events))
        total = 0.0
        for tid, (node, name) in sorted(threads.items(), key=lambda t: (t[1][0], int(t[0]))):
            cpu = d(("ticks", tid)) / hz / elapsed * 100
            vol, invol = d(("vol", tid)) / elapsed, d(("invol", tid)) / elapsed
            total += cpu
            if cpu < 0.5 and vol + invol < 50:
                continue
            per_frame = cpu / 100 / frames * 1e6 if frames else 0
            sys_cols = " | ".join(f"{calls.get(tid, {}).get(e, 0) / window:.0f}" for e in events)
            print(f"| {node} | {tid} {name} | {cpu:.1f} | {per_frame:.1f} | {vol:.0f}, {invol:.0f} | {sys_cols} |")
        redis_cpu = d("redis_ticks") / hz / elapsed * 100
        publishes = d("redis_publish") / elapsed
        print()
        print(f"* both nodes: {total:.1f}% of a core, {total / 100 / frames * 1e6 if frames else 0:.1f} µs per frame")
        print(f"* Redis: {redis_cpu:.1f}% of a core, {publishes:.0f} PUBLISH/s"
              + (f", {redis_cpu / 100 / publishes * 1e6:.0f} µs of its CPU per PUBLISH" if publishes else ""))
        for node in ("a", "b"):
            sent, bundles = d(("bus_sent", node)) / elapsed, d(("bundles", node)) / elapsed
            if sent:
                print(f"* node {node} put {sent:.0f} messages/s on the bus in {bundles:.0f} bundles/s ({sent / bundles if bundles else 0:.1f} per bundle)")
        print()
PY
sed -i "1i Frames between the nodes over $(cluster_bus) (CLUSTER_LINKS=$CLUSTER_LINKS).\n" "$RESULTS/summary.txt"
echo "results in $RESULTS/"
