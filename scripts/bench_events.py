#!/usr/bin/env python3
"""End-to-end analytics event latency (issue #13): frame capture -> the event on
`GET /api/events/live` and on MQTT (Debian's mosquitto, a subscriber with mosquitto_sub).

The gateway runs the built-in test camera with detection on (the shapes model, 10 fps), the
default config's line `middle` and zone `left`; every event carries `ts_ms`, the capture time
of its frame on the camera's clock (the test camera runs on this machine, so the same clock as
ours). Latency = arrival here - ts_ms. Also reports events stored (`sightline_events_db_write_seconds`).

    scripts/bench_events.py [--seconds 60] [--bin-dir target/release]

Builds the release binaries unless --bin-dir is given. Prints one JSON line per path and a
summary.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--bin-dir", help="binaries built elsewhere (default: cargo build --release)")
    args = ap.parse_args()
    bin_dir = args.bin_dir
    if not bin_dir:
        subprocess.run(["cargo", "build", "--release", "--bin", "gateway", "--bin", "infer-worker"], cwd=ROOT, check=True)
        bin_dir = os.path.join(ROOT, "target", "release")
    tmp = tempfile.mkdtemp(prefix="sightline-bench-events-")
    broker_port, http_port, cam_port = free_port(), free_port(), free_port()
    with open(os.path.join(tmp, "mosquitto.conf"), "w") as f:
        f.write(f"listener {broker_port} 127.0.0.1\nallow_anonymous true\n")
    procs = [subprocess.Popen(["mosquitto", "-c", os.path.join(tmp, "mosquitto.conf")], stderr=subprocess.DEVNULL)]
    time.sleep(0.5)
    # The default config's stream, line and zone (config/sightline.toml), MQTT on.
    with open(os.path.join(ROOT, "config", "sightline.toml")) as f:
        base = f.read()
    base = base.replace('listen = "127.0.0.1:8080"', f'listen = "127.0.0.1:{http_port}"', 1)
    base = base.replace('listen = "127.0.0.1:8555"', f'listen = "127.0.0.1:{cam_port}"', 1)
    base = base.replace('listen = "127.0.0.1:8554"', 'listen = "127.0.0.1:0"', 1)
    base = base.replace("udp_port = 8000", "udp_port = 0", 1)
    base = base.replace('static_dir = "static"', f'static_dir = "{ROOT}/static"', 1)
    base = base.replace('data_dir = "data"', f'data_dir = "{tmp}/data"', 1)
    base = base.replace("udp_port = 8189", "udp_port = 0", 1)
    base = base.replace('# url = "mqtt://127.0.0.1:1883"', f'url = "mqtt://127.0.0.1:{broker_port}"', 1)
    base = base.replace("rtsp://127.0.0.1:8555/testcam", f"rtsp://127.0.0.1:{cam_port}/testcam")
    cfg = os.path.join(tmp, "gateway.toml")
    with open(cfg, "w") as f:
        f.write(base)
    env = dict(os.environ, RUST_LOG="warn")
    procs.append(subprocess.Popen([os.path.join(bin_dir, "gateway"), "--config", cfg], cwd=ROOT, env=env))
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        # Detection follows the pull: a viewer keeps the camera pulled.
        feed = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/streams/testcam/feed?fps=1", timeout=30)
        threading.Thread(target=lambda: [None for _ in iter(lambda: feed.read(4096), b"")], daemon=True).start()
        live, mqtt = [], []

        def read_live():
            r = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/events/live", timeout=args.seconds + 30)
            for raw in r:
                line = raw.decode().strip()
                if line.startswith("data:"):
                    now = time.time() * 1000
                    e = json.loads(line[5:])
                    live.append(now - e["ts_ms"])

        def read_mqtt():
            sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker_port), "-t", "sightline/+/events"],
                                   stdout=subprocess.PIPE, text=True)
            procs.append(sub)
            for line in sub.stdout:
                now = time.time() * 1000
                try:
                    mqtt.append(now - json.loads(line)["ts_ms"])
                except ValueError:
                    pass

        threading.Thread(target=read_live, daemon=True).start()
        threading.Thread(target=read_mqtt, daemon=True).start()
        time.sleep(args.seconds)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics").read().decode()
        stored = sum(float(l.split()[-1]) for l in metrics.splitlines() if l.startswith("sightline_events_stored_total{"))
        for name, values in (("live SSE", live), ("MQTT", mqtt)):
            print(json.dumps({"path": name, "events": len(values), "p50_ms": percentile(values, 50),
                              "p99_ms": percentile(values, 99), "max_ms": max(values) if values else None}))
        print(json.dumps({"stored": stored, "seconds": args.seconds}))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
