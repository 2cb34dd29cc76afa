// /api/asyncapi.json checked with the real AsyncAPI parser, then real frames from
// the real binaries (a WebSocket opened in Debian's Chromium) validated against
// the payload schemas of the parsed document.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { Parser } from '@asyncapi/parser';
// Both come with the parser (its own dependencies), so they resolve from here.
import AjvModule from 'ajv';
import formatsModule from 'ajv-formats';

import { launchBrowser, until } from './browser.mjs';
import { rest, startStack } from './stack.mjs';

const Ajv = AjvModule.default ?? AjvModule;
const addFormats = formatsModule.default ?? formatsModule;

// Spectral's severities: 0 error, 1 warning, 2 information, 3 hint.
const ERROR = 0;
const WARNING = 1;

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

/** The served document, parsed; fails on any error or warning diagnostic. */
async function parsedDocument() {
  const response = await fetch(`${stack.base}/api/asyncapi.json`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('content-type'), 'application/json');
  const text = await response.text();
  const { document, diagnostics } = await new Parser().parse(text);
  const serious = diagnostics
    .filter((d) => d.severity === ERROR || d.severity === WARNING)
    .map((d) => `${d.severity === ERROR ? 'error' : 'warning'} ${d.code} at ${d.path.join('.')}: ${d.message}`);
  assert.deepEqual(serious, [], 'the parser finds no error or warning');
  assert.ok(document, 'the parser returns a document');
  return document;
}

/** A validator per message of `operation`, keyed by the payload's `type` const. */
function validators(document, operation) {
  const ajv = new Ajv({ allErrors: true, strict: true });
  addFormats(ajv);
  ajv.addKeyword('x-parser-schema-id');
  const byType = new Map();
  for (const message of document.operations().get(operation).messages()) {
    const schema = message.payload().json();
    const type = schema.properties.type.const;
    assert.ok(type, `${message.id()} has a type const`);
    byType.set(type, { id: message.id(), validate: ajv.compile(schema), message });
  }
  return byType;
}

/** Validates each JSON text in `frames`; returns what does not match. */
function mismatches(frames, byType) {
  const failures = [];
  for (const text of frames) {
    const frame = JSON.parse(text);
    const entry = byType.get(frame.type);
    if (!entry) {
      failures.push(`${text}: no message with type ${JSON.stringify(frame.type)}`);
    } else if (!entry.validate(frame)) {
      failures.push(`${text} is not a valid ${entry.id}: ${JSON.stringify(entry.validate.errors)}`);
    }
  }
  return failures;
}

test('/api/asyncapi.json is an AsyncAPI 3.0.0 document the parser accepts', async () => {
  const document = await parsedDocument();
  assert.equal(document.version(), '3.0.0');
  const channel = document.channels().get('userUpdates');
  assert.equal(channel.address(), '/ws/user-updates/');
  const query = channel.bindings().get('ws').value().query.properties;
  assert.deepEqual(Object.keys(query).sort(), ['epoch', 'since', 'token', 'users']);
  assert.deepEqual(
    document.components().messages().all().map((m) => m.id()).sort(),
    ['error', 'hello', 'ping', 'pong', 'presence', 'presenceUpdate', 'resync', 'subscribe', 'subscribed', 'unsubscribe', 'userUpdate'],
  );
  const send = document.operations().get('sendUserUpdates');
  assert.equal(send.action(), 'send');
  assert.deepEqual(
    send.messages().all().map((m) => m.id()),
    ['hello', 'userUpdate', 'resync', 'pong', 'error', 'subscribed', 'presence'],
  );
  for (const [name, ids] of [
    ['receivePing', ['ping']],
    ['receiveSubscriptionChanges', ['subscribe', 'unsubscribe']],
    ['receivePresence', ['presenceUpdate']],
  ]) {
    const receive = document.operations().get(name);
    assert.equal(receive.action(), 'receive');
    assert.deepEqual(receive.messages().all().map((m) => m.id()), ids);
  }

  // The parser does not check examples against payloads: do it here.
  for (const operation of ['sendUserUpdates', 'receivePing', 'receiveSubscriptionChanges', 'receivePresence']) {
    const byType = validators(document, operation);
    for (const { message } of byType.values()) {
      const examples = message.examples().all().map((e) => JSON.stringify(e.payload()));
      assert.ok(examples.length > 0, `${message.id()} has an example`);
      assert.deepEqual(mismatches(examples, byType), [], `${message.id()} examples`);
    }
  }

  // Served like the OpenAPI document: GET and HEAD only.
  const head = await fetch(`${stack.base}/api/asyncapi.json`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  const post = await fetch(`${stack.base}/api/asyncapi.json`, { method: 'POST' });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get('allow'), 'GET');
});

test('real frames match their message payloads in the parsed document', async () => {
  const document = await parsedDocument();
  const sent = validators(document, 'sendUserUpdates');
  const received = validators(document, 'receivePing');
  const changes = validators(document, 'receiveSubscriptionChanges');
  const presence = validators(document, 'receivePresence');
  const address = document.channels().get('userUpdates').address();
  const wsBase = stack.base.replace(/^http/, 'ws');

  const context = await browser.newContext();
  const page = await context.newPage();
  // Same origin as the gateway, so the socket's Origin is allowed.
  await page.goto(`${stack.base}/api/asyncapi.json`);
  const open = (name, url) => page.evaluate(([name, url]) => new Promise((resolve, reject) => {
    const socket = new WebSocket(url);
    window.sockets ??= {};
    window.sockets[name] = { socket, frames: [], errors: [] };
    socket.onmessage = (event) => window.sockets[name].frames.push(
      typeof event.data === 'string' ? event.data : '<binary>',
    );
    socket.onopen = () => resolve();
    socket.onerror = () => reject(new Error(`socket ${name} failed to open`));
  }), [name, url]);
  const frames = (name) => page.evaluate((name) => window.sockets[name].frames, name);
  const typesOf = (texts) => texts.map((t) => JSON.parse(t).type);
  const count = (texts, type) => typesOf(texts).filter((t) => t === type).length;

  await open('live', `${wsBase}${address}`);
  await until(() => frames('live'), (f) => f.length >= 1, 5000, 'hello');

  // One event of each action, made over REST while the socket is open.
  const created = await rest(stack.base, 'POST', '/api/users/', { first_name: 'Ada', last_name: 'Lovelace' });
  assert.equal(created.status, 201);
  const id = created.body.id;
  const patched = await rest(stack.base, 'PATCH', `/api/users/${id}/`, { first_name: 'Augusta' });
  assert.equal(patched.status, 200);
  const deleted = await rest(stack.base, 'DELETE', `/api/users/${id}/`);
  assert.equal(deleted.status, 204);

  // A ping (checked against the document too) and messages the gateway refuses.
  const ping = JSON.stringify({ type: 'ping' });
  assert.deepEqual(mismatches([ping], received), []);
  await page.evaluate((ping) => {
    const { socket } = window.sockets.live;
    socket.send(ping);
    socket.send('{"type":"subscribe"}');
    socket.send('not json');
    socket.send('[1, 2]');
    socket.send(new Uint8Array([1, 2, 3]));
  }, ping);

  const live = await until(
    () => frames('live'),
    (f) => count(f, 'user_update') >= 3 && count(f, 'pong') >= 1 && count(f, 'error') >= 4,
    5000,
    'the live socket\'s frames',
  );
  assert.equal(typesOf(live)[0], 'hello');
  assert.deepEqual(
    live.filter((t) => JSON.parse(t).type === 'user_update').map((t) => JSON.parse(t).data.action),
    ['create', 'update', 'delete'],
  );

  // A resume from an epoch that is not the gateway's: hello, then resync.
  await open('resume', `${wsBase}${address}?since=0&epoch=not-this-database`);
  const resumed = await until(() => frames('resume'), (f) => f.length >= 2, 5000, 'hello and resync');
  assert.deepEqual(typesOf(resumed).slice(0, 2), ['hello', 'resync']);

  // A filtered socket: hello with its users and their presence, then a
  // subscription change and a presence message of its own (both checked
  // against the document), answered by `subscribed` and presence lists.
  const other = await rest(stack.base, 'POST', '/api/users/', { first_name: 'Grace', last_name: 'Hopper' });
  const kept = other.body.id;
  const subscribe = JSON.stringify({ type: 'subscribe', users: [kept] });
  const unsubscribe = JSON.stringify({ type: 'unsubscribe', users: [kept] });
  const present = JSON.stringify({ type: 'presence', user: kept, meta: { window: 1, field: 'first_name', typing: true } });
  assert.deepEqual(mismatches([subscribe, unsubscribe], changes), []);
  assert.deepEqual(mismatches([present], presence), []);
  await open('filtered', `${wsBase}${address}?users=`);
  await until(() => frames('filtered'), (f) => f.length >= 1, 5000, 'the filtered hello');
  await page.evaluate(([subscribe, present]) => {
    const { socket } = window.sockets.filtered;
    socket.send(subscribe);
    socket.send(present);
  }, [subscribe, present]);
  const filtered = await until(
    () => frames('filtered'),
    (f) => count(f, 'subscribed') >= 1 && typesOf(f).includes('presence')
      && f.some((t) => JSON.parse(t).members?.length === 1),
    5000,
    'subscribed and a presence list with its own entry',
  );

  const all = [...live, ...resumed, ...filtered];
  assert.deepEqual(
    [...new Set(typesOf(all))].sort(),
    [...sent.keys()].sort(),
    'every message the gateway sends was seen',
  );
  assert.deepEqual(mismatches(all, sent), [], 'every frame matches its payload schema');
  await context.close();
});
