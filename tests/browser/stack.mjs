// Starts the real binaries for browser tests: a user-service on a fresh SQLite file
// and one or more gateways serving the page built into them, each on a free port, logging JSON so the
// bound address can be read back.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const targetDir = process.env.CARGO_TARGET_DIR ?? join(repoRoot, 'target');
const binary = (name) => process.env[`${name.toUpperCase().replace('-', '_')}_BIN`] ?? join(targetDir, 'debug', name);

/** Starts `name` with `args` and resolves with { child, addr } once it logs its bound address. */
function startBinary(name, args, env = {}) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(binary(name), args, {
      env: { ...process.env, LOG_FORMAT: 'json', RUST_LOG: 'info', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines = [];
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${name} did not report its address in 20 s:\n${lines.join('\n')}`));
    }, 20000);
    const onLine = (line) => {
      lines.push(line);
      if (lines.length > 200) lines.shift();
      let entry;
      try { entry = JSON.parse(line); } catch { return; }
      const message = entry.message ?? entry.fields?.message ?? '';
      const listen = entry.listen ?? entry.fields?.listen;
      if (listen && /listening/.test(message)) {
        clearTimeout(timer);
        resolvePromise({ child, addr: listen, lines });
      }
    };
    createInterface({ input: child.stdout }).on('line', onLine);
    createInterface({ input: child.stderr }).on('line', onLine);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code}) before listening:\n${lines.join('\n')}`));
    });
  });
}

function stopChild(child, signal = 'SIGTERM') {
  return new Promise((resolvePromise) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolvePromise();
    const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolvePromise();
    });
    child.kill(signal);
  });
}

/** A user-service and gateways on a fresh database; `stop()` ends them all. */
export async function startStack() {
  const dir = mkdtempSync(join(tmpdir(), 'users-browser-'));
  const userService = await startBinary('user-service', [
    '--listen', '127.0.0.1:0',
    '--database-url', `sqlite://${join(dir, 'users.db')}`,
  ]);
  const grpcUrl = `http://${userService.addr}`;
  const gateways = [];

  const startGateway = async (listen = '127.0.0.1:0') => {
    const gateway = await startBinary('gateway', [
      '--listen', listen,
      '--user-service-url', grpcUrl,
    ]);
    gateways.push(gateway);
    return { ...gateway, base: `http://${gateway.addr}` };
  };

  const gateway = await startGateway();
  return {
    base: gateway.base,
    gateway,
    startGateway,
    stopGateway: (g) => stopChild(g.child),
    async stop() {
      await Promise.all(gateways.map((g) => stopChild(g.child)));
      await stopChild(userService.child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A JSON REST call from the test itself (not the browser). */
export async function rest(base, method, path, body) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}
