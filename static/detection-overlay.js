// Detection boxes drawn on a <canvas> over the live picture, on the frame they
// were computed for.
//
// Detection messages (data channel type "detections", SSE `event: detections`):
//   {stream, seq, rtp_timestamp, capture_ms, width, height,
//    models: [name, …],
//    boxes: [{x, y, w, h (0..1 of the frame), class_id, label, score, track_id, model}],
//    infer_ms, latency_ms}
// A stream may run several models (`[[detect.models]]`), each at its own rate. `models`
// names the models whose answers the message carries (one that found nothing is listed
// with no boxes); each box names its `model`. A frame that several models took gets one
// message with all their boxes; rarely a second message for the same frame (same seq and
// rtp_timestamp) follows with every box of that frame so far (a superset), when a model
// answered after the gateway stopped waiting for it. Older gateways send neither field:
// a box without `model` is the stream's one model, a message without `models` carries
// all models.
//
// Each model is drawn on its own ("lanes" below): its boxes come from the latest message
// that lists it, and every rule that follows (exact, late, held, cleared, carrying along
// tracks) applies to each model separately, with the model's own detection interval, so
// a 2 fps model beside a 10 fps one keeps its boxes between its own detections instead
// of losing them to the fast model's next message. A later message for a frame a model
// already has is ignored for that model (the superset repeats its boxes); the models it
// adds are taken as that frame's answer for them.
//
// Matching a message to a frame:
//   WebRTC – requestVideoFrameCallback reports each displayed frame's RTP
//            timestamp (90 kHz). The gateway keeps the camera's timestamps
//            plus a per-session offset (announced as `rtp_offset` in the
//            data channel's hello/timing messages), so the frame's camera
//            timestamp is rtpTimestamp - offset (mod 2^32).
//   SSE    – frames carry their sequence number as the event id; messages
//            carry the same `seq`.
//   Playback of a recording (watchRecording, driven by static/playback-boxes.js) –
//            frames and the stored messages are named by their time on the
//            recording timeline (`pts`, 90 kHz ticks since the Unix epoch); the
//            player pushes each stored message before its frame is shown and
//            calls showFrame(pts) for each frame shown, and restart() after a
//            seek. Every rule below applies as over WebRTC (keys are 90 kHz times).
// Boxes are drawn when their frame is on screen: at once if the message
// arrives while that frame is displayed, or when the frame is displayed if
// the message came first ("exact"); one that came first for a frame the player
// never displayed (it skipped it) is carried to the next frame shown ("late").
// Over WebRTC a message that comes after its frame was replaced has its tracked
// boxes carried to the frame shown (as below, at most 300 ms; "late"), so the
// video need not wait for the model, unless most messages come late (the median
// of the last 20 later than their frame: the model slower than the video path):
// then, as always without tracking (no velocities), the player is asked to delay
// playout by that much (`onLate`), and over SSE (where the
// feed sends boxes before their frame) one at most one frame late is drawn on
// the next frame; older ones are dropped ("stale"). Between detected frames
// (detection runs at a lower rate than video: 10 of 25 fps) a model's last
// boxes are carried forward while they are at most one detection interval of
// that model (the spacing of its last two messages; before there are two,
// 1 / its fps in the stream status) plus one frame interval old ("held"), then
// cleared: each box that continues a track is moved to where its track's
// velocity (from the model's last two detections of it, at most 0.5 s or two
// of the model's intervals apart, in 0..1 of the picture per 90 kHz tick) puts
// it at the shown frame's time; a box without a track id or a velocity yet is
// not drawn on that frame. A box held in place would sit 8 px (of a 120 px
// shape) off per 25 fps frame on the test camera, which is what brought the
// share of boxes that match their picture from 76 % down to 57 %
// (tests/browser/overlay-match.mjs).
//
// The picture (WebRTC): Chromium hands each <video> frame to its compositor as it comes,
// while a canvas drawn in the frame's callback (requestVideoFrameCallback) reaches the screen
// with the next frame the page renders, up to one display refresh later. Sampled in the page
// (tests/browser/overlay-match.mjs), the <video>'s current frame was already the next one while
// the overlay still showed the boxes planned for the previous one in about a third of the
// samples (64-89 of ~230): at 25 fps and 60 Hz, ~16 ms of every 40. So while a stream has
// detection, each frame is copied into a picture canvas under the overlay in the same callback
// that draws its boxes: both reach the screen in one composited frame. The cost: one copy of
// the frame per frame (on the GPU where the browser has one), and the picture is shown with
// the page's next rendered frame rather than by the compositor at once (at most one display
// refresh, 16.7 ms at 60 Hz). Without detection the <video> is shown as it is.
//
// Models can be hidden (setHiddenModels, the card's per-model toggles): their lanes keep
// following the messages (and counting), so they come back at once, but their boxes are
// not drawn.
// With two or more models each box's label starts with its model's name, and each
// model has its own outline (solid, dashed, dotted, …) and label corner.
//
// Layout: the canvas covers the media box; the picture is letterboxed inside
// it (object-fit: contain), so boxes are mapped into the picture's rectangle.
// The canvas keeps counters for tests and debugging in data-* attributes, summed
// over the models (with two models, a frame on which both are held counts two):
// data-exact (boxes drawn on their own frame), data-late, data-stale,
// data-held, data-cleared, data-boxes (boxes drawn now), data-models (the models
// with boxes drawn now, comma-separated), and what is drawn now as the property
// `sightlineDrawn`: {boxes (0..1 of the picture, each with its `model`),
// models: {name: {boxes (drawn now), hidden, exact, late, stale, held, cleared,
// step_ms (its detection interval), key (the frame key of the message its boxes
// come from: RTP timestamp, seq or pts; null when none), how (how they got on the
// frame shown: 'exact', 'late', 'held'; null when none), frame (the key of the frame
// shown)}}}.

const KEEP_MESSAGES = 32;
/**
 * A track's velocity comes from two detections at most this far apart (90 kHz ticks: 0.5 s),
 * or for a slower model, two of its detection intervals.
 */
const MAX_VELOCITY_SPAN = 45_000;
/** RTP ticks per frame before the stream shows its own (25 fps). */
const DEFAULT_FRAME_TICKS = 3600;
/** A late message's boxes are carried to the shown frame at most this far (90 kHz: 300 ms). */
const MAX_CARRY = 27_000;
/**
 * WebRTC frames remembered for timing messages (2.5 s at 25 fps): when each was displayed, and
 * whose message's margin was reported.
 */
const KEEP_SHOWN = 64;
/**
 * Largest picture copied into the picture canvas (px): a larger camera's frames are scaled to
 * fit, so a 4K stream's canvas takes 8 MB, not 33.
 */
const MAX_PICTURE_WIDTH = 1920;
const MAX_PICTURE_HEIGHT = 1080;
/** Messages over which a persistent lateness is judged (WebRTC with tracking). */
const LATENESS_WINDOW = 20;
/** Box outlines by the model's place in the stream's list (CSS px): the first model's solid. */
const MODEL_DASHES = [[], [8, 4], [2, 3], [12, 3, 2, 3]];

/** Signed difference a - b of two 32-bit RTP timestamps. */
const rtpDiff = (a, b) => (a - b) | 0;

function classColour(classId) {
  const hue = (Number(classId) * 137.508) % 360;
  return `hsl(${hue.toFixed(0)} 90% 55%)`;
}

/** What the overlay keeps of one model: its latest messages, what of it is drawn, its tracks. */
class Lane {
  /** @param {string} name the model's name */
  constructor(name) {
    this.name = name;
    /** @type {{key: number, msg: object, boxes: object[], early: boolean, at: number}[]} its latest
     *  messages (`boxes`: its own; `early`: came before its frame was displayed; `at`: when it
     *  came, performance.now()) */
    this.entries = [];
    /** @type {?{key: number, msg: object, boxes: object[], early: boolean, at: number}} the entry on screen */
    this.drawn = null;
    /** @type {object[]} its boxes on screen now (moved along their tracks) */
    this.shown = [];
    this.lastKey = null;
    this.messageStep = 0; // frame keys between its last two messages
    this.lateness = 0; // WebRTC: how late (ticks) its last carried message came after its frame
    this.seen = new Map(); // track id -> its last detection {at: rtp_timestamp, seq, box}
    this.fps = 0; // its rate from the stream status (0: unknown)
    this.counts = { exact: 0, late: 0, stale: 0, held: 0, cleared: 0 };
    this.how = null; // how what is on screen got there: exact, late, held (null: nothing)
  }

  /** Forget the session (a new player): messages, what is drawn, tracks. */
  reset() {
    this.entries = [];
    this.drawn = null;
    this.shown = [];
    this.lastKey = null;
    this.lateness = 0;
    this.seen.clear();
  }
}

export class DetectionOverlay {
  #canvas;
  #ctx;
  #picture = null;
  #pictureCtx = null;
  #mode = null; // 'rtp' (WebRTC <video>) | 'seq' (SSE <img>) | 'pts' (a recording's playback <video>)
  #source = null;
  #offset = 0;
  #frameKey = null;
  #frameStep = 0;
  /** @type {Map<string, Lane>} model name -> its lane, in the stream's order of models */
  #lanes = new Map();
  #hidden = new Set(); // names of the models whose boxes are not drawn
  #loneModel = ''; // the model a box without `model` belongs to (the stream's only one)
  #velocity = new WeakMap(); // box -> its track's velocity {x, y, w, h} (per tick) when detected
  #ticksPerSeq = DEFAULT_FRAME_TICKS; // SSE: RTP ticks between consecutive seq numbers
  #tracked = false; // some box came with a track id: the stream is tracked
  #latenesses = []; // the last messages' lateness (90 kHz ticks, 0: on time), WebRTC
  #shownAt = new Map(); // WebRTC: frame key -> when it was displayed (performance.now()), recent ones
  #timedKeys = new Set(); // WebRTC: frame keys whose message's margin was reported (once per message)
  #rvfcVideo = null;
  #rvfcHandle = null;
  #counts = { exact: 0, late: 0, stale: 0, held: 0, cleared: 0 };
  #zones = [];
  #lines = [];
  #draft = null; // {kind: 'zone' | 'line', points} being drawn in the editor

  #onLate;
  #onMargin;

  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{onLate?: (ms: number) => void, onMargin?: (ms: number, tracked: boolean) => void,
   *   picture?: HTMLCanvasElement}} handlers onLate: WebRTC messages come this many ms after
   *   their frame was replaced (the player can delay playout to match); onMargin: a WebRTC
   *   message came this many ms before its frame was displayed (negative: after), measured
   *   when the later of the two happens, once per message, and whether the stream is tracked
   *   (the player can give back delay that messages do not need); picture: a canvas between
   *   the <video> and `canvas` into which WebRTC frames are copied while the stream has
   *   detection (see "The picture" above), hidden otherwise
   */
  constructor(canvas, { onLate, onMargin, picture } = {}) {
    this.#canvas = canvas;
    this.#picture = picture ?? null;
    this.#onLate = onLate;
    this.#onMargin = onMargin;
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
      this.#paintPicture(video);
      if (typeof meta.rtpTimestamp === 'number') {
        this.#onFrame((meta.rtpTimestamp - this.#offset) >>> 0);
      }
      this.#rvfcHandle = video.requestVideoFrameCallback(onFrame);
    };
    this.#rvfcHandle = video.requestVideoFrameCallback(onFrame);
  }

  /**
   * WebRTC with detection: copy the frame being presented into the picture canvas (under the
   * overlay), in the same frame callback that draws its boxes, so the two reach the screen in
   * one composited frame. Without a picture canvas, or while the stream has no models, the
   * <video> is shown as it is.
   */
  #paintPicture(video) {
    const p = this.#picture;
    if (!p) return;
    if (!this.#lanes.size || !video.videoWidth || !video.videoHeight) {
      this.#hidePicture();
      return;
    }
    const scale = Math.min(1, MAX_PICTURE_WIDTH / video.videoWidth, MAX_PICTURE_HEIGHT / video.videoHeight);
    const w = Math.round(video.videoWidth * scale);
    const h = Math.round(video.videoHeight * scale);
    if (p.width !== w || p.height !== h) {
      p.width = w;
      p.height = h;
    }
    this.#pictureCtx ??= p.getContext('2d', { alpha: false });
    this.#pictureCtx.drawImage(video, 0, 0, w, h);
    p.hidden = false;
  }

  #hidePicture() {
    const p = this.#picture;
    if (!p || p.hidden) return;
    p.hidden = true;
    // A 1x1 bitmap: the last picture's memory back, and nothing stale shown if it comes back.
    p.width = 1;
    p.height = 1;
  }

  /** Follow an SSE <img>: call showFrame(seq) for each frame shown. */
  watchImage(img) {
    this.stop();
    this.#mode = 'seq';
    this.#source = img;
  }

  /**
   * Follow a recording's playback <video>: frames and messages are named by their time on the
   * recording timeline (`pts`, 90 kHz ticks since the Unix epoch). The player push()es the
   * stored messages before their frames and calls showFrame(pts) for each frame shown.
   */
  watchRecording(video) {
    this.stop();
    this.#mode = 'pts';
    this.#source = video;
  }

  /**
   * SSE: the frame with this sequence number is now displayed; playback of a recording: the
   * frame at this time (`pts`, 90 kHz ticks since the Unix epoch).
   */
  showFrame(seq) {
    if (this.#mode !== 'seq' && this.#mode !== 'pts') return;
    const key = Number(seq);
    if (Number.isFinite(key)) this.#onFrame(key);
  }

  /**
   * Forget the messages, what is drawn and the tracks, and go on following the same picture
   * (a seek in a recording): nothing pushed before is drawn again.
   */
  restart() {
    this.#frameKey = null;
    for (const lane of this.#lanes.values()) lane.reset();
    this.#clear();
  }

  /** The session's RTP timestamp offset (data channel hello/timing `rtp_offset`). */
  setRtpOffset(offset) {
    if (Number.isInteger(offset)) this.#offset = offset >>> 0;
  }

  /**
   * The stream's models from its status (`detection.models`: [{name, fps}, …]): their
   * order (outlines and label corners follow it), each one's rate (how long its boxes are
   * held before the spacing of its messages is known) and, when there is one, the name
   * that boxes without a `model` get. Kept across players.
   * @param {{name: string, fps?: number}[] | undefined} models
   */
  setModels(models) {
    const list = Array.isArray(models) ? models.filter((m) => typeof m?.name === 'string' && m.name !== '') : [];
    const lanes = new Map();
    for (const m of list) {
      const lane = this.#lanes.get(m.name) ?? new Lane(m.name);
      lane.fps = Number.isFinite(m.fps) && m.fps > 0 ? m.fps : 0;
      lanes.set(m.name, lane);
    }
    // Models the status does not list (any more) stay while their boxes are on screen.
    for (const [name, lane] of this.#lanes) {
      if (!lanes.has(name) && (!list.length || lane.drawn)) lanes.set(name, lane);
    }
    this.#lanes = lanes;
    this.#loneModel = list.length === 1 ? list[0].name : '';
  }

  /**
   * Draw no boxes of these models (names); all others are drawn. Takes effect at once and
   * lasts across players (stop() keeps it).
   * @param {Iterable<string>} names
   */
  setHiddenModels(names) {
    const next = new Set(names ?? []);
    if (next.size === this.#hidden.size && [...next].every((n) => this.#hidden.has(n))) return;
    this.#hidden = next;
    this.redraw();
  }

  /** A detection message arrived. */
  push(msg) {
    if (!msg || !Array.isArray(msg.boxes) || !this.#mode) return;
    const key = this.#keyOf(msg);
    if (key === null) return;
    let changed = false;
    for (const lane of this.#lanesOf(msg)) changed = this.#pushTo(lane, msg, key) || changed;
    if (changed) this.#paintLanes();
  }

  /** Stop following; clear the canvas. */
  stop() {
    if (this.#rvfcVideo && this.#rvfcHandle !== null) {
      this.#rvfcVideo.cancelVideoFrameCallback?.(this.#rvfcHandle);
    }
    this.#rvfcVideo = null;
    this.#rvfcHandle = null;
    this.#hidePicture();
    this.#mode = null;
    this.#source = null;
    this.#frameKey = null;
    this.#offset = 0;
    this.#tracked = false;
    this.#latenesses = [];
    this.#shownAt.clear();
    this.#timedKeys.clear();
    for (const lane of this.#lanes.values()) lane.reset();
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

  /** Redraw after a layout change (resize, full screen), new geometry or hidden models. */
  redraw() {
    if (this.#source || this.#anyDrawn()) this.#paintLanes();
  }

  #keyOf(msg) {
    if (this.#mode === 'rtp') return Number.isInteger(msg.rtp_timestamp) ? msg.rtp_timestamp >>> 0 : null;
    if (this.#mode === 'pts') return Number.isFinite(msg.pts) ? msg.pts : null;
    return Number.isFinite(msg.seq) ? msg.seq : null;
  }

  /** Whether frame keys are 90 kHz times (WebRTC's RTP timestamps, a recording's pts), not seq numbers. */
  #timed() {
    return this.#mode === 'rtp' || this.#mode === 'pts';
  }

  #diff(a, b) {
    return this.#mode === 'rtp' ? rtpDiff(a, b) : a - b;
  }

  #anyDrawn() {
    for (const lane of this.#lanes.values()) if (lane.drawn) return true;
    return false;
  }

  /** The model a box belongs to (one without a name: the stream's only model). */
  #modelOf(box) {
    return typeof box.model === 'string' && box.model !== '' ? box.model : this.#loneModel;
  }

  #lane(name) {
    let lane = this.#lanes.get(name);
    if (!lane) {
      lane = new Lane(name);
      this.#lanes.set(name, lane);
    }
    return lane;
  }

  /** The lanes of the models `msg` answers for: those it lists, else every known one. */
  #lanesOf(msg) {
    // An empty list: a message from a gateway that did not name its models (relayed from an
    // older replica) carries them all.
    const listed = Array.isArray(msg.models) && msg.models.length > 0;
    const names = new Set(listed ? msg.models.filter((n) => typeof n === 'string' && n !== '') : this.#lanes.keys());
    for (const b of msg.boxes) names.add(this.#modelOf(b));
    if (!names.size && !listed) names.add(this.#loneModel);
    return [...names].map((name) => this.#lane(name));
  }

  /** `msg` answers for `lane`'s model; whether what is drawn of it changed. */
  #pushTo(lane, msg, key) {
    // A second message for a frame the model already answered (a superset, for a model that
    // answered late) repeats its boxes: nothing new for this model.
    if (lane.entries.some((e) => e.key === key)) return false;
    const boxes = [];
    for (const b of msg.boxes) {
      if (this.#modelOf(b) === lane.name) boxes.push(b.model === lane.name ? b : { ...b, model: lane.name });
    }
    const early = this.#frameKey === null || this.#diff(key, this.#frameKey) > 0;
    const entry = { key, msg, boxes, early, at: performance.now() };
    if (lane.lastKey !== null) {
      const step = this.#diff(key, lane.lastKey);
      if (step > 0) lane.messageStep = step;
    }
    lane.lastKey = key;
    // After its frame was displayed: the margin is known now (an early one's, when its frame is).
    const shownAt = early ? undefined : this.#shownAt.get(key);
    if (shownAt !== undefined) this.#margin(key, shownAt - entry.at);
    this.#learn(lane, entry);
    lane.entries.push(entry);
    if (lane.entries.length > KEEP_MESSAGES) lane.entries.shift();
    if (key === this.#frameKey) {
      lane.lateness = 0;
      this.#noteLateness(0);
      this.#show(lane, entry, 'exact');
      return true;
    }
    if (this.#frameKey === null) return false;
    const late = this.#diff(this.#frameKey, key);
    this.#noteLateness(Math.max(0, late));
    const newer = lane.drawn === null || this.#diff(key, lane.drawn.key) > 0;
    if (late > 0 && this.#timed() && late <= MAX_CARRY && newer && this.#movable(entry)) {
      // Its frame is gone: carry its tracked boxes to the frame shown now.
      lane.lateness = late;
      this.#carry(lane, entry, late, 'late');
      return true;
    }
    let changed = false;
    if (late > 0 && late <= this.#frameStep) {
      this.#show(lane, entry, 'late');
      changed = true;
    } else if (late > 0) {
      this.#count(lane, 'stale');
    }
    // Without tracking boxes cannot be carried: ask the player to delay the video
    // instead. With tracking, a box without a velocity yet (a new track, or one not
    // confirmed) gets one with a later message.
    if (late > 0 && this.#mode === 'rtp' && !this.#tracked) this.#onLate?.(late / 90);
    return changed;
  }

  /** Reports the margin of the message for frame `key`, once per message (not per model). */
  #margin(key, ms) {
    if (this.#timedKeys.has(key)) return;
    this.#timedKeys.add(key);
    if (this.#timedKeys.size > KEEP_SHOWN) this.#timedKeys.delete(this.#timedKeys.values().next().value);
    this.#onMargin?.(ms, this.#tracked);
  }

  /**
   * The player changed its playout delay: lateness measured before belongs to the old one
   * (at a model's 2 fps the window would otherwise hold 10 s of it).
   */
  forgetLateness() {
    this.#latenesses = [];
  }

  /**
   * Over WebRTC with tracking, late messages are carried to the frame shown (their boxes
   * moved by their tracks' velocities: close, not exact). When most messages come late (the
   * model slower than the video path, a busy machine), ask the player to delay the video by
   * their median lateness instead, so they are drawn on their own frames: a few tens of ms
   * of latency for boxes on their picture. One late message (a hiccup) changes nothing.
   */
  #noteLateness(ticks) {
    if (this.#mode !== 'rtp') return;
    this.#latenesses.push(ticks);
    if (this.#latenesses.length > LATENESS_WINDOW) this.#latenesses.shift();
    if (!this.#tracked || this.#latenesses.length < LATENESS_WINDOW) return;
    const sorted = [...this.#latenesses].sort((a, b) => a - b);
    const median = sorted[sorted.length >> 1];
    if (median > 0) this.#onLate?.(median / 90);
  }

  #onFrame(key) {
    if (this.#mode === 'rtp') {
      this.#shownAt.set(key, performance.now());
      if (this.#shownAt.size > KEEP_SHOWN) this.#shownAt.delete(this.#shownAt.keys().next().value);
    }
    const first = this.#frameKey === null;
    if (!first) {
      const step = this.#diff(key, this.#frameKey);
      if (step > 0) this.#frameStep = step;
    }
    this.#frameKey = key;
    if (first && !this.#anyDrawn()) this.redraw(); // the zones and lines, before any box
    let changed = false;
    for (const lane of this.#lanes.values()) changed = this.#frameTo(lane, key) || changed;
    if (changed) this.#paintLanes();
  }

  /** The frame `key` is displayed: what of `lane` goes on it; whether that changed. */
  #frameTo(lane, key) {
    const exact = lane.entries.find((e) => e.key === key);
    if (exact) {
      if (this.#mode === 'rtp') this.#margin(key, this.#shownAt.get(key) - exact.at);
      this.#show(lane, exact, 'exact');
      return true;
    }
    const hold = this.#hold(lane);
    // A message that came before its frame, and that frame was never displayed (the player
    // skipped it): its boxes, carried to this frame.
    const skipped = lane.entries.findLast((e) => e.early && this.#diff(key, e.key) > 0
      && (lane.drawn === null || this.#diff(e.key, lane.drawn.key) > 0));
    if (skipped && this.#diff(key, skipped.key) <= hold) {
      this.#carry(lane, skipped, this.#diff(key, skipped.key), 'late');
      return true;
    }
    if (!lane.drawn) return false;
    const age = this.#diff(key, lane.drawn.key);
    if (age >= 0 && age <= hold) {
      this.#carry(lane, lane.drawn, age, 'held');
      return true;
    }
    this.#count(lane, 'cleared');
    lane.drawn = null;
    lane.shown = [];
    lane.how = null;
    return true;
  }

  /**
   * How old (in frame keys) `lane`'s boxes may get before they are cleared: one interval of
   * its model plus one frame, plus how late its last carried message came.
   */
  #hold(lane) {
    let step = lane.messageStep;
    if (!step && lane.fps) step = this.#timed() ? 90_000 / lane.fps : 90_000 / lane.fps / this.#ticksPerSeq;
    return Math.max(step, this.#frameStep) + this.#frameStep + lane.lateness;
  }

  /** `lane`'s detection interval in 90 kHz ticks (0: not known yet). */
  #stepTicks(lane) {
    if (lane.messageStep) return this.#timed() ? lane.messageStep : lane.messageStep * this.#ticksPerSeq;
    return lane.fps ? 90_000 / lane.fps : 0;
  }

  /** Each track's velocity from this entry's box and the track's previous one (of the same model). */
  #learn(lane, entry) {
    const { msg } = entry;
    // 90 kHz: the message's RTP timestamp (live), or its pts (a recording).
    const pts = this.#mode === 'pts';
    const at = pts ? msg.pts : msg.rtp_timestamp >>> 0;
    const span = Math.max(MAX_VELOCITY_SPAN, 2 * this.#stepTicks(lane));
    for (const b of entry.boxes) {
      if (b.track_id == null) continue;
      this.#tracked = true;
      const prev = lane.seen.get(b.track_id);
      const dt = prev ? (pts ? at - prev.at : rtpDiff(at, prev.at)) : 0;
      if (dt > 0 && dt <= span) {
        const p = prev.box;
        this.#velocity.set(b, { x: (b.x - p.x) / dt, y: (b.y - p.y) / dt, w: (b.w - p.w) / dt, h: (b.h - p.h) / dt });
        if (this.#mode === 'seq' && msg.seq > prev.seq) this.#ticksPerSeq = dt / (msg.seq - prev.seq);
      }
      if (dt > 0 || !prev) lane.seen.set(b.track_id, { at, seq: msg.seq, box: b });
    }
    if (lane.seen.size > 256) lane.seen.delete(lane.seen.keys().next().value);
  }

  /** Whether every box of `entry` continues a track with a known velocity. */
  #movable(entry) {
    return entry.boxes.every((b) => this.#velocity.has(b));
  }

  #count(lane, what) {
    lane.counts[what] += 1;
    this.#counts[what] += 1;
    this.#canvas.dataset[what] = String(this.#counts[what]);
  }

  /** `entry`'s boxes as they are, on screen for `lane`. */
  #show(lane, entry, how) {
    lane.drawn = entry;
    lane.shown = entry.boxes;
    lane.how = how;
    this.#count(lane, how);
  }

  /** `entry`'s tracked boxes, moved on by `age` (in frame keys) along their velocity, on screen for `lane`. */
  #carry(lane, entry, age, how) {
    const ticks = this.#timed() ? age : age * this.#ticksPerSeq;
    const boxes = [];
    for (const b of entry.boxes) {
      const v = this.#velocity.get(b);
      if (!v) continue;
      boxes.push({ ...b, x: b.x + v.x * ticks, y: b.y + v.y * ticks, w: b.w + v.w * ticks, h: b.h + v.h * ticks });
    }
    lane.drawn = entry;
    lane.shown = boxes;
    lane.how = how;
    this.#count(lane, how);
  }

  /** Every shown model's boxes, in one picture. */
  #paintLanes() {
    const boxes = [];
    let msg = null;
    for (const lane of this.#lanes.values()) {
      msg ??= lane.drawn?.msg ?? null;
      if (!this.#hidden.has(lane.name)) boxes.push(...lane.shown);
    }
    this.#paint({ width: msg?.width, height: msg?.height, boxes });
  }

  /** What is drawn now, for tests: the boxes and each model's numbers. */
  #publish(boxes) {
    const c = this.#canvas;
    const models = {};
    const drawn = [];
    for (const lane of this.#lanes.values()) {
      const hidden = this.#hidden.has(lane.name);
      const n = hidden ? 0 : lane.shown.length;
      if (n > 0) drawn.push(lane.name);
      models[lane.name] = {
        boxes: n, hidden, ...lane.counts, step_ms: Math.round(this.#stepTicks(lane) / 90), key: lane.drawn?.key ?? null,
        how: lane.how, frame: this.#frameKey,
      };
    }
    c.dataset.boxes = String(boxes.length);
    c.dataset.models = drawn.join(',');
    c.sightlineDrawn = { boxes, models };
  }

  #clear() {
    const c = this.#canvas;
    this.#ctx?.clearRect(0, 0, c.width, c.height);
    this.#publish([]);
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
    // With several models, each has its own outline and label corner, and its name leads
    // its labels: boxes of two models on one object stay apart and readable.
    const models = [...this.#lanes.keys()];
    const several = models.length > 1;
    for (const b of msg.boxes) {
      const x = r.x + b.x * r.w;
      const y = r.y + b.y * r.h;
      const w = b.w * r.w;
      const h = b.h * r.h;
      const place = Math.max(0, models.indexOf(b.model));
      const colour = classColour(b.class_id);
      ctx.strokeStyle = colour;
      const dash = MODEL_DASHES[place % MODEL_DASHES.length];
      if (dash.length) ctx.setLineDash(dash.map((d) => d * dpr));
      ctx.strokeRect(x, y, w, h);
      if (dash.length) ctx.setLineDash([]);
      const id = b.track_id != null ? ` #${b.track_id}` : '';
      const model = several && b.model ? `${b.model}: ` : '';
      const text = `${model}${b.label ?? b.class_id}${id} ${Math.round((b.score ?? 0) * 100)}%`;
      const tw = ctx.measureText(text).width + 8;
      const th = font + 6;
      // Above the box's top left corner (inside it at the picture's top edge); the second
      // model's below its bottom left, the third's and fourth's on the right; within the
      // picture's width.
      const tx = Math.max(r.x, Math.min(place % 4 >= 2 ? x + w - tw : x, r.x + r.w - tw));
      let ty;
      if (place % 2 === 0) ty = y - th >= r.y ? y - th : y;
      else ty = y + h + th <= r.y + r.h ? y + h : y + h - th;
      ctx.fillStyle = colour;
      ctx.fillRect(tx, ty, tw, th);
      ctx.fillStyle = '#000';
      ctx.fillText(text, tx + 4, ty + 3);
    }
    this.#publish(msg.boxes);
  }
}
