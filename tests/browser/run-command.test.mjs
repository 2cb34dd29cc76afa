// ./scripts/run as a newcomer runs it: it starts both services, prints the page's
// URL, that URL answers with the page (both windows live in Chromium), and Ctrl-C
// stops both. It runs the binaries already built (USER_SERVICE_BIN / GATEWAY_BIN,
// which the script honours) instead of a release build, on free ports and a
// database in a temporary folder so it leaves the clone as it was.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { launchBrowser, until } from './browser.mjs';
import { binary, repoRoot } from './stack.mjs';

/** A port that was free a moment ago. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function accepts(port) {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
}

/** Whether any process of group `pgid` is still alive. */
function groupAlive(pgid) {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

test('./scripts/run prints a URL that serves the live page, and Ctrl-C stops both services', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'users-run-'));
  const [grpcPort, httpPort, metricsPort] = [await freePort(), await freePort(), await freePort()];
  // Its own process group, as a terminal gives it: Ctrl-C signals the whole group.
  const env = { ...process.env };
  delete env.REDIS_URL;
  const run = spawn(join(repoRoot, 'scripts', 'run'), [], {
    cwd: repoRoot,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...env,
      USER_SERVICE_BIN: binary('user-service'),
      GATEWAY_BIN: binary('gateway'),
      USER_SERVICE_ADDR: `127.0.0.1:${grpcPort}`,
      GATEWAY_ADDR: `127.0.0.1:${httpPort}`,
      METRICS_ADDR: `127.0.0.1:${metricsPort}`,
      DATABASE_URL: `sqlite://${join(dir, 'users.db')}`,
    },
  });
  let out = '';
  run.stdout.on('data', (chunk) => { out += chunk; });
  run.stderr.on('data', (chunk) => { out += chunk; });
  const exited = new Promise((resolve) => run.once('exit', (code, signal) => resolve({ code, signal })));
  let browser;
  try {
    const banner = await until(() => Promise.resolve(out), (o) => /Open (http:\/\/\S+\/) /.test(o), 30000, 'the banner');
    const url = banner.match(/Open (http:\/\/\S+\/) /)[1];
    assert.equal(url, `http://127.0.0.1:${httpPort}/`);

    const page = await fetch(url);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /id="frame1"/);
    // The demo user is seeded on a new database, so the page has someone to show.
    const demo = await fetch(`${url}api/users/1/`);
    assert.equal(demo.status, 200);

    browser = await launchBrowser();
    const tab = await browser.newPage();
    await tab.goto(url);
    const [frame1, frame2] = [tab.frameLocator('#frame1'), tab.frameLocator('#frame2')];
    await until(() => frame2.locator('#status').textContent(), (s) => s === 'connected', 10000, 'frame 2 status');
    await until(() => frame1.locator('#first_name').isEditable(), (e) => e, 10000, 'frame 1 loaded');
    await frame1.locator('#first_name').fill('Newcomer');
    await until(() => frame2.locator('#first_name').inputValue(), (v) => v === 'Newcomer', 2000, 'frame 2 shows it');
    await browser.close();
    browser = undefined;

    process.kill(-run.pid, 'SIGINT');
    let timer;
    const { code, signal } = await Promise.race([
      exited,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`not stopped in 15 s:\n${out}`)), 15000);
      }),
    ]).finally(() => clearTimeout(timer));
    assert.ok(code === 130 || signal === 'SIGINT', `exit ${code} ${signal}:\n${out}`);
    await until(() => Promise.resolve(groupAlive(run.pid)), (alive) => !alive, 5000, 'a process of the run still alive');
    assert.equal(await accepts(httpPort), false, 'the gateway stopped');
    assert.equal(await accepts(grpcPort), false, 'the user-service stopped');
    // Each drained and said so, rather than being killed.
    assert.match(out, /gateway stopped/, out);
    assert.match(out, /user-service stopped/, out);
    assert.doesNotMatch(out, /panicked|ERROR/, out);
  } finally {
    await browser?.close();
    if (groupAlive(run.pid)) process.kill(-run.pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
