// Starts Debian's Chromium headless for the browser tests (playwright-core downloads no
// browser): CHROMIUM overrides the path. Autoplay is allowed so muted live video plays
// without a gesture; playwright gives each launch a fresh temporary profile.
import { chromium } from 'playwright-core';

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required'],
  });
}
