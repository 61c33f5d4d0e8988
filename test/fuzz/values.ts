// Random field values, biased towards what breaks things: boundary numbers, ids the peer really
// issued (so that requests reach deep into the backend), and hostile names ("..", "/", NUL, 4 KiB).
// Values are chosen by field type and, for the fields whose meaning we know, by field name.
import protobuf from 'protobufjs';
import type { Prng } from './prng.js';

/** Ids and names learned from the peer's replies; requests reuse them so they are not all ESTALE. */
export interface Pools {
  nodes: number[];
  handles: number[];
  exportIds: number[];
  names: Buffer[];
}

export function emptyPools(): Pools {
  return { nodes: [1], handles: [], exportIds: [], names: [] };
}

const POOL_MAX = 64;

/** Remembers a value, keeping the pool small and fresh. */
export function remember<T>(pool: T[], v: T): void {
  if (pool.length >= POOL_MAX) pool.splice(0, 1);
  pool.push(v);
}

export const U64_EDGES = [
  0, 1, 2, 3, 7, 255, 256, 4095, 4096, 65535, 65536, 2 ** 20, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32,
  2 ** 40, 2 ** 52, 2 ** 53 - 1, 2 ** 53, 2 ** 62, 2 ** 63, 2 ** 64 - 2 ** 11, 1e15, 4 * 2 ** 30,
];
export const U32_EDGES = [0, 1, 2, 0o777, 0o7777, 0o100644, 0o40755, 0o120777, 255, 4096, 2 ** 16, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1];
export const I64_EDGES = [0, -1, 1, -(2 ** 31), 2 ** 31, -(2 ** 53) + 1, 2 ** 53 - 1, -(2 ** 63)];

/** A few names that exist in the seeded storage tree (see storage.ts). */
export const DICTIONARY = ['f0', 'f1', 'f2', 'f3', 'd0', 'd1', 'd2', 'big', 'sparse', 'link0', 'new0', 'new1', 'new2', 'x'].map((s) => Buffer.from(s));

const HOSTILE_NAMES: Array<(rng: Prng) => Buffer> = [
  () => Buffer.from('..'),
  () => Buffer.from('.'),
  () => Buffer.alloc(0),
  () => Buffer.from('/'),
  () => Buffer.from('a/b'),
  () => Buffer.from('../../../etc/passwd'),
  () => Buffer.from('/etc/passwd'),
  () => Buffer.from('f0\0evil'),
  () => Buffer.from([0]),
  () => Buffer.from('..\0'),
  () => Buffer.alloc(255, 'n'),
  () => Buffer.alloc(256, 'n'),
  () => Buffer.alloc(4096, 'x'),
  (rng) => rng.bytes(4096),
  (rng) => rng.bytes(rng.range(1, 300)),
  () => Buffer.from('é\u{1F600}ü'),
  () => Buffer.from([0xff, 0xfe, 0x80]),
];

export function randomName(rng: Prng, pools?: Pools): Buffer {
  const r = rng.float();
  if (r < 0.3 && pools?.names.length) return rng.pick(pools.names);
  if (r < 0.65) return rng.pick(DICTIONARY);
  if (r < 0.75) return Buffer.from(`n${rng.int(64)}`);
  return rng.pick(HOSTILE_NAMES)(rng);
}

export function randomU64(rng: Prng): number {
  const r = rng.float();
  if (r < 0.5) return rng.pick(U64_EDGES);
  if (r < 0.8) return rng.int(1 << 16);
  return rng.u32() * 2 ** 21 + rng.int(2 ** 21); // up to 2^53
}

export function randomU32(rng: Prng): number {
  const r = rng.float();
  if (r < 0.5) return rng.pick(U32_EDGES);
  if (r < 0.8) return rng.int(1 << 16);
  return rng.u32();
}

function randomString(rng: Prng): string {
  const r = rng.float();
  if (r < 0.3) return rng.pick(['', 'default', 'token', 'payload-frames', 'readdirplus', 'long', 'none', '\0', 'é']);
  if (r < 0.95) return rng.bytes(rng.size(64)).toString('latin1');
  return 'z'.repeat(rng.range(1000, 70_000));
}

/** Random payload bytes beside the envelope: mostly none or small, rarely megabytes. */
export function randomPayload(rng: Prng, maxBig = 4 << 20): Buffer | undefined {
  const r = rng.float();
  if (r < 0.55) return undefined;
  if (r < 0.9) return rng.bytes(rng.range(1, 64));
  if (r < 0.995) return rng.bytes(rng.range(65, 65536));
  return Buffer.alloc(rng.range(1 << 20, maxBig), rng.int(256));
}

const NODE_FIELDS = new Set(['node', 'parent', 'newParent', 'nodeIn', 'nodeOut', 'nodeId', 'child']);
const FH_FIELDS = new Set(['fh', 'fhIn', 'fhOut']);
const NAME_FIELDS = new Set(['name', 'newName']);
const SIZE_FIELDS = new Set(['offset', 'offsetIn', 'offsetOut', 'length']);

function scalar(rng: Prng, field: protobuf.Field, owner: string, pools?: Pools): unknown {
  const name = field.name;
  if (NODE_FIELDS.has(name) && pools && rng.chance(0.8)) return rng.chance(0.2) ? 1 : rng.pick(pools.nodes);
  if (FH_FIELDS.has(name) && pools?.handles.length && rng.chance(0.75)) return rng.pick(pools.handles);
  if (name === 'exportId' && pools?.exportIds.length && rng.chance(0.85)) return rng.pick(pools.exportIds);
  if (field.type === 'bytes') {
    if (NAME_FIELDS.has(name) && owner !== 'GetxattrRequest' && owner !== 'SetxattrRequest' && owner !== 'RemovexattrRequest') {
      return randomName(rng, pools);
    }
    if (owner.endsWith('xattrRequest') && rng.chance(0.6)) return Buffer.from(rng.pick(['user.a', 'user.b', 'trusted.x', 'security.capability', 'system.posix_acl_access', 'user.' + 'q'.repeat(300)]));
    if (name === 'target' && rng.chance(0.5)) return Buffer.from(rng.pick(['f0', '../..', '/', '/etc/shadow', 'x'.repeat(5000), 'a\0b']));
    return rng.bytes(rng.size(300));
  }
  if (SIZE_FIELDS.has(name) && rng.chance(0.6)) return rng.pick([0, 1, 4096, 65536, 1 << 20, 2 ** 31, 2 ** 40, 2 ** 53 - 1, 2 ** 63]);
  if (name === 'size' && owner === 'ReadRequest') {
    return rng.chance(0.8) ? rng.pick([0, 1, 100, 4096, 65536]) : rng.pick([1 << 20, 4 << 20, (4 << 20) + 1, 16 << 20, (16 << 20) + 1, 2 ** 32 - 1]);
  }
  if (name === 'maxEntries') return rng.pick([0, 1, 2, 10, 1024, 4096, 65536, 2 ** 32 - 1]);
  if (name === 'flags' && owner === 'OpenRequest') return rng.pick([0, 1, 2, 3, 0o100, 0o1000, 0o2000, 0o40000, 0o200000, 0o10000000, 0o20200000, rng.u32()]);
  if (name === 'whence') return rng.pick([0, 1, 2, 3, 4, 5, rng.u32()]);
  switch (field.type) {
    case 'uint64':
    case 'fixed64':
      return randomU64(rng);
    case 'int64':
    case 'sint64':
    case 'sfixed64':
      return rng.chance(0.5) ? rng.pick(I64_EDGES) : rng.int(2 ** 40) - 2 ** 39;
    case 'bool':
      return rng.chance(0.5);
    case 'string':
      return randomString(rng);
    default:
      return randomU32(rng);
  }
}

/**
 * A random instance of `type` as a plain object for the generated encoder. Each field is present
 * with probability `density`; repeated fields get 0-8 items, rarely a few thousand.
 */
export function randomMessage(rng: Prng, type: protobuf.Type, pools?: Pools, depth = 0, density = 0.85): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const field of type.fieldsArray) {
    if (!rng.chance(density)) continue;
    field.resolve();
    const one = (): unknown => {
      if (field.resolvedType instanceof protobuf.Type) {
        return depth >= 4 ? {} : randomMessage(rng, field.resolvedType, pools, depth + 1, density);
      }
      return scalar(rng, field, type.name, pools);
    };
    if (field.repeated) {
      const n = rng.chance(0.01) ? rng.range(1000, 5000) : rng.int(9);
      out[field.name] = Array.from({ length: n }, one);
    } else {
      out[field.name] = one();
    }
  }
  return out;
}
