// Host side: fuzz frames into a real host agent over its unix socket. Each connection first does a
// valid Hello and mountExport (so frames reach the file-operation dispatcher and the backend), then
// streams generated frames. After any frame that is not promised to be well formed, a Ping follows
// as a barrier: a Pong proves the host decoded everything before it and kept the session; a closed
// socket means the host ended the session (a protocol violation, as designed), and we reconnect.
// A session that closes while only well-formed frames were sent since the last barrier, a request
// that never gets its reply, or a host that stops reading a well-formed stream is a finding.
import net from 'node:net';
import { FrameDecoder, type Frame } from '../../shared/rpc/framing.js';
import { Envelope } from '../../shared/rpc/wire.js';
import { errnoName } from '../../shared/fs/errors.js';
import type { Prng } from './prng.js';
import type { FuzzStats } from './stats.js';
import type { HostProcess } from './host-process.js';
import { encodeEnvelope, frameBytes, hex, describe, type FuzzFrame } from './frames.js';
import { newGenState, validGuestFrame, randomBytesFrame, rawProtobufFrame, unknownTypeFrame, type GenState } from './generators.js';
import { mutateFramed, mutateRaw, duplicate } from './mutators.js';
import { remember } from './values.js';

export interface HostFuzzOptions {
  host: HostProcess;
  frames: number;
  connections: number;
  rng: Prng;
  stats: FuzzStats;
  /** How long a Ping barrier may take before a desynchronised session is abandoned. */
  barrierMs?: number;
  /** A request without a reply, or a well-formed stream not read, for this long is a finding. */
  hangMs?: number;
  /** Called after every batch with the number of frames sent so far on this side. */
  onProgress?: () => void;
}

const BATCH = 32;
const CLEAN_BATCHES_PER_BARRIER = 16;

/** Frames still to send, shared by the workers. */
class Budget {
  constructor(public remaining: number) {}
  take(n: number): number {
    const k = Math.min(n, this.remaining);
    this.remaining -= k;
    return k;
  }
  giveBack(n: number): void {
    this.remaining += n;
  }
}

type BarrierResult = 'pong' | 'closed' | 'timeout';

/** One raw connection to the host, with a reply reader that learns ids from what comes back. */
class HostConn {
  readonly socket: net.Socket;
  private readonly decoder = new FrameDecoder({ maxEnvelope: 64 << 20, maxPayload: 64 << 20 });
  private readonly waiters = new Map<number, (f: Frame) => void>();
  private readonly closeWaiters: Array<() => void> = [];
  /** Tracked requests: id -> when sent and what. */
  readonly outstanding = new Map<number, { at: number; label: string }>();
  /** Frames since the last barrier (for reproducers). */
  sinceBarrier: FuzzFrame[] = [];
  closed = false;
  /** The agent name it gave in its Hello (the host logs it with its connection number). */
  name = '';
  /** We ended it, or a frame that may end it was sent: a close is no finding. */
  closeExpected = false;
  private nextControlId = 2 ** 45;

  constructor(
    readonly st: GenState,
    private readonly stats: FuzzStats,
    path: string,
  ) {
    this.socket = net.connect(path);
    this.socket.on('data', (c: Buffer) => this.onData(c));
    this.socket.on('error', () => undefined);
    // The host ended its side (a refused Hello, a Goodbye of its own): we are done too. (Without
    // this, our unsent bytes would wait forever for a host that no longer reads.)
    this.socket.on('end', () => this.socket.destroy());
    this.socket.on('close', () => {
      this.closed = true;
      for (const w of this.closeWaiters.splice(0)) w();
    });
  }

  controlId(): number {
    return this.nextControlId++;
  }

  private onData(chunk: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      this.stats.find('host', 'undecodable-reply', `the host sent a frame its own decoder rejects: ${(err as Error).message}`, (err as Error).message.replace(/\d+/g, 'N'));
      this.socket.destroy();
      return;
    }
    for (const f of frames) this.onFrame(f);
  }

  private onFrame(f: Frame): void {
    const e = f.envelope;
    const id = Number(e.id);
    this.stats.inc(`host.reply.${e.body ?? 'none'}`);
    if (e.error) this.stats.errno('host', errnoName(e.error.errno ?? 0));
    // Learn what the host issued, so later requests reach real nodes and handles.
    const pools = this.st.pools;
    const entry = e.entry?.entry ?? e.created?.entry;
    if (entry?.nodeId) remember(pools.nodes, Number(entry.nodeId));
    if (e.created?.fh) remember(pools.handles, Number(e.created.fh));
    if (e.opened?.fh) remember(pools.handles, Number(e.opened.fh));
    if (e.mountReply?.exportId) remember(pools.exportIds, e.mountReply.exportId);
    for (const d of e.dir?.entries ?? []) {
      if (d.entry?.nodeId) remember(pools.nodes, Number(d.entry.nodeId));
      if (d.name?.length) remember(pools.names, Buffer.from(d.name));
    }
    const w = this.waiters.get(id);
    if (w) {
      this.waiters.delete(id);
      w(f);
    } else {
      const o = this.outstanding.get(id);
      if (o) {
        this.outstanding.delete(id);
        this.stats.lat(o.label, Date.now() - o.at);
      } else {
        this.stats.inc('host.reply-untracked');
      }
    }
  }

  /** Resolves with the reply to `id`, or null if the connection closes or `ms` pass. */
  waitReply(id: number, ms: number): Promise<Frame | null> {
    return new Promise((resolve) => {
      if (this.closed) return resolve(null);
      const timer = setTimeout(() => {
        this.waiters.delete(id);
        resolve(null);
      }, ms);
      this.waiters.set(id, (f) => {
        clearTimeout(timer);
        resolve(f);
      });
      this.closeWaiters.push(() => {
        clearTimeout(timer);
        this.waiters.delete(id);
        resolve(null);
      });
    });
  }

  async connected(ms: number): Promise<boolean> {
    if (!this.socket.connecting) return !this.closed;
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      this.socket.once('connect', () => (clearTimeout(timer), resolve(true)));
      this.socket.once('close', () => (clearTimeout(timer), resolve(false)));
    });
  }

  /** Writes; resolves once the socket will take more (or closed, or `ms` passed: false). */
  async write(bytes: Buffer, ms: number): Promise<boolean> {
    if (this.closed) return true;
    if (this.socket.write(bytes)) return true;
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(false), ms);
      const done = (v: boolean) => {
        clearTimeout(timer);
        this.socket.off('drain', onDrain);
        resolve(v);
      };
      const onDrain = () => done(true);
      this.socket.on('drain', onDrain);
      this.closeWaiters.push(() => done(true));
    });
  }

  sendControl(env: Parameters<typeof encodeEnvelope>[0]): void {
    this.socket.write(frameBytes(encodeEnvelope(env)!));
  }

  async barrier(ms: number): Promise<BarrierResult> {
    if (this.closed) return 'closed';
    const id = this.controlId();
    this.sendControl({ id, ping: { nonce: id } });
    const r = await this.waitReply(id, ms);
    if (r) return 'pong';
    return this.closed ? 'closed' : 'timeout';
  }

  closesWithin(ms: number): Promise<boolean> {
    if (this.closed) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      this.closeWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  destroy(): void {
    this.closeExpected = true;
    this.socket.destroy();
  }
}

let sessionCounter = 0;

/** Connects, says Hello, mounts the export. Null (and a finding) if the host does not serve us. */
async function openConn(opts: HostFuzzOptions, rng: Prng): Promise<HostConn | null> {
  const { host, stats } = opts;
  const st = newGenState(host.token);
  const c = new HostConn(st, stats, host.socketPath);
  if (!(await c.connected(5000))) {
    if (host.alive()) stats.find('host', 'connect-failed', 'a new connection to the host failed or timed out', '');
    c.destroy();
    return null;
  }
  const hello = c.controlId();
  c.name = `fuzz-session-${++sessionCounter}`;
  c.sendControl({ id: hello, hello: { minVersion: 1, maxVersion: 1, token: host.token, agent: c.name, features: ['payload-frames'] } });
  const hr = await c.waitReply(hello, opts.hangMs ?? 10_000);
  if (!hr?.envelope.helloReply) {
    if (host.alive()) stats.find('host', 'hello-failed', `valid Hello not answered with HelloReply: ${hr ? describe(hr.envelope) : 'no reply'}`, hr ? 'reply' : 'none');
    c.destroy();
    return null;
  }
  const mount = c.controlId();
  c.sendControl({ id: mount, mountExport: { name: 'default' } });
  const mr = await c.waitReply(mount, opts.hangMs ?? 10_000);
  const exportId = mr?.envelope.mountReply?.exportId;
  if (!exportId) {
    if (host.alive()) stats.find('host', 'mount-failed', `valid mountExport not answered with MountReply: ${mr ? describe(mr.envelope) : 'no reply'}`, mr ? 'reply' : 'none');
    c.destroy();
    return null;
  }
  st.pools.exportIds.push(exportId);
  st.nextId = 1000 + rng.int(1000);
  stats.inc('host.sessions');
  return c;
}

/** The next frame to send: mostly valid, some mutated, a few that should end the session. */
export function nextHostFrame(rng: Prng, st: GenState, last?: FuzzFrame): FuzzFrame {
  switch (rng.weighted({ valid: 93, framed: 3, dup: 0.7, raw: 1, rawpb: 1, random: 0.3, unknown: 1 })) {
    case 'valid':
      return validGuestFrame(rng, st);
    case 'framed':
      return mutateFramed(rng, validGuestFrame(rng, st));
    case 'dup':
      return duplicate(validGuestFrame(rng, st));
    case 'raw':
      return mutateRaw(rng, validGuestFrame(rng, st), last);
    case 'rawpb':
      return rawProtobufFrame(rng, st);
    case 'random':
      return randomBytesFrame(rng);
    default:
      return unknownTypeFrame(rng, rng.chance(0.9) ? st.nextId++ : 0);
  }
}

function reproducer(conn: HostConn, note: string): string {
  return [
    `# ${note} (${conn.name}: the agent name in its Hello, which the host logs)`,
    `# frames since the last barrier, in order: label, the envelope as decoded (if it decodes), hex of the exact bytes written`,
    ...conn.sinceBarrier.map((f) => `${f.label}\n${decoded(f.bytes)}\n${hex(f.bytes)}`),
  ].join('\n');
}

function decoded(bytes: Buffer): string {
  try {
    return describe(Envelope.decode(bytes.subarray(8, 8 + bytes.readUInt32BE(0)))).slice(0, 2000);
  } catch (err) {
    return `(does not decode: ${(err as Error).message})`;
  }
}

/**
 * The next batch for one connection: up to BATCH frames, ending early after the first frame that
 * is not promised to be well formed (the barrier that follows then tells what it did).
 */
function nextBatch(rng: Prng, conn: HostConn, budget: Budget, last?: FuzzFrame): { batch: FuzzFrame[]; risky: boolean } {
  const want = budget.take(BATCH);
  const batch: FuzzFrame[] = [];
  let risky = false;
  for (let i = 0; i < want && !risky; i++) {
    const f = nextHostFrame(rng, conn.st, batch[batch.length - 1] ?? last);
    batch.push(f);
    risky = !f.clean || !!f.endsSession;
  }
  budget.giveBack(want - batch.length);
  const now = Date.now();
  for (const f of batch) {
    if (f.expectReplyId !== undefined) conn.outstanding.set(f.expectReplyId, { at: now, label: f.label });
    if (f.cancels !== undefined) conn.outstanding.delete(f.cancels);
    conn.sinceBarrier.push(f);
  }
  return { batch, risky };
}

function closedOnClean(stats: FuzzStats, conn: HostConn): void {
  conn.closeExpected = true;
  stats.find('host', 'closed-on-clean', 'the host closed a session while only well-formed frames were sent', conn.sinceBarrier.map((f) => f.label).join(',').slice(0, 200), () => reproducer(conn, 'session closed after well-formed frames only'), 'txt', conn.name);
}

/** Reads a barrier's outcome. Returns false when this connection is done. */
async function afterBarrier(opts: HostFuzzOptions, conn: HostConn, r: BarrierResult, risky: boolean, endsSession: boolean): Promise<boolean> {
  const { stats, host } = opts;
  if (endsSession) {
    // A Goodbye, or a Hello the host refuses: it hangs up after answering (a Pong may come first).
    // Either way this session is over; give the host a moment, then go.
    if (r !== 'closed') await conn.closesWithin(1000);
    stats.inc('host.ended-by-design');
    conn.destroy();
    return false;
  }
  switch (r) {
    case 'pong':
      if (risky) stats.inc('host.survived-risky');
      conn.sinceBarrier = [];
      return true;
    case 'closed':
      if (!host.alive()) return false;
      if (risky) {
        stats.inc('host.closed-by-host'); // a protocol violation, as designed
        conn.closeExpected = true;
      } else {
        closedOnClean(stats, conn);
      }
      return false;
    case 'timeout':
      if (risky) {
        stats.inc('host.abandoned-desync'); // e.g. a truncated frame: the host waits for its rest
      } else {
        stats.find('host', 'ping-unanswered', `a Ping on a well-formed stream got no Pong within ${opts.hangMs ?? 10_000} ms`, '', () => reproducer(conn, 'ping unanswered'));
      }
      conn.destroy();
      return false;
  }
}

/** One worker: connections in a row until the budget is spent or the host is gone. */
async function worker(opts: HostFuzzOptions, rng: Prng, budget: Budget): Promise<void> {
  const { stats, host } = opts;
  const hangMs = opts.hangMs ?? 10_000;
  const barrierMs = opts.barrierMs ?? 100;
  while (budget.remaining > 0 && host.alive()) {
    const conn = await openConn(opts, rng);
    if (!conn) {
      if (!host.alive()) return;
      budget.take(BATCH); // do not spin on a host that refuses us
      continue;
    }
    let last: FuzzFrame | undefined;
    let cleanBatches = 0;
    while (!conn.closed && host.alive() && budget.remaining > 0) {
      const { batch, risky } = nextBatch(rng, conn, budget, last);
      last = batch[batch.length - 1];
      stats.framesHost += batch.length;
      if (risky) stats.inc('host.risky-frames');
      const drained = await conn.write(Buffer.concat(batch.map((f) => f.bytes)), hangMs);
      opts.onProgress?.();
      if (!drained && !conn.closed && host.alive()) {
        stats.find('host', 'stopped-reading', `the host stopped reading a well-formed stream for ${hangMs} ms`, '', () => reproducer(conn, 'host stopped reading'), 'txt', conn.name);
        conn.destroy();
        break;
      }
      if (risky || ++cleanBatches >= CLEAN_BATCHES_PER_BARRIER) {
        cleanBatches = 0;
        let r = await conn.barrier(risky ? barrierMs : hangMs);
        // A risky frame may have decoded into a Hello the host refuses: the host answers the Ping
        // before it hangs up (one turn of its event loop later). A second Ping sees that.
        if (risky && r === 'pong') r = await conn.barrier(barrierMs);
        if (!(await afterBarrier(opts, conn, r, risky, !!last.endsSession))) break;
      }
      checkHangs(conn, stats, hangMs);
    }
    if (conn.closed && !conn.closeExpected && host.alive()) closedOnClean(stats, conn);
    // Spent: let the tracked requests finish, then go.
    if (!conn.closed) {
      const until = Date.now() + hangMs;
      while (conn.outstanding.size > 0 && !conn.closed && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
      checkHangs(conn, stats, 0);
      conn.socket.end();
    }
  }
}

function checkHangs(conn: HostConn, stats: FuzzStats, hangMs: number): void {
  if (conn.closed) {
    conn.outstanding.clear();
    return;
  }
  const now = Date.now();
  for (const [id, o] of conn.outstanding) {
    if (now - o.at < hangMs) continue;
    conn.outstanding.delete(id);
    stats.find('host', 'no-reply', `request ${o.label} (id ${id}) got no reply within ${hangMs || 'the'} ms`, o.label, () => reproducer(conn, `no reply to id ${id}`));
  }
}

/** A fresh connection's getattr of the root: the host must still serve, and quickly. */
export async function canary(opts: Pick<HostFuzzOptions, 'host' | 'stats' | 'rng' | 'hangMs'> & { frames?: number; connections?: number }): Promise<{ ok: boolean; ms: number; detail: string }> {
  const start = Date.now();
  const c = await openConn({ ...opts, frames: 0, connections: 1 } as HostFuzzOptions, opts.rng);
  if (!c) return { ok: false, ms: Date.now() - start, detail: 'could not connect, say Hello and mount' };
  const id = c.controlId();
  const t0 = process.hrtime.bigint();
  c.sendControl({ id, exportId: c.st.pools.exportIds[0], caller: { uid: 0, gid: 0, pid: 1 }, getattr: { node: 1 } });
  const r = await c.waitReply(id, opts.hangMs ?? 10_000);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  c.socket.end();
  const mode = r?.envelope.attr?.attr?.mode ?? 0;
  const ok = !!r?.envelope.attr && (mode & 0o170000) === 0o040000;
  return { ok, ms, detail: r ? describe(r.envelope).slice(0, 300) : 'no reply' };
}

export async function fuzzHost(opts: HostFuzzOptions): Promise<void> {
  const budget = new Budget(opts.frames);
  await Promise.all(Array.from({ length: opts.connections }, (_, i) => worker(opts, opts.rng.fork(i), budget)));
}
