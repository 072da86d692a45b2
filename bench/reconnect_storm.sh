#!/usr/bin/env bash
# Reconnect storm: N idle authenticated TLS devices on one release relay all lose their
# sessions at the same moment (as when a load balancer or a carrier's network drops them)
# and reconnect straight away, without backoff — the worst case. Reports the time until
# every one of them is authenticated again (TCP, TLS, HELLO, AUTH), the reconnect rate, and
# reconnects per CPU-second of the relay (the handshake + authentication rate one core
# sustains), for each authentication method of AUTHS on a fresh relay each: `token`
# (AUTH_TOKEN, the credential) and `certificate` (mutual TLS with the device's client
# certificate, then AUTH_CERT; docs/certificates.md). Writes results under bench/results/
# and a section of docs/benchmarks.md.
#
# Usage: bench/reconnect_storm.sh           (COUNTS="10000 19000 50000" and
#        AUTHS="token certificate" by default; counts above the open-file limit are skipped
#        and reported as such)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

COUNTS=${COUNTS:-"10000 19000 50000"}
AUTHS=${AUTHS:-"token certificate"}
SOURCE_IPS=${SOURCE_IPS:-127.0.0.1-127.0.0.8}
STORM_AT=${STORM_AT:-5}
HOLD=${HOLD:-60}
# Handshakes the load tool keeps in flight at once: high enough that the relay, not the
# tool, sets the pace.
CONCURRENCY=${CONCURRENCY:-4096}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="bench/results/reconnect_storm-$STAMP"
WORK=$(mktemp -d /tmp/noc-bench.XXXXXX)
trap 'bench_stop_relay; rm -rf "$WORK"' EXIT

bench_build
mkdir -p "$OUT"
ROWS=()
SKIPPED=()
bench_raise_fd_limit
for n in $COUNTS; do
  if ! bench_fits_fd_limit "$n"; then
    SKIPPED+=("$n")
    continue
  fi
  for auth in $AUTHS; do
    case $auth in
      token) certs=false ;;
      certificate) certs=true ;;
      *) echo "unknown AUTHS entry $auth (token or certificate)" >&2; exit 2 ;;
    esac
    dir="$WORK/$n-$auth"
    bench_start_relay "$dir"
    bench_loadtest "$dir" --scenario loadtest/scenarios/idle-sessions.toml --devices-per-ves "$n" \
      --device-client-certificates "$certs" --setup-only >"$OUT/setup-$n-$auth.txt" 2>&1 || {
      cat "$OUT/setup-$n-$auth.txt" >&2; exit 2; }
    ramp=$(( n / 1000 + 10 ))
    bench_loadtest "$dir" --scenario loadtest/scenarios/idle-sessions.toml --devices-per-ves "$n" \
      --device-client-certificates "$certs" \
      --ramp-up-seconds "$ramp" --duration-seconds "$HOLD" --storm-at-seconds "$STORM_AT" \
      --connect-concurrency "$CONCURRENCY" --source-ips "$SOURCE_IPS" \
      --out "$OUT/storm-$n-$auth.json" --html "$OUT/storm-$n-$auth.html" >"$OUT/storm-$n-$auth.txt" 2>&1 || {
      echo "loadtest failed for $n devices ($auth):" >&2; cat "$OUT/storm-$n-$auth.txt" >&2; exit 2; }
    row=$(python3 - "$OUT/storm-$n-$auth.json" "$auth" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); st = r.get("storm") or {}
rec = st.get("recovery_seconds"); cpu = st.get("relay_cpu_seconds"); per = st.get("reconnects_per_relay_cpu_second")
rec_s = "**not all back**" if rec is None else f"**{rec:.2f}**"
cpu_s = "n/a" if cpu is None else f"{cpu:.1f}"
per_s = "n/a" if per is None else f"{per:.0f}"
errors = ", ".join(f"{k}={v}" for k, v in r["errors"].items()) or "none"
print(f"| {r['sessions']['devices_target']} | {sys.argv[2]} | {st.get('devices_dropped', 0)} | {st.get('reconnected', 0)} | {rec_s} | "
      f"{st.get('reconnects_per_second', 0):.0f} | {cpu_s} | {per_s} | {r['latency']['connect']['p99_us']/1000:.0f} | {errors} |")
PY
    )
    echo "$row"
    ROWS+=("$row")
    bench_stop_relay
  done
done

SECTION="$WORK/section.md"
{
  echo "## Reconnect storm (\`bench/reconnect_storm.sh\`)"
  echo
  echo "* Date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit \`$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\`$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "* Machine: $(bench_machine); relay and load tool share it."
  echo "* Command: \`COUNTS=\"$COUNTS\" AUTHS=\"$AUTHS\" bench/reconnect_storm.sh\`; results in \`$OUT/\`"
  echo "* Idle devices from $SOURCE_IPS; ${STORM_AT} s into the hold every one drops its session and reconnects at once, up to $CONCURRENCY handshakes in flight, on a fresh relay per row. \`token\`: TCP + TLS 1.3 + HELLO + AUTH_TOKEN (the tool's shared TLS ticket cache holds 256 sessions, so nearly all are full handshakes). \`certificate\`: TCP + TLS 1.3 with the device's ECDSA P-256 client certificate (no resumption: every one a full handshake the relay verifies against its device CA) + HELLO + AUTH_CERT. Default relay settings."
  echo
  echo "| devices | auth | dropped | re-authenticated | all back after (s) | reconnects/s | relay CPU-seconds | reconnects per relay CPU-second | connect p99 ms (whole run) | errors |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  if [ ${#SKIPPED[@]} -gt 0 ]; then
    echo
    bench_skipped_note "${SKIPPED[*]}"
  fi
} >"$SECTION"
bench_write_section reconnect_storm "$SECTION"
cat "$SECTION"
