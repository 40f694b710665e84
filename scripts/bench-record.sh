#!/usr/bin/env bash
# What recording costs: the gateway pulling the built-in test camera (720p25, 2 Mbit/s; the
# camera in its own process) with no viewer, once with `record = "off"` (`on_demand = false`)
# and once with `record = "continuous"`, 30 s each. Prints per run the gateway's CPU% (of one
# core) and RSS, and for the recorded run the bytes written per second against the camera's
# bytes received (sightline_recording_bytes_total / sightline_ingest_bytes_total) and the
# container overhead of the segment files (moof/mdat headers and init against the samples).
# With GST_ARGS the camera is GStreamer's RTSP server instead (scripts/gst_rtsp_server.py), e.g.
# GST_ARGS="--audio pcma" (Debian python3-gi) for the cost of recording a G.711 camera's audio (encoded as AAC).
#   scripts/bench-record.sh
set -euo pipefail
# Gateways here serve no RTSP restream on the default ports (two would collide on 8554).
export SIGHTLINE_RESTREAM__LISTEN=${SIGHTLINE_RESTREAM__LISTEN:-127.0.0.1:0} SIGHTLINE_RESTREAM__UDP_PORT=${SIGHTLINE_RESTREAM__UDP_PORT:-0}
cd "$(dirname "$0")/.."
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release --bin gateway >&2
  BIN_DIR=${CARGO_TARGET_DIR:-target}/release
fi
seconds=${SECONDS_PER_RUN:-30}
port=18395
cam=18565
work=$(mktemp -d)
if [ -n "${GST_ARGS:-}" ]; then
  # shellcheck disable=SC2086
  /usr/bin/python3 scripts/gst_rtsp_server.py --port $cam $GST_ARGS 2>/tmp/bench-testcam.log &
  camera_url="rtsp://127.0.0.1:$cam/cam"
else
  $BIN_DIR/gateway testcam --listen 127.0.0.1:$cam 2>/tmp/bench-testcam.log &
  camera_url="rtsp://127.0.0.1:$cam/testcam"
fi
camera=$!
trap 'kill $camera 2>/dev/null; rm -rf "$work"' EXIT
for mode in off continuous; do
  rm -rf "$work/data"
  cat > "$work/gw.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$work/data"
[testcam]
enabled = false
[detect]
enabled = false
[[streams]]
id = "cam"
url = "$camera_url"
on_demand = false
record = "$mode"
TOML
  $BIN_DIR/gateway --config "$work/gw.toml" 2>/tmp/bench-gateway.log &
  gw=$!
  trap 'kill $gw $camera 2>/dev/null; rm -rf "$work"' EXIT
  sleep 5
  ticks() { awk '{print $14 + $15}' "/proc/$gw/stat"; }
  metric() { curl -s "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 ~ "^"m"\\{" {s += $2} END {print s + 0}'; }
  t0=$(ticks); s0=$(date +%s.%N); i0=$(metric sightline_ingest_bytes_total); r0=$(metric sightline_recording_bytes_total)
  sleep "$seconds"
  t1=$(ticks); s1=$(date +%s.%N); i1=$(metric sightline_ingest_bytes_total); r1=$(metric sightline_recording_bytes_total)
  rss=$(awk '/VmRSS/{print $2}' "/proc/$gw/status")
  hz=$(getconf CLK_TCK)
  cpu=$(echo "($t1 - $t0) / $hz / ($s1 - $s0) * 100" | bc -l)
  printf 'record=%s gateway_cpu=%.2f%% rss=%s_KiB camera_bytes_per_s=%.0f recorded_bytes_per_s=%.0f\n' "$mode" "$cpu" "$rss" \
    "$(echo "($i1 - $i0) / ($s1 - $s0)" | bc -l)" "$(echo "($r1 - $r0) / ($s1 - $s0)" | bc -l)"
  kill $gw; wait $gw 2>/dev/null || true
  trap 'kill $camera 2>/dev/null; rm -rf "$work"' EXIT
  if [ "$mode" = continuous ]; then
    python3 - "$work/data/recordings/cam" <<'PY'
import os, struct, sys
payload = container = 0
for name in os.listdir(sys.argv[1]):
    data = open(os.path.join(sys.argv[1], name), 'rb').read()
    i = 0
    while i + 8 <= len(data):
        size, kind = struct.unpack('>I4s', data[i:i + 8])
        if size < 8 or i + size > len(data):
            break
        if kind == b'mdat':
            payload += size - 8
            container += 8
        else:
            container += size
        i += size
print(f"container overhead {100 * container / max(payload, 1):.3f}% ({container} bytes of boxes for {payload} bytes of samples)")
PY
  fi
done
