// The FUSE adapter on real mounts: the in-memory file system and the POSIX backend over a temp dir,
// driven by child processes (sh, stat, cat, ls...) and by async node:fs calls.
//
// This process serves the mounts on its JS thread, so two things would deadlock it:
// - a synchronous fs call on a mount (only async fs/promises and child processes here);
// - spawning a child while this process holds a file open on one of its mounts: the forked child
//   closes its copy at exec, which sends FLUSH, while the JS thread waits in spawn for that exec.
// Hence the mount tests run serially and await every in-process file access before spawning.
import anyTest, { type ExecutionContext, type TestFn } from 'ava';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { mountFileSystem, type AdapterOptions, type Mount } from '../guest-agent/fuse/adapter.js';
import { cacheTimeouts, MountOptionError, parseMountOptions, splitOptions } from '../guest-agent/fuse/options.js';
import { PosixBackend } from '../host-agent/backend/posix.js';
import { E, FsError } from '../shared/fs/errors.js';
import type { Caller, FileSystem } from '../shared/fs/interface.js';
import { FuseSession, fuseArgs } from '../native/fuse.js';
import { MemFs } from './helpers/memfs.js';

const test = anyTest.serial as TestFn;
const here = path.dirname(fileURLToPath(import.meta.url));
const ROOT: Caller = { uid: 0, gid: 0, pid: 0 };

// ---- helpers ----------------------------------------------------------------------------------

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a shell command in a child process (it may block on the mount; we keep serving). */
function sh(cmd: string, timeoutMs = 30_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile('sh', ['-c', cmd], { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const e = err as (Error & { code?: number | string; signal?: NodeJS.Signals }) | null;
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : -1) : 0, signal: e?.signal ?? null, stdout, stderr });
    });
  });
}

async function ok(t: ExecutionContext, cmd: string): Promise<string> {
  const r = await sh(cmd);
  t.is(r.code, 0, `${cmd}\n${r.stderr}`);
  return r.stdout;
}

async function mounted(mnt: string): Promise<boolean> {
  const text = await fsp.readFile('/proc/mounts', 'utf8');
  return text.split('\n').some((l) => l.split(' ')[1] === mnt);
}

async function waitFor(cond: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return cond();
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms))),
  ]);
}

async function errnoOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'dirvisor-fuse-'));
  t.teardown(async () => {
    // Only once nothing is mounted below it (rm would otherwise walk into a mount).
    const text = await fsp.readFile('/proc/mounts', 'utf8');
    for (const l of text.split('\n')) {
      const mp = l.split(' ')[1];
      if (mp?.startsWith(dir + '/')) await sh(`fusermount3 -uz '${mp}'`);
    }
    await fsp.rm(dir, { recursive: true, force: true });
  });
  return dir;
}

interface Setup {
  m: Mount;
  mnt: string;
  fs: FileSystem;
  /** The POSIX backend's directory (host side), when that is the backend. */
  storage?: string;
}

async function mountFs(t: ExecutionContext, fs: FileSystem, options: AdapterOptions = {}, storage?: string, dir?: string): Promise<Setup> {
  dir ??= await tempDir(t);
  const mnt = path.join(dir, 'mnt');
  await fsp.mkdir(mnt);
  const m = await mountFileSystem(fs, mnt, options);
  t.teardown(async () => {
    if (m.isClosed) return;
    try {
      await within(m.unmount(), 5000, 'unmount');
    } catch {
      await m.unmount({ lazy: true }).catch(() => undefined);
    }
  });
  return { m, mnt, fs, storage };
}

interface Backend {
  name: string;
  setup(t: ExecutionContext, options?: AdapterOptions): Promise<Setup>;
}

const memfs: Backend = {
  name: 'memfs',
  setup: (t, options) => mountFs(t, new MemFs(), options),
};

const posix: Backend = {
  name: 'posix',
  async setup(t, options) {
    const dir = await tempDir(t);
    const storage = path.join(dir, 'storage');
    await fsp.mkdir(storage);
    return mountFs(t, await PosixBackend.create(storage), options, storage, dir);
  },
};

// ---- both backends ------------------------------------------------------------------------------

for (const b of [memfs, posix]) {
  test(`${b.name}: create, write, append, read, stat`, async (t) => {
    const { mnt, storage } = await b.setup(t);
    t.is(await ok(t, `cd ${mnt} && printf hello > f && printf ' world' >> f && cat f`), 'hello world');
    t.is(await ok(t, `stat -c '%s %F %a' ${mnt}/f`), '11 regular file 644\n');
    t.is(await fsp.readFile(path.join(mnt, 'f'), 'utf8'), 'hello world');
    await fsp.appendFile(path.join(mnt, 'f'), '!');
    const st = await fsp.stat(path.join(mnt, 'f'));
    t.is(st.size, 12);
    t.true(st.isFile());
    await fsp.writeFile(path.join(mnt, 'g'), 'via node');
    t.is(await ok(t, `cat ${mnt}/g`), 'via node');
    if (storage) {
      t.is(await fsp.readFile(path.join(storage, 'f'), 'utf8'), 'hello world!');
      await fsp.writeFile(path.join(storage, 'from-host'), 'host side');
      t.is(await ok(t, `cat ${mnt}/from-host`), 'host side');
    }
  });

  test(`${b.name}: large file round trip (1 MiB writes and reads)`, async (t) => {
    const { mnt, storage } = await b.setup(t);
    const data = randomBytes(8 << 20);
    await fsp.writeFile(path.join(mnt, 'big'), data);
    t.true((await fsp.readFile(path.join(mnt, 'big'))).equals(data));
    const sum = (await ok(t, `sha256sum < ${mnt}/big`)).split(' ')[0];
    const expect = (await import('node:crypto')).createHash('sha256').update(data).digest('hex');
    t.is(sum, expect);
    if (storage) t.true((await fsp.readFile(path.join(storage, 'big'))).equals(data));
  });

  test(`${b.name}: mkdir and readdir of 1,000 entries`, async (t) => {
    const { mnt } = await b.setup(t);
    await ok(t, `mkdir ${mnt}/d && cd ${mnt}/d && i=0; while [ $i -lt 1000 ]; do : > f$i; i=$((i+1)); done`);
    const expected = Array.from({ length: 1000 }, (_, i) => `f${i}`).sort();
    t.deepEqual((await fsp.readdir(path.join(mnt, 'd'))).sort(), expected);
    t.deepEqual((await ok(t, `ls -a ${mnt}/d`)).trim().split('\n').sort(), ['.', '..', ...expected].sort());
    // ls -l: readdirplus and stats
    const long = (await ok(t, `ls -l ${mnt}/d`)).trim().split('\n');
    t.is(long.length, 1001); // "total N" + entries
    t.is(await ok(t, `find ${mnt}/d -type f | wc -l`), '1000\n');
  });

  test(`${b.name}: rename, unlink, rmdir`, async (t) => {
    const { mnt, storage } = await b.setup(t);
    await ok(t, `cd ${mnt} && echo a > a && echo b > b && mkdir d && mv a d/a2 && mv b d/a2`);
    t.is(await ok(t, `cat ${mnt}/d/a2`), 'b\n');
    t.is(await errnoOf(fsp.stat(path.join(mnt, 'a'))), 'ENOENT');
    await fsp.rename(path.join(mnt, 'd'), path.join(mnt, 'e'));
    t.is(await ok(t, `ls ${mnt}`), 'e\n');
    await fsp.unlink(path.join(mnt, 'e', 'a2'));
    await fsp.rmdir(path.join(mnt, 'e'));
    t.is(await ok(t, `ls -A ${mnt}`), '');
    if (storage) t.deepEqual(await fsp.readdir(storage), []);
  });

  test(`${b.name}: symlink, readlink, hard link, chmod, chown, utimes, truncate`, async (t) => {
    const { mnt } = await b.setup(t);
    await ok(t, `cd ${mnt} && echo data > f && ln -s f l && ln f h && chmod 600 f && chown 1000:1001 f`);
    t.is(await ok(t, `readlink ${mnt}/l`), 'f\n');
    t.is(await fsp.readlink(path.join(mnt, 'l')), 'f');
    t.is(await ok(t, `cat ${mnt}/l`), 'data\n');
    t.is(await ok(t, `stat -c '%a %u %g %h' ${mnt}/f`), '600 1000 1001 2\n');
    t.is(await ok(t, `stat -c '%F' ${mnt}/l`), 'symbolic link\n');
    await ok(t, `touch -d '2001-02-03 04:05:06 UTC' ${mnt}/f`);
    t.is(await ok(t, `stat -c %Y ${mnt}/f`), `${Date.UTC(2001, 1, 3, 4, 5, 6) / 1000}\n`);
    await ok(t, `touch ${mnt}/f`); // UTIME_NOW
    t.true(Math.abs(Number(await ok(t, `stat -c %Y ${mnt}/f`)) - Date.now() / 1000) < 60);
    await ok(t, `truncate -s 2 ${mnt}/f`);
    t.is(await ok(t, `cat ${mnt}/h`), 'da');
  });

  test(`${b.name}: errno passthrough (ENOENT, EEXIST, ENOTEMPTY, ENOTDIR)`, async (t) => {
    const { mnt } = await b.setup(t);
    await ok(t, `cd ${mnt} && mkdir d && touch d/x f`);
    t.is(await errnoOf(fsp.stat(path.join(mnt, 'missing'))), 'ENOENT');
    t.is(await errnoOf(fsp.readFile(path.join(mnt, 'missing'))), 'ENOENT');
    t.is(await errnoOf(fsp.mkdir(path.join(mnt, 'd'))), 'EEXIST');
    t.is(await errnoOf(fsp.writeFile(path.join(mnt, 'f'), 'x', { flag: 'wx' })), 'EEXIST');
    t.is(await errnoOf(fsp.rmdir(path.join(mnt, 'd'))), 'ENOTEMPTY');
    t.is(await errnoOf(fsp.rename(path.join(mnt, 'f'), path.join(mnt, 'd'))), 'EISDIR');
    t.is(await errnoOf(fsp.readdir(path.join(mnt, 'f'))), 'ENOTDIR');
    const r = await sh(`rmdir ${mnt}/d`);
    t.not(r.code, 0);
    t.regex(r.stderr, /not empty/i);
  });

  test(`${b.name}: xattrs, fallocate, copy_file_range, statfs`, async (t) => {
    const { mnt } = await b.setup(t);
    await ok(t, `cd ${mnt} && echo payload > f && setfattr -n user.color -v blue f`);
    t.is(await ok(t, `getfattr -n user.color --only-values ${mnt}/f`), 'blue');
    t.regex(await ok(t, `getfattr -d ${mnt}/f`), /user\.color="blue"/);
    await ok(t, `setfattr -x user.color ${mnt}/f`);
    const r = await sh(`getfattr -n user.color ${mnt}/f`);
    t.regex(r.stderr, /No such attribute/);
    await ok(t, `fallocate -l 65536 ${mnt}/g`);
    t.is(await ok(t, `stat -c %s ${mnt}/g`), '65536\n');
    await ok(t, `cp ${mnt}/f ${mnt}/copy`);
    t.is(await ok(t, `cat ${mnt}/copy`), 'payload\n');
    t.regex(await ok(t, `df -P ${mnt} | tail -1`), /^dirvisor\s+\d+/);
  });
}

// ---- memfs-specific: errno details, concurrency, caching, notifications -------------------------

class FaultyFs extends MemFs {
  override async mkdir(c: Caller, parent: number, name: Buffer, mode: number) {
    if (name.toString() === 'nospc') throw new FsError(E.ENOSPC);
    if (name.toString() === 'crash') throw new Error('a bug, not an errno');
    return super.mkdir(c, parent, name, mode);
  }
  override async rename(c: Caller, p: number, n: Buffer, np: number, nn: Buffer, flags: number) {
    if (nn.toString() === 'xdev') throw new FsError(E.EXDEV);
    return super.rename(c, p, n, np, nn, flags);
  }
}

test('any errno from the file system reaches the application; other errors become EIO', async (t) => {
  const { mnt } = await mountFs(t, new FaultyFs());
  t.is(await errnoOf(fsp.mkdir(path.join(mnt, 'nospc'))), 'ENOSPC');
  t.regex((await sh(`mkdir ${mnt}/nospc`)).stderr, /No space left on device/);
  t.is(await errnoOf(fsp.mkdir(path.join(mnt, 'crash'))), 'EIO');
  await fsp.writeFile(path.join(mnt, 'f'), '');
  t.is(await errnoOf(fsp.rename(path.join(mnt, 'f'), path.join(mnt, 'xdev'))), 'EXDEV');
});

class SlowFs extends MemFs {
  active = 0;
  maxActive = 0;
  override async read(c: Caller, node: number, fh: number, offset: number, size: number) {
    this.maxActive = Math.max(this.maxActive, ++this.active);
    await new Promise((r) => setTimeout(r, 20 + Math.random() * 30));
    try {
      return await super.read(c, node, fh, offset, size);
    } finally {
      this.active--;
    }
  }
}

test('many requests in flight, answered out of order', async (t) => {
  const fs = new SlowFs();
  const { mnt } = await mountFs(t, fs, { cache: 'none' });
  const files = Array.from({ length: 16 }, (_, i) => `f${i}`);
  await Promise.all(files.map((f) => fsp.writeFile(path.join(mnt, f), `content of ${f}\n`.repeat(100))));
  const outputs = await Promise.all(files.map((f) => sh(`cat ${mnt}/${f}`)));
  outputs.forEach((r, i) => t.is(r.stdout, `content of ${files[i]}\n`.repeat(100)));
  t.true(fs.maxActive > 1, `max concurrent reads ${fs.maxActive}`);
});

test('kernel cache notifications: invalidate inode and entry, delete, store', async (t) => {
  const fs = new MemFs();
  const { m, mnt } = await mountFs(t, fs, { cache: 'long' });
  await ok(t, `echo old > ${mnt}/f`);
  t.is(await ok(t, `cat ${mnt}/f`), 'old\n');
  const id = fs.idOf(1, 'f')!;

  // Changed behind the kernel's back, same size and times (else the kernel's auto_inval_data would
  // notice on its next getattr): the page cache still says "old" until invalidated.
  fs.setContent(id, Buffer.from('new\n'), true);
  t.is(await ok(t, `cat ${mnt}/f`), 'old\n');
  await m.invalidateInode(id);
  t.is(await ok(t, `cat ${mnt}/f`), 'new\n');

  // A rename the kernel did not see: the old name stays cached until invalidated.
  await fs.rename(ROOT, 1, Buffer.from('f'), 1, Buffer.from('g'), 0);
  t.is((await sh(`stat ${mnt}/f`)).code, 0);
  await m.invalidateEntry(1, Buffer.from('f'));
  t.is(await errnoOf(fsp.stat(path.join(mnt, 'f'))), 'ENOENT');
  t.is(await ok(t, `cat ${mnt}/g`), 'new\n');

  await ok(t, `echo x > ${mnt}/h`);
  const h = fs.idOf(1, 'h')!;
  await fs.unlink(ROOT, 1, Buffer.from('h'));
  t.is((await sh(`stat ${mnt}/h`)).code, 0);
  await m.notifyDelete(1, h, Buffer.from('h'));
  t.is(await errnoOf(fsp.stat(path.join(mnt, 'h'))), 'ENOENT');

  // Expiring an entry (kernel 6.2+) forces a fresh lookup on next use.
  await ok(t, `echo y > ${mnt}/k`);
  await fs.unlink(ROOT, 1, Buffer.from('k'));
  try {
    await m.expireEntry(1, Buffer.from('k'));
    t.is(await errnoOf(fsp.stat(path.join(mnt, 'k'))), 'ENOENT');
  } catch (err) {
    t.is((err as FsError).errno, E.ENOSYS, 'only ENOSYS (old kernel) is acceptable');
  }

  // store pushes data into the page cache.
  const gid = fs.idOf(1, 'g')!;
  await m.store(gid, 0, Buffer.from('NEW\n'));
  t.is(await ok(t, `cat ${mnt}/g`), 'NEW\n');

  // Unknown to the kernel: nothing to do, not an error.
  await m.invalidateInode(999_999);
  await m.invalidateEntry(1, Buffer.from('never-looked-up'));
});

test('writeback cache mount: writes and reads back', async (t) => {
  const { mnt } = await mountFs(t, new MemFs(), { writeback: true });
  await ok(t, `cd ${mnt} && printf abc > f && printf def >> f && dd if=/dev/zero of=z bs=64k count=16 status=none`);
  t.is(await ok(t, `cat ${mnt}/f`), 'abcdef');
  t.is(await ok(t, `stat -c %s ${mnt}/z`), `${1 << 20}\n`);
  const fd = await fsp.open(path.join(mnt, 'wo'), 'w'); // write-only open: the adapter opens rw
  await fd.write('write only');
  await fd.close();
  t.is(await ok(t, `cat ${mnt}/wo`), 'write only');
});

test('posix, writeback: SEEK_DATA/SEEK_HOLE see data still in the page cache', async (t) => {
  const { mnt } = await posix.setup(t, { writeback: true });
  const out = await ok(t, `python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
os.write(fd, b"D" * 8192)
print(os.lseek(fd, 0, os.SEEK_DATA), os.lseek(fd, 0, os.SEEK_HOLE), os.fstat(fd).st_size)
os.close(fd)' ${mnt}/f`);
  t.is(out, '0 8192 8192\n');
});

test('posix, writeback: a user who may write but not read can still append and write', async (t) => {
  const { mnt, storage } = await posix.setup(t, { writeback: true, allowOther: true });
  await fsp.chmod(path.dirname(mnt), 0o755); // let uid 1000 reach the mount point
  await fsp.writeFile(path.join(storage!, 'shared.log'), 'first\n');
  await fsp.chmod(path.join(storage!, 'shared.log'), 0o622);
  const asUser = `setpriv --reuid=1000 --regid=1000 --clear-groups sh -c`;
  await ok(t, `${asUser} 'echo "from uid 1000" >> ${mnt}/shared.log'`);
  t.regex((await sh(`${asUser} 'cat ${mnt}/shared.log'`)).stderr, /Permission denied/);
  // Its own file of mode 0200: created, then reopened for writing only.
  await fsp.mkdir(path.join(storage!, 'home'));
  await fsp.chown(path.join(storage!, 'home'), 1000, 1000);
  await ok(t, `${asUser} 'cd ${mnt}/home && umask 0577 && : > mine && printf x > mine && printf y >> mine'`);
  t.is(await ok(t, `stat -c %a ${mnt}/home/mine`), '200\n');
  t.is(await fsp.readFile(path.join(storage!, 'shared.log'), 'utf8'), 'first\nfrom uid 1000\n');
  t.is(await fsp.readFile(path.join(storage!, 'home', 'mine'), 'utf8'), 'xy');
});

test('read-only mount refuses writes (EROFS)', async (t) => {
  const fs = new MemFs();
  await fs.create(ROOT, 1, Buffer.from('f'), 0o644, 0);
  const { mnt } = await mountFs(t, fs, { readOnly: true });
  t.is(await errnoOf(fsp.writeFile(path.join(mnt, 'g'), 'x')), 'EROFS');
  t.is(await ok(t, `ls ${mnt}`), 'f\n');
});

test('negative entries are cached when negative_timeout > 0', async (t) => {
  const fs = new MemFs();
  const { mnt } = await mountFs(t, fs, { negativeTimeout: 60 });
  t.is(await errnoOf(fsp.stat(path.join(mnt, 'ghost'))), 'ENOENT');
  await fs.create(ROOT, 1, Buffer.from('ghost'), 0o644, 0); // behind the kernel's back
  t.is(await errnoOf(fsp.stat(path.join(mnt, 'ghost'))), 'ENOENT', 'still cached as absent');
});

// ---- unmounting ---------------------------------------------------------------------------------

test('unmount() through the API: mount gone, closed resolves, file system destroyed', async (t) => {
  const fs = new MemFs();
  const { m, mnt } = await mountFs(t, fs);
  t.true(await mounted(mnt));
  await ok(t, `echo x > ${mnt}/f`);
  await within(m.unmount(), 5000, 'unmount');
  await within(m.closed, 5000, 'closed');
  t.false(await mounted(mnt));
  t.true(m.isClosed);
  t.true(fs.destroyed);
  await m.unmount(); // again: no-op
});

test('fusermount3 -u from outside: the exit callback fires', async (t) => {
  const fs = new MemFs();
  const { m, mnt } = await mountFs(t, fs);
  await ok(t, `ls ${mnt}`);
  await ok(t, `fusermount3 -u ${mnt}`);
  await within(m.closed, 5000, 'closed after fusermount3 -u');
  t.false(await mounted(mnt));
  t.true(fs.destroyed);
});

test('umount(8) from outside: the exit callback fires', async (t) => {
  const { m, mnt } = await mountFs(t, new MemFs());
  await ok(t, `umount ${mnt}`);
  await within(m.closed, 5000, 'closed after umount');
  t.false(await mounted(mnt));
});

function spawnIn(mnt: string, script: string): Promise<ChildProcess> {
  const child = spawn('sh', ['-c', `cd ${mnt} && ${script} && echo ready && exec sleep 60`], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.stdout!.once('data', () => resolve(child));
    child.once('exit', (code) => reject(new Error(`child exited early (${code})`)));
  });
}

test('unmount while busy fails with EBUSY; lazy unmount detaches, closes when released', async (t) => {
  const { m, mnt } = await mountFs(t, new MemFs());
  await ok(t, `echo hello > ${mnt}/f`);
  const child = await spawnIn(mnt, 'exec 3<f');
  t.teardown(() => void child.kill('SIGKILL'));
  const err = await t.throwsAsync(m.unmount());
  t.is((err as FsError).errno, E.EBUSY);
  t.true(await mounted(mnt));

  await m.unmount({ lazy: true });
  t.false(await mounted(mnt), 'detached from the tree');
  t.false(m.isClosed, 'still serving the open file');
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
  await within(m.closed, 5000, 'closed after the last user left');
});

// ---- a mounting process that dies ---------------------------------------------------------------

const adapterUrl = new URL('../guest-agent/fuse/adapter.js', import.meta.url).href;
const memfsUrl = new URL('./helpers/memfs.js', import.meta.url).href;
const signalsUrl = new URL('../guest-agent/fuse/signals.js', import.meta.url).href;

/** Starts a node process that mounts a MemFs at `mnt`; resolves once it is mounted. */
async function mountInChild(mnt: string, options: AdapterOptions, extra = ''): Promise<ChildProcess> {
  const script = `
    import { mountFileSystem } from ${JSON.stringify(adapterUrl)};
    import { MemFs } from ${JSON.stringify(memfsUrl)};
    import { unmountOnSignals } from ${JSON.stringify(signalsUrl)};
    const m = await mountFileSystem(new MemFs(), process.argv[1], JSON.parse(process.argv[2]));
    ${extra}
    process.stdout.write('ready\\n');`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, mnt, JSON.stringify(options)], {
    stdio: ['ignore', 'pipe', 'inherit'],
    cwd: here,
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`mount child exited (${code})`)));
  });
  return child;
}

function killed(child: ChildProcess, signal: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => {
    child.once('exit', (code, sig) => resolve({ code, signal: sig }));
    child.kill(signal);
  });
}

test('SIGKILL without auto_unmount: ENOTCONN, and fusermount3 -uz clears it', async (t) => {
  const dir = await tempDir(t);
  const mnt = path.join(dir, 'mnt');
  await fsp.mkdir(mnt);
  const child = await mountInChild(mnt, {});
  t.is(await ok(t, `echo hi > ${mnt}/f && cat ${mnt}/f`), 'hi\n');
  await killed(child, 'SIGKILL');
  t.is(await errnoOf(fsp.stat(mnt)), 'ENOTCONN');
  t.true(await mounted(mnt));
  await ok(t, `fusermount3 -uz ${mnt}`);
  t.false(await mounted(mnt));
});

test('SIGKILL with auto_unmount: the mount disappears by itself', async (t) => {
  const dir = await tempDir(t);
  const mnt = path.join(dir, 'mnt');
  await fsp.mkdir(mnt);
  const child = await mountInChild(mnt, { autoUnmount: true });
  t.true(await mounted(mnt));
  await ok(t, `ls ${mnt}`);
  await killed(child, 'SIGKILL');
  // fusermount3 (auto_unmount) unmounts once it sees the fd closed; on a loaded machine that can take seconds.
  t.true(await waitFor(async () => !(await mounted(mnt)), 30_000), 'still mounted 30 s after SIGKILL');
  t.is(await errnoOf(fsp.stat(mnt)), 'OK');
});

test('SIGTERM with unmountOnSignals: clean unmount, then the signal takes effect', async (t) => {
  const dir = await tempDir(t);
  const mnt = path.join(dir, 'mnt');
  await fsp.mkdir(mnt);
  const child = await mountInChild(mnt, {}, 'unmountOnSignals(() => [m]);');
  t.true(await mounted(mnt));
  const exit = await within(killed(child, 'SIGTERM'), 10_000, 'child exit');
  t.is(exit.signal, 'SIGTERM');
  t.false(await mounted(mnt));
});

// ---- options --------------------------------------------------------------------------------------

anyTest('mount options: sshfs-like words', (t) => {
  const { fuse, agent } = parseMountOptions([
    'allow_other,default_permissions,ro,max_read=131072',
    'entry_timeout=2.5,attr_timeout=3,negative_timeout=0,cache=long,writeback_cache',
    'fsname=a\\,b,noatime,nodev,export=home,defaults,_netdev,x-systemd.automount',
  ]);
  t.deepEqual(fuse, {
    allowOther: true, defaultPermissions: true, readOnly: true, maxRead: 131072,
    entryTimeout: 2.5, attrTimeout: 3, negativeTimeout: 0, cache: 'long', writeback: true,
    fsname: 'a,b', flags: ['noatime', 'nodev'],
  });
  t.deepEqual(agent, { export: 'home' });
  t.deepEqual(splitOptions('a,b\\,c,,d'), ['a', 'b,c', 'd']);
  t.deepEqual(cacheTimeouts(fuse), { entry: 2.5, attr: 3, negative: 0, keepCache: true, directIo: false });
  t.deepEqual(cacheTimeouts({ cache: 'none' }), { entry: 0, attr: 0, negative: 0, keepCache: false, directIo: true });
  t.deepEqual(fuseArgs({ fsname: 'x,y', allowOther: true, flags: ['nodev'] }), ['-o', 'fsname=x\\,y,subtype=dirvisor,allow_other,nodev']);
});

anyTest('mount options: clear errors', (t) => {
  const bad = (words: string, re: RegExp) => t.throws(() => parseMountOptions(words), { instanceOf: MountOptionError, message: re });
  bad('allow_others', /unknown mount option 'allow_others'/);
  bad('max_read=abc', /max_read' must be a positive integer/);
  bad('max_read', /max_read' needs a value/);
  bad('ro=1', /'ro' takes no value/);
  bad('cache=sometimes', /cache' must be one of none, auto, long/);
  bad('attr_timeout=-1', /attr_timeout' must be a number of seconds/);
  bad('max_write=2000000', /max_write' is at most/);
  bad('max_read=2000000', /max_read' is at most/);
});

test('a bad mountpoint rejects mount() with its errno', async (t) => {
  const dir = await tempDir(t);
  const err = await t.throwsAsync(mountFileSystem(new MemFs(), path.join(dir, 'missing')));
  t.is((err as { errno?: number }).errno, E.ENOENT);
  await fsp.writeFile(path.join(dir, 'file'), '');
  const err2 = await t.throwsAsync(mountFileSystem(new MemFs(), path.join(dir, 'file')));
  t.is((err2 as { errno?: number }).errno, E.ENOTDIR);
});

test('mount() resolves only once the kernel INIT is accepted: a refused INIT rejects and leaves no mount', async (t) => {
  const dir = await tempDir(t);
  const mnt = path.join(dir, 'mnt');
  await fsp.mkdir(mnt);
  // libfuse refuses INIT when the max_read mount option and conn->max_read disagree.
  let exited = false;
  const s = new FuseSession(mnt, fuseArgs({ maxRead: 65536 }), { maxRead: 0 }, () => undefined, () => (exited = true));
  const err = await t.throwsAsync(within(s.mount(), 10_000, 'mount()'));
  t.is((err as { errno?: number }).errno, E.EPROTO);
  t.true(await waitFor(async () => !(await mounted(mnt)), 5000), 'the half-made mount is taken down');
  t.true(await waitFor(async () => s.state === 'closed', 5000));
  t.false(exited, 'no exit callback for a mount that never served');
  // ...and with both sides agreeing, the same options mount and serve.
  const { mnt: ok2 } = await mountFs(t, new MemFs(), { maxRead: 65536 });
  t.true(await mounted(ok2));
  t.is(await fsp.readdir(ok2).then((l) => l.length), 0);
});
