#!/usr/bin/env python3
"""Chaos and soak runs for Sightline (issue #6), against real processes.

  camera  GStreamer RTSP camera killed and restarted every PERIOD s while WebRTC and SSE
          viewers (loadtest) watch: every viewer recovers without reconnecting, 0 panics.
  worker  infer-worker `kill -9` every PERIOD s: video unaffected (SSE gap, WebRTC loss),
          detections back within 2 s each time.
  redis   Redis killed (no persistence) and restarted every PERIOD s under 3 replicas while
          start/stop requests go to random replicas: no acknowledged start/stop is lost.
  soak    WEBRTC + SSE viewers for MINUTES: gateway RSS sampled every 10 s; growth after
          warm-up must stay under 5 %, no packet loss, no viewer errors.

Each run prints progress, then one JSON summary line, and exits 1 if a check failed.
Binaries come from --bin-dir (default target/release; `scripts/chaos.sh` builds them).
Examples:
  python3 scripts/chaos.py camera --minutes 10 --period 30 --viewers 5
  python3 scripts/chaos.py worker --minutes 10 --period 10
  python3 scripts/chaos.py redis --minutes 5 --period 20
  python3 scripts/chaos.py soak --minutes 30 --viewers 100 --out /tmp/soak
"""
import argparse
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

# Gateways started here serve no RTSP restream on the default ports (two would collide on 8554).
os.environ.setdefault("SIGHTLINE_RESTREAM__LISTEN", "127.0.0.1:0")
os.environ.setdefault("SIGHTLINE_RESTREAM__UDP_PORT", "0")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def http(method, url, body=None, timeout=5):
    """(status, parsed JSON or text); status 0 when the server cannot be reached."""
    req = urllib.request.Request(url, data=body.encode() if body else None, method=method)
    if body:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        text, status = e.read().decode(errors="replace"), e.code
    except (urllib.error.URLError, OSError):
        return 0, None
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


class Proc:
    """A child process with its log in `workdir`; killed at exit."""

    def __init__(self, name, args, workdir, env=None):
        self.name, self.args, self.workdir, self.env = name, args, workdir, env
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.p = None

    def start(self):
        self.logf = open(self.log_path, "ab")
        self.p = subprocess.Popen(self.args, stdout=self.logf, stderr=subprocess.STDOUT,
                                  env={**os.environ, **(self.env or {})}, cwd=ROOT)
        return self

    def kill(self, sig=signal.SIGKILL):
        if self.p and self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()


class Run:
    """Processes of one run and the checks that decide it."""

    def __init__(self, args):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="sightline-chaos-")
        self.procs = []
        self.checks = []
        self.summary = {"scenario": args.scenario, "workdir": self.dir}

    def bin(self, name):
        path = os.path.join(self.args.bin_dir, name)
        if not os.path.exists(path):
            sys.exit(f"{path} missing: build it (scripts/chaos.sh does) or pass --bin-dir")
        return path

    def check(self, ok, what):
        self.checks.append((bool(ok), what))
        log(("ok   " if ok else "FAIL ") + what)

    def gateway(self, name, toml, env=None):
        port = free_port()
        cfg = os.path.join(self.dir, f"{name}.toml")
        with open(cfg, "w") as f:
            f.write(f'listen = "127.0.0.1:{port}"\nstatic_dir = "{ROOT}/static"\ndata_dir = "{self.dir}/{name}-data"\n{toml}')
        g = Proc(name, [self.bin("gateway"), "--config", cfg], self.dir, {"RUST_LOG": "info", "NO_COLOR": "1", **(env or {})})
        g.start()
        g.base = f"http://127.0.0.1:{port}"
        self.procs.append(g)
        deadline = time.time() + 30
        while http("GET", g.base + "/healthz")[0] != 200:
            if not g.alive() or time.time() > deadline:
                sys.exit(f"{name} did not start:\n{g.log_text()[-3000:]}")
            time.sleep(0.1)
        return g

    def testcam_gateway(self, extra):
        """A gateway running its built-in test camera as stream `testcam`, then `extra` TOML."""
        cam_port = free_port()
        return self.gateway("gw", f"""
[testcam]
listen = "127.0.0.1:{cam_port}"
[[streams]]
id = "testcam"
url = "rtsp://127.0.0.1:{cam_port}/testcam"
{extra}""")

    def camera(self, port):
        cam = Proc("camera", ["/usr/bin/python3", os.path.join(ROOT, "scripts/gst_rtsp_server.py"), "--port", str(port)], self.dir)
        self.procs.append(cam)
        return cam

    def start_camera(self, cam):
        cam.start()
        deadline = time.time() + 15
        while "READY" not in cam.log_text():
            if not cam.alive() or time.time() > deadline:
                sys.exit(f"camera did not start:\n{cam.log_text()[-2000:]}")
            time.sleep(0.05)

    def loadtest(self, mode, base, stream, viewers, seconds, fps=5):
        args = [self.bin("loadtest"), mode, "--url", base, "--stream", stream, "--viewers", str(viewers), "--seconds", str(seconds)]
        if mode == "sse":
            args += ["--fps", str(fps)]
        # Spread the connects over a second so 100 viewers do not arrive in one burst.
        args += ["--ramp-ms", str(max(2, 1000 // max(viewers, 1)))]
        p = Proc(f"loadtest-{mode}", args, self.dir)
        p.start()
        self.procs.append(p)
        return p

    def loadtest_report(self, p, seconds):
        p.p.wait(timeout=seconds + 60)
        lines = [l for l in p.log_text().splitlines() if l.startswith("{")]
        return json.loads(lines[-1]) if lines else {}

    def no_panics(self, *gateways):
        for g in gateways:
            text = g.log_text()
            self.check("panicked" not in text, f"{g.name}: no panic in the log")

    def finish(self):
        for p in reversed(self.procs):
            p.kill(signal.SIGTERM if p.name.startswith("gw") else signal.SIGKILL)
        failed = [w for ok, w in self.checks if not ok]
        self.summary["checks"] = len(self.checks)
        self.summary["failed"] = failed
        print(json.dumps(self.summary), flush=True)
        return 1 if failed or not self.checks else 0


def sse_watch(url, stop, events):
    """Reads an SSE feed in a thread, appending (arrival time, event name, data) to `events`."""
    def run():
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                name, data = "message", []
                for raw in r:
                    if stop.is_set():
                        return
                    line = raw.decode(errors="replace").rstrip("\n")
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "":
                        if data:
                            events.append((time.time(), name, "\n".join(data)))
                        name, data = "message", []
        except Exception as e:  # the run's checks report a dead watcher
            events.append((time.time(), "watch-error", str(e)))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def scenario_camera(a, run):
    port = free_port()
    cam = run.camera(port)
    run.start_camera(cam)
    gw = run.gateway("gw", f"""
[testcam]
enabled = false
[detect]
enabled = false
[webrtc]
udp_port = 0
loops = 1
[ingest]
backoff_min = "200ms"
backoff_max = "2s"
stall_timeout = "2s"
[[streams]]
id = "cam"
url = "rtsp://127.0.0.1:{port}/cam"
""")
    seconds = int(a.minutes * 60)
    tail = 15
    whep = run.loadtest("whep", gw.base, "cam", a.viewers, seconds + tail)
    sse = run.loadtest("sse", gw.base, "cam", a.viewers, seconds + tail)
    started = time.time()
    recoveries = []
    while time.time() - started + a.period <= seconds:
        time.sleep(a.period)
        cam.kill()
        down_at = time.time()
        time.sleep(2)  # the camera is off for 2 s, like a reboot that is quick
        run.start_camera(cam)
        # Recovered: the gateway receives access units again (last_frame_ms after the restart).
        while time.time() - down_at < 30:
            _, s = http("GET", gw.base + "/api/streams/cam")
            last = (s or {}).get("health", {}).get("last_frame_ms") if isinstance(s, dict) else None
            if last and last / 1000 > down_at + 2 and s["health"]["state"] == "playing":
                break
            time.sleep(0.1)
        recoveries.append(round(time.time() - down_at - 2, 2))
        log(f"camera restart {len(recoveries)}: playing again {recoveries[-1]} s after it came back")
    w, s = run.loadtest_report(whep, seconds + tail), run.loadtest_report(sse, seconds + tail)
    run.summary.update(restarts=len(recoveries), recovery_s_max=max(recoveries, default=None),
                       recovery_s_median=statistics.median(recoveries) if recoveries else None,
                       whep=w, sse=s)
    run.check(len(recoveries) >= 1, f"{len(recoveries)} camera restarts")
    run.check(all(r < 10 for r in recoveries), f"the gateway pulled again after every restart (max {max(recoveries, default=0)} s)")
    run.check(w.get("connected") == a.viewers and w.get("viewers_stale_at_end") == 0 and w.get("errors") == 0,
              f"WebRTC: {w.get('connected')}/{a.viewers} sessions, all receiving at the end (stale {w.get('viewers_stale_at_end')}, errors {w.get('errors')}, longest gap {w.get('max_gap_ms')} ms)")
    run.check(s.get("viewers_without_frames") == 0 and s.get("viewers_stale_at_end") == 0 and s.get("errors") == 0,
              f"SSE: every viewer's feed resumed (stale {s.get('viewers_stale_at_end')}, errors {s.get('errors')}, longest gap {s.get('max_gap_ms')} ms)")
    run.check(gw.alive(), "gateway still running")
    run.no_panics(gw)


def worker_pids(socket_path):
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if socket_path.encode() in f.read():
                        pids.append(int(d))
            except OSError:
                pass
    return pids


def scenario_worker(a, run):
    sock = os.path.join(run.dir, "workers.sock")
    gw = run.testcam_gateway(f"""
[webrtc]
udp_port = 0
loops = 1
[detect]
model = "{ROOT}/models/testcam-shapes.onnx"
workers = 1
fps = 5
socket = "{sock}"
""")
    seconds = int(a.minutes * 60)
    tail = 5
    stop, events = threading.Event(), []
    sse_watch(gw.base + "/api/streams/testcam/feed?fps=10", stop, events)
    whep = run.loadtest("whep", gw.base, "testcam", a.viewers, seconds + tail)
    deadline = time.time() + 30
    while not any(e[1] == "detections" for e in events):
        if time.time() > deadline:
            sys.exit(f"no detections within 30 s:\n{gw.log_text()[-3000:]}")
        time.sleep(0.1)
    started = time.time()
    back = []
    while time.time() - started + a.period <= seconds:
        time.sleep(a.period)
        pids = worker_pids(sock)
        if not pids:
            run.check(False, "an infer-worker to kill")
            continue
        killed_at = time.time()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        # Back: a detection of a frame captured after the kill has arrived.
        while time.time() - killed_at < 10:
            fresh = [t for t, name, data in list(events) if name == "detections" and t > killed_at
                     and json.loads(data).get("capture_ms", 0) / 1000 > killed_at]
            if fresh:
                back.append(round(fresh[0] - killed_at, 3))
                break
            time.sleep(0.02)
        else:
            back.append(None)
        log(f"kill -9 {len(back)} (pid {pids}): detections back after {back[-1]} s")
    time.sleep(tail)
    stop.set()
    w = run.loadtest_report(whep, seconds + tail)
    frames = [t for t, name, _ in events if name == "frame" and t >= started]
    gap = max((b - a_ for a_, b in zip(frames, frames[1:])), default=None)
    ok_back = [b for b in back if b is not None]
    run.summary.update(kills=len(back), detections_back_s=back, back_s_max=max(ok_back, default=None),
                       sse_frames=len(frames), sse_max_gap_s=gap and round(gap, 3), whep=w)
    run.check(len(back) >= 1 and None not in back and max(ok_back) < 2.0,
              f"{len(back)} kills: detections back within 2 s each time (max {max(ok_back, default=None)} s)")
    run.check(gap is not None and gap < 1.0, f"SSE video unaffected: longest gap between frames {gap and round(gap, 3)} s")
    run.check(w.get("connected") == a.viewers and w.get("packets_lost") == 0 and w.get("viewers_stale_at_end") == 0,
              f"WebRTC unaffected: {w.get('connected')}/{a.viewers} sessions, {w.get('packets_lost')} packets lost, longest gap {w.get('max_gap_ms')} ms")
    run.check(not any(name == "watch-error" for _, name, _ in events), "the SSE watcher stayed connected")
    run.no_panics(gw)


def scenario_redis(a, run):
    rport = free_port()
    redis = Proc("redis", ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], run.dir)
    run.procs.append(redis)

    def start_redis():
        redis.start()
        while subprocess.run(["redis-cli", "-p", str(rport), "PING"], capture_output=True, text=True).stdout.strip() != "PONG":
            time.sleep(0.02)

    start_redis()
    cam_port = free_port()
    ids = ["cam1", "cam2", "cam3"]
    streams = "".join(f'[[streams]]\nid = "{i}"\nurl = "rtsp://127.0.0.1:{cam_port}/testcam"\n' for i in ids)
    gws = []
    for n, name in enumerate(["A", "B", "C"]):
        testcam = f'[testcam]\nenabled = {"true" if n == 0 else "false"}\nlisten = "127.0.0.1:{cam_port}"\n'
        gws.append(run.gateway(f"gw{name}", f'replica_id = "{name}"\n[state]\nredis_url = "redis://127.0.0.1:{rport}"\n'
                                             f'[detect]\nenabled = false\n[webrtc]\nudp_port = 0\nloops = 1\n'
                                             f'[limits]\ncontrol_rate = 1000\ncontrol_burst = 1000\n{testcam}{streams}'))
    acked = {}  # stream -> last acknowledged active state
    counts = {"acked": 0, "refused": 0}
    stop, paused, idle = threading.Event(), threading.Event(), threading.Event()

    def control():
        rng = random.Random(6)
        while not stop.is_set():
            if paused.is_set():
                idle.set()
                time.sleep(0.02)
                continue
            idle.clear()
            sid, gw = rng.choice(ids), rng.choice(gws)
            action = rng.choice(["start", "stop"])
            status, _ = http("POST", f"{gw.base}/api/streams/{sid}/{action}", timeout=5)
            if status == 200:
                acked[sid] = action == "start"
                counts["acked"] += 1
            else:
                counts["refused"] += 1
            time.sleep(0.05)

    def state():
        views = {g.name: {sid: (http("GET", f"{g.base}/api/streams/{sid}")[1] or {}).get("active") for sid in ids} for g in gws}
        stored = {sid: subprocess.run(["redis-cli", "-p", str(rport), "HGET", f"sightline:stream:{sid}", "active"],
                                      capture_output=True, text=True).stdout.strip() for sid in ids}
        return views, stored

    def converged(views, stored, want):
        in_redis = all(stored[s] in (("1", "true") if want[s] else ("0", "false")) for s in ids if want[s] is not None)
        return all(v == want for v in views.values()) and in_redis

    def settle():
        """Pauses the requests and waits (≤ 15 s) until replicas and Redis agree with `acked`."""
        paused.set()
        idle.wait(10)
        want = {sid: acked.get(sid) for sid in ids}
        deadline = time.time() + 15
        while True:
            views, stored = state()
            if converged(views, stored, want) or time.time() > deadline:
                paused.clear()
                return want, views, stored

    t = threading.Thread(target=control, daemon=True)
    t.start()
    seconds = int(a.minutes * 60)
    started = time.time()
    restarts, lost = 0, []
    while time.time() - started + a.period <= seconds:
        time.sleep(a.period)
        redis.kill()
        time.sleep(1)
        start_redis()
        restarts += 1
        # After each restart: nothing acknowledged is lost, in any replica or in Redis.
        want, views, stored = settle()
        if not converged(views, stored, want):
            lost.append({"restart": restarts, "want": want, "replicas": views, "redis": stored})
        log(f"Redis restart {restarts} (empty, no persistence): {counts['acked']} acknowledged, {counts['refused']} refused so far; "
            f"state {'kept' if not lost or lost[-1]['restart'] != restarts else 'LOST'}")
    stop.set()
    t.join()
    want, views, stored = settle()
    run.summary.update(restarts=restarts, acknowledged=counts["acked"], refused=counts["refused"], lost=lost,
                       want=want, replicas=views, redis=stored)
    run.check(restarts >= 1 and counts["acked"] > 0, f"{restarts} Redis restarts under {counts['acked']} acknowledged start/stop requests ({counts['refused']} refused while Redis was down)")
    run.check(not lost, f"after every restart each replica and Redis hold the last acknowledged state ({len(lost)} restarts lost some)")
    run.check(converged(views, stored, want), f"at the end: want {want}, replicas {views}, Redis {stored}")
    run.no_panics(*gws)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def scenario_soak(a, run):
    gw = run.testcam_gateway(f"""
[webrtc]
udp_port = 0
[detect]
model = "{ROOT}/models/testcam-shapes.onnx"
workers = 1
fps = 5
""")
    seconds = int(a.minutes * 60)
    whep = run.loadtest("whep", gw.base, "testcam", a.viewers, seconds)
    sse = run.loadtest("sse", gw.base, "testcam", a.viewers, seconds, fps=a.sse_fps)
    samples = []
    started = time.time()
    while whep.alive() or sse.alive():
        samples.append((round(time.time() - started), rss_kib(gw.p.pid)))
        if len(samples) % 6 == 1:
            log(f"t={samples[-1][0]} s gateway RSS {samples[-1][1] / 1024:.1f} MiB")
        time.sleep(min(10, max(1, seconds / 30)))
    w, s = run.loadtest_report(whep, seconds), run.loadtest_report(sse, seconds)
    warm = max(1, len(samples) // 6)  # the first sixth (5 min of 30) is warm-up
    base = samples[warm][1] if len(samples) > warm else samples[0][1]
    end = statistics.mean(v for _, v in samples[-3:])
    growth = (end - base) / base
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "rss.csv"), "w") as f:
            f.write("seconds,rss_kib\n" + "".join(f"{t},{v}\n" for t, v in samples))
    run.summary.update(rss_kib_start=samples[0][1], rss_kib_after_warmup=base, rss_kib_end=round(end), rss_growth_pct=round(growth * 100, 2),
                       rss_samples=len(samples), whep=w, sse=s)
    run.check(growth < a.max_growth_pct / 100, f"RSS flat (< {a.max_growth_pct} %): {base / 1024:.1f} MiB after warm-up -> {end / 1024:.1f} MiB at the end ({growth * 100:+.2f} %)")
    run.check(w.get("connected") == a.viewers and w.get("packets_lost") == 0 and w.get("errors") == 0,
              f"WebRTC: {w.get('connected')}/{a.viewers} sessions, {w.get('packets_lost')} packets lost, errors {w.get('errors')}")
    run.check(s.get("viewers_without_frames") == 0 and s.get("errors") == 0 and s.get("viewers_stale_at_end") == 0,
              f"SSE: {a.viewers} viewers, errors {s.get('errors')}, fps min {s.get('fps_min')}")
    run.no_panics(gw)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=["camera", "worker", "redis", "soak"])
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--period", type=float, default=30, help="seconds between faults")
    p.add_argument("--viewers", type=int, default=5, help="WebRTC viewers, and as many SSE viewers")
    p.add_argument("--sse-fps", type=int, default=5)
    p.add_argument("--bin-dir", default=os.path.join(ROOT, "target/release"))
    p.add_argument("--out", help="soak: write rss.csv here")
    p.add_argument("--max-growth-pct", type=float, default=5, help="soak: allowed RSS growth after warm-up")
    a = p.parse_args()
    run = Run(a)
    log(f"{a.scenario}: {a.minutes} min, fault every {a.period} s, {a.viewers} viewers; logs in {run.dir}")
    try:
        {"camera": scenario_camera, "worker": scenario_worker, "redis": scenario_redis, "soak": scenario_soak}[a.scenario](a, run)
    finally:
        code = run.finish()
    sys.exit(code)


if __name__ == "__main__":
    main()
