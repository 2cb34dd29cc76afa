// The two-window page in Debian's Chromium, driven by playwright-core, against the
// real user-service and gateway binaries.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { launchBrowser, until } from './browser.mjs';
import { repoRoot, rest, startStack } from './stack.mjs';

const ARTIFACTS = join(process.env.CARGO_TARGET_DIR ?? join(repoRoot, 'target'), 'browser');

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

async function newUser(first = 'Ada', last = 'Lovelace') {
  const created = await rest(stack.base, 'POST', '/api/users/', { first_name: first, last_name: last });
  assert.equal(created.status, 201);
  return created.body;
}

/** Opens window `n` on user `id` and waits until it shows the user and is connected. */
async function openWindow(n, id, base = stack.base) {
  const context = await browser.newContext({ viewport: { width: 560, height: 520 } });
  const page = await context.newPage();
  const dialogs = [];
  page.on('dialog', async (dialog) => {
    dialogs.push(dialog.message());
    await dialog.dismiss();
  });
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  await page.goto(`${base}/window/${n}/?user=${id}`);
  await until(() => page.textContent('#status'), (s) => s === 'connected', 10000, `window ${n} status`);
  await until(() => page.textContent('#version'), (v) => /^\d+$/.test(v), 10000, `window ${n} loaded`);
  return { page, context, dialogs, errors };
}

test('typing in one window appears in the other within a second, both ways', async () => {
  const user = await newUser();
  const w1 = await openWindow(1, user.id);
  const w2 = await openWindow(2, user.id);

  await w1.page.fill('#first_name', 'Augusta');
  await until(() => w2.page.inputValue('#first_name'), (v) => v === 'Augusta', 1000, 'window 2 first_name');
  await w2.page.fill('#last_name', 'King');
  await until(() => w1.page.inputValue('#last_name'), (v) => v === 'King', 1000, 'window 1 last_name');

  const stored = await rest(stack.base, 'GET', `/api/users/${user.id}/`);
  assert.equal(stored.body.first_name, 'Augusta');
  assert.equal(stored.body.last_name, 'King');
  assert.deepEqual([...w1.errors, ...w2.errors], []);

  // The two windows side by side, for the README.
  mkdirSync(ARTIFACTS, { recursive: true });
  const shots = await Promise.all([w1.page.screenshot(), w2.page.screenshot()]);
  const board = await browser.newPage({ viewport: { width: 1160, height: 540 } });
  const img = (png) => `<img alt="" style="width:560px;height:520px;flex:none" src="data:image/png;base64,${png.toString('base64')}">`;
  await board.setContent(
    `<body style="margin:0;padding:10px;display:flex;gap:20px;background:#555">${img(shots[0])}${img(shots[1])}</body>`,
  );
  await board.screenshot({ path: join(ARTIFACTS, 'two-windows.png') });
  await Promise.all([board.close(), w1.context.close(), w2.context.close()]);
});

test('the read-only field cannot be typed into', async () => {
  const user = await newUser();
  const w1 = await openWindow(1, user.id);
  const w2 = await openWindow(2, user.id);

  await w1.page.focus('#last_name');
  await w1.page.keyboard.type('XYZ');
  await w2.page.focus('#first_name');
  await w2.page.keyboard.type('XYZ');

  assert.equal(await w1.page.inputValue('#last_name'), 'Lovelace');
  assert.equal(await w2.page.inputValue('#first_name'), 'Ada');
  assert.equal(await w1.page.getAttribute('#last_name', 'aria-readonly'), 'true');
  assert.equal(await w1.page.isEditable('#last_name'), false);
  assert.equal(await w1.page.isEditable('#first_name'), true);
  await Promise.all([w1.context.close(), w2.context.close()]);
});

test('a long sentence typed quickly ends exactly as typed in both windows and the database', async () => {
  const user = await newUser('A', 'B');
  const w1 = await openWindow(1, user.id);
  const w2 = await openWindow(2, user.id);
  const sentence = 'The quick brown fox jumps over the lazy dog, then types it all again';

  await w1.page.fill('#first_name', '');
  await w1.page.type('#first_name', sentence, { delay: 15 });

  await until(() => w2.page.inputValue('#first_name'), (v) => v === sentence, 5000, 'window 2 sentence');
  assert.equal(await w1.page.inputValue('#first_name'), sentence);
  const stored = await until(
    async () => (await rest(stack.base, 'GET', `/api/users/${user.id}/`)).body.first_name,
    (v) => v === sentence, 5000, 'stored sentence',
  );
  assert.equal(stored, sentence);
  await Promise.all([w1.context.close(), w2.context.close()]);
});

test('a fetch answered before a change never hides the change when it arrives late', async () => {
  const user = await newUser();
  const context = await browser.newContext({ viewport: { width: 560, height: 520 } });
  const page = await context.newPage();
  // The page's GETs of the user are answered at once but delivered only later:
  // they carry the user as it was before the change made below.
  let deliver;
  const delivered = new Promise((resolve) => { deliver = resolve; });
  let gets = 0;
  await page.route(`**/api/users/${user.id}/`, async (route) => {
    if (route.request().method() !== 'GET') return route.continue();
    gets += 1;
    const response = await route.fetch();
    await delivered;
    return route.fulfill({ response });
  });
  await page.goto(`${stack.base}/window/2/?user=${user.id}`);
  await until(() => page.textContent('#status'), (s) => s === 'connected', 10000, 'connected');
  await until(() => Promise.resolve(gets), (n) => n >= 1, 5000, 'the page fetched the user');

  const patched = await rest(stack.base, 'PATCH', `/api/users/${user.id}/`, { first_name: 'Later' });
  assert.equal(patched.status, 200);
  await until(() => page.inputValue('#first_name'), (v) => v === 'Later', 5000, 'the change, live');

  deliver();
  await page.waitForTimeout(500);
  assert.equal(await page.inputValue('#first_name'), 'Later', 'the late, older fetch is ignored');
  assert.equal(await page.textContent('#version'), String(patched.body.version));
  await context.close();
});

test('markup in a name shows as text and runs nothing', async () => {
  const user = await newUser();
  const w2 = await openWindow(2, user.id);
  const markup = '<img src=x onerror=alert(1)>';

  const patched = await rest(stack.base, 'PATCH', `/api/users/${user.id}/`, { first_name: markup });
  assert.equal(patched.status, 200);

  await until(() => w2.page.inputValue('#first_name'), (v) => v === markup, 2000, 'markup as text');
  await w2.page.reload();
  await until(() => w2.page.inputValue('#first_name'), (v) => v === markup, 5000, 'markup after reload');
  assert.equal(await w2.page.locator('img').count(), 0);
  assert.deepEqual(w2.dialogs, []);
  await w2.context.close();
});

test('a refused value shows the server message beside the field and keeps the text', async () => {
  const user = await newUser();
  const w1 = await openWindow(1, user.id);
  const tooLong = 'x'.repeat(101);

  await w1.page.fill('#first_name', tooLong);

  const message = await until(() => w1.page.textContent('#first_name-error'), (t) => t && t.length > 0, 3000, 'error');
  assert.equal(message, 'Ensure this field has no more than 100 characters.');
  assert.equal(await w1.page.inputValue('#first_name'), tooLong);
  assert.equal(await w1.page.getAttribute('#first_name', 'aria-invalid'), 'true');
  const stored = await rest(stack.base, 'GET', `/api/users/${user.id}/`);
  assert.equal(stored.body.first_name, 'Ada');
  await w1.context.close();
});

test('a missing user is offered for creation, and the new user can be edited', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${stack.base}/window/1/?user=987654`);

  await until(() => page.isVisible('#create'), (v) => v, 5000, 'create offer');
  assert.match(await page.textContent('#missing-text'), /987654 does not exist/);
  await page.click('#create');
  await until(() => page.isEditable('#first_name'), (v) => v, 5000, 'editor after create');
  const id = Number(new URL(page.url()).searchParams.get('user'));
  assert.ok(id > 0 && id !== 987654);
  await page.fill('#first_name', 'Created');
  await until(
    async () => (await rest(stack.base, 'GET', `/api/users/${id}/`)).body?.first_name,
    (v) => v === 'Created', 3000, 'created user edited',
  );
  await context.close();
});

test('a gateway restart shows reconnecting, then connected, and a change made meanwhile appears', async () => {
  const spare = await stack.startGateway();
  const user = await newUser();
  const w2 = await openWindow(2, user.id);
  const port = new URL(stack.base).port;

  await stack.stopGateway(stack.gateway);
  await until(() => w2.page.textContent('#status'), (s) => /reconnecting/.test(s), 5000, 'reconnecting');
  const patched = await rest(spare.base, 'PATCH', `/api/users/${user.id}/`, { first_name: 'DuringOutage' });
  assert.equal(patched.status, 200);
  stack.gateway = await stack.startGateway(`127.0.0.1:${port}`);

  await until(() => w2.page.textContent('#status'), (s) => s === 'connected', 15000, 'connected again');
  await until(() => w2.page.inputValue('#first_name'), (v) => v === 'DuringOutage', 5000, 'missed change');
  await w2.context.close();
  await stack.stopGateway(spare);
});
