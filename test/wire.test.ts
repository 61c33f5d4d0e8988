// Every message type of the protocol survives an encode/decode round trip through the generated
// static code. The list of types comes from the .proto itself, so a new message is covered at once.
import test from 'ava';
import protobuf from 'protobufjs';
import path from 'node:path';
import { Envelope, pb } from '../shared/rpc/wire.js';
import { encodeFrame, FrameDecoder } from '../shared/rpc/framing.js';

const root = protobuf.loadSync(path.resolve('shared/proto/dirvisor.proto'));
const envelopeType = root.lookupType('dirvisor.Envelope');
const bodyFields = envelopeType.oneofs.body.fieldsArray;

/** A value for every field, different per field so a swapped field would show. */
function sample(type: protobuf.Type, seed: number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const field of type.fieldsArray) {
    field.resolve();
    const v = valueFor(field, seed + field.id);
    out[field.name] = field.repeated ? [v, valueFor(field, seed + field.id + 100)] : v;
  }
  return out;
}

function valueFor(field: protobuf.Field, n: number): unknown {
  if (field.resolvedType instanceof protobuf.Type) return sample(field.resolvedType, n * 7);
  switch (field.type) {
    case 'string': return `s${n}-é`;
    case 'bytes': return Buffer.from([n & 0xff, 0, 0x2f, 0xff]);
    case 'bool': return true;
    case 'int64': return -(2 ** 40) - n; // negative and beyond 32 bits
    case 'uint64': return 2 ** 52 + n; // the largest range we promise as numbers
    default: return n; // uint32 and friends
  }
}

test('the envelope has a body for requests, replies and events', (t) => {
  t.true(bodyFields.length >= 50);
});

for (const field of bodyFields) {
  test(`round trip: ${field.name}`, (t) => {
    field.resolve();
    const body = sample(field.resolvedType as protobuf.Type, field.id);
    const msg = { id: 2 ** 40 + field.id, exportId: 7, caller: { uid: 1000, gid: 1000, pid: 42, groups: [4, 27], umask: 0o22 }, [field.name]: body };
    const bytes = Envelope.encode(msg).finish();
    const decoded = Envelope.decode(bytes);
    t.is(decoded.body, field.name as typeof decoded.body);
    t.is(decoded.id, 2 ** 40 + field.id);
    const viaReflection = envelopeType.toObject(envelopeType.decode(bytes), { bytes: Buffer, longs: Number, defaults: false });
    t.deepEqual(normalize(viaReflection[field.name]), normalize(body));
    // And the same through a frame, with a payload beside it.
    const decoder = new FrameDecoder();
    const frames = decoder.push(Buffer.concat(encodeFrame(msg, Buffer.from('payload'))));
    t.is(frames.length, 1);
    t.is(frames[0].envelope.body, field.name as typeof decoded.body);
    t.is(frames[0].payload?.toString(), 'payload');
  });
}

function normalize(v: unknown): unknown {
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return Buffer.from(v).toString('hex');
  if (Array.isArray(v)) return v.map(normalize);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normalize(x)]));
  return v;
}

test('64-bit fields decode as plain numbers', (t) => {
  const decoded = Envelope.decode(Envelope.encode({ id: 1, read: { node: 2 ** 53 - 1, fh: 3, offset: 5 * 2 ** 32, size: 4096 } }).finish());
  t.is(typeof decoded.read!.offset, 'number');
  t.is(decoded.read!.offset, 5 * 2 ** 32);
  t.is(decoded.read!.node, 2 ** 53 - 1);
});

test('optional fields keep presence (setattr of mode 0 is not "no mode")', (t) => {
  const decoded = Envelope.decode(Envelope.encode({ id: 1, setattr: { node: 5, mode: 0 } }).finish());
  t.is(decoded.setattr!.mode, 0);
  t.true(Object.prototype.hasOwnProperty.call(decoded.setattr, 'mode'));
  const without = pb.SetattrRequest.decode(pb.SetattrRequest.encode({ node: 5 }).finish());
  t.true(without.mode == null);
});
