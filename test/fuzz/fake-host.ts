// A hostile host for the guest side: a unix socket server that answers the guest's requests with
// right, random, wrong-typed, mutated, duplicated, late, misaddressed or no replies, mixes in events,
// requests of its own and garbage, and sometimes drops the connection. Hello and mountExport are
// answered properly most of the time, so the guest gets far enough to be fuzzed.
import crypto from 'node:crypto';
import net from 'node:net';
import { FrameDecoder, type Frame } from '../../shared/rpc/framing.js';
import { E } from '../../shared/fs/errors.js';
import type { BodyKind } from '../../shared/rpc/wire.js';
import type { Prng } from './prng.js';
import type { FuzzStats } from './stats.js';
import { REPLY_FOR, replies, requests, events } from './schema.js';
import { encodeEnvelope, frameBytes, type FuzzFrame } from './frames.js';
import { validHostFrame, randomBytesFrame, rawProtobufFrame, unknownTypeFrame } from './generators.js';
import { mutateFramed, mutateRaw } from './mutators.js';
import { emptyPools, randomU64 } from './values.js';

export interface FakeHostOptions {
  socketPath: string;
  rng: Prng;
  stats: FuzzStats;
  /** Frames left to send hostile ones; at 0 the fake host turns well-behaved so operations finish. */
  budget: { remaining: number };
  onFrame?: () => void;
}

const ERRNOS = [E.ENOENT, E.EIO, E.ESTALE, E.EBADF, E.EACCES, E.EPERM, E.EINVAL, E.ENOSPC, E.EEXIST, E.ENOTCONN, E.ETIMEDOUT, E.EAGAIN, E.EINTR, E.ENOSYS, E.EPROTO, E.ERANGE];
const WEIRD_ERRNOS = [0, 4096, 65535, 2 ** 31, 2 ** 32 - 1];

export class FakeHost {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  /** Node ids the fake host hands out: plausible (small, mostly distinct), so the guest gets deep. */
  private readonly pools = { ...emptyPools(), nodes: Array.from({ length: 60 }, (_, i) => i + 2) };
  private nextRequestId = 1;
  /** Most sockets open at once (a guest that never closes old connections shows here). */
  maxSockets = 0;

  constructor(private readonly opts: FakeHostOptions) {
    this.server = net.createServer((s) => this.accept(s));
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.socketPath, () => resolve());
    });
  }

  get openSockets(): number {
    return this.sockets.size;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private get hostile(): boolean {
    return this.opts.budget.remaining > 0;
  }

  private accept(socket: net.Socket): void {
    this.sockets.add(socket);
    this.maxSockets = Math.max(this.maxSockets, this.sockets.size);
    this.opts.stats.inc('guest.connections');
    const decoder = new FrameDecoder({ maxEnvelope: 64 << 20, maxPayload: 64 << 20 });
    socket.on('error', () => undefined);
    socket.on('close', () => this.sockets.delete(socket));
    this.push(socket);
    socket.on('data', (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = decoder.push(chunk);
      } catch (err) {
        this.opts.stats.find('guest', 'undecodable-request', `the guest sent a frame the protocol decoder rejects: ${(err as Error).message}`, (err as Error).message.replace(/\d+/g, 'N'));
        socket.destroy();
        return;
      }
      for (const f of frames) this.onGuestFrame(socket, f);
    });
  }

  private send(socket: net.Socket, f: FuzzFrame | Buffer): void {
    if (socket.destroyed) return;
    const bytes = Buffer.isBuffer(f) ? f : f.bytes;
    socket.write(bytes);
    this.opts.budget.remaining--;
    this.opts.stats.framesGuest++;
    this.opts.onFrame?.();
  }

  private right(kind: BodyKind, id: number, req: Frame): FuzzFrame {
    const rng = this.opts.rng;
    const replyKind = REPLY_FOR[kind] ?? 'ok';
    // Entries for a name keep the same inode number (a hash of the name) most of the time, so the
    // guest's re-lookups after a reconnection find "the same file" and its handles are reopened.
    const named = (req.envelope[kind as 'lookup'] as { name?: Uint8Array; newName?: Uint8Array } | undefined);
    const name = named?.name ?? named?.newName;
    if ((replyKind === 'entry' || replyKind === 'created') && name && rng.chance(0.8)) {
      const ino = crypto.createHash('sha1').update(name).digest().readUInt32LE(0) + 2;
      const entry = { nodeId: rng.pick(this.pools.nodes), generation: 0, attr: { ino, mode: rng.pick([0o100644, 0o40755, 0o120777]), nlink: 1, size: rng.int(1 << 20) } };
      const body = replyKind === 'entry' ? { entry: { entry } } : { created: { entry, fh: rng.range(1, 100) } };
      return { bytes: frameBytes(encodeEnvelope({ id, ...body })!), label: `right:${replyKind}`, clean: true };
    }
    if (replyKind === 'helloReply') {
      return { bytes: frameBytes(encodeEnvelope({ id, helloReply: { version: 1, features: ['payload-frames'], agent: 'fake-host/0', maxFrame: 1 << 20, vmName: 'fuzz' } })!), label: 'hello-reply', clean: true };
    }
    if (replyKind === 'mountReply') {
      return { bytes: frameBytes(encodeEnvelope({ id, mountReply: { exportId: rng.range(1, 3), info: { name: 'default', target: '', cacheMode: 'long' }, root: { ino: 1, mode: 0o40755, nlink: 2 } } })!), label: 'mount-reply', clean: true };
    }
    if (replyKind === 'pong') return { bytes: frameBytes(encodeEnvelope({ id, pong: { nonce: 1 } })!), label: 'pong', clean: true };
    const f = validHostFrame(rng, replyKind, id, this.pools);
    return f;
  }

  private onGuestFrame(socket: net.Socket, f: Frame): void {
    const { stats, rng } = this.opts;
    const kind = f.envelope.body;
    const id = Number(f.envelope.id);
    stats.inc(`guest.sent.${kind ?? 'none'}`);
    if (!kind) return;
    const isRequest = requests.some((r) => r.name === kind) && id !== 0;
    if (!isRequest) return; // events (forget, cancel), replies to our requests, goodbye
    // Control requests: answered properly most of the time, else the guest never gets going.
    const control = kind === 'hello' || kind === 'mountExport' || kind === 'ping';
    if (!this.hostile || (control && rng.chance(0.85))) {
      this.send(socket, this.right(kind, id, f));
      return;
    }
    const mode = rng.weighted({ right: 45, error: 15, wrong: 10, mutated: 4, raw: 1, silent: 4, late: 5, dupe: 3, wrongId: 4, close: 0.5, extra: 9 });
    stats.inc(`guest.mode.${mode}`);
    switch (mode) {
      case 'right':
        this.send(socket, this.right(kind, id, f));
        break;
      case 'error': {
        const errno = rng.chance(0.85) ? rng.pick(ERRNOS) : rng.pick(WEIRD_ERRNOS);
        this.send(socket, frameBytes(encodeEnvelope({ id, error: { errno, message: rng.chance(0.5) ? 'fuzz' : rng.bytes(rng.size(200)).toString('latin1') } })!));
        break;
      }
      case 'wrong':
        this.send(socket, validHostFrame(rng, rng.pick(replies).name, id, this.pools));
        break;
      case 'mutated':
        this.send(socket, mutateFramed(rng, this.right(kind, id, f)));
        break;
      case 'raw': {
        const g = rng.weighted({ mutate: 2, random: 1, rawpb: 1 });
        this.send(socket, g === 'mutate' ? mutateRaw(rng, this.right(kind, id, f)) : g === 'random' ? randomBytesFrame(rng) : rawProtobufFrame(rng));
        break;
      }
      case 'silent':
        break; // the guest's deadline must fire
      case 'late': {
        const frame = this.right(kind, id, f);
        setTimeout(() => this.send(socket, frame), rng.range(1, 600));
        break;
      }
      case 'dupe': {
        const frame = this.right(kind, id, f);
        this.send(socket, frame);
        this.send(socket, frame);
        break;
      }
      case 'wrongId':
        this.send(socket, this.right(kind, rng.chance(0.5) ? id + 1 : randomU64(rng), f));
        if (rng.chance(0.5)) this.send(socket, this.right(kind, id, f));
        break;
      case 'close':
        socket.destroy();
        return;
      case 'extra':
        for (let i = rng.range(1, 4); i > 0; i--) this.send(socket, this.unsolicited());
        this.send(socket, this.right(kind, id, f));
        break;
    }
  }

  /**
   * Unsolicited traffic while the guest works: a few frames per turn of the event loop (events,
   * requests to the guest, stray replies, unknown types), now and then one that breaks the stream.
   */
  private push(socket: net.Socket): void {
    const rng = this.opts.rng;
    const turn = () => {
      if (socket.destroyed || !this.hostile) return;
      for (let i = 0; i < 16; i++) {
        const r = rng.float();
        if (r < 0.0005) {
          this.opts.stats.inc('guest.push.breaking');
          this.send(socket, rng.chance(0.5) ? randomBytesFrame(rng) : mutateRaw(rng, this.unsolicited()));
          return; // the guest closes this session; its next connection gets a new pusher
        }
        this.send(socket, r < 0.005 ? mutateFramed(rng, this.unsolicited()) : this.unsolicited());
      }
      this.opts.stats.inc('guest.push.turns');
      if (socket.writableLength > 1 << 20) {
        this.opts.stats.inc('guest.push.drain-waits');
        socket.once('drain', () => setImmediate(turn));
      } else setImmediate(turn);
    };
    setImmediate(turn);
  }

  /** A frame nobody asked for: events, our own requests to the guest, stray replies, unknown types. */
  private unsolicited(): FuzzFrame {
    const rng = this.opts.rng;
    switch (rng.weighted({ event: 5, request: 2, reply: 2, unknown: 1, ping: 1 })) {
      case 'event': {
        const kind = rng.pick(events.filter((e) => e.name !== 'goodbye' || rng.chance(0.01))).name;
        return validHostFrame(rng, kind, rng.chance(0.9) ? 0 : randomU64(rng), this.pools);
      }
      case 'request':
        return validHostFrame(rng, rng.pick(requests).name, this.nextRequestId++, this.pools);
      case 'reply':
        return validHostFrame(rng, rng.pick(replies).name, randomU64(rng), this.pools);
      case 'ping':
        return { bytes: frameBytes(encodeEnvelope({ id: this.nextRequestId++, ping: { nonce: 7 } })!), label: 'ping', clean: true };
      default:
        return unknownTypeFrame(rng, rng.chance(0.5) ? 0 : this.nextRequestId++);
    }
  }
}
