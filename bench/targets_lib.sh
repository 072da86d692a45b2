# The servers the comparison scripts run the load tool against, started one at a time
# with the same shape (1 hub, DEVICES devices, 256-byte payloads, both ways, TLS on every
# hop). Source it after lib.sh and peers_lib.sh, set WORK, RESULTS, DEVICES and DURATION,
# and call targets_prepare; do not run it.
#
# target_start TARGET starts the server and defines `throughput_run RATE TAG` (one
# open-loop run writing "$OUT/TAG.json" and "$OUT/TAG.html"); target_stop stops it.
#
# Targets:
#   relay      this relay (device channel + RTS, acknowledged frames)
#   mosquitto  Mosquitto, MQTT 3.1.1 over TLS, QoS 1
#   nats       nats-server, TLS, core pub/sub
#   nginx      nginx's stream module proxying TLS 1:1 (decrypt, re-encrypt, forward)
#   direct     no server: the devices talk TLS straight to the load tool's own hub, so
#              its results are the tool's own cost and latency floor

# Builds the binaries, makes $RESULTS and the peers' certificate (PEER_CERT, PEER_KEY).
targets_prepare() {
  bench_build
  mkdir -p "$RESULTS"
  peers_cert "$WORK/peers"
  PEER_CERT="$WORK/peers/peer-cert.pem"
  PEER_KEY="$WORK/peers/peer-key.pem"
}

MQTT_PORT=${MQTT_PORT:-28883}
NATS_PORT=${NATS_PORT:-24222}
NGINX_PORT=${NGINX_PORT:-28443}
SINK_PORT=${SINK_PORT:-28444}

# One run against a peer server; $1 protocol, $2 address, $3 PIDs to sample (may be
# empty), $4 rate, $5 tag, then extra flags.
peer_loadtest() {
  local protocol=$1 addr=$2 pids=$3 rate=$4 tag=$5
  shift 5
  local pid_flags=()
  [ -n "$pids" ] && pid_flags=(--peer-pid "$pids")
  "${NICE[@]}" "$LOADTEST" peer --protocol "$protocol" --addr "$addr" --cacert "$PEER_CERT" \
    ${pid_flags[@]+"${pid_flags[@]}"} --scenario loadtest/scenarios/many-to-one.toml \
    --devices-per-ves "$DEVICES" --rate-frames-per-second "$rate" --duration-seconds "$DURATION" \
    --out "$OUT/$tag.json" --html "$OUT/$tag.html" --quiet "$@"
}

target_start() {
  case $1 in
    relay)
      bench_start_relay "$WORK/relay"
      throughput_run() {
        bench_loadtest "$WORK/relay" --scenario loadtest/scenarios/many-to-one.toml \
          --devices-per-ves "$DEVICES" --rate-frames-per-second "$1" --duration-seconds "$DURATION" \
          --out "$OUT/$2.json" --html "$OUT/$2.html"
      }
      ;;
    mosquitto)
      start_mosquitto "$WORK/peers" "$MQTT_PORT"
      throughput_run() { peer_loadtest mqtt "127.0.0.1:$MQTT_PORT" "$MOSQUITTO_PID" "$1" "$2"; }
      ;;
    nats)
      start_nats "$WORK/peers" "$NATS_PORT"
      throughput_run() { peer_loadtest nats "127.0.0.1:$NATS_PORT" "$NATS_PID" "$1" "$2"; }
      ;;
    nginx)
      start_nginx_stream "$WORK/peers" "$NGINX_PORT" "$SINK_PORT"
      NGINX_PIDS=$(echo "$NGINX_PID" $(pgrep -P "$NGINX_PID") | tr ' ' ',')
      throughput_run() {
        peer_loadtest forward "127.0.0.1:$NGINX_PORT" "$NGINX_PIDS" "$1" "$2" \
          --sink-listen "127.0.0.1:$SINK_PORT" --sink-cert "$PEER_CERT" --sink-key "$PEER_KEY"
      }
      ;;
    direct)
      throughput_run() {
        peer_loadtest forward "127.0.0.1:$SINK_PORT" "" "$1" "$2" \
          --sink-listen "127.0.0.1:$SINK_PORT" --sink-cert "$PEER_CERT" --sink-key "$PEER_KEY"
      }
      ;;
    *)
      echo "unknown target $1 (relay, mosquitto, nats, nginx, direct)" >&2
      return 2
      ;;
  esac
}

target_stop() {
  bench_stop_relay
  stop_peers
}

target_describe() {
  case $1 in
    relay) echo "this relay (device channel + RTS over TLS, acknowledged frames)" ;;
    mosquitto) echo "Mosquitto $(mosquitto -h 2>/dev/null | head -n1 | awk '{print $3}') (MQTT 3.1.1 over TLS, QoS 1)" ;;
    nats) echo "NATS $(nats-server --version 2>/dev/null | awk '{print $2}') (TLS, core pub/sub)" ;;
    nginx) echo "nginx $(nginx -v 2>&1 | sed 's|.*/||') stream, TLS 1:1 (ceiling)" ;;
    direct) echo "no server: the load tool's devices and hub, TLS straight to each other (the tool's floor)" ;;
  esac
}
