// A hostile guest against a real host agent (`node bin/dirvisor-host.js serve DIR --listen unix://S
// --token T` in a child process, serving a size-limited tmpfs): random and mutated frames, lying
// lengths, unknown message types, 100,000 requests in flight, handles until the limit, forgets of
// nodes never looked up, ids of other connections and exports, hostile names, Goodbye without
// closing -- and, while one connection floods, another one (the "other VM") measures its latency.
// The host must stay up, keep its memory bounded and keep serving the others.
//
// Tests marked `test.failing` reproduce product bugs or gaps found here (each names it); they pass
// while the product misbehaves and will fail once it is fixed, as a reminder to turn them back.
// The last group are bugs found here and fixed since; they stay as regression tests.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import net from 'node:net';
import { spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { E, errnoName } from '../shared/fs/errors.js';
import { startHostProcess, type HostProcess } from './fuzz/host-process.js';
import { makeStorage } from './fuzz/storage.js';
import { RawClient, errnoOf, ROOT_CALLER } from './fuzz/raw-client.js';
import { Prng } from './fuzz/prng.js';
import { FuzzStats } from './fuzz/stats.js';
import { fuzzHost } from './fuzz/host-harness.js';
import { unknownTypeFrame } from './fuzz/generators.js';
import { encodeEnvelope, frameBytes } from './fuzz/frames.js';
import { REPO } from './fuzz/schema.js';

const MB = 1024; // KiB per MiB (VmRSS is in KiB)
const B = (s: string) => Buffer.from(s, 'latin1');

/** A host agent of its own for one test (memory and latency figures must not mix). */
async function freshHost(t: ExecutionContext): Promise<HostProcess & { storage: string }> {
  const storage = await makeStorage('dirvisor-hostile-');
  let host: HostProcess | undefined;
  t.teardown(async () => {
    await host?.stop();
    await storage.cleanup();
  });
  host = await startHostProcess(storage.dir, storage.work);
  return Object.assign(host, { storage: storage.dir });
}

async function mounted(t: ExecutionContext, host: HostProcess): Promise<RawClient> {
  const c = await RawClient.mounted(host.socketPath, host.token);
  t.teardown(() => c.close());
  return c;
}

/** A fresh connection's getattr of the root: ms, or throws. */
async function canary(host: HostProcess): Promise<number> {
  const c = await RawClient.mounted(host.socketPath, host.token);
  try {
    const t0 = performance.now();
    const r = await c.call({ getattr: { node: 1 } }, { ms: 10_000 });
    if (!r.envelope.attr) throw new Error(`getattr of the root failed: ${errnoName(errnoOf(r))}`);
    return performance.now() - t0;
  } finally {
    c.close();
  }
}

/** Samples the host's RSS every 50 ms for `ms`; returns the peak in KiB. */
async function peakRss(host: HostProcess, ms: number): Promise<number> {
  let peak = host.rssKb();
  const until = Date.now() + ms;
  while (Date.now() < until) {
    await sleep(50);
    peak = Math.max(peak, host.rssKb());
  }
  return peak;
}

async function waitUntil(cond: () => boolean, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) return false;
    await sleep(20);
  }
  return true;
}

interface Latency {
  n: number;
  p50: number;
  p99: number;
  max: number;
  timeouts: number;
}

/**
 * Round trips of the "other VM": alternating getattr and 4 KiB reads, issued at a steady rate (one
 * every `intervalMs`, whether or not the earlier ones have come back, as a VM's applications would),
 * so that a stall of the host shows in every request it delays, not in one slow sample. A request that
 * takes longer than `capMs` counts as `capMs` (and as a timeout).
 */
async function latency(c: RawClient, node: number, fh: number, n: number, intervalMs = 10, capMs = 5000): Promise<Latency> {
  const lat: Array<Promise<number>> = [];
  let timeouts = 0;
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const body = i % 2 ? { getattr: { node: 1 } } : { read: { node, fh, offset: 0, size: 4096 } };
    lat.push(
      c.call(body, { ms: capMs }).then(
        (r) => {
          if (errnoOf(r)) throw new Error(errnoName(errnoOf(r)));
          return performance.now() - t0;
        },
      ).catch(() => {
        timeouts++;
        return capMs;
      }),
    );
    await sleep(intervalMs);
  }
  const all = (await Promise.all(lat)).sort((a, b) => a - b);
  const q = (p: number) => Math.round(all[Math.min(all.length - 1, Math.floor(all.length * p))] * 100) / 100;
  return { n: all.length, p50: q(0.5), p99: q(0.99), max: q(1), timeouts };
}

/** The other VM: a connection with a file open for its reads. */
async function otherVm(t: ExecutionContext, host: HostProcess): Promise<{ c: RawClient; node: number; fh: number }> {
  const c = await mounted(t, host);
  const node = Number((await c.call({ lookup: { parent: 1, name: B('big') } })).envelope.entry!.entry!.nodeId);
  const fh = Number((await c.call({ open: { node, flags: 0 } })).envelope.opened!.fh);
  return { c, node, fh };
}

/** A flooding VM in its own process (test/fuzz/flooder.ts). */
async function flooder(t: ExecutionContext, host: HostProcess, kind: string, maxInFlight: number): Promise<{ stop(): Promise<string> }> {
  const p = spawn(process.execPath, [path.join(REPO, 'dist/test/fuzz/flooder.js'), host.socketPath, host.token, kind, String(maxInFlight)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  readline.createInterface({ input: p.stdout! }).on('line', (l) => lines.push(l));
  let stderr = '';
  p.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  t.teardown(() => {
    p.kill('SIGKILL');
  });
  if (!(await waitUntil(() => lines.includes('ready') || p.exitCode !== null, 10_000)) || !lines.includes('ready')) {
    throw new Error(`flooder did not start: ${stderr}`);
  }
  return {
    async stop() {
      p.kill('SIGTERM');
      await Promise.race([exited, sleep(5000)]);
      p.kill('SIGKILL');
      return lines[lines.length - 1] ?? '';
    },
  };
}

// ---- frames ---------------------------------------------------------------------------------------

test.serial('random and mutated frames end only the offending sessions; the host stays up and serves', async (t) => {
  t.timeout(120_000);
  const host = await freshHost(t);
  const stats = new FuzzStats(path.join(host.storage, '..', 'reproducers'));
  await fuzzHost({ host, frames: 20_000, connections: 4, rng: new Prng(0x405713), stats, hangMs: 10_000 });
  const findings = [...stats.findings.values()].filter((f) => f.kind !== 'error-logged');
  t.deepEqual(findings.map((f) => `${f.kind}: ${f.message}`), [], 'no crash, hang, unanswered request or session closed over a well-formed frame');
  t.true(host.alive(), 'the host agent is still running');
  t.true(host.violationCount > 0, 'sessions were closed for protocol violations');
  t.log(`${stats.framesHost} frames, ${stats.get('host.sessions')} sessions, ${host.violationCount} closed for violations; host RSS ${Math.round(host.rssKb() / MB)} MB`);
  t.true((await canary(host)) < 1000, 'a new connection is served quickly afterwards');
});

test.serial('frames announcing 4 GiB (or just over the limits) are refused before any allocation: the session closes, RSS barely moves', async (t) => {
  const host = await freshHost(t);
  const rss0 = host.rssKb();
  const variants: Array<[string, number, number]> = [
    ['envelope of 4 GiB - 1', 0xffffffff, 0],
    ['payload of 4 GiB - 1', 16, 0xffffffff],
    ['both 4 GiB - 1', 0xffffffff, 0xffffffff],
    ['envelope of 2 GiB', 0x80000000, 0],
    ['envelope 1 byte over 1 MiB', (1 << 20) + 1, 0],
    ['payload 1 byte over 4 MiB', 16, (4 << 20) + 1],
    ['empty envelope', 0, 100],
  ];
  for (const [label, env, payload] of variants) {
    const c = await mounted(t, host);
    const head = Buffer.alloc(8);
    head.writeUInt32BE(env, 0);
    head.writeUInt32BE(payload, 4);
    c.write(head);
    t.true(await c.closesWithin(2000), `${label}: the host closes the session`);
  }
  const rss1 = host.rssKb();
  t.log(`host RSS ${Math.round(rss0 / MB)} MB -> ${Math.round(rss1 / MB)} MB after ${variants.length} lying headers`);
  t.true(rss1 - rss0 < 20 * MB, `RSS grew by ${Math.round((rss1 - rss0) / MB)} MB`);
  t.true(host.alive());
  await waitUntil(() => host.violationCount >= variants.length, 3000); // the log comes through a pipe
  t.is(host.violationCount, variants.length, 'each one logged as a protocol violation');
  t.true((await canary(host)) < 1000);
});

test.serial('unknown message types get ENOSYS (or are ignored as events) and the session stays up', async (t) => {
  const host = await freshHost(t);
  const c = await mounted(t, host);
  const rng = new Prng(7);
  for (let i = 0; i < 20; i++) {
    const id = c.id();
    const reply = c.reply(id, 5000);
    c.write(unknownTypeFrame(rng, id).bytes);
    t.is(errnoOf(await reply), E.ENOSYS, 'request of an unknown type');
    c.write(unknownTypeFrame(rng, 0).bytes); // an event of an unknown type: no reply
  }
  // Known types the host does not serve, sent as requests: replies, events and host-to-guest ones.
  for (const body of [{ attr: {} }, { invalidateInode: { node: 1 } }, { exportsChanged: {} }, { helloReply: {} }]) {
    const id = c.id();
    c.write(frameBytes(encodeEnvelope({ id, exportId: c.exportId, ...body })!));
  }
  const r = await c.call({ getattr: { node: 1 } });
  t.truthy(r.envelope.attr, 'the session still serves');
  t.false(c.closed);
});

// ---- floods and memory -----------------------------------------------------------------------------

test.serial('100,000 requests pipelined without reading the replies, then read: the host stays up and answers them all', async (t) => {
  t.timeout(120_000);
  const host = await freshHost(t);
  const c = await mounted(t, host);
  const N = 100_000;
  const rss0 = host.rssKb();
  const replies0 = c.replies;
  c.socket.pause();
  const frames = Buffer.concat(Array.from({ length: N }, () => c.frame({ getattr: { node: 1 } })));
  c.write(frames);
  const peakBlocked = await peakRss(host, 3000);
  const unsent = c.socket.writableLength;
  c.socket.resume();
  t.true(await waitUntil(() => c.replies - replies0 >= N || c.closed, 60_000), `replies: ${c.replies - replies0} of ${N}`);
  const peak = Math.max(peakBlocked, host.rssKb());
  t.log(`host RSS ${Math.round(rss0 / MB)} MB at start, peak ${Math.round(peakBlocked / MB)} MB after 3 s of a client not reading (${unsent} bytes of its requests not yet taken by the host: ${unsent ? 'throttled or slow' : 'not throttled'}), ${Math.round(peak / MB)} MB when all were answered; ${c.replies - replies0} replies, errors ${JSON.stringify(Object.fromEntries(c.errnos))}`);
  t.true(host.alive());
  t.true(c.replies - replies0 === N || c.closed, 'every request answered (or the offender disconnected)');
  t.true((await canary(host)) < 1000, 'another connection is served afterwards');
});

// Regression (host-agent/server.ts + shared/rpc/session.ts): `dirvisor-host serve` built its HostServer without
// limits, so the Session got `maxIncoming: undefined`, and `{ maxIncoming: 256, ...options }` lets that
// undefined replace the default: there is NO limit on requests in flight per connection. A guest that
// pipelines requests and does not read its replies makes the host take all of them and queue every
// reply (measured: ~430 MB for 100,000 getattr; the reply backlog counts 64 bytes per reply, so its
// 8 MiB cap never triggers for small replies).
test.serial('serve bounds requests in flight: 100,000 pipelined requests from a client that does not read keep the host under 150 MB of growth', async (t) => {
  t.timeout(120_000);
  const host = await freshHost(t);
  const c = await mounted(t, host);
  const N = 100_000;
  const rss0 = host.rssKb();
  c.socket.pause();
  c.write(Buffer.concat(Array.from({ length: N }, () => c.frame({ getattr: { node: 1 } }))));
  // Until the host has taken every request it is going to take (or 30 s), then 2 s more.
  let peak = rss0;
  let lastUnsent = -1;
  for (let still = 0, until = Date.now() + 30_000; still < 40 && Date.now() < until; ) {
    peak = Math.max(peak, await peakRss(host, 50));
    const unsent = c.socket.writableLength;
    still = unsent === lastUnsent ? still + 1 : 0;
    lastUnsent = unsent;
  }
  t.log(`RSS growth while the client did not read: ${Math.round((peak - rss0) / MB)} MB; request bytes the host never took: ${lastUnsent}`);
  t.true(peak - rss0 < 150 * MB, `RSS grew by ${Math.round((peak - rss0) / MB)} MB`);
});

// Regression (same root cause): with no in-flight limit, 1,000 reads of 1 MiB from a client that does not read
// its replies are all served and all their data is queued in the host (measured: ~1 GB; with 2,000 reads
// of 4 MiB, 4.3 GB while blocked and 8 GB peak). The design bound would be 256 in flight x 1 MiB + the
// 8 MiB reply backlog, about 270 MB.
test.serial('serve bounds requests in flight: 1,000 reads of 1 MiB from a client that does not read keep the host under 300 MB of growth', async (t) => {
  t.timeout(120_000);
  const host = await freshHost(t);
  const c = await mounted(t, host);
  const node = Number((await c.call({ lookup: { parent: 1, name: B('sparse') } })).envelope.entry!.entry!.nodeId);
  const fh = Number((await c.call({ open: { node, flags: 0 } })).envelope.opened!.fh);
  const rss0 = host.rssKb();
  c.socket.pause();
  c.write(Buffer.concat(Array.from({ length: 1000 }, () => c.frame({ read: { node, fh, offset: 0, size: 1 << 20 } }))));
  const peak = await peakRss(host, 4000);
  t.log(`RSS growth while the client did not read: ${Math.round((peak - rss0) / MB)} MB`);
  c.close();
  t.true(peak - rss0 < 300 * MB, `RSS grew by ${Math.round((peak - rss0) / MB)} MB`);
});

// ---- fairness ----------------------------------------------------------------------------------------

test.serial('another VM keeps its latency while a busy VM keeps 256 requests in flight', async (t) => {
  t.timeout(120_000);
  const host = await freshHost(t);
  const other = await otherVm(t, host);
  const before = await latency(other.c, other.node, other.fh, 400);
  const f = await flooder(t, host, 'getattr', 256);
  await sleep(500);
  const during = await latency(other.c, other.node, other.fh, 400);
  const summary = await f.stop();
  t.log(`other VM getattr/read round trips: before p50 ${before.p50} ms, p99 ${before.p99} ms; during a 256-in-flight getattr flood p50 ${during.p50} ms, p99 ${during.p99} ms, max ${during.max} ms (${during.timeouts} over 5 s); flooder ${summary}`);
  t.is(during.timeouts, 0);
  // The machine is shared (2 cores, other test files run at the same time): a p99 the other VM also
  // had before the flood is the machine's, not the flood's.
  t.true(during.p99 < Math.max(500, 2 * before.p99), `p99 during the flood: ${during.p99} ms (before: ${before.p99} ms)`);
  t.true(host.alive());
});

// Was a GAP (one VM could starve another): `serve` had no in-flight limit, and a connection keeping
// tens of thousands of getattr in flight pushed another's round trips to around a second (measured
// p99 0.75-1.8 s). Now each connection is served at most 256 requests at once (and each VM 512).
test.serial('fairness between VMs: another VM keeps p99 < 500 ms while one connection keeps 100,000 requests in flight', async (t) => {
  t.timeout(120_000);
  const host = await freshHost(t);
  const other = await otherVm(t, host);
  const before = await latency(other.c, other.node, other.fh, 400);
  // 100,000 in flight: far beyond any sane per-connection limit (the daemon's default is 256), but
  // bounded so that the host's memory stays in the hundreds of MB while the product has no limit.
  const f = await flooder(t, host, 'getattr', 100_000);
  await sleep(2000);
  const during = await latency(other.c, other.node, other.fh, 400);
  const rss = host.rssKb();
  const summary = await f.stop();
  t.log(`other VM: before p50 ${before.p50} ms, p99 ${before.p99} ms; during a getattr flood with 100,000 in flight p50 ${during.p50} ms, p99 ${during.p99} ms, max ${during.max} ms, ${during.timeouts} over 5 s (of ${during.n}); host RSS ${Math.round(rss / MB)} MB; flooder ${summary}`);
  t.true(host.alive());
  t.true(during.p99 < Math.max(500, 2 * before.p99), `p99 during the flood: ${during.p99} ms (before: ${before.p99} ms)`);
});

/** create + 1-byte write + release + unlink in a loop on one connection: operations per second. */
async function mutationRate(c: RawClient, label: string, n = 100): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const name = B(`${label}-${i}`);
    const r = await c.call({ create: { parent: 1, name, mode: 0o644, flags: 0o101 } }, { ms: 120_000 });
    const created = r.envelope.created;
    if (!created) throw new Error(`create failed: ${errnoName(errnoOf(r))}`);
    const node = Number(created.entry!.nodeId);
    await c.call({ write: { node, fh: created.fh, offset: 0 } }, { payload: B('x'), ms: 120_000 });
    await c.call({ release: { node, fh: created.fh } }, { ms: 120_000 });
    await c.call({ unlink: { parent: 1, name } }, { ms: 120_000 });
  }
  return Math.round((4 * n * 1000) / (performance.now() - t0));
}

// Regression (found here while coherence was in progress): the cost of every change the host served
// grew with the number of mounted export views, even idle ones that knew no node (measured 1,665 ->
// 164 operations/s with 200 idle connections). The hub now tells only connections that have asked
// something, and so may have cached something.
test.serial('200 idle mounted connections of one VM do not slow another VM\'s file operations more than 3x', async (t) => {
  t.timeout(180_000);
  const host = await freshHost(t);
  const other = await mounted(t, host);
  const before = await mutationRate(other, 'before');
  const idle: RawClient[] = [];
  t.teardown(() => idle.forEach((c) => c.close()));
  for (let i = 0; i < 200; i++) idle.push(await RawClient.mounted(host.socketPath, host.token));
  const during = await mutationRate(other, 'during');
  t.log(`other VM: ${before} operations/s alone, ${during} operations/s with 200 idle mounted connections`);
  t.true(during * 3 >= before, `${before} -> ${during} operations/s`);
});

// ---- handles and fds -----------------------------------------------------------------------------------

async function openUntilRefused(c: RawClient, node: number): Promise<{ opened: number; errno: number }> {
  let opened = 0;
  for (;;) {
    const ids: number[] = [];
    const frames: Buffer[] = [];
    for (let i = 0; i < 1000; i++) {
      const id = c.id();
      ids.push(id);
      frames.push(c.frame({ open: { node, flags: 0 } }, id));
    }
    const replies = ids.map((id) => c.reply(id, 30_000));
    c.write(Buffer.concat(frames));
    let errno = 0;
    for (const r of await Promise.all(replies)) {
      if (errnoOf(r)) errno ||= errnoOf(r);
      else opened++;
    }
    if (errno) return { opened, errno };
    if (opened > 200_000) return { opened, errno: 0 };
  }
}

async function openFileLimit(pid: number): Promise<string> {
  const limits = await fs.readFile(`/proc/${pid}/limits`, 'utf8');
  return /Max open files\s+(\d+|unlimited)/.exec(limits)?.[1] ?? '?';
}

// `serve` limits each export view to 4096 open handles (--max-handles) and each VM to 16384 fds
// (--max-fds); the managed agent reads limits.max_handles and limits.max_fds from host.yaml.
test.serial('opening handles until refused: EMFILE/ENFILE, the host stays up, and everything is released with the connection', async (t) => {
  t.timeout(120_000);
  const host = await freshHost(t);
  const c = await mounted(t, host);
  const node = Number((await c.call({ lookup: { parent: 1, name: B('f0') } })).envelope.entry!.entry!.nodeId);
  const { opened, errno } = await openUntilRefused(c, node);
  t.log(`refused after ${opened} open handles with ${errnoName(errno)}; the host's RLIMIT_NOFILE is ${await openFileLimit(host.pid)}, serve's default --max-handles 4096`);
  t.true(errno === E.EMFILE || errno === E.ENFILE, `refused with ${errnoName(errno)}`);
  t.true(host.alive());
  c.close();
  await sleep(500);
  t.true((await canary(host)) < 2000, 'after the offender is gone, others are served');
});

// Was a GAP (limits per VM): nothing bounded the fds one VM made the host hold, so one VM could use
// up the host's RLIMIT_NOFILE. Now each export view holds at most 4096 handles (serve --max-handles)
// and each VM at most 16384 fds (--max-fds; test/limits.test.ts checks the budget across
// connections, with two VMs).
test.serial('per-VM fd budget: while one VM holds all the handles it can get, another VM can still mount and read', async (t) => {
  t.timeout(120_000);
  const host = await freshHost(t);
  const c = await mounted(t, host);
  const node = Number((await c.call({ lookup: { parent: 1, name: B('f0') } })).envelope.entry!.entry!.nodeId);
  const { opened, errno } = await openUntilRefused(c, node);
  t.log(`offender holds ${opened} handles (${errnoName(errno)})`);
  const other = await RawClient.mounted(host.socketPath, host.token).catch((err: Error) => err);
  t.teardown(() => (other instanceof RawClient ? other.close() : undefined));
  t.true(other instanceof RawClient, `another VM cannot mount: ${(other as Error).message}`);
  if (!(other instanceof RawClient)) return;
  const e = await other.call({ lookup: { parent: 1, name: B('f1') } });
  t.truthy(e.envelope.entry, `another VM's lookup: ${errnoName(errnoOf(e))}`);
});

// ---- node ids, handles, names ----------------------------------------------------------------------------

test.serial('forgetting nodes never looked up (and forgetting too much) has no effect and no crash', async (t) => {
  const host = await freshHost(t);
  const c = await mounted(t, host);
  const forget = (items: Array<{ nodeId: number; nlookup: number }>) =>
    c.write(frameBytes(encodeEnvelope({ id: 0, exportId: c.exportId, forget: { items } })!));
  forget([0, 1, 2, 3, 999, 2 ** 32, 2 ** 53 - 1].map((nodeId) => ({ nodeId, nlookup: 1 })));
  forget([{ nodeId: 1, nlookup: 2 ** 53 - 1 }, { nodeId: 5, nlookup: 0 }]);
  forget(Array.from({ length: 5000 }, (_, i) => ({ nodeId: i, nlookup: 2 ** 32 })));
  // Forget on an export that is not mounted, and as a request with an id.
  c.write(frameBytes(encodeEnvelope({ id: 0, exportId: 77, forget: { items: [{ nodeId: 1, nlookup: 1 }] } })!));
  c.write(frameBytes(encodeEnvelope({ id: 4242, exportId: c.exportId, forget: { items: [{ nodeId: 1, nlookup: 1 }] } })!));
  t.truthy((await c.call({ getattr: { node: 1 } })).envelope.attr, 'the root survives');
  const f = Number((await c.call({ lookup: { parent: 1, name: B('f0') } })).envelope.entry!.entry!.nodeId);
  t.truthy((await c.call({ getattr: { node: f } })).envelope.attr);
  forget([{ nodeId: f, nlookup: 1000 }]); // looked up once, forgotten a thousand times
  t.is(errnoOf(await c.call({ getattr: { node: f } })), E.ESTALE, 'a forgotten node is stale, nothing worse');
  const again = Number((await c.call({ lookup: { parent: 1, name: B('f0') } })).envelope.entry!.entry!.nodeId);
  t.truthy((await c.call({ getattr: { node: again } })).envelope.attr, 'and can be looked up again');
  t.false(c.closed);
  t.true(host.alive());
});

test.serial('node ids and handles of another connection or another export are ESTALE/EBADF', async (t) => {
  const host = await freshHost(t);
  const a = await mounted(t, host);
  const b = await mounted(t, host);
  const an = Number((await a.call({ lookup: { parent: 1, name: B('d0') } })).envelope.entry!.entry!.nodeId);
  const af = Number((await a.call({ lookup: { parent: an, name: B('f0') } })).envelope.entry!.entry!.nodeId);
  const afh = Number((await a.call({ open: { node: af, flags: 2 } })).envelope.opened!.fh);
  const adh = Number((await a.call({ opendir: { node: an, flags: 0 } })).envelope.opened!.fh);
  const refused = [E.ESTALE, E.EBADF];
  const outcome = async (c: RawClient, body: Parameters<RawClient['call']>[0], payload?: Buffer) => errnoOf(await c.call(body, { payload }));
  // B has looked nothing up and opened nothing.
  for (const [label, body] of [
    ['getattr', { getattr: { node: af } }],
    ['lookup under', { lookup: { parent: an, name: B('f0') } }],
    ['read', { read: { node: af, fh: afh, offset: 0, size: 10 } }],
    ['readdir', { readdir: { node: an, fh: adh, offset: 0, maxEntries: 10 } }],
    ['release', { release: { node: af, fh: afh } }],
    ['setattr', { setattr: { node: af, size: 0 } }],
  ] as const) {
    const e = await outcome(b, body);
    t.true(refused.includes(e), `B ${label} with A's ids: ${errnoName(e)}`);
  }
  t.true(refused.includes(await outcome(b, { write: { node: af, fh: afh, offset: 0 } }, B('B was here'))));
  // A second export view on A's own connection: its ids do not carry over either.
  const m2 = await a.call({ mountExport: { name: 'default' } });
  const second = m2.envelope.mountReply!.exportId!;
  t.not(second, a.exportId);
  const onSecond = (body: object) => a.call({ ...body, exportId: second, caller: ROOT_CALLER });
  t.true(refused.includes(errnoOf(await onSecond({ getattr: { node: af } }))), 'node of export 1 on export 2');
  t.true(refused.includes(errnoOf(await onSecond({ read: { node: 1, fh: afh, offset: 0, size: 1 } }))), 'handle of export 1 on export 2');
  t.is(errnoOf(await a.call({ exportId: 99, getattr: { node: 1 } })), E.EBADF, 'an export id never mounted');
  // And A's own ids still work; the file is unchanged.
  t.is((await a.call({ read: { node: af, fh: afh, offset: 0, size: 100 } })).payload?.toString(), 'inner\n');
});

test.serial('names with "/", "..", NUL and 4 KiB of bytes are refused (EINVAL/ENAMETOOLONG) and nothing changes', async (t) => {
  const host = await freshHost(t);
  const c = await mounted(t, host);
  const before = (await fs.readdir(host.storage)).sort();
  const file = Number((await c.call({ lookup: { parent: 1, name: B('f0') } })).envelope.entry!.entry!.nodeId);
  const names: Array<[string, Buffer, number[]]> = [
    ['..', B('..'), [E.EINVAL]],
    ['.', B('.'), [E.EINVAL]],
    ['/', B('/'), [E.EINVAL]],
    ['a/b', B('d0/f0'), [E.EINVAL]],
    ['../../etc/passwd', B('../../etc/passwd'), [E.EINVAL]],
    ['f0 NUL x', Buffer.from('f0\0x'), [E.EINVAL]],
    ['NUL', Buffer.from([0]), [E.EINVAL]],
    ['empty', Buffer.alloc(0), [E.EINVAL]],
    ['256 bytes', Buffer.alloc(256, 'y'), [E.ENAMETOOLONG]],
    ['4 KiB', Buffer.alloc(4096, 'x'), [E.ENAMETOOLONG]],
    ['4 KiB of random bytes', new Prng(3).bytes(4096), [E.ENAMETOOLONG, E.EINVAL]],
  ];
  for (const [label, name, want] of names) {
    const ops: Record<string, object> = {
      lookup: { lookup: { parent: 1, name } },
      create: { create: { parent: 1, name, mode: 0o100644, flags: 0o101 } },
      mkdir: { mkdir: { parent: 1, name, mode: 0o755 } },
      mknod: { mknod: { parent: 1, name, mode: 0o10644, rdev: 0 } },
      symlink: { symlink: { parent: 1, name, target: B('f0') } },
      unlink: { unlink: { parent: 1, name } },
      rmdir: { rmdir: { parent: 1, name } },
      'rename from': { rename: { parent: 1, name, newParent: 1, newName: B('moved'), flags: 0 } },
      'rename to': { rename: { parent: 1, name: B('f1'), newParent: 1, newName: name, flags: 0 } },
      link: { link: { node: file, newParent: 1, newName: name } },
    };
    for (const [op, body] of Object.entries(ops)) {
      const e = errnoOf(await c.call(body));
      t.true(want.includes(e), `${op} "${label}": ${errnoName(e)}, expected ${want.map(errnoName).join(' or ')}`);
    }
  }
  t.deepEqual((await fs.readdir(host.storage)).sort(), before, 'nothing was created, removed or renamed');
  t.false(c.closed);
});

// ---- misbehaviours found here, fixed since: regression tests ---------------------------------------------

/** Connections that each write `bytes` and then keep their socket open, half-open, without reading. */
async function holdOpen(t: ExecutionContext, host: HostProcess, n: number, bytes: Buffer): Promise<net.Socket[]> {
  const socks: net.Socket[] = [];
  t.teardown(() => socks.forEach((s) => s.destroy()));
  for (let i = 0; i < n; i++) {
    const s = net.connect({ path: host.socketPath, allowHalfOpen: true });
    s.on('error', () => undefined);
    await new Promise((r) => s.once('connect', r));
    s.write(bytes);
    socks.push(s);
  }
  return socks;
}

// Regression (found here, fixed in 1a3d611, shared/rpc/session.ts onPeerEvent 'goodbye'): a Goodbye
// shut the session down but neither ended nor destroyed the stream, and shutdown() also stopped the
// keepalive, so a guest that said Goodbye and kept its socket open held that fd on the host forever.
test.serial('Goodbye without closing: the host releases the connections of guests that said Goodbye', async (t) => {
  const host = await freshHost(t);
  const before = host.fds();
  const hello = frameBytes(encodeEnvelope({ id: 1, hello: { minVersion: 1, maxVersion: 1, token: host.token } })!);
  const bye = frameBytes(encodeEnvelope({ id: 0, goodbye: { reason: 'leaving, but keeping the socket' } })!);
  const socks = await holdOpen(t, host, 50, Buffer.concat([hello, bye]));
  await sleep(5000);
  t.log(`host fds ${before} before, ${host.fds()} 5 s after 50 Goodbyes; ${socks.filter((s) => s.readableEnded).length} of the 50 sockets were ended by the host`);
  t.true(host.fds() - before < 10, `the host still holds ${host.fds() - before} fds`);
});

// Regression (found here, fixed in 1a3d611, host-agent/server.ts): a refused Hello was answered and
// the host ended its side, but never destroyed the socket, and the keepalive was stopped: a peer that
// did not close held the fd forever -- without a token, so anyone who could reach the socket could
// use up the host's fds.
test.serial('refused Hello: the host releases connections it refused even if the peer keeps them open', async (t) => {
  const host = await freshHost(t);
  const before = host.fds();
  await holdOpen(t, host, 50, frameBytes(encodeEnvelope({ id: 1, hello: { minVersion: 1, maxVersion: 1, token: 'not-the-token' } })!));
  await sleep(5000);
  t.log(`host fds ${before} before, ${host.fds()} 5 s after 50 refused Hellos on connections kept open`);
  t.true(host.fds() - before < 10, `the host still holds ${host.fds() - before} fds`);
});

// Regression (found here, fixed in 1a3d611, host-agent/server.ts serve 'mountExport'): a mountExport
// still in flight when its connection closed completed afterwards and put the new export view into
// `conn.mounts`, already emptied by the close handler: the view (its root fd, its coherence
// subscription) was never released -- one fd per connection, and the host slowed down with every
// leaked subscription (the 1M-frame fuzz run went from ~5,700 to ~300 frames/s, RSS to 1.2 GB).
test.serial('a mountExport in flight when the connection closes at once leaks nothing', async (t) => {
  const host = await freshHost(t);
  const before = host.fds();
  for (let i = 0; i < 200; i++) {
    const c = await RawClient.connect(host.socketPath);
    await c.call({ hello: { minVersion: 1, maxVersion: 1, token: host.token } });
    c.write(c.frame({ mountExport: { name: 'default' } }));
    c.close();
  }
  await sleep(1000);
  t.log(`host fds ${before} before, ${host.fds()} after 200 connections that sent mountExport and closed at once`);
  t.true(host.fds() - before < 10, `the host still holds ${host.fds() - before} fds`);
});

// Regression (found here; server.ts serve 'mountExport'): the handler checked `conn.session.closed`
// after opening the view but then awaited `fs.getattr(root)` before `conn.mounts.set(...)`: a
// connection that closed during that getattr leaked the view (and its coherence subscription).
// Closing 0.1-2 ms after the mountExport hit the window a few times in a hundred.
test.serial('a connection closing while its mountExport reads the root attributes leaks nothing', async (t) => {
  t.timeout(120_000);
  const host = await freshHost(t);
  const before = host.fds();
  for (let i = 0; i < 1200; i++) {
    const c = await RawClient.connect(host.socketPath);
    await c.call({ hello: { minVersion: 1, maxVersion: 1, token: host.token } });
    c.write(c.frame({ mountExport: { name: 'default' } }));
    const until = process.hrtime.bigint() + BigInt((i % 8) * 150_000); // 0 to 1.05 ms
    while (process.hrtime.bigint() < until);
    c.close();
  }
  await waitUntil(() => host.fds() - before < 5, 5000);
  t.log(`host fds ${before} before, ${host.fds()} after 1,200 connections that closed 0-1 ms after their mountExport`);
  t.true(host.fds() - before < 5, `the host still holds ${host.fds() - before} fds`);
});

// Regression (found by the fuzzer, fixed in 2e6c4ab, host-agent/fs-dispatch.ts callerFromWire): a
// Caller with uid or gid 4294967295 ((uid_t)-1) made the native call throw a TypeError ("creds: -1 is
// not an id"), turned into EIO and logged at level "error" with a stack -- a log line per request.
test.serial('caller uid 4294967295 is refused with EINVAL/EPERM, not EIO plus an error log line per request', async (t) => {
  const host = await freshHost(t);
  const c = await mounted(t, host);
  const errorsBefore = host.errorCount;
  const r = await c.call({ caller: { uid: 2 ** 32 - 1, gid: 0, pid: 1 }, mkdir: { parent: 1, name: B('by-minus-one'), mode: 0o755 } });
  await sleep(200);
  t.log(`reply ${errnoName(errnoOf(r))}; host error lines ${host.errorCount - errorsBefore}: ${host.errorLines.at(-1)?.slice(0, 200)}`);
  t.true(errnoOf(r) === E.EINVAL || errnoOf(r) === E.EPERM, `got ${errnoName(errnoOf(r))}`);
  t.is(host.errorCount, errorsBefore, 'no error-level log line for a guest input');
});

// Regression (found here, fixed in 1a3d611, host-agent/fs-dispatch.ts): the backend allowed reads up
// to 16 MiB but a reply payload may be at most 4 MiB, so a read of 4-16 MiB was performed (allocating
// up to 16 MiB), then failed to encode: EIO and an error log line instead of EINVAL up front.
test.serial('a read larger than the frame limit is refused with EINVAL, not performed and answered EIO', async (t) => {
  const host = await freshHost(t);
  const c = await mounted(t, host);
  const node = Number((await c.call({ lookup: { parent: 1, name: B('sparse') } })).envelope.entry!.entry!.nodeId);
  const fh = Number((await c.call({ open: { node, flags: 0 } })).envelope.opened!.fh);
  const r = await c.call({ read: { node, fh, offset: 0, size: 16 << 20 } });
  t.log(`read of 16 MiB: ${errnoName(errnoOf(r))}`);
  t.is(errnoOf(r), E.EINVAL);
});
