// The live view's fallback order (issue #14) in headless Debian Chromium (playwright-core),
// against a gateway with WebRTC switched off (WHEP answers 503): the card plays over LL-HLS
// (tag "LL-HLS", frames shown in its <video>); with hls.js unavailable (its script blocked),
// it plays over SSE.
// Usage: node tests/browser/fallback.mjs BASE_URL STREAM
// Prints one line per check and exits non-zero on the first failure.
import { startBrowserTest } from './chromium.mjs';
import assert from 'node:assert/strict';

const [base, stream] = process.argv.slice(2);
assert.ok(base && stream, 'usage: node fallback.mjs BASE_URL STREAM');

const { browser, fail, done } = await startBrowserTest(90_000);

async function tagOf(page) {
  const card = page.locator('article.card', { hasText: stream });
  await page.waitForFunction((s) => {
    const card = [...document.querySelectorAll('article.card')].find((c) => c.textContent.includes(s));
    const tag = card?.querySelector('.media-tag');
    return tag && !tag.hidden && tag.textContent !== '' && card.querySelector('.media-placeholder').hidden;
  }, stream, { timeout: 30_000 });
  return card.locator('.media-tag').textContent();
}

try {
  const errors = [];
  const page = await browser.newPage();
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${base}/`);
  const tag = await tagOf(page);
  assert.equal(tag, 'LL-HLS', `WebRTC refused: LL-HLS next, not ${tag}`);
  await page.waitForFunction((s) => {
    const card = [...document.querySelectorAll('article.card')].find((c) => c.textContent.includes(s));
    const v = card?.querySelector('video.media-video');
    return v && v.getVideoPlaybackQuality().totalVideoFrames >= 50 && v.videoWidth === 1280;
  }, stream, { timeout: 30_000 });
  console.log('ok WebRTC refused: the card plays LL-HLS (50 frames at 1280x720)');

  const page2 = await browser.newPage();
  page2.on('pageerror', (e) => errors.push(String(e)));
  await page2.route('**/vendor/hls.min.js', (route) => route.abort());
  await page2.goto(`${base}/`);
  const tag2 = await tagOf(page2);
  assert.equal(tag2, 'SSE', `no hls.js: SSE last, not ${tag2}`);
  console.log('ok without hls.js the card plays SSE');
  assert.deepEqual(errors, [], 'no page errors');
  await done();
} catch (err) {
  await fail(err.stack || String(err));
}
