# The rate search shared by the throughput benchmarks. Source it after bench/lib.sh and
# define `throughput_run RATE TAG`: one open-loop run at RATE frames/s that writes
# "$OUT/TAG.json" (a loadtest result) and returns non-zero if the tool itself failed.
#
# Steps the offered rate up through $RATES until a step fails — p99 one-way latency
# >= P99_LIMIT_MS, or any frame lost or refused, or less than 98% of the offered rate
# delivered — refines between the last pass and the first failure, then measures p99 at
# 50% of the highest passing rate. Steps go on past a latency failure while everything
# is still delivered, to report the highest rate delivered in full as well. A step that
# misses only the latency limit is tried once more (other work on a shared machine adds
# latency, never removes it), and a run during which the host took more than
# STEAL_LIMIT_PERCENT of the CPU time is run again (bench/lib.sh, bench_run_unstolen).
#
# Results: BEST (max sustainable frames/s), HALF and HALF_P99, CAPACITY (highest rate
# delivered in full), TOP_TRIED (1 when CAPACITY is the highest step tried), and the
# markdown table rows in ROWS.

P99_LIMIT_MS=${P99_LIMIT_MS:-10}
REFINE_STEPS=${REFINE_STEPS:-2}

# Prints "<latency verdict> <capacity verdict> p99_ms achieved lost undeliverable
# relay_cpu tool_cpu counted" for a result file; `counted` says whether the relay's own
# noc_frames_relayed_total agrees with the frames the load tool saw relayed (sent minus
# refused): "yes", "RELAY/TOOL" when not, "n/a" for servers without those metrics.
throughput_verdict() {
  python3 - "$1" "$2" "$P99_LIMIT_MS" "$STEAL_LIMIT_PERCENT" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); rate = float(sys.argv[2]); limit = float(sys.argv[3]); steal_limit = float(sys.argv[4])
p99 = r["latency"]["one_way"]["p99_us"] / 1000
lost = r["device_to_ves"]["lost"] + r["ves_to_device"]["lost"]
und = sum(r["device_to_ves"]["undeliverable"].values()) + sum(r["ves_to_device"]["undeliverable"].values())
ach = r["achieved_frames_per_second"]
cap = lost == 0 and und == 0 and ach >= 0.98 * rate
lat = cap and p99 < limit
relay = (r.get("relay") or {}).get("cpu_percent_traffic", 0); tool = (r.get("loadgen") or {}).get("cpu_percent_traffic", 0)
m = r.get("relay_metrics_delta") or {}
relayed = [v for k, v in m.items() if k.startswith("noc_frames_relayed_total")]
tool_relayed = r["device_to_ves"]["sent"] + r["ves_to_device"]["sent"] - und
counted = "n/a" if not relayed else ("yes" if round(sum(relayed)) == tool_relayed else f"{sum(relayed):.0f}/{tool_relayed}")
# CPU time the host gave to other guests: a run with much of it measured the neighbours
# (in bold when over the limit: every try of that step had as much, see bench_run_unstolen).
steal = (r.get("host") or {}).get("steal_percent_traffic")
steal = "n/a" if steal is None else f"**{steal:.1f}%**" if steal > steal_limit else f"{steal:.1f}%"
print("pass" if lat else "fail", "pass" if cap else "fail", f"{p99:.3f}", f"{ach:.0f}", lost, und, f"{relay:.0f}", f"{tool:.0f}", counted, steal)
PY
}

_throughput_step() {
  local rate=$1 tag=$2 p99 ach lost und rcpu tcpu counted steal
  _throughput_once "$rate" "$tag" || return 2
  read -r LAT CAP p99 ach lost und rcpu tcpu counted steal < <(throughput_verdict "$OUT/$tag.json" "$rate")
  if [ "$LAT" != pass ] && [ "$CAP" = pass ] && [ "${RETRY:-1}" = 1 ]; then
    echo "rate $rate: p99 ${p99} ms, retrying once"
    ROWS+=("| $rate (first try) | $ach | $p99 | $lost | $und | $rcpu% | $tcpu% | $counted | $LAT | $CAP | $steal |")
    _throughput_once "$rate" "$tag-retry" || return 2
    read -r LAT CAP p99 ach lost und rcpu tcpu counted steal < <(throughput_verdict "$OUT/$tag-retry.json" "$rate")
  fi
  echo "rate $rate: p99 ${p99} ms (latency $LAT) achieved $ach lost $lost undeliverable $und (capacity $CAP) server CPU ${rcpu}% tool CPU ${tcpu}% metrics agree: $counted host CPU stolen: $steal"
  ROWS+=("| $rate | $ach | $p99 | $lost | $und | $rcpu% | $tcpu% | $counted | $LAT | $CAP | $steal |")
  STEP_P99=$p99
}

_throughput_once() {
  local rate=$1 tag=$2
  bench_run_unstolen "$OUT/$tag" _throughput_run_logged "$rate" "$tag" || {
    echo "the load tool failed at $rate frames/s:" >&2
    cat "$OUT/$tag.txt" >&2
    return 2
  }
}

_throughput_run_logged() {
  throughput_run "$1" "$2" >"$OUT/$2.txt" 2>&1
}

throughput_search() {
  ROWS=()
  LAT="" CAP=""
  BEST=0 CAPACITY=0 HALF=0 HALF_P99="n/a" TOP_TRIED=0
  local fail=0 rate lo hi mid last=""
  for rate in $RATES; do
    last=$rate
    _throughput_step "$rate" "rate-$rate" || return 2
    if [ "$CAP" = pass ]; then CAPACITY=$rate; fi
    if [ "$fail" -eq 0 ]; then
      if [ "$LAT" = pass ]; then BEST=$rate; else fail=$rate; fi
    fi
    if [ "$CAP" != pass ]; then break; fi
  done
  [ "$CAPACITY" = "$last" ] && TOP_TRIED=1
  # Below the first step: halve until a step passes (or the rate is negligible).
  if [ "$BEST" -eq 0 ] && [ "$fail" -gt 0 ]; then
    rate=$(( fail / 2 ))
    while [ "$rate" -ge "${MIN_RATE:-25}" ]; do
      _throughput_step "$rate" "rate-$rate" || return 2
      if [ "$LAT" = pass ]; then BEST=$rate; break; fi
      fail=$rate
      rate=$(( rate / 2 ))
    done
  fi
  if [ "$fail" -gt 0 ] && [ "$BEST" -gt 0 ]; then
    lo=$BEST hi=$fail
    for _ in $(seq 1 "$REFINE_STEPS"); do
      mid=$(( (lo + hi) / 2 ))
      [ "$mid" -gt "$lo" ] || break
      _throughput_step "$mid" "rate-$mid" || return 2
      if [ "$CAP" = pass ] && [ "$mid" -gt "$CAPACITY" ]; then CAPACITY=$mid; fi
      if [ "$LAT" = pass ]; then lo=$mid; BEST=$mid; else hi=$mid; fi
    done
  fi
  HALF=$(( BEST / 2 ))
  if [ "$HALF" -gt 0 ]; then
    _throughput_step "$HALF" "half-$HALF" || return 2
    HALF_P99=$STEP_P99
    echo "50% of max ($HALF frames/s): p99 $HALF_P99 ms"
  fi
}

# The table of the last search; $1 names the server column ("relay CPU").
throughput_table() {
  echo "| offered frames/s | delivered frames/s | p99 one-way ms | lost | undeliverable | ${1:-server CPU} | load tool CPU | relay's count = tool's | p99 < ${P99_LIMIT_MS} ms | delivered in full | host CPU stolen |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
}

# Helpers for scripts that repeat searches in rounds.
# Appends the last search's table to $DETAILS under "### NAME" (", round N" when ROUNDS
# is over 1); CPU_LABEL names the server CPU column.
round_details() {
  local name=$1 round=$2 cpu_label=$3
  {
    if [ "$ROUNDS" -gt 1 ]; then echo "### $name, round $round"; else echo "### $name"; fi
    echo
    throughput_table "$cpu_label"
    echo
  } >>"$DETAILS"
}
# "A÷B" to two places with a "×", e.g. "1.62×" ("n/a" when B is 0).
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}×' if b>0 else 'n/a')" "$1" "$2"; }
# The median of integers, as an integer.
median() { python3 -c "import statistics, sys; print(int(statistics.median(int(x) for x in sys.argv[1:])))" "$@"; }
# Round-by-round ratios of two lists of maxima, e.g. "1.62×, 1.71×".
round_ratios() {
  python3 -c "
import sys
a, b = sys.argv[1].split(), sys.argv[2].split()
print(', '.join(f'{int(x)/int(y):.2f}×' if int(y) > 0 else 'n/a' for x, y in zip(a, b)))" "$1" "$2"
}
