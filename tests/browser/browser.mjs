// Debian's Chromium, launched the one way this machine allows (never a downloaded
// browser; no background networking), and the polling helper both suites use.

import assert from 'node:assert/strict';

import { chromium } from 'playwright-core';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** Starts headless Chromium from `CHROMIUM_PATH` (default /usr/bin/chromium). */
export function launchBrowser() {
  return chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
}

/** Polls `read` until `accept(value)`, or fails after `ms` with the last value. */
export async function until(read, accept, ms, what) {
  const deadline = Date.now() + ms;
  let value;
  for (;;) {
    value = await read();
    if (accept(value)) return value;
    if (Date.now() > deadline) assert.fail(`${what}: still ${JSON.stringify(value)} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
