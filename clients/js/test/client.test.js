// Runs the JS client against the real dbx binary (see helpers.js).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DBXError, DBXWebSocket, DBXWebSocketPool, jwtExpiry } from '../src/index.js';
import { API_KEY, makeJwt, sleep, startServer, until } from './helpers.js';

let server;
const clients = [];
function client(opts = {}) {
  const c = new DBXWebSocket(server.url, { apiKey: API_KEY, requestTimeout: 5000, ...opts });
  clients.push(c);
  return c;
}

before(async () => { server = await startServer(); });
after(async () => {
  await Promise.all(clients.map((c) => c.disconnect()));
  await server?.stop();
});

describe('connection', () => {
  test('connect resolves with the hello message and getState/isConnected follow', async () => {
    const dbx = client({ clientId: 'js-test' });
    assert.equal(dbx.getState(), 'disconnected');
    assert.equal(dbx.isConnected(), false);
    const events = [];
    dbx.on('connect', () => events.push('connect'));
    dbx.on('disconnect', () => events.push('disconnect'));
    const hello = await dbx.connect();
    assert.equal(hello.type, 'hello');
    assert.equal(hello.version, '1.0');
    assert.equal(typeof hello.connection_id, 'string');
    assert.equal(typeof hello.epoch, 'string');
    assert.equal(typeof hello.rev, 'number');
    assert.equal(dbx.getState(), 'connected');
    assert.equal(dbx.isConnected(), true);
    await dbx.disconnect();
    assert.equal(dbx.getState(), 'disconnected');
    assert.deepEqual(events, ['connect', 'disconnect']);
  });

  test('a bad api key is refused with connect_failed', async () => {
    const dbx = client({ apiKey: 'wrong', reconnect: false });
    await assert.rejects(dbx.connect(), (e) => e instanceof DBXError && e.code === 'connect_failed');
    assert.equal(dbx.getState(), 'disconnected');
  });

  test('requests while disconnected are rejected with not_connected', async () => {
    const dbx = client();
    await assert.rejects(dbx.string.get('x'), (e) => e.code === 'not_connected');
  });

  test('heartbeats from the server arrive as heartbeat events', async () => {
    const dbx = client();
    let beats = 0;
    dbx.on('heartbeat', () => beats++);
    await dbx.connect();
    await until(() => beats >= 1, 4000, 'a heartbeat');
  });
});

describe('requests', () => {
  let dbx;
  before(async () => { dbx = client(); await dbx.connect(); });

  test('sendRequest and the typed helpers', async () => {
    const set = await dbx.sendRequest('string.set', { key: 'js:a', value: 'hello' });
    assert.equal(set.set, true);
    assert.deepEqual((await dbx.string.get('js:a')).value, 'hello');
    await dbx.string.set('js:t', 'v', { ttl: 100 });
    const got = await dbx.string.get('js:t');
    assert.ok(got.ttl > 0 && got.ttl <= 100);
    assert.equal((await dbx.string.incr('js:n')).value, 1);
    assert.equal((await dbx.string.incr('js:n', { by: 5 })).value, 6);
    await dbx.hash.set('js:h', { f1: 'a', f2: 'b' });
    await dbx.hash.set('js:h', 'f3', 'c');
    assert.deepEqual((await dbx.hash.get('js:h')).fields, { f1: 'a', f2: 'b', f3: 'c' });
    assert.equal((await dbx.hash.get('js:h', 'f3')).value, 'c');
    await dbx.set.add('js:s', ['x', 'y']);
    assert.equal((await dbx.set.contains('js:s', 'x')).contains, true);
    await dbx.list.push('js:l', ['1', '2', '3']);
    assert.deepEqual((await dbx.list.range('js:l', 0, -1)).values, ['1', '2', '3']);
    await dbx.zset.add('js:z', [{ member: 'm', score: 2 }, { member: 'n', score: 1 }]);
    assert.deepEqual((await dbx.zset.range('js:z', 0, -1)).members.map((m) => m.member), ['n', 'm']);
    assert.equal((await dbx.key.del(['js:a', 'js:missing'])).deleted, 1);
    assert.equal((await dbx.server.ping()).pong, true);
  });

  test('server errors reject with a DBXError carrying the code', async () => {
    await assert.rejects(dbx.string.get('js:does-not-exist'), (e) => {
      assert.ok(e instanceof DBXError);
      assert.equal(e.code, 'not_found');
      assert.equal(e.method, 'string.get');
      return true;
    });
    await assert.rejects(dbx.sendRequest('nope.nope'), (e) => e.code === 'method_not_found');
  });

  test('missing helper arguments throw before anything is sent', () => {
    assert.throws(() => dbx.string.set('only-key'), TypeError);
  });

  test('batchOperations', async () => {
    const r = await dbx.batchOperations([
      { method: 'string.set', params: { key: 'js:b1', value: 'v1' } },
      { method: 'string.get', params: { key: 'js:b1' } },
      { method: 'string.get', params: { key: 'js:b-missing' } },
    ]);
    assert.equal(r.results.length, 3);
    assert.equal(r.results[1].result.value, 'v1');
    assert.equal(r.results[2].error.code, 'not_found');
  });

  test('a request with no reply is rejected on timeout', async () => {
    server.pause(); // the server stops answering
    try {
      await assert.rejects(dbx.sendRequest('server.ping', {}, { timeout: 300 }), (e) => {
        assert.equal(e.code, 'timeout');
        assert.match(e.message, /No reply to server\.ping .* within 300 ms/);
        return true;
      });
    } finally {
      server.resume();
    }
    assert.equal((await dbx.server.ping()).pong, true);
    assert.equal(dbx.pendingRequests.size, 0);
  });

  test('on/off', async () => {
    let n = 0;
    const h = () => n++;
    dbx.on('heartbeat', h);
    await until(() => n >= 1, 4000, 'a heartbeat');
    dbx.off('heartbeat', h);
    const seen = n;
    await sleep(1500);
    assert.equal(n, seen);
  });
});

describe('pub/sub and watch', () => {
  test('pubsub events from another client', async () => {
    const sub = client();
    const pub = client();
    await Promise.all([sub.connect(), pub.connect()]);
    const got = [];
    sub.on('event', (e) => got.push(e));
    assert.deepEqual((await sub.pubsub.subscribe(['js:chan'])).subscribed, ['js:chan']);
    assert.equal((await pub.pubsub.publish('js:chan', { hello: 1 })).receivers, 1);
    await until(() => got.length === 1, 3000, 'the event');
    assert.equal(got[0].channel, 'js:chan');
    assert.deepEqual(got[0].data, { hello: 1 });
  });

  test('key.watch gives values and a keyspace event for a change by another client', async () => {
    const watcher = client();
    const writer = client();
    await Promise.all([watcher.connect(), writer.connect()]);
    await writer.string.set('js:w', 'one');
    const events = [];
    watcher.on('keyspace', (e) => events.push(e));
    const w = await watcher.key.watch(['js:w']);
    assert.deepEqual(w.watching, ['js:w']);
    assert.deepEqual(w.values['js:w'], { type: 'string', value: 'one' });
    assert.equal(watcher.getWatchPosition().rev, w.rev);
    const s = await writer.string.set('js:w', 'two');
    await until(() => events.length === 1, 3000, 'the keyspace event');
    assert.equal(events[0].key, 'js:w');
    assert.equal(events[0].event, 'string.set');
    assert.ok(events[0].rev > w.rev);
    if (typeof s.rev === 'number') assert.equal(events[0].rev, s.rev);
    assert.equal(watcher.getWatchPosition().rev, events[0].rev);
  });
});

describe('JWT credentials', () => {
  test('a token travels in the subprotocol list', async () => {
    const dbx = client({ apiKey: undefined, token: makeJwt() });
    await dbx.connect();
    assert.equal(dbx.ws.protocol, 'dbx.v1');
    await dbx.string.set('js:jwt', 'ok');
    assert.equal((await dbx.string.get('js:jwt')).value, 'ok');
  });

  test('a token provider gets auth.refresh before the token expires', async () => {
    let issued = 0;
    const provider = () => { issued++; return makeJwt({}, { ttl: 3 }); };
    const dbx = client({ apiKey: undefined, token: provider, reconnect: false });
    const refreshed = [];
    const closes = [];
    dbx.on('token_refreshed', (r) => refreshed.push(r));
    dbx.on('disconnect', (d) => closes.push(d));
    await dbx.connect();
    const firstExp = jwtExpiry(dbx._token);
    await until(() => refreshed.length >= 1, 4000, 'auth.refresh');
    assert.ok(refreshed[0].expires_at >= firstExp, 'the new token expires later');
    await sleep(Math.max(0, firstExp * 1000 - Date.now()) + 1200); // past the first token's exp
    assert.deepEqual(closes, [], 'not closed with 4001');
    assert.equal((await dbx.server.ping()).pong, true);
    assert.ok(issued >= 2);
  });
});

describe('pool', () => {
  test('DBXWebSocketPool spreads requests over connections', async () => {
    const pool = new DBXWebSocketPool(server.url, { apiKey: API_KEY, maxConnections: 2, maxPendingPerConnection: 1 });
    try {
      const rs = await Promise.all(Array.from({ length: 6 }, (_, i) => pool.sendRequest('string.set', { key: `js:p${i}`, value: String(i) })));
      assert.equal(rs.length, 6);
      assert.ok(pool.pool.length >= 1 && pool.pool.length <= 2);
      const c = await pool.getConnection();
      assert.equal((await c.string.get('js:p5')).value, '5');
    } finally {
      await pool.disconnect();
    }
  });
});
