#!/usr/bin/env bash
# Profiles of a release relay under the benchmarks' loads, to see what is in the way of a
# target:
#   bench/profile_relay.sh heap [N]      heaptrack of N idle TLS device sessions (default
#                                        2000): which allocations the sessions keep, and
#                                        bytes per session by site (per_session.txt)
#   bench/profile_relay.sh cpu [RATE]    perf (cpu-clock samples, call graphs) of the relay
#                                        at RATE frames/s (default 16000) of the
#                                        many-to-one throughput shape: where its CPU goes
#                                        (PROFILE=tool: of the load tool instead)
#   bench/profile_relay.sh allocs [RATE] libc's malloc/calloc/realloc counted with perf
#                                        probes for WINDOW seconds (default 10) of traffic
#                                        at RATE frames/s (default 4000, many-to-one):
#                                        heap allocations per relayed frame on the whole
#                                        path (TLS, HTTP, JSON included) and where they are
#   bench/profile_relay.sh syscalls [RATE]
#                                        the relay's system calls on the frame path counted
#                                        with perf for WINDOW seconds (default 10) at RATE
#                                        frames/s (default 11000): calls per relayed frame,
#                                        and the reads that found nothing (EAGAIN)
# Writes the raw profile and a text summary under bench/results/profile-*/.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

MODE=${1:-}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$(mktemp -d /tmp/noc-bench.XXXXXX)
trap 'bench_stop_relay; rm -rf "$WORK"' EXIT
bench_build

# For the perf modes: a relay with the many-to-one scenario's accounts set up, and the
# results folder bench/results/profile-$1-$STAMP as OUT.
perf_relay() {
  command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 2; }
  OUT="bench/results/profile-$1-$STAMP"
  mkdir -p "$OUT"
  bench_start_relay "$WORK"
  bench_loadtest "$WORK" --scenario loadtest/scenarios/many-to-one.toml --setup-only >"$OUT/setup.txt" 2>&1 \
    || { cat "$OUT/setup.txt" >&2; exit 2; }
}

# Many-to-one traffic at $1 frames/s in the background (its pid in LT), long enough for a
# WINDOW-second measurement that starts when this returns, past setup and ramp-up.
window_traffic() {
  bench_loadtest "$WORK" --scenario loadtest/scenarios/many-to-one.toml --rate-frames-per-second "$1" \
    --duration-seconds $(( WINDOW + 20 )) --out "$OUT/run.json" --html "$OUT/run.html" >"$OUT/run.txt" 2>&1 &
  LT=$!
  sleep 10
}

# Frames the relay has relayed so far (its own counter).
relayed() {
  curl -s "http://127.0.0.1:$BENCH_ADMIN_PORT/metrics" \
    | awk '/^noc_frames_relayed_total/ { n += $2 } END { printf "%d", n }'
}

case $MODE in
  heap)
    N=${2:-2000}
    command -v heaptrack >/dev/null || { echo "heaptrack is not installed (apt-get install heaptrack)" >&2; exit 2; }
    OUT="bench/results/profile-heap-$STAMP"
    mkdir -p "$OUT"
    # Accounts first, on a relay without the profiler.
    bench_start_relay "$WORK"
    bench_loadtest "$WORK" --scenario loadtest/scenarios/idle-sessions.toml --devices-per-ves "$N" \
      --setup-only >"$OUT/setup.txt" 2>&1 || { cat "$OUT/setup.txt" >&2; exit 2; }
    bench_stop_relay
    # The relay under heaptrack; NOC points bench_start_relay at a wrapper.
    cat >"$WORK/noc-heaptrack" <<SH
#!/usr/bin/env bash
exec heaptrack -o "$OUT/heaptrack.noc" "$NOC" "\$@"
SH
    chmod +x "$WORK/noc-heaptrack"
    REAL_NOC=$NOC
    NOC="$WORK/noc-heaptrack"
    bench_start_relay "$WORK"
    NOC=$REAL_NOC
    bench_loadtest "$WORK" --scenario loadtest/scenarios/idle-sessions.toml --devices-per-ves "$N" \
      --ramp-up-seconds 15 --duration-seconds 10 \
      --out "$OUT/idle.json" --html "$OUT/idle.html" >"$OUT/idle.txt" 2>&1 || { cat "$OUT/idle.txt" >&2; exit 2; }
    # RELAY_PID is heaptrack's; the relay runs as its child. Stop the relay itself and let
    # heaptrack write its file.
    pkill -TERM -f "^$NOC serve --data-dir $WORK/data" || true
    wait "$RELAY_PID" 2>/dev/null || true
    RELAY_PID=""
    file=$(ls "$OUT"/heaptrack.noc*.zst "$OUT"/heaptrack.noc*.gz 2>/dev/null | head -n 1 || true)
    heaptrack_print --print-peaks 1 --print-allocators 0 --print-temporary 0 --print-leaks 0 \
      --peak-limit 25 "$file" >"$OUT/peaks.txt" 2>/dev/null || true
    echo "== $N idle sessions; peak heap consumers in $OUT/peaks.txt"
    grep -E "^(peak heap memory consumption|total memory leaked)" "$OUT/peaks.txt" || true
    # What one session keeps: the sites called once per session, in bytes per session.
    heaptrack_print --print-peaks 1 --print-allocators 0 --print-temporary 0 --print-leaks 0 \
      --peak-limit 80 --merge-backtraces 0 "$file" 2>/dev/null \
      | bench/heap_per_session.py "$N" >"$OUT/per_session.txt" || true
    echo "== per session ($OUT/per_session.txt): $(tail -n 1 "$OUT/per_session.txt")"
    # The biggest consumers with the first source line of the project or rustls under each.
    grep -n "consumed over" "$OUT/peaks.txt" | head -n 40 | while IFS=: read -r line rest; do
      where=$(sed -n "$((line + 1)),$((line + 40))p" "$OUT/peaks.txt" \
        | grep -E '^\s+at (src|gateway|actors|app|cluster)/' | head -n 2 | tr -s ' ' | tr '\n' ' ')
      echo "$rest :: $where"
    done
    ;;
  cpu)
    RATE=${2:-16000}
    DURATION=${DURATION:-20}
    perf_relay cpu
    bench_loadtest "$WORK" --scenario loadtest/scenarios/many-to-one.toml --rate-frames-per-second "$RATE" \
      --duration-seconds "$DURATION" --out "$OUT/run.json" --html "$OUT/run.html" >"$OUT/run.txt" 2>&1 &
    lt=$!
    sleep 8   # past setup and ramp-up, into the traffic phase
    # PROFILE=tool samples the load tool instead: on one machine its CPU limits the rate too.
    target_pid=$RELAY_PID
    if [ "${PROFILE:-relay}" = tool ]; then
      target_pid=$(pgrep -n -f "^$LOADTEST run --relay-url $RELAY_URL") || { echo "load tool not running" >&2; exit 2; }
    fi
    perf record -e cpu-clock -F 499 -g -p "$target_pid" -o "$OUT/perf.data" -- sleep $(( DURATION - 5 )) \
      >"$OUT/perf-record.txt" 2>&1
    wait "$lt" || true
    perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --percent-limit 0.7 --stdio -g none \
      >"$OUT/self.txt" 2>/dev/null
    perf report -i "$OUT/perf.data" --children --sort symbol --percent-limit 3 --stdio -g none \
      >"$OUT/children.txt" 2>/dev/null
    echo "== ${PROFILE:-relay} at $RATE frames/s: self time ($OUT/self.txt)"
    grep -v '^#' "$OUT/self.txt" | grep -v '^$' | head -n 45
    echo "== inclusive ($OUT/children.txt)"
    grep -v '^#' "$OUT/children.txt" | grep -v '^$' | head -n 40
    ;;
  allocs)
    RATE=${2:-4000}
    WINDOW=${WINDOW:-10}
    perf_relay allocs
    # User-space probes on libc's allocation functions (root; kept for later runs).
    libc=$(ldd "$NOC" | awk '/libc\.so/ { print $3 }')
    for fn in malloc calloc realloc; do
      perf probe -l 2>/dev/null | grep -q "probe_libc:$fn " || perf probe -q -x "$libc" "$fn" \
        || { echo "cannot probe $fn in $libc (needs root and uprobes)" >&2; exit 2; }
    done
    window_traffic "$RATE"
    before=$(relayed)
    perf stat -x, -e probe_libc:malloc,probe_libc:calloc,probe_libc:realloc -p "$RELAY_PID" -o "$OUT/stat.csv" \
      -- sleep "$WINDOW" >/dev/null 2>&1
    after=$(relayed)
    # Where they come from: call graphs of the mallocs over a second more (DWARF unwinding:
    # the release build keeps no frame pointers; about 0.5 GB of samples, summarized and
    # deleted unless KEEP_PERF=1).
    perf record -e probe_libc:malloc --call-graph dwarf,8192 -p "$RELAY_PID" -o "$OUT/perf.data" -- sleep 1 \
      >"$OUT/perf-record.txt" 2>&1
    wait "$LT" || true
    perf script -i "$OUT/perf.data" -F ip,sym 2>/dev/null | python3 bench/alloc_sites.py 2 30 >"$OUT/sites.txt"
    [ -n "${KEEP_PERF:-}" ] || rm -f "$OUT/perf.data"
    calls=$(awk -F, '/probe_libc/ { n += $1 } END { printf "%d", n }' "$OUT/stat.csv")
    echo "== relay at $RATE frames/s for ${WINDOW}s ($(grep -m1 achieved "$OUT/run.txt" | cut -d';' -f1))"
    awk -v c="$calls" -v f="$(( after - before ))" 'BEGIN {
      printf "allocation calls (malloc, calloc, realloc): %d; frames relayed: %d; per frame: %.2f\n", c, f, (f > 0 ? c / f : 0) }'
    echo "== what allocates, by the first frames above the allocator ($OUT/sites.txt)"
    head -n 26 "$OUT/sites.txt"
    ;;
  syscalls)
    RATE=${2:-11000}
    WINDOW=${WINDOW:-10}
    perf_relay syscalls
    window_traffic "$RATE"
    # Every system call the relay's threads make on the frame path, and the reads and
    # writes that found nothing to do (EAGAIN: a wake-up or a call that could be saved).
    events=""
    for call in recvfrom sendto read write readv writev recvmsg sendmsg epoll_wait futex; do
      events+="syscalls:sys_enter_$call,"
    done
    before=$(relayed)
    perf stat -x, -e "${events%,}" -e syscalls:sys_exit_recvfrom --filter 'ret == -11' \
      -p "$RELAY_PID" -o "$OUT/stat.csv" -- sleep "$WINDOW" >/dev/null 2>&1
    after=$(relayed)
    wait "$LT" || true
    echo "== relay at $RATE frames/s for ${WINDOW}s ($(grep -m1 achieved "$OUT/run.txt" | cut -d';' -f1)); frames relayed: $(( after - before ))"
    awk -F, -v f="$(( after - before ))" '/syscalls:sys_/ {
      name = $3; sub(/^syscalls:sys_enter_/, "", name); sub(/^syscalls:sys_exit_recvfrom/, "recvfrom that found nothing (EAGAIN)", name)
      printf "%-40s %10d  %6.3f per frame\n", name, $1, (f > 0 ? $1 / f : 0) }' "$OUT/stat.csv" | tee "$OUT/per_frame.txt"
    ;;
  *)
    echo "usage: bench/profile_relay.sh heap [SESSIONS] | cpu [FRAMES_PER_SECOND] | allocs [FRAMES_PER_SECOND] | syscalls [FRAMES_PER_SECOND]" >&2
    exit 2
    ;;
esac
