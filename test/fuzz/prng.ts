// A small deterministic PRNG (sfc32, seeded through splitmix32) so that a fuzz run can be repeated
// from the seed it prints. Not for cryptography; fast and good enough for choosing test inputs.
// Long byte strings come from AES-128-CTR keyed by the PRNG: as deterministic, a hundred times faster.
import crypto from 'node:crypto';

export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(readonly seed: number) {
    let s = seed >>> 0;
    const split = (): number => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = split();
    this.b = split();
    this.c = split();
    this.d = split();
    for (let i = 0; i < 12; i++) this.u32();
  }

  /** A new generator whose sequence depends only on this seed and `label` (one per worker). */
  fork(label: number): Prng {
    return new Prng((Math.imul(this.seed ^ 0x5bd1e995, 31) + Math.imul(label + 1, 0x27d4eb2d)) >>> 0);
  }

  u32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** [0, 1) */
  float(): number {
    return this.u32() / 4294967296;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return n <= 4294967296 ? Math.floor(this.float() * n) : Math.floor((this.u32() * 4294967296 + this.u32()) % n);
  }

  /** Integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.float() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /** Picks a key by weight: { a: 3, b: 1 } gives "a" three times as often as "b". */
  weighted<K extends string>(weights: Readonly<Record<K, number>>): K {
    const entries = Object.entries(weights) as Array<[K, number]>;
    let total = 0;
    for (const [, w] of entries) total += w;
    let x = this.float() * total;
    for (const [k, w] of entries) {
      x -= w;
      if (x < 0) return k;
    }
    return entries[entries.length - 1][0];
  }

  bytes(n: number): Buffer {
    if (n > 64) {
      const key = Buffer.allocUnsafe(32);
      for (let i = 0; i < 32; i += 4) key.writeUInt32LE(this.u32(), i);
      const c = crypto.createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16));
      return c.update(Buffer.alloc(n));
    }
    const out = Buffer.allocUnsafe(n);
    let i = 0;
    for (; i + 4 <= n; i += 4) out.writeUInt32LE(this.u32(), i);
    for (; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }

  /** A length biased towards small values: mostly < 16, sometimes up to `max`. */
  size(max: number): number {
    const r = this.float();
    if (r < 0.6) return this.int(Math.min(16, max + 1));
    if (r < 0.9) return this.int(Math.min(512, max + 1));
    return this.int(max + 1);
  }
}

/** A seed from the environment (decimal or 0x hex) or from the clock. */
export function seedFrom(value: string | undefined): number {
  if (value && value.trim()) {
    const v = value.trim();
    const n = v.startsWith('0x') ? parseInt(v.slice(2), 16) : Number(v);
    if (!Number.isFinite(n)) throw new Error(`FUZZ_SEED must be a number, got "${value}"`);
    return n >>> 0;
  }
  return (Date.now() ^ (process.pid << 16)) >>> 0;
}
