// Unit tests of the WebRTC playout delay's decisions (static/playout-delay.js), in Node:
//   node --test tests/js/*.test.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PlayoutDelay, MAX_PLAYOUT_DELAY_MS } from '../../static/playout-delay.js';

/**
 * Feeds `n` messages 100 ms apart from `t`, with margin `ms` (a number, or a function of the
 * message's index); the last target set (or null) and the time after.
 */
function feed(p, n, ms, t, opts = {}) {
  let set = null;
  for (let i = 0; i < n; i += 1) {
    const r = p.note(typeof ms === 'function' ? ms(i) : ms, t, opts);
    if (r !== null) set = r;
    t += 100;
  }
  return { set, t };
}

test('late messages raise the delay by their lateness plus a safety margin, at most 500 ms', () => {
  const p = new PlayoutDelay();
  p.reset(0);
  assert.equal(p.raise(60, 0), 80);
  assert.equal(p.ms, 80);
  // Lateness measured while the browser moves to 80 ms is the old delay's: ignored.
  assert.equal(p.raise(60, 1000), null);
  // Still late once settled: raised on top of what is in effect.
  assert.equal(p.raise(30, 3500), 130);
  assert.equal(p.raise(10_000, 7000), MAX_PLAYOUT_DELAY_MS);
  assert.equal(p.raise(10, 11_000), null, 'at the ceiling');
});

test('a delay messages no longer need is given back, judged after the browser settled', () => {
  const p = new PlayoutDelay();
  p.reset(0);
  assert.equal(p.raise(180, 0), 200);
  // Margins before the browser settled on 200 ms are not judged.
  let { set, t } = feed(p, 29, 150, 100);
  assert.equal(set, null);
  // Now the model is fast: messages come 150 ms before their frame; 20 ms of it kept: down
  // by 130 ms after a whole window of 50.
  ({ set, t } = feed(p, 49, 150, t));
  assert.equal(set, null, 'judged on a whole window');
  assert.equal(p.note(150, t), 70);
  // Settling again, then 80 ms of margin: 60 spare leaves 10 ms, and a target under 20 ms
  // is not worth keeping: down to the browser's own choice.
  ({ set, t } = feed(p, 30 + 50, 80, t + 100));
  assert.equal(set, 0);
  assert.equal(p.ms, 0);
  // At 0 there is nothing to give back.
  ({ set } = feed(p, 200, 400, t));
  assert.equal(set, null);
});

test('a few late messages in the window keep the delay (the 10th percentile is judged)', () => {
  const p = new PlayoutDelay();
  p.reset(0);
  p.raise(100, 0);
  // One message in five comes after its frame was displayed.
  assert.equal(feed(p, 150, (i) => (i % 5 === 0 ? -5 : 200), 4000).set, null);
  assert.equal(p.ms, 120);
});

test('small headroom is kept rather than churning the browser', () => {
  const p = new PlayoutDelay();
  p.reset(0);
  p.raise(100, 0);
  // 40 ms early: 20 ms kept, 20 ms spare: a step of 20.
  assert.equal(feed(p, 50, 40, 4000).set, 100);
  // 35 ms early: 15 ms spare, under the smallest step.
  assert.equal(feed(p, 200, 35, 8000).set, null);
});

test('a new session starts from the browser\'s own delay; nonsense is ignored', () => {
  const p = new PlayoutDelay();
  p.reset(0);
  p.raise(200, 0);
  p.reset(5000);
  assert.equal(p.ms, 0);
  assert.equal(p.raise(NaN, 5000), null);
  assert.equal(p.note(NaN, 9000), null);
  assert.equal(p.raise(40, 5000), 60, 'raised at once in a new session');
});

test('without tracking the lowest margin is judged (any late message would raise it again)', () => {
  const p = new PlayoutDelay();
  p.reset(0);
  p.raise(100, 0);
  // 200 ms early but for two messages that came just in time: 5 ms spare at the lowest.
  const margins = (i) => (i % 25 === 0 ? 25 : 200);
  const { set, t } = feed(p, 50, margins, 4000, { strict: true });
  assert.equal(set, null);
  // The same window judged by its 10th percentile steps down.
  assert.equal(feed(p, 50, margins, t).set, 0);
});
