// One card per stream: header, live media area, health, controls.
//
// The media area (`.media`) is a positioned container: the WebRTC <video> and
// the SSE <img> fill it and overlays (detection canvas, transport tag, HUD)
// stack on top.
//
// Live view prefers WebRTC (WHEP). If the WHEP POST fails or no frame is
// rendered within 4 s of the answer, the card falls back to LL-HLS (the same
// <video>, hls.js), and if that cannot play either, to the SSE feed, until the
// stream is stopped and started again. `transport: 'webrtc' | 'hls' | 'sse'`
// forces one transport.
//
// A stream whose detection runs two or more models gets one checkbox per model ("Models":
// name and rate), all ticked at first: an unticked model's boxes are not drawn, whatever
// the player, nor over the playback of a recording (the timeline). The unticked ones are remembered per stream in localStorage
// (`sightline_hidden_models:{id}`, a JSON list of model names).

import {
  addGeometry, ApiError, deleteGeometry, describeError, feedUrl, getStream, mjpegUrl, startStream,
  stopStream, streamCounts, whepUrl, hlsUrl,
} from './api.js';
import {
  formatBitrate, formatCount, formatFps, formatResolution, h, setText,
} from './dom.js';
import { DetectionOverlay } from './detection-overlay.js';
import { PlayoutDelay } from './playout-delay.js';
import { LatencyProbe } from './pixel-clock.js';
import { SsePlayer } from './sse-player.js';
import { WhepPlayer } from './whep-player.js';
import { HlsPlayer, canPlayHls } from './hls-player.js';
import { Timeline } from './timeline.js';

const FPS_CHOICES = Array.from({ length: 30 }, (_, i) => i + 1);
const QUALITY_CHOICES = [30, 40, 50, 60, 70, 75, 80, 85, 90, 95];
const DEFAULT_FPS = 10;
const DEFAULT_QUALITY = 75;
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30000;
const COUNTS_EVERY_MS = 5000;
const KNOWN_STATES = new Set(['playing', 'connecting', 'backoff', 'stopped', 'idle']);
const HIDDEN_MODELS_KEY = 'sightline_hidden_models:';

const isInt = (v, lo, hi) => Number.isInteger(v) && v >= lo && v <= hi;

function initialParams(stream) {
  return {
    fps: isInt(stream.fps, 1, 30) ? stream.fps : DEFAULT_FPS,
    quality: isInt(stream.quality, 1, 100) ? stream.quality : DEFAULT_QUALITY,
  };
}

function buildSelect(label, choices, value, suffix, onChange) {
  const values = choices.includes(value) ? choices : [...choices, value].sort((a, b) => a - b);
  const select = h('select', { onchange: onChange, 'aria-label': label },
    ...values.map((v) => h('option', { value: v, text: `${v}${suffix}` })));
  select.value = String(value);
  return select;
}

function formatWebrtcStats(s) {
  if (!s) return '';
  const parts = [formatResolution(s.width, s.height), `${formatFps(s.fps)} fps`];
  if (Number.isFinite(s.jitterBufferMs)) parts.push(`jb ${Math.round(s.jitterBufferMs)} ms`);
  parts.push(`lost ${formatCount(s.packetsLost)}`);
  return parts.join(' · ');
}

/** The names of the models whose boxes the user hid on stream `id` (localStorage). */
function loadHiddenModels(id) {
  try {
    const names = JSON.parse(localStorage.getItem(`${HIDDEN_MODELS_KEY}${id}`) ?? '[]');
    return new Set(Array.isArray(names) ? names.filter((n) => typeof n === 'string') : []);
  } catch {
    return new Set(); // storage disabled, or not a list
  }
}

function saveHiddenModels(id, hidden) {
  try {
    const key = `${HIDDEN_MODELS_KEY}${id}`;
    if (hidden.size) localStorage.setItem(key, JSON.stringify([...hidden]));
    else localStorage.removeItem(key);
  } catch {
    // Storage disabled: the choice lasts as long as the page.
  }
}

/** The stream's detection models from its status ([{name, model, fps, workers}]). */
function detectionModels(detection) {
  const models = detection?.models;
  return Array.isArray(models) ? models.filter((m) => typeof m?.name === 'string' && m.name !== '') : [];
}

function healthItem(label) {
  const value = h('span', { class: 'health-value', text: '—' });
  const item = h('li', { class: 'health-item' }, h('span', { class: 'health-label', text: label }), value);
  return { item, value };
}

export class StreamCard {
  #id;
  #stream;
  #ui = {};
  #params;
  #player = null;
  #paused = false;
  #busy = false;
  #destroyed = false;
  #hasFrame = false;
  #frameUrl = null;
  #frameSeq = null;
  #retryTimer = null;
  #retryDelay = 0;
  #lastLocalChange = -Infinity;
  #viewListeners = new Set();
  #onOpenViewer;
  #transportMode;
  #transport = null; // 'webrtc' | 'hls' | 'sse': transport of the current/last player
  // How far the live view fell back: 0 WebRTC, 1 LL-HLS, 2 SSE (until the stream restarts).
  #fallback = 0;
  #hlsStream = null; // the LL-HLS <video> captured for the full-screen viewer
  #webrtcStats = null;
  #latencyProbe = null;
  #latency = null;
  #overlay = null;
  #playout = new PlayoutDelay(); // WebRTC playout delay for detection boxes
  #draft = null; // {kind: 'zone' | 'line', points} while the editor draws one
  #countsAt = -Infinity;
  #timeline = null;
  #hiddenModels; // names of the models whose boxes are not drawn (remembered per stream)

  /**
   * @param {object} stream Stream object from the API
   * @param {{onOpenViewer: (card: StreamCard) => void, paused?: boolean,
   *          transport?: 'auto' | 'webrtc' | 'hls' | 'sse', debug?: boolean}} opts
   */
  constructor(stream, { onOpenViewer, paused = false, transport = 'auto', debug = false }) {
    this.#id = stream.id;
    this.#stream = stream;
    this.#params = initialParams(stream);
    this.#onOpenViewer = onOpenViewer;
    this.#paused = paused;
    this.#transportMode = transport;
    this.#hiddenModels = loadHiddenModels(stream.id);
    if (debug) this.#latencyProbe = new LatencyProbe((ms) => this.#onLatency(ms));
    this.#build();
    this.#render();
    this.#syncFeed();
  }

  get id() {
    return this.#id;
  }

  get element() {
    return this.#ui.root;
  }

  get name() {
    return this.#stream.name || this.#id;
  }

  /**
   * Apply a Stream object. `requestedAt` (performance.now() when the request
   * was sent) lets stale poll answers that raced a local change be ignored.
   */
  update(stream, requestedAt) {
    if (this.#destroyed) return;
    if (requestedAt !== undefined && requestedAt < this.#lastLocalChange) return;
    if (stream.generation !== this.#stream.generation) this.#retryDelay = 0;
    this.#stream = stream;
    this.#render();
    this.#syncFeed();
  }

  /** Pause feeds while the page is hidden. */
  setPaused(paused) {
    if (this.#paused === paused) return;
    this.#paused = paused;
    this.#syncFeed();
    this.#renderMedia();
  }

  /** Periodic refresh of time-based values (received fps, WebRTC stats). */
  tick() {
    if (performance.now() - this.#countsAt >= COUNTS_EVERY_MS && !this.#paused) {
      this.#countsAt = performance.now();
      this.#refreshCounts();
    }
    if (this.#transport === 'webrtc' && this.#player) {
      this.#pollStats();
      return;
    }
    this.#renderHud();
    this.#notifyViewers();
  }

  /** Subscribe to view snapshots (used by the full-screen viewer). */
  addViewListener(fn) {
    this.#viewListeners.add(fn);
    fn(this.#snapshot());
    return () => this.#viewListeners.delete(fn);
  }

  destroy() {
    this.#destroyed = true;
    this.#cancelRetry();
    this.#closeFeed();
    for (const fn of this.#viewListeners) fn(null);
    this.#viewListeners.clear();
    this.#timeline?.destroy();
    this.#ui.root.remove();
  }

  // ---- DOM -------------------------------------------------------------

  #build() {
    const ui = this.#ui;
    ui.name = h('h2', { class: 'card-name' });
    ui.idLabel = h('span', { class: 'card-id' });
    ui.badge = h('span', { class: 'badge' });
    ui.url = h('p', { class: 'card-url' });

    // The <video> stays rendered (never display:none) so frame callbacks fire;
    // the placeholder covers it until it plays.
    ui.video = h('video', { class: 'media-video', muted: true, autoplay: true, playsinline: true });
    ui.video.muted = true;
    ui.img = h('img', {
      class: 'media-img', alt: '', decoding: 'async', draggable: 'false',
      onload: () => this.#onImageLoad(),
    });
    ui.overlay = h('canvas', { class: 'media-overlay', 'aria-hidden': 'true' });
    ui.picture = h('canvas', { class: 'media-picture', 'aria-hidden': 'true' });
    ui.picture.hidden = true;
    this.#overlay = new DetectionOverlay(ui.overlay, {
      picture: ui.picture,
      onLate: (ms) => this.#setPlayoutDelay(this.#playout.raise(ms, performance.now())),
      onMargin: (ms, tracked) => this.#setPlayoutDelay(this.#playout.note(ms, performance.now(), { strict: !tracked })),
    });
    ui.placeholder = h('div', { class: 'media-placeholder' });
    ui.tag = h('span', { class: 'media-tag', 'aria-hidden': 'true' });
    ui.hudFps = h('span', { class: 'hud-fps' });
    ui.hudSeq = h('span', { class: 'hud-seq' });
    ui.hud = h('div', { class: 'media-hud', 'aria-hidden': 'true' }, ui.hudFps, ui.hudSeq);
    // Muted by default (browsers autoplay only muted media); shown while WebRTC or LL-HLS
    // plays a stream that has audio for viewers.
    ui.mute = h('button', {
      type: 'button', class: 'btn media-mute', hidden: true,
      onclick: (ev) => {
        ev.stopPropagation(); // not a click on the picture (which opens the viewer)
        ui.video.muted = !ui.video.muted;
        this.#renderMute();
      },
      onkeydown: (ev) => ev.stopPropagation(),
    });
    ui.media = h('div', {
      class: 'media',
      role: 'button',
      tabindex: '0',
      onclick: (ev) => this.#onMediaClick(ev),
      onkeydown: (ev) => this.#onMediaKey(ev),
    }, ui.video, ui.img, ui.picture, ui.overlay, ui.placeholder, ui.tag, ui.hud, ui.mute);
    ui.editor = this.#buildEditor();

    ui.health = {
      fps: healthItem('fps'),
      bitrate: healthItem('bitrate'),
      resolution: healthItem('res'),
      codec: healthItem('codec'),
      audio: healthItem('audio'),
      reconnects: healthItem('reconnects'),
      viewers: healthItem('viewers'),
      detection: healthItem('detect'),
    };
    const healthList = h('ul', { class: 'health' },
      ...Object.values(ui.health).map((x) => x.item));
    ui.models = h('fieldset', { class: 'model-toggles', hidden: true },
      h('legend', { text: 'Models', title: 'Detection models whose boxes are drawn' }));
    ui.lastError = h('p', { class: 'card-last-error', hidden: true });
    ui.counts = h('p', { class: 'card-counts', hidden: true, title: 'Line crossings today (stored events)' });

    ui.fpsSelect = buildSelect('SSE frame rate', FPS_CHOICES, this.#params.fps, ' fps',
      () => this.#onParamsChange());
    ui.qualitySelect = buildSelect('SSE JPEG quality', QUALITY_CHOICES, this.#params.quality, ' q',
      () => this.#onParamsChange());
    ui.start = h('button', { type: 'button', class: 'btn btn-start', text: 'Start',
      onclick: () => this.#runAction('start') });
    ui.stop = h('button', { type: 'button', class: 'btn btn-stop', text: 'Stop',
      onclick: () => this.#runAction('stop') });
    ui.mjpeg = h('a', { class: 'mjpeg-link', target: '_blank', rel: 'noopener', text: 'MJPEG',
      title: 'Open the MJPEG stream in a new tab' });
    ui.error = h('p', { class: 'card-error', role: 'alert', hidden: true });
    this.#timeline = new Timeline(this.#id);

    ui.root = h('article', { class: 'card' },
      h('header', { class: 'card-head' },
        h('div', { class: 'card-title' }, ui.name, ui.idLabel),
        ui.badge),
      ui.media,
      h('div', { class: 'card-body' },
        ui.url,
        healthList,
        ui.models,
        ui.counts,
        ui.lastError,
        h('div', { class: 'controls' },
          h('div', { class: 'selects' },
            h('label', { class: 'select-label', title: 'Applies to the SSE fallback' },
              'SSE fps', ui.fpsSelect),
            h('label', { class: 'select-label', title: 'Applies to the SSE fallback' },
              'quality', ui.qualitySelect)),
          h('div', { class: 'buttons' }, ui.start, ui.stop, ui.mjpeg, ui.editToggle)),
        ui.editor,
        this.#timeline.element,
        ui.error));
  }

  #render() {
    const s = this.#stream;
    const health = s.health ?? {};
    this.#overlay.setGeometry(s.zones, s.lines);
    const state = KNOWN_STATES.has(health.state) ? health.state : (s.active ? 'connecting' : 'stopped');
    const ui = this.#ui;

    ui.root.dataset.state = state;
    ui.root.classList.toggle('is-active', Boolean(s.active));
    setText(ui.name, s.name || s.id);
    setText(ui.idLabel, s.id);
    setText(ui.badge, health.state || state);
    ui.badge.className = `badge badge-${state}`;
    setText(ui.url, s.url ?? '');
    ui.url.title = s.url ?? '';

    this.#renderHealth(health);
    this.#renderModels();
    this.#renderButtons();
    ui.mjpeg.href = mjpegUrl(this.#id, this.#params);
    ui.img.alt = `Live view of ${s.name || s.id}`;
    ui.video.setAttribute('aria-label', `Live video of ${s.name || s.id}`);
    ui.media.setAttribute('aria-label', `Open ${s.name || s.id} full screen`);
    this.#renderAspect(health);
    this.#renderMedia();
    this.#renderGeometry();
    this.#timeline.setEnabled(Boolean(s.recording && s.recording.mode !== 'off'));
  }

  #renderHealth(health) {
    const hv = this.#ui.health;
    setText(hv.fps.value, formatFps(health.fps));
    setText(hv.bitrate.value, formatBitrate(health.bitrate_bps));
    setText(hv.resolution.value, formatResolution(health.width, health.height));
    // Codec, profile, B-frames, and whether WebRTC viewers get the camera's video or a transcode.
    const webrtc = this.#stream.video?.webrtc;
    const codec = health.codec
      ? [`${health.codec}${health.profile ? ` ${health.profile}` : ''}`, health.b_frames ? 'B-frames' : null,
        webrtc?.mode === 'transcode' ? 'WebRTC transcoded' : null].filter(Boolean).join(' · ')
      : '—';
    setText(hv.codec.value, codec);
    hv.codec.item.title = webrtc?.mode === 'transcode'
      ? `WebRTC viewers get the stream transcoded to H.264: ${webrtc.reason}`
      : 'WebRTC viewers get the camera\'s H.264 as it is';
    // The camera's audio and what WebRTC viewers get of it.
    const audio = health.audio;
    const audioPolicy = this.#stream.audio?.webrtc;
    setText(hv.audio.value, audio
      ? [audio.codec, audioPolicy?.mode === 'transcode' ? 'as Opus' : null,
        audioPolicy?.mode === 'off' ? 'off' : null].filter(Boolean).join(' · ')
      : '—');
    hv.audio.item.title = audioPolicy?.reason ?? (audio ? 'WebRTC viewers get the camera\'s audio as it is' : '');
    setText(hv.reconnects.value, formatCount(health.reconnects));
    const v = health.viewers ?? {};
    setText(hv.viewers.value,
      `${formatCount(v.webrtc)} webrtc · ${formatCount(v.sse)} sse · ${formatCount(v.mjpeg)} mjpeg`);

    const d = this.#stream.detection ?? { state: 'off' };
    const workers = d.state === 'running' ? ` · ${formatCount(d.workers)} worker${d.workers === 1 ? '' : 's'}` : '';
    setText(hv.detection.value, `${d.state}${workers}`);
    const models = detectionModels(d);
    hv.detection.item.title = d.reason ? `Detection unavailable: ${d.reason}`
      : models.length > 1
        ? models.map((m) => `${m.name}: ${m.model ?? '?'}${d.provider ? ` on ${d.provider}` : ''}, up to ${m.fps} fps, `
          + `${formatCount(m.workers)} worker${m.workers === 1 ? '' : 's'}`).join('\n')
        : (d.model ? `${d.model} on ${d.provider}, up to ${d.fps} fps` : '');
    hv.detection.item.dataset.state = d.state;

    const err = health.last_error;
    this.#ui.lastError.hidden = !err;
    setText(this.#ui.lastError, err ? `Last error: ${err}` : '');
  }

  /**
   * One checkbox per detection model when there are two or more (none for one model, whose
   * boxes are then always drawn); the overlay hides the unticked ones' boxes.
   */
  #renderModels() {
    const ui = this.#ui;
    const models = detectionModels(this.#stream.detection);
    this.#overlay.setModels(models);
    const several = models.length > 1;
    // Rebuilt only when the models or their rates change (a rebuild loses the focus).
    const key = several ? JSON.stringify(models.map((m) => [m.name, m.fps])) : '';
    if (ui.models.dataset.key !== key) {
      ui.models.dataset.key = key;
      ui.modelToggles = new Map();
      const items = models.map((m) => {
        const input = h('input', {
          type: 'checkbox', 'data-model': m.name,
          onchange: () => this.#onModelToggle(m.name, input.checked),
        });
        const fps = Number.isFinite(m.fps) ? h('span', { class: 'model-fps', text: `${m.fps} fps` }) : null;
        const label = h('label', { class: 'model-toggle' },
          input, h('span', { class: 'model-name', text: m.name }), fps ? ' ' : null, fps);
        ui.modelToggles.set(m.name, { input, label });
        return label;
      });
      ui.models.replaceChildren(ui.models.firstElementChild, ...(several ? items : []));
      ui.models.hidden = !several;
    }
    for (const m of several ? models : []) {
      const toggle = ui.modelToggles.get(m.name);
      toggle.input.checked = !this.#hiddenModels.has(m.name);
      toggle.label.title = `${m.model ?? m.name}: ${formatCount(m.workers)} worker${m.workers === 1 ? '' : 's'}`;
    }
    const hidden = several ? models.map((m) => m.name).filter((n) => this.#hiddenModels.has(n)) : [];
    this.#overlay.setHiddenModels(hidden);
    // The same models and toggles for the boxes over the playback of a recording.
    this.#timeline.setModels(models);
    this.#timeline.setHiddenModels(hidden);
  }

  #onModelToggle(name, shown) {
    if (shown) this.#hiddenModels.delete(name);
    else this.#hiddenModels.add(name);
    saveHiddenModels(this.#id, this.#hiddenModels);
    this.#renderModels();
  }

  #renderAspect(health) {
    const { width, height } = health;
    if (Number.isFinite(width) && Number.isFinite(height) && width > 0 && height > 0) {
      const ratio = `${width} / ${height}`;
      if (this.#ui.media.style.aspectRatio !== ratio) this.#ui.media.style.aspectRatio = ratio;
    }
  }

  #renderButtons() {
    const active = Boolean(this.#stream.active);
    this.#ui.start.disabled = this.#busy || active;
    this.#ui.stop.disabled = this.#busy || !active;
    this.#ui.root.classList.toggle('is-busy', this.#busy);
  }

  #mediaMessage() {
    if (!this.#stream.active) {
      return this.#stream.health?.state === 'idle' ? 'Idle' : 'Stopped';
    }
    if (this.#paused) return 'Paused';
    if (this.#hasFrame) return '';
    if (this.#retryTimer) return 'Feed unavailable – retrying…';
    if (this.#player?.status === 'reconnecting') return 'Reconnecting…';
    return 'Connecting…';
  }

  /** 'webrtc' | 'hls' | 'sse' while that transport shows a picture, else null. */
  #showing() {
    return this.#hasFrame ? this.#transport : null;
  }

  #renderMedia() {
    const message = this.#mediaMessage();
    this.#ui.placeholder.hidden = message === '';
    setText(this.#ui.placeholder, message);
    this.#ui.img.hidden = this.#showing() !== 'sse';
    this.#renderHud();
    this.#notifyViewers();
  }

  #hudText() {
    const player = this.#player;
    if (!player) return { tag: '', fps: '', seq: '' };
    const latency = this.#latency != null ? `latency ${Math.round(this.#latency)} ms` : '';
    if (this.#transport === 'webrtc') {
      return { tag: 'WebRTC', fps: formatWebrtcStats(this.#webrtcStats), seq: latency };
    }
    if (this.#transport === 'hls') {
      return { tag: 'LL-HLS', fps: `${player.receivedFps().toFixed(1)} fps shown`, seq: latency };
    }
    const note = player.status === 'reconnecting' ? ' · reconnecting' : '';
    const seq = this.#frameSeq != null ? `#${this.#frameSeq}` : '';
    return {
      tag: 'SSE',
      fps: `${player.receivedFps().toFixed(1)} fps rx${note}`,
      seq: [latency, seq].filter(Boolean).join(' · '),
    };
  }

  /**
   * The mute button: only while WebRTC plays a stream with audio for viewers, or LL-HLS one
   * whose camera audio the gateway takes (its parts carry it as AAC).
   */
  #renderMute() {
    const ui = this.#ui;
    const mode = this.#stream.audio?.webrtc?.mode;
    const webrtc = this.#transport === 'webrtc' && mode && mode !== 'off';
    const hls = this.#transport === 'hls' && this.#stream.health?.audio?.supported === true;
    ui.mute.hidden = !(this.#player && (webrtc || hls));
    const muted = ui.video.muted;
    setText(ui.mute, muted ? '🔇' : '🔊');
    ui.mute.setAttribute('aria-label', muted ? 'Unmute' : 'Mute');
    ui.mute.title = muted ? 'Unmute the camera\'s audio' : 'Mute';
    ui.mute.setAttribute('aria-pressed', String(!muted));
  }

  #renderHud() {
    this.#renderMute();
    const { tag, fps, seq } = this.#hudText();
    this.#ui.hud.hidden = !this.#player;
    setText(this.#ui.tag, tag);
    this.#ui.tag.hidden = !tag;
    this.#ui.tag.dataset.transport = this.#transport ?? '';
    setText(this.#ui.hudFps, fps);
    setText(this.#ui.hudSeq, seq);
  }

  /** Today's crossings per line ("middle 3 in · 2 out"), from GET /api/streams/{id}/counts. */
  async #refreshCounts() {
    const lines = this.#stream.lines ?? [];
    if (!lines.length) {
      this.#ui.counts.hidden = true;
      return;
    }
    const midnight = new Date();
    midnight.setHours(0, 0, 0, 0);
    try {
      const counts = await streamCounts(this.#id, midnight.getTime());
      const per = new Map(lines.map((l) => [l.id, { in: 0, out: 0 }]));
      for (const c of counts.lines ?? []) {
        const n = per.get(c.line);
        if (n && (c.direction === 'in' || c.direction === 'out')) n[c.direction] += c.count;
      }
      const text = [...per].map(([id, n]) => `${id} ${n.in} in · ${n.out} out`).join('  |  ');
      setText(this.#ui.counts, text);
      this.#ui.counts.dataset.counts = JSON.stringify(Object.fromEntries(per));
      this.#ui.counts.hidden = false;
    } catch {
      this.#ui.counts.hidden = true; // no event database (yet): nothing to show
    }
  }

  // ---- zone and line editor ---------------------------------------------
  //
  // "Zones" opens a panel listing the stream's zones and lines (each deletable). "+ zone" or
  // "+ line", then clicks (taps) on the picture place points; "Save" names it and POSTs it.
  // While drawing, a click on the picture adds a point instead of opening the viewer.

  #buildEditor() {
    const ui = this.#ui;
    ui.editToggle = h('button', {
      type: 'button', class: 'btn btn-edit', text: 'Zones', 'aria-expanded': 'false',
      title: 'Zones and lines: draw them on the picture',
      onclick: () => this.#toggleEditor(),
    });
    ui.geometryList = h('ul', { class: 'geometry-list' });
    ui.addZone = h('button', { type: 'button', class: 'btn', text: '+ zone', onclick: () => this.#beginDraft('zone') });
    ui.addLine = h('button', { type: 'button', class: 'btn', text: '+ line', onclick: () => this.#beginDraft('line') });
    ui.draftName = h('input', {
      type: 'text', class: 'draft-name', 'aria-label': 'Name', placeholder: 'name', maxlength: '64',
      pattern: '[A-Za-z0-9_\\-]{1,64}',
      onkeydown: (ev) => { if (ev.key === 'Enter') this.#saveDraft(); if (ev.key === 'Escape') this.#endDraft(); },
    });
    ui.draftHint = h('span', { class: 'draft-hint' });
    ui.saveDraft = h('button', { type: 'button', class: 'btn btn-start', text: 'Save', onclick: () => this.#saveDraft() });
    ui.cancelDraft = h('button', { type: 'button', class: 'btn', text: 'Cancel', onclick: () => this.#endDraft() });
    ui.draftBar = h('div', { class: 'draft-bar', hidden: true }, ui.draftHint, ui.draftName, ui.saveDraft, ui.cancelDraft);
    return h('section', { class: 'geometry-editor', hidden: true, 'aria-label': 'Zones and lines' },
      ui.geometryList, h('div', { class: 'buttons' }, ui.addZone, ui.addLine), ui.draftBar);
  }

  #toggleEditor() {
    const ui = this.#ui;
    const open = ui.editor.hidden;
    ui.editor.hidden = !open;
    ui.editToggle.setAttribute('aria-expanded', String(open));
    if (!open) this.#endDraft();
    this.#renderGeometry();
  }

  #renderGeometry() {
    const ui = this.#ui;
    if (!ui.editor || ui.editor.hidden) return;
    const items = [
      ...(this.#stream.zones ?? []).map((z) => ['zone', z]),
      ...(this.#stream.lines ?? []).map((l) => ['line', l]),
    ];
    const key = JSON.stringify(items.map(([k, g]) => [k, g.id]));
    if (ui.geometryList.dataset.key === key) return;
    ui.geometryList.dataset.key = key;
    ui.geometryList.replaceChildren(...items.map(([kind, g]) => h('li', { class: `geometry-item geometry-${kind}`, 'data-kind': kind, 'data-id': g.id },
      h('span', { text: `${kind} ${g.id}${g.labels?.length ? ` (${g.labels.join(', ')})` : ''}` }),
      h('button', {
        type: 'button', class: 'btn btn-delete', text: '✕', 'aria-label': `Delete ${kind} ${g.id}`,
        onclick: () => this.#deleteShape(kind, g.id),
      }))));
    if (!items.length) ui.geometryList.append(h('li', { class: 'geometry-empty', text: 'No zones or lines' }));
  }

  #beginDraft(kind) {
    const taken = new Set([...(this.#stream.zones ?? []), ...(this.#stream.lines ?? [])].map((g) => g.id));
    let n = 1;
    while (taken.has(`${kind}-${n}`)) n += 1;
    this.#draft = { kind, points: [] };
    this.#ui.draftName.value = `${kind}-${n}`;
    this.#ui.draftBar.hidden = false;
    this.#ui.media.classList.add('is-drawing');
    this.#renderDraft();
  }

  #renderDraft() {
    const d = this.#draft;
    this.#overlay.setDraft(d);
    if (!d) return;
    const need = d.kind === 'zone' ? 3 : 2;
    setText(this.#ui.draftHint, d.points.length < need
      ? `Click the picture: ${need - d.points.length} more point${need - d.points.length === 1 ? '' : 's'}`
      : `${d.points.length} points`);
    this.#ui.saveDraft.disabled = d.points.length < need;
  }

  #endDraft() {
    this.#draft = null;
    this.#ui.draftBar.hidden = true;
    this.#ui.media.classList.remove('is-drawing');
    this.#overlay.setDraft(null);
  }

  #onMediaClick(ev) {
    if (!this.#draft) {
      this.#onOpenViewer?.(this);
      return;
    }
    const p = this.#overlay.toPicture(ev.clientX, ev.clientY);
    if (p) {
      this.#draft.points.push(p);
      this.#renderDraft();
    }
  }

  async #saveDraft() {
    const d = this.#draft;
    if (!d) return;
    this.#showError(null);
    try {
      await addGeometry(this.#id, d.kind, { id: this.#ui.draftName.value.trim(), points: d.points });
      this.#endDraft();
      await this.#refresh();
    } catch (err) {
      this.#showError(`Saving the ${d.kind} failed: ${describeError(err)}`);
    }
  }

  async #deleteShape(kind, shapeId) {
    this.#showError(null);
    try {
      await deleteGeometry(this.#id, kind, shapeId);
      await this.#refresh();
    } catch (err) {
      this.#showError(`Deleting the ${kind} failed: ${describeError(err)}`);
    }
  }

  #showError(message) {
    this.#ui.error.hidden = !message;
    setText(this.#ui.error, message ?? '');
  }

  #onMediaKey(ev) {
    if (ev.key === 'Enter' || ev.key === ' ') {
      ev.preventDefault();
      this.#onOpenViewer?.(this);
    }
  }

  // ---- viewers ---------------------------------------------------------

  #snapshot() {
    const hud = this.#hudText();
    const showing = this.#showing();
    return {
      id: this.#id,
      name: this.name,
      url: showing === 'sse' ? this.#frameUrl : null,
      stream: showing === 'webrtc' ? this.#player?.stream ?? null : showing === 'hls' ? this.#hlsCapture() : null,
      message: this.#mediaMessage(),
      hud: [hud.tag, hud.fps, hud.seq].filter(Boolean).join('  '),
    };
  }

  #notifyViewers() {
    if (this.#viewListeners.size === 0) return;
    const snap = this.#snapshot();
    for (const fn of this.#viewListeners) fn(snap);
  }

  // ---- feed lifecycle --------------------------------------------------

  #wantsFeed() {
    return Boolean(this.#stream.active) && !this.#paused && !this.#destroyed;
  }

  #syncFeed() {
    if (!this.#wantsFeed()) {
      // Stopped: the next start tries WebRTC again.
      if (!this.#stream.active) this.#fallback = 0;
      this.#cancelRetry();
      if (this.#player) this.#closeFeed();
      this.#clearFrame();
      return;
    }
    if (!this.#player && !this.#retryTimer) this.#openFeed();
  }

  /** The live view's transport: WebRTC, else LL-HLS, else SSE (or the one the URL forces). */
  #nextTransport() {
    if (this.#transportMode !== 'auto') return this.#transportMode;
    if (this.#fallback === 0 && typeof RTCPeerConnection === 'function') return 'webrtc';
    if (this.#fallback <= 1 && canPlayHls(this.#ui.video)) return 'hls';
    return 'sse';
  }

  #openFeed() {
    const transport = this.#nextTransport();
    if (transport === 'webrtc') this.#openWebrtc();
    else if (transport === 'hls') this.#openHls();
    else this.#openSse();
  }

  #openHls() {
    const player = new HlsPlayer(hlsUrl(this.#id), {
      onStatus: (status, err) => this.#ifCurrent(player, () => this.#onHlsStatus(status, err)),
    });
    this.#player = player;
    this.#transport = 'hls';
    this.#hasFrame = false;
    player.start(this.#ui.video);
    this.#renderMedia();
  }

  /** A MediaStream of the LL-HLS picture (for the full-screen viewer), made once per player. */
  #hlsCapture() {
    this.#hlsStream ??= this.#ui.video.captureStream?.() ?? null;
    return this.#hlsStream;
  }

  #onHlsStatus(status) {
    if (status === 'playing') {
      this.#retryDelay = 0;
      this.#hasFrame = true;
      this.#latencyProbe?.watchVideo(this.#ui.video);
      this.#renderMedia();
    } else if (status === 'failed') {
      const played = this.#player?.played;
      this.#closeFeed();
      if (this.#transportMode === 'auto' && !played) {
        this.#fallback = 2; // SSE until the stream is started again
        this.#syncFeed();
        return;
      }
      this.#scheduleRetry();
      this.#refresh();
    } else {
      this.#renderMedia();
    }
  }

  #openWebrtc() {
    const player = new WhepPlayer(whepUrl(this.#id), {
      onStatus: (status, err) => this.#ifCurrent(player, () => this.#onWebrtcStatus(status, err)),
      onMessage: (msg) => this.#ifCurrent(player, () => this.#onWebrtcMessage(msg)),
    });
    this.#player = player;
    this.#transport = 'webrtc';
    this.#hasFrame = false;
    this.#overlay.watchVideo(this.#ui.video);
    this.#playout.reset(performance.now());
    delete this.#ui.video.dataset.playoutDelay;
    player.start(this.#ui.video);
    this.#renderMedia();
  }

  #openSse() {
    const player = new SsePlayer(feedUrl(this.#id, this.#params), {
      onFrame: (frame) => this.#ifCurrent(player, () => this.#onFrame(frame)),
      onState: (data) => this.#ifCurrent(player, () => this.#onState(data)),
      onStopped: () => this.#ifCurrent(player, () => this.#onStopped()),
      onFailed: () => this.#ifCurrent(player, () => this.#onFailed()),
      onStatus: () => this.#ifCurrent(player, () => this.#renderMedia()),
      onDetections: (msg) => this.#ifCurrent(player, () => this.#overlay.push(msg)),
    });
    this.#overlay.watchImage(this.#ui.img);
    if (this.#transport !== 'sse') this.#hasFrame = false;
    this.#player = player;
    this.#transport = 'sse';
    player.open();
    this.#renderMedia();
  }

  #ifCurrent(player, fn) {
    if (this.#player === player) fn();
  }

  #closeFeed() {
    const player = this.#player;
    this.#player = null;
    this.#latency = null;
    this.#latencyProbe?.unwatch();
    this.#overlay.stop();
    if (player instanceof WhepPlayer) {
      player.stop(); // DELETE; the <video> goes blank
      this.#webrtcStats = null;
      this.#hasFrame = false;
    } else if (player instanceof HlsPlayer) {
      player.stop();
      this.#hlsStream = null;
      this.#hasFrame = false;
    } else {
      player?.close();
    }
    // The player revoked its frame URLs; the <img> keeps showing the decoded
    // last frame, but the URL must not be handed out again.
    this.#frameUrl = null;
    this.#renderMedia();
  }

  /** Reopen with new parameters, keeping the last frame visible meanwhile. */
  #reopenFeed() {
    this.#cancelRetry();
    this.#retryDelay = 0;
    if (this.#player) this.#closeFeed();
    this.#syncFeed();
  }

  #clearFrame() {
    if (!this.#hasFrame && this.#frameSeq == null) return;
    this.#hasFrame = false;
    this.#frameUrl = null;
    this.#frameSeq = null;
    this.#ui.img.removeAttribute('src');
    this.#renderMedia();
  }

  #onFrame({ url, seq }) {
    this.#retryDelay = 0;
    this.#frameUrl = url;
    // Decoded off screen first, then shown in the same task as its boxes: the <img> and the
    // overlay change in one rendering update (an <img> given a new src shows it only once
    // decoded, a frame or two after the overlay would have moved on).
    const player = this.#player;
    const next = new Image();
    next.src = url;
    next.decode().catch(() => {}).then(() => {
      if (this.#player !== player || this.#frameUrl !== url) return; // a newer frame came
      this.#frameSeq = seq;
      this.#ui.img.src = url;
      this.#overlay.showFrame(seq);
    });
    if (!this.#hasFrame) {
      this.#hasFrame = true;
      this.#renderMedia();
    } else {
      this.#renderHud();
      this.#notifyViewers();
    }
  }

  // ---- WebRTC ----------------------------------------------------------

  #onWebrtcStatus(status, err) {
    if (status === 'playing') {
      this.#retryDelay = 0;
      this.#hasFrame = true;
      this.#latencyProbe?.watchVideo(this.#ui.video);
      this.#renderMedia();
      this.#pollStats();
    } else if (status === 'failed') {
      this.#onWebrtcFailed(err);
    } else if (status === 'stopped') {
      this.#onStopped(); // the server ended the session: stream stopped
    } else {
      this.#renderMedia();
    }
  }

  #onWebrtcMessage(msg) {
    if (msg.type === 'state' && msg.health && typeof msg.health === 'object') {
      this.#onState(msg.health);
    } else if (msg.type === 'hello' || msg.type === 'timing') {
      this.#overlay.setRtpOffset(msg.rtp_offset);
    } else if (msg.type === 'detections') {
      this.#overlay.push(msg);
    }
  }

  /**
   * Detection boxes come after their frame was shown (untracked ones, or most of a tracked
   * stream's: see DetectionOverlay), or came early enough for a while that the delay is no
   * longer needed: WebRTC playout is held `ms` (PlayoutDelay decides; null: unchanged). The
   * target is also on the <video> as data-playout-delay (for tests and the debug HUD).
   */
  #setPlayoutDelay(ms) {
    const player = this.#player;
    if (ms == null || !(player instanceof WhepPlayer)) return;
    player.setPlayoutDelay(ms);
    this.#overlay.forgetLateness();
    this.#ui.video.dataset.playoutDelay = String(ms);
  }

  #onWebrtcFailed(err) {
    // Fall back to SSE only when WebRTC itself does not work here; a stopped
    // stream (409), a missing one (404), an unreachable gateway or a session
    // that played before are retried over WebRTC.
    const played = this.#player?.played;
    const retry = played || err instanceof TypeError
      || (err instanceof ApiError && (err.status === 404 || err.status === 409));
    this.#closeFeed();
    if (this.#transportMode === 'auto' && !retry) {
      this.#fallback = 1; // LL-HLS (then SSE) until the stream is started again
      this.#syncFeed();
      return;
    }
    this.#scheduleRetry();
    this.#refresh();
  }

  async #pollStats() {
    const player = this.#player;
    if (!(player instanceof WhepPlayer)) return;
    const stats = await player.stats().catch(() => null);
    if (this.#player !== player) return;
    this.#webrtcStats = stats;
    this.#renderHud();
    this.#notifyViewers();
  }

  // ---- debug: glass-to-glass latency from the test camera's pixel clock --

  #onImageLoad() {
    if (this.#latencyProbe && this.#transport === 'sse' && this.#player) {
      this.#latencyProbe.sampleImage(this.#ui.img);
    }
  }

  #onLatency(ms) {
    this.#latency = ms;
    this.#renderHud();
  }

  #onState(data) {
    const { active, ...health } = data;
    this.#markLocalChange();
    this.#stream = {
      ...this.#stream,
      active: typeof active === 'boolean' ? active : this.#stream.active,
      health: { ...(this.#stream.health ?? {}), ...health },
    };
    this.#render();
    this.#syncFeed();
  }

  #onStopped() {
    this.#markLocalChange();
    this.#closeFeed();
    this.#stream = {
      ...this.#stream,
      active: false,
      health: { ...(this.#stream.health ?? {}), state: 'stopped' },
    };
    this.#render();
    this.#syncFeed();
  }

  #onFailed() {
    // The feed was refused (409 when stopped, or another error). Back off,
    // and ask the API whether the stream is still active.
    this.#closeFeed();
    this.#scheduleRetry();
    this.#refresh();
  }

  #scheduleRetry() {
    this.#cancelRetry();
    this.#retryDelay = Math.min(RETRY_MAX_MS, Math.max(RETRY_MIN_MS, this.#retryDelay * 2));
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      this.#syncFeed();
      this.#renderMedia();
    }, this.#retryDelay);
    this.#renderMedia();
  }

  #cancelRetry() {
    if (!this.#retryTimer) return;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
  }

  async #refresh() {
    const requestedAt = performance.now();
    try {
      this.update(await getStream(this.#id), requestedAt);
    } catch {
      // The 2 s poll will report connectivity problems.
    }
  }

  #markLocalChange() {
    this.#lastLocalChange = performance.now();
  }

  // ---- controls --------------------------------------------------------

  #onParamsChange() {
    this.#params = {
      fps: Number(this.#ui.fpsSelect.value),
      quality: Number(this.#ui.qualitySelect.value),
    };
    this.#ui.mjpeg.href = mjpegUrl(this.#id, this.#params);
    if (this.#transport === 'sse') this.#reopenFeed(); // WebRTC ignores them
  }

  async #runAction(kind) {
    if (this.#busy) return;
    this.#busy = true;
    this.#renderButtons();
    this.#showError(null);
    const label = kind === 'start' ? 'Start' : 'Stop';
    setText(kind === 'start' ? this.#ui.start : this.#ui.stop, `${label}…`);
    try {
      const stream = kind === 'start'
        ? await startStream(this.#id, this.#params)
        : await stopStream(this.#id);
      this.#markLocalChange();
      this.#cancelRetry();
      this.#retryDelay = 0;
      this.update(stream);
    } catch (err) {
      this.#showError(`${label} failed: ${describeError(err)}`);
    } finally {
      this.#busy = false;
      setText(this.#ui.start, 'Start');
      setText(this.#ui.stop, 'Stop');
      this.#renderButtons();
    }
  }
}
