// The web UI on a gateway with authentication on (headless Debian Chromium, playwright-core):
// the API's 401 makes the UI ask for a token; with a viewer token the test camera plays over
// WebRTC (WHEP POST with Authorization: Bearer) and over SSE (the sightline_token cookie,
// since EventSource cannot send headers); Stop with a viewer token shows the 403.
// With a control token the UI mints a viewer token for the feeds' cookie (a control token
// never goes in a cookie) and SSE plays too.
// Usage: node tests/browser/auth.mjs BASE_URL VIEWER_TOKEN CONTROL_TOKEN
// Prints one line per check and exits non-zero on the first failure.
import { startBrowserTest } from './chromium.mjs';
import assert from 'node:assert/strict';

const [base, viewerToken, controlToken] = process.argv.slice(2);
assert.ok(base && viewerToken && controlToken, 'usage: node auth.mjs BASE_URL VIEWER_TOKEN CONTROL_TOKEN');

const { browser, fail, done } = await startBrowserTest();
const errors = [];

async function signIn(query, token = viewerToken) {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${base}/${query}`);
  const dialog = page.locator('#token-dialog');
  await dialog.waitFor({ state: 'visible', timeout: 10_000 });
  await page.locator('#token-input').fill(token);
  await page.getByRole('button', { name: 'Use token' }).click();
  const card = page.locator('article.card', { hasText: 'testcam' });
  await card.waitFor({ timeout: 10_000 });
  return { page, card };
}

try {
  const { page, card } = await signIn('');
  console.log('ok 401 from the API opens the token dialog; the token shows the card');
  await card.locator('.media-tag', { hasText: 'WebRTC' }).waitFor({ timeout: 15_000 });
  const video = await card.locator('video.media-video').elementHandle();
  await page.waitForFunction((el) => el.videoWidth === 1280 && el.currentTime > 0.5, video, { timeout: 15_000 });
  console.log('ok WebRTC plays with the viewer token (WHEP bearer)');

  await card.getByRole('button', { name: 'Stop' }).click();
  await card.getByText(/control token is required/).waitFor({ timeout: 5_000 });
  console.log('ok Stop with a viewer token shows the 403');

  const sse = await signIn('?transport=sse');
  await sse.card.locator('.media-tag', { hasText: 'SSE' }).waitFor({ timeout: 15_000 });
  const img = await sse.card.locator('img.media-img').elementHandle();
  await sse.page.waitForFunction((el) => !el.hidden && el.naturalWidth === 1280, img, { timeout: 15_000 });
  console.log('ok SSE plays with the viewer token (cookie)');

  const ctl = await signIn('?transport=sse', controlToken);
  await ctl.card.locator('.media-tag', { hasText: 'SSE' }).waitFor({ timeout: 15_000 });
  const ctlImg = await ctl.card.locator('img.media-img').elementHandle();
  await ctl.page.waitForFunction((el) => !el.hidden && el.naturalWidth === 1280, ctlImg, { timeout: 15_000 });
  const cookie = await ctl.page.evaluate(() => document.cookie);
  assert.ok(!cookie.includes(controlToken), 'the control token is not in a cookie');
  assert.match(cookie, /sightline_token=[\w-]+\.[\w-]+\.[\w-]+/, 'a minted viewer token is');
  console.log('ok with a control token, SSE plays on a minted viewer token; the control token stays out of cookies');
  assert.deepEqual(errors, [], 'no page errors');
} catch (err) {
  await fail(err?.stack ?? String(err));
}
await done();
