// Glass-to-glass latency as the web UI shows it (issue 17 §6): one page of the UI in debug
// mode (`?debug=1`) plays the test camera over one transport and nothing else runs in it;
// the card's own probe reads the test camera's pixel clock from each picture as it is
// presented (requestVideoFrameCallback for WebRTC, the <img>'s load for SSE; see
// static/pixel-clock.js) and shows the latency in its HUD, which this samples ~10 times a
// second after a 5 s warm-up. A benchmark (scripts/bench-g2g.sh), not a test: it asserts only
// that latencies were shown.
//
// Usage: node tests/browser/g2g.mjs BASE_URL webrtc|sse [SECONDS=15]
// Prints one JSON line: {transport, samples, p50, p90} (ms).
import { startBrowserTest } from './chromium.mjs';
import assert from 'node:assert/strict';

const [base, transport, secondsArg] = process.argv.slice(2);
assert.ok(base && ['webrtc', 'sse'].includes(transport), 'usage: node g2g.mjs BASE_URL webrtc|sse [SECONDS]');
const seconds = Number(secondsArg || 15);
const { browser, fail, done } = await startBrowserTest((seconds + 60) * 1000);
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(`${base}/?debug=1${transport === 'sse' ? '&transport=sse' : ''}`);
  await page.locator('.hud-seq', { hasText: /latency -?\d+ ms/ }).first().waitFor({ timeout: 30_000 });
  await page.waitForTimeout(5000);
  const samples = [];
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    const text = await page.evaluate(() => document.querySelector('.hud-seq')?.textContent ?? '');
    const m = text.match(/latency (-?\d+) ms/);
    if (m) samples.push(Number(m[1]));
    await page.waitForTimeout(100);
  }
  assert.ok(samples.length >= seconds * 5, `latency shown ${samples.length} times`);
  samples.sort((a, b) => a - b);
  const at = (q) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))];
  console.log(JSON.stringify({ transport, samples: samples.length, p50: at(0.5), p90: at(0.9) }));
} catch (e) {
  await fail(e.stack || String(e));
}
await done();
