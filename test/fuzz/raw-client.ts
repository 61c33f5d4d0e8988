// A protocol client with no manners, for hostile tests: it writes whatever bytes it is given,
// matches replies by id, can stop reading, and reports when the host closes the connection.
import net from 'node:net';
import { FrameDecoder, type Frame } from '../../shared/rpc/framing.js';
import type { EnvelopeInit } from '../../shared/rpc/wire.js';
import { encodeEnvelope, frameBytes } from './frames.js';

export const ROOT_CALLER = { uid: 0, gid: 0, pid: 1 };

export class RawClient {
  readonly socket: net.Socket;
  private readonly decoder = new FrameDecoder({ maxEnvelope: 64 << 20, maxPayload: 64 << 20 });
  private readonly waiters = new Map<number, (f: Frame) => void>();
  /** Replies nobody waits for, by id (most recent only), and how many arrived in all. */
  readonly unclaimed = new Map<number, Frame>();
  replies = 0;
  bytesIn = 0;
  errnos = new Map<number, number>();
  closed = false;
  readonly closedP: Promise<void>;
  exportId = 0;
  private nextId = 1;
  decodeError: Error | null = null;

  private constructor(path: string) {
    this.socket = net.connect(path);
    this.socket.on('error', () => undefined);
    this.closedP = new Promise((resolve) => this.socket.once('close', () => ((this.closed = true), resolve())));
    this.socket.on('data', (c: Buffer) => {
      this.bytesIn += c.length;
      let frames: Frame[];
      try {
        frames = this.decoder.push(c);
      } catch (err) {
        this.decodeError = err as Error;
        this.socket.destroy();
        return;
      }
      for (const f of frames) {
        this.replies++;
        const e = f.envelope.error?.errno;
        if (e !== undefined && e !== null) this.errnos.set(e, (this.errnos.get(e) ?? 0) + 1);
        const id = Number(f.envelope.id);
        const w = this.waiters.get(id);
        if (w) {
          this.waiters.delete(id);
          w(f);
        } else {
          this.unclaimed.set(id, f);
          if (this.unclaimed.size > 1000) this.unclaimed.delete(this.unclaimed.keys().next().value!);
        }
      }
    });
  }

  static async connect(path: string): Promise<RawClient> {
    const c = new RawClient(path);
    await new Promise<void>((resolve, reject) => {
      c.socket.once('connect', () => resolve());
      c.socket.once('error', reject);
    });
    return c;
  }

  /** Connects, says Hello with `token` and mounts the export "default". */
  static async mounted(path: string, token: string): Promise<RawClient> {
    const c = await RawClient.connect(path);
    const h = await c.call({ hello: { minVersion: 1, maxVersion: 1, token, agent: 'hostile/0' } });
    if (!h.envelope.helloReply) throw new Error(`Hello refused: ${JSON.stringify(h.envelope.error)}`);
    const m = await c.call({ mountExport: { name: 'default' } });
    if (!m.envelope.mountReply) throw new Error(`mountExport refused: ${JSON.stringify(m.envelope.error)}`);
    c.exportId = m.envelope.mountReply.exportId!;
    return c;
  }

  id(): number {
    return this.nextId++;
  }

  /** Encodes a frame for a file operation on our export (id, export and caller filled in). */
  frame(body: EnvelopeInit, id = this.id(), payload?: Buffer): Buffer {
    return frameBytes(encodeEnvelope({ exportId: this.exportId, caller: ROOT_CALLER, ...body, id })!, payload);
  }

  write(bytes: Buffer): boolean {
    return this.socket.write(bytes);
  }

  /** Sends a request and waits for its reply (rejects on close or after `ms`). */
  call(body: EnvelopeInit, opts: { payload?: Buffer; ms?: number } = {}): Promise<Frame> {
    const id = this.id();
    const p = this.reply(id, opts.ms ?? 10_000);
    this.write(this.frame(body, id, opts.payload));
    return p;
  }

  reply(id: number, ms: number): Promise<Frame> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new Error('connection closed'));
      const timer = setTimeout(() => {
        this.waiters.delete(id);
        reject(new Error(`no reply to request ${id} within ${ms} ms`));
      }, ms);
      this.waiters.set(id, (f) => {
        clearTimeout(timer);
        resolve(f);
      });
      void this.closedP.then(() => {
        if (!this.waiters.has(id)) return;
        this.waiters.delete(id);
        clearTimeout(timer);
        reject(new Error('connection closed'));
      });
    });
  }

  /** Resolves true if the host closes the connection within `ms`. */
  async closesWithin(ms: number): Promise<boolean> {
    if (this.closed) return true;
    return Promise.race([this.closedP.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Errno of a reply frame (0 when it is not an ErrorReply). */
export function errnoOf(f: Frame): number {
  return f.envelope.error?.errno ?? 0;
}
