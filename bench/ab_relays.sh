#!/usr/bin/env bash
# A/B of two relay builds under the same load, alternating A and B at each rate so that
# both see the same machine conditions: 1 VES, DEVICES devices, 256-byte frames, 50/50.
# Prints a table and writes it as a section of docs/benchmarks.md.
#
# ROUNDS=N repeats the alternation N times (the table has a row per run).
#
# Usage: NOC_A=path/to/noc NOC_B=path/to/other/noc LABEL_A=... LABEL_B=... bench/ab_relays.sh
#        ENV_A / ENV_B: space-separated NOC_* overrides for one side, e.g. to compare
#        settings of one build: NOC_A=target/release/noc NOC_B=target/release/noc
#        ENV_B="NOC_LISTEN__WORKERS=1" bench/ab_relays.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

: "${NOC_A:?set NOC_A to a noc binary}" "${NOC_B:?set NOC_B to a noc binary}"
LABEL_A=${LABEL_A:-A}
LABEL_B=${LABEL_B:-B}
DEVICES=${DEVICES:-1000}
DURATION=${DURATION:-15}
RATES=${RATES:-"4000 8000"}
ROUNDS=${ROUNDS:-1}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="bench/results/ab-$STAMP"
WORK=$(mktemp -d /tmp/noc-bench.XXXXXX)
trap 'bench_stop_relay; rm -rf "$WORK"' EXIT
bench_build
mkdir -p "$OUT"
ROWS=()
for round in $(seq 1 "$ROUNDS"); do
  for rate in $RATES; do
    for side in A B; do
      if [ "$side" = A ]; then NOC=$NOC_A label=$LABEL_A env=${ENV_A:-}; else NOC=$NOC_B label=$LABEL_B env=${ENV_B:-}; fi
      read -ra RELAY_ENV <<<"$env"
      dir="$WORK/$side"
      run="$side-$rate-$round"
      bench_start_relay "$dir"
      bench_loadtest "$dir" --scenario loadtest/scenarios/many-to-one.toml --devices-per-ves "$DEVICES" \
        --rate-frames-per-second "$rate" --duration-seconds "$DURATION" \
        --out "$OUT/$run.json" --html "$OUT/$run.html" >"$OUT/$run.txt" 2>&1
      bench_stop_relay
      row=$(python3 - "$OUT/$run.json" "$label" "$rate" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); L = r["latency"]; ms = lambda us: f"{us/1000:.2f}"
lost = r["device_to_ves"]["lost"] + r["ves_to_device"]["lost"]
cpu = r['relay']['cpu_percent_traffic']; ach = r["achieved_frames_per_second"]
per_m = f"{cpu / 100 / ach * 1e6:.1f}" if ach > 0 else "n/a"
print(f"| {sys.argv[3]} | {sys.argv[2]} | {ms(L['one_way']['p50_us'])} | {ms(L['one_way']['p99_us'])} | {ms(L['one_way_device_to_ves']['p99_us'])} | {ms(L['one_way_ves_to_device']['p99_us'])} | {ms(L['one_way']['max_us'])} | {lost} | {cpu:.0f}% | {per_m} | {(r.get('loadgen') or {}).get('cpu_percent_traffic', 0):.0f}% |")
PY
      )
      echo "$row"
      ROWS+=("$row")
    done
  done
done
SECTION="$WORK/section.md"
{
  echo "## A/B: $LABEL_A vs $LABEL_B (\`bench/ab_relays.sh\`)"
  echo
  echo "* Date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(bench_machine)"
  echo "* Command: \`NOC_A=$NOC_A NOC_B=$NOC_B ENV_A=\"${ENV_A:-}\" ENV_B=\"${ENV_B:-}\" LABEL_A=$LABEL_A LABEL_B=$LABEL_B RATES=\"$RATES\" ROUNDS=$ROUNDS bench/ab_relays.sh\`; results in \`$OUT/\`"
  echo "* 1 VES, $DEVICES devices, 256-byte payloads, 50/50 directions, ${DURATION} s per run, A and B alternating on fresh relays, $ROUNDS round(s)."
  echo
  echo "| frames/s | relay | p50 ms | p99 ms | p99 device→VES ms | p99 VES→device ms | max ms | lost | relay CPU | relay CPU-s per million frames | load tool CPU |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} >"$SECTION"
bench_write_section "ab-$LABEL_A-vs-$LABEL_B" "$SECTION"
cat "$SECTION"
