// Kill-and-restart of the real server: the client reconnects, resumes its watch without
// missing a change, and rejects the requests that were in flight with a clear error.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { DBXWebSocket } from '../src/index.js';
import { API_KEY, cleanup, sleep, startServer, tempDir, until } from './helpers.js';

const dirs = [];
const servers = [];
const clients = [];
after(async () => {
  await Promise.all(clients.map((c) => c.disconnect()));
  for (const s of servers) await s.stop();
  dirs.forEach(cleanup);
});

function client(server, opts = {}) {
  const c = new DBXWebSocket(server.url, {
    apiKey: API_KEY, requestTimeout: 5000, reconnectBaseDelay: 100, reconnectMaxDelay: 500, ...opts,
  });
  clients.push(c);
  return c;
}

/** Everything the watcher learns about `key`: live/replayed events, and values from a resync. */
function trackKey(dbx, key) {
  const seen = { events: [], resyncs: [], resumes: [], reconnects: [], disconnects: [] };
  dbx.on('keyspace', (e) => { if (e.key === key) seen.events.push(e); });
  dbx.on('resync', (r) => seen.resyncs.push(r));
  dbx.on('resume', (r) => seen.resumes.push(r));
  dbx.on('reconnect', (r) => seen.reconnects.push(r));
  dbx.on('disconnect', (d) => seen.disconnects.push(d));
  return seen;
}

test('server killed: requests in flight are rejected with a clear error, and the client reconnects', async () => {
  const server = await startServer();
  servers.push(server);
  const dbx = client(server);
  const seen = trackKey(dbx, 'none');
  await dbx.connect();
  await dbx.string.set('rk:a', '1');
  server.pause();
  const inflight = [dbx.string.get('rk:a'), dbx.server.ping()].map((p) => p.then(() => null, (e) => e));
  await sleep(100);
  await server.kill();
  const errs = await Promise.all(inflight);
  for (const [i, m] of [[0, 'string.get'], [1, 'server.ping']]) {
    assert.ok(errs[i], `${m} was rejected`);
    assert.equal(errs[i].code, 'disconnected');
    assert.equal(errs[i].method, m);
    assert.match(errs[i].message, new RegExp(`Connection lost \\(code \\d+.*\\) before the reply to ${m.replace('.', '\\.')} \\(id msg_\\d+\\)`));
  }
  assert.equal(dbx.pendingRequests.size, 0);
  assert.equal(dbx.getState(), 'reconnecting');
  // a request made while reconnecting waits for the connection
  const waiting = dbx.server.ping();
  await server.restart();
  assert.equal((await waiting).pong, true);
  await until(() => seen.reconnects.length === 1, 10000, 'the reconnect event');
  assert.equal(dbx.getState(), 'connected');
  assert.ok(seen.disconnects.length >= 1);
  await dbx.string.set('rk:a', '2');
  assert.equal((await dbx.string.get('rk:a')).value, '2');
});

test('server killed and restarted: reconnect, in-flight requests rejected, watch resumed with no change missed', async () => {
  const dataDir = tempDir();
  dirs.push(dataDir);
  const server = await startServer({ dataDir });
  servers.push(server);

  const writer = client(server);
  const watcher = client(server, { reconnectBaseDelay: 1500, reconnectMaxDelay: 2000 });
  await writer.connect();
  await watcher.connect();
  await writer.string.set('rk:counter', '1');
  const seen = trackKey(watcher, 'rk:counter');
  const w = await watcher.key.watch(['rk:counter']);
  assert.equal(w.values['rk:counter'].value, '1');
  await writer.string.set('rk:counter', '2');
  await until(() => seen.events.length === 1, 3000, 'the first change');

  // A request in flight when the server dies: freeze the server so it cannot answer, then kill it.
  server.pause();
  const inflight = watcher.string.get('rk:counter').then(() => null, (e) => e);
  await sleep(100);
  await server.kill();
  const err = await inflight;
  assert.ok(err, 'the in-flight request was rejected');
  assert.equal(err.code, 'disconnected');
  assert.equal(err.method, 'string.get');
  assert.match(err.message, /Connection lost .* before the reply to string\.get .* may or may not have been applied/);
  await until(() => watcher.getState() === 'reconnecting', 2000, 'state reconnecting');

  // The server comes back on the same port with its data; a change is made before the watcher is back.
  await server.restart();
  await writer.connect().catch(() => {});
  await until(() => writer.isConnected(), 5000, 'the writer to reconnect');
  await writer.string.set('rk:counter', '3');
  assert.equal(watcher.isConnected(), false, 'the change happened while the watcher was away');

  await until(() => seen.reconnects.length === 1, 10000, 'the watcher to reconnect');
  assert.equal(watcher.getState(), 'connected');
  // The change made while away reached the watcher: replayed as an event, or (history lost) as a resync with values.
  const sawReplay = seen.events.some((e) => e.replayed && e.rev > w.rev);
  const sawResync = seen.resyncs.some((r) => r.values['rk:counter']?.value === '3');
  assert.ok(sawReplay || sawResync, `missed the change made while disconnected: ${JSON.stringify(seen)}`);

  // And live events flow again.
  const before = seen.events.length;
  await writer.string.set('rk:counter', '4');
  await until(() => seen.events.length > before, 3000, 'a live event after reconnect');
  assert.equal((await watcher.string.get('rk:counter')).value, '4');
});

test('connection lost while the server keeps its history: key.watch resumes with since/epoch and replays', async () => {
  const server = await startServer();
  servers.push(server);
  const writer = client(server);
  // a short liveness timeout: the watcher gives up on a silent connection quickly
  const watcher = client(server, { livenessTimeout: 1500, connectTimeout: 1000 });
  await writer.connect();
  await watcher.connect();
  const seen = trackKey(watcher, 'rs:k');
  const w = await watcher.key.watch(['rs:k']);
  await writer.string.set('rs:k', 'a');
  await until(() => seen.events.length === 1, 3000, 'the first change');

  server.pause(); // silence: the watcher drops the connection and tries again
  await until(() => seen.disconnects.length === 1, 5000, 'the watcher to notice the silence');
  const pendingWrite = writer.string.set('rs:k', 'b'); // queued in the kernel until the server runs again
  server.resume();
  const wr = await pendingWrite;
  await until(() => seen.reconnects.length === 1, 10000, 'the watcher to reconnect');
  await until(() => seen.events.some((e) => e.rev > seen.events[0].rev), 3000, 'the change made during the outage');
  assert.equal(seen.resyncs.length, 0, `expected a resume, not a resync: ${JSON.stringify(seen.resyncs)}`);
  const ev = seen.events.find((e) => e.rev > seen.events[0].rev);
  if (typeof wr.rev === 'number') assert.equal(ev.rev, wr.rev);
  assert.ok(watcher.getWatchPosition().rev >= ev.rev);
  assert.ok(w.rev < ev.rev);
});
