#!/usr/bin/env bash
# Gateway CPU and RSS with N LL-HLS viewers of the built-in test camera (720p25, 2 Mbit/s),
# each fetching like hls.js in low-latency mode (`loadtest hls`: blocking playlist reloads and
# parts side by side). The camera runs as its own process (`gateway testcam`).
#   scripts/bench-hls.sh [VIEWERS...]      (default: 100 500; 30 s each)
# Prints, per N, the gateway's CPU% (of one core) and RSS over the measuring window, then
# loadtest's JSON line. Release build; bounded in time; loopback only.
set -euo pipefail
# Gateways here serve no RTSP restream on the default ports (two would collide on 8554).
export SIGHTLINE_RESTREAM__LISTEN=${SIGHTLINE_RESTREAM__LISTEN:-127.0.0.1:0} SIGHTLINE_RESTREAM__UDP_PORT=${SIGHTLINE_RESTREAM__UDP_PORT:-0}
cd "$(dirname "$0")/.."
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release --bin gateway --bin loadtest >&2
  BIN_DIR=${CARGO_TARGET_DIR:-target}/release
fi
seconds=${SECONDS_PER_RUN:-30}
port=18390
cam=18564
data=$(mktemp -d)
$BIN_DIR/gateway testcam --listen 127.0.0.1:$cam 2>/tmp/bench-testcam.log &
camera=$!
trap 'kill $camera 2>/dev/null; rm -rf "$data"' EXIT
for viewers in ${@:-100 500}; do
  SIGHTLINE_TESTCAM__ENABLED=false SIGHTLINE_DATA_DIR=$data $BIN_DIR/gateway --listen 127.0.0.1:$port \
    --stream testcam=rtsp://127.0.0.1:$cam/testcam 2>/tmp/bench-gateway.log &
  gw=$!
  trap 'kill $gw $camera 2>/dev/null; rm -rf "$data"' EXIT
  sleep 1
  ticks() { awk '{print $14 + $15}' "/proc/$gw/stat"; }
  # Warm up: the first request starts the producer (and the camera pull).
  timeout 10 curl -s "http://127.0.0.1:$port/api/streams/testcam/hls/index.m3u8" -o /dev/null || true
  ramp=$(( 4000 / viewers )); [ "$ramp" -ge 1 ] || ramp=1
  $BIN_DIR/loadtest hls --url "http://127.0.0.1:$port" --stream testcam --viewers "$viewers" \
    --seconds "$seconds" --ramp-ms "$ramp" > /tmp/bench-loadtest.out &
  lt=$!
  sleep 5   # ramp-up
  t0=$(ticks); s0=$(date +%s.%N)
  sleep $((seconds - 8))
  t1=$(ticks); s1=$(date +%s.%N)
  rss=$(awk '/VmRSS/{print $2}' "/proc/$gw/status")
  wait $lt
  hz=$(getconf CLK_TCK)
  cpu=$(echo "($t1 - $t0) / $hz / ($s1 - $s0) * 100" | bc -l)
  printf 'viewers=%s gateway_cpu=%.1f%% rss=%s_KiB\n' "$viewers" "$cpu" "$rss"
  tail -1 /tmp/bench-loadtest.out
  kill $gw; wait $gw 2>/dev/null || true
  trap 'kill $camera 2>/dev/null; rm -rf "$data"' EXIT
done
