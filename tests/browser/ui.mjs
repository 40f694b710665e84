// Drives the Sightline web UI in headless Debian Chromium (playwright-core, no browser
// download): the test camera's card shows live frames, Stop stops the stream and the feed,
// Start brings frames back. Usage: node tests/browser/ui.mjs BASE_URL [SCREENSHOT_DIR]
// Prints one line per check and exits non-zero on the first failure.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { join } from 'node:path';

const [base, shots] = process.argv.slice(2);
assert.ok(base, 'usage: node ui.mjs BASE_URL [SCREENSHOT_DIR]');

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  // playwright starts Chromium with a fresh temporary profile of its own.
});
const fail = async (msg) => {
  console.error(`FAIL ${msg}`);
  await browser.close();
  process.exit(1);
};
const timeout = setTimeout(() => fail('browser test took over 60 s'), 60_000);

const api = async (path, method = 'GET') => (await fetch(`${base}${path}`, { method })).json();

try {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } }); // a phone
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(base);
  const card = page.locator('article.card', { hasText: 'testcam' });
  await card.waitFor({ timeout: 10_000 });
  console.log('ok card shown for stream testcam');

  const img = card.locator('img.media-img');
  const frameSrc = () => img.evaluate((el) => (el.naturalWidth > 0 ? el.currentSrc : ''));
  await page.waitForFunction((el) => el.naturalWidth === 1280 && el.naturalHeight === 720,
    await img.elementHandle(), { timeout: 20_000 });
  const first = await frameSrc();
  await page.waitForFunction(([el, prev]) => el.currentSrc !== prev && el.naturalWidth > 0,
    [await img.elementHandle(), first], { timeout: 5_000 });
  console.log('ok live 1280x720 frames replace each other');
  const health = await api('/api/streams/testcam');
  assert.equal(health.health.viewers.sse, 1, 'the page holds one SSE feed');
  if (shots) await page.screenshot({ path: join(shots, 'ui-live.png'), fullPage: true });

  await card.getByRole('button', { name: 'Stop' }).click();
  await page.waitForFunction(() => document.querySelector('article.card .badge')?.textContent?.includes('stopped'),
    null, { timeout: 5_000 });
  assert.equal((await api('/api/streams/testcam')).active, false);
  await page.waitForTimeout(500);
  assert.equal((await api('/api/streams/testcam')).health.viewers.sse, 0, 'feed closed after stop');
  console.log('ok Stop stops the stream and closes the feed');
  if (shots) await page.screenshot({ path: join(shots, 'ui-stopped.png'), fullPage: true });

  const before = await frameSrc();
  await card.getByRole('button', { name: 'Start' }).click();
  await page.waitForFunction(([el, prev]) => el.currentSrc !== prev && el.naturalWidth === 1280,
    [await img.elementHandle(), before], { timeout: 20_000 });
  assert.equal((await api('/api/streams/testcam')).active, true);
  console.log('ok Start brings live frames back');

  assert.deepEqual(errors, [], 'no page errors');
  console.log('ok no JavaScript errors');
} catch (e) {
  await fail(e.stack || String(e));
}
clearTimeout(timeout);
await browser.close();
