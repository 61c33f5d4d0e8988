// npm run bench:coherence — how fast a change made elsewhere reaches a guest, and what caching buys.
//
// One host agent (in this process, so its connections' request counters can be read) serves a
// temporary directory; guest agents mount it as child processes (`dirvisor-guest mount`): A and B
// with the default cache mode (long), C with cache=none. Every file call on a mount is async: the
// mounts need this process's event loop (the host agent) to answer.
//
//   1. latency, over 1,000 changes each made through guest A and directly in the storage directory:
//      (a) from the change until guest B's stat shows it (B had the file's attributes cached),
//      (b) from the change until an inotify watcher in B's mount gets the event (a python3 reader
//          stamping each event with CLOCK_MONOTONIC, the clock of process.hrtime);
//   2. a burst of 10,000 changes (file creations) and the time until B lists and reads them all;
//   3. repeated stat + readdir walks of an unchanged tree: cache=long (B) against cache=none (C),
//      wall time and host requests per walk.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { HostServer, type Connection, type ExportDef } from '../host-agent/server.js';
import { PosixBackend } from '../host-agent/backend/posix.js';
import { CoherenceHub } from '../host-agent/coherence/hub.js';
import { withIdentity } from '../host-agent/coherence/identity.js';
import { silentLogger } from '../shared/log.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const GUEST = path.join(REPO, 'bin/dirvisor-guest.js');
const PYTHON = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const CHANGES = Number(process.env.BENCH_CHANGES ?? 1000);
const BURST = Number(process.env.BENCH_BURST ?? 10_000);

const now = (): bigint => process.hrtime.bigint();
const ms = (ns: bigint): number => Number(ns) / 1e6;

// ---- an inotify reader with monotonic timestamps (python3 + ctypes, no package needed) ----------

const WATCHER_PY = String.raw`
import ctypes, os, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
mask = 0x2 | 0x4 | 0x40 | 0x80 | 0x100 | 0x200   # MODIFY ATTRIB MOVED_FROM MOVED_TO CREATE DELETE
if libc.inotify_add_watch(fd, sys.argv[1].encode(), mask) < 0: sys.exit('inotify_add_watch failed')
out = os.fdopen(1, 'w', buffering=1)
out.write('ready\n')
while True:
    buf = os.read(fd, 65536)
    t = time.monotonic_ns()
    i = 0
    while i < len(buf):
        wd, m, cookie, n = struct.unpack_from('iIII', buf, i)
        name = buf[i + 16:i + 16 + n].rstrip(b'\0').decode('utf-8', 'replace')
        out.write('%d %d %s\n' % (t, m, name))
        i += 16 + n
`;

class Watcher {
  /** name -> arrival times (ns, CLOCK_MONOTONIC) of MODIFY / CREATE events. */
  readonly seen = new Map<string, bigint[]>();
  private buf = '';
  private constructor(readonly proc: ChildProcess) {}

  static async start(dir: string): Promise<Watcher> {
    const proc = spawn(PYTHON, ['-c', WATCHER_PY, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
    const w = new Watcher(proc);
    await new Promise<void>((resolve) => {
      proc.stdout!.setEncoding('utf8');
      proc.stdout!.on('data', (d: string) => {
        w.buf += d;
        let nl: number;
        while ((nl = w.buf.indexOf('\n')) >= 0) {
          const line = w.buf.slice(0, nl);
          w.buf = w.buf.slice(nl + 1);
          if (line === 'ready') {
            resolve();
            continue;
          }
          const [t, mask, ...rest] = line.split(' ');
          if (!(Number(mask) & 0x102)) continue; // MODIFY or CREATE
          const name = rest.join(' ');
          const list = w.seen.get(name) ?? [];
          list.push(BigInt(t));
          w.seen.set(name, list);
        }
      });
    });
    return w;
  }

  /** The first event on `name` at or after `since` (waits up to 5 s). */
  async first(name: string, since: bigint): Promise<bigint | undefined> {
    const deadline = Date.now() + 5000;
    for (;;) {
      const t = this.seen.get(name)?.find((x) => x >= since);
      if (t !== undefined || Date.now() > deadline) return t;
      await sleep(1);
    }
  }

  stop(): void {
    this.proc.kill();
  }
}

// ---- setup ------------------------------------------------------------------------------------

interface Guest {
  mnt: string;
  proc: ChildProcess;
  conn: Connection;
}

async function mountGuest(server: HostServer, uri: string, token: string, mnt: string, options: string[] = []): Promise<Guest> {
  fs.mkdirSync(mnt, { recursive: true });
  const before = new Set(server.activeConnections);
  const args = [GUEST, 'mount', uri, mnt, '--token', token, '--foreground', ...options.flatMap((o) => ['-o', o])];
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, DIRVISOR_LOG_LEVEL: 'warn' } });
  const deadline = Date.now() + 20_000;
  while (!(await fsp.readFile('/proc/mounts', 'utf8')).includes(` ${mnt} `)) {
    if (Date.now() > deadline || proc.exitCode !== null) throw new Error(`mounting ${mnt} failed`);
    await sleep(20);
  }
  const conn = [...server.activeConnections].find((c) => !before.has(c));
  if (!conn) throw new Error('no host connection for the new mount');
  return { mnt, proc, conn };
}

async function unmount(g: Guest): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const code = await new Promise((r) => spawn('fusermount3', ['-u', g.mnt], { stdio: 'ignore' }).on('exit', r));
    if (code === 0) break;
    await sleep(100);
  }
  if (g.proc.exitCode === null) await new Promise((r) => g.proc.once('exit', r));
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** Polls `cond` as fast as the event loop allows. */
async function spin(cond: () => Promise<boolean> | boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

const statSize = (p: string): Promise<number> => fsp.stat(p).then((s) => s.size, () => -1);
const exists = (p: string): Promise<boolean> => fsp.lstat(p).then(() => true, () => false);
const count = (p: string): Promise<number> => fsp.readdir(p).then((l) => l.length, () => -1);

// ---- 1. latency ------------------------------------------------------------------------------

async function latency(label: string, changeRoot: string, b: Guest, watcher: Watcher, dir: string): Promise<string[]> {
  const files = 50;
  await fsp.mkdir(path.join(changeRoot, dir), { recursive: true });
  const size = new Map<string, number>();
  for (let i = 0; i < files; i++) {
    await fsp.writeFile(path.join(changeRoot, dir, `f${i}`), 'x');
    size.set(`f${i}`, 1);
  }
  // B caches every file's attributes.
  await spin(async () => (await count(path.join(b.mnt, dir))) === files, 'B to list the files');
  for (let i = 0; i < files; i++) await spin(async () => (await statSize(path.join(b.mnt, dir, `f${i}`))) === 1, 'B to see a file');
  await sleep(200);
  const seen: number[] = [];
  const event: number[] = [];
  let missed = 0;
  const byte = Buffer.from('y');
  for (let i = 0; i < CHANGES; i++) {
    const name = `f${i % files}`;
    const n = size.get(name)! + 1;
    size.set(name, n);
    const fh = await fsp.open(path.join(changeRoot, dir, name), 'r+');
    const t0 = now();
    await fh.write(byte, 0, 1, n - 1); // grows the file by one byte: one write, one IN_MODIFY
    await fh.close();
    const target = path.join(b.mnt, dir, name);
    await spin(async () => (await statSize(target)) === n, `B to see ${name} grow to ${n}`);
    seen.push(ms(now() - t0));
    const t = await watcher.first(name, t0);
    if (t === undefined) missed++;
    else event.push(ms(t - t0));
  }
  seen.sort((x, y) => x - y);
  event.sort((x, y) => x - y);
  const fmt = (v: number[]) => `p50 ${percentile(v, 50).toFixed(2)} ms   p99 ${percentile(v, 99).toFixed(2)} ms`;
  return [
    `  ${label}: ${CHANGES} writes`,
    `    (a) B's stat sees it     ${fmt(seen)}`,
    `    (b) B's inotify event    ${event.length ? fmt(event) : 'none'}${missed ? `   (${missed} events not seen)` : ''}`,
  ];
}

// ---- 2. burst ---------------------------------------------------------------------------------

async function burst(label: string, changeRoot: string, b: Guest, dir: string): Promise<string[]> {
  await fsp.mkdir(path.join(changeRoot, dir));
  await spin(() => exists(path.join(b.mnt, dir)), 'B to see the burst directory');
  await spin(async () => (await count(path.join(b.mnt, dir))) === 0, 'B to list it empty');
  const t0 = now();
  // As fast as one writer can: 64 creations in flight at a time.
  for (let i = 0; i < BURST; i += 64) {
    await Promise.all(Array.from({ length: Math.min(64, BURST - i) }, (_, j) => fsp.writeFile(path.join(changeRoot, dir, `b${i + j}`), String(i + j))));
  }
  const t1 = now();
  await spin(async () => (await count(path.join(b.mnt, dir))) === BURST, `B to list ${BURST} files`, 120_000);
  const t2 = now();
  for (let i = 0; i < BURST; i += 997) {
    const v = await fsp.readFile(path.join(b.mnt, dir, `b${i}`), 'utf8');
    if (v !== String(i)) throw new Error(`B read ${v} from b${i}`);
  }
  return [
    `  ${label}: ${BURST} file creations in ${ms(t1 - t0).toFixed(0)} ms;` +
      ` B consistent ${ms(t2 - t1).toFixed(0)} ms after the last one (${ms(t2 - t0).toFixed(0)} ms from the first)`,
  ];
}

// ---- 3. caching -------------------------------------------------------------------------------

/** stat of every entry and readdir of every directory, one call at a time (as `find -ls` would). */
async function walk(dir: string): Promise<number> {
  let n = 0;
  for (const e of await fsp.readdir(dir)) {
    const p = path.join(dir, e);
    const st = await fsp.lstat(p);
    n++;
    if (st.isDirectory()) n += await walk(p);
  }
  return n;
}

async function caching(label: string, g: Guest, dir: string, passes: number): Promise<{ line: string; perWalkMs: number }> {
  const root = path.join(g.mnt, dir);
  for (let i = 0; i < 2; i++) await walk(root); // warm up
  const r0 = g.conn.session.stats.requestsIn;
  const t0 = now();
  let entries = 0;
  for (let i = 0; i < passes; i++) entries = await walk(root);
  const dt = ms(now() - t0) / passes;
  const requests = (g.conn.session.stats.requestsIn - r0) / passes;
  return { line: `  cache=${label.padEnd(5)} ${entries} entries: ${dt.toFixed(2)} ms per walk, ${requests.toFixed(0)} host requests per walk`, perWalkMs: dt };
}

// ---- main -------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const work = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'dirvisor-bench-coherence-')));
  const storage = path.join(work, 'storage');
  fs.mkdirSync(storage);
  const token = crypto.randomBytes(8).toString('hex');
  const uri = `unix://${path.join(work, 'host.sock')}`;
  const logger = silentLogger();
  const hub = new CoherenceHub({ logger });
  const def: ExportDef = {
    name: 'default', target: '', readOnly: false, cacheMode: 'long', mountOptions: [],
    open: async () => {
      const backend = await PosixBackend.create(storage, { logger });
      return withIdentity(backend, backend);
    },
  };
  const server = new HostServer({ identify: () => ({ vmName: 'bench', generation: 1, exports: () => [def] }) } as never, logger, {}, hub);
  await server.listen(uri);
  const guests: Guest[] = [];
  const watchers: Watcher[] = [];
  const out: string[] = [];
  try {
    const a = await mountGuest(server, uri, token, path.join(work, 'a'));
    const b = await mountGuest(server, uri, token, path.join(work, 'b'));
    const c = await mountGuest(server, uri, token, path.join(work, 'c'), ['cache=none']);
    guests.push(a, b, c);
    console.log(`dirvisor coherence benchmark (${os.cpus().length} CPUs, ${os.release()}); working in ${work}`);

    out.push('1. latency from a change to guest B (cache=long) seeing it');
    for (const [label, root, dir] of [['through guest A', a.mnt, 'lat-a'], ['in the storage directory', storage, 'lat-s']] as const) {
      fs.mkdirSync(path.join(storage, dir));
      await spin(() => exists(path.join(b.mnt, dir)), 'B to see the directory');
      const w = await Watcher.start(path.join(b.mnt, dir));
      watchers.push(w);
      out.push(...(await latency(label, root, b, w, dir).catch((e: Error) => [`  ${label}: failed: ${e.message}`])));
      console.log(out.slice(-3).join('\n'));
    }

    out.push(`2. a burst of ${BURST} changes`);
    out.push(...(await burst('in the storage directory', storage, b, 'burst-s').catch((e: Error) => [`  failed: ${e.message}`])));
    console.log(out[out.length - 1]);
    if (process.env.BENCH_DEBUG) console.log(JSON.stringify(hub.stats));
    out.push(...(await burst('through guest A', a.mnt, b, 'burst-a').catch((e: Error) => [`  failed: ${e.message}`])));
    console.log(out[out.length - 1]);

    out.push('3. repeated stat + readdir walks of an unchanged tree (same run, same tree)');
    const tree = 'tree';
    for (let d = 0; d < 20; d++) {
      fs.mkdirSync(path.join(storage, tree, `d${d}`), { recursive: true });
      for (let f = 0; f < 50; f++) fs.writeFileSync(path.join(storage, tree, `d${d}`, `f${f}`), `${d}/${f}`);
    }
    await sleep(300);
    const long = await caching('long', b, tree, 20);
    const none = await caching('none', c, tree, 20);
    out.push(long.line, none.line, `  cache=long walks ${(none.perWalkMs / long.perWalkMs).toFixed(1)}x faster`);
    out.push(`host coherence: ${JSON.stringify(hub.stats)}, ${hub.watchedDirectories} directories watched`);
  } finally {
    for (const w of watchers) w.stop();
    for (const g of guests) await unmount(g);
    await server.close();
    spawnSync('rm', ['-rf', '--one-file-system', work]);
  }
  console.log('\n' + out.join('\n'));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
