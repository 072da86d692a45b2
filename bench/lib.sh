# Shared helpers of the bench scripts: build, start a release relay on loopback, describe
# the machine, and write a section of docs/benchmarks.md. Source it; do not run it.

BENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# NOC_BIN benchmarks another relay build (e.g. a branch's) with the same load tool.
NOC="${NOC_BIN:-$BENCH_ROOT/target/release/noc}"
LOADTEST="$BENCH_ROOT/target/release/loadtest"
# Ports of the benchmark relay (loopback only); override if they are taken.
BENCH_HTTP_PORT=${BENCH_HTTP_PORT:-18443}
BENCH_DEVICE_PORT=${BENCH_DEVICE_PORT:-18444}
BENCH_ADMIN_PORT=${BENCH_ADMIN_PORT:-19090}
RELAY_URL="https://127.0.0.1:$BENCH_HTTP_PORT"
RELAY_PID=""
# Scheduling priority of the relay and the load tool: other work on a shared machine
# (compilers) should not be measured as relay latency. Negative values need root; the
# scripts fall back to the normal priority without it.
BENCH_NICE=${BENCH_NICE:--10}
NICE=(nice -n "$BENCH_NICE")
"${NICE[@]}" true 2>/dev/null || NICE=()

bench_build() {
  if [ -n "${BENCH_SKIP_BUILD:-}" ]; then return 0; fi
  echo "== building release binaries (noc, loadtest)"
  (cd "$BENCH_ROOT" && cargo build --release --locked -p noc -p noc-loadtest)
}

# Starts a relay with a fresh data directory in $1. Password hashing is made cheap
# (argon2id 1 MiB, 1 pass): it only runs during setup (provisioning and activation), never
# on the frame path, and keeps the setup of thousands of devices short.
# Settings for every `noc` the benchmarks start (the relay and the load tool's admin
# commands alike): cheap password hashes, so that setup is quick and no hash of the
# default 19 MiB shows up in a heap profile; a short drain.
BENCH_NOC_ENV=(NOC_ACCOUNTS__ARGON2_MEMORY_KIB=1024 NOC_ACCOUNTS__ARGON2_ITERATIONS=1
  NOC_ACCOUNTS__MAX_CONCURRENT_HASHES=8 NOC_SHUTDOWN__DRAIN_SECONDS=1 NOC_SHUTDOWN__GRACE_SECONDS=1)

# Starts $NOC on loopback with the bench ports; RELAY_ENV (an array of VAR=value) adds
# configuration overrides, e.g. RELAY_ENV=(NOC_LISTEN__WORKERS=1).
bench_start_relay() {
  local dir=$1
  mkdir -p "$dir"
  # One descriptor per session, on both sides (root may raise the hard limit).
  ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  RUST_LOG=${RELAY_LOG:-warn} \
    "${NICE[@]}" env "${BENCH_NOC_ENV[@]}" ${RELAY_ENV[@]+"${RELAY_ENV[@]}"} "$NOC" serve --data-dir "$dir/data" \
      --http-listen "127.0.0.1:$BENCH_HTTP_PORT" \
      --device-listen "127.0.0.1:$BENCH_DEVICE_PORT" \
      --admin-listen "127.0.0.1:$BENCH_ADMIN_PORT" --console-listen 127.0.0.1:0 >"$dir/relay.log" 2>&1 &
  RELAY_PID=$!
  bench_wait_ready "$BENCH_ADMIN_PORT" "$dir/relay.log" \
    "relay pid $RELAY_PID ready on $RELAY_URL (device port $BENCH_DEVICE_PORT)"
}

# bench_wait_ready ADMIN_PORT LOG MESSAGE: waits (up to 20 s) until the node behind the
# admin port is ready and prints MESSAGE; otherwise prints its log and fails.
bench_wait_ready() {
  local admin=$1 log=$2 message=$3
  for _ in $(seq 1 100); do
    if curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1; then
      echo "== $message"
      return 0
    fi
    sleep 0.2
  done
  echo "not ready after 20 s; log $log:" >&2
  cat "$log" >&2
  return 1
}

bench_stop_relay() {
  if [ -n "$RELAY_PID" ] && kill -0 "$RELAY_PID" 2>/dev/null; then
    kill "$RELAY_PID" 2>/dev/null || true
    wait "$RELAY_PID" 2>/dev/null || true
  fi
  RELAY_PID=""
}

# One load-test run against the benchmark relay; extra arguments are loadtest flags.
bench_loadtest() {
  local dir=$1
  shift
  "${NICE[@]}" env "${BENCH_NOC_ENV[@]}" "$LOADTEST" run --relay-url "$RELAY_URL" --cacert "$dir/data/tls/cert.pem" \
    --noc-bin "$NOC" --data-dir "$dir/data" --credentials "$dir/credentials.json" \
    --relay-pid "$RELAY_PID" --relay-metrics-url "http://127.0.0.1:$BENCH_ADMIN_PORT/metrics" \
    --quiet "$@"
}

# On a shared host the hypervisor may give part of this machine's CPU time to other
# guests ("steal" in /proc/stat, reported by the load tool per run). A run during which it
# took much measured the neighbours as much as the server: on 2026-12-07 one comparison's
# runs had 0–19.5% stolen and a server's p99 moved by up to a factor of six between its
# rounds. A run with more than STEAL_LIMIT_PERCENT (default 2) of the machine's CPU time
# stolen over its traffic phase is run again, up to STEAL_RETRIES (default 2) more times;
# the last try counts and says so. STEAL_LIMIT_PERCENT=100 turns the check off.
STEAL_LIMIT_PERCENT=${STEAL_LIMIT_PERCENT:-2}
STEAL_RETRIES=${STEAL_RETRIES:-2}

# Prints the share of CPU time stolen during the traffic phase of result file $1 ("n/a"
# when the file has none), and exits 3 when it is over STEAL_LIMIT_PERCENT.
bench_steal() {
  python3 - "$1" "$STEAL_LIMIT_PERCENT" <<'PY'
import json, sys
try:
    steal = (json.load(open(sys.argv[1])).get("host") or {}).get("steal_percent_traffic")
except (OSError, ValueError):
    steal = None  # no result to judge: the caller reports the run itself
print("n/a" if steal is None else f"{steal:.1f}%")
sys.exit(3 if steal is not None and steal > float(sys.argv[2]) else 0)
PY
}

# Runs `"$@"` (one load-tool run that writes $1.json, $1.txt and perhaps $1.html, with the
# server set up by the command itself or already running) until the host steals no more
# than the limit during it, at most 1 + STEAL_RETRIES times. Each discarded try's files
# are kept as $1.stolen-N.*; returns the command's status.
bench_run_unstolen() {
  local base=$1 try steal
  shift
  for try in $(seq 0 "$STEAL_RETRIES"); do
    "$@" || return
    steal=$(bench_steal "$base.json") && return 0
    [ "$try" -lt "$STEAL_RETRIES" ] || { echo "  the host stole $steal of the CPU time in every try; keeping the last" >&2; return 0; }
    echo "  the host stole $steal of the CPU time (limit ${STEAL_LIMIT_PERCENT}%): running again" >&2
    for f in "$base".json "$base".txt "$base".html; do
      [ -e "$f" ] && mv "$f" "${f%.*}.stolen-$((try + 1)).${f##*.}"
    done
  done
}

bench_machine() {
  local model mem
  model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
  mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
  echo "$(nproc) CPUs (${model:-unknown}), $mem RAM, Linux $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
}

# Replaces the section between <!-- NAME:begin --> and <!-- NAME:end --> of
# docs/benchmarks.md with the contents of file $2 (appends the section if missing).
bench_write_section() {
  local name=$1 file=$2
  python3 - "$BENCH_ROOT/docs/benchmarks.md" "$name" "$file" <<'PY'
import sys, re, pathlib
doc, name, body = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3]).read_text()
text = doc.read_text() if doc.exists() else "# Benchmarks\n"
begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
block = f"{begin}\n{body.rstrip()}\n{end}"
if begin in text and end in text:
    text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
else:
    text = text.rstrip() + "\n\n" + block + "\n"
doc.write_text(text)
PY
}

# The session-count benchmarks: one descriptor per session on both sides, so raise the
# open-file limit as far as this machine allows and remember it in FD_LIMIT.
bench_raise_fd_limit() {
  ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  FD_LIMIT=$(ulimit -n)
}

# Succeeds when N sessions (plus listeners and stores) fit under FD_LIMIT; otherwise says
# so: counts above what the machine allows are skipped, not measured wrong.
bench_fits_fd_limit() {
  local n=$1
  if [ "$FD_LIMIT" != unlimited ] && [ $(( n + 1000 )) -gt "$FD_LIMIT" ]; then
    echo "skipping $n sessions: the open-file limit is $FD_LIMIT and cannot be raised here"
    return 1
  fi
}

# The report line for the skipped counts given as arguments.
bench_skipped_note() {
  echo "Not measured: $* sessions — this machine's per-process open-file limit is $FD_LIMIT and cannot be raised (no CAP_SYS_RESOURCE), and the relay needs one descriptor per session."
}
