// ioredis against a quorumkv cluster, with the library's default settings.
// Usage: node check_ioredis.mjs PORT [PORT ...]; exits 1 with the failed check.
import assert from 'node:assert/strict';
import Redis from 'ioredis';

const ports = process.argv.slice(2).map(Number);
const nodes = ports.map((port) => new Redis({ host: '127.0.0.1', port }));
const [a, b] = [nodes[0], nodes[nodes.length - 1]];

assert.equal(await a.ping(), 'PONG');
assert.equal(await a.flushall(), 'OK');

// Strings and counters read with GET.
assert.equal(await a.set('greeting', 'hello'), 'OK');
assert.equal(await b.get('greeting'), 'hello');
assert.equal(await a.incr('views'), 1);
assert.equal(await b.incrby('views', 10), 11);
assert.equal(await b.get('views'), '11');
assert.deepEqual(await b.mget('greeting', 'nope'), ['hello', null]);

// Hashes.
assert.equal(await a.hset('user:1', 'name', 'ann', 'age', '30'), 2);
assert.equal(await b.hget('user:1', 'name'), 'ann');
assert.equal(await a.hincrby('user:1', 'age', 1), 31);
assert.deepEqual(await b.hgetall('user:1'), { name: 'ann', age: '31' });

// Sets.
assert.equal(await a.sadd('team', 'a', 'b', 'c'), 3);
assert.equal(await b.srem('team', 'b'), 1);
assert.deepEqual((await b.smembers('team')).sort(), ['a', 'c']);
// A command for another type is the library's own error, and the connection goes on.
await assert.rejects(a.incr('team'), (e) => e.name === 'ReplyError' && /^WRONGTYPE/.test(e.message));

// Expiry.
assert.equal(await a.set('short', 'v', 'PX', 300), 'OK');
const pttl = await b.pttl('short');
assert.ok(pttl > 0 && pttl <= 300, `pttl ${pttl}`);
await new Promise((r) => setTimeout(r, 600));
assert.equal(await b.get('short'), null);

// A plain pipeline, and a transaction.
const pipe = a.pipeline();
for (let i = 0; i < 20; i++) pipe.incr('piped');
const piped = (await pipe.exec()).map(([e, v]) => { assert.equal(e, null); return v; });
assert.deepEqual(piped, Array.from({ length: 20 }, (_, i) => i + 1));
const tx = (await a.multi().set('tx', '1').incr('tx').get('tx').exec()).map(([e, v]) => v);
assert.deepEqual(tx, ['OK', 2, '2']);

// scanStream over a few thousand keys written through every node.
const wanted = new Set();
await Promise.all(Array.from({ length: 3000 }, (_, i) => {
  wanted.add(`scan:${i}`);
  return nodes[i % nodes.length].set(`scan:${i}`, String(i));
}));
const seen = new Set();
await new Promise((resolve, reject) => {
  b.scanStream({ match: 'scan:*', count: 500 })
    .on('data', (keys) => keys.forEach((k) => seen.add(k)))
    .on('end', resolve)
    .on('error', reject);
});
const missing = [...wanted].filter((k) => !seen.has(k));
assert.equal(missing.length, 0, `scanStream missed ${missing.length} keys`);

// FLUSHALL empties the whole cluster; writes after it are kept.
assert.equal(await b.flushall(), 'OK');
assert.equal(await a.get('views'), null);
assert.equal(await a.set('after', '1'), 'OK');
assert.equal(await b.get('after'), '1');

await Promise.all(nodes.map((c) => c.quit()));
console.log('ioredis ok');
