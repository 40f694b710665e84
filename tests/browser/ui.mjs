// Drives the Sightline web UI in headless Debian Chromium (playwright-core, no browser
// download): the test camera's card plays over WebRTC (WHEP), Stop ends the session,
// Start plays again; ?transport=sse plays the SSE fallback; a failing WHEP POST or a
// video that renders nothing within 4 s falls back to LL-HLS (and, without hls.js, to
// SSE); ?debug=1 shows the
// glass-to-glass latency read from the test camera's pixel clock.
// Usage: node tests/browser/ui.mjs BASE_URL [SCREENSHOT_DIR]
// Prints one line per check and exits non-zero on the first failure.
import { startBrowserTest } from './chromium.mjs';
import assert from 'node:assert/strict';
import { join } from 'node:path';

const [base, shots] = process.argv.slice(2);
assert.ok(base, 'usage: node ui.mjs BASE_URL [SCREENSHOT_DIR]');

const { browser, fail, done } = await startBrowserTest();

const api = async (path, method = 'GET') => (await fetch(`${base}${path}`, { method })).json();
const viewers = async () => (await api('/api/streams/testcam')).health.viewers;
/** Polls the viewer counts until `want` (a subset) matches or `ms` passes. */
async function waitViewers(want, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await viewers();
    if (Object.entries(want).every(([k, n]) => v[k] === n)) return v;
    if (Date.now() > deadline) assert.fail(`${what}: viewers ${JSON.stringify(v)}, want ${JSON.stringify(want)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
const shot = async (page, name) => {
  if (shots) await page.screenshot({ path: join(shots, name), fullPage: true });
};

const errors = [];
async function openPage(query = '', initScript = null) {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } }); // a phone
  page.on('pageerror', (e) => errors.push(String(e)));
  if (initScript) await page.addInitScript(initScript);
  await page.goto(`${base}/${query}`);
  const card = page.locator('article.card', { hasText: 'testcam' });
  await card.waitFor({ timeout: 10_000 });
  return { page, card };
}

/**
 * The card's HUD says WebRTC and its <video> plays 1280x720: currentTime advances, and so
 * does the count of presented frames (currentTime of a MediaStream runs even when frozen).
 */
async function expectWebrtcPlaying(page, card, ms = 15_000) {
  await card.locator('.media-tag', { hasText: 'WebRTC' }).waitFor({ timeout: ms });
  const video = await card.locator('video.media-video').elementHandle();
  await page.waitForFunction((el) => el.videoWidth === 1280 && el.videoHeight === 720 && el.currentTime > 0,
    video, { timeout: ms });
  const progress = (el) => [el.currentTime, el.getVideoPlaybackQuality().totalVideoFrames];
  const start = await video.evaluate(progress);
  await page.waitForFunction(([el, [t, n]]) => el.currentTime > t + 0.3
    && el.getVideoPlaybackQuality().totalVideoFrames >= n + 5, [video, start], { timeout: 5_000 });
}

/** The card shows the SSE <img> with new 1280x720 frames. */
async function expectSsePlaying(page, card, ms = 15_000) {
  await card.locator('.media-tag', { hasText: 'SSE' }).waitFor({ timeout: ms });
  const img = await card.locator('img.media-img').elementHandle();
  await page.waitForFunction((el) => !el.hidden && el.naturalWidth === 1280 && el.naturalHeight === 720,
    img, { timeout: ms });
  const first = await img.evaluate((el) => el.currentSrc);
  await page.waitForFunction(([el, prev]) => el.currentSrc !== prev && el.naturalWidth === 1280,
    [img, first], { timeout: 5_000 });
}

/** The card plays LL-HLS in its <video>: tag "LL-HLS", 1280x720 frames shown. */
async function expectHlsPlaying(page, card, ms = 15_000) {
  await card.locator('.media-tag', { hasText: 'LL-HLS' }).waitFor({ timeout: ms });
  const video = await card.locator('video.media-video').elementHandle();
  await page.waitForFunction((el) => el.videoWidth === 1280 && el.getVideoPlaybackQuality().totalVideoFrames >= 10,
    video, { timeout: ms });
}

/** The latency the card's HUD shows in debug mode (0..2000 ms). */
async function latencyMs(card) {
  const hud = card.locator('.hud-seq', { hasText: /latency -?\d+ ms/ });
  await hud.waitFor({ timeout: 5_000 });
  const ms = Number((await hud.textContent()).match(/latency (-?\d+) ms/)[1]);
  assert.ok(ms >= 0 && ms < 2000, `latency ${ms} ms`);
  return ms;
}

try {
  const { page, card } = await openPage();
  console.log('ok card shown for stream testcam');

  await expectWebrtcPlaying(page, card);
  await waitViewers({ webrtc: 1, sse: 0 }, 2_000, 'one WebRTC viewer');
  await card.locator('.hud-fps', { hasText: '1280×720' }).waitFor({ timeout: 3_000 });
  // Without detection the <video> itself is shown: no frame is copied into the picture canvas
  // (static/detection-overlay.js, "The picture").
  assert.ok(await card.locator('canvas.media-picture').evaluate((el) => el.hidden), 'no picture canvas without detection');
  console.log('ok HUD says WebRTC; <video> plays 1280x720, shown itself (no detection); API counts webrtc=1 sse=0');
  await shot(page, 'ui-webrtc.png');

  await card.locator('.media').click();
  const fsVideo = page.locator('.viewer video');
  await page.waitForFunction((el) => el.videoWidth === 1280 && !el.hidden && el.currentTime > 0,
    await fsVideo.elementHandle(), { timeout: 5_000 });
  await shot(page, 'ui-viewer.png');
  await page.keyboard.press('Escape');
  assert.equal((await viewers()).webrtc, 1, 'the full-screen view shares the session');
  console.log('ok full-screen view plays the same MediaStream');

  await card.getByRole('button', { name: 'Stop' }).click();
  await card.locator('.badge', { hasText: 'stopped' }).waitFor({ timeout: 5_000 });
  await waitViewers({ webrtc: 0 }, 1_000, 'WebRTC session ends after Stop');
  assert.equal((await api('/api/streams/testcam')).active, false);
  await card.locator('.media-placeholder', { hasText: 'Stopped' }).waitFor({ timeout: 2_000 });
  console.log('ok Stop stops the stream and ends the WebRTC session');
  await shot(page, 'ui-stopped.png');

  await card.getByRole('button', { name: 'Start' }).click();
  await expectWebrtcPlaying(page, card, 20_000);
  assert.equal((await api('/api/streams/testcam')).active, true);
  await waitViewers({ webrtc: 1 }, 2_000, 'new WebRTC session after Start');
  console.log('ok Start brings live frames back (WebRTC video plays again)');

  const sse = await openPage('?transport=sse&debug=1');
  await expectSsePlaying(sse.page, sse.card);
  await waitViewers({ sse: 1, webrtc: 1 }, 2_000, 'SSE page plus WebRTC page');
  console.log('ok ?transport=sse plays 1280x720 frames in an <img>; API counts sse=1');
  const sseMs = await latencyMs(sse.card);
  console.log(`ok ?debug=1 shows SSE glass-to-glass latency ${sseMs} ms`);
  await shot(sse.page, 'ui-sse.png');

  // A refused WHEP POST falls back to LL-HLS on its own; without hls.js, to SSE.
  await sse.page.route('**/whep', (route) => route.fulfill({
    status: 503, contentType: 'application/json', headers: { 'Retry-After': '5' },
    body: JSON.stringify({ error: 'capacity', detail: 'test: no WebRTC capacity' }),
  }));
  await sse.page.goto(`${base}/`);
  await expectHlsPlaying(sse.page, sse.card);
  console.log('ok a failing WHEP POST falls back to LL-HLS');
  await sse.page.route('**/vendor/hls.min.js', (route) => route.abort());
  await sse.page.goto(`${base}/`);
  await expectSsePlaying(sse.page, sse.card);
  console.log('ok a failing WHEP POST without hls.js falls back to SSE');
  await sse.page.goto('about:blank');

  // A session whose video never renders a frame falls back after 4 s and is deleted.
  const stalled = await openPage('', () => {
    HTMLVideoElement.prototype.requestVideoFrameCallback = () => 0;
  });
  await stalled.card.locator('.media-tag', { hasText: 'WebRTC' }).waitFor({ timeout: 5_000 });
  await expectHlsPlaying(stalled.page, stalled.card, 10_000);
  await waitViewers({ webrtc: 1, hls: 1 }, 2_000, 'stalled WHEP session deleted');
  console.log('ok no WebRTC frame within 4 s falls back to LL-HLS and ends the session');
  await stalled.page.goto('about:blank');

  // Navigating away ends the old session (pagehide -> DELETE), the new one plays.
  await page.goto(`${base}/?debug=1`);
  await expectWebrtcPlaying(page, card);
  const ms = await latencyMs(card);
  await waitViewers({ webrtc: 1, sse: 0 }, 2_000, 'old sessions ended on navigation');
  console.log(`ok ?debug=1 shows WebRTC glass-to-glass latency ${ms} ms`);
  await shot(page, 'ui-debug.png');

  await page.goto('about:blank');
  await waitViewers({ webrtc: 0, sse: 0 }, 2_000, 'sessions ended on leaving the page');
  console.log('ok leaving the page ends the WebRTC session');

  assert.deepEqual(errors, [], 'no page errors');
  console.log('ok no JavaScript errors');
} catch (e) {
  await fail(e.stack || String(e));
}
await done();
