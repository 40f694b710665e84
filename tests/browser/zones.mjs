// The zone and line editor of the web UI in headless Debian Chromium (playwright-core) on a
// phone-sized touch screen: "Zones" opens the editor, "+ line" and two taps on the live picture
// draw a line, Save stores it over the API (the points where the picture was tapped), "+ zone"
// and three taps a zone, ✕ deletes the line.
// Usage: node tests/browser/zones.mjs BASE_URL
// Prints one line per check and exits non-zero on the first failure.
import { startBrowserTest } from './chromium.mjs';
import assert from 'node:assert/strict';

const [base] = process.argv.slice(2);
assert.ok(base, 'usage: node zones.mjs BASE_URL');

const { browser, fail, done } = await startBrowserTest(60_000);
const api = async (path) => (await fetch(`${base}${path}`)).json();

try {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, hasTouch: true, isMobile: true });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${base}/`);
  const card = page.locator('article.card', { hasText: 'testcam' });
  await card.waitFor({ timeout: 10_000 });
  // A picture first (WebRTC or the SSE fallback).
  await page.waitForFunction(() => {
    const c = document.querySelector('article.card');
    return c?.querySelector('video')?.videoWidth > 0 || c?.querySelector('img')?.naturalWidth > 0;
  }, null, { timeout: 20_000 });
  await card.getByRole('button', { name: 'Zones' }).tap();
  await card.locator('.geometry-empty').waitFor({ timeout: 5_000 });
  console.log('ok the editor opens, no zones or lines yet');

  const media = card.locator('.media');
  const box = await media.boundingBox();
  // The card's media box has the picture's aspect ratio: the picture fills it.
  const tapAt = async (x, y) => media.tap({ position: { x: box.width * x, y: box.height * y } });

  await card.getByRole('button', { name: '+ line' }).tap();
  await tapAt(0.25, 0.5);
  await tapAt(0.75, 0.5);
  const draft = await card.locator('canvas.media-overlay').evaluate((el) => Number(el.dataset.draft));
  assert.equal(draft, 2, 'two points drawn');
  await card.locator('.draft-name').fill('door');
  await card.getByRole('button', { name: 'Save' }).tap();
  await card.locator('.geometry-item[data-id="door"]').waitFor({ timeout: 5_000 });
  const { lines } = await api('/api/streams/testcam/lines');
  const door = lines.find((l) => l.id === 'door');
  assert.ok(door, `stored: ${JSON.stringify(lines)}`);
  const near = (p, [x, y]) => Math.abs(p[0] - x) < 0.02 && Math.abs(p[1] - y) < 0.02;
  assert.ok(near(door.points[0], [0.25, 0.5]) && near(door.points[1], [0.75, 0.5]), `where tapped: ${JSON.stringify(door)}`);
  console.log(`ok a line drawn with two taps is stored: ${JSON.stringify(door.points)}`);

  await card.getByRole('button', { name: '+ zone' }).tap();
  const save = card.getByRole('button', { name: 'Save' });
  assert.ok(await save.isDisabled(), 'a zone needs three points');
  for (const [x, y] of [[0.1, 0.1], [0.4, 0.1], [0.25, 0.6]]) await tapAt(x, y);
  await save.tap();
  await card.locator('.geometry-item[data-id="zone-1"]').waitFor({ timeout: 5_000 });
  const { zones } = await api('/api/streams/testcam/zones');
  assert.equal(zones.length, 1, JSON.stringify(zones));
  assert.equal(zones[0].points.length, 3);
  const drawn = await card.locator('canvas.media-overlay').evaluate((el) => [Number(el.dataset.zones), Number(el.dataset.lines)]);
  assert.deepEqual(drawn, [1, 1], 'the overlay draws them');
  console.log('ok a zone drawn with three taps is stored and drawn');

  await card.getByRole('button', { name: 'Delete line door' }).tap();
  await card.locator('.geometry-item[data-id="door"]').waitFor({ state: 'detached', timeout: 5_000 });
  assert.equal((await api('/api/streams/testcam/lines')).lines.length, 0);
  console.log('ok the line is deleted');
  assert.deepEqual(errors, [], 'no page errors');
  await done();
} catch (e) {
  await fail(e);
}
