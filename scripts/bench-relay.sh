#!/usr/bin/env bash
# Relay cost per replica for a `pull = "one_per_cluster"` stream: Redis, the built-in test
# camera (720p25, 2 Mbit/s) as its own process, two release gateways A and B. A pulls the
# camera (its viewer came first); B relays it from A's RTSP restream. Each has one viewer, an
# RTSP client (`ffmpeg -c copy -f null`). Then the same with `pull = "every_replica"` (both
# pull the camera). Prints per mode each gateway's CPU% (of one core) and RSS over the window,
# and how many clients the camera served.
#   scripts/bench-relay.sh        (SECONDS_PER_RUN=20 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release --bin gateway >&2
  BIN_DIR=${CARGO_TARGET_DIR:-target}/release
fi
seconds=${SECONDS_PER_RUN:-20}
dir=$(mktemp -d)
redis-server --port 18479 --save '' --appendonly no >/dev/null &
redis=$!
RUST_LOG=info NO_COLOR=1 $BIN_DIR/gateway testcam --listen 127.0.0.1:18555 2>"$dir/camera.log" &
camera=$!
pids=()
trap 'kill $redis $camera "${pids[@]}" 2>/dev/null; rm -rf "$dir"' EXIT
sleep 1
for mode in one_per_cluster every_replica; do
  redis-cli -p 18479 flushall >/dev/null
  gws=()
  for r in A B; do
    port=$([ $r = A ] && echo 18481 || echo 18482)
    rtsp=$([ $r = A ] && echo 18591 || echo 18592)
    cat >"$dir/$r.toml" <<EOF
listen = "127.0.0.1:$port"
replica_id = "$r"
data_dir = "$dir/$r-data"
[state]
redis_url = "redis://127.0.0.1:18479"
[testcam]
enabled = false
[detect]
enabled = false
[webrtc]
enabled = false
[restream]
listen = "127.0.0.1:$rtsp"
udp_port = 0
[[streams]]
id = "cam"
url = "rtsp://127.0.0.1:18555/testcam"
pull = "$mode"
EOF
    $BIN_DIR/gateway --config "$dir/$r.toml" 2>"$dir/$r.log" &
    gws+=($!)
    pids+=($!)
  done
  sleep 1
  before=$(grep -c "client playing" "$dir/camera.log" || true)
  timeout $((seconds + 15)) ffmpeg -nostats -v error -rtsp_transport tcp -i rtsp://127.0.0.1:18591/cam -c copy -f null - </dev/null &
  c1=$!
  sleep 3
  timeout $((seconds + 10)) ffmpeg -nostats -v error -rtsp_transport tcp -i rtsp://127.0.0.1:18592/cam -c copy -f null - </dev/null &
  c2=$!
  sleep 4
  ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
  hz=$(getconf CLK_TCK)
  a0=$(ticks "${gws[0]}"); b0=$(ticks "${gws[1]}"); s0=$(date +%s.%N)
  sleep $((seconds - 8))
  a1=$(ticks "${gws[0]}"); b1=$(ticks "${gws[1]}"); s1=$(date +%s.%N)
  rss_a=$(awk '/VmRSS/{print $2}' "/proc/${gws[0]}/status"); rss_b=$(awk '/VmRSS/{print $2}' "/proc/${gws[1]}/status")
  after=$(grep -c "client playing" "$dir/camera.log" || true)
  cpu() { echo "($2 - $1) / $hz / ($s1 - $s0) * 100" | bc -l; }
  printf '{"mode":"%s","camera_clients":%d,"a_cpu_percent":%.1f,"a_rss_kib":%d,"b_cpu_percent":%.1f,"b_rss_kib":%d}\n' \
    "$mode" "$((after - before))" "$(cpu "$a0" "$a1")" "$rss_a" "$(cpu "$b0" "$b1")" "$rss_b"
  kill $c1 $c2 "${gws[@]}" 2>/dev/null || true
  wait $c1 $c2 "${gws[@]}" 2>/dev/null || true
  sleep 1
done
