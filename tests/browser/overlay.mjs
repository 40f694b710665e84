// The web UI's detection overlay in headless Debian Chromium (playwright-core): with
// detection on, the test camera's card draws boxes on a canvas over the WebRTC <video>
// (matched to frames by RTP timestamp) and over the SSE <img> (matched by sequence
// number), inside the letterboxed picture, over the stream's zone and line (the line down the
// middle of the picture, cyan).
// Usage: node tests/browser/overlay.mjs BASE_URL [SCREENSHOT_DIR]
// Prints one line per check and exits non-zero on the first failure.
import { startBrowserTest } from './chromium.mjs';
import assert from 'node:assert/strict';
import { join } from 'node:path';

const [base, shots] = process.argv.slice(2);
assert.ok(base, 'usage: node overlay.mjs BASE_URL [SCREENSHOT_DIR]');

const { browser, fail, done } = await startBrowserTest(80_000);

/** Boxes drawn on their own frame, and coloured pixels inside the picture's rectangle only. */
async function expectBoxes(page, what) {
  const card = page.locator('article.card', { hasText: 'testcam' });
  await card.waitFor({ timeout: 10_000 });
  const canvas = await card.locator('canvas.media-overlay').elementHandle();
  await page.waitForFunction((el) => Number(el.dataset.exact || 0) >= 5 && Number(el.dataset.boxes || 0) > 0,
    canvas, { timeout: 30_000 });
  const sample = () => canvas.evaluate((el) => {
    // A portrait phone letterboxes the 16:9 picture: nothing may be drawn above or below it.
    const ctx = el.getContext('2d');
    const { width, height } = el;
    const data = ctx.getImageData(0, 0, width, height).data;
    const pictureH = width * 9 / 16;
    const top = (height - pictureH) / 2;
    let inside = 0;
    let outside = 0;
    for (let y = 0; y < height; y += 1) {
      for (let x = 0; x < width; x += 2) {
        if (data[(y * width + x) * 4 + 3] === 0) continue;
        if (y >= top - 1 && y <= top + pictureH + 1) inside += 1; else outside += 1;
      }
    }
    // The line `middle` (x = 0.5 of the picture, cyan) from top to bottom of the picture.
    let cyanRows = 0;
    for (let y = Math.ceil(top); y < top + pictureH; y += 1) {
      for (let x = Math.floor(width / 2) - 4; x <= width / 2 + 4; x += 1) {
        const i = (y * width + x) * 4;
        if (data[i] < 60 && data[i + 1] > 180 && data[i + 2] > 200 && data[i + 3] > 200) {
          cyanRows += 1;
          break;
        }
      }
    }
    return {
      exact: Number(el.dataset.exact), held: Number(el.dataset.held || 0), inside, outside, width, height,
      lines: Number(el.dataset.lines || 0), zones: Number(el.dataset.zones || 0), lineCover: cyanRows / pictureH,
    };
  });
  // Box labels are filled and drawn over the line: a shape crossing the middle hides part of
  // it for a moment (a third of its height was seen once on CI). The line must be whole in one
  // of a few pictures ~150 ms apart; nothing may be drawn in the bars in any of them.
  let r = await sample();
  for (let i = 0; i < 20 && r.lineCover <= 0.7; i += 1) {
    await page.waitForTimeout(150);
    const next = await sample();
    r = { ...next, outside: Math.max(r.outside, next.outside), inside: Math.max(r.inside, next.inside) };
  }
  assert.ok(r.inside > 50, `${what}: box pixels drawn ${JSON.stringify(r)}`);
  assert.equal(r.lines, 1, `${what}: the stream's line is drawn ${JSON.stringify(r)}`);
  assert.equal(r.zones, 1, `${what}: the stream's zone is drawn ${JSON.stringify(r)}`);
  assert.ok(r.lineCover > 0.7, `${what}: the line runs down the middle of the picture ${JSON.stringify(r)}`);
  assert.equal(r.outside, 0, `${what}: nothing drawn in the letterbox bars ${JSON.stringify(r)}`);
  console.log(`ok ${what}: ${JSON.stringify(r)}`);
}

try {
  const errors = [];
  for (const [query, what] of [['', 'webrtc'], ['?transport=sse', 'sse']]) {
    const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${base}/${query}`);
    // Make the media box taller than 16:9 so the picture is letterboxed.
    await page.addStyleTag({ content: '.media { aspect-ratio: 3 / 4 !important; }' });
    await expectBoxes(page, what);
    if (shots) await page.screenshot({ path: join(shots, `overlay-${what}.png`), fullPage: true });
    await page.close();
  }
  assert.deepEqual(errors, [], 'no page errors');
} catch (e) {
  await fail(e.stack || String(e));
}
await done();
