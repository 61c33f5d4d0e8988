// Frames: u32be envelope length | u32be payload length | Envelope | payload.
// The decoder checks both lengths against its limits before it allocates or waits for a body, so a
// peer announcing 4 GiB costs nothing; bytes that do not parse end the session, never the process.
import { BufferPool } from './buffer-pool.js';
import { Envelope, type EnvelopeInit } from './wire.js';

export const HEADER_SIZE = 8;
export const DEFAULT_MAX_ENVELOPE = 1 << 20; // 1 MiB of protobuf (readdir pages, export lists)
export const DEFAULT_MAX_PAYLOAD = 4 << 20; // 4 MiB of file data (FUSE max_write is 1 MiB)

export interface Frame {
  envelope: Envelope;
  /** Bulk data, a view into the receive buffer (valid as long as the Frame is referenced). */
  payload?: Buffer;
  /**
   * Set when the frame was assembled in a pooled buffer: the owner calls it once nothing uses the
   * payload any more (then the buffer is reused). Not calling it is safe.
   */
  release?: () => void;
}

export class FrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FrameError';
  }
}

export interface FrameLimits {
  maxEnvelope: number;
  maxPayload: number;
}

/** Encodes a frame as the chunks to hand to one writev: [header + envelope, payload?]. */
export function encodeFrame(envelope: EnvelopeInit, payload?: Uint8Array, limits?: FrameLimits): Buffer[] {
  const body = Envelope.encode(envelope).finish();
  const payloadLength = payload?.length ?? 0;
  if (limits && (body.length > limits.maxEnvelope || payloadLength > limits.maxPayload)) {
    throw new FrameError(`frame too large to send: envelope ${body.length} bytes, payload ${payloadLength} bytes`);
  }
  const head = Buffer.allocUnsafe(HEADER_SIZE + body.length);
  head.writeUInt32BE(body.length, 0);
  head.writeUInt32BE(payloadLength, 4);
  head.set(body, HEADER_SIZE);
  return payloadLength > 0 ? [head, Buffer.from(payload!.buffer, payload!.byteOffset, payloadLength)] : [head];
}

/**
 * Incremental decoder. Chunks are kept in a list and joined only once a whole frame is present, so
 * a frame split into many small chunks costs one copy, and a chunk holding many frames none.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private need = HEADER_SIZE; // bytes needed before the next step can run
  private header: { envelope: number; payload: number } | null = null;

  constructor(
    private readonly limits: FrameLimits = { maxEnvelope: DEFAULT_MAX_ENVELOPE, maxPayload: DEFAULT_MAX_PAYLOAD },
    private readonly pool?: BufferPool,
  ) {}

  /** Bytes held that do not yet form a frame. */
  get pending(): number {
    return this.buffered;
  }

  /** Feeds bytes; returns the frames they complete. Throws FrameError on invalid input. */
  push(chunk: Buffer): Frame[] {
    const frames: Frame[] = [];
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    while (this.buffered >= this.need) {
      if (!this.header) {
        const head = this.take(HEADER_SIZE).buf;
        const envelope = head.readUInt32BE(0);
        const payload = head.readUInt32BE(4);
        if (envelope === 0) throw new FrameError('frame with an empty envelope');
        if (envelope > this.limits.maxEnvelope) {
          throw new FrameError(`frame envelope of ${envelope} bytes exceeds the limit of ${this.limits.maxEnvelope}`);
        }
        if (payload > this.limits.maxPayload) {
          throw new FrameError(`frame payload of ${payload} bytes exceeds the limit of ${this.limits.maxPayload}`);
        }
        this.header = { envelope, payload };
        this.need = envelope + payload;
      } else {
        const { envelope: envLength, payload: payloadLength } = this.header;
        const { buf: body, pooled } = this.take(envLength + payloadLength);
        let envelope: Envelope;
        try {
          envelope = Envelope.decode(body.subarray(0, envLength));
        } catch (err) {
          throw new FrameError(`undecodable envelope: ${(err as Error).message}`);
        }
        const frame: Frame = payloadLength > 0 ? { envelope, payload: body.subarray(envLength) } : { envelope };
        if (pooled) {
          const pool = this.pool!;
          let released = false;
          frame.release = () => {
            if (!released) pool.release(body);
            released = true;
          };
        }
        frames.push(frame);
        this.header = null;
        this.need = HEADER_SIZE;
      }
    }
    return frames;
  }

  /**
   * Removes exactly n bytes from the front of the buffered chunks (no copy when one chunk suffices;
   * otherwise into a buffer from the pool, if there is one: `pooled`).
   */
  private take(n: number): { buf: Buffer; pooled: boolean } {
    const first = this.chunks[0];
    let out: Buffer;
    let pooled = false;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      pooled = this.pool !== undefined;
      out = this.pool ? this.pool.acquire(n) : Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const c = this.chunks[0];
        const use = Math.min(c.length, n - filled);
        c.copy(out, filled, 0, use);
        filled += use;
        if (use === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(use);
      }
    }
    this.buffered -= n;
    return { buf: out, pooled };
  }
}
