// Reusable receive buffers for large frames. A frame bigger than one socket read is assembled in a
// buffer of its own; allocating a fresh 1 MiB buffer per write request made the host agent spend a
// third of its CPU in the garbage collector (external memory pressure forces full collections).
// Buffers go back to the pool when their frame's owner says it is done with them; a buffer that is
// never released is simply garbage collected, so forgetting to release costs speed, not memory.

/** Frames below this size are not pooled (they are cheap to allocate and usually fit one read). */
const MIN_POOLED = 64 << 10;
/** Pooled capacities are rounded up to this, so frames of nearly the same size share buffers. */
const GRANULE = 64 << 10;

export class BufferPool {
  private readonly free: ArrayBuffer[] = [];
  private freeBytes = 0;
  private reusedCount = 0;

  /** @param maxFreeBytes bytes kept for reuse at most (beyond, released buffers are dropped) */
  constructor(private readonly maxFreeBytes = 32 << 20) {}

  /** A buffer of exactly `n` bytes (a view of a possibly larger pooled one). */
  acquire(n: number): Buffer {
    if (n < MIN_POOLED) return Buffer.allocUnsafe(n);
    for (let i = this.free.length - 1; i >= 0; i--) {
      const ab = this.free[i];
      if (ab.byteLength >= n && ab.byteLength <= 2 * n) {
        this.free.splice(i, 1);
        this.freeBytes -= ab.byteLength;
        this.reusedCount++;
        return Buffer.from(ab, 0, n);
      }
    }
    return Buffer.from(new ArrayBuffer(Math.ceil(n / GRANULE) * GRANULE), 0, n);
  }

  /** Gives back a buffer from acquire(); it must not be used afterwards. */
  release(buf: Buffer): void {
    const ab = buf.buffer as ArrayBuffer;
    if (buf.length < MIN_POOLED || ab.byteLength % GRANULE !== 0) return; // not one of ours
    if (this.freeBytes + ab.byteLength > this.maxFreeBytes) return;
    this.free.push(ab);
    this.freeBytes += ab.byteLength;
  }

  get stats(): { free: number; freeBytes: number; reused: number } {
    return { free: this.free.length, freeBytes: this.freeBytes, reused: this.reusedCount };
  }
}

/** The pool every session of this process shares unless given its own. */
export const sharedPool = new BufferPool();
