// The jobs page (issue #15) in headless Debian Chromium (playwright-core): upload a video with
// two filters ticked in order, follow the job to `done`, see the contact-sheet preview, and
// download the result: an MP4 played in the page (frames decoded, the input's size).
// Usage: node tests/browser/jobs.mjs BASE_URL VIDEO WIDTH HEIGHT
// Prints one line per check and exits non-zero on the first failure.
import { startBrowserTest } from './chromium.mjs';
import assert from 'node:assert/strict';

const [base, video, width, height] = process.argv.slice(2);
assert.ok(base && video && width && height, 'usage: node jobs.mjs BASE_URL VIDEO WIDTH HEIGHT');

const { browser, fail, done } = await startBrowserTest(120_000);

try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 }, acceptDownloads: true });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${base}/`);
  await page.click('a.app-nav[href="jobs.html"]');
  await page.waitForURL(/jobs\.html$/);
  await page.setInputFiles('#job-video', video);
  await page.check('#filter-grayscale');
  await page.check('#filter-blur');
  if ((await page.textContent('#order-blur')) !== '2') await fail('the filters are numbered in the order ticked');
  await page.click('#job-submit');
  // Earlier jobs of this gateway are listed too: this one is named by its file and pipeline.
  const name = video.split('/').pop();
  const job = page.locator('article.job', { hasText: `${name} · grayscale → blur` });
  try {
    await job.waitFor({ state: 'attached', timeout: 20_000 });
  } catch {
    await fail(`no job "${name} · grayscale → blur" (the pipeline in the order ticked): ${await page.locator('article.job .job-title').allTextContents()}`);
  }
  console.log('ok the upload made a job (grayscale → blur)');
  await page.waitForFunction((n) => [...document.querySelectorAll('article.job[data-state="done"]')].some((j) => j.textContent.includes(n)), name, { timeout: 90_000 });
  console.log('ok the job ran to done');
  await page.waitForFunction((n) => {
    const row = [...document.querySelectorAll('article.job')].find((j) => j.textContent.includes(n));
    const img = row?.querySelector('.job-preview');
    return img && !img.hidden && img.complete && img.naturalWidth > 0;
  }, name, { timeout: 20_000 });
  console.log('ok the preview shows');

  const [download] = await Promise.all([page.waitForEvent('download'), job.locator('button.job-download').click()]);
  const fs = await import('node:fs');
  const file = fs.readFileSync(await download.path());
  if (file.length < 1000 || file.subarray(4, 8).toString() !== 'ftyp') await fail(`the download is not an MP4 (${file.length} bytes)`);
  console.log(`ok the result downloads (${file.length} bytes, MP4)`);
  // The result plays in Chromium at the input's size.
  const id = await job.getAttribute('data-id');
  const played = await page.evaluate(async (src) => {
    const v = document.createElement('video');
    v.muted = true;
    v.src = src;
    document.body.append(v);
    await v.play();
    // Up to 10 s for 20 frames (a loaded machine decodes slower than real time).
    for (let i = 0; i < 100 && v.getVideoPlaybackQuality().totalVideoFrames < 20; i++) {
      await new Promise((ok) => setTimeout(ok, 100));
    }
    return { frames: v.getVideoPlaybackQuality().totalVideoFrames, width: v.videoWidth, height: v.videoHeight };
  }, `api/jobs/${id}/result.mp4`);
  if (played.frames < 20 || played.width !== Number(width) || played.height !== Number(height)) await fail(`the result plays: ${JSON.stringify(played)}`);
  console.log(`ok the result plays (${played.frames} frames, ${played.width}x${played.height})`);
  if (errors.length) await fail(`page errors: ${errors.join('; ')}`);
  await done();
} catch (e) {
  await fail(String(e?.stack || e));
}
