// Two detection models on one stream in the web UI, in headless Debian Chromium
// (playwright-core). The gateway serves the test camera (`testcam`) with two models of the
// same shape detector: "shapes" at 10 fps and "shapes-slow" at 2 fps, so both find the same
// shapes. For each transport (WebRTC, the default player, then SSE):
//   1. the card shows one checkbox per model, named by the model (its label: name and fps),
//      both ticked;
//   2. boxes of both models are drawn (the overlay's `sightlineDrawn.boxes[i].model`), and
//      the slow model's do not flicker: sampled every ~50 ms over 4 s, they are on screen in
//      at least 70 % of the samples that show the fast model's (each model keeps its boxes
//      for its own detection interval, not the fast model's);
//   3. unticking "shapes-slow" hides its boxes at once: none in any sample over 2 s while
//      "shapes" boxes still are, and after a reload the box stays unticked (localStorage)
//      and its boxes hidden;
//   4. ticking it again brings them back within 2 s.
// Usage: node tests/browser/models.mjs BASE_URL [TRANSPORTS=webrtc,sse]
// Prints one line per check and exits non-zero on the first failure.
import { startBrowserTest } from './chromium.mjs';
import assert from 'node:assert/strict';

const [base, transportsArg] = process.argv.slice(2);
assert.ok(base, 'usage: node models.mjs BASE_URL [TRANSPORTS=webrtc,sse]');
const transports = (transportsArg || 'webrtc,sse').split(',');
const STREAM = 'testcam';
const FAST = 'shapes';
const SLOW = 'shapes-slow';
/** Share of the samples showing the fast model's boxes that must show the slow model's too. */
const MIN_SLOW_SHARE = 0.7;

const { browser, fail, done } = await startBrowserTest(80_000 * transports.length);

const cardOf = (page) => page.locator('article.card', { hasText: STREAM });

/** The checkbox of model `name`, found by its role and accessible name ("name 10 fps"). */
function toggleOf(card, name) {
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return card.getByRole('checkbox', { name: new RegExp(`^${escaped}(?![\\w-])`) });
}

/** Playing, with boxes drawn on their own frame, and the slow model's drawn a few times. */
async function waitForBoxes(page, what) {
  await cardOf(page).locator('canvas.media-overlay').waitFor({ timeout: 10_000 });
  await page.waitForFunction(({ stream, slow }) => {
    const card = [...document.querySelectorAll('article.card')].find((c) => c.textContent.includes(stream));
    const el = card?.querySelector('canvas.media-overlay');
    if (!el || Number(el.dataset.exact || 0) < 5 || Number(el.dataset.boxes || 0) === 0) return false;
    // Three of its messages drawn: its tracks have velocities, its interval is known.
    const m = el.sightlineDrawn?.models?.[slow];
    return Boolean(m) && (m.hidden || m.exact + m.late >= 3);
  }, { stream: STREAM, slow: SLOW }, { timeout: 30_000 }).catch((e) => {
    throw new Error(`${what}: no boxes drawn (${e.message})`);
  });
}

/** Runs in the page: which models have boxes drawn, every ~50 ms for `ms`. */
function sample(page, ms) {
  return page.evaluate(async ({ stream, ms }) => {
    const card = [...document.querySelectorAll('article.card')].find((c) => c.textContent.includes(stream));
    const overlay = card.querySelector('canvas.media-overlay');
    const samples = [];
    const started = performance.now();
    while (performance.now() - started < ms) {
      await new Promise((r) => setTimeout(r, 50));
      const boxes = overlay.sightlineDrawn?.boxes ?? [];
      samples.push({ models: [...new Set(boxes.map((b) => b.model))], attr: overlay.dataset.models ?? '' });
    }
    return samples;
  }, { stream: STREAM, ms });
}

/** Counts of samples with the fast model's boxes, the slow model's, and both. */
function tally(samples) {
  const has = (s, m) => s.models.includes(m);
  return {
    samples: samples.length,
    fast: samples.filter((s) => has(s, FAST)).length,
    slow: samples.filter((s) => has(s, SLOW)).length,
    both: samples.filter((s) => has(s, FAST) && has(s, SLOW)).length,
    attrBoth: samples.filter((s) => s.attr.split(',').sort().join(',') === [FAST, SLOW].sort().join(',')).length,
    // One letter per sample: B both, F fast only, S slow only, - neither.
    pattern: samples.map((s) => (has(s, FAST) ? (has(s, SLOW) ? 'B' : 'F') : (has(s, SLOW) ? 'S' : '-'))).join(''),
  };
}

/** The card's model checkboxes: [{model, checked, label}] in order. */
function togglesOf(card) {
  return card.locator('input[type=checkbox][data-model]').evaluateAll((els) => els.map((e) => ({
    model: e.dataset.model, checked: e.checked, label: e.labels?.[0]?.textContent.trim() ?? '',
  })));
}

async function checkTransport(page, query, what) {
  await page.goto(`${base}/${query}`);
  const card = cardOf(page);

  // 1. One checkbox per model, both ticked.
  await toggleOf(card, SLOW).waitFor({ timeout: 10_000 }).catch((e) => {
    throw new Error(`${what}: no checkbox named "${SLOW}" on the card (${e.message})`);
  });
  const toggles = await togglesOf(card);
  assert.deepEqual(toggles.map((t) => t.model), [FAST, SLOW], `${what}: one toggle per model ${JSON.stringify(toggles)}`);
  assert.ok(toggles.every((t) => t.checked), `${what}: all models shown at first ${JSON.stringify(toggles)}`);
  assert.ok(toggles.every((t) => t.label.startsWith(t.model) && /\bfps\b/.test(t.label)),
    `${what}: each toggle's label names its model and rate ${JSON.stringify(toggles)}`);
  assert.ok(await toggleOf(card, FAST).isChecked(), `${what}: "${FAST}" found by its accessible name`);
  console.log(`ok ${what}: the card shows the toggles ${JSON.stringify(toggles)}`);

  // 2. Both models' boxes, the slow model's without flicker.
  await waitForBoxes(page, what);
  const tag = await card.locator('.media-tag').textContent();
  assert.equal(tag, what === 'webrtc' ? 'WebRTC' : 'SSE', `${what}: the card plays over ${what}`);
  const both = tally(await sample(page, 4000));
  assert.ok(both.fast >= both.samples / 2, `${what}: "${FAST}" boxes drawn in most samples ${JSON.stringify(both)}`);
  assert.ok(both.slow > 0, `${what}: "${SLOW}" boxes drawn ${JSON.stringify(both)}`);
  assert.ok(both.attrBoth > 0, `${what}: data-models lists both models ${JSON.stringify(both)}`);
  const share = Math.round((100 * both.both) / both.fast);
  assert.ok(both.both >= MIN_SLOW_SHARE * both.fast, `${what}: "${SLOW}" boxes stay between its detections: `
    + `in ${share} % of the samples with "${FAST}" boxes, want >= ${MIN_SLOW_SHARE * 100} % ${JSON.stringify(both)}`);
  console.log(`ok ${what}: both models' boxes drawn, "${SLOW}" in ${share} % of the samples with "${FAST}" ${JSON.stringify(both)}`);

  // 3. Unticked: hidden at once, and still after a reload.
  await toggleOf(card, SLOW).uncheck();
  const hidden = tally(await sample(page, 2000));
  assert.equal(hidden.slow, 0, `${what}: no "${SLOW}" box drawn once unticked ${JSON.stringify(hidden)}`);
  assert.ok(hidden.fast >= hidden.samples / 2, `${what}: "${FAST}" boxes still drawn ${JSON.stringify(hidden)}`);
  console.log(`ok ${what}: "${SLOW}" unticked: none of its boxes in ${hidden.samples} samples, "${FAST}" in ${hidden.fast}`);
  await page.reload();
  await toggleOf(card, SLOW).waitFor({ timeout: 10_000 });
  const reloaded = await togglesOf(card);
  assert.deepEqual(reloaded.map((t) => [t.model, t.checked]), [[FAST, true], [SLOW, false]],
    `${what}: the choice survives a reload ${JSON.stringify(reloaded)}`);
  await waitForBoxes(page, `${what} after a reload`);
  const still = tally(await sample(page, 1000));
  assert.equal(still.slow, 0, `${what}: no "${SLOW}" box drawn after a reload ${JSON.stringify(still)}`);
  assert.ok(still.fast > 0, `${what}: "${FAST}" boxes drawn after a reload ${JSON.stringify(still)}`);
  console.log(`ok ${what}: after a reload "${SLOW}" stays unticked and hidden ${JSON.stringify(still)}`);

  // 4. Ticked again: back within 2 s.
  const ticked = Date.now();
  await toggleOf(card, SLOW).check();
  await page.waitForFunction(({ stream, slow }) => {
    const card = [...document.querySelectorAll('article.card')].find((c) => c.textContent.includes(stream));
    const boxes = card?.querySelector('canvas.media-overlay')?.sightlineDrawn?.boxes ?? [];
    return boxes.some((b) => b.model === slow);
  }, { stream: STREAM, slow: SLOW }, { timeout: 2000, polling: 50 }).catch(() => {
    throw new Error(`${what}: "${SLOW}" boxes not back within 2 s of ticking it again`);
  });
  console.log(`ok ${what}: "${SLOW}" ticked again: its boxes back after ${Date.now() - ticked} ms`);
}

try {
  const errors = [];
  for (const what of transports) {
    assert.ok(['webrtc', 'sse'].includes(what), `unknown transport ${what}`);
    // A fresh context per transport: its own localStorage, so the models start ticked.
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('pageerror', (e) => errors.push(String(e)));
    await checkTransport(page, what === 'webrtc' ? '' : `?transport=${what}`, what);
    await page.close();
  }
  assert.deepEqual(errors, [], 'no page errors');
} catch (e) {
  await fail(e.stack || String(e));
}
await done();
