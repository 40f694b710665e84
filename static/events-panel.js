// The events panel: the newest stored analytics events (GET /api/events), live ones on top as
// they happen (EventSource on /api/events/live), each with its snapshot (the frame, the
// object's box outlined), filtered by stream, kind and label; "Older" pages back with the
// API's cursor. The panel keeps at most MAX_ITEMS.

import { describeError, liveEventsUrl, relativePath, searchEvents } from './api.js';
import { h, setText } from './dom.js';

const PAGE = 20;
const MAX_ITEMS = 200;
const KINDS = ['line_crossed', 'zone_enter', 'zone_exit', 'loitering', 'object_appeared', 'object_left'];

/** "line_crossed middle in", "zone_enter left", "loitering left 12 s", "object_left". */
function describe(e) {
  switch (e.kind) {
    case 'line_crossed': return `crossed ${e.line} ${e.direction}`;
    case 'zone_enter': return `entered ${e.zone}`;
    case 'zone_exit': return `left ${e.zone}`;
    case 'loitering': return `loitering in ${e.zone} ${Math.round((e.inside_ms ?? 0) / 1000)} s`;
    case 'object_appeared': return 'appeared';
    case 'object_left': return 'left the picture';
    default: return e.kind;
  }
}

export class EventsPanel {
  #root;
  #ui = {};
  #source = null;
  #cursor = null;
  #ids = new Set();
  #streams = [];
  #loading = 0;

  /** @param {HTMLElement} root the panel's <section> */
  constructor(root) {
    this.#root = root;
    const ui = this.#ui;
    ui.stream = h('select', { 'aria-label': 'Stream', onchange: () => this.reload() }, h('option', { value: '', text: 'all streams' }));
    ui.kind = h('select', { 'aria-label': 'Kind', onchange: () => this.reload() },
      h('option', { value: '', text: 'all kinds' }), ...KINDS.map((k) => h('option', { value: k, text: k.replace('_', ' ') })));
    ui.label = h('input', {
      type: 'search', 'aria-label': 'Label', placeholder: 'label', class: 'events-label',
      onchange: () => this.reload(),
    });
    ui.status = h('span', { class: 'events-status', role: 'status' });
    ui.list = h('ol', { class: 'event-list' });
    ui.older = h('button', { type: 'button', class: 'btn', text: 'Older', hidden: true, onclick: () => this.#more() });
    root.replaceChildren(
      h('header', { class: 'events-head' }, h('h2', { text: 'Events' }), ui.status),
      h('div', { class: 'events-filters' }, ui.stream, ui.kind, ui.label),
      ui.list, ui.older);
  }

  /** The stream ids for the filter (from the stream list); reloads on the first call. */
  setStreams(ids) {
    const next = JSON.stringify(ids);
    if (next === JSON.stringify(this.#streams)) return;
    const first = this.#streams.length === 0 && this.#ids.size === 0;
    this.#streams = ids;
    const keep = this.#ui.stream.value;
    this.#ui.stream.replaceChildren(h('option', { value: '', text: 'all streams' }), ...ids.map((id) => h('option', { value: id, text: id })));
    this.#ui.stream.value = ids.includes(keep) ? keep : '';
    if (first) this.reload();
  }

  #filters() {
    return { stream: this.#ui.stream.value, kind: this.#ui.kind.value, label: this.#ui.label.value.trim() };
  }

  /** The newest events for the filters, then live ones. */
  async reload() {
    const loading = ++this.#loading;
    this.#source?.close();
    this.#ids.clear();
    this.#ui.list.replaceChildren();
    this.#cursor = null;
    const filters = this.#filters();
    // Live first, so nothing between the page and the subscription is missed (the ids dedupe).
    this.#source = new EventSource(liveEventsUrl(filters));
    this.#source.addEventListener('event', (ev) => {
      try {
        this.#add(JSON.parse(ev.data), true);
      } catch {
        // not JSON: ignore
      }
    });
    this.#source.onerror = () => setText(this.#ui.status, 'live events reconnecting…');
    this.#source.onopen = () => setText(this.#ui.status, 'live');
    try {
      const page = await searchEvents({ ...filters, limit: PAGE });
      if (loading !== this.#loading) return;
      for (const e of page.events) this.#add(e, false);
      this.#cursor = page.next_cursor;
      this.#ui.older.hidden = !this.#cursor;
    } catch (err) {
      setText(this.#ui.status, `events: ${describeError(err)}`);
    }
  }

  async #more() {
    if (!this.#cursor) return;
    try {
      const page = await searchEvents({ ...this.#filters(), limit: PAGE, cursor: this.#cursor });
      for (const e of page.events) this.#add(e, false);
      this.#cursor = page.next_cursor;
      this.#ui.older.hidden = !this.#cursor;
    } catch (err) {
      setText(this.#ui.status, `events: ${describeError(err)}`);
    }
  }

  /** Adds an event (on top when live, at the end when paging back), once. */
  #add(e, live) {
    if (!e?.id || this.#ids.has(e.id)) return;
    this.#ids.add(e.id);
    const when = new Date(e.ts_ms);
    const thumb = e.snapshot
      ? h('img', { class: 'event-thumb', alt: `${e.label} ${describe(e)}`, loading: 'lazy', decoding: 'async' })
      : h('span', { class: 'event-thumb event-thumb-none' });
    if (e.snapshot) {
      // A live event may arrive before its snapshot is stored: one retry a moment later.
      let retried = false;
      thumb.addEventListener('error', () => {
        if (retried) return;
        retried = true;
        setTimeout(() => { thumb.src = `${relativePath(e.snapshot)}?retry=1`; }, 1000);
      });
      thumb.src = relativePath(e.snapshot);
    }
    const item = h('li', { class: `event-item event-${e.kind}`, 'data-id': e.id, 'data-kind': e.kind, 'data-stream': e.stream },
      thumb,
      h('div', { class: 'event-text' },
        h('strong', { text: `${e.label}${e.track_id != null ? ` #${e.track_id}` : ''} ${describe(e)}` }),
        h('span', { class: 'event-meta', text: `${e.stream} · ${when.toLocaleTimeString()}`, title: when.toISOString() })));
    const list = this.#ui.list;
    if (live) list.prepend(item);
    else list.append(item);
    while (list.children.length > MAX_ITEMS) {
      const last = list.lastElementChild;
      this.#ids.delete(last.dataset.id);
      last.remove();
      this.#cursor = null;
      this.#ui.older.hidden = true;
    }
  }

  /** Stops the live subscription (page hidden) or resumes it. */
  setPaused(paused) {
    if (paused) {
      this.#source?.close();
      this.#source = null;
    } else if (!this.#source && this.#streams.length) {
      this.reload();
    }
  }
}
