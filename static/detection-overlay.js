// Detection boxes drawn on a <canvas> over the live picture, on the frame they
// were computed for.
//
// Detection messages (data channel type "detections", SSE `event: detections`):
//   {stream, seq, rtp_timestamp, capture_ms, width, height,
//    boxes: [{x, y, w, h (0..1 of the frame), class_id, label, score, track_id}],
//    infer_ms, latency_ms}
//
// Matching a message to a frame:
//   WebRTC – requestVideoFrameCallback reports each displayed frame's RTP
//            timestamp (90 kHz). The gateway keeps the camera's timestamps
//            plus a per-session offset (announced as `rtp_offset` in the
//            data channel's hello/timing messages), so the frame's camera
//            timestamp is rtpTimestamp - offset (mod 2^32).
//   SSE    – frames carry their sequence number as the event id; messages
//            carry the same `seq`.
// Boxes are drawn when their frame is on screen: at once if the message
// arrives while that frame is displayed, or when the frame is displayed if
// the message came first ("exact"). Over WebRTC a message that comes after
// its frame was replaced has its tracked boxes carried to the frame shown
// (as below, at most 300 ms; "late"), so the video need not wait for the
// model; without tracking (no velocities) such a message asks the player to
// delay playout (`onLate`), and over SSE (where the feed sends boxes before
// their frame) one at most one frame late is drawn on the next frame; older
// ones are dropped ("stale"). Between detected frames (detection runs
// at a lower rate than video: 10 of 25 fps) the last boxes are carried
// forward while they are at most one detection interval plus one frame
// interval old ("held"), then cleared: each box that continues a track is
// moved to where its track's velocity (from its last two detections, in
// 0..1 of the picture per 90 kHz tick) puts it at the shown frame's time;
// a box without a track id or a velocity yet is not drawn on that frame. A
// box held in place would sit 8 px (of a 120 px shape) off per 25 fps frame
// on the test camera, which is what brought the share of boxes that match
// their picture from 76 % down to 57 % (tests/browser/overlay-match.mjs).
//
// Layout: the canvas covers the media box; the picture is letterboxed inside
// it (object-fit: contain), so boxes are mapped into the picture's rectangle.
// The canvas keeps counters for tests and debugging in data-* attributes:
// data-exact (boxes drawn on their own frame), data-late, data-stale,
// data-held, data-cleared, data-boxes (boxes drawn now), and the boxes drawn
// now as the property `sightlineDrawn` ({boxes}, 0..1 of the picture).

const KEEP_MESSAGES = 32;
/** A track's velocity comes from two detections at most this far apart (90 kHz ticks: 0.5 s). */
const MAX_VELOCITY_SPAN = 45_000;
/** RTP ticks per frame before the stream shows its own (25 fps). */
const DEFAULT_FRAME_TICKS = 3600;
/** A late message's boxes are carried to the shown frame at most this far (90 kHz: 300 ms). */
const MAX_CARRY = 27_000;

/** Signed difference a - b of two 32-bit RTP timestamps. */
const rtpDiff = (a, b) => (a - b) | 0;

function classColour(classId) {
  const hue = (Number(classId) * 137.508) % 360;
  return `hsl(${hue.toFixed(0)} 90% 55%)`;
}

export class DetectionOverlay {
  #canvas;
  #ctx;
  #messages = [];
  #mode = null; // 'rtp' (WebRTC <video>) | 'seq' (SSE <img>)
  #source = null;
  #offset = 0;
  #frameKey = null;
  #frameStep = 0;
  #messageStep = 0;
  #lastMessageKey = null;
  #drawn = null; // message on screen
  #drawnKey = null;
  #seen = new Map(); // track id -> its last detection {at: rtp_timestamp, seq, box}
  #velocity = new WeakMap(); // box -> its track's velocity {x, y, w, h} (per tick) when detected
  #ticksPerSeq = DEFAULT_FRAME_TICKS; // SSE: RTP ticks between consecutive seq numbers
  #lateness = 0; // WebRTC: how late (ticks) the last carried message came after its frame
  #tracked = false; // some box came with a track id: the stream is tracked
  #rvfcVideo = null;
  #rvfcHandle = null;
  #counts = { exact: 0, late: 0, stale: 0, held: 0, cleared: 0 };
  #zones = [];
  #lines = [];
  #draft = null; // {kind: 'zone' | 'line', points} being drawn in the editor

  #onLate;

  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{onLate?: (ms: number) => void}} handlers onLate: a WebRTC message came
   *   this many ms after its frame was replaced (the player can delay playout to match)
   */
  constructor(canvas, { onLate } = {}) {
    this.#canvas = canvas;
    this.#onLate = onLate;
    this.#ctx = canvas.getContext('2d');
    if (typeof ResizeObserver === 'function') new ResizeObserver(() => this.redraw()).observe(canvas);
  }

  /** Follow a WebRTC <video>: frames are named by RTP timestamp. */
  watchVideo(video) {
    this.stop();
    this.#mode = 'rtp';
    this.#source = video;
    if (typeof video.requestVideoFrameCallback !== 'function') return;
    this.#rvfcVideo = video;
    const onFrame = (_now, meta) => {
      if (this.#rvfcVideo !== video) return;
      if (typeof meta.rtpTimestamp === 'number') {
        this.#onFrame((meta.rtpTimestamp - this.#offset) >>> 0);
      }
      this.#rvfcHandle = video.requestVideoFrameCallback(onFrame);
    };
    this.#rvfcHandle = video.requestVideoFrameCallback(onFrame);
  }

  /** Follow an SSE <img>: call showFrame(seq) for each frame shown. */
  watchImage(img) {
    this.stop();
    this.#mode = 'seq';
    this.#source = img;
  }

  /** SSE: the frame with this sequence number is now displayed. */
  showFrame(seq) {
    if (this.#mode !== 'seq') return;
    const key = Number(seq);
    if (Number.isFinite(key)) this.#onFrame(key);
  }

  /** The session's RTP timestamp offset (data channel hello/timing `rtp_offset`). */
  setRtpOffset(offset) {
    if (Number.isInteger(offset)) this.#offset = offset >>> 0;
  }

  /** A detection message arrived. */
  push(msg) {
    if (!msg || !Array.isArray(msg.boxes) || !this.#mode) return;
    const key = this.#keyOf(msg);
    if (key === null) return;
    if (this.#lastMessageKey !== null) {
      const step = this.#diff(key, this.#lastMessageKey);
      if (step > 0) this.#messageStep = step;
    }
    this.#lastMessageKey = key;
    this.#learn(msg);
    this.#messages.push(msg);
    if (this.#messages.length > KEEP_MESSAGES) this.#messages.shift();
    if (key === this.#frameKey) {
      this.#lateness = 0;
      this.#draw(msg, key, 'exact');
    } else if (this.#frameKey !== null) {
      const late = this.#diff(this.#frameKey, key);
      const newer = this.#drawnKey === null || this.#diff(key, this.#drawnKey) > 0;
      if (late > 0 && this.#mode === 'rtp' && late <= MAX_CARRY && newer && this.#movable(msg)) {
        // Its frame is gone: carry its tracked boxes to the frame shown now.
        this.#lateness = late;
        this.#drawn = msg;
        this.#drawnKey = key;
        this.#count('late');
        this.#paintCarried(late);
      } else {
        if (late > 0 && late <= this.#frameStep) this.#draw(msg, key, 'late');
        else if (late > 0) this.#count('stale');
        // Without tracking boxes cannot be carried: ask the player to delay the video
        // instead. With tracking, a box without a velocity yet (a new track, or one not
        // confirmed) gets one with a later message.
        if (late > 0 && this.#mode === 'rtp' && !this.#tracked) this.#onLate?.(late / 90);
      }
    }
  }

  /** Stop following; clear the canvas. */
  stop() {
    if (this.#rvfcVideo && this.#rvfcHandle !== null) {
      this.#rvfcVideo.cancelVideoFrameCallback?.(this.#rvfcHandle);
    }
    this.#rvfcVideo = null;
    this.#rvfcHandle = null;
    this.#mode = null;
    this.#source = null;
    this.#messages = [];
    this.#frameKey = null;
    this.#lastMessageKey = null;
    this.#offset = 0;
    this.#lateness = 0;
    this.#tracked = false;
    this.#seen.clear();
    this.#clear();
  }

  /**
   * The stream's zones and lines ({id, points: [[x, y], …]}, 0..1 of the picture), drawn
   * under the boxes while a picture is shown: zones dashed amber, lines cyan with an arrow
   * on the side crossing towards which is "in".
   */
  setGeometry(zones, lines) {
    const next = JSON.stringify([zones ?? [], lines ?? []]);
    if (next === JSON.stringify([this.#zones, this.#lines])) return;
    this.#zones = zones ?? [];
    this.#lines = lines ?? [];
    this.redraw();
  }

  /**
   * A zone or line being drawn ({kind: 'zone' | 'line', points: [[x, y], …]}, 0..1), shown
   * white over everything; `null` to end it.
   */
  setDraft(draft) {
    this.#draft = draft ? { kind: draft.kind, points: [...draft.points] } : null;
    this.redraw();
  }

  /**
   * Where a click at (clientX, clientY) falls on the picture, as [x, y] in 0..1 of it, or
   * null outside it (in the letterbox bars).
   */
  toPicture(clientX, clientY) {
    const c = this.#canvas;
    const box = c.getBoundingClientRect();
    const src = this.#source;
    const vw = src?.videoWidth || src?.naturalWidth || 16;
    const vh = src?.videoHeight || src?.naturalHeight || 9;
    const scale = Math.min(box.width / vw, box.height / vh);
    const w = vw * scale;
    const h = vh * scale;
    const x = (clientX - box.left - (box.width - w) / 2) / w;
    const y = (clientY - box.top - (box.height - h) / 2) / h;
    if (!(x >= 0 && x <= 1 && y >= 0 && y <= 1)) return null;
    return [Math.round(x * 1000) / 1000, Math.round(y * 1000) / 1000];
  }

  /** Redraw after a layout change (resize, full screen) or new geometry. */
  redraw() {
    if (this.#drawn) this.#paint(this.#drawn);
    else if (this.#source) this.#paint({ boxes: [] });
  }

  #keyOf(msg) {
    if (this.#mode === 'rtp') return Number.isInteger(msg.rtp_timestamp) ? msg.rtp_timestamp >>> 0 : null;
    return Number.isFinite(msg.seq) ? msg.seq : null;
  }

  #diff(a, b) {
    return this.#mode === 'rtp' ? rtpDiff(a, b) : a - b;
  }

  #onFrame(key) {
    const first = this.#frameKey === null;
    if (!first) {
      const step = this.#diff(key, this.#frameKey);
      if (step > 0) this.#frameStep = step;
    }
    this.#frameKey = key;
    if (first && !this.#drawn) this.redraw(); // the zones and lines, before any box
    const exact = this.#messages.find((m) => this.#keyOf(m) === key);
    if (exact) {
      this.#draw(exact, key, 'exact');
      return;
    }
    if (this.#drawn) {
      const age = this.#diff(key, this.#drawnKey);
      const hold = Math.max(this.#messageStep, this.#frameStep) + this.#frameStep + this.#lateness;
      if (age >= 0 && age <= hold) {
        this.#count('held');
        this.#paintCarried(age);
        return;
      }
      this.#count('cleared');
      this.#clear();
    }
  }

  /** Each track's velocity from this message's box and the track's previous one. */
  #learn(msg) {
    const at = msg.rtp_timestamp >>> 0;
    for (const b of msg.boxes) {
      if (b.track_id == null) continue;
      this.#tracked = true;
      const prev = this.#seen.get(b.track_id);
      const dt = prev ? rtpDiff(at, prev.at) : 0;
      if (dt > 0 && dt <= MAX_VELOCITY_SPAN) {
        const p = prev.box;
        this.#velocity.set(b, { x: (b.x - p.x) / dt, y: (b.y - p.y) / dt, w: (b.w - p.w) / dt, h: (b.h - p.h) / dt });
        if (this.#mode === 'seq' && msg.seq > prev.seq) this.#ticksPerSeq = dt / (msg.seq - prev.seq);
      }
      if (dt > 0 || !prev) this.#seen.set(b.track_id, { at, seq: msg.seq, box: b });
    }
    if (this.#seen.size > 256) this.#seen.delete(this.#seen.keys().next().value);
  }

  /** Whether every box of `msg` continues a track with a known velocity. */
  #movable(msg) {
    return msg.boxes.every((b) => this.#velocity.has(b));
  }

  /** The drawn message's tracked boxes, moved on by `age` (in frame keys) along their velocity. */
  #paintCarried(age) {
    const msg = this.#drawn;
    const ticks = this.#mode === 'rtp' ? age : age * this.#ticksPerSeq;
    const boxes = [];
    for (const b of msg.boxes) {
      const v = this.#velocity.get(b);
      if (!v) continue;
      boxes.push({ ...b, x: b.x + v.x * ticks, y: b.y + v.y * ticks, w: b.w + v.w * ticks, h: b.h + v.h * ticks });
    }
    this.#paint({ ...msg, boxes });
  }

  #count(what) {
    this.#counts[what] += 1;
    this.#canvas.dataset[what] = String(this.#counts[what]);
  }

  #draw(msg, key, how) {
    this.#drawn = msg;
    this.#drawnKey = key;
    this.#count(how);
    this.#paint(msg);
  }

  #clear() {
    this.#drawn = null;
    this.#drawnKey = null;
    const c = this.#canvas;
    this.#ctx?.clearRect(0, 0, c.width, c.height);
    c.dataset.boxes = '0';
    c.sightlineDrawn = { boxes: [] };
    if (this.#source && (this.#zones.length || this.#lines.length || this.#draft)) this.#paint({ boxes: [] });
  }

  /** Zones and lines inside the picture rectangle `r`. */
  #paintGeometry(ctx, r, dpr) {
    const at = ([x, y]) => [r.x + x * r.w, r.y + y * r.h];
    ctx.save();
    ctx.lineWidth = Math.max(2, Math.round(2 * dpr));
    for (const z of this.#zones) {
      ctx.beginPath();
      z.points.forEach((p, i) => (i ? ctx.lineTo(...at(p)) : ctx.moveTo(...at(p))));
      ctx.closePath();
      ctx.fillStyle = 'rgba(255, 179, 0, 0.12)';
      ctx.fill();
      ctx.setLineDash([6 * dpr, 4 * dpr]);
      ctx.strokeStyle = 'rgba(255, 179, 0, 0.9)';
      ctx.stroke();
      ctx.setLineDash([]);
      const [lx, ly] = at(z.points[0]);
      ctx.fillStyle = 'rgba(255, 179, 0, 0.9)';
      ctx.fillText(z.id, lx + 4, ly + 4);
    }
    for (const l of this.#lines) {
      ctx.strokeStyle = 'rgb(0, 229, 255)';
      ctx.beginPath();
      l.points.forEach((p, i) => (i ? ctx.lineTo(...at(p)) : ctx.moveTo(...at(p))));
      ctx.stroke();
      // "in" arrow at the first segment's middle, towards its right as seen on screen.
      const [ax, ay] = at(l.points[0]);
      const [bx, by] = at(l.points[1]);
      const len = Math.hypot(bx - ax, by - ay) || 1;
      const [nx, ny] = [-(by - ay) / len, (bx - ax) / len];
      const [mx, my] = [(ax + bx) / 2, (ay + by) / 2];
      const s = 14 * dpr;
      ctx.beginPath();
      ctx.moveTo(mx, my);
      ctx.lineTo(mx + nx * s, my + ny * s);
      ctx.stroke();
      ctx.fillStyle = 'rgb(0, 229, 255)';
      ctx.fillText(`${l.id} in`, mx + nx * s + 4, my + ny * s);
    }
    const d = this.#draft;
    if (d && d.points.length) {
      ctx.strokeStyle = '#fff';
      ctx.fillStyle = '#fff';
      ctx.setLineDash([4 * dpr, 3 * dpr]);
      ctx.beginPath();
      d.points.forEach((p, i) => (i ? ctx.lineTo(...at(p)) : ctx.moveTo(...at(p))));
      if (d.kind === 'zone' && d.points.length > 2) ctx.closePath();
      ctx.stroke();
      ctx.setLineDash([]);
      for (const p of d.points) {
        const [x, y] = at(p);
        ctx.fillRect(x - 3 * dpr, y - 3 * dpr, 6 * dpr, 6 * dpr);
      }
    }
    ctx.restore();
    this.#canvas.dataset.draft = String(d?.points.length ?? 0);
    this.#canvas.dataset.zones = String(this.#zones.length);
    this.#canvas.dataset.lines = String(this.#lines.length);
  }

  /** The picture's rectangle inside the canvas (object-fit: contain), in canvas px. */
  #contentRect(msg) {
    const c = this.#canvas;
    const src = this.#source;
    const vw = src?.videoWidth || src?.naturalWidth || msg.width || 16;
    const vh = src?.videoHeight || src?.naturalHeight || msg.height || 9;
    const scale = Math.min(c.width / vw, c.height / vh);
    const w = vw * scale;
    const h = vh * scale;
    return { x: (c.width - w) / 2, y: (c.height - h) / 2, w, h };
  }

  #paint(msg) {
    const c = this.#canvas;
    const ctx = this.#ctx;
    if (!ctx) return;
    const dpr = window.devicePixelRatio || 1;
    const cw = Math.round(c.clientWidth * dpr);
    const ch = Math.round(c.clientHeight * dpr);
    if (c.width !== cw || c.height !== ch) {
      c.width = cw;
      c.height = ch;
    }
    ctx.clearRect(0, 0, c.width, c.height);
    const r = this.#contentRect(msg);
    const font = Math.max(11, Math.round(12 * dpr));
    ctx.font = `600 ${font}px system-ui, sans-serif`;
    ctx.lineWidth = Math.max(2, Math.round(2 * dpr));
    ctx.textBaseline = 'top';
    this.#paintGeometry(ctx, r, dpr);
    for (const b of msg.boxes) {
      const x = r.x + b.x * r.w;
      const y = r.y + b.y * r.h;
      const w = b.w * r.w;
      const h = b.h * r.h;
      const colour = classColour(b.class_id);
      ctx.strokeStyle = colour;
      ctx.strokeRect(x, y, w, h);
      const id = b.track_id != null ? ` #${b.track_id}` : '';
      const text = `${b.label ?? b.class_id}${id} ${Math.round((b.score ?? 0) * 100)}%`;
      const tw = ctx.measureText(text).width + 8;
      const ty = y - font - 6 >= r.y ? y - font - 6 : y;
      ctx.fillStyle = colour;
      ctx.fillRect(x, ty, tw, font + 6);
      ctx.fillStyle = '#000';
      ctx.fillText(text, x + 4, ty + 3);
    }
    c.dataset.boxes = String(msg.boxes.length);
    c.sightlineDrawn = { boxes: msg.boxes };
  }
}
