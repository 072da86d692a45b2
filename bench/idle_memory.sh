#!/usr/bin/env bash
# Memory and CPU per idle authenticated TLS device session: a release relay on loopback,
# N devices connect (TLS + HELLO + AUTH_TOKEN) and stay idle for HOLD seconds (two
# heartbeat intervals by default); the relay's RSS before the sessions and once they are
# all established gives the memory per session, its CPU over the hold the idle cost.
# Then the same count of idle MQTT-over-TLS clients (CONNECT + SUBSCRIBE) on Mosquitto,
# measured the same way by the same tool, in the same run. Runs for each count in COUNTS,
# each on a fresh server. Writes results under bench/results/ and a section of
# docs/benchmarks.md.
#
# Usage: bench/idle_memory.sh           (COUNTS="10000 19000 50000 100000" by default;
#        counts above the open-file limit are skipped and reported as such;
#        MOSQUITTO=0 skips the comparison)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
source bench/peers_lib.sh

COUNTS=${COUNTS:-"10000 19000 50000 100000"}
SOURCE_IPS=${SOURCE_IPS:-127.0.0.1-127.0.0.8}
HOLD=${HOLD:-120}
MOSQUITTO=${MOSQUITTO:-1}
MQTT_PORT=${MQTT_PORT:-28883}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="bench/results/idle_memory-$STAMP"
WORK=$(mktemp -d /tmp/noc-bench.XXXXXX)
trap 'bench_stop_relay; stop_peers; rm -rf "$WORK"' EXIT

bench_build
mkdir -p "$OUT"
peers_cert "$WORK/peers"
ROWS=()
SKIPPED=()
bench_raise_fd_limit
for n in $COUNTS; do
  if ! bench_fits_fd_limit "$n"; then
    SKIPPED+=("$n")
    continue
  fi
  dir="$WORK/$n"
  # Setup (provisioning, activation) first, then a fresh relay process on the same data:
  # memory the allocator kept from setup must not hide what the sessions cost.
  bench_start_relay "$dir"
  bench_loadtest "$dir" --scenario loadtest/scenarios/idle-sessions.toml --devices-per-ves "$n" \
    --setup-only >"$OUT/setup-$n.txt" 2>&1 || { cat "$OUT/setup-$n.txt" >&2; exit 2; }
  bench_stop_relay
  bench_start_relay "$dir"
  ramp=$(( n / 1000 + 10 ))   # about 1000 handshakes/s, well below the relay's limit
  bench_loadtest "$dir" --scenario loadtest/scenarios/idle-sessions.toml --devices-per-ves "$n" \
    --ramp-up-seconds "$ramp" --duration-seconds "$HOLD" --source-ips "$SOURCE_IPS" \
    --out "$OUT/idle-$n.json" --html "$OUT/idle-$n.html" >"$OUT/idle-$n.txt" 2>&1 || {
    echo "loadtest failed for $n sessions:" >&2; cat "$OUT/idle-$n.txt" >&2; exit 2; }
  bench_stop_relay
  mqtt_json=""
  if [ "$MOSQUITTO" = 1 ]; then
    start_mosquitto "$WORK/peers" "$MQTT_PORT"
    "${NICE[@]}" "$LOADTEST" peer --protocol mqtt --addr "127.0.0.1:$MQTT_PORT" \
      --cacert "$WORK/peers/peer-cert.pem" --peer-pid "$MOSQUITTO_PID" \
      --scenario loadtest/scenarios/idle-sessions.toml --devices-per-ves "$n" \
      --ramp-up-seconds "$ramp" --duration-seconds "$HOLD" --source-ips "$SOURCE_IPS" \
      --out "$OUT/mosquitto-$n.json" --html "$OUT/mosquitto-$n.html" --quiet >"$OUT/mosquitto-$n.txt" 2>&1 || {
      echo "loadtest failed for $n MQTT clients:" >&2; cat "$OUT/mosquitto-$n.txt" >&2; exit 2; }
    stop_peers
    mqtt_json="$OUT/mosquitto-$n.json"
  fi
  row=$(python3 - "$OUT/idle-$n.json" "$mqtt_json" <<'PY'
import json, sys
def per_session(path):
    r = json.load(open(path)); s = r["sessions"]; u = r["relay"]; n = s["devices_at_traffic_start"]
    per = (u["rss_kib_at_traffic_start"] - u["rss_kib_before_sessions"]) / n if n else float("nan")
    return r, s, u, n, per
r, s, u, n, per = per_session(sys.argv[1])
g = r["loadgen"]
tool = (g["rss_kib_at_traffic_start"] - g["rss_kib_before_sessions"]) / n if n else float("nan")
mq = "| n/a | n/a | n/a"
if sys.argv[2]:
    _, ms, mu, mn, mper = per_session(sys.argv[2])
    mq = f"| {mn} | **{mper:.2f}** | {mu['cpu_percent_traffic']:.2f}%"
print(f"| {s['devices_target']} | {n} | {u['rss_kib_before_sessions']/1024:.1f} | {u['rss_kib_at_traffic_start']/1024:.1f} | **{per:.2f}** | {u['cpu_percent_traffic']:.2f}% | {s['connect_rate_per_second']:.0f} | {r['latency']['connect']['p99_us']/1000:.1f} | {tool:.2f} {mq} |")
PY
)
  echo "$row"
  ROWS+=("$row")
done

SECTION="$WORK/section.md"
{
  echo "## Memory per idle TLS device session (\`bench/idle_memory.sh\`)"
  echo
  echo "* Date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit \`$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\`$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "* Machine: $(bench_machine); relay and load tool share it."
  echo "* Command: \`COUNTS=\"$COUNTS\" bench/idle_memory.sh\`; results in \`$OUT/\`"
  echo "* Each count on a fresh relay process with default settings (device heartbeat 60 s), restarted after the accounts were set up; devices connect at about 1000/s from $SOURCE_IPS and stay idle for ${HOLD} s. Per-session memory = (server RSS with all sessions − RSS before) / sessions; idle CPU = the server's CPU over the hold, in % of one core."
  echo "* Mosquitto $(mosquitto -h 2>/dev/null | head -n1 | awk '{print $3}') (Debian package, TLS listener, \`bench/peers_lib.sh\`): the same count of MQTT 3.1.1 clients over TLS, each with CONNECT (keep-alive 600 s) and one QoS 1 SUBSCRIBE, then idle — by the same load tool (\`loadtest peer --protocol mqtt\`)."
  echo
  echo "| devices | established | relay RSS before (MiB) | relay RSS with sessions (MiB) | relay KiB per session | relay CPU while idle | connects/s | connect p99 ms | load tool KiB per session | Mosquitto clients | Mosquitto KiB per session | Mosquitto CPU while idle |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  if [ ${#SKIPPED[@]} -gt 0 ]; then
    echo
    bench_skipped_note "${SKIPPED[*]}"
  fi
} >"$SECTION"
bench_write_section idle_memory "$SECTION"
cat "$SECTION"
