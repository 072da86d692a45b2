#!/usr/bin/env bash
# Cross-node overhead: two release nodes on loopback sharing PostgreSQL (accounts) and
# Redis (session registry and the bus between nodes). The same many-to-one traffic —
# 1 VES, DEVICES devices, 256-byte frames, 50/50 both ways, TLS on every hop — first
# with the VES and every device on node A (same-node delivery), then with the VES on A
# and every device on B (each frame crosses Redis pub/sub). The rate search of
# bench/throughput_lib.sh runs for both; then both are measured once more at one common
# rate (half the cross-node maximum) to give the p99 that the Redis hop adds. Both nodes
# run during both searches, and the relay CPU column sums them. Writes results under
# bench/results/ and a section of docs/benchmarks.md.
#
# ROUNDS=N runs both searches N times, in turns (same-node, cross-node, same-node, …), and
# judges the ratio of the medians, every round's shown beside it: on two shared CPUs
# one pair of searches has moved the ratio from 0.55× to 1.00× ten minutes apart.
#
# Needs PostgreSQL (127.0.0.1:5432, trust auth as user postgres) and Redis
# (127.0.0.1:6379): scripts/test.sh starts both on a fresh machine. Uses the database
# BENCH_PG_DB (dropped and created again) and Redis database BENCH_REDIS_DB (flushed).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
source bench/throughput_lib.sh
source bench/peers_lib.sh
source bench/cluster_lib.sh

DEVICES=${DEVICES:-1000}
DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-1}
RATES=${RATES:-"1000 2000 4000 8000 12000 16000 24000 32000 48000"}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="bench/results/cross_node-$STAMP"
WORK=$(mktemp -d /tmp/noc-bench.XXXXXX)
trap 'stop_nodes; rm -rf "$WORK"' EXIT

cluster_prepare
bench_build
mkdir -p "$RESULTS"

two_nodes

# One run: VES on node A, devices on $DEVICE_ADDR.
throughput_run() {
  many_to_one "$1" "$DEVICE_ADDR" --out "$OUT/$2.json" --html "$OUT/$2.html"
}

declare -A BEST_OF HALF_OF HALF_P99_OF CAPACITY_OF ROUND_BESTS_OF
DETAILS="$WORK/details.md"
: >"$DETAILS"
for round in $(seq 1 "$ROUNDS"); do
  for mode in same-node cross-node; do
    OUT="$RESULTS/$mode"
    [ "$ROUNDS" -gt 1 ] && OUT="$RESULTS/round-$round/$mode"
    mkdir -p "$OUT"
    if [ "$mode" = same-node ]; then DEVICE_ADDR=127.0.0.1:18444; else DEVICE_ADDR=127.0.0.1:18454; fi
    echo "== $mode (devices on $DEVICE_ADDR, round $round of $ROUNDS)"
    throughput_search
    BEST_OF[$mode]=$BEST HALF_OF[$mode]=$HALF HALF_P99_OF[$mode]=$HALF_P99 CAPACITY_OF[$mode]=$CAPACITY
    ROUND_BESTS_OF[$mode]="${ROUND_BESTS_OF[$mode]:-} $BEST"
    round_details "$mode" "$round" "CPU of both nodes"
  done
done
if [ "$ROUNDS" -gt 1 ]; then
  for mode in same-node cross-node; do
    # shellcheck disable=SC2086
    BEST_OF[$mode]=$(median ${ROUND_BESTS_OF[$mode]})
  done
fi

# Both at one common rate: half the cross-node maximum (the median one over rounds).
COMMON=$(( ${BEST_OF[cross-node]} / 2 ))
declare -A COMMON_P99
for mode in same-node cross-node; do
  OUT="$RESULTS/$mode"
  mkdir -p "$OUT"
  if [ "$mode" = same-node ]; then DEVICE_ADDR=127.0.0.1:18444; else DEVICE_ADDR=127.0.0.1:18454; fi
  if [ "$COMMON" -gt 0 ]; then
    _throughput_once "$COMMON" "common-$COMMON" || exit 2
    read -r _ _ p99 _ < <(throughput_verdict "$OUT/common-$COMMON.json" "$COMMON")
    COMMON_P99[$mode]=$p99
  else
    COMMON_P99[$mode]="n/a"
  fi
done

added=$(python3 -c "import sys
try: print(f'{float(sys.argv[2]) - float(sys.argv[1]):+.3f} ms')
except ValueError: print('n/a')" "${COMMON_P99[same-node]}" "${COMMON_P99[cross-node]}")
SECTION="$WORK/section.md"
{
  if [ "$CLUSTER_LINKS" = 1 ]; then
    echo "## Cross-node overhead over direct links (\`CLUSTER_LINKS=1 bench/cross_node.sh\`)"
  else
    echo "## Cross-node overhead (\`bench/cross_node.sh\`)"
  fi
  echo
  echo "* Date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit \`$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\`$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "* Machine: $(bench_machine); both nodes, PostgreSQL, Redis and the load tool share it."
  echo "* Command: \`CLUSTER_LINKS=$CLUSTER_LINKS DEVICES=$DEVICES DURATION=$DURATION P99_LIMIT_MS=$P99_LIMIT_MS ROUNDS=$ROUNDS bench/cross_node.sh\`; results in \`$RESULTS/\`"
  if [ "$ROUNDS" -gt 1 ]; then
    echo "* $ROUNDS rounds, same-node and cross-node searches in turns: the maximum is the median over the rounds (each round's in brackets), the ratio is of the medians (each round's in brackets); p99 at 50% and the highest rate delivered in full are from the last round, the common rate is half the median cross-node maximum."
  fi
  echo "* Two nodes with PostgreSQL and Redis (standalone), frames between them over $(cluster_bus); 1 VES on node A, $DEVICES devices on node A (same-node) or node B (cross-node: every frame crosses between the nodes), 256-byte payloads, 50/50 both ways, TLS on every hop, ${DURATION} s per step."
  echo
  echo "| delivery | max frames/s with p99 < ${P99_LIMIT_MS} ms | p99 at 50% of it | p99 at ${COMMON} frames/s (common rate) | highest rate delivered in full |"
  echo "|---|---|---|---|---|"
  for mode in same-node cross-node; do
    best=${BEST_OF[$mode]}
    [ "$ROUNDS" -gt 1 ] && best="$best ($(echo ${ROUND_BESTS_OF[$mode]} | sed 's/ /, /g'))"
    echo "| $mode | $best | ${HALF_P99_OF[$mode]} ms at ${HALF_OF[$mode]} | ${COMMON_P99[$mode]} ms | ${CAPACITY_OF[$mode]} |"
  done
  echo
  r=$(ratio "${BEST_OF[cross-node]}" "${BEST_OF[same-node]}")
  [ "$ROUNDS" -gt 1 ] && r="$r ($(round_ratios "${ROUND_BESTS_OF[cross-node]}" "${ROUND_BESTS_OF[same-node]}"))"
  echo "**Cross-node ÷ same-node throughput: $r** (target ≥ 0.9); p99 added by the hop between nodes at ${COMMON} frames/s: ${added} (target ≤ +1 ms)."
  echo
  cat "$DETAILS"
} >"$SECTION"
if [ "$CLUSTER_LINKS" = 1 ]; then bench_write_section cross_node_links "$SECTION"; else bench_write_section cross_node "$SECTION"; fi
cat "$SECTION"
