// Thin wrapper around the Sightline REST API.
//
// All paths are relative ("api/…") so they resolve against the page URL; the
// UI keeps working if the gateway is mounted under a path prefix.

const REQUEST_TIMEOUT_MS = 8000;
const TOKEN_KEY = 'sightline_token';

/**
 * The token the user gave (a control token or a viewer JWT), or null. Kept in
 * sessionStorage, and in the `sightline_token` cookie so EventSource and
 * <img> (MJPEG), which cannot set headers, send it too.
 */
export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

function setFeedCookie(token) {
  const secure = window.location.protocol === 'https:' ? '; Secure' : '';
  document.cookie = token
    ? `${TOKEN_KEY}=${encodeURIComponent(token)}; Path=/; SameSite=Strict${secure}`
    : `${TOKEN_KEY}=; Path=/; Max-Age=0; SameSite=Strict${secure}`;
}

/** A viewer token is a JWT (three base64url parts); anything else is a control token. */
function isViewerToken(token) {
  return /^[\w-]+\.[\w-]+\.[\w-]*$/.test(token);
}

/** Store (or with null, forget) the token; see getToken(). */
export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage disabled: the cookie still carries a viewer token for this session.
  }
  setFeedCookie(token && isViewerToken(token) ? token : null);
}

/**
 * Use `token` from now on. A control token is never put in a cookie (the gateway refuses
 * it there): the feeds get a viewer token for every stream minted with it (POST /api/tokens,
 * 8 h or the gateway's maximum), if the gateway has viewer tokens configured.
 */
export async function useToken(token) {
  setToken(token);
  if (isViewerToken(token)) return;
  for (const ttl of [8 * 3600, 3600, 600]) {
    try {
      const minted = await send('POST', 'api/tokens', { streams: ['*'], ttl_s: ttl, subject: 'web-ui' });
      setFeedCookie(minted.token);
      return;
    } catch (err) {
      // 400: above auth.max_token_ttl, try shorter; anything else: no viewer tokens here.
      if (!(err instanceof ApiError && err.status === 400)) return;
    }
  }
}

/** `Authorization: Bearer` for fetch() calls (WHEP and the REST API), if a token is set. */
export function authHeaders() {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** Error raised for failed API calls; `detail` is the human-readable part. */
export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || code || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

/** Short text for an error, preferring the API's `detail` field. */
export function describeError(err) {
  if (err instanceof ApiError) return err.detail || err.code || `HTTP ${err.status}`;
  return err instanceof Error ? err.message : String(err);
}

function streamPath(id) {
  return `api/streams/${encodeURIComponent(id)}`;
}

function timeoutSignal(ms) {
  if (typeof AbortSignal.timeout === 'function') return AbortSignal.timeout(ms);
  const ctrl = new AbortController();
  setTimeout(() => ctrl.abort(), ms);
  return ctrl.signal;
}

async function readJson(res) {
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

async function send(method, path, body) {
  const init = {
    method,
    headers: { Accept: 'application/json', ...authHeaders() },
    cache: 'no-store',
    signal: timeoutSignal(REQUEST_TIMEOUT_MS),
  };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    const timedOut = err?.name === 'TimeoutError' || err?.name === 'AbortError';
    throw new ApiError(0, 'network', timedOut ? 'request timed out' : 'gateway unreachable');
  }
  if (res.status === 204) return null; // deleted: no body
  const payload = await readJson(res);
  if (res.status === 401) {
    // No token, or one that expired: the app asks the user for one.
    window.dispatchEvent(new CustomEvent('sightline-unauthorized', { detail: payload?.detail ?? '' }));
  }
  if (!res.ok) {
    const code = payload?.error ?? (res.statusText || 'error');
    throw new ApiError(res.status, code, payload?.detail ?? `${code} (HTTP ${res.status})`);
  }
  if (payload === null || typeof payload !== 'object') {
    throw new ApiError(res.status, 'bad_response', 'unexpected response from gateway');
  }
  return payload;
}

/** GET /api/streams -> Stream[] */
export async function listStreams() {
  const payload = await send('GET', 'api/streams');
  if (!Array.isArray(payload.streams)) {
    throw new ApiError(200, 'bad_response', 'response has no "streams" list');
  }
  return payload.streams;
}

/** GET /api/streams/{id} -> Stream */
export function getStream(id) {
  return send('GET', streamPath(id));
}

/** POST /api/streams/{id}/start with optional {fps, quality} -> Stream */
export function startStream(id, params) {
  return send('POST', `${streamPath(id)}/start`, params ?? {});
}

/** POST /api/streams/{id}/stop -> Stream */
export function stopStream(id) {
  return send('POST', `${streamPath(id)}/stop`);
}

/**
 * POST /api/streams/{id}/zones|lines: adds a zone ({id, points: [[x, y], …] in 0..1,
 * labels?, dwell?}) or a line ({id, points, labels?}). `kind`: 'zone' | 'line'.
 */
export function addGeometry(id, kind, shape) {
  return send('POST', `${streamPath(id)}/${kind}s`, shape);
}

/** DELETE /api/streams/{id}/zones|lines/{shapeId}. */
export function deleteGeometry(id, kind, shapeId) {
  return send('DELETE', `${streamPath(id)}/${kind}s/${encodeURIComponent(shapeId)}`);
}

function withQuery(path, { fps, quality } = {}) {
  const query = new URLSearchParams();
  if (fps != null) query.set('fps', String(fps));
  if (quality != null) query.set('quality', String(quality));
  const qs = query.toString();
  return qs ? `${path}?${qs}` : path;
}

/** URL of the SSE frame feed for EventSource. */
export function feedUrl(id, params) {
  return withQuery(`${streamPath(id)}/feed`, params);
}

/** The LL-HLS multivariant playlist of a stream. */
export function hlsUrl(id) {
  return `${streamPath(id)}/hls/index.m3u8`;
}

/** WHEP endpoint of a stream (POST an SDP offer). */
export function whepUrl(id) {
  return `${streamPath(id)}/whep`;
}

/** URL of the multipart MJPEG stream. */
export function mjpegUrl(id, params) {
  return withQuery(`${streamPath(id)}/mjpeg`, params);
}

/** The query string of event filters ({stream, kind, label, …}; empty values left out). */
function eventQuery(filters) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(filters ?? {})) {
    if (v != null && v !== '') query.set(k, String(v));
  }
  const qs = query.toString();
  return qs ? `?${qs}` : '';
}

/** GET /api/events with filters ({stream, kind, label, limit, cursor, …}) -> {events, next_cursor}. */
export function searchEvents(filters) {
  return send('GET', `api/events${eventQuery(filters)}`);
}

/** URL of the live events (SSE, `event: event`) for EventSource, with filters. */
export function liveEventsUrl(filters) {
  return `api/events/live${eventQuery(filters)}`;
}

/** GET /api/streams/{id}/counts?from= (ms) -> {lines: [{line, label, direction, count}], zones}. */
export function streamCounts(id, fromMs) {
  return send('GET', `${streamPath(id)}/counts${eventQuery({ from: fromMs })}`);
}

/** GET /api/streams/{id}/recordings?from=&to= (ms) -> {ranges: [{start_ms, end_ms}], segments, bytes}. */
export function recordingsOf(id, fromMs, toMs) {
  return send('GET', `${streamPath(id)}/recordings${eventQuery({ from: fromMs, to: toMs })}`);
}

/**
 * GET /api/streams/{id}/detections?from=&to= (ms, at most 1 h apart) -> {stream, from_ms, to_ms,
 * frames: [{pts, seq, boxes, models}]}: the detection messages stored with the recording, by
 * `pts` (the frame's time on the recording timeline, 90 kHz ticks since the Unix epoch).
 */
export function recordedDetections(id, fromMs, toMs) {
  return send('GET', `${streamPath(id)}/detections${eventQuery({ from: fromMs, to: toMs })}`);
}

/** The HLS VOD playlist of a stream's recording from `fromMs` to `toMs`. */
export function vodUrl(id, fromMs, toMs) {
  return `${streamPath(id)}/vod.m3u8${eventQuery({ from: fromMs, to: toMs })}`;
}

/** One MP4 of a stream's recording from `fromMs` to `toMs`. */
export function exportUrl(id, fromMs, toMs) {
  return `${streamPath(id)}/export.mp4${eventQuery({ from: fromMs, to: toMs })}`;
}

/** An API path the gateway returns ("/api/…") relative to the page, like the others here. */
export function relativePath(path) {
  return String(path).replace(/^\/+/, '');
}

// Offline video jobs (control token).

export function listJobs() {
  return send('GET', 'api/jobs');
}

export function deleteJob(id) {
  return send('DELETE', `api/jobs/${encodeURIComponent(id)}`);
}

/**
 * Upload `file` as a job with `pipeline` (an array of filter names). XMLHttpRequest rather than
 * fetch: it reports upload progress (`onProgress(fraction)`). Resolves to the job.
 */
export function submitJob(file, pipeline, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append('video', file, file.name);
    form.append('pipeline', JSON.stringify(pipeline));
    const xhr = new XMLHttpRequest();
    xhr.open('POST', 'api/jobs');
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total);
    };
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        // not JSON
      }
      if (xhr.status === 201 && body) resolve(body);
      else reject(new ApiError(xhr.status, body?.error ?? 'error', body?.detail ?? `HTTP ${xhr.status}`));
    };
    xhr.onerror = () => reject(new ApiError(0, 'network', 'gateway unreachable'));
    xhr.send(form);
  });
}

/** A job's file (`result.mp4`, `metrics.json`, `preview`) as an object URL (sent with the token). */
export async function jobFileUrl(id, name) {
  const res = await fetch(`api/jobs/${encodeURIComponent(id)}/${name}`, { headers: authHeaders(), cache: 'no-store' });
  if (!res.ok) {
    const payload = await readJson(res);
    throw new ApiError(res.status, payload?.error ?? 'error', payload?.detail ?? `HTTP ${res.status}`);
  }
  return URL.createObjectURL(await res.blob());
}
