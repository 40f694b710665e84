// The web UI with a camera that sends audio: the card plays over WebRTC muted (so autoplay
// works) with the audio track in the same MediaStream as the video, a mute button shows
// (aria-label "Unmute"), a click unmutes the <video> and another mutes it again; the card's
// health list names the camera's audio codec. Then over LL-HLS (`?transport=hls`, the
// camera's audio as AAC in the parts): the mute button shows, a click unmutes, and Chromium
// decodes the audio (webkitAudioDecodedByteCount grows).
// Usage: node tests/browser/audio-ui.mjs BASE_URL STREAM_ID AUDIO_CODEC
// Prints one line per check and exits non-zero on the first failure.
import { startBrowserTest } from './chromium.mjs';
import assert from 'node:assert/strict';

const [base, stream, codec] = process.argv.slice(2);
assert.ok(base && stream && codec, 'usage: node audio-ui.mjs BASE_URL STREAM_ID AUDIO_CODEC');

const { browser, fail, done } = await startBrowserTest();
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${base}/`);
  const card = page.locator('article.card', { hasText: stream });
  await card.locator('.media-tag', { hasText: 'WebRTC' }).waitFor({ timeout: 15_000 });
  const video = await card.locator('video.media-video').elementHandle();
  await page.waitForFunction((el) => el.currentTime > 0.5, video, { timeout: 10_000 });
  const tracks = await video.evaluate((el) => ({
    muted: el.muted, audio: el.srcObject?.getAudioTracks().length, video: el.srcObject?.getVideoTracks().length,
  }));
  assert.deepEqual(tracks, { muted: true, audio: 1, video: 1 }, 'muted at start, audio and video in one stream');
  console.log('ok muted autoplay with the audio track');
  const mute = card.locator('button.media-mute');
  await mute.waitFor({ state: 'visible', timeout: 5_000 });
  assert.equal(await mute.getAttribute('aria-label'), 'Unmute');
  await mute.click();
  assert.equal(await video.evaluate((el) => el.muted), false, 'a click unmutes');
  assert.equal(await mute.getAttribute('aria-label'), 'Mute');
  assert.equal(await page.locator('.viewer:not([hidden])').count(), 0, 'the click does not open the full-screen viewer');
  await mute.click();
  assert.equal(await video.evaluate((el) => el.muted), true, 'a second click mutes');
  console.log('ok mute button');
  const audioItem = await card.locator('.health li', { hasText: 'audio' }).innerText();
  assert.ok(audioItem.toLowerCase().includes(codec), `health shows the codec: ${audioItem}`);
  console.log(`ok health: ${audioItem.replace(/\s+/g, ' ')}`);
  await page.close(); // one player at a time on a 2-core machine

  const hls = await browser.newPage();
  hls.on('pageerror', (e) => errors.push(String(e)));
  await hls.goto(`${base}/?transport=hls`);
  const hlsCard = hls.locator('article.card', { hasText: stream });
  await hlsCard.locator('.media-tag', { hasText: 'LL-HLS' }).waitFor({ timeout: 20_000 });
  const hlsVideo = await hlsCard.locator('video.media-video').elementHandle();
  await hls.waitForFunction((el) => el.currentTime > 0.5, hlsVideo, { timeout: 15_000 });
  const hlsMute = hlsCard.locator('button.media-mute');
  await hlsMute.waitFor({ state: 'visible', timeout: 5_000 });
  await hlsMute.click();
  assert.equal(await hlsVideo.evaluate((el) => el.muted), false, 'a click unmutes LL-HLS');
  const state = () => hlsVideo.evaluate((el) => ({
    audioBytes: el.webkitAudioDecodedByteCount ?? null, currentTime: el.currentTime, readyState: el.readyState,
    buffered: Array.from({ length: el.buffered.length }, (_, i) => [el.buffered.start(i), el.buffered.end(i)]),
  }));
  const before = (await state()).audioBytes ?? 0;
  try {
    await hls.waitForFunction((args) => (args.el.webkitAudioDecodedByteCount ?? 0) > args.before,
      { el: hlsVideo, before }, { timeout: 15_000 });
  } catch (e) {
    throw new Error(`no audio decoded over LL-HLS after unmuting (${before} bytes before): ${JSON.stringify(await state())}`);
  }
  console.log('ok LL-HLS mute button and audio decoded');
  assert.deepEqual(errors, [], 'no page errors');
} catch (e) {
  await fail(e.stack || String(e));
}
await done();
