// The guest's connection to its host agent. It connects (with the token where the transport needs
// one), runs Hello, and, once it has been up, reconnects by itself with backoff whenever the
// connection drops (host agent restart, vsock reset). Each successful connection is a new epoch:
// node ids and handles the host gave out in an earlier epoch mean nothing in the new one.
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { Session } from '../shared/rpc/session.js';
import { sendHello, AGENT_VERSION, type HelloResult } from '../shared/rpc/hello.js';
import { connect } from '../shared/transport/index.js';
import { FsError, E } from '../shared/fs/errors.js';
import { attrFromWire } from '../shared/fs/convert.js';
import type { Attr } from '../shared/fs/interface.js';
import type { Logger } from '../shared/log.js';
import type { Frame } from '../shared/rpc/framing.js';
import type { BodyKind } from '../shared/rpc/wire.js';

export interface ExportInfo {
  name: string;
  target: string;
  readOnly: boolean;
  cacheMode: string;
  mountOptions: string[];
}

export interface MountedExport {
  exportId: number;
  info: ExportInfo;
  root: Attr;
}

export interface HostLinkOptions {
  uri: string;
  token?: string;
  logger: Logger;
  connectTimeoutMs?: number;
  keepaliveMs?: number;
  /** Per-request deadline on the wire. */
  requestDeadlineMs?: number;
  /** vsock CIDs 0-2 are the hypervisor; a real guest connects to CID 2 (the host). */
  allowHostCid?: boolean;
  /** Backoff between connection attempts. */
  retryInitialMs?: number;
  retryMaxMs?: number;
}

export class HostLink extends EventEmitter {
  private session: Session | null = null;
  private stopped = false;
  private connecting: Promise<void> | null = null;
  private waiters: Array<() => void> = [];
  /** Increments on every successful connection. */
  epoch = 0;
  /** When the last connection was lost, while no new one is up (ms since the epoch); else null. */
  disconnectedAt: number | null = null;
  hello: HelloResult | null = null;

  constructor(private readonly opts: HostLinkOptions) {
    super();
  }

  get uri(): string {
    return this.opts.uri;
  }

  /** The live session, if any, without waiting. */
  get activeSession(): Session | null {
    return this.connected ? this.session : null;
  }

  get connected(): boolean {
    return !!this.session && !this.session.closed;
  }

  /** First connection: one attempt, errors thrown (a mount command should say at once what is wrong). */
  async connect(): Promise<HelloResult> {
    await this.attempt();
    return this.hello!;
  }

  /** First connection for a daemon: retries with backoff until the host answers. */
  async connectWithRetry(): Promise<HelloResult> {
    await this.retryLoop();
    return this.hello!;
  }

  /** The current session; waits up to `waitMs` for a reconnection, then fails with ENOTCONN. */
  async current(waitMs = 0): Promise<Session> {
    if (this.connected) return this.session!;
    if (this.stopped) throw new FsError(E.ENOTCONN, 'the guest agent is stopping');
    if (waitMs > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.waiters.push(resolve)),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs))),
      ]);
      clearTimeout(timer);
      if (this.connected) return this.session!;
    }
    throw new FsError(E.ENOTCONN, `not connected to the host agent at ${this.opts.uri} (reconnecting)`);
  }

  async listExports(): Promise<ExportInfo[]> {
    const f = await (await this.current()).request({ listExports: {} });
    if (!f.envelope.exportList) throw new FsError(E.EPROTO, `host agent at ${this.opts.uri} answered listExports with ${f.envelope.body ?? 'an unknown message'}, not ExportList`);
    return (f.envelope.exportList.exports ?? []).map(toInfo);
  }

  async mountExport(name: string, session?: Session): Promise<MountedExport> {
    const f = await (session ?? (await this.current())).request({ mountExport: { name } });
    const r = f.envelope.mountReply;
    if (!r) throw new FsError(E.EPROTO, `host agent at ${this.opts.uri} answered mountExport with ${f.envelope.body ?? 'an unknown message'}, not MountReply; check that both agents are the same version`);
    return { exportId: r.exportId ?? 0, info: toInfo(r.info ?? {}), root: attrFromWire(r.root) };
  }

  close(reason = 'guest agent stopping'): void {
    this.stopped = true;
    this.session?.close(reason);
    this.session = null;
    for (const w of this.waiters.splice(0)) w();
  }

  /** Drops the connection without stopping (tests simulate a transport reset with it). */
  dropConnection(): void {
    this.session?.stream.destroy();
  }

  private async attempt(): Promise<void> {
    const { stream } = await connect(this.opts.uri, { timeoutMs: this.opts.connectTimeoutMs, allowHostCid: this.opts.allowHostCid });
    const session = new Session(stream, {
      logger: this.opts.logger,
      keepaliveMs: this.opts.keepaliveMs,
      defaultDeadlineMs: this.opts.requestDeadlineMs,
      onEvent: (frame) => this.emit('event', frame as Frame & { kind: BodyKind }),
    });
    try {
      this.hello = await sendHello(session, { token: this.opts.token, agent: `dirvisor-guest/${AGENT_VERSION}` });
    } catch (err) {
      // Release the socket now: a host that does not close its side must not keep it half-open.
      session.close('hello failed');
      stream.destroy();
      if (err instanceof FsError && err.errno === E.EACCES) {
        throw new FsError(E.EACCES, `host agent at ${this.opts.uri} refused this guest: ${err.message}`);
      }
      throw err;
    }
    if (this.stopped) {
      session.close('guest agent stopping');
      return;
    }
    this.session = session;
    this.epoch++;
    this.disconnectedAt = null;
    session.once('close', (reason: string) => {
      if (this.session !== session) return;
      this.session = null;
      this.disconnectedAt = Date.now();
      if (this.stopped) return;
      this.opts.logger.warn({ reason, uri: this.opts.uri }, 'connection to the host agent lost; reconnecting');
      this.emit('disconnected', reason);
      void this.retryLoop();
    });
    this.opts.logger.info({ uri: this.opts.uri, epoch: this.epoch, host: this.hello.agent, vm: this.hello.vmName }, 'connected to the host agent');
    for (const w of this.waiters.splice(0)) w();
    this.emit('connected', this.epoch);
  }

  private retryLoop(): Promise<void> {
    this.connecting ??= (async () => {
      let delay = this.opts.retryInitialMs ?? 100;
      let attempts = 0;
      while (!this.stopped && !this.connected) {
        try {
          await this.attempt();
        } catch (err) {
          attempts++;
          // The host answered and said no: this VM is not (or no longer) defined there.
          if (err instanceof FsError && err.errno === E.EACCES) this.emit('refused', err.message);
          // Log the first failure and then every tenth, so a long outage does not flood the journal.
          if (attempts === 1 || attempts % 10 === 0) {
            this.opts.logger.warn({ uri: this.opts.uri, attempts, error: (err as Error).message, retryInMs: delay }, 'cannot reach the host agent yet');
          }
          await sleep(delay);
          delay = Math.min(delay * 2, this.opts.retryMaxMs ?? 5000);
        }
      }
    })().finally(() => {
      this.connecting = null;
    });
    return this.connecting;
  }
}

function toInfo(e: { name?: string | null; target?: string | null; readOnly?: boolean | null; cacheMode?: string | null; mountOptions?: string[] | null }): ExportInfo {
  return { name: e.name ?? '', target: e.target ?? '', readOnly: !!e.readOnly, cacheMode: e.cacheMode || 'long', mountOptions: e.mountOptions ?? [] };
}
