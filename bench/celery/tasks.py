"""The comparison baseline for Sightline's jobs (issue #15): a minimal version of the original
design, as its authors built it: Celery with Redis as the broker, one task per frame, frames as
files in a shared directory, OpenCV per frame.

Run a worker with:  celery -A tasks worker --concurrency N --loglevel warning
(REDIS_URL names the broker; SHARED the shared directory, both also read by client.py).
"""

import os

import cv2
from celery import Celery

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)
app.conf.worker_prefetch_multiplier = 1
app.conf.task_acks_late = True  # at-least-once, as Sightline's jobs are

net = None


def _detector():
    """OpenCV's DNN module running the same YOLO model Sightline's workers run."""
    global net
    if net is None:
        net = cv2.dnn.readNetFromONNX(os.environ["MODEL"])
        cv2.setNumThreads(1)
    return net


@app.task
def process_frame(src: str, dst: str, name: str, sigma: float = 6.0) -> str:
    """Reads one frame (JPEG) from the shared directory, filters it, writes it back."""
    img = cv2.imread(src)
    if name == "blur":
        out = cv2.GaussianBlur(img, (0, 0), sigma)
    elif name == "detect":
        blob = cv2.dnn.blobFromImage(img, 1 / 255.0, (640, 640), swapRB=True)
        n = _detector()
        n.setInput(blob)
        n.forward()  # boxes are not drawn: the cost measured is the model's
        out = img
    else:
        raise ValueError(f"unknown filter {name}")
    cv2.imwrite(dst, out, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return dst
