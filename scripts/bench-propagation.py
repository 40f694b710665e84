#!/usr/bin/env python3
"""Start/stop propagation latency across 3 Sightline replicas sharing Redis.

Starts redis-server and three release gateways on loopback (free ports), then toggles one
stream 200 times (start/stop alternately, each through a different replica) and measures,
for each of the two other replicas, the time from sending the POST until that replica's
GET /api/streams/{id} shows the new generation (polled over a keep-alive connection).
Prints p50/p90/p99/max in ms. Run: python3 scripts/bench-propagation.py [TOGGLES]
(build first: cargo build --release --bin gateway). Bounded: gives up after 10 s per toggle.
"""
import http.client, json, os, socket, subprocess, sys, tempfile, time

# Gateways started here serve no RTSP restream on the default ports (two would collide on 8554).
os.environ.setdefault("SIGHTLINE_RESTREAM__LISTEN", "127.0.0.1:0")
os.environ.setdefault("SIGHTLINE_RESTREAM__UDP_PORT", "0")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GATEWAY = os.path.join(ROOT, "target", "release", "gateway")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def main():
    toggles = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    procs = []
    tmp = tempfile.mkdtemp()
    try:
        rport = free_port()
        procs.append(subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                      stdout=subprocess.DEVNULL))
        wait_port(rport)
        ports = []
        for i, rid in enumerate("ABC"):
            port = free_port()
            cfg = os.path.join(tmp, f"{rid}.toml")
            with open(cfg, "w") as f:
                f.write(f'listen = "127.0.0.1:{port}"\nreplica_id = "{rid}"\nstatic_dir = "{ROOT}/static"\ndata_dir = "{tmp}/{rid}-data"\n'
                        f'[state]\nredis_url = "redis://127.0.0.1:{rport}"\n[webrtc]\nenabled = false\n'
                        f'[testcam]\nenabled = false\n[[streams]]\nid = "cam"\nurl = "rtsp://127.0.0.1:9/none"\nactive = false\n')
            procs.append(subprocess.Popen([GATEWAY, "--config", cfg], stderr=subprocess.DEVNULL))
            ports.append(port)
        for p in ports:
            wait_port(p)
        conns = [http.client.HTTPConnection("127.0.0.1", p) for p in ports]

        def get_generation(c):
            c.request("GET", "/api/streams/cam")
            return json.loads(c.getresponse().read())["generation"]

        samples = []
        for n in range(toggles):
            writer = n % 3
            action = "start" if n % 2 == 0 else "stop"
            sent = time.perf_counter()
            conns[writer].request("POST", f"/api/streams/cam/{action}")
            generation = json.loads(conns[writer].getresponse().read())["generation"]
            for i, c in enumerate(conns):
                if i == writer:
                    continue
                deadline = time.time() + 10
                while get_generation(c) < generation:
                    if time.time() > deadline:
                        raise RuntimeError("a replica never saw the change")
                samples.append((time.perf_counter() - sent) * 1000)
        samples.sort()
        q = lambda p: samples[min(len(samples) - 1, int(p * len(samples)))]
        print(f"propagation over {toggles} toggles x 2 replicas: p50 {q(0.5):.2f} ms, p90 {q(0.9):.2f} ms, "
              f"p99 {q(0.99):.2f} ms, max {samples[-1]:.2f} ms (POST sent -> other replica's GET shows it)")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)


if __name__ == "__main__":
    main()
