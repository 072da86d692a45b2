#!/usr/bin/env bash
# Runs every test of the workspace. Works on a fresh Debian machine: installs what the
# tests need (promtool from the `prometheus` package, the OpenSSL headers) when missing.
# Usage: scripts/test.sh [extra nextest/cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

echo "== build (once, all targets)"
cargo build --workspace --all-targets --locked

if cargo nextest --version >/dev/null 2>&1; then
  echo "== tests (cargo nextest)"
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  echo "== tests (cargo test; install cargo-nextest for parallel runs)"
  cargo test --workspace --locked --no-fail-fast "$@"
fi
