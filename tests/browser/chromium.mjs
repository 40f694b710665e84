// Starts Debian's Chromium headless for the browser tests (playwright-core downloads no
// browser): CHROMIUM overrides the path. Autoplay is allowed so muted live video plays
// without a gesture; playwright gives each launch a fresh temporary profile.
import { chromium } from 'playwright-core';

/**
 * Chromium for a test script that prints one line per check: `fail(msg)` prints
 * `FAIL msg`, closes the browser and exits 1; so does running past `limitMs`.
 * Call `done()` at the end.
 */
export async function startBrowserTest(limitMs = 60_000) {
  const browser = await launchChromium();
  const fail = async (msg) => {
    console.error(`FAIL ${msg}`);
    await browser.close();
    process.exit(1);
  };
  const timer = setTimeout(() => fail(`browser test took over ${limitMs / 1000} s`), limitMs);
  const done = async () => {
    clearTimeout(timer);
    await browser.close();
  };
  return { browser, fail, done };
}

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required'],
  });
}
