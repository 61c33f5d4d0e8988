// Mutations of valid frames. Two families:
//  - framed: the envelope bytes change but the header is rewritten to match, so the peer's frame
//    boundaries stay right and the mutation reaches the protobuf decoder and the dispatcher;
//  - raw: the bytes of the whole frame change (bit flips in the header, truncation, lying length
//    fields, splices); these usually desynchronise the stream and must end the session cleanly.
import type { Prng } from './prng.js';
import { frameBytes, splitFrame, withinLimits, HEADER_SIZE, DEFAULT_MAX_ENVELOPE, DEFAULT_MAX_PAYLOAD, type FuzzFrame } from './frames.js';

const INTERESTING_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x08, 0x0a, 0x12, 0x1a, 0x22];

function flipBits(rng: Prng, b: Buffer, count: number): Buffer {
  const out = Buffer.from(b);
  if (out.length === 0) return out;
  for (let i = 0; i < count; i++) out[rng.int(out.length)] ^= 1 << rng.int(8);
  return out;
}

function setBytes(rng: Prng, b: Buffer, count: number): Buffer {
  const out = Buffer.from(b);
  if (out.length === 0) return out;
  for (let i = 0; i < count; i++) out[rng.int(out.length)] = rng.pick(INTERESTING_BYTES);
  return out;
}

function insertBytes(rng: Prng, b: Buffer): Buffer {
  const at = rng.int(b.length + 1);
  const ins = rng.chance(0.5) ? rng.bytes(rng.range(1, 16)) : Buffer.from([rng.pick(INTERESTING_BYTES)]);
  return Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]);
}

function deleteBytes(rng: Prng, b: Buffer): Buffer {
  if (b.length < 2) return b;
  const at = rng.int(b.length);
  const n = rng.range(1, Math.min(16, b.length - at));
  return Buffer.concat([b.subarray(0, at), b.subarray(at + n)]);
}

/** Copies a random slice of the envelope over another place in it (protobuf field reuse). */
function shuffleSlice(rng: Prng, b: Buffer): Buffer {
  if (b.length < 4) return b;
  const from = rng.int(b.length);
  const n = rng.range(1, Math.min(32, b.length - from));
  const to = rng.int(b.length);
  return Buffer.concat([b.subarray(0, to), b.subarray(from, from + n), b.subarray(to)]);
}

/** Mutates the envelope of a valid frame and rewrites the header to match. */
export function mutateFramed(rng: Prng, base: FuzzFrame): FuzzFrame {
  const { envelope, payload } = splitFrame(base.bytes);
  const how = rng.weighted({ flip: 3, set: 2, insert: 2, delete: 2, shuffle: 1, payload: 1 });
  let env = envelope;
  let pay: Buffer = payload;
  switch (how) {
    case 'flip': env = flipBits(rng, envelope, rng.range(1, 4)); break;
    case 'set': env = setBytes(rng, envelope, rng.range(1, 3)); break;
    case 'insert': env = insertBytes(rng, envelope); break;
    case 'delete': env = deleteBytes(rng, envelope); break;
    case 'shuffle': env = shuffleSlice(rng, envelope); break;
    case 'payload': pay = rng.chance(0.5) ? Buffer.alloc(0) : rng.bytes(rng.range(1, 4096)); break;
  }
  const bytes = frameBytes(env, pay);
  // A mutated envelope may not decode: the peer may close, which is fine. A payload-only change
  // keeps the frame well formed.
  const clean = how === 'payload' && withinLimits(env.length, pay.length);
  return { bytes, label: `mutate:${how}(${base.label})`, clean, endsSession: clean && base.endsSession, expectReplyId: clean ? base.expectReplyId : undefined };
}

/** Mutations of the raw frame bytes, header included. */
export function mutateRaw(rng: Prng, base: FuzzFrame, other?: FuzzFrame): FuzzFrame {
  const b = base.bytes;
  const how = rng.weighted({ headerFlip: 2, truncate: 2, lyingLength: 4, splice: 1, extend: 1, zeroEnvelope: 1, hugeLength: 2 });
  let out: Buffer;
  switch (how) {
    case 'headerFlip':
      out = Buffer.concat([flipBits(rng, b.subarray(0, HEADER_SIZE), rng.range(1, 3)), b.subarray(HEADER_SIZE)]);
      break;
    case 'truncate':
      out = b.subarray(0, rng.int(b.length));
      break;
    case 'lyingLength': {
      out = Buffer.from(b);
      const which = rng.int(2) * 4;
      const real = out.readUInt32BE(which);
      const lie = rng.pick([real + 1, Math.max(0, real - 1), real + rng.range(2, 100), rng.int(real + 1), 1, DEFAULT_MAX_ENVELOPE, DEFAULT_MAX_ENVELOPE + 1, DEFAULT_MAX_PAYLOAD, DEFAULT_MAX_PAYLOAD + 1]);
      out.writeUInt32BE(lie >>> 0, which);
      break;
    }
    case 'splice': {
      const o = other?.bytes ?? b;
      out = Buffer.concat([b.subarray(0, rng.int(b.length + 1)), o.subarray(rng.int(o.length + 1))]);
      break;
    }
    case 'extend':
      out = Buffer.concat([b, rng.bytes(rng.range(1, 64))]);
      break;
    case 'zeroEnvelope':
      out = Buffer.from(b);
      out.writeUInt32BE(0, 0);
      break;
    case 'hugeLength':
      out = Buffer.from(b);
      out.writeUInt32BE(rng.pick([0xffffffff, 0x80000000, 0x7fffffff, 0x10000000]), rng.int(2) * 4);
      break;
  }
  // A duplicated or extended frame can still be well formed (the tail then starts a new frame),
  // but none of these is promised to be; the session may end.
  return { bytes: out, label: `raw:${how}(${base.label})`, clean: false };
}

/** The same frame twice: well formed, the second copy reuses the request id. */
export function duplicate(base: FuzzFrame): FuzzFrame {
  return { bytes: Buffer.concat([base.bytes, base.bytes]), label: `dup(${base.label})`, clean: base.clean, expectReplyId: undefined, endsSession: base.endsSession };
}
