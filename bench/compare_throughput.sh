#!/usr/bin/env bash
# Throughput and latency side by side, in one run: the relay, Mosquitto (MQTT over TLS,
# QoS 1), NATS (TLS) doing the same many-to-one relay, and nginx's stream module proxying
# TLS 1:1 (a forwarding ceiling: no multiplexing, no routing). Same load tool, same
# shape — 1 hub (the VES) and DEVICES devices, 256-byte payloads, 50/50 both ways, TLS on
# every hop, open-loop — and the same rate search (bench/throughput_lib.sh) for each,
# one server at a time so that none competes with another for the cores. Writes every
# step's JSON/HTML under bench/results/ and a section of docs/benchmarks.md.
#
# ROUNDS=N repeats the whole comparison N times, the servers taking turns in each round,
# and reports the median of each server's maximum together with every round's ratio: on a
# shared machine one round's ratios can move by tens of percent.
#
# Usage: bench/compare_throughput.sh           (TARGETS="relay nats" to run some only, or
#                                                with "direct", the load tool against itself;
#                                                ROUNDS=3 for medians over three rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
source bench/throughput_lib.sh
source bench/peers_lib.sh
source bench/targets_lib.sh

DEVICES=${DEVICES:-1000}
DURATION=${DURATION:-15}
TARGETS=${TARGETS:-"relay mosquitto nats nginx"}
ROUNDS=${ROUNDS:-1}
RATES=${RATES:-"1000 2000 4000 8000 12000 16000 24000 32000 48000 64000 96000"}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="bench/results/compare_throughput-$STAMP"
WORK=$(mktemp -d /tmp/noc-bench.XXXXXX)
trap 'bench_stop_relay; stop_peers; rm -rf "$WORK"' EXIT

targets_prepare

declare -A BEST_OF HALF_OF HALF_P99_OF CAPACITY_OF TOP_OF ROUND_BESTS_OF
DETAILS="$WORK/details.md"
: >"$DETAILS"
for round in $(seq 1 "$ROUNDS"); do
  for target in $TARGETS; do
    OUT="$RESULTS/$target"
    [ "$ROUNDS" -gt 1 ] && OUT="$RESULTS/round-$round/$target"
    mkdir -p "$OUT"
    echo "== $target (round $round of $ROUNDS)"
    target_start "$target"
    throughput_search
    BEST_OF[$target]=$BEST HALF_OF[$target]=$HALF HALF_P99_OF[$target]=$HALF_P99
    CAPACITY_OF[$target]=$CAPACITY TOP_OF[$target]=$TOP_TRIED
    ROUND_BESTS_OF[$target]="${ROUND_BESTS_OF[$target]:-} $BEST"
    round_details "$target" "$round" "server CPU"
    target_stop
  done
done

if [ "$ROUNDS" -gt 1 ]; then
  for target in $TARGETS; do
    # shellcheck disable=SC2086
    BEST_OF[$target]=$(median ${ROUND_BESTS_OF[$target]})
  done
fi

SECTION="$WORK/section.md"
{
  echo "## Relay vs Mosquitto, NATS and nginx, same run (\`bench/compare_throughput.sh\`)"
  echo
  echo "* Date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit \`$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\`$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "* Machine: $(bench_machine); each server and the load tool share it, one server at a time."
  echo "* Command: \`DEVICES=$DEVICES DURATION=$DURATION P99_LIMIT_MS=$P99_LIMIT_MS TARGETS=\"$TARGETS\" ROUNDS=$ROUNDS bench/compare_throughput.sh\`"
  if [ "$ROUNDS" -gt 1 ]; then
    echo "* $ROUNDS rounds, the servers taking turns in each: the maximum is the median over the rounds (each round's in brackets), the ratio is of the medians (each round's in brackets); p99 at 50% and the highest rate delivered in full are from the last round."
  fi
  echo "* Shape: 1 hub (the VES; an MQTT/NATS client subscribed to every device's topic; the nginx upstream), $DEVICES devices, 256-byte payloads, 50% device→hub / 50% hub→device, TLS on every hop, open-loop timetable, ${DURATION} s per step; results in \`$RESULTS/\`"
  echo
  echo "| server | max frames/s with p99 < ${P99_LIMIT_MS} ms | p99 at 50% of it | highest rate delivered in full | relay ÷ server (max rate) |"
  echo "|---|---|---|---|---|"
  for target in $TARGETS; do
    cap="${CAPACITY_OF[$target]}"
    [ "${TOP_OF[$target]}" = 1 ] && cap="≥ $cap (highest step)"
    r="—"
    best="${BEST_OF[$target]}"
    if [ "$target" != relay ] && [ -n "${BEST_OF[relay]:-}" ]; then
      r=$(ratio "${BEST_OF[relay]}" "${BEST_OF[$target]}")
      [ "$ROUNDS" -gt 1 ] && r="$r ($(round_ratios "${ROUND_BESTS_OF[relay]}" "${ROUND_BESTS_OF[$target]}"))"
    fi
    [ "$ROUNDS" -gt 1 ] && best="$best ($(echo ${ROUND_BESTS_OF[$target]} | sed 's/ /, /g'))"
    echo "| $(target_describe "$target") | $best | ${HALF_P99_OF[$target]} ms at ${HALF_OF[$target]} | $cap | $r |"
  done
  echo
  cat "$DETAILS"
} >"$SECTION"
bench_write_section compare_throughput "$SECTION"
cat "$SECTION"
