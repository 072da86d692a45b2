#!/usr/bin/env bash
# Fuzzes every parser a peer, a browser or an operator feeds (the targets in fuzz/), each for
# a fixed time, with libFuzzer through cargo-fuzz and AddressSanitizer.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  default 60; the hardening runs recorded in docs/benchmarks.md used 600
#   TARGET              default: every target `cargo fuzz list` names
#
# The corpus grows under fuzz/corpus/<target> (kept between runs, not committed); it is
# seeded from what the project ships: the JSON examples of docs/protocol.md and the TOML
# files under examples/. A crash stops the run with the input saved under
# fuzz/artifacts/<target>/; reproduce it with
#   cargo +nightly fuzz run --features libfuzzer <target> fuzz/artifacts/<target>/<file>
# and add the input as a unit test beside the parser before fixing it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "== installing the nightly toolchain (libFuzzer needs -Z sanitizer flags)"
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

fuzz() { cargo +nightly fuzz "$@"; }

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(fuzz list)
fi

# Seeds: every ```json block of the protocol spec, and the shipped configuration examples.
mkdir -p fuzz/corpus/rts_json fuzz/corpus/config
awk '/^```json/{n++; f=sprintf("fuzz/corpus/rts_json/spec-%02d.json", n); next}
     /^```/{f=""; next}
     f{print > f}' docs/protocol.md
for example in examples/*/*.toml; do
  cp "$example" "fuzz/corpus/config/example-$(basename "$(dirname "$example")")-$(basename "$example")"
done

echo "== building the targets (release, debug assertions, AddressSanitizer)"
fuzz build --features libfuzzer -O --debug-assertions

for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  echo "== fuzzing $target for ${seconds}s"
  log="fuzz/logs/$target.log"
  mkdir -p fuzz/logs
  status=0
  fuzz run --features libfuzzer -O --debug-assertions "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done )' "$log" || true
  grep -E 'cov: ' "$log" | tail -1 || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$log" >&2
    echo "!! $target failed (status $status); the input is under fuzz/artifacts/$target/, the log in $log" >&2
    exit 1
  fi
done
echo "== no target failed"
