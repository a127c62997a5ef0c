// Headless Chromium (Debian's `chromium`, driven by playwright-core) loads a page that uses the
// JS client, connects with a JWT in the subprotocol list, sets, gets and watches a key, and sees
// a change made by another client (Node). Runs against the real dbx binary.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { extname, join, normalize } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import { DBXWebSocket } from '../src/index.js';
import { API_KEY, JS_ROOT, cleanup, makeJwt, startServer, tempDir } from './helpers.js';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
let server; let http; let httpPort; let context; let profile; let other;

before(async () => {
  server = await startServer();
  // a tiny static server for the page and the client module
  http = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '');
    if (!path.startsWith('/src/') && !path.startsWith('/test/browser/')) { res.writeHead(404).end(); return; }
    try {
      const body = await readFile(join(JS_ROOT, path));
      const type = { '.js': 'text/javascript', '.html': 'text/html' }[extname(path)] || 'application/octet-stream';
      res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' }).end(body);
    } catch { res.writeHead(404).end(); }
  });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  httpPort = http.address().port;
  profile = tempDir('dbx-chromium-');
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await other?.disconnect();
  await context?.close();
  await new Promise((r) => (http ? http.close(r) : r()));
  await server?.stop();
  if (profile) cleanup(profile);
});

test('browser: subprotocol token, set/get/watch, and a change by another client', async () => {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`http://127.0.0.1:${httpPort}/test/browser/page.html`);
  await page.waitForFunction(() => window.ready === true);

  const token = makeJwt({ sub: 'browser' });
  const r = await page.evaluate(([url, tok]) => window.run(url, tok), [server.url, token]);
  assert.equal(r.hasGlobalWebSocket, true);
  assert.equal(r.hello.type, 'hello');
  assert.equal(r.protocol, 'dbx.v1', 'the server selected the dbx.v1 subprotocol');
  assert.equal(r.got.value, 'from-browser');
  assert.deepEqual(r.watch.values['browser:k'], { type: 'string', value: 'from-browser' });

  other = new DBXWebSocket(server.url, { apiKey: API_KEY });
  await other.connect();
  const set = await other.string.set('browser:k', 'from-node');
  const ev = await page.waitForFunction(() => window.events[0], null, { timeout: 5000 }).then((h) => h.jsonValue());
  assert.equal(ev.key, 'browser:k');
  assert.equal(ev.event, 'string.set');
  assert.ok(ev.rev > r.watch.rev);
  if (typeof set.rev === 'number') assert.equal(ev.rev, set.rev);
  const now = await page.evaluate(() => window.dbx.string.get('browser:k'));
  assert.equal(now.value, 'from-node');
  await page.evaluate(() => window.dbx.disconnect());
  assert.deepEqual(errors, []);
});
