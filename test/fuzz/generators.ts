// Frame generators: pure random bytes, structurally random protobuf, and valid frames of every body
// type with random field values (ids the peer issued, boundary numbers, hostile names, payloads).
import type { Prng } from './prng.js';
import type { BodyKind, EnvelopeInit } from '../../shared/rpc/wire.js';
import { bodyFields, bodyByName, requests, replies, events, type BodyField } from './schema.js';
import { randomMessage, randomPayload, randomU64, type Pools } from './values.js';
import { encodeEnvelope, frameBytes, withinLimits, type FuzzFrame } from './frames.js';

/** Per-connection generator state: request ids and what the peer told us. */
export interface GenState {
  pools: Pools;
  nextId: number;
  /** Ids sent recently (a duplicate id is a mutation worth making). */
  recentIds: number[];
  token: string;
}

export function newGenState(token: string, exportId?: number): GenState {
  return { pools: { nodes: [1], handles: [], exportIds: exportId ? [exportId] : [], names: [] }, nextId: 1000, recentIds: [], token };
}

/** Body kinds a guest sends, weighted: file operations most, control rarely, Goodbye very rarely. */
function pickGuestBody(rng: Prng): BodyField {
  const r = rng.float();
  if (r < 0.78) {
    const ops = requests.filter((b) => b.id >= 40);
    return rng.pick(ops);
  }
  // Control requests. mountExport is kept rare: each one is a new export view on the host.
  if (r < 0.84) return bodyByName.get(rng.weighted({ ping: 10, listExports: 10, hello: 8, unmountExport: 5, mountExport: 2 }) as BodyKind)!;
  if (r < 0.92) return rng.pick(events.filter((e) => e.name !== 'goodbye' || rng.chance(0.02)));
  return rng.pick(replies); // replies nobody asked for
}

function randomCaller(rng: Prng): EnvelopeInit['caller'] {
  if (rng.chance(0.1)) return undefined;
  if (rng.chance(0.75)) return { uid: 0, gid: 0, pid: rng.int(1 << 16) };
  const groups = rng.chance(0.05) ? Array.from({ length: rng.range(33, 2000) }, () => rng.int(70000)) : [rng.int(2000)];
  return { uid: rng.pick([1000, 65534, 12345, 2 ** 32 - 1, rng.u32()]), gid: rng.pick([1000, 65534, 0, 2 ** 32 - 1]), pid: rng.u32(), groups, umask: rng.chance(0.3) ? rng.int(0o10000) : undefined };
}

function requestId(rng: Prng, st: GenState): { id: number; tracked: boolean } {
  const r = rng.float();
  if (r < 0.9) {
    const id = st.nextId++;
    if (st.recentIds.length > 32) st.recentIds.shift();
    st.recentIds.push(id);
    return { id, tracked: true };
  }
  if (r < 0.94) return { id: 0, tracked: false }; // a request sent as an event
  if (r < 0.97 && st.recentIds.length) return { id: rng.pick(st.recentIds), tracked: false };
  return { id: rng.pick([2 ** 53 - 1, 2 ** 32, 2 ** 63, randomU64(rng)]), tracked: false };
}

/** Body contents with a few semantic touches (names that mount, tokens that sometimes match). */
function bodyFor(rng: Prng, field: BodyField, st: GenState): Record<string, unknown> {
  const body = randomMessage(rng, field.type, st.pools);
  if (field.name === 'mountExport' && rng.chance(0.8)) body.name = 'default';
  if (field.name === 'hello') {
    if (rng.chance(0.5)) body.token = st.token;
    if (rng.chance(0.5)) Object.assign(body, { minVersion: 1, maxVersion: 1 });
  }
  if (field.name === 'unmountExport' && rng.chance(0.5)) body.exportId = rng.pick(st.pools.exportIds.length ? st.pools.exportIds : [1]);
  // A Cancel of one of our own requests legitimately leaves it without a reply: aim it on purpose
  // (recent ids) or where it cannot hit (below the first id, above any we use).
  if (field.name === 'cancel') body.requestId = rng.chance(0.5) && st.recentIds.length ? rng.pick(st.recentIds) : rng.pick([0, 1, 999, 2 ** 40 + rng.int(1000)]);
  return body;
}

/** A valid frame (it encodes and respects the limits) of a random body type, as a guest would send. */
export function validGuestFrame(rng: Prng, st: GenState, kind?: BodyKind): FuzzFrame {
  for (;;) {
    const field = kind ? bodyByName.get(kind)! : pickGuestBody(rng);
    const { id, tracked } = field.role === 'request' ? requestId(rng, st) : { id: rng.chance(0.8) ? 0 : randomU64(rng), tracked: false };
    const env: EnvelopeInit = {
      id,
      exportId: rng.chance(0.9) && st.pools.exportIds.length ? rng.pick(st.pools.exportIds) : rng.pick([0, 1, 2, 99, 2 ** 32 - 1]),
      caller: randomCaller(rng),
      [field.name]: bodyFor(rng, field, st),
    };
    const envelope = encodeEnvelope(env);
    if (!envelope) continue;
    const payload = randomPayload(rng);
    if (!withinLimits(envelope.length, payload?.length ?? 0)) continue;
    const isRequest = field.role === 'request' && id !== 0;
    return {
      bytes: frameBytes(envelope, payload),
      label: `valid:${field.name}`,
      clean: true,
      expectReplyId: isRequest && tracked ? id : undefined,
      // A Goodbye ends the session; so does a Hello the host refuses (it answers, then hangs up).
      endsSession: field.name === 'goodbye' || (field.name === 'hello' && (env.hello as { token?: string }).token !== st.token),
      cancels: field.name === 'cancel' ? Number((env.cancel as { requestId?: number }).requestId ?? 0) : undefined,
    };
  }
}

/** A valid reply (or event) frame as a host would send: for the guest side. */
export function validHostFrame(rng: Prng, kind: BodyKind, id: number, pools?: Pools, payload?: Buffer): FuzzFrame {
  const field = bodyByName.get(kind)!;
  for (let tries = 0; ; tries++) {
    const body = randomMessage(rng, field.type, pools, 0, tries > 5 ? 0.3 : 0.85);
    const envelope = encodeEnvelope({ id, [kind]: body });
    if (!envelope) continue;
    const pay = payload ?? (kind === 'data' ? rng.bytes(rng.size(70_000)) : randomPayload(rng, 1 << 20));
    if (!withinLimits(envelope.length, pay?.length ?? 0)) continue;
    return { bytes: frameBytes(envelope, pay), label: `valid:${kind}`, clean: true, endsSession: kind === 'goodbye' };
  }
}

/** Pure random bytes: no promise at all. */
export function randomBytesFrame(rng: Prng): FuzzFrame {
  const n = rng.chance(0.9) ? rng.range(1, 64) : rng.range(65, 8192);
  return { bytes: rng.bytes(n), label: 'random-bytes', clean: false };
}

// ---- structurally random protobuf ----------------------------------------------------------------

class RawWriter {
  private parts: number[] = [];
  varint(v: bigint): this {
    let x = BigInt.asUintN(64, v);
    do {
      let byte = Number(x & 0x7fn);
      x >>= 7n;
      if (x > 0n) byte |= 0x80;
      this.parts.push(byte);
    } while (x > 0n);
    return this;
  }
  tag(field: number, wire: number): this {
    return this.varint((BigInt(field) << 3n) | BigInt(wire));
  }
  bytes(b: Buffer): this {
    this.varint(BigInt(b.length));
    for (const x of b) this.parts.push(x);
    return this;
  }
  raw(b: Buffer): this {
    for (const x of b) this.parts.push(x);
    return this;
  }
  finish(): Buffer {
    return Buffer.from(this.parts);
  }
}

const VARINTS = [0n, 1n, 0x7fn, 0x80n, 0xffffffffn, 0x100000000n, (1n << 53n) - 1n, 1n << 53n, (1n << 63n) - 1n, 1n << 63n, (1n << 64n) - 1n];

/** Random fields with random wire types; with some probability the wire type is invalid (6, 7). */
function rawFields(rng: Prng, w: RawWriter, maxField: number, depth: number): void {
  const n = rng.range(0, 6);
  for (let i = 0; i < n; i++) {
    const field = rng.chance(0.9) ? rng.range(1, maxField) : rng.pick([999, 2 ** 29 - 1, 19000]);
    const wire = rng.chance(0.95) ? rng.pick([0, 0, 1, 2, 2, 5]) : rng.pick([3, 4, 6, 7]);
    w.tag(field, wire);
    switch (wire) {
      case 0: w.varint(rng.chance(0.6) ? rng.pick(VARINTS) : BigInt(rng.u32())); break;
      case 1: w.raw(rng.bytes(8)); break;
      case 5: w.raw(rng.bytes(4)); break;
      case 2: {
        if (depth < 3 && rng.chance(0.5)) {
          const inner = new RawWriter();
          rawFields(rng, inner, 12, depth + 1);
          w.bytes(inner.finish());
        } else {
          w.bytes(rng.bytes(rng.size(300)));
        }
        break;
      }
      default: break; // groups and invalid wire types carry nothing we can promise
    }
  }
}

/** An envelope written field by field: real body field numbers, random contents and wire types. */
export function rawProtobufFrame(rng: Prng, st?: GenState): FuzzFrame {
  const w = new RawWriter();
  if (rng.chance(0.9)) w.tag(1, 0).varint(rng.chance(0.5) ? BigInt(st ? st.nextId++ : rng.u32()) : rng.pick(VARINTS));
  if (rng.chance(0.7)) w.tag(2, 0).varint(BigInt(st?.pools.exportIds[0] ?? 1));
  const body = rng.pick(bodyFields);
  const inner = new RawWriter();
  rawFields(rng, inner, 12, 1);
  w.tag(body.id, 2).bytes(inner.finish());
  if (rng.chance(0.2)) rawFields(rng, w, 300, 1);
  const envelope = w.finish();
  const payload = rng.chance(0.2) ? rng.bytes(rng.range(1, 256)) : undefined;
  return { bytes: frameBytes(envelope, payload), label: `rawpb:${body.name}`, clean: false };
}

/** An envelope with a body field number this protocol does not know (a newer peer's message). */
export function unknownTypeFrame(rng: Prng, id: number): FuzzFrame {
  const w = new RawWriter();
  w.tag(1, 0).varint(BigInt(id));
  w.tag(rng.pick([300, 999, 4242, 2 ** 29 - 1]), 2).bytes(rng.bytes(rng.size(40)));
  return { bytes: frameBytes(w.finish()), label: 'unknown-type', clean: true, expectReplyId: id === 0 ? undefined : id };
}
