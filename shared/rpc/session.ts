// An RPC session over any duplex byte stream: many requests in flight in both directions, replies
// matched by id in any order, per-request deadlines and cancellation, keepalive, and backpressure
// both ways (a peer that does not read stops us from reading its requests, so memory stays bounded).
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { FsError, E, toErrno } from '../fs/errors.js';
import type { Logger } from '../log.js';
import { sharedPool } from './buffer-pool.js';
import { encodeFrame, FrameDecoder, FrameError, DEFAULT_MAX_ENVELOPE, DEFAULT_MAX_PAYLOAD, type Frame, type FrameLimits } from './framing.js';
import { roleOf, type BodyKind, type EnvelopeInit } from './wire.js';

export interface Reply {
  body: EnvelopeInit;
  payload?: Uint8Array;
}

/** The payload is valid until the handler's promise settles (or, if the reply carries it, is sent). */
export interface IncomingRequest extends Frame {
  kind: BodyKind;
  /** Aborted when the peer cancels the request or the session closes. */
  signal: AbortSignal;
}

export interface SessionOptions {
  logger: Logger;
  limits?: FrameLimits;
  /** Send a ping after this long without traffic; close after three times as long. 0 disables. */
  keepaliveMs?: number;
  /** Deadline for outgoing requests that do not set their own. */
  defaultDeadlineMs?: number;
  /** Incoming requests handled at once; beyond it the stream is no longer read. */
  maxIncoming?: number;
  /** Outgoing requests in flight at once; beyond it request() waits for a slot. */
  maxOutgoing?: number;
  onRequest?: (req: IncomingRequest) => Promise<Reply> | Reply;
  onEvent?: (frame: Frame & { kind: BodyKind }) => void;
}

export interface RequestOptions {
  payload?: Uint8Array;
  deadlineMs?: number;
  signal?: AbortSignal;
}

interface Pending {
  kind: BodyKind;
  resolve(frame: Frame): void;
  reject(err: Error): void;
  timer?: NodeJS.Timeout;
  onAbort?: () => void;
  signal?: AbortSignal;
}

export class Session extends EventEmitter {
  readonly log: Logger;
  private readonly decoder: FrameDecoder;
  private readonly limits: FrameLimits;
  private readonly pending = new Map<number, Pending>();
  private readonly incoming = new Map<number, AbortController>();
  private readonly backlog: Frame[] = [];
  private readonly slotWaiters: Array<() => void> = [];
  private nextId = 1;
  private active = 0;
  private lastReceived = Date.now();
  private keepaliveTimer?: NodeJS.Timeout;
  private closedReason: string | null = null;
  private replyBytesQueued = 0;
  private corked = false;
  /** Reply bytes written but not yet taken by the kernel, beyond which we stop reading requests. */
  private readonly maxReplyBacklog = 8 << 20;
  private readonly opts: Required<Pick<SessionOptions, 'keepaliveMs' | 'defaultDeadlineMs' | 'maxIncoming' | 'maxOutgoing'>> & SessionOptions;
  /** Counters for status and benchmarks. */
  readonly stats = { requestsIn: 0, requestsOut: 0, bytesIn: 0, bytesOut: 0, errors: 0 };

  constructor(readonly stream: Duplex, options: SessionOptions) {
    super();
    // Options given as undefined keep their defaults (a spread would let `maxIncoming: undefined`
    // replace the default and leave the session with no in-flight limit at all).
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as SessionOptions;
    this.opts = { keepaliveMs: 15_000, defaultDeadlineMs: 60_000, maxIncoming: 256, maxOutgoing: 1024, ...given };
    this.log = options.logger;
    this.limits = options.limits ?? { maxEnvelope: DEFAULT_MAX_ENVELOPE, maxPayload: DEFAULT_MAX_PAYLOAD };
    this.decoder = new FrameDecoder(this.limits, sharedPool);
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('end', () => this.shutdown('peer closed the connection'));
    stream.on('close', () => this.shutdown('connection closed'));
    stream.on('error', (err: NodeJS.ErrnoException) => this.shutdown(`connection error: ${err.code ?? err.message}`, err));
    if (this.opts.keepaliveMs > 0) {
      this.keepaliveTimer = setInterval(() => this.keepalive(), this.opts.keepaliveMs);
      this.keepaliveTimer.unref();
    }
  }

  get closed(): boolean {
    return this.closedReason !== null;
  }

  get inFlight(): { outgoing: number; incoming: number } {
    return { outgoing: this.pending.size, incoming: this.active };
  }

  /** Sends a request and resolves with the reply frame; an ErrorReply rejects with FsError. */
  async request(body: EnvelopeInit, options: RequestOptions = {}): Promise<Frame> {
    const kind = bodyKind(body);
    while (this.pending.size >= this.opts.maxOutgoing && !this.closed) {
      await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
    }
    if (this.closedReason !== null) throw new FsError(E.ENOTCONN, `session closed: ${this.closedReason}`);
    if (options.signal?.aborted) throw new FsError(E.ECANCELED, `${kind} request cancelled`);
    const id = this.nextId++;
    const deadlineMs = options.deadlineMs ?? this.opts.defaultDeadlineMs;
    return new Promise<Frame>((resolve, reject) => {
      const entry: Pending = { kind, resolve, reject, signal: options.signal };
      if (deadlineMs > 0) {
        entry.timer = setTimeout(() => this.giveUp(id, new FsError(E.ETIMEDOUT, `${kind} request timed out after ${deadlineMs} ms`)), deadlineMs);
      }
      if (options.signal) {
        entry.onAbort = () => this.giveUp(id, new FsError(E.ECANCELED, `${kind} request cancelled`));
        options.signal.addEventListener('abort', entry.onAbort, { once: true });
      }
      this.pending.set(id, entry);
      this.stats.requestsOut++;
      this.send({ ...body, id }, options.payload);
    });
  }

  /** Sends an event (id 0): no reply. */
  notify(body: EnvelopeInit, payload?: Uint8Array): void {
    if (this.closed) return;
    this.send({ ...body, id: 0 }, payload);
  }

  /** Orderly close: tells the peer why, fails what is pending, ends the stream. */
  close(reason = 'closed by this side'): void {
    if (this.closed) return;
    this.notify({ goodbye: { reason } });
    this.shutdown(reason);
    this.stream.end();
  }

  /** Resolves once the peer is known to be alive (round trip of a ping). */
  async ping(deadlineMs?: number): Promise<number> {
    const start = process.hrtime.bigint();
    await this.request({ ping: { nonce: Date.now() } }, { deadlineMs });
    return Number(process.hrtime.bigint() - start) / 1e6;
  }

  // ---- internals ----

  /** Writes one frame; `onFlushed` runs once the kernel has taken its last byte. */
  private send(envelope: EnvelopeInit, payload?: Uint8Array, onFlushed?: () => void): void {
    let chunks: Buffer[];
    try {
      chunks = encodeFrame(envelope, payload, this.limits);
    } catch (err) {
      // Our own bug or an oversize reply: fail that one message, keep the session.
      this.log.error({ err }, 'cannot encode frame');
      onFlushed?.();
      if (envelope.id && roleOf(bodyKind(envelope)) === 'request') this.giveUp(Number(envelope.id), new FsError(E.EIO, (err as Error).message));
      else if (envelope.id) this.send({ id: envelope.id, error: { errno: E.EIO, message: (err as Error).message } });
      return;
    }
    // Frames sent in the same tick leave in one writev: many small replies, one syscall.
    if (!this.corked) {
      this.corked = true;
      this.stream.cork();
      process.nextTick(() => {
        this.corked = false;
        this.stream.uncork();
      });
    }
    for (let i = 0; i < chunks.length; i++) {
      this.stats.bytesOut += chunks[i].length;
      if (i === chunks.length - 1 && onFlushed) this.stream.write(chunks[i], () => onFlushed());
      else this.stream.write(chunks[i]);
    }
  }

  /**
   * Sends a reply and counts its bytes until they are flushed. Only replies count: they are output
   * the peer's input makes us produce, so a peer that stops reading must stop us taking its input.
   * Our own requests never stop us reading (their replies are what would unblock them).
   */
  private sendReply(envelope: EnvelopeInit, payload?: Uint8Array, onFlushed?: () => void): void {
    const bytes = (payload?.length ?? 0) + 64;
    this.replyBytesQueued += bytes;
    this.send(envelope, payload, () => {
      this.replyBytesQueued -= bytes;
      onFlushed?.();
      if (this.replyBytesQueued <= this.maxReplyBacklog) this.pump();
    });
  }

  private onData(chunk: Buffer): void {
    this.lastReceived = Date.now();
    this.stats.bytesIn += chunk.length;
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      const reason = err instanceof FrameError ? err.message : String(err);
      this.log.warn({ reason }, 'protocol violation; closing session');
      this.stats.errors++;
      this.shutdown(`protocol violation: ${reason}`);
      this.stream.destroy();
      return;
    }
    for (const f of frames) this.backlog.push(f);
    this.pump();
  }

  /** Dispatches queued frames while there is capacity; reads from the stream only when there is. */
  private pump(): void {
    const busy = () => this.active >= this.opts.maxIncoming || this.replyBytesQueued > this.maxReplyBacklog;
    while (this.backlog.length > 0 && !busy() && !this.closed) {
      this.dispatch(this.backlog.shift()!);
    }
    const congested = this.backlog.length > 0 || busy();
    if (congested && !this.stream.isPaused()) this.stream.pause();
    else if (!congested && this.stream.isPaused() && !this.closed) this.stream.resume();
  }

  private dispatch(frame: Frame): void {
    const { envelope } = frame;
    const id = Number(envelope.id);
    const kind = envelope.body;
    if (!kind) {
      // A message type from a newer peer, or garbage that happened to parse.
      if (id !== 0) this.sendReply({ id, error: { errno: E.ENOSYS, message: 'unknown request type' } });
      this.log.debug({ id }, 'ignored a message of unknown type');
      return;
    }
    const role = roleOf(kind);
    if (role === 'reply') return this.settle(id, frame, kind);
    if (role === 'event' || id === 0) return this.onPeerEvent({ ...frame, kind });
    if (kind === 'ping') return this.sendReply({ id, pong: { nonce: envelope.ping!.nonce } });
    this.serve(id, kind, frame);
  }

  private serve(id: number, kind: BodyKind, frame: Frame): void {
    const handler = this.opts.onRequest;
    if (!handler) {
      this.sendReply({ id, error: { errno: E.ENOSYS, message: `${kind} is not served here` } });
      return;
    }
    if (this.incoming.has(id)) {
      this.sendReply({ id, error: { errno: E.EINVAL, message: `request id ${id} is already in flight` } });
      return;
    }
    const controller = new AbortController();
    this.incoming.set(id, controller);
    this.active++;
    this.stats.requestsIn++;
    Promise.resolve()
      .then(() => handler({ ...frame, kind, signal: controller.signal }))
      .then(
        (reply) => {
          // The reply may carry the request's own buffer (an echo): reuse it only once it is sent.
          if (!controller.signal.aborted) this.sendReply({ ...reply.body, id }, reply.payload, frame.release);
          else frame.release?.();
        },
        (err: unknown) => {
          frame.release?.();
          if (controller.signal.aborted) return;
          this.stats.errors++;
          const errno = toErrno(err);
          if (!(err instanceof FsError) && errno === E.EIO) this.log.error({ err, kind }, 'request handler failed');
          this.sendReply({ id, error: { errno, message: err instanceof Error ? err.message : String(err) } });
        },
      )
      .finally(() => {
        this.incoming.delete(id);
        this.active--;
        this.pump();
      });
  }

  private settle(id: number, frame: Frame, kind: BodyKind): void {
    const entry = this.pending.get(id);
    if (!entry) {
      this.log.debug({ id, kind }, 'reply for a request no longer pending (cancelled or timed out)');
      return;
    }
    this.forgetPending(id, entry);
    if (kind === 'error') {
      const e = frame.envelope.error!;
      entry.reject(new FsError(wireErrno(e.errno), e.message || undefined));
    } else {
      entry.resolve(frame);
    }
  }

  private onPeerEvent(frame: Frame & { kind: BodyKind }): void {
    switch (frame.kind) {
      case 'cancel':
        this.incoming.get(Number(frame.envelope.cancel!.requestId))?.abort();
        return;
      case 'goodbye':
        this.log.info({ reason: frame.envelope.goodbye!.reason }, 'peer said goodbye');
        this.shutdown(`peer closed the session: ${frame.envelope.goodbye!.reason || 'no reason given'}`);
        this.stream.destroy(); // nothing more will be said either way; release the connection now
        return;
      default:
        this.opts.onEvent?.(frame);
    }
  }

  private giveUp(id: number, err: FsError): void {
    const entry = this.pending.get(id);
    if (!entry) return;
    this.forgetPending(id, entry);
    if (!this.closed) this.notify({ cancel: { requestId: id } });
    entry.reject(err);
  }

  private forgetPending(id: number, entry: Pending): void {
    this.pending.delete(id);
    if (entry.timer) clearTimeout(entry.timer);
    if (entry.onAbort) entry.signal?.removeEventListener('abort', entry.onAbort);
    this.slotWaiters.shift()?.();
  }

  private keepalive(): void {
    const idle = Date.now() - this.lastReceived;
    if (idle > 3 * this.opts.keepaliveMs) {
      this.log.warn({ idleMs: idle }, 'peer unresponsive; closing session');
      this.shutdown(`peer unresponsive for ${idle} ms`);
      this.stream.destroy();
    } else if (idle >= this.opts.keepaliveMs) {
      this.ping(2 * this.opts.keepaliveMs).catch(() => {});
    }
  }

  private shutdown(reason: string, error?: Error): void {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    for (const [id, entry] of this.pending) {
      this.forgetPending(id, entry);
      entry.reject(new FsError(E.ENOTCONN, `session closed: ${reason}`));
    }
    for (const c of this.incoming.values()) c.abort();
    this.backlog.length = 0;
    for (const w of this.slotWaiters.splice(0)) w();
    this.emit('close', reason, error);
  }
}

/** An errno from the wire as a valid Linux errno (1-4095); anything else (0, negative, huge) is EIO. */
export function wireErrno(errno: number | null | undefined): number {
  return typeof errno === 'number' && Number.isInteger(errno) && errno > 0 && errno < 4096 ? errno : E.EIO;
}

export function bodyKind(body: EnvelopeInit): BodyKind {
  for (const key in body) {
    if (key !== 'id' && key !== 'exportId' && key !== 'caller' && (body as Record<string, unknown>)[key] != null) return key as BodyKind;
  }
  throw new Error('envelope without a body');
}
