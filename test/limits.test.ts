// Limits per VM (host-agent/limits.ts) and per storage node (host-agent/storage/guard.ts), against a
// real HostServer serving real directories to two VMs over a unix socket.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { HostServer, type Authorizer, type ExportDef } from '../host-agent/server.js';
import { PosixBackend } from '../host-agent/backend/posix.js';
import { NodeGuard, GuardedFs } from '../host-agent/storage/guard.js';
import { FsError, E, errnoName } from '../shared/fs/errors.js';
import { silentLogger } from '../shared/log.js';
import type { FileSystem } from '../shared/fs/interface.js';
import { RawClient, errnoOf } from './fuzz/raw-client.js';

const B = (s: string) => Buffer.from(s);
const ROOT = { uid: 0, gid: 0, pid: 1 };

/** A host serving `dir` to VMs "a" (token "ta") and "b" (token "tb"), with per-VM limits. */
async function twoVms(t: ExecutionContext, vm: { maxFds?: number; maxInFlight?: number }, wrap?: (fs: FileSystem) => FileSystem) {
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'dirvisor-limits-'));
  const dir = path.join(work, 'storage');
  await fs.mkdir(dir);
  for (let i = 0; i < 20; i++) await fs.writeFile(path.join(dir, `f${i}`), `file ${i}\n`);
  const def: ExportDef = {
    name: 'default', target: '', readOnly: false, cacheMode: 'auto', mountOptions: [],
    open: async () => {
      const b = await PosixBackend.create(dir, { maxHandles: 100_000 });
      return wrap ? wrap(b) : b;
    },
  };
  const authorizer: Authorizer = {
    identify(_peer, token) {
      if (token !== 'ta' && token !== 'tb') throw new FsError(E.EACCES, 'wrong token');
      return { vmName: token === 'ta' ? 'a' : 'b', generation: 1, exports: () => [def] };
    },
  };
  const server = new HostServer(authorizer, silentLogger(), { vm });
  const sock = path.join(work, 'h.sock');
  await server.listen(`unix://${sock}`);
  const clients: RawClient[] = [];
  t.teardown(async () => {
    clients.forEach((c) => c.close());
    await server.close();
    await fs.rm(work, { recursive: true, force: true });
  });
  const connect = async (token: string) => {
    const c = await RawClient.mounted(sock, token);
    clients.push(c);
    return c;
  };
  return { server, connect, dir };
}

async function lookup(c: RawClient, name: string): Promise<number> {
  const r = await c.call({ lookup: { parent: 1, name: B(name) } });
  if (!r.envelope.entry) throw new Error(`lookup ${name}: ${errnoName(errnoOf(r))}`);
  return Number(r.envelope.entry.entry!.nodeId);
}

test('one VM that opens files on several connections until refused gets EMFILE at its fd budget; another VM mounts, looks up and opens as before', async (t) => {
  const { server, connect } = await twoVms(t, { maxFds: 300 });
  const a1 = await connect('ta');
  const a2 = await connect('ta');
  let opened = 0;
  let refused = 0;
  for (const c of [a1, a2]) {
    const node = await lookup(c, 'f0');
    for (let i = 0; i < 200; i++) {
      const r = await c.call({ open: { node, flags: 0 } });
      if (r.envelope.opened) opened++;
      else {
        t.is(errnoOf(r), E.EMFILE, `refused with ${errnoName(errnoOf(r))}`);
        refused++;
      }
    }
  }
  t.log(`VM a: ${opened} handles opened over 2 connections, ${refused} refused; budget in use ${server.vmLimiter('a').fdsInUse}`);
  t.true(opened <= 300 && opened >= 290, `${opened} opened (budget 300, minus the roots and nodes)`);
  t.true(refused > 0);
  // A lookup of a new node by the same VM is refused too (ENFILE), and a third mount (a root fd).
  t.is(errnoOf(await a1.call({ lookup: { parent: 1, name: B('f5') } })), E.ENFILE);
  await t.throwsAsync(connect('ta'), { message: /EMFILE|errno": ?24/ });
  // The other VM is not affected.
  const b = await connect('tb');
  const node = await lookup(b, 'f1');
  const r = await b.call({ open: { node, flags: 0 } });
  t.truthy(r.envelope.opened, `VM b open: ${errnoName(errnoOf(r))}`);
  const data = await b.call({ read: { node, fh: r.envelope.opened!.fh, offset: 0, size: 100 } });
  t.is(data.payload?.toString(), 'file 1\n');
  // Releasing gives the budget back: after a's connections close, a can mount and open again.
  a1.close();
  a2.close();
  const until = Date.now() + 5000;
  while (server.vmLimiter('a').fdsInUse > 0 && Date.now() < until) await new Promise((res) => setTimeout(res, 20));
  t.is(server.vmLimiter('a').fdsInUse, 0, 'every fd of VM a given back when its connections closed');
  const a3 = await connect('ta');
  const n3 = await lookup(a3, 'f2');
  t.truthy((await a3.call({ open: { node: n3, flags: 0 } })).envelope.opened);
});

test('a VM\'s requests beyond its in-flight limit wait their turn, across its connections; another VM is served at once', async (t) => {
  // Storage calls of VM a's files block until released; VM b's do not.
  const gates: Array<() => void> = [];
  let running = 0;
  let peak = 0;
  const { server, connect } = await twoVms(t, { maxInFlight: 4 }, (inner) => new Proxy(inner, {
    get(target, prop, recv) {
      const v = Reflect.get(target, prop, recv);
      if (prop !== 'getattr') return typeof v === 'function' ? v.bind(target) : v;
      return async (caller: { uid: number }, node: number, fh?: number) => {
        if (caller.uid === 1234) {
          running++;
          peak = Math.max(peak, running);
          await new Promise<void>((res) => gates.push(res));
          running--;
        }
        return target.getattr(caller as never, node, fh);
      };
    },
  }));
  const a = [await connect('ta'), await connect('ta'), await connect('ta')];
  const b = await connect('tb');
  const pending = a.flatMap((c) => Array.from({ length: 10 }, () => c.call({ caller: { uid: 1234, gid: 0, pid: 1 }, getattr: { node: 1 } }, { ms: 30_000 })));
  const until = Date.now() + 5000;
  while (running < 4 && Date.now() < until) await new Promise((res) => setTimeout(res, 10));
  t.is(running, 4, 'four of VM a\'s 30 requests run');
  t.deepEqual(server.vmLimiter('a').inFlight, { running: 4, waiting: 26 });
  const t0 = performance.now();
  const rb = await b.call({ getattr: { node: 1 } }, { ms: 5000 });
  t.truthy(rb.envelope.attr, 'VM b is served while VM a waits');
  t.log(`VM b getattr in ${(performance.now() - t0).toFixed(1)} ms while VM a has 26 requests waiting`);
  while (gates.length || running) {
    gates.splice(0).forEach((g) => g());
    await new Promise((res) => setTimeout(res, 5));
  }
  const replies = await Promise.all(pending);
  t.true(replies.every((r) => r.envelope.attr), 'all of VM a\'s requests are answered in the end');
  t.is(peak, 4, 'never more than 4 at once');
});

test('a frozen storage node: calls fail with ETIMEDOUT at the deadline, at most maxCalls are held, the other node keeps working, late results are undone', async (t) => {
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'dirvisor-guard-'));
  t.teardown(() => fs.rm(work, { recursive: true, force: true }));
  await fs.mkdir(path.join(work, 'n1'));
  await fs.mkdir(path.join(work, 'n2'));
  await fs.writeFile(path.join(work, 'n1', 'x'), 'x');
  await fs.writeFile(path.join(work, 'n2', 'y'), 'y');
  const b1 = await PosixBackend.create(path.join(work, 'n1'));
  const b2 = await PosixBackend.create(path.join(work, 'n2'));
  t.teardown(async () => { await b1.destroy(); await b2.destroy(); });
  // Node 1 "freezes": its calls do not return until thawed.
  let frozen = true;
  const thaw: Array<() => void> = [];
  let inStorage = 0;
  let released = 0;
  const frozenFs = new Proxy(b1, {
    get(target, prop, recv) {
      const v = Reflect.get(target, prop, recv);
      if (typeof v !== 'function') return v;
      if (prop === 'release') return async (...args: unknown[]) => { released++; return (v as (...a: unknown[]) => Promise<unknown>).apply(target, args); };
      if (prop === 'forget' || prop === 'destroy') return v.bind(target);
      return async (...args: unknown[]) => {
        inStorage++;
        if (frozen) await new Promise<void>((res) => thaw.push(res));
        inStorage--;
        return (v as (...a: unknown[]) => Promise<unknown>).apply(target, args);
      };
    },
  });
  const g1 = new NodeGuard('n1', { maxCalls: 3, timeoutMs: 300 });
  const g2 = new NodeGuard('n2', { maxCalls: 3, timeoutMs: 300 });
  const fs1 = new GuardedFs(frozenFs, g1);
  const fs2 = new GuardedFs(b2, g2);
  const x = await (async () => { frozen = false; const e = await fs1.lookup(ROOT, 1, B('x')); frozen = true; return e; })();
  const t0 = performance.now();
  const calls = [
    ...Array.from({ length: 10 }, () => fs1.getattr(ROOT, x.nodeId).then(() => 'ok', (e: FsError) => e.code)),
    fs1.open(ROOT, x.nodeId, 0).then(() => 'ok', (e: FsError) => e.code),
  ];
  const other = await fs2.lookup(ROOT, 1, B('y'));
  t.truthy(other.attr, 'the other node answers while node 1 is frozen');
  const outcomes = await Promise.all(calls);
  const ms = performance.now() - t0;
  t.log(`node 1 frozen: ${outcomes.length} calls settled in ${ms.toFixed(0)} ms: ${JSON.stringify(outcomes)}; ${inStorage} calls held in the storage`);
  t.true(outcomes.every((o) => o === 'ETIMEDOUT'), 'every call on the frozen node fails with ETIMEDOUT');
  t.true(ms < 2000, 'within the deadline (300 ms) plus scheduling');
  t.is(inStorage, 3, 'at most maxCalls calls are held by the frozen storage');
  // New calls wait for a slot and time out too, without entering the storage.
  t.is(await fs1.getattr(ROOT, x.nodeId).then(() => 'ok', (e: FsError) => e.code), 'ETIMEDOUT');
  t.is(inStorage, 3);
  // The storage comes back: stuck calls return (a late open is released), new calls work.
  frozen = false;
  thaw.splice(0).forEach((f) => f());
  const until = Date.now() + 5000;
  while (g1.stuck > 0 && Date.now() < until) await new Promise((res) => setTimeout(res, 10));
  t.is(g1.stuck, 0);
  t.truthy((await fs1.getattr(ROOT, x.nodeId)).ino, 'service resumes');
  // The open was one of the first three only if it got a slot; if it did, its late handle was released.
  t.true(released <= 1);
  // Errors from the storage pass through unchanged.
  t.is(await fs2.lookup(ROOT, 1, B('missing')).then(() => 'ok', (e: FsError) => e.code), 'ENOENT');
});

test('a storage node serves waiting calls in turn per export view: a guest with 50 calls queued delays another guest\'s call by one round, not 50 calls', async (t) => {
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'dirvisor-guard-'));
  t.teardown(() => fs.rm(work, { recursive: true, force: true }));
  await fs.writeFile(path.join(work, 'x'), 'x');
  const backend = await PosixBackend.create(work);
  t.teardown(() => backend.destroy());
  // A slow storage: each getattr completes when the test lets one through.
  const gates: Array<() => void> = [];
  const order: string[] = [];
  const slow = (who: string): FileSystem => new Proxy(backend, {
    get(target, prop, recv) {
      const v = Reflect.get(target, prop, recv);
      if (prop !== 'getattr') return typeof v === 'function' ? v.bind(target) : v;
      return async (...args: unknown[]) => {
        await new Promise<void>((res) => gates.push(res));
        order.push(who);
        return (v as (...a: unknown[]) => Promise<unknown>).apply(target, args);
      };
    },
  });
  const guard = new NodeGuard('n', { maxCalls: 1, timeoutMs: 60_000 });
  const busy = new GuardedFs(slow('busy'), guard);
  const other = new GuardedFs(slow('other'), guard);
  const busyCalls = Array.from({ length: 50 }, () => busy.getattr(ROOT, 1));
  const otherCall = other.getattr(ROOT, 1);
  const step = async () => {
    while (gates.length === 0) await new Promise((res) => setTimeout(res, 1));
    gates.shift()!();
    await new Promise((res) => setTimeout(res, 1));
  };
  while (order.length < 51) await step();
  await Promise.all([...busyCalls, otherCall]);
  const at = order.indexOf('other');
  t.log(`the other view's call was served as number ${at + 1} of 51`);
  t.true(at >= 0 && at <= 2, `served within one round of the waiting views (position ${at + 1})`);
});
