// The test camera's shapes found in a picture shown by the page, for the browser tests that
// score drawn boxes against the picture under them (overlay-match.mjs, playback-boxes.mjs).
// The finder runs inside the page (page.evaluate cannot import): addShapeFinder(page) defines
// `window.sightlineShapes = {shapesIn(source), iou(a, b)}` in every document the page loads.
//   shapesIn(source): each visible shape's box in a <video>/<img>/<canvas> (0..1 of the
//     picture) by its colour, {circle, square, bar}; a shape partly hidden is left out.
//   iou(a, b): intersection over union of two {x, y, w, h} boxes.

/** Runs in the page. */
function defineShapeFinder() {
  // The test camera's shapes (testcam/src/scene.rs): colour test and size in units of
  // min(width, height) / 6.
  const SHAPES = {
    circle: { is: (r, g, b) => r > 150 && g < 110 && b < 110, w: 1, h: 1 },
    square: { is: (r, g, b) => g > 140 && r < 120 && b < 130, w: 1, h: 1 },
    bar: { is: (r, g, b) => r > 170 && g > 140 && b < 120, w: 2, h: 1 },
  };
  const W = 640;
  const H = 360;
  const work = document.createElement('canvas');
  work.width = W;
  work.height = H;
  const ctx = work.getContext('2d', { willReadFrequently: true });

  /** Each shape's box in `source` (0..1 of the picture), or none where it is hidden. */
  function shapesIn(source) {
    ctx.drawImage(source, 0, 0, W, H);
    const data = ctx.getImageData(0, 0, W, H).data;
    const unit = Math.min(W, H) / 6;
    const found = {};
    for (const [label, s] of Object.entries(SHAPES)) {
      const cols = new Uint16Array(W);
      const rows = new Uint16Array(H);
      for (let y = 0; y < H; y += 1) {
        for (let x = 0; x < W; x += 1) {
          const i = (y * W + x) * 4;
          if (s.is(data[i], data[i + 1], data[i + 2])) {
            cols[x] += 1;
            rows[y] += 1;
          }
        }
      }
      const span = (counts) => {
        let lo = -1;
        let hi = -1;
        counts.forEach((c, i) => {
          if (c >= 3) {
            if (lo < 0) lo = i;
            hi = i;
          }
        });
        return lo < 0 ? null : [lo, hi + 1];
      };
      const xs = span(cols);
      const ys = span(rows);
      if (!xs || !ys) continue;
      const [w, h] = [xs[1] - xs[0], ys[1] - ys[0]];
      // Partly hidden behind another shape: not a reference.
      if (Math.abs(w - s.w * unit) > 0.08 * s.w * unit || Math.abs(h - s.h * unit) > 0.08 * s.h * unit) continue;
      found[label] = { x: xs[0] / W, y: ys[0] / H, w: w / W, h: h / H };
    }
    return found;
  }

  const iou = (a, b) => {
    const ix = Math.max(0, Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x));
    const iy = Math.max(0, Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y));
    const inter = ix * iy;
    return inter / (a.w * a.h + b.w * b.h - inter);
  };
  window.sightlineShapes = { shapesIn, iou };
}

/** Defines `window.sightlineShapes` in every document `page` loads (call before goto). */
export async function addShapeFinder(page) {
  await page.addInitScript(defineShapeFinder);
}
