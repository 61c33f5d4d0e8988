// Guest side: the real guest stack (HostLink + ResilientFileSystem over RemoteFileSystem, and a bare
// RemoteFileSystem on the live session) runs random file operations against the fake host. Every
// operation must settle within a bound: resolve, or reject with an FsError carrying a positive
// errno. Anything else (a hang, a TypeError, an uncaught exception) is a finding.
import path from 'node:path';
import crypto from 'node:crypto';
import { HostLink } from '../../guest-agent/host-link.js';
import { ResilientFileSystem } from '../../guest-agent/resilient-fs.js';
import { RemoteFileSystem } from '../../guest-agent/remote-fs.js';
import { FsError, E, errnoName } from '../../shared/fs/errors.js';
import type { FileSystem, Caller, Entry } from '../../shared/fs/interface.js';
import { silentLogger } from '../../shared/log.js';
import type { Prng } from './prng.js';
import type { FuzzStats } from './stats.js';
import { FakeHost } from './fake-host.js';
import { randomName, randomU64, remember } from './values.js';

export interface GuestFuzzOptions {
  frames: number;
  rng: Prng;
  stats: FuzzStats;
  workDir: string;
  /** File operations in flight at once. */
  concurrency: number;
  /** An operation that has not settled after this long is a hang. */
  settleMs: number;
  /** Deadline of one request on the wire (short: the fake host often does not answer). */
  requestDeadlineMs?: number;
  /** ResilientFileSystem's window for waiting on a reconnection. */
  retryWindowMs?: number;
  onProgress?: () => void;
}

interface OpState {
  nodes: number[];
  files: number[];
  dirs: number[];
}

type Op = { name: string; run: (fs: FileSystem) => Promise<unknown> | unknown };

function caller(rng: Prng): Caller {
  return rng.chance(0.8) ? { uid: 0, gid: 0, pid: rng.int(1 << 15) } : { uid: 1000, gid: 1000, pid: 42, groups: [1000, 27], umask: 0o22 };
}

/** A random operation of the FileSystem interface with arguments from what earlier calls returned. */
function randomOp(rng: Prng, st: OpState): Op {
  const c = caller(rng);
  const node = () => (rng.chance(0.85) ? rng.pick(st.nodes) : rng.pick([0, 2, 99999, randomU64(rng)]));
  const fh = (dir = false) => {
    const pool = dir ? st.dirs : st.files;
    return pool.length && rng.chance(0.85) ? rng.pick(pool) : rng.pick([0, 1, 7, randomU64(rng)]);
  };
  const name = () => randomName(rng);
  const off = () => rng.pick([0, 1, 4096, 1 << 20, 2 ** 40, 2 ** 53 - 1]);
  const ops: Array<() => Op> = [
    () => ({ name: 'lookup', run: (fs) => fs.lookup(c, node(), name()) }),
    () => ({ name: 'forget', run: (fs) => fs.forget([{ nodeId: node(), nlookup: rng.range(1, 3) }]) }),
    () => ({ name: 'getattr', run: (fs) => fs.getattr(c, node(), rng.chance(0.3) ? fh() : undefined) }),
    () => ({ name: 'setattr', run: (fs) => fs.setattr(c, node(), rng.pick([{ mode: 0o644 }, { size: rng.int(1 << 20) }, { atime: 'now', mtime: { sec: 1, nsec: 2 } }, { uid: 1000, gid: 1000 }, {}]), rng.chance(0.3) ? fh() : undefined) }),
    () => ({ name: 'readlink', run: (fs) => fs.readlink(c, node()) }),
    () => ({ name: 'mknod', run: (fs) => fs.mknod(c, node(), name(), 0o10644, 0) }),
    () => ({ name: 'mkdir', run: (fs) => fs.mkdir(c, node(), name(), 0o755) }),
    () => ({ name: 'unlink', run: (fs) => fs.unlink(c, node(), name()) }),
    () => ({ name: 'rmdir', run: (fs) => fs.rmdir(c, node(), name()) }),
    () => ({ name: 'symlink', run: (fs) => fs.symlink(c, node(), name(), Buffer.from('target')) }),
    () => ({ name: 'rename', run: (fs) => fs.rename(c, node(), name(), node(), name(), rng.pick([0, 1, 2, 7])) }),
    () => ({ name: 'link', run: (fs) => fs.link(c, node(), node(), name()) }),
    () => ({ name: 'open', run: (fs) => fs.open(c, node(), rng.pick([0, 1, 2, 0o1002])) }),
    () => ({ name: 'create', run: (fs) => fs.create(c, node(), name(), 0o644, rng.pick([0o101, 0o301, 0o1102])) }),
    () => ({ name: 'read', run: (fs) => fs.read(c, node(), fh(), off(), rng.pick([0, 1, 4096, 131072])) }),
    () => ({ name: 'write', run: (fs) => fs.write(c, node(), fh(), off(), rng.bytes(rng.size(8192))) }),
    () => ({ name: 'flush', run: (fs) => fs.flush(c, node(), fh()) }),
    () => ({ name: 'fsync', run: (fs) => fs.fsync(c, node(), fh(), rng.chance(0.5)) }),
    () => ({ name: 'release', run: (fs) => fs.release(c, node(), fh()) }),
    () => ({ name: 'opendir', run: (fs) => fs.opendir(c, node(), 0) }),
    () => ({ name: 'readdir', run: (fs) => fs.readdir(c, node(), fh(true), rng.pick([0, 1, 2, 2 ** 52 + 1]), rng.pick([1, 10, 1024]), rng.chance(0.5)) }),
    () => ({ name: 'fsyncdir', run: (fs) => fs.fsyncdir(c, node(), fh(true), false) }),
    () => ({ name: 'releasedir', run: (fs) => fs.releasedir(c, node(), fh(true)) }),
    () => ({ name: 'statfs', run: (fs) => fs.statfs(c, node()) }),
    () => ({ name: 'setxattr', run: (fs) => fs.setxattr(c, node(), Buffer.from('user.x'), rng.bytes(rng.size(100)), 0) }),
    () => ({ name: 'getxattr', run: (fs) => fs.getxattr(c, node(), Buffer.from('user.x'), rng.pick([0, 10, 65536])) }),
    () => ({ name: 'listxattr', run: (fs) => fs.listxattr(c, node(), rng.pick([0, 10, 65536])) }),
    () => ({ name: 'removexattr', run: (fs) => fs.removexattr(c, node(), Buffer.from('user.x')) }),
    () => ({ name: 'access', run: (fs) => fs.access(c, node(), rng.int(8)) }),
    () => ({ name: 'fallocate', run: (fs) => fs.fallocate(c, node(), fh(), rng.pick([0, 1, 3]), off(), rng.int(1 << 20)) }),
    () => ({ name: 'copyFileRange', run: (fs) => fs.copyFileRange(c, node(), fh(), off(), node(), fh(), off(), rng.int(1 << 20), 0) }),
    () => ({ name: 'lseek', run: (fs) => fs.lseek(c, node(), fh(), off(), rng.int(5)) }),
  ];
  return rng.pick(ops)();
}

/** Learns ids from a result, so later operations use them. */
function learn(st: OpState, opName: string, v: unknown): void {
  if (!v || typeof v !== 'object') return;
  const r = v as { nodeId?: unknown; fh?: unknown; entry?: Entry };
  if (typeof r.nodeId === 'number') remember(st.nodes, r.nodeId);
  if (r.entry && typeof r.entry.nodeId === 'number') remember(st.nodes, r.entry.nodeId);
  if (typeof r.fh === 'number') remember(opName === 'opendir' ? st.dirs : st.files, r.fh);
  if (Array.isArray(v)) for (const d of v as Array<{ entry?: Entry }>) if (d?.entry) remember(st.nodes, d.entry.nodeId);
}

export async function fuzzGuest(opts: GuestFuzzOptions): Promise<void> {
  const { rng, stats } = opts;
  const budget = { remaining: opts.frames };
  const socketPath = path.join(opts.workDir, `fake-host-${crypto.randomBytes(3).toString('hex')}.sock`);
  const fake = new FakeHost({ socketPath, rng: rng.fork(1), stats, budget, onFrame: opts.onProgress });
  await fake.listen();
  const deadline = opts.requestDeadlineMs ?? 250;
  const link = new HostLink({
    uri: `unix://${socketPath}`,
    token: 'fuzz',
    logger: silentLogger(),
    keepaliveMs: 400,
    requestDeadlineMs: deadline,
    retryInitialMs: 5,
    retryMaxMs: 50,
    connectTimeoutMs: 2000,
  });
  const resilient = new ResilientFileSystem(link, 'default', { logger: silentLogger(), retryWindowMs: opts.retryWindowMs ?? 1000, requestDeadlineMs: deadline });
  // A bare RemoteFileSystem on whatever session is live, export id 1 (the fake host's usual one).
  const remote = new RemoteFileSystem(() => {
    const session = link.activeSession;
    if (!session) throw new FsError(E.ENOTCONN, 'not connected');
    return { session, exportId: 1 };
  }, { deadlineMs: deadline });
  const stResilient: OpState = { nodes: [1], files: [], dirs: [] };
  const stRemote: OpState = { nodes: [1], files: [], dirs: [] };
  const unsettled = new Set<Promise<unknown>>();
  const opRng = rng.fork(2);

  async function settle(p: Promise<unknown> | unknown, ms: number, what: string): Promise<{ ok: boolean; value?: unknown; err?: unknown } | null> {
    let timer: NodeJS.Timeout | undefined;
    const watched = Promise.resolve(p).then((value) => ({ ok: true, value }), (err: unknown) => ({ ok: false, err }));
    const r = await Promise.race([watched, new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), ms)))]);
    clearTimeout(timer);
    if (r === null) {
      stats.find('guest', 'hang', `${what} did not settle within ${ms} ms`, what);
      unsettled.add(watched);
      watched.finally(() => unsettled.delete(watched));
    }
    return r;
  }

  async function loop(): Promise<void> {
    while (budget.remaining > 0) {
      // Operations that fail without I/O would otherwise keep the event loop from ever turning.
      await new Promise((r) => setImmediate(r));
      const direct = opRng.chance(0.2);
      const st = direct ? stRemote : stResilient;
      const op = randomOp(opRng, st);
      const what = `${direct ? 'RemoteFileSystem' : 'ResilientFileSystem'}.${op.name}`;
      stats.inc('guest.ops');
      let result: { ok: boolean; value?: unknown; err?: unknown } | null;
      try {
        result = await settle(op.run(direct ? remote : resilient), opts.settleMs, what);
      } catch (err) {
        result = { ok: false, err }; // thrown synchronously (forget)
      }
      if (!result) continue;
      if (result.ok) {
        stats.inc('guest.ok');
        learn(st, op.name, result.value);
        continue;
      }
      const err = result.err;
      if (err instanceof FsError && Number.isInteger(err.errno) && err.errno > 0) {
        stats.inc('guest.failed');
        stats.errno('guest', errnoName(err.errno));
        if (err.errno > 4095) stats.inc('guest.errno-out-of-range');
      } else {
        stats.inc('guest.bad-rejection');
        const e = err as Error;
        // Grouped by where it was thrown, not by which operation met it.
        const where = e?.stack?.split('\n').find((l) => l.includes(' at '))?.trim() ?? '';
        stats.find('guest', 'bad-rejection', `${what} (and others) rejected with ${e?.name ?? typeof err}: ${e?.message ?? String(err)} (not an FsError with an errno)\n${e?.stack?.split('\n').slice(0, 6).join('\n')}`, `${e?.name}:${String(e?.message).replace(/\d+/g, 'N').slice(0, 80)}:${where}`);
      }
    }
  }

  await settle(link.connectWithRetry(), opts.settleMs, 'HostLink.connectWithRetry');
  await Promise.all(Array.from({ length: opts.concurrency }, () => loop()));
  // Budget spent; the fake host is well-behaved now. Everything still running must settle too.
  if (unsettled.size) await Promise.race([Promise.all([...unsettled]), new Promise((r) => setTimeout(r, opts.settleMs))]);
  stats.inc('guest.reconnects', Math.max(0, link.epoch - 1));
  stats.inc('guest.max-open-sockets', fake.maxSockets);
  link.close('fuzz done');
  await resilient.destroy();
  // Every connection the guest made is over now; sockets it never closed are still open here.
  await new Promise((r) => setTimeout(r, 200));
  stats.inc('guest.sockets-left-open', fake.openSockets);
  await fake.close();
}
