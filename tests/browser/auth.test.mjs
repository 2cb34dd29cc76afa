// The two-window page with authentication on: each window gets a token limited to
// its own field (from ?token=, kept in sessionStorage), edits it, and sees the
// other's change live; the server refuses a write outside the token's field.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';

import { launchBrowser, until } from './browser.mjs';
import { mintToken, rest, startStack } from './stack.mjs';

const secret = randomBytes(32).toString('hex');

let stack;
let browser;

before(async () => {
  stack = await startStack({ auth: { secret } });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

async function openWindow(n, id, token) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${stack.base}/window/${n}/?user=${id}&token=${token}`);
  await until(() => page.textContent('#status'), (s) => s === 'connected', 10000, `window ${n} status`);
  await until(() => page.textContent('#version'), (v) => /^\d+$/.test(v), 10000, `window ${n} loaded`);
  assert.ok(!page.url().includes('token='), 'the token leaves the address bar');
  return { page, context };
}

test('each window edits its own field with a field-limited token', async () => {
  const admin = mintToken(secret, ['--sub', 'admin', '--ttl', '10m']);
  const first = mintToken(secret, ['--sub', 'window-1', '--fields', 'first_name', '--ttl', '10m']);
  const last = mintToken(secret, ['--sub', 'window-2', '--fields', 'last_name', '--ttl', '10m']);
  assert.equal((await rest(stack.base, 'GET', '/api/users/')).status, 401);
  const created = await rest(stack.base, 'POST', '/api/users/', { first_name: 'Ada', last_name: 'Lovelace' }, admin);
  assert.equal(created.status, 201);
  const id = created.body.id;

  const w1 = await openWindow(1, id, first);
  const w2 = await openWindow(2, id, last);
  await w1.page.fill('#first_name', 'Augusta');
  await until(() => w2.page.inputValue('#first_name'), (v) => v === 'Augusta', 2000, 'window 2 first_name');
  await w2.page.fill('#last_name', 'King');
  await until(() => w1.page.inputValue('#last_name'), (v) => v === 'King', 2000, 'window 1 last_name');

  const refused = await rest(stack.base, 'PATCH', `/api/users/${id}/`, { last_name: 'X' }, first);
  assert.equal(refused.status, 403);
  const stored = await rest(stack.base, 'GET', `/api/users/${id}/`, undefined, admin);
  assert.equal(stored.body.first_name, 'Augusta');
  assert.equal(stored.body.last_name, 'King');
  await Promise.all([w1.context.close(), w2.context.close()]);
});
