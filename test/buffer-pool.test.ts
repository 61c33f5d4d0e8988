// Large frames are assembled in pooled buffers that are reused once their request is answered.
// What must hold: reuse never shows one request's bytes to another, and a released buffer is reused.
import test from 'ava';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { BufferPool, sharedPool } from '../shared/rpc/buffer-pool.js';
import { FrameDecoder, encodeFrame } from '../shared/rpc/framing.js';
import { Session } from '../shared/rpc/session.js';
import { silentLogger } from '../shared/log.js';
import { unixSocketPair } from './helpers/sockets.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

test('a frame split over many reads is assembled in a pooled buffer, reused after release', (t) => {
  const pool = new BufferPool();
  const decoder = new FrameDecoder(undefined, pool);
  const payload = Buffer.alloc(1 << 20, 7);
  const wire = Buffer.concat(encodeFrame({ id: 1, write: { node: 2, fh: 3, offset: 0 } }, payload));
  const decodeSplit = () => {
    const frames = [];
    for (let o = 0; o < wire.length; o += 65536) frames.push(...decoder.push(wire.subarray(o, o + 65536)));
    t.is(frames.length, 1);
    return frames[0];
  };
  const first = decodeSplit();
  t.true(first.payload!.equals(payload));
  t.truthy(first.release, 'a frame assembled from several reads can be released');
  const firstBuffer = first.payload!.buffer;
  first.release!();
  first.release!(); // twice is harmless
  t.is(pool.stats.free, 1);
  const second = decodeSplit();
  t.is(second.payload!.buffer, firstBuffer, 'the released buffer is used again');
  t.true(second.payload!.equals(payload));
  t.is(pool.stats.free, 0);
});

test('small frames and frames within one read are not pooled', (t) => {
  const pool = new BufferPool();
  const decoder = new FrameDecoder(undefined, pool);
  const wire = Buffer.concat(encodeFrame({ id: 1, write: { node: 2, fh: 3, offset: 0 } }, Buffer.alloc(300 << 10, 1)));
  const [f] = decoder.push(wire);
  t.is(f.release, undefined, 'a view of the read itself, nothing to give back');
  t.is(pool.stats.free, 0);
});

test('200 concurrent 1 MiB echoes with distinct contents come back intact while buffers are reused', async (t) => {
  const [a, b, cleanup] = await unixSocketPair();
  t.teardown(cleanup);
  const reusedBefore = sharedPool.stats.reused;
  const client = new Session(a, { logger: silentLogger(), keepaliveMs: 0 });
  // The server answers in random order after a delay, echoing the request's own (pooled) buffer.
  new Session(b, {
    logger: silentLogger(),
    keepaliveMs: 0,
    onRequest: async (req) => {
      await sleep(Math.random() * 5);
      return { body: { data: {} }, payload: req.payload };
    },
  });
  const results = await Promise.all(
    Array.from({ length: 200 }, async (_, i) => {
      const payload = Buffer.alloc((1 << 20) - i * 17, i % 251);
      const reply = await client.request({ write: { node: 2, fh: 1, offset: i } }, { payload });
      return sha(reply.payload!) === sha(payload);
    }),
  );
  t.is(results.filter(Boolean).length, 200, 'every echo has exactly the bytes that were sent');
  // Both ends share this process's pool: the server's released buffers are taken again (by later
  // requests, or by the client's replies), so reuse is what shows, not what is left free.
  t.true(sharedPool.stats.reused > reusedBefore, 'buffers given back were used again');
});
