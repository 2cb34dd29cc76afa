// Presence on the page: two windows of one user on two different gateways that
// share a Redis. Each window follows its user only (?users=), sees the other
// window, and sees it typing while it types; a closed window leaves at once.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { launchBrowser, until } from './browser.mjs';
import { rest, startStack } from './stack.mjs';

let stack;
let second;
let browser;

before(async () => {
  stack = await startStack({ redis: true });
  second = await stack.startGateway();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

/** Opens window `n` on user `id` through `base`, recording its sockets' URLs and frames. */
async function openWindow(n, id, base) {
  const context = await browser.newContext({ viewport: { width: 560, height: 560 } });
  const page = await context.newPage();
  const sockets = [];
  const frames = [];
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  page.on('websocket', (ws) => {
    sockets.push(ws.url());
    ws.on('framereceived', (frame) => {
      try { frames.push(JSON.parse(frame.payload)); } catch { /* not JSON */ }
    });
  });
  await page.goto(`${base}/window/${n}/?user=${id}`);
  await until(() => page.textContent('#status'), (s) => s === 'connected', 10000, `window ${n} status`);
  await until(() => page.textContent('#version'), (v) => /^\d+$/.test(v), 10000, `window ${n} loaded`);
  return { page, context, sockets, frames, errors };
}

const presenceText = (w) => w.page.evaluate(() => {
  const element = document.getElementById('presence');
  return element.hidden ? '' : element.textContent;
});

test('two windows on two gateways see each other, and each other typing', async () => {
  const created = await rest(stack.base, 'POST', '/api/users/', { first_name: 'Ada', last_name: 'Lovelace' });
  const other = await rest(stack.base, 'POST', '/api/users/', { first_name: 'Grace', last_name: 'Hopper' });
  const id = created.body.id;
  const w1 = await openWindow(1, id, stack.base);
  const w2 = await openWindow(2, id, second.base);

  for (const w of [w1, w2]) {
    assert.ok(w.sockets.length > 0 && w.sockets.every((url) => url.includes(`users=${id}`)), `follows its user only: ${w.sockets}`);
  }
  await until(() => presenceText(w1), (t) => /Window 2 is here/.test(t) && !/typing/.test(t), 5000, 'window 1 sees window 2');
  await until(() => presenceText(w2), (t) => /Window 1 is here/.test(t), 5000, 'window 2 sees window 1');

  await w2.page.click('#last_name');
  await w2.page.keyboard.type('King', { delay: 80 });
  await until(() => presenceText(w1), (t) => /Window 2 is here, typing in last name…/.test(t), 3000, 'window 1 sees window 2 typing');
  await until(() => w1.page.inputValue('#last_name'), (v) => v === 'LovelaceKing', 3000, 'the value arrives too');
  await until(() => presenceText(w1), (t) => /Window 2 is here/.test(t) && !/typing/.test(t), 6000, 'typing ends after a pause');

  // Another user's change reaches neither the page nor its socket.
  const before = w1.frames.length;
  const changed = await rest(stack.base, 'PATCH', `/api/users/${other.body.id}/`, { first_name: 'Amazing' });
  assert.equal(changed.status, 200);
  const mine = await rest(stack.base, 'PATCH', `/api/users/${id}/`, { first_name: 'Augusta' });
  assert.equal(mine.status, 200);
  await until(() => w1.page.inputValue('#first_name'), (v) => v === 'Augusta', 3000, 'its own user still arrives');
  const updates = w1.frames.slice(before).filter((f) => f.type === 'user_update');
  assert.deepEqual(updates.map((f) => f.data.user.id), [id], 'only its own user\'s updates reach the socket');

  await w2.context.close();
  await until(() => presenceText(w1), (t) => t === '', 3000, 'a closed window leaves at once');
  assert.deepEqual([...w1.errors, ...w2.errors], []);
  await w1.context.close();
});
