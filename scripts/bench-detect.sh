#!/usr/bin/env bash
# Detection throughput through the gateway against bare ONNX Runtime, same model and threads.
#   scripts/bench-detect.sh [STREAMS] [WORKERS]     (defaults: 4 streams, 1 worker; SECONDS=20)
# 1. `infer-worker bench`: the worker's whole per-frame path (I420 -> letterbox -> model ->
#    NMS) in a loop on one core: the bare detections/s.
# 2. The gateway with STREAMS streams of the test camera (1280x720, 25 fps, a separate
#    process), each asking for 25 detections/s (more than the workers can do, so they are
#    saturated), and 20 WebRTC viewers (`loadtest whep`) on the first stream meanwhile.
# Prints: detections/s through the gateway and its share of bare x workers, frames skipped/s,
# the gateway's hand-off time per frame (copy into the ring + header), frame-to-box p50/p99,
# and loadtest's line (WebRTC loss while the workers are saturated). Release build; loopback.
set -euo pipefail
# Gateways here serve no RTSP restream on the default ports (two would collide on 8554).
export SIGHTLINE_RESTREAM__LISTEN=${SIGHTLINE_RESTREAM__LISTEN:-127.0.0.1:0} SIGHTLINE_RESTREAM__UDP_PORT=${SIGHTLINE_RESTREAM__UDP_PORT:-0}
cd "$(dirname "$0")/.."
streams=${1:-4}
workers=${2:-1}
seconds=${SECONDS_PER_RUN:-20}
# BIN_DIR=<dir> runs binaries built elsewhere (e.g. another commit's, side by side).
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release --bin gateway --bin infer-worker --bin loadtest >&2
  BIN_DIR=${CARGO_TARGET_DIR:-target}/release
fi
model=models/testcam-shapes.onnx
# Bare first, on a quiet machine (the camera and gateway are not running yet).
bare_json=$($BIN_DIR/infer-worker bench --model $model --threads 1 --seconds 10)
echo "bare: $bare_json"
bare=$(echo "$bare_json" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["frames_per_s"])')

port=18380
cam=18557
dir=$(mktemp -d)
$BIN_DIR/gateway testcam --listen 127.0.0.1:$cam > "$dir/camera.log" 2>&1 &
camera=$!
trap 'kill $camera 2>/dev/null; rm -rf "$dir"' EXIT
{
  echo "listen = \"127.0.0.1:$port\""
  echo "data_dir = \"$dir/data\""
  echo "[testcam]"; echo "enabled = false"
  echo "[webrtc]"; echo "udp_port = 0"
  echo "[detect]"; echo "model = \"$model\""; echo "workers = $workers"; echo "threads = 1"; echo "fps = 25"
  for i in $(seq 1 "$streams"); do
    echo "[[streams]]"; echo "id = \"s$i\""; echo "url = \"rtsp://127.0.0.1:$cam/testcam\""; echo "on_demand = false"
  done
} > "$dir/gateway.toml"
$BIN_DIR/gateway --config "$dir/gateway.toml" 2> "$dir/gateway.log" &
gw=$!
trap 'kill $gw $camera 2>/dev/null; rm -rf "$dir"' EXIT
sleep 5   # workers connect, streams pull
$BIN_DIR/loadtest whep --url "http://127.0.0.1:$port" --stream s1 --viewers 20 --seconds $((seconds + 4)) > "$dir/loadtest.out" &
lt=$!
sleep 2
sum() { curl -s "http://127.0.0.1:$port/metrics" | awk -v m="$1" 'index($0, m) == 1 {s += $NF} END {print s + 0}'; }
ticks() { awk '{print $14 + $15}' "/proc/$gw/stat"; }
f0=$(sum sightline_detect_frames_total); k0=$(sum sightline_detect_frames_skipped_total); t0=$(ticks); s0=$(date +%s.%N)
sleep "$seconds"
f1=$(sum sightline_detect_frames_total); k1=$(sum sightline_detect_frames_skipped_total); t1=$(ticks); s1=$(date +%s.%N)
curl -s "http://127.0.0.1:$port/metrics" > "$dir/metrics.txt"
wait $lt
/usr/bin/python3 - "$dir/metrics.txt" "$f0" "$f1" "$k0" "$k1" "$s0" "$s1" "$t0" "$t1" "$(getconf CLK_TCK)" "$bare" "$workers" <<'PY'
import sys
path, f0, f1, k0, k1, s0, s1, t0, t1, hz, bare, workers = sys.argv[1:]
wall = float(s1) - float(s0)
rate = (float(f1) - float(f0)) / wall
lines = open(path).read().splitlines()
def hist(name):
    buckets, total, count = {}, 0.0, 0.0
    for l in lines:
        if l.startswith(name + "_bucket"):
            le = float(l.split('le="')[1].split('"')[0].replace("+Inf", "inf"))
            buckets[le] = buckets.get(le, 0) + float(l.split()[-1])
        elif l.startswith(name + "_sum"):
            total += float(l.split()[-1])
        elif l.startswith(name + "_count"):
            count += float(l.split()[-1])
    b = sorted(buckets.items())
    q = lambda p: next((f"<={le * 1000:g}ms" for le, c in b if count and c >= p * count), "n/a")
    return (total / count * 1000 if count else 0), q
handoff_mean, _ = hist("sightline_detect_handoff_seconds")
f2b_mean, f2b = hist("sightline_detect_frame_to_box_seconds")
# Camera encode + network, already inside frame_to_box (builds before the layered workspace lack it).
ingest_mean, _ = hist("sightline_ingest_capture_delay_seconds")
cpu = (float(t1) - float(t0)) / float(hz) / wall * 100
share = rate / (float(bare) * int(workers)) * 100
print(f"gateway: detections/s={rate:.1f} ({share:.0f}% of bare {float(bare):.1f}/s x {workers} worker(s)) "
      f"skipped/s={(float(k1) - float(k0)) / wall:.1f} handoff_mean={handoff_mean:.3f}ms "
      f"frame_to_box mean={f2b_mean:.1f}ms p50{f2b(0.5)} p99{f2b(0.99)} (capture->arrival mean={ingest_mean:.1f}ms) "
      f"gateway_cpu={cpu:.1f}%")
PY
echo "webrtc (20 viewers on s1 meanwhile): $(tail -1 "$dir/loadtest.out")"
