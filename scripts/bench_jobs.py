#!/usr/bin/env python3
"""Offline job throughput (issue #15): a 720p H.264 video (ffmpeg testsrc2, 2 Mbit/s, 3
B-frames, 2 s GOP) through `blur` and through `detect`, on

- Sightline with 1 and with 2 local workers (`infer-worker job` on stdin/stdout),
- Sightline with Redis Streams and 2 workers (the gateway's own, consumers of the group),
- the baseline of the original design (bench/celery: Celery with Redis as broker, one task
  per frame, JPEG frames in a shared directory, OpenCV per frame) with 2 worker processes.

Reports frames/s (wall clock, submit to result on disk) and the machine's CPU over the run
(busy time from /proc/stat, in cores; the machine should be otherwise idle), plus Sightline's
per-chunk distribution overhead (queue + transfer, `overhead_p50_ms`) and speedup.

    scripts/bench_jobs.py [--seconds 60] [--bin-dir target/release] [--filters blur,detect] [--preset P]

Needs: ffmpeg, redis-server, and for the baseline `pip install celery redis
"opencv-python-headless<5"` (OpenCV 5.0's DNN module ran the test model twice as slowly as
4.14 on 2026-11-30: the baseline is measured with 4.x).
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

# Gateways started here serve no RTSP restream on the default ports (two would collide on 8554).
os.environ.setdefault("SIGHTLINE_RESTREAM__LISTEN", "127.0.0.1:0")
os.environ.setdefault("SIGHTLINE_RESTREAM__UDP_PORT", "0")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_busy():
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def cores_used(before, after):
    busy = after[0] - before[0]
    total = after[1] - before[1]
    return os.cpu_count() * busy / total if total else 0.0


def wait_http(url, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def sightline(bins, video, name, workers, redis_url, work, preset=None):
    port = free_port()
    data = tempfile.mkdtemp(dir=work)
    model = os.path.join(ROOT, "models", "testcam-shapes.onnx")
    config = os.path.join(data, "gateway.toml")
    with open(config, "w") as f:
        f.write(f'listen = "127.0.0.1:{port}"\ndata_dir = "{data}"\nstatic_dir = "{ROOT}/static"\n')
        if redis_url:
            f.write(f'[state]\nredis_url = "{redis_url}"\n')
        f.write(f"[jobs]\nworkers = {workers}\n" + (f'preset = "{preset}"\n' if preset else "") + f"[detect]\nenabled = false\nmodel = \"{model}\"\n[testcam]\nenabled = false\n")
    gw = subprocess.Popen([os.path.join(bins, "gateway"), "--config", config], stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "log"), "w"))
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        time.sleep(1)
        out = os.path.join(data, "out.mp4")
        metrics = os.path.join(data, "m.json")
        before = cpu_busy()
        started = time.monotonic()
        subprocess.run([os.path.join(bins, "sightline"), "job", "submit", video, "--pipeline", name, "--server", f"http://127.0.0.1:{port}",
                        "--out", out, "--metrics", metrics], check=True, stderr=subprocess.DEVNULL)
        wall = time.monotonic() - started
        cores = cores_used(before, cpu_busy())
        m = json.load(open(metrics))["metrics"]
        return {"frames": m["frames"], "wall_s": round(wall, 2), "frames_per_s": round(m["frames"] / wall, 1), "cores": round(cores, 2),
                "speedup_vs_one_worker": round(m["speedup_vs_one_worker"], 2), "overhead_p50_ms": round(m["overhead_p50_ms"], 1),
                "queue_wait_p50_ms": m["queue_wait_p50_ms"], "return_p50_ms": round(m.get("return_p50_ms", 0), 1),
                "worker_ms_per_frame": round(1000 * m["worker_s"] / max(m["frames"], 1), 2),
                "filter_ms_per_frame": round(m["filter_ms"] / max(m["frames"], 1), 2), "encode_ms_per_frame": round(m["encode_ms"] / max(m["frames"], 1), 2)}
    finally:
        gw.terminate()
        gw.wait()
        time.sleep(1)


def celery(video, name, workers, redis_url, work):
    env = dict(os.environ, REDIS_URL=redis_url, SHARED=os.path.join(work, "shared"), MODEL=os.path.join(ROOT, "models", "testcam-shapes.onnx"))
    cwd = os.path.join(ROOT, "bench", "celery")
    w = subprocess.Popen([sys.executable, "-m", "celery", "-A", "tasks", "worker", "--concurrency", str(workers), "--loglevel", "warning", "--without-gossip",
                          "--without-mingle", "--without-heartbeat"], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(4)
        out = os.path.join(work, "celery-out.mp4")
        before = cpu_busy()
        started = time.monotonic()
        r = subprocess.run([sys.executable, "client.py", video, out, name], cwd=cwd, env=env, check=True, capture_output=True, text=True)
        wall = time.monotonic() - started
        cores = cores_used(before, cpu_busy())
        res = json.loads(r.stdout.strip().splitlines()[-1])
        return {"frames": res["frames"], "wall_s": round(wall, 2), "frames_per_s": round(res["frames"] / wall, 1), "cores": round(cores, 2)}
    finally:
        w.terminate()
        w.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--bin-dir")
    ap.add_argument("--filters", default="blur,detect")
    ap.add_argument("--no-celery", action="store_true")
    ap.add_argument("--preset", help="jobs.preset (x264) of Sightline's runs; the gateway's default otherwise")
    args = ap.parse_args()
    bins = args.bin_dir or os.path.join(ROOT, "target", "release")
    if not args.bin_dir:
        subprocess.run(["cargo", "build", "--release", "--bin", "gateway", "--bin", "infer-worker", "--bin", "sightline"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="bench-jobs-")
    video = os.path.join(work, "in.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=25:duration={args.seconds}",
                    "-c:v", "libx264", "-preset", "veryfast", "-b:v", "2M", "-bf", "3", "-g", "50", "-pix_fmt", "yuv420p", video], check=True)
    rport = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(rport), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    redis_url = f"redis://127.0.0.1:{rport}"
    time.sleep(0.5)
    try:
        for name in args.filters.split(","):
            runs = [("sightline, 1 local worker", lambda: sightline(bins, video, name, 1, None, work, args.preset)),
                    ("sightline, 2 local workers", lambda: sightline(bins, video, name, 2, None, work, args.preset)),
                    ("sightline, Redis + 2 workers", lambda: sightline(bins, video, name, 2, redis_url, work, args.preset))]
            if not args.no_celery:
                runs.append(("celery + opencv, 2 workers", lambda: celery(video, name, 2, redis_url + "/1", work)))
            for label, run in runs:
                r = run()
                r.update({"filter": name, "run": label})
                print(json.dumps(r), flush=True)
    finally:
        redis.terminate()


if __name__ == "__main__":
    main()
