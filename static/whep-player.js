// WHEP player (draft-ietf-wish-whep): one RTCPeerConnection receiving the
// stream's video, plus the "sightline" data channel for server messages.
//
// The gateway is ICE-lite and puts all its candidates in the answer, so the
// offer is sent right away (no gathering wait, no trickle).
//
// Status values reported through `onStatus(status, error)`:
//   connecting – offer sent / answer applied, no frame rendered yet
//   playing    – the <video> rendered its first frame
//   failed     – POST refused (error.status is the HTTP status), no frame
//                within `frameTimeoutMs` of the answer, or the connection died
//   stopped    – the server sent {"type":"stopped"}, or stop() was called

import { ApiError, authHeaders } from './api.js';

const POST_TIMEOUT_MS = 10000; // the gateway may wait 5 s for a keyframe
const FRAME_TIMEOUT_MS = 4000;
const DISCONNECTED_GRACE_MS = 5000; // 'disconnected' this long counts as failed

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

async function postError(res) {
  const body = parseJson(await res.text().catch(() => ''));
  const code = body?.error ?? (res.statusText || 'error');
  return new ApiError(res.status, code, body?.detail ?? `${code} (HTTP ${res.status})`);
}

function deleteSession(url) {
  // keepalive: the request survives page unload (pagehide).
  fetch(url, { method: 'DELETE', keepalive: true, cache: 'no-store' }).catch(() => {});
}

export class WhepPlayer {
  #url;
  #handlers;
  #frameTimeoutMs;
  #pc = null;
  #video = null;
  #stream = null;
  #location = null;
  #status = 'idle';
  #played = false;
  #frameTimer = null;
  #disconnectTimer = null;
  #lastInbound = null;

  /**
   * @param {string} url WHEP endpoint (POST target)
   * @param {{onStatus?: Function, onMessage?: Function}} handlers
   * @param {{frameTimeoutMs?: number}} options
   */
  constructor(url, handlers = {}, { frameTimeoutMs = FRAME_TIMEOUT_MS } = {}) {
    this.#url = url;
    this.#handlers = handlers;
    this.#frameTimeoutMs = frameTimeoutMs;
  }

  get status() {
    return this.#status;
  }

  /** Whether a frame was ever rendered by this player. */
  get played() {
    return this.#played;
  }

  /** The received MediaStream (null before the track arrives). */
  get stream() {
    return this.#stream;
  }

  /** Negotiate and play into `video`. Failures are reported as status 'failed'. */
  async start(video) {
    if (this.#pc) return;
    let pc;
    try {
      pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    } catch (err) {
      this.#setStatus('failed', err); // no WebRTC in this browser
      return;
    }
    this.#pc = pc;
    this.#video = video;
    this.#setStatus('connecting');
    pc.addTransceiver('video', { direction: 'recvonly' });
    // The camera's audio, when it has some (G.711 as sent, AAC as Opus); the element starts
    // muted so autoplay works, and the card's button unmutes it.
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const channel = pc.createDataChannel('sightline');
    channel.onmessage = (ev) => this.#guard(pc, () => this.#onMessage(ev.data));
    channel.onclose = () => this.#guard(pc, () => this.#fail(new Error('session closed')));
    pc.ontrack = (ev) => this.#guard(pc, () => this.#onTrack(ev));
    pc.onconnectionstatechange = () => this.#guard(pc, () => this.#onConnectionState(pc));
    try {
      await pc.setLocalDescription(await pc.createOffer());
      const res = await fetch(this.#url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/sdp', Accept: 'application/sdp', ...authHeaders() },
        body: pc.localDescription.sdp,
        cache: 'no-store',
        signal: AbortSignal.timeout(POST_TIMEOUT_MS),
      });
      const location = res.headers.get('Location');
      const sessionUrl = location ? new URL(location, res.url).href : null;
      if (this.#pc !== pc) {
        // stop() ran while the POST was in flight: end the new session.
        if (res.status === 201 && sessionUrl) deleteSession(sessionUrl);
        return;
      }
      if (res.status !== 201) throw await postError(res);
      this.#location = sessionUrl;
      await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
      if (this.#pc !== pc) return;
      this.#watchFirstFrame(pc, video);
    } catch (err) {
      this.#guard(pc, () => this.#fail(err));
    }
  }

  /** End the session (DELETE) and release everything. Idempotent. */
  stop() {
    if (this.#location) deleteSession(this.#location);
    this.#teardown();
    this.#setStatus('stopped');
  }

  /**
   * Receive statistics of the video: {width, height, fps, framesDecoded,
   * packetsLost, jitterBufferMs, rtt} (rtt in ms, null when unknown).
   * fps and jitterBufferMs cover the span since the previous call when it is
   * at least half a second old (else framesPerSecond and the whole session),
   * so the fast-start burst of frames does not linger. Null when not connected.
   */
  async stats() {
    const pc = this.#pc;
    if (!pc) return null;
    const report = await pc.getStats();
    let inbound = null;
    let pair = null;
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') inbound = s;
      else if (s.type === 'transport' && s.selectedCandidatePairId) {
        pair = report.get(s.selectedCandidatePairId) ?? pair;
      }
    });
    if (!inbound || this.#pc !== pc) return null;
    const last = this.#lastInbound;
    const prev = last && inbound.timestamp - last.timestamp >= 500 ? last : null;
    if (!last || prev) this.#lastInbound = inbound;
    const emitted = (inbound.jitterBufferEmittedCount ?? 0) - (prev?.jitterBufferEmittedCount ?? 0);
    const delay = (inbound.jitterBufferDelay ?? 0) - (prev?.jitterBufferDelay ?? 0);
    const fps = prev
      ? ((inbound.framesDecoded - prev.framesDecoded) * 1000) / (inbound.timestamp - prev.timestamp)
      : inbound.framesPerSecond;
    const rtt = pair?.currentRoundTripTime;
    return {
      width: inbound.frameWidth ?? null,
      height: inbound.frameHeight ?? null,
      fps: Number.isFinite(fps) ? fps : null,
      framesDecoded: inbound.framesDecoded ?? 0,
      packetsLost: inbound.packetsLost ?? 0,
      jitterBufferMs: emitted > 0 ? (delay / emitted) * 1000 : null,
      rtt: typeof rtt === 'number' ? rtt * 1000 : null,
    };
  }

  /**
   * Ask the browser to hold video this many ms before display
   * (RTCRtpReceiver.jitterBufferTarget, WebRTC Extensions §6), so detection boxes that
   * arrive after their frame can still be drawn on it. Ignored where unsupported.
   */
  setPlayoutDelay(ms) {
    for (const receiver of this.#pc?.getReceivers() ?? []) {
      if (receiver.track?.kind === 'video' && 'jitterBufferTarget' in receiver) {
        try {
          receiver.jitterBufferTarget = ms;
        } catch {
          // out of range: keep the browser's choice
        }
      }
    }
  }

  #guard(pc, fn) {
    if (this.#pc === pc) fn();
  }

  #setStatus(status, error) {
    if (this.#status === status) return;
    this.#status = status;
    this.#handlers.onStatus?.(status, error);
  }

  #onConnectionState(pc) {
    const state = pc.connectionState;
    clearTimeout(this.#disconnectTimer);
    this.#disconnectTimer = null;
    if (state === 'failed' || state === 'closed') {
      this.#fail(new Error(`connection ${state}`));
    } else if (state === 'disconnected') {
      // Chrome takes ~30 s to go from disconnected to failed (gateway gone).
      this.#disconnectTimer = setTimeout(() => this.#guard(pc, () => {
        this.#fail(new Error('connection lost'));
      }), DISCONNECTED_GRACE_MS);
    }
  }

  #onTrack(ev) {
    // Video and audio in one MediaStream, whatever stream ids the answer gives them.
    const stream = this.#stream ?? new MediaStream();
    if (!stream.getTracks().includes(ev.track)) stream.addTrack(ev.track);
    this.#stream = stream;
    const video = this.#video;
    if (video.srcObject !== stream) video.srcObject = stream;
    video.play?.().catch(() => {}); // autoplay policy: the element is muted
  }

  #watchFirstFrame(pc, video) {
    const onFrame = () => this.#guard(pc, () => {
      clearTimeout(this.#frameTimer);
      this.#frameTimer = null;
      this.#played = true;
      this.#setStatus('playing');
    });
    if (typeof video.requestVideoFrameCallback === 'function') {
      video.requestVideoFrameCallback(onFrame);
    } else {
      video.addEventListener('playing', onFrame, { once: true });
    }
    this.#frameTimer = setTimeout(() => this.#guard(pc, () => {
      this.#fail(new Error(`no video within ${this.#frameTimeoutMs / 1000} s`));
    }), this.#frameTimeoutMs);
  }

  #onMessage(data) {
    const msg = typeof data === 'string' ? parseJson(data) : null;
    if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return;
    if (msg.type === 'stopped') {
      // The server closes the session itself; no DELETE needed.
      this.#location = null;
      this.#teardown();
      this.#setStatus('stopped');
    }
    this.#handlers.onMessage?.(msg);
  }

  #fail(error) {
    if (this.#location) deleteSession(this.#location);
    this.#teardown();
    this.#setStatus('failed', error);
  }

  #teardown() {
    clearTimeout(this.#frameTimer);
    clearTimeout(this.#disconnectTimer);
    this.#frameTimer = null;
    this.#disconnectTimer = null;
    const pc = this.#pc;
    this.#pc = null;
    this.#location = null;
    this.#lastInbound = null;
    if (this.#video && this.#stream && this.#video.srcObject === this.#stream) {
      this.#video.srcObject = null;
    }
    this.#stream = null;
    pc?.close();
  }
}
