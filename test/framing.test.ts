import test from 'ava';
import { encodeFrame, FrameDecoder, FrameError, HEADER_SIZE } from '../shared/rpc/framing.js';

function frameBytes(id: number, payload?: Buffer): Buffer {
  return Buffer.concat(encodeFrame({ id, lookup: { parent: 1, name: Buffer.from(`file-${id}`) } }, payload));
}

test('a frame split at every byte boundary decodes once, intact', (t) => {
  const bytes = frameBytes(7, Buffer.from('hello payload'));
  for (let cut = 1; cut < bytes.length; cut++) {
    const d = new FrameDecoder();
    const a = d.push(bytes.subarray(0, cut));
    const b = d.push(bytes.subarray(cut));
    t.is(a.length + b.length, 1, `cut at ${cut}`);
    const f = [...a, ...b][0];
    t.is(f.envelope.id, 7);
    t.is(Buffer.from(f.envelope.lookup!.name!).toString(), 'file-7');
    t.is(f.payload!.toString(), 'hello payload');
    t.is(d.pending, 0);
  }
});

test('a frame fed one byte at a time decodes', (t) => {
  const bytes = frameBytes(9, Buffer.alloc(1000, 3));
  const d = new FrameDecoder();
  const out = [];
  for (const byte of bytes) out.push(...d.push(Buffer.from([byte])));
  t.is(out.length, 1);
  t.is(out[0].payload!.length, 1000);
});

test('many frames coalesced in one chunk all decode, in order', (t) => {
  const all = Buffer.concat(Array.from({ length: 500 }, (_, i) => frameBytes(i + 1, i % 2 ? Buffer.from([i & 0xff]) : undefined)));
  const d = new FrameDecoder();
  const frames = d.push(all);
  t.deepEqual(frames.map((f) => f.envelope.id), Array.from({ length: 500 }, (_, i) => i + 1));
  t.is(frames[3].payload![0], 3);
  t.is(frames[4].payload, undefined);
});

test('an oversize length is rejected from the header alone, before any body byte arrives', (t) => {
  const d = new FrameDecoder({ maxEnvelope: 1 << 20, maxPayload: 4 << 20 });
  const head = Buffer.alloc(HEADER_SIZE);
  head.writeUInt32BE(0xffffffff, 0);
  const before = process.memoryUsage().arrayBuffers;
  const err = t.throws(() => d.push(head), { instanceOf: FrameError });
  t.regex(err!.message, /4294967295 bytes exceeds the limit/);
  // Nothing near the announced 4 GiB was allocated.
  t.true(process.memoryUsage().arrayBuffers - before < 1 << 20);

  const d2 = new FrameDecoder({ maxEnvelope: 1 << 20, maxPayload: 4 << 20 });
  const head2 = Buffer.alloc(HEADER_SIZE);
  head2.writeUInt32BE(10, 0);
  head2.writeUInt32BE((4 << 20) + 1, 4);
  t.throws(() => d2.push(head2), { instanceOf: FrameError, message: /payload of 4194305 bytes exceeds/ });
});

test('garbage that is not protobuf is a FrameError, not a crash', (t) => {
  const body = Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
  const head = Buffer.alloc(HEADER_SIZE);
  head.writeUInt32BE(body.length, 0);
  t.throws(() => new FrameDecoder().push(Buffer.concat([head, body])), { instanceOf: FrameError, message: /undecodable envelope/ });
});

test('an empty envelope is refused', (t) => {
  t.throws(() => new FrameDecoder().push(Buffer.alloc(HEADER_SIZE)), { instanceOf: FrameError });
});

test('encodeFrame keeps the payload as its own chunk (written with the header in one writev, not copied)', (t) => {
  const payload = Buffer.alloc(1 << 20, 1);
  const chunks = encodeFrame({ id: 1, write: { node: 2, fh: 3, offset: 0 } }, payload);
  t.is(chunks.length, 2);
  t.is(chunks[1].buffer, payload.buffer);
});
