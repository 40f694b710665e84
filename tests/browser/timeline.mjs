// The recording timeline on a stream card (issue #14) in headless Debian Chromium
// (playwright-core): the card of a recorded stream shows its recorded range on the bar; a
// click on it plays the recording (HLS VOD through the vendored hls.js) with frames decoded;
// the download link serves an MP4.
// Usage: node tests/browser/timeline.mjs BASE_URL STREAM
// Prints one line per check and exits non-zero on the first failure.
import { startBrowserTest } from './chromium.mjs';
import assert from 'node:assert/strict';

const [base, stream] = process.argv.slice(2);
assert.ok(base && stream, 'usage: node timeline.mjs BASE_URL STREAM');

const { browser, fail, done } = await startBrowserTest(90_000);

try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${base}/`);
  const card = page.locator('article.card', { hasText: stream });
  const range = card.locator('.timeline .timeline-range').first();
  await range.waitFor({ state: 'attached', timeout: 20_000 });
  console.log('ok the card shows its recorded range');

  // Click the middle of the range: the recording plays from there.
  const box = await range.boundingBox();
  assert.ok(box && box.width > 0, 'the range has a width');
  await card.locator('.timeline-bar').click({ position: { x: box.x - (await card.locator('.timeline-bar').boundingBox()).x + box.width / 2, y: 10 } });
  const video = card.locator('video.timeline-video');
  await video.waitFor({ state: 'visible', timeout: 5_000 });
  await page.waitForFunction((s) => {
    const card = [...document.querySelectorAll('article.card')].find((c) => c.textContent.includes(s));
    const v = card?.querySelector('video.timeline-video');
    return v && v.getVideoPlaybackQuality().totalVideoFrames >= 40 && v.videoWidth === 1280;
  }, stream, { timeout: 30_000 });
  console.log('ok the recording plays (hls.js, 1280x720)');

  const href = await card.locator('a.timeline-download').getAttribute('href');
  const download = await page.evaluate(async (url) => {
    const r = await fetch(url);
    const b = new Uint8Array(await r.arrayBuffer());
    return { status: r.status, type: r.headers.get('content-type'), bytes: b.length, box: String.fromCharCode(...b.slice(4, 8)) };
  }, href);
  assert.deepEqual([download.status, download.type, download.box], [200, 'video/mp4', 'ftyp'], JSON.stringify(download));
  assert.ok(download.bytes > 100_000, JSON.stringify(download));
  console.log(`ok the download is an MP4 (${download.bytes} bytes)`);
  assert.deepEqual(errors, [], 'no page errors');
  await done();
} catch (err) {
  await fail(err.stack || String(err));
}
