# Peer servers the bench scripts compare the relay with: a Mosquitto MQTT broker, a NATS
# server and an nginx TLS stream proxy, all on loopback with TLS and a shared self-signed
# certificate. Each keeps its config, log and pid files in the working directory passed to
# it. Source it (after lib.sh, whose NICE priority prefix the servers run with when it is
# set; they start as simple commands, so $! is the server's own pid); do not run it.
#
# The system instances of Mosquitto (1883) and NATS (4222) are left alone: the peers take
# the ports they are given. nginx is installed from apt on first use.

MOSQUITTO_BIN=${MOSQUITTO_BIN:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
NATS_BIN=${NATS_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)}
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
MOSQUITTO_PID=""
NATS_PID=""
NGINX_PID=""
PEERS_SUDO=""
[ "$(id -u)" -eq 0 ] || PEERS_SUDO="sudo"

# Alive and not a zombie: a stopped child stays in the process table until it is waited.
_peers_alive() {
  local pid=$1 state
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$state" ] && [ "$state" != Z ]
}

# Waits up to 10 s until "$@" succeeds while process $pid runs; on failure prints $log and
# stops the process (the caller's global pid keeps its previous value).
_peers_wait_ready() {
  local name=$1 pid=$2 log=$3
  shift 3
  for _ in $(seq 1 50); do
    if ! _peers_alive "$pid"; then
      break
    fi
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  echo "$name did not become ready; log ($log):" >&2
  cat "$log" >&2 2>/dev/null || true
  stop_peer "$pid"
  return 1
}

# Fails when something already listens on 127.0.0.1:$1: the readiness checks would succeed
# against it (and nginx keeps retrying bind() for a while before it gives up).
_peers_port_free() {
  local port=$1
  if timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
    echo "port 127.0.0.1:$port is already in use" >&2
    return 1
  fi
}

# A TLS handshake on 127.0.0.1:$1 that verifies the peer certificate in $2.
_peers_tls_ok() {
  local port=$1 cert=$2
  timeout 3 openssl s_client -connect "127.0.0.1:$port" -CAfile "$cert" -verify_return_error \
    -verify_hostname localhost </dev/null >/dev/null 2>&1
}

# The first bytes a NATS server sends on 127.0.0.1:$1 are its plain-text INFO line.
_peers_nats_info_ok() {
  local port=$1 head
  head=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port; head -c 4 <&3" 2>/dev/null) || return 1
  [ "$head" = INFO ]
}

# One descriptor per connection (root may raise the hard limit).
_peers_raise_nofile() {
  ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

# Writes $1/peer-cert.pem and $1/peer-key.pem: a self-signed P-256 end-entity certificate
# for localhost and 127.0.0.1, valid one day. It is not a CA certificate (rustls refuses a
# CA certificate as a server certificate), and it is the benchmark client's trust anchor.
peers_cert() {
  local dir=$1
  mkdir -p "$dir"
  cat >"$dir/peer-cert.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
x509_extensions = ext
[dn]
CN = localhost
[ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
EOF
  openssl req -x509 -config "$dir/peer-cert.cnf" -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -nodes -days 1 -keyout "$dir/peer-key.pem" -out "$dir/peer-cert.pem" 2>/dev/null
}

# Mosquitto with QoS 1 flow control out of the way: unlimited in-flight and queued
# messages per client, Nagle off.
start_mosquitto() {
  local dir=$1 port=$2 pid
  mkdir -p "$dir"
  _peers_port_free "$port" || return 1
  cat >"$dir/mosquitto.conf" <<EOF
per_listener_settings false
# As root mosquitto would switch to the mosquitto user, which may not read $dir.
user $(id -un)
pid_file $dir/mosquitto.pid
persistence false
log_dest file $dir/mosquitto.log
log_type error
log_type warning
connection_messages false
allow_anonymous true
max_inflight_messages 0
max_queued_messages 0
max_keepalive 600
set_tcp_nodelay true
listener $port 127.0.0.1
certfile $dir/peer-cert.pem
keyfile $dir/peer-key.pem
EOF
  : >"$dir/mosquitto.log"
  _peers_raise_nofile
  ${NICE[@]+"${NICE[@]}"} "$MOSQUITTO_BIN" -c "$dir/mosquitto.conf" >>"$dir/mosquitto.log" 2>&1 &
  pid=$!
  _peers_wait_ready mosquitto "$pid" "$dir/mosquitto.log" _peers_tls_ok "$port" "$dir/peer-cert.pem" \
    || return 1
  MOSQUITTO_PID=$pid
  echo "== mosquitto pid $MOSQUITTO_PID ready on 127.0.0.1:$port (TLS)"
}

# NATS with a large per-connection send buffer (max_pending) and a long write deadline, so
# that a single subscriber taking every message is not cut off as a slow consumer. An
# optional third argument is a monitoring port.
start_nats() {
  local dir=$1 port=$2 monitor=${3:-} pid
  mkdir -p "$dir"
  _peers_port_free "$port" || return 1
  cat >"$dir/nats.conf" <<EOF
listen: "127.0.0.1:$port"
tls {
  cert_file: "$dir/peer-cert.pem"
  key_file: "$dir/peer-key.pem"
  timeout: 5
}
write_deadline: "10s"
max_pending: 268435456
log_file: "$dir/nats.log"
logtime: true
pid_file: "$dir/nats.pid"
EOF
  if [ -n "$monitor" ]; then
    echo "http: \"127.0.0.1:$monitor\"" >>"$dir/nats.conf"
  fi
  : >"$dir/nats.log"
  _peers_raise_nofile
  ${NICE[@]+"${NICE[@]}"} "$NATS_BIN" -c "$dir/nats.conf" >>"$dir/nats.log" 2>&1 &
  pid=$!
  _peers_wait_ready nats-server "$pid" "$dir/nats.log" _peers_nats_info_ok "$port" || return 1
  NATS_PID=$pid
  echo "== nats-server pid $NATS_PID ready on 127.0.0.1:$port (TLS)"
}

# The path of the dynamic stream module, or nothing when the stream module is built in.
_peers_nginx_stream_module() {
  local so
  "$NGINX_BIN" -V 2>&1 | grep -q -- '--with-stream=dynamic' || return 0
  for so in /usr/lib/nginx/modules/ngx_stream_module.so /usr/share/nginx/modules/ngx_stream_module.so \
    /usr/lib64/nginx/modules/ngx_stream_module.so; do
    if [ -f "$so" ]; then
      echo "$so"
      return 0
    fi
  done
  return 1
}

_peers_nginx_has_stream() {
  [ -x "$NGINX_BIN" ] || return 1
  if "$NGINX_BIN" -V 2>&1 | grep -q -- '--with-stream=dynamic'; then
    [ -n "$(_peers_nginx_stream_module)" ]
  else
    "$NGINX_BIN" -V 2>&1 | grep -q -- '--with-stream'
  fi
}

# Installs nginx and its stream module (a separate package on Debian) when missing, and
# stops the system service the package may have started on port 80.
peers_ensure_nginx() {
  _peers_nginx_has_stream && return 0
  echo "== installing nginx libnginx-mod-stream"
  $PEERS_SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $PEERS_SUDO apt-get install -y -qq --no-install-recommends \
    nginx libnginx-mod-stream >/dev/null
  NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
  if [ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
    echo "== stopping the system nginx service"
    if [ -d /run/systemd/system ]; then
      $PEERS_SUDO systemctl disable --now nginx >/dev/null 2>&1 || true
    else
      $PEERS_SUDO service nginx stop >/dev/null 2>&1 || true
    fi
  fi
  _peers_nginx_has_stream || { echo "nginx has no stream module" >&2; return 1; }
}

# nginx as a TLS stream proxy: terminates TLS on $2 and opens one TLS connection to
# 127.0.0.1:$3 per client connection. Everything it writes stays in $1.
start_nginx_stream() {
  local dir=$1 port=$2 upstream=$3 module load="" pid
  mkdir -p "$dir"
  _peers_port_free "$port" || return 1
  peers_ensure_nginx || return 1
  module=$(_peers_nginx_stream_module) || return 1
  if [ -n "$module" ]; then load="load_module $module;"; fi
  cat >"$dir/nginx.conf" <<EOF
$load
daemon off;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
worker_processes auto;
worker_rlimit_nofile 20000;
events {
  worker_connections 20000;
}
stream {
  server {
    listen 127.0.0.1:$port ssl;
    ssl_certificate $dir/peer-cert.pem;
    ssl_certificate_key $dir/peer-key.pem;
    # nginx 1.22 defaults to TLSv1-TLSv1.2 on both sides; TLS 1.3 as the other servers.
    ssl_protocols TLSv1.2 TLSv1.3;
    proxy_ssl_protocols TLSv1.2 TLSv1.3;
    tcp_nodelay on;
    proxy_pass 127.0.0.1:$upstream;
    proxy_ssl on;
    proxy_ssl_verify off;
  }
}
EOF
  : >"$dir/nginx-error.log"
  _peers_raise_nofile
  ${NICE[@]+"${NICE[@]}"} "$NGINX_BIN" -p "$dir" -c "$dir/nginx.conf" -e "$dir/nginx-error.log" \
    >>"$dir/nginx-error.log" 2>&1 &
  pid=$!
  # nginx completes the client handshake before it connects upstream, so the check works
  # while the upstream is still down.
  _peers_wait_ready nginx "$pid" "$dir/nginx-error.log" _peers_tls_ok "$port" "$dir/peer-cert.pem" \
    || return 1
  NGINX_PID=$pid
  echo "== nginx pid $NGINX_PID ready on 127.0.0.1:$port (TLS) -> 127.0.0.1:$upstream (TLS)"
}

# Stops process $1 (and its children, e.g. nginx workers): TERM, then KILL after 5 s.
stop_peer() {
  local pid=${1:-} children child
  [ -n "$pid" ] || return 0
  if _peers_alive "$pid"; then
    children=$(pgrep -P "$pid" || true)
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      _peers_alive "$pid" || break
      sleep 0.1
    done
    if _peers_alive "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
    for child in $children; do
      if _peers_alive "$child"; then kill -KILL "$child" 2>/dev/null || true; fi
    done
  fi
  wait "$pid" 2>/dev/null || true
}

stop_peers() {
  stop_peer "$MOSQUITTO_PID"
  stop_peer "$NATS_PID"
  stop_peer "$NGINX_PID"
  MOSQUITTO_PID=""
  NATS_PID=""
  NGINX_PID=""
}

# Resident memory of process $1 and its children (nginx workers) in KiB.
peer_rss_kib() {
  local pid=$1 total=0 p rss
  for p in "$pid" $(pgrep -P "$pid" || true); do
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    total=$((total + ${rss:-0}))
  done
  echo "$total"
}
