#!/usr/bin/env bash
# Gateway CPU and RSS with N RTSP restream clients of the built-in test camera (720p25,
# 2 Mbit/s), each an independent client: `ffmpeg -c copy -f null` (RTP over TCP interleaved,
# or UDP with TRANSPORT=udp; depacketized, not decoded). The camera runs as its own process
# (`gateway testcam`), so its encoder is not counted.
#   scripts/bench-restream.sh [CLIENTS...]      (default: 1 10 50 100; 20 s each)
# Prints, per N: the gateway's CPU% (of one core) and RSS over the window, read from /proc,
# the clients still running at the end, and the warm DESCRIBE -> first frame time of one more
# client (ffprobe). Release build; bounded in time; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release --bin gateway >&2
  BIN_DIR=${CARGO_TARGET_DIR:-target}/release
fi
seconds=${SECONDS_PER_RUN:-20}
transport=${TRANSPORT:-tcp}
port=18480
cam=18555
rtsp=18554
$BIN_DIR/gateway testcam --listen 127.0.0.1:$cam 2>/tmp/bench-testcam.log &
camera=$!
trap 'kill $camera 2>/dev/null' EXIT
for n in ${@:-1 10 50 100}; do
  # Detection off: it would decode the stream (10 fps) whatever the clients do.
  SIGHTLINE_DETECT__ENABLED=false SIGHTLINE_TESTCAM__ENABLED=false SIGHTLINE_RESTREAM__LISTEN=127.0.0.1:$rtsp SIGHTLINE_RESTREAM__UDP_PORT=0 \
    $BIN_DIR/gateway --listen 127.0.0.1:$port --stream testcam=rtsp://127.0.0.1:$cam/testcam 2>/tmp/bench-gateway.log &
  gw=$!
  trap 'kill $gw $camera 2>/dev/null; pkill -f "ffmpeg -nostats -v error -rtsp_transport" || true' EXIT
  sleep 1
  url=rtsp://127.0.0.1:$rtsp/testcam
  clients=()
  for _ in $(seq "$n"); do
    timeout $((seconds + 10)) ffmpeg -nostats -v error -rtsp_transport "$transport" -i "$url" -c copy -f null - </dev/null &
    clients+=($!)
  done
  sleep 4   # ramp-up
  ticks() { awk '{print $14 + $15}' "/proc/$gw/stat"; }
  hz=$(getconf CLK_TCK)
  t0=$(ticks); s0=$(date +%s.%N)
  sleep $((seconds - 6))
  t1=$(ticks); s1=$(date +%s.%N)
  rss=$(awk '/VmRSS/{print $2}' "/proc/$gw/status")
  alive=0
  for c in "${clients[@]}"; do kill -0 "$c" 2>/dev/null && alive=$((alive + 1)); done
  p0=$(date +%s.%N)
  ffprobe -v error -rtsp_transport "$transport" -show_entries stream=codec_name -of csv=p=0 "$url" >/dev/null
  p1=$(date +%s.%N)
  cpu=$(echo "($t1 - $t0) / $hz / ($s1 - $s0) * 100" | bc -l)
  printf '{"clients":%d,"transport":"%s","alive":%d,"gateway_cpu_percent":%.1f,"gateway_rss_kib":%d,"ffprobe_warm_ms":%.0f}\n' \
    "$n" "$transport" "$alive" "$cpu" "$rss" "$(echo "($p1 - $p0) * 1000" | bc -l)"
  for c in "${clients[@]}"; do kill "$c" 2>/dev/null || true; done
  # (`wait` with no pids would wait for the camera too.)
  if [ "$n" -gt 0 ]; then wait "${clients[@]}" 2>/dev/null || true; fi
  kill $gw; wait $gw 2>/dev/null || true
done
