// Takes docs/two-windows.png: the start page with both windows live in its frames,
// against the real binaries (a fresh stack, as the browser tests start it) in
// Debian's Chromium. Run from tests/browser after building the workspace:
//
//   npm run screenshot            # writes ../../docs/two-windows.png
//   npm run screenshot -- out.png # writes out.png instead
//
// COLOR_SCHEME=dark takes the dark look instead of the light one; BASE_URL (e.g.
// http://127.0.0.1:8080, from ./scripts/run) uses a running stack instead of
// starting one.

import { join, resolve } from 'node:path';

import { launchBrowser, until } from './browser.mjs';
import { repoRoot, rest, startStack } from './stack.mjs';

const out = resolve(process.argv[2] ?? join(repoRoot, 'docs', 'two-windows.png'));
const colorScheme = process.env.COLOR_SCHEME === 'dark' ? 'dark' : 'light';

const stack = process.env.BASE_URL
  ? { base: process.env.BASE_URL.replace(/\/$/, ''), stop: async () => {} }
  : await startStack();
const browser = await launchBrowser();
try {
  const created = await rest(stack.base, 'POST', '/api/users/', { first_name: 'Ada', last_name: 'Lovelace' });
  if (created.status !== 201) throw new Error(`creating the user: ${created.status}`);
  const id = created.body.id;

  const context = await browser.newContext({ viewport: { width: 1200, height: 800 }, colorScheme });
  const page = await context.newPage();
  await page.goto(`${stack.base}/?user=${id}`);
  const [frame1, frame2] = [page.frameLocator('#frame1'), page.frameLocator('#frame2')];
  for (const frame of [frame1, frame2]) {
    await until(() => frame.locator('#status').textContent(), (s) => s === 'connected', 10000, 'connected');
  }

  // One edit from each window, each shown live in the other; the caret left in window 1.
  await frame2.locator('#last_name').fill('King');
  await until(() => frame1.locator('#last_name').inputValue(), (v) => v === 'King', 2000, 'last name in window 1');
  await frame1.locator('#first_name').fill('Augusta Ada');
  await until(() => frame2.locator('#first_name').inputValue(), (v) => v === 'Augusta Ada', 2000, 'first name in window 2');
  await until(() => frame1.locator('#saved').textContent(), (s) => s === 'saved', 2000, 'saved');

  await page.screenshot({ path: out, fullPage: true });
  await context.close();
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  await stack.stop();
}
