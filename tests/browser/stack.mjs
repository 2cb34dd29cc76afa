// Starts the real binaries for browser tests: a user-service on a fresh SQLite file
// and one or more gateways serving the page built into them, each on a free port, logging JSON so the
// bound address can be read back.

import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createServer, connect } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const targetDir = process.env.CARGO_TARGET_DIR ?? join(repoRoot, 'target');
/** The path of binary `name`: `<NAME>_BIN` if set, else the workspace's debug build. */
export const binary = (name) => process.env[`${name.toUpperCase().replace('-', '_')}_BIN`] ?? join(targetDir, 'debug', name);

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

/** A port nothing listens on now. */
function freePort() {
  return new Promise((resolvePromise, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePromise(port));
    });
  });
}

/** Starts a redis-server of the test's own (nothing kept on disk); resolves once it accepts. */
async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  const deadline = Date.now() + 10000;
  for (;;) {
    const up = await new Promise((done) => {
      const socket = connect(port, '127.0.0.1', () => { socket.destroy(); done(true); });
      socket.on('error', () => done(false));
    });
    if (up) break;
    if (Date.now() > deadline) throw new Error('redis-server did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, url: `redis://127.0.0.1:${port}` };
}

/**
 * A user-service and gateways on a fresh database; `stop()` ends them all. By
 * default the gateways run with `--auth none`; `auth: { secret }` runs them with
 * `--auth jwt` and that HS256 secret instead. With `redis: true` every service
 * runs on a redis-server of the stack's own (events and presence go through it,
 * so gateways share presence).
 */
export async function startStack({ auth, redis } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'users-browser-'));
  const bus = redis ? await startRedis() : null;
  const redisArgs = bus ? ['--redis-url', bus.url] : [];
  const userService = await startBinary('user-service', [
    '--listen', '127.0.0.1:0',
    '--database-url', `sqlite://${join(dir, 'users.db')}`,
    ...redisArgs,
  ]);
  const grpcUrl = `http://${userService.addr}`;
  const gateways = [];

  const startGateway = async (listen = '127.0.0.1:0') => {
    const gateway = await startBinary('gateway', [
      '--auth', auth ? 'jwt' : 'none',
      '--listen', listen,
      '--user-service-url', grpcUrl,
      ...redisArgs,
    ], auth ? { JWT_SECRET: auth.secret } : {});
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
      if (bus) await stopChild(bus.child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A token from `gateway token <args>` signed with `secret`. */
export function mintToken(secret, args) {
  return execFileSync(binary('gateway'), ['token', ...args], {
    env: { ...process.env, JWT_SECRET: secret },
    encoding: 'utf8',
  }).trim();
}

/** A JSON REST call from the test itself (not the browser), with `token` when given. */
export async function rest(base, method, path, body, token) {
  const headers = body === undefined ? {} : { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(`${base}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}
