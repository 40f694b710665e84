// How long a WebRTC viewer's browser holds each frame before display, so that detection
// boxes that come after their frame can still be drawn on it (issue 17 §5/§6). The target is
// set with RTCRtpReceiver.jitterBufferTarget (WebRTC Extensions §6): a minimum the browser's
// jitter buffer moves toward gradually, not a fixed delay.
//
// Sans-IO: the overlay reports each detection message's margin (how long before its frame
// was displayed it came; negative: after) and asks for more delay when messages come late;
// this decides the target. Up is immediate (boxes off their picture now); down is judged
// only on margins measured after the browser has settled on the last target, from a low
// percentile of a window of them, so one slow model run raises the delay once and a model
// that got faster (a restarted worker, a quieter machine) gives the latency back.

/** Most delay ever asked for (ms). */
export const MAX_PLAYOUT_DELAY_MS = 500;
/** Kept on top of the measured need (ms): messages' own jitter. */
const SAFETY_MS = 20;
/** Smallest change down worth making (ms): smaller ones would only churn the browser. */
const MIN_STEP_MS = 20;
/** Margins judged for a step down (at 10 detections/s: 5 s). */
const WINDOW = 50;
/** Share of the window that may come later than the rest: the percentile judged. */
const PERCENTILE = 0.1;
/**
 * After a change, margins are ignored this long (ms): Chromium moves its playout delay to a
 * new target over about a second, and margins measured meanwhile are neither the old nor
 * the new delay's.
 */
export const SETTLE_MS = 3000;

export class PlayoutDelay {
  #ms = 0;
  #margins = [];
  #settledAt = -Infinity;

  /** The current target (ms); 0: the browser's own choice. */
  get ms() {
    return this.#ms;
  }

  /** A new session: back to the browser's own choice. */
  reset(now) {
    this.#ms = 0;
    this.#margins = [];
    this.#settledAt = now;
  }

  /**
   * Detection messages come `lateMs` after their frame was replaced with the current target
   * in effect: raise the target by that plus a safety margin (at most MAX_PLAYOUT_DELAY_MS).
   * Ignored while the browser moves to the last target (the lateness measured then is the
   * old target's). Returns the new target (ms), or null when it stays.
   */
  raise(lateMs, now) {
    if (now < this.#settledAt || !Number.isFinite(lateMs)) return null;
    const want = Math.min(MAX_PLAYOUT_DELAY_MS, Math.ceil(this.#ms + lateMs + SAFETY_MS));
    if (!(want > this.#ms)) return null;
    return this.#set(want, now);
  }

  /**
   * One message's margin: it came `marginMs` before its frame was displayed (negative:
   * after). With `strict` (a stream without tracking, where any late message raises the
   * target again) the window's lowest margin is judged, not its 10th percentile. Returns
   * the new target (ms) when a step down is due, else null.
   */
  note(marginMs, now, { strict = false } = {}) {
    if (this.#ms === 0 || now < this.#settledAt || !Number.isFinite(marginMs)) return null;
    this.#margins.push(marginMs);
    if (this.#margins.length < WINDOW) return null;
    const sorted = [...this.#margins].sort((a, b) => a - b);
    this.#margins = [];
    const spare = sorted[strict ? 0 : Math.floor(PERCENTILE * sorted.length)] - SAFETY_MS;
    if (spare < MIN_STEP_MS) return null;
    const want = this.#ms - spare < MIN_STEP_MS ? 0 : Math.round(this.#ms - spare);
    return this.#set(want, now);
  }

  #set(ms, now) {
    this.#ms = ms;
    this.#margins = [];
    this.#settledAt = now + SETTLE_MS;
    return ms;
  }
}
