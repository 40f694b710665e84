// Live view over LL-HLS (issue #14): the fallback between WebRTC and SSE. Plays
// /api/streams/{id}/hls/index.m3u8 into the card's <video> with hls.js (vendored in
// static/vendor, loaded on first use) in low-latency mode, or natively where the browser plays
// HLS itself (Safari). Status values reported through `onStatus(status, error)`:
//   connecting – loading hls.js and the playlists
//   playing    – a picture is shown
//   failed     – hls.js missing or unsupported, or a fatal error (error says which)

/** No picture this long after start: failed (the card then falls back to SSE). */
const FRAME_TIMEOUT_MS = 10_000;

let hlsLoading = null;

/** hls.js (`window.Hls`), loaded once from static/vendor. */
export function loadHls() {
  if (window.Hls) return Promise.resolve(window.Hls);
  hlsLoading ??= new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = 'vendor/hls.min.js';
    s.onload = () => (window.Hls ? resolve(window.Hls) : reject(new Error('hls.js did not load')));
    s.onerror = () => {
      hlsLoading = null;
      reject(new Error('cannot load hls.js'));
    };
    document.head.append(s);
  });
  return hlsLoading;
}

/** Whether this browser can play HLS at all (natively, or through MSE for hls.js). */
export function canPlayHls(video) {
  return Boolean(video.canPlayType('application/vnd.apple.mpegurl')) || typeof MediaSource === 'function';
}

export class HlsPlayer {
  #url;
  #onStatus;
  #hls = null;
  #video = null;
  #status = 'idle';
  #played = false;
  #frames = { count: 0, at: 0, fps: 0 };
  #timer = null;

  constructor(url, { onStatus } = {}) {
    this.#url = url;
    this.#onStatus = onStatus ?? (() => {});
  }

  get status() {
    return this.#status;
  }

  /** Whether a picture was shown (a later failure is worth a retry, not a fallback). */
  get played() {
    return this.#played;
  }

  /** Frames shown per second, over the last call's interval. */
  receivedFps() {
    const q = this.#video?.getVideoPlaybackQuality?.();
    if (!q) return 0;
    const now = performance.now();
    if (this.#frames.at && now - this.#frames.at >= 500) {
      this.#frames.fps = ((q.totalVideoFrames - this.#frames.count) * 1000) / (now - this.#frames.at);
    }
    if (!this.#frames.at || now - this.#frames.at >= 500) this.#frames = { ...this.#frames, count: q.totalVideoFrames, at: now };
    return this.#frames.fps;
  }

  #set(status, err) {
    if (this.#status === 'stopped') return;
    this.#status = status;
    this.#onStatus(status, err);
  }

  async start(video) {
    this.#video = video;
    this.#set('connecting');
    video.srcObject = null;
    // A picture shown (the first frame callback, or the 'playing' event where frame
    // callbacks are missing); none within FRAME_TIMEOUT_MS is a failure.
    const shown = () => {
      if (this.#status !== 'connecting') return;
      clearTimeout(this.#timer);
      this.#played = true;
      this.#set('playing');
    };
    video.requestVideoFrameCallback?.(shown);
    video.addEventListener('playing', shown, { once: true });
    this.#timer = setTimeout(() => {
      if (this.#status === 'connecting') this.#set('failed', new Error('LL-HLS: no picture within 10 s'));
    }, FRAME_TIMEOUT_MS);
    // hls.js wherever Media Source Extensions exist (it does LL-HLS; Chromium answers
    // canPlayType for HLS "maybe" but its own player cannot parse fMP4 parts), the browser's
    // own HLS only without them (Safari on iPhone).
    let Hls = null;
    if (typeof MediaSource === 'function') {
      try {
        Hls = await loadHls();
      } catch (err) {
        return this.#set('failed', err);
      }
      if (!Hls.isSupported()) return this.#set('failed', new Error('hls.js is not supported here'));
    }
    if (this.#status === 'stopped') return;
    if (!Hls?.isSupported()) {
      video.onerror = () => this.#set('failed', new Error(`LL-HLS: ${video.error?.message ?? 'cannot play'}`));
      video.src = this.#url;
    } else {
      this.#hls = new Hls({ lowLatencyMode: true, liveDurationInfinity: true });
      this.#hls.on(Hls.Events.ERROR, (_e, data) => {
        if (data.fatal) this.#set('failed', new Error(`LL-HLS: ${data.type} ${data.details}`));
      });
      this.#hls.loadSource(this.#url);
      this.#hls.attachMedia(video);
    }
    video.play().catch(() => {});
  }

  stop() {
    clearTimeout(this.#timer);
    this.#status = 'stopped';
    this.#hls?.destroy();
    this.#hls = null;
    if (this.#video) {
      this.#video.onerror = null;
      this.#video.removeAttribute('src');
      this.#video.load();
    }
  }
}
