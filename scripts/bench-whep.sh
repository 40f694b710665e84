#!/usr/bin/env bash
# Gateway CPU per WebRTC viewer: one 1280x720 25 fps ~2 Mbit/s H.264 stream from GStreamer's
# RTSP server (pattern=smpte, moving), N `loadtest whep` viewers on loopback.
#   scripts/bench-whep.sh [VIEWERS...]      (default: 100 200 400; SECONDS_PER_RUN=30)
# Per N prints: gateway CPU% (of one core) and RSS over the steady window, microseconds of
# gateway CPU per RTP packet per viewer, the send-delay p99 (access unit in -> packets out)
# and loadtest's JSON line. Release build; loopback only; bounded in time.
set -euo pipefail
# Gateways here serve no RTSP restream on the default ports (two would collide on 8554).
export SIGHTLINE_RESTREAM__LISTEN=${SIGHTLINE_RESTREAM__LISTEN:-127.0.0.1:0} SIGHTLINE_RESTREAM__UDP_PORT=${SIGHTLINE_RESTREAM__UDP_PORT:-0}
cd "$(dirname "$0")/.."
# BIN_DIR=<dir> runs binaries built elsewhere (e.g. another commit's, side by side).
# CAMERA_ARGS="--bframes 2 --profile high" (or "--codec h265") gives the GStreamer camera
# B-frames or H.265: the gateway then transcodes for WebRTC, once per stream; the transcoder's
# share of the gateway CPU is printed as transcode_cpu.
# LOSS=0.01 makes each viewer drop 1 % of its RTP datagrams (loadtest whep --loss): NACKs and
# resends must repair them (the JSON line's packets_lost counts what was never repaired).
# SIGHTLINE_WEBRTC__NACK_HISTORY=N sets the packets kept per viewer for resends.
# RAMP_MS=N starts a viewer every N ms (default 10; SECONDS_PER_RUN must cover the ramp-up,
# viewers x N ms + 6 s, and the 10 s window after it).
# Detection is off (it is not the fan-out's cost: the shape model finds ~50 boxes a frame on
# GStreamer's SMPTE pattern, ~24 track events/s with their JPEG snapshots, ~20 % of a core);
# SIGHTLINE_DETECT__ENABLED=true turns it on.
# STREAMS=N pulls the camera as N streams (cam1..camN; GStreamer's factory is shared: one
# encoder) and splits each run's viewers evenly over them, one load generator per stream;
# CPU, packets and the delay quantiles are summed over the streams.
# HEADERS_ONLY=1 has the viewers count video packets from their clear RTP headers after the
# first keyframe (`loadtest whep --headers-only`: no SRTP, no NACKs; ~2.3 us of the load
# generator's CPU per packet against ~6): for hundreds of viewers on the gateway's own cores.
# PIN_CPUS=1 puts the gateway on CPU 0 and the camera and load generator on the others: on a
# 2-core machine unpinned runs of one binary spread +-10 %, pinned ones much less.
headers_only=()
if [ "${HEADERS_ONLY:-0}" = 1 ]; then headers_only=(--headers-only); fi
gw_pin=() rest_pin=()
if [ -n "${PIN_CPUS:-}" ]; then
  gw_pin=(taskset -c 0) rest_pin=(taskset -c "1-$(( $(nproc) - 1 ))")
fi
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release --bin gateway --bin loadtest >&2
  BIN_DIR=${CARGO_TARGET_DIR:-target}/release
fi
seconds=${SECONDS_PER_RUN:-30}
# Let the load generator's sockets have 4 MiB receive buffers (it asks for them), so a keyframe
# burst to hundreds of viewers is not dropped by the receiving side's kernel queue.
sysctl -qw net.core.rmem_max=4194304 2>/dev/null || echo "bench-whep: cannot raise net.core.rmem_max; loss may be the load generator's" >&2
port=18280
cam=18556
# shellcheck disable=SC2086 # CAMERA_ARGS is a list of words
"${rest_pin[@]}" /usr/bin/python3 scripts/gst_rtsp_server.py --port $cam --bitrate 2000 ${CAMERA_ARGS:-} > /tmp/bench-gst.out 2>&1 &
camera=$!
trap 'kill $camera 2>/dev/null' EXIT
sleep 1
# awk reads to the end: an early exit makes curl fail with 23 (write error), and pipefail then
# ended the whole script without a word on some runs.
# The sum of the samples whose line starts with $1 (every stream's).
metric() { curl -s "http://127.0.0.1:$port/metrics" | awk -v m="$1" 'index($0, m) == 1 {sum += $NF; found = 1} END {if (found) print sum}'; }
streams=(cam)
if [ "${STREAMS:-1}" -gt 1 ]; then
  streams=()
  for i in $(seq 1 "$STREAMS"); do streams+=("cam$i"); done
fi
stream_args=()
for s in "${streams[@]}"; do stream_args+=(--stream "$s=rtsp://127.0.0.1:$cam/cam"); done
for viewers in ${@:-100 200 400}; do
  SIGHTLINE_TESTCAM__ENABLED=false SIGHTLINE_DETECT__ENABLED=${SIGHTLINE_DETECT__ENABLED:-false} SIGHTLINE_WEBRTC__UDP_PORT=0 "${gw_pin[@]}" $BIN_DIR/gateway --listen 127.0.0.1:$port \
    "${stream_args[@]}" 2>/tmp/bench-gateway.log &
  gw=$!
  trap 'kill $gw $camera 2>/dev/null' EXIT
  sleep 1
  # Warm up: start the pulls so the GOP caches are filled.
  warm=()
  for s in "${streams[@]}"; do
    curl -sN "http://127.0.0.1:$port/api/streams/$s/feed?fps=1" -o /dev/null --max-time 4 &
    warm+=($!)
  done
  wait "${warm[@]}" || true
  lts=()
  for s in "${streams[@]}"; do
    "${rest_pin[@]}" $BIN_DIR/loadtest whep --url "http://127.0.0.1:$port" --stream "$s" --viewers $(( viewers / ${#streams[@]} )) \
      --seconds "$seconds" --ramp-ms "$(( ${RAMP_MS:-10} * ${#streams[@]} ))" --loss "${LOSS:-0}" "${headers_only[@]}" > "/tmp/bench-loadtest-$s.out" &
    lts+=($!)
  done
  sleep $(( viewers * ${RAMP_MS:-10} / 1000 + 6 ))   # ramp-up
  ticks() { awk '{print $14 + $15}' "/proc/$gw/stat"; }
  t0=$(ticks); s0=$(date +%s.%N); p0=$(metric 'sightline_webrtc_packets_sent_total{')
  x0=$(metric 'sightline_transcode_seconds_sum{')
  sleep 10
  t1=$(ticks); s1=$(date +%s.%N); p1=$(metric 'sightline_webrtc_packets_sent_total{')
  x1=$(metric 'sightline_transcode_seconds_sum{')
  rss=$(awk '/VmRSS/{print $2}' "/proc/$gw/status")
  # Quantiles (upper bucket bounds) of the send delay (access unit in -> first viewer's
  # packets out) and of the fan-out (-> last viewer's packets out).
  delay_p99=$(curl -s "http://127.0.0.1:$port/metrics" | /usr/bin/python3 -c '
import sys
lines = sys.stdin.readlines()
def quantiles(name):
    counts = {}  # bucket bound -> count, summed over the streams
    for l in lines:
        if l.startswith(name + "_bucket"):
            le = float(l.split("le=\"")[1].split("\"")[0].replace("+Inf", "inf"))
            counts[le] = counts.get(le, 0) + float(l.split()[-1])
    b = sorted(counts.items())
    total = b[-1][1] if b else 0
    q = lambda p: next((f"{le*1000:g}ms" for le, c in b if total and c >= p * total), "n/a")
    return f"p50<={q(0.5)} p90<={q(0.9)} p99<={q(0.99)}"
print(quantiles("sightline_webrtc_send_delay_seconds"), "fanout", quantiles("sightline_webrtc_fanout_seconds"))')
  wait "${lts[@]}"
  hz=$(getconf CLK_TCK)
  awk -v t0="$t0" -v t1="$t1" -v s0="$s0" -v s1="$s1" -v p0="$p0" -v p1="$p1" -v hz="$hz" -v n="$viewers" -v rss="$rss" -v d="$delay_p99" \
    -v x0="${x0:-0}" -v x1="${x1:-0}" 'BEGIN {
    cpu = (t1 - t0) / hz; wall = s1 - s0; pk = p1 - p0;
    printf "viewers=%d gateway_cpu=%.1f%% transcode_cpu=%.1f%% rss=%dMiB rss_kib=%d packets_per_s=%.0f us_per_packet_per_viewer=%.2f send_delay %s\n",
      n, cpu / wall * 100, (x1 - x0) / wall * 100, rss / 1024, rss, pk / wall, (pk > 0 ? cpu * 1e6 / pk : 0), d }'
  for s in "${streams[@]}"; do tail -1 "/tmp/bench-loadtest-$s.out"; done
  kill $gw; wait $gw 2>/dev/null || true
  trap 'kill $camera 2>/dev/null' EXIT
done
