// Starts the real DBX server binary for a test: $DBX_BIN, default <repo>/target/debug/dbx.
import { execFileSync, spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { get as httpsGet } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const JS_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_ROOT = resolve(JS_ROOT, '../..');
export const DBX_BIN = process.env.DBX_BIN ? resolve(REPO_ROOT, process.env.DBX_BIN) : join(REPO_ROOT, 'target/debug/dbx');
export const API_KEY = 'testkey';
export const JWT_SECRET = 'client-test-secret-0123456789abcdef';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

export function tempDir(prefix = 'dbx-js-') {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** A local CA and a localhost certificate (scripts/dev-cert.sh, openssl) in a temp dir. */
export function devCerts() {
  const dir = tempDir('dbx-certs-');
  execFileSync('bash', [join(REPO_ROOT, 'scripts/dev-cert.sh'), dir], { stdio: 'ignore' });
  return { dir, ca: readFileSync(join(dir, 'ca.pem'), 'utf8'), cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem'),
    caPath: join(dir, 'ca.pem') };
}

/** GET over https trusting `ca`; resolves to { status, body }. */
export function httpsGetText(port, path, ca) {
  return new Promise((res, rej) => {
    const req = httpsGet({ host: '127.0.0.1', port, path, ca, servername: 'localhost' }, (r) => {
      let body = '';
      r.on('data', (d) => { body += d; });
      r.on('end', () => res({ status: r.statusCode, body }));
    });
    req.on('error', rej);
    req.setTimeout(2000, () => req.destroy(new Error('timeout')));
  });
}

async function waitHealthy(port, proc, deadlineMs, tls) {
  const until = Date.now() + deadlineMs;
  let lastErr;
  while (Date.now() < until) {
    if (proc.exitCode !== null) throw new Error(`dbx exited with status ${proc.exitCode} before it was ready`);
    try {
      const r = tls ? await httpsGetText(port, '/health', tls.ca) : await fetch(`http://127.0.0.1:${port}/health`);
      if (r.ok || r.status === 200) return;
      lastErr = new Error(`/health answered ${r.status}`);
    } catch (e) {
      lastErr = e;
    }
    await sleep(50);
  }
  throw new Error(`dbx did not become healthy on port ${port}: ${lastErr?.message}`);
}

/**
 * Starts dbx; resolves to { port, url, env, proc, stop(), kill(), pause(), resume(), restart() }.
 * `tls`: the result of devCerts() — the server then serves wss:// (url uses localhost) and
 * `server.tls` holds the certificates.
 */
export async function startServer({ port, env = {}, dataDir, tls } = {}) {
  if (!existsSync(DBX_BIN)) {
    throw new Error(`DBX server binary not found at ${DBX_BIN} (build it with \`cargo build\` or set DBX_BIN)`);
  }
  port = port ?? (await freePort());
  const fullEnv = {
    ...process.env,
    DBX_HOST: '127.0.0.1',
    DBX_PORT: String(port),
    DBX_API_KEYS: API_KEY,
    DBX_JWT_SECRET: JWT_SECRET,
    DBX_WS_HEARTBEAT_INTERVAL: '1',
    DBX_WS_RATE_LIMIT: '0',
    DBX_LOG: 'warn',
    ...(dataDir ? { DBX_PERSIST: 'true', DBX_DATA_DIR: dataDir, DBX_APPENDFSYNC: 'always' } : { DBX_PERSIST: 'false' }),
    ...(tls ? { DBX_TLS_CERT: tls.cert, DBX_TLS_KEY: tls.key } : {}),
    ...env,
  };
  const url = tls ? `wss://localhost:${port}/ws` : `ws://127.0.0.1:${port}/ws`;
  const server = { port, url, env: fullEnv, proc: null, output: '', tls };
  const launch = async () => {
    const proc = spawn(DBX_BIN, [], { env: fullEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout.on('data', (d) => { server.output += d; });
    proc.stderr.on('data', (d) => { server.output += d; });
    server.proc = proc;
    try {
      await waitHealthy(port, proc, 15000, tls);
    } catch (e) {
      proc.kill('SIGKILL');
      throw new Error(`${e.message}\n--- server output ---\n${server.output.slice(-4000)}`);
    }
  };
  const exited = (proc) => (proc.exitCode !== null || proc.signalCode !== null
    ? Promise.resolve() : new Promise((r) => proc.once('exit', r)));
  server.kill = async () => { // abrupt: SIGKILL
    const p = server.proc;
    if (!p) return;
    p.kill('SIGKILL'); // also kills a stopped process, which must not run (and answer) first
    await exited(p);
  };
  server.stop = async () => {
    const p = server.proc;
    if (!p) return;
    p.kill('SIGCONT');
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 3000);
    await exited(p);
    clearTimeout(t);
  };
  server.pause = () => server.proc.kill('SIGSTOP');
  server.resume = () => server.proc.kill('SIGCONT');
  server.restart = launch;
  await launch();
  return server;
}

const b64url = (buf) => Buffer.from(buf).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');

/** An HS256 JWT signed with the test secret; `ttl` seconds from now. */
export function makeJwt(claims = {}, { ttl = 300, secret = JWT_SECRET } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = b64url(JSON.stringify({ sub: 'test', role: 'write', iat: now, exp: now + ttl, ...claims }));
  const sig = b64url(createHmac('sha256', secret).update(`${header}.${payload}`).digest());
  return `${header}.${payload}.${sig}`;
}

/** Resolves when predicate() is truthy, polling; rejects after ms. */
export async function until(predicate, ms = 5000, what = 'condition') {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await predicate()) return;
    await sleep(20);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

export function cleanup(dir) {
  try { rmSync(dir, { recursive: true, force: true }); } catch {}
}
