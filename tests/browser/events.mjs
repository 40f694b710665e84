// The web UI's events panel and line counts in headless Debian Chromium (playwright-core), on
// a stream whose line and zone make events (detection on): live events appear with their
// snapshot (a 1280x720 JPEG), the kind filter keeps only crossings, and the stream's card
// shows today's crossings of its line.
// Usage: node tests/browser/events.mjs BASE_URL STREAM
// Prints one line per check and exits non-zero on the first failure.
import { startBrowserTest } from './chromium.mjs';
import assert from 'node:assert/strict';

const [base, stream] = process.argv.slice(2);
assert.ok(base && stream, 'usage: node events.mjs BASE_URL STREAM');

const { browser, fail, done } = await startBrowserTest(90_000);

try {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${base}/`);
  const panel = page.locator('section.events-panel');
  await panel.locator('select[aria-label="Stream"] option[value="' + stream + '"]').waitFor({ state: 'attached', timeout: 10_000 });
  await panel.locator('select[aria-label="Stream"]').selectOption(stream);
  // Events of the stream, stored ones and live ones, each listed once.
  await page.waitForFunction((s) => document.querySelectorAll(`.event-item[data-stream="${s}"]`).length >= 3, stream, { timeout: 45_000 });
  const items = await panel.locator('.event-item').evaluateAll((els) => els.map((e) => [e.dataset.id, e.dataset.stream, e.dataset.kind]));
  assert.ok(items.every(([, s]) => s === stream), JSON.stringify(items));
  assert.equal(new Set(items.map(([id]) => id)).size, items.length, 'no event twice');
  console.log(`ok ${items.length} events of ${stream} listed`);

  await panel.locator('select[aria-label="Kind"]').selectOption('line_crossed');
  await page.waitForFunction(() => {
    const items = [...document.querySelectorAll('.event-item')];
    return items.length >= 1 && items.every((e) => e.dataset.kind === 'line_crossed');
  }, null, { timeout: 45_000 });
  // Its snapshot, the full frame.
  await page.waitForFunction(() => [...document.querySelectorAll('.event-item img.event-thumb')].some((i) => i.complete && i.naturalWidth === 1280),
    null, { timeout: 10_000 });
  console.log('ok the kind filter keeps crossings, with their snapshots');

  const counts = page.locator('article.card', { hasText: stream }).locator('.card-counts');
  await page.waitForFunction((s) => {
    const card = [...document.querySelectorAll('article.card')].find((c) => c.textContent.includes(s));
    const n = JSON.parse(card?.querySelector('.card-counts')?.dataset.counts || '{}');
    return Object.values(n).some((c) => c.in + c.out >= 1);
  }, stream, { timeout: 15_000 });
  console.log(`ok the card counts crossings: ${await counts.textContent()}`);
  assert.deepEqual(errors, [], 'no page errors');
  await done();
} catch (e) {
  await fail(e);
}
