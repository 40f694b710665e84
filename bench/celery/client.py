"""Client of the Celery baseline (see tasks.py): splits a video into JPEG frames in the shared
directory (OpenCV), sends one task per frame, waits for all, re-assembles the MP4 in order
(OpenCV's VideoWriter, mp4v) and prints JSON: frames, wall seconds, frames/s.

Usage: python3 client.py VIDEO OUT.mp4 FILTER
"""

import json
import os
import shutil
import sys
import time

import cv2
from celery import group

from tasks import process_frame

video, out, name = sys.argv[1], sys.argv[2], sys.argv[3]
shared = os.environ.get("SHARED", "/tmp/celery-shared")
shutil.rmtree(shared, ignore_errors=True)
os.makedirs(shared)

started = time.monotonic()
cap = cv2.VideoCapture(video)
fps = cap.get(cv2.CAP_PROP_FPS)
frames = []
height, width = 0, 0
while True:
    ok, img = cap.read()
    if not ok:
        break
    height, width = img.shape[:2]
    src = os.path.join(shared, f"in{len(frames):06d}.jpg")
    cv2.imwrite(src, img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    frames.append((src, os.path.join(shared, f"out{len(frames):06d}.jpg")))
split = time.monotonic() - started

result = group(process_frame.s(src, dst, name) for src, dst in frames).apply_async()
done = result.get(timeout=3600)
processed = time.monotonic() - started

writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
for path in done:
    writer.write(cv2.imread(path))
writer.release()
wall = time.monotonic() - started
shutil.rmtree(shared, ignore_errors=True)
print(json.dumps({"frames": len(frames), "wall_s": wall, "frames_per_s": len(frames) / wall, "split_s": split, "tasks_s": processed - split}))
