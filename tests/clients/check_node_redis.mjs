// node-redis against a quorumkv cluster, with the library's default settings.
// Usage: node check_node_redis.mjs PORT [PORT ...]; exits 1 with the failed check.
import assert from 'node:assert/strict';
import { createClient } from 'redis';

const ports = process.argv.slice(2).map(Number);
const nodes = await Promise.all(ports.map(async (port) => {
  const c = createClient({ url: `redis://127.0.0.1:${port}` });
  c.on('error', (e) => { console.error('client error', e); });
  await c.connect();
  return c;
}));
const [a, b] = [nodes[0], nodes[nodes.length - 1]];

assert.equal(await a.ping(), 'PONG');
assert.equal(await a.flushAll(), 'OK');

// Strings and counters read with GET.
assert.equal(await a.set('greeting', 'hello'), 'OK');
assert.equal(await b.get('greeting'), 'hello');
assert.equal(await a.incr('views'), 1);
assert.equal(await b.incrBy('views', 10), 11);
assert.equal(await b.get('views'), '11');
assert.deepEqual(await b.mGet(['greeting', 'nope']), ['hello', null]);

// Hashes.
assert.equal(await a.hSet('user:1', { name: 'ann', age: '30' }), 2);
assert.equal(await b.hGet('user:1', 'name'), 'ann');
assert.equal(await a.hIncrBy('user:1', 'age', 1), 31);
const all = await b.hGetAll('user:1');
assert.equal(all.name, 'ann');
assert.equal(all.age, '31');

// Sets.
assert.equal(await a.sAdd('team', ['a', 'b', 'c']), 3);
assert.equal(await b.sRem('team', 'b'), 1);
assert.deepEqual([...(await b.sMembers('team'))].sort(), ['a', 'c']);
// A command for another type is the library's own error, and the connection goes on.
await assert.rejects(a.incr('team'), (e) => ['SimpleError', 'ErrorReply'].includes(e.constructor.name) && /^WRONGTYPE/.test(e.message));

// Expiry.
assert.equal(await a.set('short', 'v', { PX: 300 }), 'OK');
const pttl = await b.pTTL('short');
assert.ok(pttl > 0 && pttl <= 300, `pttl ${pttl}`);
assert.equal(await a.expire('greeting', 100), 1);
const ttl = await b.ttl('greeting');
assert.ok(ttl >= 99 && ttl <= 100, `ttl ${ttl}`);
await new Promise((r) => setTimeout(r, 600));
assert.equal(await b.get('short'), null);

// A plain pipeline, and a transaction.
const pipeline = a.multi();
for (let i = 0; i < 20; i++) pipeline.incr('piped');
const piped = await pipeline.execAsPipeline();
assert.deepEqual(piped, Array.from({ length: 20 }, (_, i) => i + 1));
const tx = await a.multi().set('tx', '1').incr('tx').get('tx').exec();
assert.deepEqual(tx, ['OK', 2, '2']);

// scanIterator over a few thousand keys written through every node.
const wanted = new Set();
const writes = [];
for (let i = 0; i < 3000; i++) {
  const key = `scan:${i}`;
  writes.push(nodes[i % nodes.length].set(key, String(i)));
  wanted.add(key);
}
await Promise.all(writes);
const seen = new Set();
for await (const keys of b.scanIterator({ MATCH: 'scan:*', COUNT: 500 })) {
  for (const k of (Array.isArray(keys) ? keys : [keys])) seen.add(k);
}
const missing = [...wanted].filter((k) => !seen.has(k));
assert.equal(missing.length, 0, `scanIterator missed ${missing.length} keys`);

// FLUSHALL empties the whole cluster; writes after it are kept.
assert.equal(await b.flushAll(), 'OK');
assert.equal(await a.get('views'), null);
assert.equal(await a.set('after', '1'), 'OK');
assert.equal(await b.get('after'), '1');

await Promise.all(nodes.map((c) => c.quit()));
console.log('node-redis ok');
