#!/usr/bin/env bash
# Relay throughput and latency: one release node on loopback, TLS on every hop, 256-byte
# frames, many devices <-> one VES (both directions, 50/50), searched step by step with
# the open-loop rate search of bench/throughput_lib.sh. Writes the JSON/HTML of every step
# under bench/results/ and a section of docs/benchmarks.md. (bench/compare_throughput.sh
# runs the same search against Mosquitto, NATS and nginx in the same run.)
#
# Usage: bench/relay_throughput.sh            (environment overrides below)
#        NOC_BIN=path/to/noc BENCH_LABEL=name bench/relay_throughput.sh   (another relay
#        build, reported in its own section)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
source bench/throughput_lib.sh

DEVICES=${DEVICES:-1000}
DURATION=${DURATION:-15}
RATES=${RATES:-"250 500 1000 2000 4000 8000 12000 16000 24000 32000 48000"}
LABEL=${BENCH_LABEL:-}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="bench/results/relay_throughput${LABEL:+-$LABEL}-$STAMP"
WORK=$(mktemp -d /tmp/noc-bench.XXXXXX)
trap 'bench_stop_relay; rm -rf "$WORK"' EXIT

bench_build
mkdir -p "$OUT"
bench_start_relay "$WORK"

throughput_run() {
  bench_loadtest "$WORK" --scenario loadtest/scenarios/many-to-one.toml \
    --devices-per-ves "$DEVICES" --rate-frames-per-second "$1" --duration-seconds "$DURATION" \
    --out "$OUT/$2.json" --html "$OUT/$2.html"
}
throughput_search

SECTION="$WORK/section.md"
{
  echo "## Relay throughput and latency (\`bench/relay_throughput.sh\`)${LABEL:+ — $LABEL}"
  echo
  echo "* Date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit \`$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\`$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "* Machine: $(bench_machine); relay and load tool share it."
  echo "* Command: \`${NOC_BIN:+NOC_BIN=$NOC_BIN BENCH_LABEL=$LABEL }DEVICES=$DEVICES DURATION=$DURATION P99_LIMIT_MS=$P99_LIMIT_MS bench/relay_throughput.sh\`"
  echo "* Shape: 1 VES, $DEVICES devices, 256-byte payloads, 50% device→VES / 50% VES→device, TLS on every hop, open-loop timetable, ${DURATION} s per step; results in \`$OUT/\`"
  echo
  echo "**Max sustainable rate: ${BEST} frames/s** (p99 one-way < ${P99_LIMIT_MS} ms, nothing lost or refused); **p99 at 50% of it (${HALF} frames/s): ${HALF_P99} ms.** Highest rate delivered in full whatever the latency: ${CAPACITY} frames/s$( [ "$TOP_TRIED" = 1 ] && echo ' (the highest step tried)')."
  echo
  throughput_table "relay CPU"
} >"$SECTION"
bench_write_section "relay_throughput${LABEL:+-$LABEL}" "$SECTION"
cat "$SECTION"
