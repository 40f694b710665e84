// SSE frame player: one EventSource on /api/streams/{id}/feed.
//
// Events from the gateway:
//   frame   – id: sequence number, data: base64 JPEG
//   state   – JSON health object plus "active"
//   detections – JSON detection message (boxes for the frame with id = seq)
//   stopped – JSON {"reason": …}; the server then ends the response
//
// Frames are decoded into Blobs and exposed as object URLs. A few recent URLs
// are kept alive so an <img> that is still loading one does not fail; older
// ones are revoked.

const FPS_WINDOW_MS = 2000;
const KEEP_URLS = 3;

function decodeBase64(b64) {
  if (typeof Uint8Array.fromBase64 === 'function') {
    return Uint8Array.fromBase64(b64);
  }
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i += 1) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/**
 * Status values reported through `onStatus`:
 *   connecting   – waiting for the first response
 *   open         – connected
 *   reconnecting – connection dropped; EventSource retries on its own
 *   failed       – the server refused the feed (e.g. 409) – EventSource gave up
 *   stopped      – the server sent `stopped`
 */
export class SsePlayer {
  #url;
  #handlers;
  #source = null;
  #urls = [];
  #frameTimes = [];
  #openedAt = 0;
  #status = 'idle';
  #lastFrame = null;

  /**
   * @param {string} url feed URL
   * @param {{onFrame?: Function, onState?: Function, onStopped?: Function,
   *          onFailed?: Function, onStatus?: Function, onDetections?: Function}} handlers
   */
  constructor(url, handlers = {}) {
    this.#url = url;
    this.#handlers = handlers;
  }

  get status() {
    return this.#status;
  }

  /** Latest frame as {url, seq}, or null. */
  get lastFrame() {
    return this.#lastFrame;
  }

  open() {
    if (this.#source) return;
    const source = new EventSource(this.#url);
    this.#source = source;
    this.#openedAt = performance.now();
    this.#setStatus('connecting');
    source.addEventListener('open', () => this.#guard(source, () => this.#setStatus('open')));
    source.addEventListener('frame', (ev) => this.#guard(source, () => this.#onFrame(ev)));
    source.addEventListener('state', (ev) => this.#guard(source, () => this.#onState(ev)));
    source.addEventListener('detections', (ev) => this.#guard(source, () => {
      const msg = parseJson(ev.data);
      if (msg && typeof msg === 'object') this.#handlers.onDetections?.(msg);
    }));
    source.addEventListener('stopped', (ev) => this.#guard(source, () => this.#onStopped(ev)));
    source.addEventListener('error', () => this.#guard(source, () => this.#onError(source)));
  }

  /** Close the connection and release all frame URLs. Idempotent, silent. */
  close() {
    this.#detach();
    for (const url of this.#urls) URL.revokeObjectURL(url);
    this.#urls = [];
    this.#frameTimes = [];
    this.#lastFrame = null;
    this.#status = 'closed';
  }

  /** Frames received per second over the last two seconds. */
  receivedFps(now = performance.now()) {
    this.#pruneFrameTimes(now);
    const span = Math.min(FPS_WINDOW_MS, now - this.#openedAt);
    if (span < 250) return 0;
    return (this.#frameTimes.length * 1000) / span;
  }

  #guard(source, fn) {
    if (this.#source === source) fn();
  }

  #detach() {
    if (!this.#source) return;
    this.#source.close();
    this.#source = null;
  }

  #setStatus(status) {
    if (this.#status === status) return;
    this.#status = status;
    this.#handlers.onStatus?.(status);
  }

  #pruneFrameTimes(now) {
    const cutoff = now - FPS_WINDOW_MS;
    let drop = 0;
    while (drop < this.#frameTimes.length && this.#frameTimes[drop] < cutoff) drop += 1;
    if (drop > 0) this.#frameTimes.splice(0, drop);
  }

  #onFrame(ev) {
    let bytes;
    try {
      bytes = decodeBase64(ev.data);
    } catch {
      return; // corrupt frame: skip it
    }
    const url = URL.createObjectURL(new Blob([bytes], { type: 'image/jpeg' }));
    this.#urls.push(url);
    while (this.#urls.length > KEEP_URLS) URL.revokeObjectURL(this.#urls.shift());

    const now = performance.now();
    this.#frameTimes.push(now);
    this.#pruneFrameTimes(now);
    this.#setStatus('open');

    this.#lastFrame = { url, seq: ev.lastEventId || null };
    this.#handlers.onFrame?.(this.#lastFrame);
  }

  #onState(ev) {
    const data = parseJson(ev.data);
    if (data && typeof data === 'object') this.#handlers.onState?.(data);
  }

  #onStopped(ev) {
    // Close before the server ends the response, otherwise EventSource
    // would reconnect on its own.
    this.#detach();
    this.#setStatus('stopped');
    this.#handlers.onStopped?.(parseJson(ev.data) ?? { reason: 'stopped' });
  }

  #onError(source) {
    if (source.readyState === EventSource.CLOSED) {
      // Non-200 answer (409 on a stopped stream, 404, 5xx…): EventSource
      // does not retry; the owner decides whether and when to.
      this.#detach();
      this.#setStatus('failed');
      this.#handlers.onFailed?.();
    } else {
      this.#setStatus('reconnecting');
    }
  }
}
