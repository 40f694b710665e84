// The recording timeline under a stream card (issue #14): the last hour's recorded ranges
// (GET /api/streams/{id}/recordings) and stored events (GET /api/events) on a bar. A click on
// the bar plays the recording from that moment (HLS VOD, vod.m3u8, with hls.js from
// static/vendor, loaded on first use; Safari on iPhone plays HLS itself); "Download" exports
// what is played as one MP4 (export.mp4). Each event marker's title names it. The detection
// boxes stored with the recording are drawn over the playback on the frames they were
// computed for (static/playback-boxes.js, on a canvas over the <video>: `canvas.timeline-overlay`),
// with the card's models and hidden models (setModels, setHiddenModels). The bar names the
// span it shows in data-from and data-to (ms since the Unix epoch).
import { h, setText } from './dom.js';
import { recordingsOf, searchEvents, vodUrl, exportUrl } from './api.js';
import { loadHls } from './hls-player.js';
import { PlaybackBoxes } from './playback-boxes.js';

const WINDOW_MS = 60 * 60 * 1000;
const PLAY_MS = 10 * 60 * 1000;
const REFRESH_MS = 10_000;

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export class Timeline {
  #id;
  #ui = {};
  #from = 0;
  #to = 0;
  #timer = null;
  #hls = null;
  #ranges = [];
  #boxes;
  #playing = 0; // bumped by each play() and stop(): a play() that was overtaken stops there

  constructor(id) {
    this.#id = id;
    const ui = this.#ui;
    ui.bar = h('div', { class: 'timeline-bar', role: 'slider', tabindex: '0',
      'aria-label': 'Recorded video of the last hour: click to play from there',
      onclick: (ev) => this.#onClick(ev) });
    ui.label = h('span', { class: 'timeline-label' });
    ui.video = h('video', { class: 'timeline-video', controls: true, muted: true, playsinline: true, hidden: true });
    ui.video.muted = true;
    ui.overlay = h('canvas', { class: 'timeline-overlay', 'aria-hidden': 'true' });
    ui.screen = h('div', { class: 'timeline-screen', hidden: true }, ui.video, ui.overlay);
    this.#boxes = new PlaybackBoxes(id, ui.overlay);
    ui.download = h('a', { class: 'btn timeline-download', hidden: true, text: 'Download MP4' });
    ui.close = h('button', { type: 'button', class: 'btn timeline-close', hidden: true, text: 'Close',
      onclick: () => this.stop() });
    ui.root = h('section', { class: 'timeline', hidden: true },
      h('div', { class: 'timeline-head' }, h('span', { class: 'timeline-title', text: 'Recordings' }), ui.label),
      ui.bar, ui.screen, h('div', { class: 'timeline-actions' }, ui.download, ui.close));
  }

  get element() {
    return this.#ui.root;
  }

  /** The stream's detection models from its status ([{name, fps}]), for the boxes over playback. */
  setModels(models) {
    this.#boxes.setModels(models);
  }

  /** Draw no boxes of these models over playback (the card's model toggles). */
  setHiddenModels(names) {
    this.#boxes.setHiddenModels(names);
  }

  /** Show the timeline (the stream records) or hide it. */
  setEnabled(enabled) {
    this.#ui.root.hidden = !enabled;
    if (enabled && !this.#timer) {
      this.refresh();
      this.#timer = setInterval(() => this.refresh(), REFRESH_MS);
    } else if (!enabled) {
      this.destroy();
    }
  }

  destroy() {
    clearInterval(this.#timer);
    this.#timer = null;
    this.stop();
  }

  async refresh() {
    this.#to = Date.now();
    this.#from = this.#to - WINDOW_MS;
    try {
      const [rec, ev] = await Promise.all([
        recordingsOf(this.#id, this.#from, this.#to),
        searchEvents({ stream: this.#id, from: this.#from, limit: 200 }),
      ]);
      this.#ranges = rec.ranges ?? [];
      this.#render(this.#ranges, ev.events ?? []);
    } catch (err) {
      setText(this.#ui.label, `unavailable: ${err.message ?? err}`);
    }
  }

  #x(ms) {
    return `${(100 * (ms - this.#from)) / (this.#to - this.#from)}%`;
  }

  #render(ranges, events) {
    const bar = this.#ui.bar;
    bar.dataset.from = String(this.#from);
    bar.dataset.to = String(this.#to);
    bar.replaceChildren(
      ...ranges.map((r) => h('div', {
        class: 'timeline-range', 'data-start': r.start_ms, 'data-end': r.end_ms,
        title: `${clock(r.start_ms)} – ${clock(r.end_ms)}`,
        style: `left:${this.#x(Math.max(r.start_ms, this.#from))};width:${this.#x(this.#from + Math.min(r.end_ms, this.#to) - Math.max(r.start_ms, this.#from))}`,
      })),
      ...events.map((e) => h('div', {
        class: 'timeline-event', 'data-id': e.id, 'data-kind': e.kind,
        title: `${clock(e.ts_ms)} ${e.kind.replace('_', ' ')} ${e.label}${e.line ? ` (${e.line} ${e.direction})` : ''}${e.zone ? ` (${e.zone})` : ''}`,
        style: `left:${this.#x(e.ts_ms)}`,
      })));
    const total = ranges.reduce((n, r) => n + (Math.min(r.end_ms, this.#to) - Math.max(r.start_ms, this.#from)), 0);
    setText(this.#ui.label, ranges.length ? `${Math.round(total / 60000)} min in the last hour, ${events.length} events` : 'nothing recorded in the last hour');
  }

  #onClick(ev) {
    const rect = this.#ui.bar.getBoundingClientRect();
    const t = this.#from + ((ev.clientX - rect.left) / rect.width) * (this.#to - this.#from);
    // From the click, or the start of the next recorded range after it.
    const range = this.#ranges.find((r) => r.end_ms > t);
    if (range) this.play(Math.max(t, range.start_ms));
  }

  /** Plays the recording from `fromMs` (ms since the Unix epoch). */
  async play(fromMs) {
    this.stop();
    const playing = this.#playing;
    const from = Math.floor(fromMs);
    const to = Math.min(from + PLAY_MS, Date.now());
    const ui = this.#ui;
    const src = vodUrl(this.#id, from, to);
    ui.video.hidden = false;
    ui.screen.hidden = false;
    ui.close.hidden = false;
    ui.download.hidden = false;
    ui.download.href = exportUrl(this.#id, from, to);
    ui.download.setAttribute('download', `${this.#id}-${from}.mp4`);
    ui.video.dataset.from = String(from);
    ui.video.dataset.to = String(to);
    // hls.js where Media Source Extensions exist, the browser's own HLS otherwise (iPhone).
    const Hls = typeof MediaSource === 'function' ? await loadHls().catch(() => null) : null;
    if (playing !== this.#playing) return; // stopped, or another range asked for, meanwhile
    if (Hls?.isSupported()) {
      this.#hls = new Hls();
      this.#hls.loadSource(src);
      this.#hls.attachMedia(ui.video);
    } else {
      ui.video.src = src;
    }
    this.#boxes.start(ui.video, this.#hls);
    ui.video.play().catch(() => {});
  }

  stop() {
    const ui = this.#ui;
    this.#playing += 1;
    this.#boxes.stop();
    this.#hls?.destroy();
    this.#hls = null;
    ui.video.removeAttribute('src');
    ui.video.hidden = true;
    ui.screen.hidden = true;
    ui.close.hidden = true;
    ui.download.hidden = true;
  }
}
