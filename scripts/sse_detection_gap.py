#!/usr/bin/env python3
"""How long after a detected frame its detection message comes on an SSE feed (issue 17 §5).

Reads `event: frame` and `event: detections` from a feed for SECONDS and prints, over the
messages and frames that were both seen (the first 5 skipped: the model's first runs are
slow), the gap between the frame's arrival and its message's (`seq` = the frame's `id:`;
negative when the message came first), p50 and p95.
Run it against a gateway whose `[feeds] detections_wait = "0s"` (with the default wait every
detected frame is held until its message, and the gap is below zero by design):

    python3 scripts/sse_detection_gap.py http://127.0.0.1:8080/api/streams/testcam/feed?fps=10 15
"""
import json
import statistics
import sys
import time
import urllib.request


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    url, seconds = sys.argv[1], float(sys.argv[2] if len(sys.argv) > 2 else 15)
    frames: dict[int, float] = {}
    messages: dict[int, float] = {}
    gaps: list[float] = []
    end = time.monotonic() + seconds
    with urllib.request.urlopen(url, timeout=10) as feed:
        event = seq = data = None
        for raw in feed:
            now = time.monotonic()
            if now > end:
                break
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("id: "):
                seq = int(line[4:])
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "":
                if event == "frame" and seq is not None:
                    frames[seq] = now
                    if seq in messages:
                        gaps.append((messages.pop(seq) - now) * 1000)
                elif event == "detections" and data:
                    frame = json.loads(data).get("seq")
                    if frame in frames:
                        gaps.append((now - frames.pop(frame)) * 1000)
                    elif isinstance(frame, int):
                        messages[frame] = now
                event = seq = data = None
    gaps = sorted(gaps[5:])
    if not gaps:
        sys.exit("no detection message matched a frame (is detection on for this stream?)")
    print(f"messages={len(gaps)} gap_ms_p50={statistics.median(gaps):.1f} gap_ms_p95={gaps[int(0.95 * len(gaps))]:.1f}")


if __name__ == "__main__":
    main()
