// The start page in Debian's Chromium against the real binaries: its two frames
// are the real window pages, live (framing allowed for this origin only, under
// the strict CSP), and follow the user picked.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { launchBrowser, until } from './browser.mjs';
import { rest, startStack } from './stack.mjs';

let stack;
let browser;

before(async () => {
  stack = await startStack();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

async function newUser(first, last) {
  const created = await rest(stack.base, 'POST', '/api/users/', { first_name: first, last_name: last });
  assert.equal(created.status, 201);
  return created.body;
}

/** The start page on user `id`, its console errors (the frames' too) collected. */
async function openStart(id) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(message.text());
  });
  await page.goto(`${stack.base}/?user=${id}`);
  const frames = [page.frameLocator('#frame1'), page.frameLocator('#frame2')];
  for (const [i, frame] of frames.entries()) {
    await until(() => frame.locator('#status').textContent(), (s) => s === 'connected', 10000, `frame ${i + 1} status`);
    await until(() => frame.locator('#version').textContent(), (v) => /^\d+$/.test(v), 10000, `frame ${i + 1} loaded`);
  }
  return { page, context, frames, errors };
}

test('typing in the first frame shows in the second, and back, through the real feed', async () => {
  const user = await newUser('Ada', 'Lovelace');
  const { context, frames: [frame1, frame2], errors } = await openStart(user.id);
  assert.equal(await frame2.locator('#first_name').inputValue(), 'Ada');

  await frame1.locator('#first_name').fill('Augusta');
  await until(() => frame2.locator('#first_name').inputValue(), (v) => v === 'Augusta', 2000, 'frame 2 first_name');
  await frame2.locator('#last_name').fill('King');
  await until(() => frame1.locator('#last_name').inputValue(), (v) => v === 'King', 2000, 'frame 1 last_name');

  const stored = await rest(stack.base, 'GET', `/api/users/${user.id}/`);
  assert.equal(stored.body.first_name, 'Augusta');
  assert.equal(stored.body.last_name, 'King');
  // Each frame is the real window, with its own field editable and the other not.
  assert.equal(await frame1.locator('#last_name').isEditable(), false);
  assert.equal(await frame2.locator('#first_name').isEditable(), false);
  // No frame refused by a header, no CSP violation, no script error.
  assert.deepEqual(errors, []);
  await context.close();
});

test('picking another user moves both frames and both links to it', async () => {
  const first = await newUser('Grace', 'Hopper');
  const second = await newUser('Alan', 'Turing');
  const { page, context, frames: [frame1, frame2], errors } = await openStart(first.id);
  assert.equal(await frame1.locator('#first_name').inputValue(), 'Grace');

  await page.fill('#user', String(second.id));
  await page.press('#user', 'Enter');

  await until(() => frame1.locator('#first_name').inputValue(), (v) => v === 'Alan', 5000, 'frame 1 on the new user');
  await until(() => frame2.locator('#last_name').inputValue(), (v) => v === 'Turing', 5000, 'frame 2 on the new user');
  assert.equal(await page.getAttribute('#link1', 'href'), `/window/1/?user=${second.id}`);
  assert.equal(await page.getAttribute('#link2', 'href'), `/window/2/?user=${second.id}`);
  assert.equal(new URL(page.url()).searchParams.get('user'), String(second.id), 'a reload keeps the user');
  assert.deepEqual(errors, []);
  await context.close();
});

test('only the window pages may be framed, and only by this origin', async () => {
  const windowPage = await fetch(`${stack.base}/window/1/`);
  assert.equal(windowPage.headers.get('x-frame-options'), 'SAMEORIGIN');
  assert.match(windowPage.headers.get('content-security-policy'), /frame-ancestors 'self'$/);
  const start = await fetch(`${stack.base}/`);
  assert.equal(start.headers.get('x-frame-options'), 'DENY');
  assert.match(start.headers.get('content-security-policy'), /frame-src 'self';.*frame-ancestors 'none'$/);
  for (const response of [windowPage, start]) {
    assert.doesNotMatch(response.headers.get('content-security-policy'), /unsafe|\*/);
  }
});
