// Smoke test of the installed npm package (run from a fresh directory where
// `npm install <tarball>` put it): import by package name, talk to a real server.
//   DBX_URL=ws://127.0.0.1:PORT/ws node smoke.mjs
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { DBXWebSocket } from 'dbx-client';

const url = process.env.DBX_URL;
assert.ok(url, 'DBX_URL is required');
const require = createRequire(import.meta.url);
const resolved = require.resolve('dbx-client/package.json');
assert.ok(resolved.includes('node_modules'), `dbx-client must come from node_modules, not the source tree: ${resolved}`);
const pkg = require('dbx-client/package.json');

const dbx = new DBXWebSocket(url);
await dbx.connect();
const events = [];
dbx.on('keyspace', (e) => events.push(e));
const w = await dbx.key.watch(['smoke:js']);
assert.deepEqual(w.watching, ['smoke:js']);
const set = await dbx.string.set('smoke:js', 'hello', { ttl: 60 });
assert.equal(set.set, true);
const got = await dbx.string.get('smoke:js');
assert.equal(got.value, 'hello');
for (let i = 0; i < 100 && events.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
assert.equal(events[0]?.key, 'smoke:js');
await assert.rejects(dbx.string.get('smoke:missing'), (e) => e.code === 'not_found');
dbx.disconnect();
console.log(`js smoke: dbx-client ${pkg.version} from ${resolved}: ok`);
