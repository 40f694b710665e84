#!/usr/bin/env bash
# Gateway CPU with N SSE viewers of the built-in test camera (720p25, 2 Mbit/s) at 10 fps.
# The camera runs as its own process (`gateway testcam`), so its encoder is not counted.
#   scripts/bench-sse.sh [VIEWERS...]      (default: 100 500; 30 s each)
# Prints, per N, loadtest's JSON line and the gateway's CPU% (of one core) and RSS, read from
# /proc over the measuring window. Release build; bounded in time; loopback only.
set -euo pipefail
# Gateways here serve no RTSP restream on the default ports (two would collide on 8554).
export SIGHTLINE_RESTREAM__LISTEN=${SIGHTLINE_RESTREAM__LISTEN:-127.0.0.1:0} SIGHTLINE_RESTREAM__UDP_PORT=${SIGHTLINE_RESTREAM__UDP_PORT:-0}
cd "$(dirname "$0")/.."
# BIN_DIR=<dir> runs binaries built elsewhere (e.g. another commit's, side by side).
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release --bin gateway --bin loadtest >&2
  BIN_DIR=${CARGO_TARGET_DIR:-target}/release
fi
seconds=${SECONDS_PER_RUN:-30}
port=18380
cam=18554
$BIN_DIR/gateway testcam --listen 127.0.0.1:$cam 2>/tmp/bench-testcam.log &
camera=$!
trap 'kill $camera 2>/dev/null' EXIT
for n in "${@:-100 500}"; do
  for viewers in $n; do
    SIGHTLINE_TESTCAM__ENABLED=false $BIN_DIR/gateway --listen 127.0.0.1:$port \
      --stream testcam=rtsp://127.0.0.1:$cam/testcam 2>/tmp/bench-gateway.log &
    gw=$!
    trap 'kill $gw $camera 2>/dev/null' EXIT
    sleep 1
    ticks() { awk '{print $14 + $15}' "/proc/$gw/stat"; }
    # Warm up: the first viewer starts ingest and the decoder.
    timeout 10 curl -sN "http://127.0.0.1:$port/api/streams/testcam/feed?fps=10" -o /dev/null --max-time 3 || true
    $BIN_DIR/loadtest sse --url "http://127.0.0.1:$port" --stream testcam --viewers "$viewers" \
      --fps 10 --seconds "$seconds" > /tmp/bench-loadtest.out &
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
    trap 'kill $camera 2>/dev/null' EXIT
  done
done
