#!/usr/bin/env python3
"""Tracking benchmark (issue #13): Sightline's tracker against Roboflow's ByteTrack.

Ground truth: the TUD-Campus sequence that `motmetrics` ships (motmetrics/data/TUD-Campus/
gt.txt, 71 frames, 25 fps, pedestrians). Detections are made from it with a fixed, seeded
noise model (documented below), written in MOTChallenge format, and given on identical input
to

  * `sightline track --mot DET --fps 25` (this workspace's release build), and
  * `trackers.ByteTrackTracker` (Roboflow's `trackers` package, PyPI),

then scored with motmetrics (MOTA, IDF1, ID switches) and timed (frames per second of the
tracker alone: Sightline's from its own stderr report, excluding file parsing; Roboflow's
around its `update` calls).

Noise model (per ground-truth box, per frame; seed 7):
  * 10 % missed;
  * box centre jittered by N(0, 5 % of the box width/height), size scaled by N(1, 5 %);
  * score U(0.6, 1.0), except 15 % of the kept boxes at U(0.15, 0.5) (occlusion-like weak
    boxes, which ByteTrack's second association exists for);
  * false positives: Poisson(0.3) per frame, random boxes of pedestrian size at U(0.1, 0.7).

Usage (from the repository root; needs `cargo build --release -p sightline-cli` first):
    python3 -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install motmetrics trackers
    /tmp/tvenv/bin/python scripts/bench_track.py [--runs 5]
Prints one line per tracker and a JSON summary.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import numpy as np

if not hasattr(np, "asfarray"):  # motmetrics uses np.asfarray, gone in NumPy 2
    np.asfarray = lambda a, dtype=float: np.asarray(a, dtype=dtype)

import motmetrics as mm  # noqa: E402

FPS = 25.0


def load_gt():
    path = os.path.join(os.path.dirname(mm.__file__), "data", "TUD-Campus", "gt.txt")
    frames = {}
    for line in open(path):
        f = line.strip().split(",")
        if len(f) < 6:
            continue
        frame, oid = int(float(f[0])), int(float(f[1]))
        x, y, w, h = (float(v) for v in f[2:6])
        frames.setdefault(frame, []).append((oid, x, y, w, h))
    return path, frames


def make_detections(gt, seed=7):
    rng = random.Random(seed)
    dets = {}
    for frame, boxes in gt.items():
        out = []
        for _, x, y, w, h in boxes:
            if rng.random() < 0.10:
                continue
            cx, cy = x + w / 2 + rng.gauss(0, 0.05 * w), y + h / 2 + rng.gauss(0, 0.05 * h)
            w2, h2 = w * max(0.5, rng.gauss(1, 0.05)), h * max(0.5, rng.gauss(1, 0.05))
            score = rng.uniform(0.15, 0.5) if rng.random() < 0.15 else rng.uniform(0.6, 1.0)
            out.append((cx - w2 / 2, cy - h2 / 2, w2, h2, score))
        # Poisson(0.3) false positives.
        n, p = 0, rng.random()
        while p > np.exp(-0.3):
            n += 1
            p *= rng.random()
        for _ in range(n):
            w, h = rng.uniform(30, 80), rng.uniform(80, 200)
            out.append((rng.uniform(0, 640 - w), rng.uniform(0, 480 - h), w, h, rng.uniform(0.1, 0.7)))
        dets[frame] = out
    return dets


def write_mot(path, dets):
    with open(path, "w") as f:
        for frame in sorted(dets):
            for x, y, w, h, s in dets[frame]:
                f.write("%d,-1,%.2f,%.2f,%.2f,%.2f,%.4f,-1,-1,-1\n" % (frame, x, y, w, h, s))


def read_mot(path):
    out = {}
    for line in open(path):
        f = line.strip().split(",")
        if len(f) >= 6:
            out.setdefault(int(f[0]), []).append((int(f[1]), *(float(v) for v in f[2:6])))
    return out


def score(gt, hyp, name):
    acc = mm.MOTAccumulator(auto_id=False)
    for frame in sorted(gt):
        g, h = gt[frame], hyp.get(frame, [])
        dist = mm.distances.iou_matrix([b[1:] for b in g], [b[1:] for b in h], max_iou=0.5)
        acc.update([b[0] for b in g], [b[0] for b in h], dist, frameid=frame)
    mh = mm.metrics.create()
    s = mh.compute(acc, metrics=["mota", "idf1", "num_switches", "num_false_positives", "num_misses"], name=name)
    return {k: float(s[k].iloc[0]) for k in s.columns}


def run_sightline(binary, det_path, runs):
    best_fps, out = 0.0, None
    for _ in range(runs):
        p = subprocess.run([binary, "track", "--mot", det_path, "--fps", str(FPS)], capture_output=True, text=True, check=True)
        # "tracked N frames, M detections in T ms: F frames/s"
        best_fps = max(best_fps, float(p.stderr.strip().split(":")[-1].split()[0]))
        out = p.stdout
    return out, best_fps


def run_roboflow(dets, runs):
    import supervision as sv
    from trackers import ByteTrackTracker

    best_fps, hyp = 0.0, {}
    frames = sorted(dets)
    inputs = []
    for frame in range(frames[0], frames[-1] + 1):
        boxes = dets.get(frame, [])
        xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h, _ in boxes], dtype=np.float32).reshape(-1, 4)
        conf = np.array([s for *_, s in boxes], dtype=np.float32)
        inputs.append((frame, sv.Detections(xyxy=xyxy, confidence=conf, class_id=np.zeros(len(boxes), dtype=int))))
    for _ in range(runs):
        tracker = ByteTrackTracker(frame_rate=FPS)
        hyp = {}
        started = time.perf_counter()
        results = [(frame, tracker.update(d)) for frame, d in inputs]
        took = time.perf_counter() - started
        best_fps = max(best_fps, len(inputs) / took)
        for frame, r in results:
            for (x1, y1, x2, y2), tid in zip(r.xyxy, r.tracker_id):
                if tid is not None and tid >= 0:
                    hyp.setdefault(frame, []).append((int(tid), float(x1), float(y1), float(x2 - x1), float(y2 - y1)))
    return hyp, best_fps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5, help="timing runs per tracker (best kept)")
    ap.add_argument("--binary", default="target/release/sightline")
    args = ap.parse_args()
    gt_path, gt = load_gt()
    dets = make_detections(gt)
    with tempfile.TemporaryDirectory() as tmp:
        det_path = os.path.join(tmp, "det.txt")
        write_mot(det_path, dets)
        out, ours_fps = run_sightline(args.binary, det_path, args.runs)
        ours_path = os.path.join(tmp, "ours.txt")
        open(ours_path, "w").write(out)
        ours = score(gt, read_mot(ours_path), "sightline")
    theirs_hyp, theirs_fps = run_roboflow(dets, args.runs)
    theirs = score(gt, theirs_hyp, "roboflow")
    n_dets = sum(len(v) for v in dets.values())
    print("TUD-Campus (%s): %d frames, %d GT boxes, %d noisy detections" % (gt_path, len(gt), sum(len(v) for v in gt.values()), n_dets))
    for name, m, fps in (("sightline track", ours, ours_fps), ("trackers.ByteTrackTracker", theirs, theirs_fps)):
        print("%-26s MOTA %.3f  IDF1 %.3f  IDsw %d  FP %d  FN %d  %.0f frames/s" % (
            name, m["mota"], m["idf1"], m["num_switches"], m["num_false_positives"], m["num_misses"], fps))
    print(json.dumps({"sightline": dict(ours, fps=ours_fps), "roboflow": dict(theirs, fps=theirs_fps),
                      "speedup": ours_fps / theirs_fps if theirs_fps else None}))


if __name__ == "__main__":
    sys.exit(main())
