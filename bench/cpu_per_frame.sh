#!/usr/bin/env bash
# CPU per relayed frame and latency at common rates, every server in the same run: the
# relay, Mosquitto, NATS, nginx's 1:1 TLS proxy and the load tool against itself
# ("direct": its own cost and latency floor). Where compare_throughput.sh searches each
# server's maximum, this one offers every server the same fixed rates — ones that all of
# them sustain — so that CPU-seconds per million frames compare work per frame, not
# where each one's latency breaks.
#
# ROUNDS (default 3) repeats everything, the servers taking turns at each rate, and
# reports medians with every round's value: on a shared 2-core machine one run's CPU can
# move by tens of percent.
#
# Default RATES are 30% and 60% of the slowest server's maximum (Mosquitto's 36 000
# frames/s, compare_throughput-20261129T171611Z). Writes every run's JSON/HTML under
# bench/results/cpu_per_frame-*/ and a section of docs/benchmarks.md.
#
# Usage: bench/cpu_per_frame.sh      (TARGETS="direct relay" RATES="10000" ROUNDS=1 ...)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
source bench/throughput_lib.sh
source bench/peers_lib.sh
source bench/targets_lib.sh

DEVICES=${DEVICES:-1000}
DURATION=${DURATION:-15}
TARGETS=${TARGETS:-"direct relay mosquitto nats nginx"}
ROUNDS=${ROUNDS:-3}
RATES=${RATES:-"11000 22000"}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="bench/results/cpu_per_frame-$STAMP"
WORK=$(mktemp -d /tmp/noc-bench.XXXXXX)
trap 'target_stop; rm -rf "$WORK"' EXIT

targets_prepare

# One run of TARGET at RATE on a fresh server.
one_run() {
  local rc=0
  target_start "$1"
  throughput_run "$2" "rate-$2" >"$OUT/rate-$2.txt" 2>&1 || rc=$?
  target_stop
  return $rc
}

for round in $(seq 1 "$ROUNDS"); do
  for rate in $RATES; do
    for target in $TARGETS; do
      OUT="$RESULTS/round-$round/$target"
      mkdir -p "$OUT"
      if ! bench_run_unstolen "$OUT/rate-$rate" one_run "$target" "$rate"; then
        echo "the load tool failed against $target at $rate frames/s:" >&2
        cat "$OUT/rate-$rate.txt" >&2
        exit 2
      fi
      read -r _ _ p99 ach lost und scpu tcpu _ steal < <(throughput_verdict "$OUT/rate-$rate.json" "$rate")
      echo "round $round, $rate frames/s, $target: delivered $ach/s, p99 ${p99} ms, server CPU ${scpu}%, tool CPU ${tcpu}%, lost $lost, undeliverable $und, host CPU stolen $steal"
    done
  done
done

DESCRIPTIONS="$WORK/descriptions"
for target in $TARGETS; do echo "$target	$(target_describe "$target")"; done >"$DESCRIPTIONS"
SECTION="$WORK/section.md"
{
  echo "## CPU per frame and latency at common rates (\`bench/cpu_per_frame.sh\`)"
  echo
  echo "* Date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit \`$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\`$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "* Machine: $(bench_machine); each server and the load tool share it, one server at a time."
  echo "* Command: \`DEVICES=$DEVICES DURATION=$DURATION RATES=\"$RATES\" ROUNDS=$ROUNDS TARGETS=\"$TARGETS\" bench/cpu_per_frame.sh\`"
  echo "* Shape: 1 hub, $DEVICES devices, 256-byte payloads, 50% each way, TLS on every hop, open-loop, ${DURATION} s per run; the servers take turns at each rate in each of $ROUNDS rounds. Results in \`$RESULTS/\`."
  echo "* Runs during which the host took more than $STEAL_LIMIT_PERCENT% of the machine's CPU time were run again (at most $STEAL_RETRIES times; \`host CPU stolen\` is the kept run's)."
  echo "* CPU-s per million frames = the server's CPU (user + system, all its threads, sampled from /proc over the traffic phase) ÷ delivered frames. Medians over the rounds, each round's value in brackets."
  echo
  python3 - "$RESULTS" "$DESCRIPTIONS" "$RATES" "$TARGETS" <<'PY'
import json, pathlib, statistics, sys
results, descriptions = pathlib.Path(sys.argv[1]), dict(l.split("\t", 1) for l in pathlib.Path(sys.argv[2]).read_text().splitlines())
rates, targets = sys.argv[3].split(), sys.argv[4].split()
rounds = sorted(p for p in results.glob("round-*") if p.is_dir())

def sample(target, rate):
    out = []
    for r in rounds:
        f = r / target / f"rate-{rate}.json"
        if not f.exists():
            continue
        j = json.loads(f.read_text())
        ach = j["achieved_frames_per_second"]
        server = (j.get("relay") or {}).get("cpu_percent_traffic")
        tool = (j.get("loadgen") or {}).get("cpu_percent_traffic", 0.0)
        per_m = lambda pct: pct / 100 / ach * 1e6 if ach > 0 and pct is not None else None
        lost = j["device_to_ves"]["lost"] + j["ves_to_device"]["lost"]
        und = sum(j["device_to_ves"]["undeliverable"].values()) + sum(j["ves_to_device"]["undeliverable"].values())
        out.append({"server": per_m(server), "tool": per_m(tool), "p99": j["latency"]["one_way"]["p99_us"] / 1000,
                    "p50": j["latency"]["one_way"]["p50_us"] / 1000, "ok": lost == 0 and und == 0 and ach >= 0.98 * int(rate),
                    # The tool's own delay between a frame's scheduled time and its sender
                    # queueing it, and the latency from then on (absent in result files of
                    # earlier versions).
                    **{f"{m}_{d}_{q}": (j["latency"].get(f"{m}_{d}") or {}).get(f"{q}_us", 0) / 1000 or None
                       for m in ("send_delay", "from_send") for d in ("device_to_ves", "ves_to_device") for q in ("p50", "p99")},
                    "steal": (j.get("host") or {}).get("steal_percent_traffic")})
    return out

def med(xs, fmt):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    return f"{fmt(statistics.median(xs))} ({', '.join(fmt(x) for x in xs)})" if len(xs) > 1 else fmt(xs[0])

def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

for rate in rates:
    print(f"### {int(rate):,} frames/s offered".replace(",", " "))
    print()
    print("| server | server CPU-s per million frames | load tool CPU-s per million frames | p50 one-way ms | p99 one-way ms | the tool's send delay p50 / p99 ms, device→VES; VES→device | one-way from the send p50 / p99 ms, device→VES; VES→device | relay ÷ server (CPU per frame) | all delivered | host CPU stolen |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    relay = median(s["server"] for s in sample("relay", rate)) if "relay" in targets else None
    for t in targets:
        s = sample(t, rate)
        server = median(x["server"] for x in s)
        ratio = f"{relay / server:.2f}×" if relay and server and t != "relay" else "—"
        ok = "yes" if s and all(x["ok"] for x in s) else "no"
        pair = lambda m, d: " / ".join(
            f"{v:.2f}" if v is not None else "—" for v in (median(x[f"{m}_{d}_{q}"] for x in s) for q in ("p50", "p99")))
        both = lambda m: f"{pair(m, 'device_to_ves')}; {pair(m, 'ves_to_device')}"
        print(f"| {descriptions[t]} | {med([x['server'] for x in s], lambda v: f'{v:.1f}')} | "
              f"{med([x['tool'] for x in s], lambda v: f'{v:.1f}')} | {med([x['p50'] for x in s], lambda v: f'{v:.2f}')} | "
              f"{med([x['p99'] for x in s], lambda v: f'{v:.2f}')} | {both('send_delay')} | {both('from_send')} | {ratio} | {ok} | "
              f"{med([x['steal'] for x in s], lambda v: f'{v:.1f}%')} |")
    print()
PY
} >"$SECTION"
bench_write_section cpu_per_frame "$SECTION"
cat "$SECTION"
