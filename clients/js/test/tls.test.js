// wss:// against the real dbx binary serving TLS with a certificate from scripts/dev-cert.sh
// (a local CA): the Node client with `ca` / `rejectUnauthorized`, the seed document's own
// Node example (the `ws` package, rejectUnauthorized: true, an Authorization header), and
// headless Chromium trusting the certificate by its key (--ignore-certificate-errors-spki-list).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { extname, join, normalize } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import { DBXWebSocket } from '../src/index.js';
import { API_KEY, JS_ROOT, cleanup, devCerts, httpsGetText, makeJwt, startServer, tempDir } from './helpers.js';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
let certs; let server;

before(async () => {
  certs = devCerts();
  server = await startServer({ tls: certs });
});

after(async () => {
  await server?.stop();
  if (certs) cleanup(certs.dir);
});

test('node: wss:// with the CA in `ca`: set, get, watch; /health over https says tls', async () => {
  const a = new DBXWebSocket(server.url, { apiKey: API_KEY, ca: certs.ca, reconnect: false });
  const b = new DBXWebSocket(server.url, { apiKey: API_KEY, ca: [certs.ca], rejectUnauthorized: true, reconnect: false });
  await a.connect();
  await b.connect();
  try {
    await a.key.watch(['tls:k']);
    const got = new Promise((r) => a.on('keyspace', r));
    await b.string.set('tls:k', 'over-tls');
    assert.equal((await b.string.get('tls:k')).value, 'over-tls');
    const ev = await got;
    assert.equal(ev.key, 'tls:k');
  } finally {
    await a.disconnect();
    await b.disconnect();
  }
  const h = await httpsGetText(server.port, '/health', certs.ca);
  assert.equal(h.status, 200);
  assert.equal(JSON.parse(h.body).tls, true);
});

test('node: an untrusted certificate is refused unless rejectUnauthorized is false', async () => {
  const strict = new DBXWebSocket(server.url, { apiKey: API_KEY, rejectUnauthorized: true, reconnect: false, connectTimeout: 3000 });
  await assert.rejects(strict.connect(), (e) => e.code === 'connect_failed');
  await strict.disconnect();
  const lax = new DBXWebSocket(server.url, { apiKey: API_KEY, rejectUnauthorized: false, reconnect: false });
  await lax.connect();
  assert.equal((await lax.server.ping()).pong, true);
  await lax.disconnect();
});

test("the seed document's Node example (ws, rejectUnauthorized: true, Bearer header) works", async () => {
  // The example as the document gives it, with our URL and key; the test CA is trusted the
  // way Node trusts a private CA: NODE_EXTRA_CA_CERTS.
  const script = `
const WebSocket = require("ws");
const dbx = new WebSocket(${JSON.stringify(server.url)}, {
  rejectUnauthorized: true, // Validate SSL certificates
  headers: {
    Authorization: "Bearer ${API_KEY}",
  },
});
dbx.on("message", (data) => {
  const msg = JSON.parse(data);
  if (msg.type === "hello") {
    dbx.send(JSON.stringify({ id: 1, method: "string.set", params: { key: "seed:k", value: "v" } }));
  } else if (msg.id === 1) {
    console.log(JSON.stringify(msg.result));
    dbx.close();
  }
});
dbx.on("error", (e) => { console.error(e.message); process.exit(1); });
`;
  const out = await new Promise((res, rej) => {
    execFile(process.execPath, ['-e', script], { cwd: JS_ROOT, timeout: 10000, env: { ...process.env, NODE_EXTRA_CA_CERTS: certs.caPath } },
      (err, stdout, stderr) => (err ? rej(new Error(`${err.message}\n${stderr}`)) : res(stdout)));
  });
  assert.equal(JSON.parse(out.trim()).set, true);
});

test('browser: wss:// from headless Chromium trusting the certificate by its key', async () => {
  const leaf = new X509Certificate(await readFile(certs.cert));
  const spki = createHash('sha256').update(leaf.publicKey.export({ type: 'spki', format: 'der' })).digest('base64');
  const http = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '');
    if (!path.startsWith('/src/') && !path.startsWith('/test/browser/')) { res.writeHead(404).end(); return; }
    try {
      const body = await readFile(join(JS_ROOT, path));
      const type = { '.js': 'text/javascript', '.html': 'text/html' }[extname(path)] || 'application/octet-stream';
      res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' }).end(body);
    } catch { res.writeHead(404).end(); }
  });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  const profile = tempDir('dbx-chromium-tls-');
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      `--ignore-certificate-errors-spki-list=${spki}`],
  });
  try {
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${http.address().port}/test/browser/page.html`);
    await page.waitForFunction(() => window.ready === true);
    const r = await page.evaluate(([url, tok]) => window.run(url, tok), [server.url, makeJwt({ sub: 'browser-tls' })]);
    assert.equal(r.hello.type, 'hello');
    assert.equal(r.got.value, 'from-browser');
    await page.evaluate(() => window.dbx.disconnect());
  } finally {
    await context.close();
    await new Promise((r) => http.close(r));
    cleanup(profile);
  }
});
