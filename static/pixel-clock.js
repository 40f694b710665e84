// Reads the built-in test camera's *pixel clock* from a rendered picture to
// measure glass-to-glass latency (debug mode).
//
// Two rows of 48 black/white cells at the bottom left: row 0 is the capture
// time (ms since the Unix epoch, most significant bit first), row 1 the frame
// number (32 bits) followed by a 16-bit check value.

const CELLS = 48;

/** {cell, x0, y0} for a W×H picture (same rule as the gateway). */
export function clockGeometry(width, height) {
  const cell = Math.min(16, Math.max(4, Math.floor(width / 80) & ~3));
  return { cell, x0: cell, y0: height - 3 * cell };
}

function check(ms, frame) {
  return (ms ^ (ms >> 16n) ^ (ms >> 32n) ^ frame ^ (frame >> 16n) ^ 0xa5a5n) & 0xffffn;
}

/**
 * Decode from RGBA pixels of the clock area (`rgba` is `stride` pixels wide,
 * top left = the clock's top left). Returns {ms, frame} or null.
 */
export function decodeClock(rgba, stride, cell) {
  const rows = [0n, 0n];
  for (let r = 0; r < 2; r += 1) {
    const y = r * cell + (cell >> 1);
    for (let i = 0; i < CELLS; i += 1) {
      const p = (y * stride + i * cell + (cell >> 1)) * 4;
      const luma = (rgba[p] + rgba[p + 1] + rgba[p + 2]) / 3;
      rows[r] = (rows[r] << 1n) | (luma >= 128 ? 1n : 0n);
    }
  }
  const ms = rows[0];
  const frame = rows[1] >> 16n;
  if (check(ms, frame) !== (rows[1] & 0xffffn)) return null;
  return { ms: Number(ms), frame: Number(frame) };
}

function makeCanvas(width, height) {
  if (typeof OffscreenCanvas === 'function') return new OffscreenCanvas(width, height);
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  return canvas;
}

/** Copies only the clock area of a picture into a small canvas and decodes it. */
export class ClockReader {
  #canvas = null;
  #ctx = null;

  /**
   * @param {CanvasImageSource} source a <video> or loaded <img>
   * @param {number} width intrinsic picture width
   * @param {number} height intrinsic picture height
   * @returns {{ms: number, frame: number} | null}
   */
  read(source, width, height) {
    if (!(width > 0 && height > 0)) return null;
    const { cell, x0, y0 } = clockGeometry(width, height);
    const w = CELLS * cell;
    const h = 2 * cell;
    if (y0 < 0 || x0 + w > width) return null;
    if (!this.#ctx || this.#canvas.width !== w || this.#canvas.height !== h) {
      this.#canvas = makeCanvas(w, h);
      this.#ctx = this.#canvas.getContext('2d', { willReadFrequently: true });
    }
    try {
      this.#ctx.drawImage(source, x0, y0, w, h, 0, 0, w, h);
      return decodeClock(this.#ctx.getImageData(0, 0, w, h).data, w, cell);
    } catch {
      return null; // not decodable yet, or a cross-origin picture
    }
  }
}

/**
 * Latency probe: calls `onLatency(ms | null, clock | null)` for every decoded
 * picture of a <video> (requestVideoFrameCallback) or an <img> (call
 * `sampleImage`); `clock` is the picture's decoded {ms, frame}.
 */
export class LatencyProbe {
  #reader = new ClockReader();
  #onLatency;
  #video = null;
  #handle = null;

  constructor(onLatency) {
    this.#onLatency = onLatency;
  }

  /** Follow every frame presented by `video` until unwatch(). */
  watchVideo(video) {
    if (this.#video === video) return;
    this.unwatch();
    if (typeof video.requestVideoFrameCallback !== 'function') return;
    this.#video = video;
    const onFrame = () => {
      if (this.#video !== video) return;
      this.#report(this.#reader.read(video, video.videoWidth, video.videoHeight));
      this.#handle = video.requestVideoFrameCallback(onFrame);
    };
    this.#handle = video.requestVideoFrameCallback(onFrame);
  }

  unwatch() {
    if (this.#video && this.#handle != null) this.#video.cancelVideoFrameCallback(this.#handle);
    this.#video = null;
    this.#handle = null;
  }

  /** Decode a loaded <img>. */
  sampleImage(img) {
    this.#report(this.#reader.read(img, img.naturalWidth, img.naturalHeight));
  }

  #report(clock) {
    this.#onLatency(clock ? Date.now() - clock.ms : null, clock);
  }
}
