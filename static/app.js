// Sightline web UI entry point: polls the stream list and keeps one card per
// stream. Cards own their live feeds; polling only refreshes their state.
//
// URL options: ?transport=webrtc|hls|sse forces a live-view transport (default:
// WebRTC, falling back to LL-HLS, then SSE); ?debug=1 shows glass-to-glass latency read from
// the test camera's pixel clock.

import { describeError, listStreams, setToken, useToken } from './api.js';
import { EventsPanel } from './events-panel.js';
import { StreamCard } from './stream-card.js';
import { Viewer } from './viewer.js';
import { setText } from './dom.js';

const POLL_INTERVAL_MS = 2000;
const TICK_INTERVAL_MS = 1000;

const grid = document.getElementById('grid');
const emptyNote = document.getElementById('empty');
const connStatus = document.getElementById('conn-status');
const banner = document.getElementById('banner');

const query = new URLSearchParams(window.location.search);
const TRANSPORT = ['webrtc', 'hls', 'sse'].includes(query.get('transport')) ? query.get('transport') : 'auto';
const DEBUG = query.get('debug') === '1';

const cards = new Map();
const events = new EventsPanel(document.getElementById('events'));
const viewer = new Viewer(document.body);
let pollTimer = null;
let polling = false;
let loadedOnce = false;

function setConnection(ok, message) {
  connStatus.dataset.ok = String(ok);
  setText(connStatus, ok ? 'connected' : 'offline');
  banner.hidden = ok;
  setText(banner, ok ? '' : message);
}

function createCard(stream) {
  return new StreamCard(stream, {
    onOpenViewer: (card) => viewer.open(card),
    paused: document.hidden,
    transport: TRANSPORT,
    debug: DEBUG,
  });
}

/** Place `el` at `index` in the grid without moving nodes needlessly. */
function placeAt(el, index) {
  const current = grid.children[index];
  if (current !== el) grid.insertBefore(el, current ?? null);
}

function reconcile(streams, requestedAt) {
  const seen = new Set();
  streams.forEach((stream, index) => {
    if (!stream || typeof stream.id !== 'string' || seen.has(stream.id)) return;
    seen.add(stream.id);
    let card = cards.get(stream.id);
    if (card) card.update(stream, requestedAt);
    else {
      card = createCard(stream);
      cards.set(stream.id, card);
    }
    placeAt(card.element, seen.size - 1);
  });
  for (const [id, card] of cards) {
    if (!seen.has(id)) {
      card.destroy();
      cards.delete(id);
    }
  }
  loadedOnce = true;
  events.setStreams([...seen]);
  emptyNote.hidden = cards.size > 0;
  setText(emptyNote, 'No streams configured.');
}

const tokenDialog = document.getElementById('token-dialog');
const tokenInput = document.getElementById('token-input');
const tokenReason = document.getElementById('token-reason');

// The API answered 401 (api.js tells us): forget the token, ask for one (one dialog at a
// time), then poll again at once.
window.addEventListener('sightline-unauthorized', (ev) => {
  setToken(null);
  if (tokenDialog.open) return;
  setText(tokenReason, ev.detail || 'Authentication is on for this gateway.');
  tokenInput.value = '';
  tokenDialog.showModal();
});

tokenDialog.addEventListener('close', async () => {
  const token = tokenInput.value.trim();
  if (token) {
    await useToken(token);
    // Live views opened without a token restart with it.
    for (const card of cards.values()) card.setPaused(true);
    for (const card of cards.values()) card.setPaused(document.hidden);
    schedulePoll(0);
  }
});

async function poll() {
  if (polling) return;
  polling = true;
  const requestedAt = performance.now();
  try {
    reconcile(await listStreams(), requestedAt);
    setConnection(true);
  } catch (err) {
    setConnection(false, `Cannot load streams: ${describeError(err)}`);
    if (!loadedOnce) {
      emptyNote.hidden = false;
      setText(emptyNote, 'Waiting for the gateway…');
    }
  } finally {
    polling = false;
    schedulePoll();
  }
}

function schedulePoll(delay = POLL_INTERVAL_MS) {
  clearTimeout(pollTimer);
  pollTimer = document.hidden ? null : setTimeout(poll, delay);
}

function setPaused(hidden) {
  for (const card of cards.values()) card.setPaused(hidden);
  events.setPaused(hidden);
  if (hidden) clearTimeout(pollTimer);
  else schedulePoll(0);
}

const onVisibilityChange = () => setPaused(document.hidden);

function tick() {
  for (const card of cards.values()) card.tick();
}

document.addEventListener('visibilitychange', onVisibilityChange);
// Leaving the page ends WebRTC sessions (DELETE with keepalive) and feeds.
window.addEventListener('pagehide', () => setPaused(true));
window.addEventListener('pageshow', (ev) => {
  if (ev.persisted) setPaused(document.hidden);
});
setInterval(tick, TICK_INTERVAL_MS);
poll();
