#!/usr/bin/env bash
# The build step of the container image (Dockerfile), also run outside a container by
# scripts/test.sh so that the image's build commands cannot rot where images cannot be
# built: compiles the programs the image ships and installs them into DEST.
# Usage: scripts/image-build.sh DEST   (PROFILE=release by default; the tests use dev)
set -euo pipefail
dest=${1:?usage: scripts/image-build.sh DEST}
profile=${PROFILE:-release}
cd "$(dirname "$0")/.."
cargo build --locked --profile "$profile" -p noc -p noc-agent -p noc-device -p noc-loadtest
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
mkdir -p "$dest"
for bin in noc ves-agent noc-device loadtest; do
  install -m 0755 "target/$dir/$bin" "$dest/$bin"
done
