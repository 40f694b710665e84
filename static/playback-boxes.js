// Detection boxes over the playback of a recording (issue #14 §5): the detection messages
// stored with the recording (GET /api/streams/{id}/detections) drawn on the very frame of the
// recording that the timeline's <video> shows, by the live view's DetectionOverlay (its
// drawing, colours, labels, letterbox mapping, per-model lanes and hidden models, and its
// rules for holding boxes between detected frames and carrying tracked ones along their
// velocity); see static/detection-overlay.js.
//
// Which frame is shown: requestVideoFrameCallback reports each presented frame's media time
// (`mediaTime`, s), and hls.js's fragment that contains it maps it to the recording timeline:
//   wall-clock ms = frag.programDateTime + (mediaTime - frag.start) × 1000
// (the same mapping as hls.js's own `playingDate`). vod.m3u8 gives each file and each
// discontinuity an EXT-X-PROGRAM-DATE-TIME, exact to the ms (its first frame's tfdt / 90);
// hls.js carries it on to the file's later fragments by their durations (which the gateway
// writes as the time to the next fragment), and once a fragment is parsed, sets its `start`
// to the media time of its first frame. The stored message whose pts / 90 is within half a
// frame (20 ms) of the mapped time is that frame's own, and its pts names the frame (so the
// overlay's "exact" rule matches it); a frame without one is named by the mapped time.
// Without hls.js (the browser's own HLS, Safari on iPhone) nothing maps frames to the
// timeline, and no boxes are drawn.
//
// Messages are fetched in windows of 60 s of the timeline, aligned on whole minutes: the one
// under the playback position and, from 20 s before its end, the next one (a window that
// reached to within 5 s of when it was fetched may still grow: fetched again 5 s later; a
// failed fetch is tried again 5 s later). Before each frame is shown the messages up to it
// are pushed to the overlay, as if they had come just before their frames. A jump of the
// position (a seek, frames more than 1 s apart, going back) or a frame whose window is not
// here yet restarts the overlay, so nothing from another time is drawn, and the first frame
// after it is primed with the messages of the 0.5 s before it (the tracks' velocities, and
// boxes still fresh enough to hold). A seek clears the boxes at once ('seeking').
//
// The canvas keeps the overlay's counters (data-exact, data-boxes, `sightlineDrawn`, …) and
// data-frame-ms: the mapped wall-clock ms of the frame shown (empty when it cannot be
// mapped); data-windows: the windows fetched, data-stored: the messages in them.

import { recordedDetections } from './api.js';
import { DetectionOverlay } from './detection-overlay.js';

/** Messages are fetched in windows of this many ms of the timeline. */
const WINDOW_MS = 60_000;
/** The next window is fetched from this long before the current one ends. */
const PREFETCH_MS = 20_000;
/** A stored message names the frame shown when within this of its mapped time (half a 25 fps frame). */
const HALF_FRAME_MS = 20;
/** Frames further apart on the timeline than this: a jump (the overlay starts over). */
const MAX_STEP_MS = 1000;
/** After a jump the overlay is primed with the messages of this long before the frame. */
const PRIME_MS = 500;
/** A failed fetch, or a window that may still grow, is fetched again after this long. */
const RETRY_MS = 5000;
/** A window ending within this of when it was fetched may still get messages. */
const FRESH_MS = 5000;
/** Windows kept (the farthest from the position go first). */
const KEEP_WINDOWS = 4;
/** Rounding between hls.js's fragment starts and presented media times (s). */
const EPSILON_S = 0.0005;

/** Index of the first of `frames` (sorted by pts) whose pts is at least `pts`. */
function firstAtOrAfter(frames, pts) {
  let lo = 0;
  let hi = frames.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (frames[mid].pts < pts) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** A window of stored messages. */
class StoredWindow {
  constructor() {
    /** @type {?object[]} its messages by pts (null until fetched) */
    this.frames = null;
    this.loading = false;
    this.at = -Infinity; // Date.now() of the last fetch
    this.complete = false; // will get no more messages
  }
}

export class PlaybackBoxes {
  #id;
  #canvas;
  #overlay;
  #video = null;
  #hls = null;
  #rvfcHandle = null;
  #session = 0;
  /** @type {Map<number, StoredWindow>} window index (start / WINDOW_MS) -> its messages */
  #windows = new Map();
  #lastMs = null; // mapped ms of the last frame whose messages were pushed; null: start over
  #lastKey = null; // its pts (90 kHz)
  #pending = null; // media time of a frame shown before its window came
  #onSeeking = () => this.#restart();

  /**
   * @param {string} id the stream
   * @param {HTMLCanvasElement} canvas laid over the playback <video>
   */
  constructor(id, canvas) {
    this.#id = id;
    this.#canvas = canvas;
    this.#overlay = new DetectionOverlay(canvas);
  }

  /** The stream's models from its status (as DetectionOverlay.setModels). */
  setModels(models) {
    this.#overlay.setModels(models);
  }

  /** Draw no boxes of these models (as DetectionOverlay.setHiddenModels: the card's toggles). */
  setHiddenModels(names) {
    this.#overlay.setHiddenModels(names);
  }

  /**
   * Draw the stored boxes over `video` while it plays the recording through `hls` (an hls.js
   * instance attached to it; null for the browser's own HLS: nothing is drawn then).
   * @param {HTMLVideoElement} video
   * @param {?object} hls
   */
  start(video, hls) {
    this.stop();
    this.#video = video;
    this.#hls = hls;
    this.#overlay.watchRecording(video);
    video.addEventListener('seeking', this.#onSeeking);
    if (!hls || typeof video.requestVideoFrameCallback !== 'function') return;
    const session = this.#session;
    const onFrame = (_now, meta) => {
      if (session !== this.#session) return;
      this.#rvfcHandle = video.requestVideoFrameCallback(onFrame);
      this.#present(meta.mediaTime);
    };
    this.#rvfcHandle = video.requestVideoFrameCallback(onFrame);
  }

  /** Stop drawing; forget the fetched messages; clear the canvas. */
  stop() {
    this.#session += 1;
    const video = this.#video;
    if (video) {
      if (this.#rvfcHandle !== null) video.cancelVideoFrameCallback?.(this.#rvfcHandle);
      video.removeEventListener('seeking', this.#onSeeking);
    }
    this.#video = null;
    this.#hls = null;
    this.#rvfcHandle = null;
    this.#windows.clear();
    this.#lastMs = null;
    this.#lastKey = null;
    this.#pending = null;
    this.#overlay.stop();
    this.#canvas.dataset.frameMs = '';
    this.#publishWindows();
  }

  /** Nothing drawn until the next frame shown, which starts over (a seek, a jump). */
  #restart() {
    this.#lastMs = null;
    this.#lastKey = null;
    this.#overlay.restart();
  }

  /**
   * The wall-clock ms (since the Unix epoch) of media time `t` (s) of the <video>, through the
   * hls.js fragment that contains it; null when none does or it has no date.
   */
  #wallClock(t) {
    const hls = this.#hls;
    if (!hls || !Number.isFinite(t)) return null;
    const levels = hls.levels ?? [];
    const frags = (levels[hls.currentLevel] ?? levels[0])?.details?.fragments;
    if (!frags?.length) return null;
    // The last fragment that starts at or before t.
    let lo = 0;
    let hi = frags.length - 1;
    let at = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (frags[mid].start <= t + EPSILON_S) {
        at = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    const frag = frags[at];
    const pdt = frag?.programDateTime;
    if (!frag || !Number.isFinite(pdt) || t > frag.start + frag.duration + EPSILON_S) return null;
    return pdt + Math.max(0, t - frag.start) * 1000;
  }

  /** The frame at media time `mediaTime` is shown: push its messages, draw its boxes. */
  #present(mediaTime) {
    const ms = this.#wallClock(mediaTime);
    this.#canvas.dataset.frameMs = ms === null ? '' : String(Math.round(ms));
    if (ms === null) {
      if (this.#lastMs !== null) this.#restart();
      return;
    }
    this.#fetchAround(ms);
    if (!this.#ready(ms)) {
      // Its messages are not here yet: nothing drawn, and the frame shown once they come
      // starts over.
      if (this.#lastMs !== null) this.#restart();
      this.#pending = mediaTime;
      return;
    }
    this.#pending = null;
    const own = this.#own(ms);
    const key = own ? own.pts : Math.round(ms * 90);
    const jump = this.#lastMs === null || key <= this.#lastKey || ms - this.#lastMs > MAX_STEP_MS;
    if (jump) {
      this.#overlay.restart();
      this.#pushBetween(key - PRIME_MS * 90, key);
    } else {
      this.#pushBetween(this.#lastKey + 1, key);
    }
    this.#lastMs = ms;
    this.#lastKey = key;
    this.#overlay.showFrame(key);
  }

  /** Push the stored messages with `lo` <= pts <= `hi` (90 kHz) to the overlay, by pts. */
  #pushBetween(lo, hi) {
    const first = Math.floor(lo / 90 / WINDOW_MS);
    const last = Math.floor(hi / 90 / WINDOW_MS);
    for (let i = first; i <= last; i += 1) {
      const frames = this.#windows.get(i)?.frames;
      if (!frames) continue;
      for (let j = firstAtOrAfter(frames, lo); j < frames.length && frames[j].pts <= hi; j += 1) {
        this.#overlay.push(frames[j]);
      }
    }
  }

  /** The stored message of the frame at `ms` (within half a frame), or null. */
  #own(ms) {
    let best = null;
    let bestGap = HALF_FRAME_MS;
    const lo = (ms - HALF_FRAME_MS) * 90;
    const hi = (ms + HALF_FRAME_MS) * 90;
    for (const i of new Set([Math.floor(lo / 90 / WINDOW_MS), Math.floor(hi / 90 / WINDOW_MS)])) {
      const frames = this.#windows.get(i)?.frames;
      if (!frames) continue;
      for (let k = firstAtOrAfter(frames, lo); k < frames.length && frames[k].pts <= hi; k += 1) {
        const gap = Math.abs(frames[k].pts / 90 - ms);
        if (gap <= bestGap) {
          best = frames[k];
          bestGap = gap;
        }
      }
    }
    return best;
  }

  /** Whether the messages of the frame at `ms` are here. */
  #ready(ms) {
    return Boolean(this.#windows.get(Math.floor(ms / WINDOW_MS))?.frames);
  }

  /** Fetch the window under `ms`, the one before it while priming from it, the next one near its end. */
  #fetchAround(ms) {
    const i = Math.floor(ms / WINDOW_MS);
    this.#fetch(i);
    if (Math.floor((ms - PRIME_MS) / WINDOW_MS) < i) this.#fetch(i - 1);
    if (ms - i * WINDOW_MS >= WINDOW_MS - PREFETCH_MS) this.#fetch(i + 1);
  }

  #fetch(i) {
    let w = this.#windows.get(i);
    if (w && (w.loading || w.complete || Date.now() - w.at < RETRY_MS)) return;
    if (!w) {
      w = new StoredWindow();
      this.#windows.set(i, w);
      this.#evict(i);
    }
    w.loading = true;
    w.at = Date.now();
    const session = this.#session;
    const from = i * WINDOW_MS;
    const to = from + WINDOW_MS;
    recordedDetections(this.#id, from, to).then((answer) => {
      if (session !== this.#session) return;
      const frames = (Array.isArray(answer?.frames) ? answer.frames : [])
        .filter((f) => Number.isFinite(f?.pts) && Array.isArray(f.boxes) && f.pts >= from * 90 && f.pts < to * 90)
        .sort((a, b) => a.pts - b.pts);
      w.frames = frames;
      w.complete = to <= w.at - FRESH_MS;
      this.#publishWindows();
      // A paused frame shown before its messages came: draw it now.
      if (this.#pending !== null && this.#video?.paused) this.#present(this.#pending);
    }, () => {
      // Tried again RETRY_MS after this fetch; the frames of this window get no boxes meanwhile.
    }).finally(() => {
      w.loading = false;
    });
  }

  /** Keep the KEEP_WINDOWS windows nearest to window `i`. */
  #evict(i) {
    while (this.#windows.size > KEEP_WINDOWS) {
      let far = null;
      for (const j of this.#windows.keys()) if (far === null || Math.abs(j - i) > Math.abs(far - i)) far = j;
      this.#windows.delete(far);
    }
  }

  #publishWindows() {
    const ready = [...this.#windows.values()].filter((w) => w.frames);
    this.#canvas.dataset.windows = String(ready.length);
    this.#canvas.dataset.stored = String(ready.reduce((n, w) => n + w.frames.length, 0));
  }
}
