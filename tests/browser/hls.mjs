// Plays an HLS playlist with hls.js (from npm, tests/browser/node_modules) in headless Debian
// Chromium (playwright-core, no browser download) and reports what the viewer got.
// Usage: node tests/browser/hls.mjs BASE_URL PLAYLIST_PATH [SECONDS] [lowlatency]
// Prints one JSON line: frames (getVideoPlaybackQuality().totalVideoFrames after SECONDS of
// playing), dropped, width, height, currentTime, firstFrameMs (load -> first frame shown),
// firstFrame (that frame as a base64 JPEG, for its pixel clock), lastFrame and lastFrameAt
// (the picture shown at the end and the wall-clock ms it was read at: glass-to-glass
// latency against the pixel clock), latencies (glass-to-glass every 250 ms, ms, read with the
// UI's pixel-clock reader), audioBytes (audio bytes Chromium decoded, muted:
// webkitAudioDecodedByteCount), error (hls.js fatal error).
import { createRequire } from 'node:module';
import { startBrowserTest } from './chromium.mjs';

const [base, playlist, seconds = '5', mode] = process.argv.slice(2);
if (!base || !playlist) {
  console.error('usage: node hls.mjs BASE_URL PLAYLIST_PATH [SECONDS] [lowlatency]');
  process.exit(2);
}
const hlsPath = createRequire(import.meta.url).resolve('hls.js/dist/hls.min.js');

const { browser, done } = await startBrowserTest(90_000);
const page = await browser.newPage();
await page.goto(`${base}/healthz`);
await page.addScriptTag({ path: hlsPath });
const result = await page.evaluate(async ({ url, seconds, lowLatency }) => {
  if (!window.Hls || !Hls.isSupported()) return { error: 'hls.js not supported' };
  const video = document.createElement('video');
  video.muted = true;
  video.playsInline = true;
  document.body.append(video);
  const hls = new Hls({ lowLatencyMode: lowLatency, enableWorker: true });
  let error = null;
  hls.on(Hls.Events.ERROR, (_e, d) => { if (d.fatal) error = `${d.type}: ${d.details}`; });
  const t0 = performance.now();
  // The picture shown at the next frame callback, as a base64 JPEG, and when it was read.
  const grab = () => new Promise((resolve) => {
    video.requestVideoFrameCallback(() => {
      const canvas = document.createElement('canvas');
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      canvas.getContext('2d').drawImage(video, 0, 0);
      resolve({ ms: performance.now() - t0, at: Date.now(), jpeg: canvas.toDataURL('image/jpeg', 0.95).split(',')[1] });
    });
  });
  const first = grab();
  hls.loadSource(url);
  hls.attachMedia(video);
  video.play().catch(() => {});
  const shown = await Promise.race([first, new Promise((r) => setTimeout(() => r(null), 20_000))]);
  if (!shown) return { error: error || 'no frame within 20 s' };
  // Glass-to-glass every 250 ms: the pixel clock of the picture shown (the UI's reader).
  const { ClockReader } = await import('/pixel-clock.js');
  const reader = new ClockReader();
  const latencies = [];
  const sampler = setInterval(() => {
    const c = reader.read(video, video.videoWidth, video.videoHeight);
    if (c) latencies.push(Date.now() - c.ms);
  }, 250);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  clearInterval(sampler);
  const last = await grab();
  const q = video.getVideoPlaybackQuality();
  const out = {
    frames: q.totalVideoFrames, dropped: q.droppedVideoFrames,
    width: video.videoWidth, height: video.videoHeight, currentTime: video.currentTime,
    latency: hls.latency ?? null, firstFrameMs: shown.ms, firstFrame: shown.jpeg,
    lastFrame: last.jpeg, lastFrameAt: last.at, latencies, audioBytes: video.webkitAudioDecodedByteCount ?? null, error,
  };
  hls.destroy();
  return out;
}, { url: `${base}${playlist}`, seconds: Number(seconds), lowLatency: mode === 'lowlatency' });
console.log(JSON.stringify(result));
if (result.error) process.exitCode = 1;
await done();
