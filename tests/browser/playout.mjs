// The WebRTC overlay's playout delay follows the model both ways (static/detection-overlay.js,
// issue #17 §5), in headless Debian Chromium with the UI's own module: a fake <video> shows a
// 25 fps frame every 40 ms (its requestVideoFrameCallback driven here, RTP timestamps 3600
// apart) and detection messages with tracked boxes for every 2nd frame come
//   1. 80 ms after their frame: `onLate` asks for about 80 ms more delay;
//   2. then 160 ms before their frame (the model caught up): `onEarly` asks for about 140 ms
//      less (the smallest margin less 20 ms), and after a switch-over of 40 frames (the judged
//      windows still hold late messages) no more `onLate`.
// Usage: node tests/browser/playout.mjs BASE_URL
// Prints one line per check and exits non-zero on the first failure.
import { startBrowserTest } from './chromium.mjs';
import assert from 'node:assert/strict';

const [base] = process.argv.slice(2);
assert.ok(base, 'usage: node playout.mjs BASE_URL');

const { browser, fail, done } = await startBrowserTest(60_000);
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${base}/healthz`);
  const calls = await page.evaluate(async () => {
    const { DetectionOverlay } = await import('/detection-overlay.js');
    const calls = [];
    const canvas = document.createElement('canvas');
    document.body.append(canvas);
    const overlay = new DetectionOverlay(canvas, {
      onLate: (ms) => calls.push({ phase, kind: 'late', ms }),
      onEarly: (ms) => calls.push({ phase, kind: 'early', ms }),
    });
    let callback = null;
    const video = {
      videoWidth: 1280, videoHeight: 720,
      requestVideoFrameCallback(cb) { callback = cb; return 1; },
      cancelVideoFrameCallback() { callback = null; },
    };
    overlay.watchVideo(video);
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const message = (frame) => ({
      stream: 's', seq: frame, rtp_timestamp: (1000 + frame * 3600) >>> 0, capture_ms: 0, width: 1280, height: 720,
      boxes: [{ x: 0.1 + frame * 0.001, y: 0.2, w: 0.1, h: 0.1, class_id: 0, label: 'circle', score: 0.9, track_id: 1 }],
    });
    const show = (frame) => callback?.(performance.now(), { rtpTimestamp: (1000 + frame * 3600) >>> 0 });
    let phase = 'late';
    // Phase 1: each detected frame's message 80 ms (two frames) after it was shown.
    for (let frame = 0; frame < 120; frame += 1) {
      show(frame);
      if (frame >= 2 && frame % 2 === 0) overlay.push(message(frame - 2));
      await sleep(40);
    }
    // Phase 2: each message 160 ms (four frames) before its frame is shown; the first 40
    // frames are a switch-over (the judged windows still hold late messages).
    for (let frame = 120; frame < 280; frame += 1) {
      phase = frame < 160 ? 'switch' : 'early';
      if (frame % 2 === 0) overlay.push(message(frame + 4));
      show(frame);
      await sleep(40);
    }
    return calls;
  });
  const late = calls.filter((c) => c.phase === 'late' && c.kind === 'late');
  const early = calls.filter((c) => c.phase !== 'late' && c.kind === 'early');
  assert.ok(late.length >= 1 && late.every((c) => c.ms >= 60 && c.ms <= 120), `late messages ask for ~80 ms more: ${JSON.stringify(calls)}`);
  assert.ok(!calls.some((c) => c.kind === 'early' && c.phase === 'late'), `no call for less delay while late: ${JSON.stringify(calls)}`);
  assert.ok(early.length >= 1 && early.every((c) => c.ms >= 100 && c.ms < 1000), `early messages ask for ~140 ms less (more on a busy machine: timers fire late, never early): ${JSON.stringify(calls)}`);
  assert.ok(!calls.some((c) => c.kind === 'late' && c.phase === 'early'), `no call for more delay once early: ${JSON.stringify(calls)}`);
  console.log(`ok the playout delay follows the model both ways: ${JSON.stringify(calls)}`);
  assert.deepEqual(errors, [], 'no page errors');
} catch (e) {
  await fail(e.stack || String(e));
}
await done();
