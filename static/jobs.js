// The jobs page: upload a video with a pipeline of filters, follow each job's progress
// (polled), see its contact-sheet preview, download the result and its metrics, cancel or
// delete. Every call carries the control token (api.js).

import { describeError, deleteJob, jobFileUrl, listJobs, setToken, submitJob } from './api.js';
import { h, setText } from './dom.js';

const FILTERS = [
  ['blur', 'Blur (Gaussian)'],
  ['detect', 'Detect objects (boxes, labels)'],
  ['track', 'Track objects (boxes with track ids)'],
  ['blur_faces', 'Blur faces'],
  ['faces', 'Outline faces'],
  ['grayscale', 'Grayscale'],
  ['edges', 'Edges (Canny)'],
  ['motion', 'Motion heat map'],
];
const POLL_MS = 1000;

const form = document.getElementById('job-form');
const fieldset = document.getElementById('job-filters');
const upload = document.getElementById('job-upload');
const errorLine = document.getElementById('job-error');
const list = document.getElementById('job-list');
const banner = document.getElementById('banner');
const rows = new Map();
// Filter names in the order the user ticked them.
let order = [];

for (const [name, label] of FILTERS) {
  const box = h('input', { type: 'checkbox', name: 'filter', value: name, id: `filter-${name}` });
  box.addEventListener('change', () => {
    order = order.filter((n) => n !== name);
    if (box.checked) order.push(name);
    for (const [n] of FILTERS) setText(document.getElementById(`order-${n}`), order.includes(n) ? String(order.indexOf(n) + 1) : '');
  });
  fieldset.append(h('label', { class: 'job-filter', for: `filter-${name}` }, box, label, h('span', { class: 'job-order', id: `order-${name}` })));
}

form.addEventListener('submit', async (e) => {
  e.preventDefault();
  const file = document.getElementById('job-video').files[0];
  setText(errorLine, '');
  if (!file || order.length === 0) {
    setText(errorLine, 'Choose a video and at least one filter.');
    return;
  }
  upload.hidden = false;
  upload.value = 0;
  try {
    const job = await submitJob(file, order, (f) => { upload.value = f; });
    render(job);
    form.reset();
    order = [];
    for (const [n] of FILTERS) setText(document.getElementById(`order-${n}`), '');
  } catch (err) {
    if (err.status === 401) askToken();
    setText(errorLine, describeError(err));
  } finally {
    upload.hidden = true;
  }
});

function askToken() {
  const dialog = document.getElementById('token-dialog');
  if (dialog.open) return;
  dialog.showModal();
  dialog.addEventListener('close', () => {
    const token = document.getElementById('token-input').value.trim();
    if (token) setToken(token);
    poll();
  }, { once: true });
}

const pct = (x) => `${(100 * (x || 0)).toFixed(0)} %`;

/** One job's row, made once and updated in place. */
function render(job) {
  let row = rows.get(job.id);
  if (!row) {
    const el = h('article', { class: 'job', 'data-id': job.id, 'data-state': job.state });
    const title = h('h2', { class: 'job-title' });
    const state = h('span', { class: 'job-state' });
    const bar = h('progress', { max: '1', value: '0' });
    const stats = h('p', { class: 'job-stats' });
    const preview = h('img', { class: 'job-preview', alt: 'preview of processed pictures', hidden: true });
    const actions = h('div', { class: 'job-actions' });
    el.append(h('header', {}, title, state), bar, stats, preview, actions);
    row = { el, title, state, bar, stats, preview, actions, shown: null, previewAt: 0 };
    rows.set(job.id, row);
    list.prepend(el);
  }
  row.el.dataset.state = job.state;
  setText(row.title, `${job.source} · ${job.pipeline.map((s) => s.name).join(' → ')}`);
  setText(row.state, job.state);
  row.bar.value = job.progress;
  const eta = job.state === 'running' && job.eta_s != null ? `, ${job.eta_s.toFixed(0)} s left` : '';
  const error = job.error ? ` — ${job.error}` : '';
  // A `track` job first runs the model over the whole video (frames_detected), then draws.
  const pass = job.frames_done === 0 && job.frames_detected > 0 ? `detection pass ${job.frames_detected}/${job.frames_total}, ` : '';
  setText(row.stats, `${pass}${job.frames_done}/${job.frames_total} frames (${pct(job.progress)}), ${job.fps.toFixed(1)} fps${eta}; `
    + `${job.input.width}×${job.input.height} ${job.input.codec}, ${job.retried_chunks} chunks retried, ${job.workers} workers${error}`);
  // The preview while running (every few seconds) and once done.
  const now = Date.now();
  if (job.frames_done > 0 && job.state !== 'failed' && job.state !== 'cancelled' && (job.state !== row.shown || now - row.previewAt > 4000)) {
    row.previewAt = now;
    jobFileUrl(job.id, 'preview').then((url) => {
      if (row.preview.src) URL.revokeObjectURL(row.preview.src);
      row.preview.src = url;
      row.preview.hidden = false;
    }).catch(() => {});
  }
  if (job.state !== row.shown) {
    row.shown = job.state;
    row.actions.replaceChildren();
    if (job.state === 'done') {
      row.actions.append(
        h('button', { type: 'button', class: 'job-download', onclick: () => download(job.id, 'result.mp4', `${job.id}.mp4`) }, 'Download MP4'),
        h('button', { type: 'button', onclick: () => download(job.id, 'metrics.json', `${job.id}.metrics.json`) }, 'Metrics'),
      );
    }
    const active = job.state === 'queued' || job.state === 'running';
    row.actions.append(h('button', { type: 'button', class: 'job-delete', onclick: () => remove(job.id) }, active ? 'Cancel' : 'Delete'));
  }
}

async function download(id, name, as) {
  try {
    const url = await jobFileUrl(id, name);
    const a = h('a', { href: url, download: as });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (err) {
    setText(errorLine, describeError(err));
  }
}

async function remove(id) {
  try {
    const job = await deleteJob(id);
    if (job) render(job);
    else {
      rows.get(id)?.el.remove();
      rows.delete(id);
    }
  } catch (err) {
    setText(errorLine, describeError(err));
  }
}

async function poll() {
  try {
    const jobs = await listJobs();
    banner.hidden = true;
    const seen = new Set();
    for (const job of [...jobs].reverse()) {
      seen.add(job.id);
      render(job);
    }
    for (const [id, row] of rows) {
      if (!seen.has(id)) {
        row.el.remove();
        rows.delete(id);
      }
    }
  } catch (err) {
    if (err.status === 401) askToken();
    banner.hidden = false;
    setText(banner, describeError(err));
  }
}

poll();
setInterval(() => { if (!document.hidden) poll(); }, POLL_MS);
