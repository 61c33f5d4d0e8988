// Coherence end to end: one host agent serving a storage directory (in this process, so the test
// can count the requests each connection makes), two `dirvisor-guest mount` processes of it (A and
// B) with the default cache mode (long), and `inotifywait -m` watching each mount. Every kind of
// change -- create, write, truncate, chmod, rename, unlink, mkdir, rmdir -- is made once through
// mount A and once directly in the storage directory, and must be seen in mount B by stat, read
// and readdir (whose answers B had cached just before) and by B's inotify watcher.
//
// This process never serves a FUSE mount; it still only uses async fs calls on the mounts.
import test from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { serveDirectory } from '../host-agent/serve.js';
import type { HostServer, Connection } from '../host-agent/server.js';
import { silentLogger } from '../shared/log.js';
import { pb } from '../shared/rpc/wire.js';
import { identityOf } from '../host-agent/coherence/identity.js';
import { cacheTimeouts, parseMountOptions } from '../guest-agent/fuse/options.js';
import { mountGuest, startHost, tempDir, removeTree, waitFor, run, PYTHON, type GuestMount } from './helpers/agents.js';

// ---- inotify watchers (inotifywait -m as a child process) ---------------------------------------

class Watcher {
  readonly events: Array<{ events: string[]; name: string; at: number }> = [];
  private buf = '';
  private constructor(readonly proc: ChildProcess) {
    proc.stdout!.setEncoding('utf8');
    proc.stdout!.on('data', (d: string) => {
      this.buf += d;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        const bar = line.indexOf('|');
        this.events.push({ events: line.slice(0, bar).split(','), name: line.slice(bar + 1), at: Date.now() });
      }
    });
  }

  static async start(dir: string): Promise<Watcher> {
    const p = spawn('inotifywait', ['-m', '--format', '%e|%f', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    const w = new Watcher(p);
    await watchesEstablished(p);
    return w;
  }

  mark(): number {
    return this.events.length;
  }

  since(mark: number): Array<{ events: string[]; name: string }> {
    return this.events.slice(mark);
  }

  /** Waits for an event with all of `kinds` on `name` after `mark`. */
  async expect(mark: number, name: string, ...kinds: string[]): Promise<void> {
    await waitFor(() => this.since(mark).some((e) => e.name === name && kinds.every((k) => e.events.includes(k))), `inotify ${kinds.join(',')} on ${name}`, {
      timeoutMs: 5000,
      details: () => JSON.stringify(this.since(mark)),
    });
  }

  stop(): void {
    this.proc.kill();
  }
}

/** Resolves once inotifywait (without -q) says its watches are in place. */
function watchesEstablished(p: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    let err = '';
    p.stderr!.setEncoding('utf8');
    p.stderr!.on('data', (d: string) => {
      err += d;
      if (err.includes('Watches established')) resolve();
    });
    p.once('exit', (code) => reject(new Error(`inotifywait exited (${code}): ${err}`)));
  });
}

// ---- fixture -----------------------------------------------------------------------------------

let work: string;
let storage: string;
let server: HostServer;
let uri: string;
const token = crypto.randomBytes(8).toString('hex');
let A: GuestMount;
let B: GuestMount;
let connA: Connection;
let connB: Connection;
let wA: Watcher;
let wB: Watcher;

/** Mounts a guest and returns it with the host's end of its connection. */
async function mount(name: string, options?: string): Promise<{ g: GuestMount; conn: Connection }> {
  const before = new Set(server.activeConnections);
  const g = await mountGuest(uri, { token, mnt: path.join(work, name), options });
  const conn = [...server.activeConnections].find((c) => !before.has(c));
  if (!conn) throw new Error('no connection for the new mount');
  return { g, conn };
}

test.before(async () => {
  work = await tempDir('dirvisor-coherence-');
  storage = path.join(work, 'storage');
  await fs.mkdir(storage);
  uri = `unix://${path.join(work, 'host.sock')}`;
  server = await serveDirectory({ dir: storage, listen: [uri], token, logger: silentLogger() });
  ({ g: A, conn: connA } = await mount('a'));
  ({ g: B, conn: connB } = await mount('b'));
  wA = await Watcher.start(A.mnt);
  wB = await Watcher.start(B.mnt);
});

test.after.always(async () => {
  wA?.stop();
  wB?.stop();
  await A?.unmount();
  await B?.unmount();
  await server?.close();
  if (work) await removeTree(work);
});

let seq = 0;
const uniq = (label: string) => `${label}-${++seq}`;

/** B's view, read the way applications do (each call may be served from B's kernel caches). */
const inB = (name: string) => path.join(B.mnt, name);
const statB = (name: string) => fs.lstat(inB(name)).catch(() => null);
const readB = (name: string) => fs.readFile(inB(name), 'utf8').catch(() => null);
const listB = async () => (await fs.readdir(B.mnt)).sort();

/** Where a change is made: through guest A, or directly in the storage directory. */
const WAYS = {
  'through another guest': () => A.mnt,
  'in the storage directory': () => storage,
} as const;

async function until<T>(what: string, cond: () => Promise<T>): Promise<NonNullable<T>> {
  return waitFor(cond, what, { timeoutMs: 5000, intervalMs: 5 });
}

for (const [way, root] of Object.entries(WAYS)) {
  const at = (name: string) => path.join(root(), name);

  test.serial(`create (${way}): B's stat, read, readdir and inotify see it`, async (t) => {
    const name = uniq('create');
    t.is(await statB(name), null); // B looked it up: nothing there
    const before = await listB();
    const m = wB.mark();
    await fs.writeFile(at(name), 'created');
    await until('B to see the new file', async () => (await readB(name)) === 'created');
    t.true((await listB()).includes(name));
    t.false(before.includes(name));
    await wB.expect(m, name, 'CREATE');
    // With its data written, merged into the create or not: watchers of finished files see it.
    await wB.expect(m, name, 'CLOSE_WRITE');
  });

  test.serial(`write (${way}): B reads the new data`, async (t) => {
    const name = uniq('write');
    await fs.writeFile(path.join(storage, name), 'version 1');
    await until('B to see the file', async () => (await readB(name)) === 'version 1');
    const m = wB.mark();
    const fh = await fs.open(at(name), 'r+');
    try {
      await fh.write('VERSION', 0);
    } finally {
      await fh.close();
    }
    await until('B to read the new data', async () => (await readB(name)) === 'VERSION 1');
    t.is((await statB(name))!.size, 9);
    await wB.expect(m, name, 'MODIFY');
  });

  test.serial(`truncate (${way}): B sees the new size and data`, async (t) => {
    const name = uniq('truncate');
    await fs.writeFile(path.join(storage, name), 'a longer content');
    await until('B to see the file', async () => (await readB(name)) === 'a longer content');
    const m = wB.mark();
    await fs.truncate(at(name), 4);
    await until('B to see the truncation', async () => (await statB(name))?.size === 4);
    t.is(await readB(name), 'a lo');
    await wB.expect(m, name, 'MODIFY');
  });

  test.serial(`chmod (${way}): B sees the new mode`, async (t) => {
    const name = uniq('chmod');
    const made = wB.mark();
    await fs.writeFile(path.join(storage, name), 'x', { mode: 0o644 });
    await until('B to see the file', async () => (await statB(name))?.mode === 0o100644);
    // The creation's own events first: changes to one file that arrive together are merged (a
    // create and a chmod become one create), and this test is about a chmod on its own.
    await wB.expect(made, name, 'CLOSE_WRITE');
    const m = wB.mark();
    await fs.chmod(at(name), 0o600);
    await until('B to see the new mode', async () => (await statB(name))?.mode === 0o100600);
    await wB.expect(m, name, 'ATTRIB');
    t.pass();
  });

  test.serial(`rename (${way}): B sees the new name only, with a move event pair`, async (t) => {
    const from = uniq('from');
    const to = uniq('to');
    await fs.writeFile(path.join(storage, from), 'moving');
    await until('B to see the file', async () => (await readB(from)) === 'moving');
    t.is(await statB(to), null);
    const m = wB.mark();
    await fs.rename(at(from), at(to));
    await until('B to see the new name', async () => (await readB(to)) === 'moving');
    t.is(await statB(from), null);
    const names = await listB();
    t.true(names.includes(to));
    t.false(names.includes(from));
    await wB.expect(m, from, 'MOVED_FROM');
    await wB.expect(m, to, 'MOVED_TO');
  });

  test.serial(`unlink (${way}): B no longer finds it`, async (t) => {
    const name = uniq('unlink');
    await fs.writeFile(path.join(storage, name), 'doomed');
    await until('B to see the file', async () => (await readB(name)) === 'doomed');
    t.true((await listB()).includes(name));
    const m = wB.mark();
    await fs.unlink(at(name));
    await until('B to see it gone', async () => (await statB(name)) === null);
    t.false((await listB()).includes(name));
    await wB.expect(m, name, 'DELETE');
  });

  test.serial(`mkdir (${way}): B sees the directory`, async (t) => {
    const name = uniq('mkdir');
    t.is(await statB(name), null);
    const m = wB.mark();
    await fs.mkdir(at(name));
    await until('B to see the directory', async () => (await statB(name))?.isDirectory());
    t.true((await listB()).includes(name));
    t.deepEqual(await fs.readdir(inB(name)), []);
    await wB.expect(m, name, 'CREATE', 'ISDIR');
  });

  test.serial(`rmdir (${way}): B no longer finds the directory`, async (t) => {
    const name = uniq('rmdir');
    await fs.mkdir(path.join(storage, name));
    await until('B to see the directory', async () => (await statB(name))?.isDirectory());
    t.true((await listB()).includes(name));
    const m = wB.mark();
    await fs.rmdir(at(name));
    await until('B to see it gone', async () => (await statB(name)) === null);
    t.false((await listB()).includes(name));
    await wB.expect(m, name, 'DELETE', 'ISDIR');
  });
}

test.serial('changes deep in the tree reach a recursive watcher in the other guest', async (t) => {
  const top = uniq('tree');
  await fs.mkdir(path.join(storage, top, 'sub'), { recursive: true });
  await until('B to see the tree', async () => (await statB(path.join(top, 'sub')))?.isDirectory());
  const p = spawn('inotifywait', ['-m', '-r', '--format', '%e|%w%f', inB(top)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout!.on('data', (d) => (out += d));
  try {
    await watchesEstablished(p);
    await fs.writeFile(path.join(storage, top, 'sub', 'deep'), 'deep data');
    await fs.mkdir(path.join(A.mnt, top, 'sub', 'newdir'));
    await fs.writeFile(path.join(A.mnt, top, 'sub', 'newdir', 'inner'), 'inner');
    await waitFor(() => out.includes(`CREATE|${inB(top)}/sub/deep`), 'CREATE of deep', { timeoutMs: 5000, details: () => out });
    await waitFor(() => out.includes(`CREATE,ISDIR|${inB(top)}/sub/newdir`), 'CREATE of newdir', { timeoutMs: 5000, details: () => out });
    // inotifywait -r adds a watch on the new directory when told of it; what is created there
    // afterwards is seen through that watch.
    await fs.writeFile(path.join(storage, top, 'sub', 'newdir', 'later'), 'later');
    await waitFor(() => out.includes(`CREATE|${inB(top)}/sub/newdir/later`), 'CREATE in the new directory', { timeoutMs: 5000, details: () => out });
    t.is(await readB(path.join(top, 'sub', 'newdir', 'inner')), 'inner');
  } finally {
    p.kill();
  }
});

test.serial('a directory moved away and a file made at its old name at once: B sees both, every time', async (t) => {
  // B keeps reading the old name while the two changes arrive: its kernel may hold the new file
  // there when the move is replayed (once, the moved directory stayed a file in B for 60 s).
  const top = uniq('swap');
  await fs.mkdir(path.join(storage, top));
  for (let i = 0; i < 40; i++) {
    const d = path.join(top, `d${i % 4}`);
    await fs.mkdir(path.join(storage, d));
    await fs.writeFile(path.join(storage, d, 'in'), `in ${i}`);
    await until('B to read in the directory', async () => (await readB(path.join(d, 'in'))) === `in ${i}`);
    let polling = true;
    const poll = (async () => {
      while (polling) await readB(d);
    })();
    await fs.rename(path.join(storage, d), path.join(storage, `${d}.old`));
    await fs.writeFile(path.join(storage, d), `file ${i}`);
    try {
      await until('B to read the new file', async () => (await readB(d)) === `file ${i}`);
      await until('B to read in the moved directory', async () => (await readB(path.join(`${d}.old`, 'in'))) === `in ${i}`);
    } finally {
      polling = false;
      await poll;
    }
    await fs.rm(path.join(storage, `${d}.old`), { recursive: true });
    await fs.unlink(path.join(storage, d));
  }
  t.pass();
});

test.serial("a guest's own changes are not echoed back to it", async (t) => {
  const name = uniq('own');
  const m = wA.mark();
  const mB = wB.mark();
  await fs.writeFile(path.join(A.mnt, name), 'mine');
  await fs.chmod(path.join(A.mnt, name), 0o640);
  await wB.expect(mB, name, 'ATTRIB'); // B heard of it...
  await sleep(500); // ...and anything A would wrongly hear of has arrived by now
  const seen = wA.since(m).filter((e) => e.name === name).map((e) => e.events.join(','));
  // Exactly what the kernel reports for A's own calls: one create, one write, one chmod.
  t.deepEqual(seen.filter((e) => e.startsWith('CREATE')), ['CREATE']);
  t.is(seen.filter((e) => e === 'MODIFY').length, 1, seen.join(' '));
  t.is(seen.filter((e) => e === 'ATTRIB').length, 1, seen.join(' '));
});

test.serial('a data change another guest cached is dropped from its page cache (keep_cache)', async (t) => {
  const name = uniq('pages');
  const big = Buffer.alloc(256 * 1024, 'a');
  await fs.writeFile(path.join(storage, name), big);
  await until('B to read it', async () => (await fs.readFile(inB(name)).catch(() => null))?.equals(big));
  // Read twice: the second read comes from B's page cache (kept across opens in cache=long).
  t.true((await fs.readFile(inB(name))).equals(big));
  const fh = await fs.open(path.join(A.mnt, name), 'r+');
  try {
    await fh.write(Buffer.from('CHANGED'), 0, 7, 100_000);
  } finally {
    await fh.close();
  }
  const expected = Buffer.from(big);
  expected.write('CHANGED', 100_000);
  await until('B to read the changed range', async () => (await fs.readFile(inB(name))).equals(expected));
});

test.serial('cache=long: repeated stat and readdir of an unchanged tree are served by the guest, unlike cache=none', async (t) => {
  const top = uniq('unchanged');
  for (let d = 0; d < 10; d++) {
    await fs.mkdir(path.join(storage, top, `d${d}`), { recursive: true });
    for (let f = 0; f < 20; f++) await fs.writeFile(path.join(storage, top, `d${d}`, `f${f}`), `${d}/${f}`);
  }
  const none = await mount('none', 'cache=none');
  try {
    const walk = (mnt: string) =>
      run([PYTHON, '-c', 'import os,sys\nn=0\nfor r,ds,fs in os.walk(sys.argv[1]):\n  for x in ds+fs: os.lstat(os.path.join(r,x)); n+=1\nprint(n)', path.join(mnt, top)]);
    const requests = (c: Connection) => c.session.stats.requestsIn;
    const cost = async (mnt: string, c: Connection) => {
      const before = requests(c);
      const r = await walk(mnt);
      t.is(r.stdout.trim(), '210', r.stderr);
      return requests(c) - before;
    };
    // Warm up both (the kernel refreshes each directory's attributes once after its first listing,
    // for the atime it invalidated), then measure two more passes.
    for (let i = 0; i < 2; i++) await cost(none.g.mnt, none.conn);
    // The tree was just written: on a loaded machine the pushes about its creation may still be
    // arriving (each rightly drops what B cached). Warm up until B has seen them all.
    for (let i = 0; i < 20 && (await cost(B.mnt, connB)) > 2; i++) await sleep(200);
    const longCost = (await cost(B.mnt, connB)) + (await cost(B.mnt, connB));
    const noneCost = (await cost(none.g.mnt, none.conn)) + (await cost(none.g.mnt, none.conn));
    t.log(`host requests for two walks of 210 entries: cache=long ${longCost}, cache=none ${noneCost}`);
    t.true(longCost <= 4, `cache=long walk cost ${longCost} host requests`);
    t.true(noneCost >= 420, `cache=none walk cost ${noneCost} host requests`);
    // And the long cache is still coherent: a change in the tree is seen at once.
    await fs.writeFile(path.join(storage, top, 'd3', 'f7'), 'changed behind its back');
    await until('B to see the change', async () => (await readB(path.join(top, 'd3', 'f7'))) === 'changed behind its back');
    await fs.unlink(path.join(storage, top, 'd5', 'f1'));
    await until('B to see the removal', async () => !(await fs.readdir(inB(path.join(top, 'd5')))).includes('f1'));
  } finally {
    await none.g.unmount();
  }
});

test.serial('a burst of changes: the other guest ends up with the final state', async (t) => {
  const top = uniq('burst');
  await fs.mkdir(path.join(storage, top));
  await until('B to see the directory', async () => (await statB(top))?.isDirectory());
  t.deepEqual(await fs.readdir(inB(top)), []);
  // 3000 creates, then half of them rewritten and a third removed, as fast as a shell can.
  const script = `cd '${path.join(storage, top)}' && for i in $(seq 1 3000); do echo $i > f$i; done && ` +
    `for i in $(seq 1 2 3000); do echo x$i > f$i; done && for i in $(seq 1 3 3000); do rm f$i; done`;
  await run(['bash', '-c', script]);
  const expected = (await fs.readdir(path.join(storage, top))).sort();
  t.is(expected.length, 2000);
  await until('B to list the final state', async () => JSON.stringify((await fs.readdir(inB(top))).sort()) === JSON.stringify(expected));
  for (const n of ['f2', 'f3', 'f5', 'f2999']) {
    t.is(await readB(path.join(top, n)), await fs.readFile(path.join(storage, top, n), 'utf8'), n);
  }
  t.is(await statB(path.join(top, 'f4')), null);
});

test.serial('changes naming paths outside the mount (.., a symlink to elsewhere) make the guest touch nothing there', async (t) => {
  // Outside every mount: a directory a symlink in the storage points to.
  const victim = path.join(work, 'victim');
  await fs.mkdir(victim, { recursive: true });
  await fs.writeFile(path.join(victim, 'keep'), 'precious');
  const lnk = uniq('lnk');
  await fs.symlink(victim, path.join(storage, lnk));
  const m = [...connB.mounts.values()][0];
  const exportId = [...connB.mounts.keys()][0];
  const id = identityOf(m.fs)!;
  const st = await fs.lstat(path.join(storage, lnk), { bigint: true });
  // B looks the link up (again, once the push about its creation has dropped the first lookup).
  await sleep(300);
  const lnkNode = await until('B to know the link', async () => ((await statB(lnk))?.isSymbolicLink() ? id.nodeOf(`${st.dev}:${st.ino}`) : undefined));
  const K = pb.Change.Kind;
  const before = (await fs.stat(path.join(victim, 'keep'))).mtimeMs;
  // A host that lies (or names the guest cannot trust): each would remove or create `keep` outside.
  connB.session.notify({
    exportId,
    changes: {
      changes: [
        { kind: K.DELETE, parent: 1, name: Buffer.from(`../victim/keep`) },
        { kind: K.DELETE, parent: 1, name: Buffer.from('..') },
        { kind: K.DELETE, parent: lnkNode, name: Buffer.from('keep'), attr: { mode: 0o100644 } },
        { kind: K.CREATE, parent: lnkNode, name: Buffer.from('planted'), attr: { mode: 0o100644 } },
        { kind: K.MOVE, parent: lnkNode, name: Buffer.from('keep'), newParent: 1, newName: Buffer.from('stolen') },
        { kind: K.MODIFY, parent: lnkNode, name: Buffer.from('keep'), offset: 0, length: 0, attr: { mode: 0o100644, size: 8 } },
      ],
    },
  });
  await sleep(1000);
  t.is(await fs.readFile(path.join(victim, 'keep'), 'utf8'), 'precious');
  t.deepEqual(await fs.readdir(victim), ['keep']);
  t.is((await fs.stat(path.join(victim, 'keep'))).mtimeMs, before);
  // And B still works.
  await fs.writeFile(path.join(storage, 'after-lies'), 'ok');
  await until('B to keep working', async () => (await readB('after-lies')) === 'ok');
});

test.serial('after the host agent restarts, the guest drops everything it cached (changes meanwhile were not pushed)', async (t) => {
  const dir = path.join(work, 'restart-storage');
  await fs.mkdir(dir);
  await fs.writeFile(path.join(dir, 'f'), 'before');
  const sock = `unix://${path.join(work, 'restart.sock')}`;
  let host = await serveDirectory({ dir, listen: [sock], token, logger: silentLogger() });
  const g = await mountGuest(sock, { token, mnt: path.join(work, 'restart-mnt') });
  try {
    const f = path.join(g.mnt, 'f');
    t.is(await fs.readFile(f, 'utf8'), 'before');
    host.dropAll('restarting');
    await host.close();
    await fs.writeFile(path.join(dir, 'f'), 'after the restart');
    await fs.writeFile(path.join(dir, 'new'), 'new');
    host = await serveDirectory({ dir, listen: [sock], token, logger: silentLogger() });
    await until('the guest to read what changed while the host was away', async () => (await fs.readFile(f, 'utf8').catch(() => '')) === 'after the restart');
    t.true((await fs.readdir(g.mnt)).includes('new'));
  } finally {
    await g.unmount();
    host.dropAll('test done');
    await host.close();
  }
});

test.serial('a host agent that dies while the guest replays changes for its watchers: the guest unmounts at once, not after the reconnect window', async (t) => {
  // A replay's syscall holds the mount busy. If the host it needs to answer the replay's lookups
  // is gone, the replay must fail at once; waiting the reconnect window (30 s) would keep the
  // mount busy and the guest agent's unmount waiting.
  const dir = path.join(work, 'dying-storage');
  await fs.mkdir(dir);
  const host = await startHost({ dir, workDir: work });
  const g = await mountGuest(host.uri, { token: host.token, mnt: path.join(work, 'dying-mnt') });
  try {
    const w = await Watcher.start(g.mnt);
    const mark = w.mark();
    // Many files with data: each is replayed as a create, then a write that asks the host for the
    // file's attributes. Freeze the host as soon as the guest starts replaying, then kill it.
    await Promise.all(Array.from({ length: 100 }, (_, i) => fs.writeFile(path.join(dir, `f${i}`), `data ${i}`)));
    await waitFor(() => w.since(mark).some((e) => e.events.includes('CREATE')), 'the guest to start replaying', { timeoutMs: 10_000, intervalMs: 2 });
    host.proc.kill('SIGSTOP');
    await sleep(300); // the guest's replays now wait for the frozen host
    host.proc.kill('SIGKILL');
    await host.stop();
    w.stop();
    const t0 = Date.now();
    const r = await g.unmount();
    const ms = Date.now() - t0;
    t.log(`unmounted and exited ${ms} ms after the host died (${w.since(mark).length} inotify events had been replayed)`);
    t.false(r.lazy, 'a plain unmount went through (the mount was not held busy)');
    t.true(ms < 5000, `the guest agent ended within 5 s (took ${ms} ms)`);
    t.regex(await g.log(), /"msg":"unmounted"/);
  } finally {
    await g.unmount();
    await host.stop();
  }
});

test.serial('changes the host cannot watch are seen after the revalidation interval (revalidate=1)', async (t) => {
  // No inotify watch at all (as beyond the watch limit, or a network file system changed by another
  // host): only the bounded staleness of cache=long makes the guest see these.
  const dir = path.join(work, 'unwatched-storage');
  await fs.mkdir(dir);
  await fs.writeFile(path.join(dir, 'f'), 'version 1');
  const sock = `unix://${path.join(work, 'unwatched.sock')}`;
  const host = await serveDirectory({ dir, listen: [sock], token, logger: silentLogger(), maxWatches: 0 });
  const g = await mountGuest(sock, { token, mnt: path.join(work, 'unwatched-mnt'), options: 'revalidate=1' });
  try {
    const f = path.join(g.mnt, 'f');
    t.is(await fs.readFile(f, 'utf8'), 'version 1');
    t.deepEqual(await fs.readdir(g.mnt), ['f']);
    await fs.writeFile(path.join(dir, 'f'), 'version 2, longer');
    await fs.writeFile(path.join(dir, 'new'), 'new');
    await fs.chmod(path.join(dir, 'f'), 0o600);
    await until('the guest to read the new data', async () => (await fs.readFile(f, 'utf8')) === 'version 2, longer');
    await until('the guest to list the new file', async () => (await fs.readdir(g.mnt)).includes('new'));
    await until('the guest to see the new mode', async () => (await fs.stat(f)).mode === 0o100600);
    t.pass();
  } finally {
    await g.unmount();
    host.dropAll('test done');
    await host.close();
  }
});

test('mount options: cache=long trusts names and attributes for revalidate= seconds (default 60)', (t) => {
  t.deepEqual(cacheTimeouts(parseMountOptions('cache=long').fuse), { entry: 60, attr: 60, negative: 60, keepCache: true, directIo: false });
  const five = cacheTimeouts(parseMountOptions('cache=long,revalidate=5').fuse);
  t.is(five.entry, 5);
  t.is(five.attr, 5);
  t.true(cacheTimeouts(parseMountOptions('cache=long,revalidate=0').fuse).attr >= 86400);
  t.is(cacheTimeouts(parseMountOptions('cache=auto,revalidate=5').fuse).attr, 1);
  t.is(parseMountOptions('noinotify').fuse.inotify, false);
  t.throws(() => parseMountOptions('revalidate=soon'), { message: /revalidate/ });
});
