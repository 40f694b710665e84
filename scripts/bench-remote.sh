#!/usr/bin/env bash
# Remote detection workers against a local one, same model, same machine (loopback TCP).
#   scripts/bench-remote.sh [STREAMS]     (default 2 streams; SECONDS_PER_RUN=20)
# Three runs back to back, each with one worker (ONNX Runtime, 1 thread) saturated by STREAMS
# streams of the test camera (1280x720, 25 fps, a separate process) asking for 25
# detections/s each:
#   local  `detect.workers = 1`: Unix socket, the picture in shared memory (a slot number)
#   jpeg   `detect.spawn = false` + `infer-worker serve --connect tcp://…` (JPEG, quality 90)
#   i420   the same with `detect.remote.encoding = "i420"` (raw planes)
# Prints per run: detections/s, bytes per frame on the wire, the gateway's hand-off per frame
# (ring write, or JPEG encode + send), the worker's JPEG decode and inference ms, and CPU (% of
# one core) of the gateway and of the worker. Release build.
set -euo pipefail
export SIGHTLINE_RESTREAM__LISTEN=${SIGHTLINE_RESTREAM__LISTEN:-127.0.0.1:0} SIGHTLINE_RESTREAM__UDP_PORT=${SIGHTLINE_RESTREAM__UDP_PORT:-0}
cd "$(dirname "$0")/.."
streams=${1:-2}
seconds=${SECONDS_PER_RUN:-20}
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release --bin gateway --bin infer-worker >&2
  BIN_DIR=${CARGO_TARGET_DIR:-target}/release
fi
model=models/testcam-shapes.onnx
token=bench-remote-worker-token
port=18390
remote=18391
cam=18558
dir=$(mktemp -d)
$BIN_DIR/gateway testcam --listen 127.0.0.1:$cam > "$dir/camera.log" 2>&1 &
camera=$!
pids=()
trap 'kill $camera "${pids[@]}" 2>/dev/null; rm -rf "$dir"' EXIT

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
frames() { curl -s "http://127.0.0.1:$port/metrics" | awk 'index($0, "sightline_detect_frames_total") == 1 {s += $NF} END {print s + 0}'; }

run() {
  local mode=$1
  {
    echo "listen = \"127.0.0.1:$port\""
    echo "data_dir = \"$dir/data-$mode\""
    echo "[testcam]"; echo "enabled = false"
    echo "[webrtc]"; echo "enabled = false"
    echo "[detect]"; echo "model = \"$model\""; echo "threads = 1"; echo "fps = 25"; echo "track = false"
    if [ "$mode" = local ]; then
      echo "workers = 1"
    else
      echo "spawn = false"
      echo "[detect.remote]"; echo "listen = \"127.0.0.1:$remote\""; echo "token = \"$token\""; echo "encoding = \"$mode\""
    fi
    for i in $(seq 1 "$streams"); do
      echo "[[streams]]"; echo "id = \"s$i\""; echo "url = \"rtsp://127.0.0.1:$cam/testcam\""; echo "on_demand = false"
    done
  } > "$dir/$mode.toml"
  $BIN_DIR/gateway --config "$dir/$mode.toml" 2> "$dir/gateway-$mode.log" &
  local gw=$! worker=""
  pids=("$gw")
  if [ "$mode" != local ]; then
    sleep 1
    SIGHTLINE_WORKER_TOKEN=$token $BIN_DIR/infer-worker serve --connect "tcp://127.0.0.1:$remote" --model $model --threads 1 2> "$dir/worker-$mode.log" &
    worker=$!
    pids+=("$worker")
  fi
  sleep 6   # the worker connects, the streams pull, the model warms up
  if [ -z "$worker" ]; then
    worker=$(curl -s "http://127.0.0.1:$port/api/workers" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["workers"][0]["pid"])')
  fi
  local f0 g0 w0 s0 f1 g1 w1 s1
  f0=$(frames); g0=$(ticks "$gw"); w0=$(ticks "$worker"); s0=$(date +%s.%N)
  sleep "$seconds"
  f1=$(frames); g1=$(ticks "$gw"); w1=$(ticks "$worker"); s1=$(date +%s.%N)
  curl -s "http://127.0.0.1:$port/api/workers" > "$dir/workers-$mode.json"
  curl -s "http://127.0.0.1:$port/metrics" > "$dir/metrics-$mode.txt"
  kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null || true
  /usr/bin/python3 - "$mode" "$dir" "$f0" "$f1" "$g0" "$g1" "$w0" "$w1" "$s0" "$s1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
mode, d, f0, f1, g0, g1, w0, w1, s0, s1, hz = sys.argv[1:]
wall = float(s1) - float(s0)
w = json.load(open(f"{d}/workers-{mode}.json"))["workers"][0]
lines = open(f"{d}/metrics-{mode}.txt").read().splitlines()
val = lambda name: sum(float(l.split()[-1]) for l in lines if l.startswith(name))
handoff = val("sightline_detect_handoff_seconds_sum") / max(val("sightline_detect_handoff_seconds_count"), 1) * 1000
cpu = lambda a, b: (float(b) - float(a)) / float(hz) / wall * 100
print(f"{mode:6} detections/s {(float(f1) - float(f0)) / wall:5.1f}  bytes/frame {w['bytes_per_frame']:8d}  "
      f"hand-off {handoff:5.2f} ms  worker decode {w.get('decode_ms') or 0:5.2f} ms  infer {w['infer_ms']:5.2f} ms  "
      f"CPU gateway {cpu(g0, g1):5.1f} %  worker {cpu(w0, w1):5.1f} %")
PY
}

for mode in local jpeg i420; do
  run "$mode"
done
