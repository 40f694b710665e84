#!/usr/bin/env bash
# Janus against Sightline, side by side in one run, with an independent WebRTC client (issue
# #17 §1): one GStreamer RTSP camera (x264 1280x720 25 fps, 2 Mbit/s), then for each server
# N aiortc viewers (scripts/aiortc_viewers.py: packets counted, not decoded, no NACK sent),
# the server's CPU (of one core) and RSS read from /proc over a 10 s window once every viewer
# is connected.
#   sudo scripts/bench-janus.sh [VIEWERS...]       (default: 100)
# Janus's ICE (libnice) offers no loopback candidates, so everything runs in a network
# namespace with a tap device (10.99.0.1/24, kept up by a process holding /dev/net/tun).
# Needs: root (ip netns), janus (Debian's 1.1.2: apt install janus), pip install aiortc, perf
# for PERF_DIR,
# GStreamer's RTSP server (scripts/gst_rtsp_server.py). Release build of the gateway.
# Sightline runs with detection off (Janus only forwards packets).
# PROCS=N splits each run's viewers over N aiortc processes (default 2: ~0.8 % of a core per
# viewer). JANUS_LOOPS=N sets Janus's event_loops (default 2, as Sightline's loops here).
# NACK=1 negotiates NACK and RTX as browsers do (the servers keep resend histories: memory per
# viewer).
# SERVERS="janus sightline" picks the servers (that order by default).
# PERF_DIR=<dir> also records each server with perf over the window (adds a few % of CPU) and
# writes its flat profile (self time by library and symbol) to <dir>/<server>-<N>.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release --bin gateway >&2
  BIN_DIR=${CARGO_TARGET_DIR:-target}/release
fi
BIN_DIR=$(realpath "$BIN_DIR")
ns=slbench
ip=10.99.0.1
cam=18556
procs=${PROCS:-2}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}" $(ip netns pids $ns 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del $ns 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# An array, not a function: "${in_ns[@]}" cmd & leaves the command's own pid in $! (ip execs it).
in_ns=(ip netns exec $ns)
ip netns del $ns 2>/dev/null || true
ip netns add $ns
ip -n $ns link set lo up
ip -n $ns tuntap add dev tap0 mode tap
ip -n $ns addr add $ip/24 dev tap0
ip -n $ns link set tap0 up
# Janus finds its own address by the default route.
ip -n $ns route add default dev tap0
# A tap device has carrier only while a process holds it open.
"${in_ns[@]}" /usr/bin/python3 -c '
import fcntl, os, struct
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", b"tap0", 0x0002 | 0x1000))  # TUNSETIFF: IFF_TAP | IFF_NO_PI
while True:
    os.read(fd, 65536)
' &
pids+=($!)
"${in_ns[@]}" /usr/bin/python3 scripts/gst_rtsp_server.py --port $cam --bitrate 2000 > "$work/gst.out" 2>&1 &
pids+=($!)
sleep 2

# Janus: the streaming plugin pulls the camera over RTSP; only the HTTP API.
mkdir -p "$work/janus"
lib=/usr/lib/x86_64-linux-gnu/janus
cat > "$work/janus/janus.jcfg" <<EOF
general: {
  configs_folder = "$work/janus"
  plugins_folder = "$lib/plugins"
  transports_folder = "$lib/transports"
  events_folder = "$lib/events"
  loggers_folder = "$lib/loggers"
  debug_level = 3
  event_loops = ${JANUS_LOOPS:-2}
}
media: {}
nat: { ice_enforce_list = "tap0" }
plugins: { disable = "libjanus_audiobridge.so,libjanus_duktape.so,libjanus_echotest.so,libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_videoroom.so,libjanus_voicemail.so" }
transports: { disable = "libjanus_websockets.so,libjanus_pfunix.so,libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_rabbitmq.so" }
events: { broadcast = false }
loggers: { disable = "libjanus_jsonlog.so" }
EOF
cat > "$work/janus/janus.transport.http.jcfg" <<EOF
general: { base_path = "/janus", http = true, port = 8088, https = false }
admin: { admin_http = false }
EOF
cat > "$work/janus/janus.plugin.streaming.jcfg" <<EOF
general: {}
cam: {
  type = "rtsp"
  id = 1
  description = "cam"
  audio = false
  video = true
  url = "rtsp://127.0.0.1:$cam/cam"
  rtsp_reconnect_delay = 5
  rtsp_conn_timeout = 5
}
EOF

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }

# Runs N viewers against server pid $1 (flavour $2, URL $3); prints the line of results.
measure() {
  local server=$1 flavour=$2 url=$3 viewers=$4 name=$5
  local per=$(( (viewers + procs - 1) / procs )) left=$viewers outs=() vpids=()
  for i in $(seq 1 "$procs"); do
    local n=$(( left < per ? left : per ))
    [ "$n" -gt 0 ] || break
    left=$(( left - n ))
    "${in_ns[@]}" python3 scripts/aiortc_viewers.py "$flavour" "$url" --viewers "$n" --seconds 10 ${NACK:+--nack} > "$work/v$i.out" 2> "$work/v$i.err" &
    vpids+=($!)
    outs+=("$work/v$i.out")
  done
  # Every process prints {"window": …} as its steady window starts.
  local deadline=$(( $(date +%s) + 120 ))
  until [ "$(cat "${outs[@]}" 2>/dev/null | grep -c window)" -ge "${#outs[@]}" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "bench-janus: viewers never connected: $(cat "$work"/v*.err | tail -5)" >&2; return 1; }
    sleep 0.2
  done
  local t0 s0 t1 s1 rss
  t0=$(ticks "$server"); s0=$(date +%s.%N)
  if [ -n "${PERF_DIR:-}" ]; then
    # Where the server's time goes: a flat profile (self time) over the window.
    perf record -q -F 1999 -p "$server" -o "$work/perf.data" -- sleep 10 2>/dev/null
    mkdir -p "$PERF_DIR"
    perf report -i "$work/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
      | grep -v '^#' | grep -v '^$' | head -400 > "$PERF_DIR/$name-$viewers.txt"
  else
    sleep 10
  fi
  t1=$(ticks "$server"); s1=$(date +%s.%N); rss=$(rss_kib "$server")
  wait "${vpids[@]}"
  /usr/bin/python3 - "$name" "$viewers" "$t0" "$t1" "$s0" "$s1" "$rss" "$(getconf CLK_TCK)" "${outs[@]}" <<'EOF'
import json, sys
name, viewers, t0, t1, s0, s1, rss, hz = sys.argv[1:9]
runs = [json.loads(l) for f in sys.argv[9:] for l in open(f) if '"flavour"' in l]
cpu = (int(t1) - int(t0)) / int(hz) / (float(s1) - float(s0))
packets = sum(r["window_packets"] for r in runs) / runs[0]["window_seconds"]
first = sorted(r["first_keyframe_ms_p50"] for r in runs if r["first_keyframe_ms_p50"] is not None)
print(json.dumps({
    "server": name, "viewers": int(viewers), "connected": sum(r["connected"] for r in runs),
    "errors": sum(r["error_count"] for r in runs), "cpu_percent": round(cpu * 100, 1),
    "rss_mib": round(int(rss) / 1024, 1), "packets_per_s": round(packets),
    "us_per_packet_per_viewer": round(cpu * 1e6 / packets, 2) if packets else None,
    "packets_lost": sum(r["packets_lost"] for r in runs),
    "window_lost": sum(r["window_lost"] for r in runs),
    "first_keyframe_ms_p50": first[len(first) // 2] if first else None,
    "first_keyframe_ms_max": max((r["first_keyframe_ms_max"] or 0) for r in runs),
}))
EOF
}

for viewers in ${@:-100}; do
  for server in ${SERVERS:-janus sightline}; do
    case $server in
      janus)
        "${in_ns[@]}" janus -C "$work/janus/janus.jcfg" -F "$work/janus" > "$work/janus.log" 2>&1 &
        pid=$!
        sleep 4
        measure "$pid" janus http://127.0.0.1:8088/janus "$viewers" janus || tail -20 "$work/janus.log" >&2
        ;;
      sightline)
        SIGHTLINE_TESTCAM__ENABLED=false SIGHTLINE_DETECT__ENABLED=false SIGHTLINE_WEBRTC__IP=$ip SIGHTLINE_WEBRTC__UDP_PORT=0 SIGHTLINE_WEBRTC__LOOPS=2 \
          SIGHTLINE_RESTREAM__LISTEN=127.0.0.1:0 SIGHTLINE_RESTREAM__UDP_PORT=0 SIGHTLINE_DATA_DIR="$work/data" \
          "${in_ns[@]}" "$BIN_DIR/gateway" --listen 127.0.0.1:18280 --stream cam=rtsp://127.0.0.1:$cam/cam 2> "$work/gateway.log" &
        pid=$!
        sleep 2
        # Start the pull so the GOP cache is filled, as a camera in use would be.
        "${in_ns[@]}" curl -sN "http://127.0.0.1:18280/api/streams/cam/feed?fps=1" -o /dev/null --max-time 4 || true
        measure "$pid" whep http://127.0.0.1:18280/api/streams/cam/whep "$viewers" sightline || tail -20 "$work/gateway.log" >&2
        ;;
    esac
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    sleep 1
  done
done
