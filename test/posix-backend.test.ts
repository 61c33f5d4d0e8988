// The POSIX backend, driven directly through the FileSystem interface (no FUSE), on temp dirs.
// Runs as root (ownership and EACCES checks switch to uid 1000 per call).
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { PosixBackend, type PosixBackendOptions } from '../host-agent/backend/posix.js';
import { E, FsError } from '../shared/fs/errors.js';
import {
  RENAME_EXCHANGE, RENAME_NOREPLACE, ROOT_ID, type Caller, type Entry,
} from '../shared/fs/interface.js';
import { C } from '../native/sys.js';

const root: Caller = { uid: 0, gid: 0, pid: 1 };
const user: Caller = { uid: 1000, gid: 1000, pid: 2 };
const b = (s: string) => Buffer.from(s);
const O_RDONLY = 0, O_WRONLY = 1, O_RDWR = 2;

interface Ctx {
  dir: string;
  fs: PosixBackend;
}

// tmpfs when there is one: small readdir offsets there, 63-bit hash offsets on ext4's /tmp.
const TMPFS = fs.existsSync('/dev/shm') && fs.statfsSync('/dev/shm').type === 0x01021994 ? '/dev/shm' : undefined;

async function setup(t: ExecutionContext, options: PosixBackendOptions = {}, base = os.tmpdir()): Promise<Ctx> {
  const dir = fs.mkdtempSync(path.join(base, 'dirvisor-posix-'));
  fs.chmodSync(dir, 0o755);
  const backend = await PosixBackend.create(dir, options);
  t.teardown(async () => {
    await backend.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { dir, fs: backend };
}

async function errno(t: ExecutionContext, p: Promise<unknown>, expected: number, what?: string): Promise<void> {
  const err = await t.throwsAsync(p, undefined, what);
  t.true(err instanceof FsError, `${what ?? ''}: FsError expected, got ${String(err)}`);
  t.is((err as FsError).errno, expected, `${what ?? ''}: expected ${expected}, got ${(err as FsError).code}`);
}

async function writeFile(f: PosixBackend, parent: number, name: string, data: string | Buffer, caller = root): Promise<Entry> {
  const c = await f.create(caller, parent, b(name), 0o644, O_RDWR);
  await f.write(caller, c.entry.nodeId, c.fh, 0, Buffer.isBuffer(data) ? data : b(data));
  await f.release(caller, c.entry.nodeId, c.fh);
  return c.entry;
}

async function readFile(f: PosixBackend, node: number): Promise<Buffer> {
  const { fh } = await f.open(root, node, O_RDONLY);
  try {
    return await f.read(root, node, fh, 0, 1 << 20);
  } finally {
    await f.release(root, node, fh);
  }
}

test('lookup, getattr and create/read/write round trip', async (t) => {
  const { dir, fs: f } = await setup(t);
  fs.writeFileSync(path.join(dir, 'hello'), 'hello world');
  const e = await f.lookup(root, ROOT_ID, b('hello'));
  t.true(e.nodeId > ROOT_ID);
  t.is(e.attr.size, 11);
  t.is(e.attr.mode & C.S_IFMT, C.S_IFREG);
  t.is(e.attr.ino, fs.statSync(path.join(dir, 'hello')).ino);
  const again = await f.lookup(root, ROOT_ID, b('hello'));
  t.is(again.nodeId, e.nodeId, 'same inode, same node id');
  t.is((await readFile(f, e.nodeId)).toString(), 'hello world');

  const rootAttr = await f.getattr(root, ROOT_ID);
  t.is(rootAttr.mode & C.S_IFMT, C.S_IFDIR);

  const c = await f.create(root, ROOT_ID, b('new'), 0o640, O_RDWR);
  t.is(c.entry.attr.mode & 0o7777, 0o640, 'mode exactly as given: no host umask');
  t.is(await f.write(root, c.entry.nodeId, c.fh, 0, b('abcdef')), 6);
  t.is(await f.write(root, c.entry.nodeId, c.fh, 3, b('XY')), 2);
  t.is((await f.read(root, c.entry.nodeId, c.fh, 0, 100)).toString(), 'abcXYf');
  t.is((await f.read(root, c.entry.nodeId, c.fh, 4, 1)).toString(), 'Y');
  t.is((await f.read(root, c.entry.nodeId, c.fh, 100, 10)).length, 0);
  await f.flush(root, c.entry.nodeId, c.fh);
  await f.fsync(root, c.entry.nodeId, c.fh, false);
  await f.fsync(root, c.entry.nodeId, c.fh, true);
  t.is((await f.getattr(root, c.entry.nodeId, c.fh)).size, 6);
  await f.release(root, c.entry.nodeId, c.fh);
  t.is(fs.readFileSync(path.join(dir, 'new'), 'utf8'), 'abcXYf');
});

test('errno values: ENOENT, EEXIST, ENOTEMPTY, ENOTDIR, EISDIR, ENAMETOOLONG', async (t) => {
  const { dir, fs: f } = await setup(t);
  fs.mkdirSync(path.join(dir, 'd'));
  fs.writeFileSync(path.join(dir, 'd', 'x'), '');
  fs.writeFileSync(path.join(dir, 'file'), 'data');
  await errno(t, f.lookup(root, ROOT_ID, b('missing')), E.ENOENT, 'lookup missing');
  await errno(t, f.mkdir(root, ROOT_ID, b('d'), 0o755), E.EEXIST, 'mkdir existing');
  await errno(t, f.create(root, ROOT_ID, b('file'), 0o644, O_RDWR | C.O_EXCL), E.EEXIST, 'create O_EXCL existing');
  await errno(t, f.rmdir(root, ROOT_ID, b('d')), E.ENOTEMPTY, 'rmdir non-empty');
  const file = await f.lookup(root, ROOT_ID, b('file'));
  await errno(t, f.lookup(root, file.nodeId, b('x')), E.ENOTDIR, 'lookup under a file');
  await errno(t, f.opendir(root, file.nodeId, 0), E.ENOTDIR, 'opendir of a file');
  await errno(t, f.rmdir(root, ROOT_ID, b('file')), E.ENOTDIR, 'rmdir of a file');
  const d = await f.lookup(root, ROOT_ID, b('d'));
  await errno(t, f.open(root, d.nodeId, O_WRONLY), E.EISDIR, 'open dir for writing');
  await errno(t, f.unlink(root, ROOT_ID, b('d')), E.EISDIR, 'unlink of a dir');
  await errno(t, f.create(root, ROOT_ID, b('d'), 0o644, O_RDWR), E.EISDIR, 'create over a dir');
  await errno(t, f.lookup(root, ROOT_ID, Buffer.alloc(256, 0x61)), E.ENAMETOOLONG, 'name of 256 bytes');
  await errno(t, f.mkdir(root, ROOT_ID, Buffer.alloc(300, 0x61), 0o755), E.ENAMETOOLONG, 'mkdir name of 300 bytes');
  await errno(t, f.lookup(root, ROOT_ID, Buffer.alloc(255, 0x61)), E.ENOENT, '255 bytes is fine');
  await errno(t, f.unlink(root, ROOT_ID, b('missing')), E.ENOENT, 'unlink missing');
  await errno(t, f.readlink(root, file.nodeId), E.EINVAL, 'readlink of a file');
});

test('names with "..", ".", "/", NUL or empty are refused with EINVAL', async (t) => {
  const { dir, fs: f } = await setup(t);
  fs.mkdirSync(path.join(dir, 'sub'));
  const bad = [b('..'), b('.'), b(''), b('a/b'), b('/etc'), b('../x'), Buffer.from([0x61, 0, 0x62]), b('sub/..')];
  for (const name of bad) {
    const label = JSON.stringify(name.toString());
    await errno(t, f.lookup(root, ROOT_ID, name), E.EINVAL, `lookup ${label}`);
    await errno(t, f.mkdir(root, ROOT_ID, name, 0o755), E.EINVAL, `mkdir ${label}`);
    await errno(t, f.create(root, ROOT_ID, name, 0o644, O_RDWR), E.EINVAL, `create ${label}`);
    await errno(t, f.unlink(root, ROOT_ID, name), E.EINVAL, `unlink ${label}`);
    await errno(t, f.rename(root, ROOT_ID, b('sub'), ROOT_ID, name, 0), E.EINVAL, `rename to ${label}`);
    await errno(t, f.symlink(root, ROOT_ID, name, b('x')), E.EINVAL, `symlink ${label}`);
  }
  // Names are raw bytes: non-UTF-8 is fine.
  const raw = Buffer.from([0xff, 0xfe, 0x41]);
  const e = await f.mkdir(root, ROOT_ID, raw, 0o755);
  t.is((await f.lookup(root, ROOT_ID, raw)).nodeId, e.nodeId);
  t.true(fs.readdirSync(dir, { encoding: 'buffer' }).some((n) => n.equals(raw)));
});

test('node ids and handles never issued are refused (ESTALE / EBADF)', async (t) => {
  const { dir, fs: f } = await setup(t);
  fs.writeFileSync(path.join(dir, 'f'), 'x');
  await errno(t, f.getattr(root, 999), E.ESTALE, 'getattr unknown node');
  await errno(t, f.lookup(root, 12345, b('f')), E.ESTALE, 'lookup under unknown node');
  await errno(t, f.open(root, 0, O_RDONLY), E.ESTALE, 'open node 0');
  const e = await f.lookup(root, ROOT_ID, b('f'));
  await errno(t, f.read(root, e.nodeId, 77, 0, 10), E.EBADF, 'read unknown fh');
  await errno(t, f.write(root, e.nodeId, 77, 0, b('x')), E.EBADF, 'write unknown fh');
  await errno(t, f.release(root, e.nodeId, 77), E.EBADF, 'release unknown fh');
  await errno(t, f.readdir(root, ROOT_ID, 77, 0, 10, false), E.EBADF, 'readdir unknown fh');
  const { fh } = await f.open(root, e.nodeId, O_RDONLY);
  await errno(t, f.read(root, ROOT_ID, fh, 0, 10), E.EBADF, 'fh used with another node');
  await errno(t, f.readdir(root, e.nodeId, fh, 0, 10, false), E.EBADF, 'file fh used as a dir');
  await errno(t, f.getattr(root, e.nodeId, 4242), E.EBADF, 'getattr with unknown fh');
  await f.release(root, e.nodeId, fh);
  await errno(t, f.read(root, e.nodeId, fh, 0, 10), E.EBADF, 'read after release');
  await errno(t, f.release(root, e.nodeId, fh), E.EBADF, 'double release');
  // forget: the node goes away at zero; the root never does.
  await f.lookup(root, ROOT_ID, b('f'));
  f.forget([{ nodeId: e.nodeId, nlookup: 1 }]);
  t.truthy(await f.getattr(root, e.nodeId), 'still one lookup left');
  f.forget([{ nodeId: e.nodeId, nlookup: 1 }, { nodeId: ROOT_ID, nlookup: 100 }, { nodeId: 555, nlookup: 1 }]);
  await errno(t, f.getattr(root, e.nodeId), E.ESTALE, 'forgotten node');
  t.truthy(await f.getattr(root, ROOT_ID));
  const e2 = await f.lookup(root, ROOT_ID, b('f'));
  t.not(e2.nodeId, e.nodeId, 'ids are not reused');
  t.deepEqual(f.stats(), { nodes: 2, handles: 0 });
});

test('symlinks are returned as links, never followed by the host', async (t) => {
  const { dir, fs: f } = await setup(t);
  fs.symlinkSync('/', path.join(dir, 'toroot'));
  fs.symlinkSync('../..', path.join(dir, 'up'));
  const l = await f.lookup(root, ROOT_ID, b('toroot'));
  t.is(l.attr.mode & C.S_IFMT, C.S_IFLNK);
  t.is((await f.readlink(root, l.nodeId)).toString(), '/');
  const up = await f.lookup(root, ROOT_ID, b('up'));
  t.is((await f.readlink(root, up.nodeId)).toString(), '../..');
  await errno(t, f.open(root, l.nodeId, O_RDONLY), E.ELOOP, 'open a symlink');
  await errno(t, f.lookup(root, l.nodeId, b('etc')), E.ENOTDIR, 'lookup under a symlink to /');
  await errno(t, f.lookup(root, up.nodeId, b('etc')), E.ENOTDIR, 'lookup under a symlink to ../..');
  await errno(t, f.opendir(root, l.nodeId, 0), E.ENOTDIR, 'opendir a symlink');
  await errno(t, f.create(root, ROOT_ID, b('toroot'), 0o644, O_RDWR), E.ELOOP, 'create over a symlink');
  await errno(t, f.setattr(root, l.nodeId, { mode: 0o777 }), E.EOPNOTSUPP, 'chmod a symlink');
  await errno(t, f.setattr(root, l.nodeId, { size: 0 }), E.EINVAL, 'truncate a symlink');
  // chown and utimes act on the link itself, not on "/".
  const before = fs.statSync('/');
  await f.setattr(root, l.nodeId, { uid: 1000, gid: 1000, mtime: { sec: 1000, nsec: 5 } });
  const ls = fs.lstatSync(path.join(dir, 'toroot'), { bigint: true });
  t.is(ls.uid, 1000n);
  t.is(ls.mtimeNs, 1000n * 1_000_000_000n + 5n);
  const after = fs.statSync('/');
  t.is(after.uid, before.uid);
  t.is(after.mtimeMs, before.mtimeMs);
  // Our own symlink creation stores the target verbatim.
  const s = await f.symlink(root, ROOT_ID, b('mine'), b('/etc/passwd'));
  t.is(s.attr.mode & C.S_IFMT, C.S_IFLNK);
  t.is(fs.readlinkSync(path.join(dir, 'mine')), '/etc/passwd');
  await errno(t, f.symlink(root, ROOT_ID, b('long'), Buffer.alloc(4096, 0x61)), E.ENAMETOOLONG, 'long target');
});

test('a directory swapped for a symlink to / between lookups does not escape', async (t) => {
  const { dir, fs: f } = await setup(t);
  fs.mkdirSync(path.join(dir, 'd'));
  fs.writeFileSync(path.join(dir, 'd', 'inside'), 'ok');
  const d = await f.lookup(root, ROOT_ID, b('d'));
  t.truthy(await f.lookup(root, d.nodeId, b('inside')));
  // The storage side swaps the directory for a symlink to /.
  fs.renameSync(path.join(dir, 'd'), path.join(dir, 'moved'));
  fs.symlinkSync('/', path.join(dir, 'd'));
  // The node still means the moved directory, by fd: "etc" is looked up there, not in /.
  await errno(t, f.lookup(root, d.nodeId, b('etc')), E.ENOENT, 'old node: lookup of etc');
  t.truthy(await f.lookup(root, d.nodeId, b('inside')), 'old node still reaches its own files');
  const swapped = await f.lookup(root, ROOT_ID, b('d'));
  t.not(swapped.nodeId, d.nodeId);
  t.is(swapped.attr.mode & C.S_IFMT, C.S_IFLNK);
  await errno(t, f.lookup(root, swapped.nodeId, b('etc')), E.ENOTDIR, 'new node: symlink is not a dir');
  await errno(t, f.create(root, swapped.nodeId, b('evil'), 0o644, O_RDWR), E.ENOTDIR, 'create under the symlink');
  t.false(fs.existsSync('/evil'));
  // Removed entirely: the stale directory fd finds nothing.
  fs.rmSync(path.join(dir, 'moved'), { recursive: true });
  await errno(t, f.lookup(root, d.nodeId, b('etc')), E.ENOENT, 'deleted dir');
  await errno(t, f.create(root, d.nodeId, b('x'), 0o644, O_RDWR), E.ENOENT, 'create in a deleted dir');
});

test('files are created with the caller\'s uid/gid and permissions are the kernel\'s', async (t) => {
  const { dir, fs: f } = await setup(t);
  fs.mkdirSync(path.join(dir, 'shared'), { mode: 0o777 });
  fs.chmodSync(path.join(dir, 'shared'), 0o777);
  fs.mkdirSync(path.join(dir, 'rootonly'), { mode: 0o755 });
  const shared = await f.lookup(user, ROOT_ID, b('shared'));
  const rootonly = await f.lookup(user, ROOT_ID, b('rootonly'));

  const c = await f.create(user, shared.nodeId, b('mine'), 0o600, O_RDWR);
  t.is(c.entry.attr.uid, 1000);
  t.is(c.entry.attr.gid, 1000);
  await f.write(user, c.entry.nodeId, c.fh, 0, b('secret'));
  await f.release(user, c.entry.nodeId, c.fh);
  const d = await f.mkdir(user, shared.nodeId, b('subdir'), 0o700);
  t.deepEqual([d.attr.uid, d.attr.gid, d.attr.mode & 0o7777], [1000, 1000, 0o700]);
  const n = await f.mknod(user, shared.nodeId, b('fifo'), C.S_IFIFO | 0o644, 0);
  t.deepEqual([n.attr.uid, n.attr.mode & C.S_IFMT], [1000, C.S_IFIFO]);
  const s = await f.symlink(user, shared.nodeId, b('link'), b('mine'));
  t.is(s.attr.uid, 1000);
  const st = fs.statSync(path.join(dir, 'shared', 'mine'));
  t.deepEqual([st.uid, st.gid], [1000, 1000]);

  // A uid 1000 caller in a root-owned 0755 directory: EACCES from the kernel.
  await errno(t, f.create(user, rootonly.nodeId, b('nope'), 0o644, O_RDWR), E.EACCES, 'create');
  await errno(t, f.mkdir(user, rootonly.nodeId, b('nope'), 0o755), E.EACCES, 'mkdir');
  await errno(t, f.symlink(user, rootonly.nodeId, b('nope'), b('x')), E.EACCES, 'symlink');
  await errno(t, f.mknod(user, rootonly.nodeId, b('nope'), C.S_IFREG | 0o644, 0), E.EACCES, 'mknod');
  await errno(t, f.link(user, c.entry.nodeId, rootonly.nodeId, b('nope')), E.EACCES, 'link');
  await errno(t, f.rename(user, shared.nodeId, b('mine'), rootonly.nodeId, b('nope'), 0), E.EACCES, 'rename into');
  await errno(t, f.access(user, rootonly.nodeId, 2), E.EACCES, 'access W_OK');
  await f.access(user, rootonly.nodeId, 5);
  // Another user cannot read a 0600 file of uid 1000; root can.
  const other: Caller = { uid: 1001, gid: 1001, pid: 3 };
  await errno(t, f.open(other, c.entry.nodeId, O_RDONLY), E.EACCES, 'open 0600 of another user');
  await errno(t, f.setattr(other, c.entry.nodeId, { mode: 0o666 }), E.EPERM, 'chmod by non-owner');
  await errno(t, f.setattr(user, c.entry.nodeId, { uid: 0 }), E.EPERM, 'chown by non-root');
  await errno(t, f.setxattr(other, c.entry.nodeId, b('user.x'), b('1'), 0), E.EACCES, 'setxattr by other');
  const h = await f.open(root, c.entry.nodeId, O_RDONLY);
  t.is((await f.read(root, c.entry.nodeId, h.fh, 0, 100)).toString(), 'secret');
  await f.release(root, c.entry.nodeId, h.fh);
  // Supplementary groups count: a 0070 group-only file is readable through a secondary group.
  await f.setattr(root, c.entry.nodeId, { uid: 0, gid: 4242, mode: 0o070 });
  await errno(t, f.open(other, c.entry.nodeId, O_RDONLY), E.EACCES, 'not in group');
  const h2 = await f.open({ ...other, groups: [4242] }, c.entry.nodeId, O_RDONLY);
  await f.release(other, c.entry.nodeId, h2.fh);
  // Device nodes need a root caller (CAP_MKNOD); the host never opens them.
  await errno(t, f.mknod(user, shared.nodeId, b('null'), C.S_IFCHR | 0o666, makedev(1, 3)), E.EPERM, 'mknod chr as user');
  const dev = await f.mknod(root, shared.nodeId, b('null'), C.S_IFCHR | 0o666, makedev(1, 3));
  t.is(dev.attr.mode & C.S_IFMT, C.S_IFCHR);
  t.is(dev.attr.rdev, makedev(1, 3));
  await errno(t, f.open(root, dev.nodeId, O_RDWR), E.ENXIO, 'open a device node');
  await errno(t, f.open(root, n.nodeId, O_RDONLY), E.ENXIO, 'open a FIFO');
  await errno(t, f.create(root, shared.nodeId, b('fifo'), 0o644, O_RDWR), E.ENXIO, 'create over a FIFO');
  // The host process itself is untouched by the per-call credentials.
  t.is(process.getuid!(), 0);
  fs.mkdirSync(path.join(dir, 'byhost'));
  t.is(fs.statSync(path.join(dir, 'byhost')).uid, 0);
});

function makedev(major: number, minor: number): number {
  return ((major & 0xfff) << 8) | (minor & 0xff) | ((minor & ~0xff) << 12);
}

test('setattr: mode, owner, size (by handle and by path), nanosecond times, now', async (t) => {
  const { dir, fs: f } = await setup(t);
  const e = await writeFile(f, ROOT_ID, 'f', '0123456789');
  let a = await f.setattr(root, e.nodeId, { mode: 0o4755 });
  t.is(a.mode & 0o7777, 0o4755);
  a = await f.setattr(root, e.nodeId, { uid: 1000, gid: 2000 });
  t.deepEqual([a.uid, a.gid], [1000, 2000]);
  a = await f.setattr(root, e.nodeId, { size: 4 });
  t.is(a.size, 4);
  const h = await f.open(root, e.nodeId, O_RDWR);
  a = await f.setattr(root, e.nodeId, { size: 100 }, h.fh);
  t.is(a.size, 100);
  await f.release(root, e.nodeId, h.fh);
  a = await f.setattr(root, e.nodeId, { atime: { sec: 1_600_000_000, nsec: 123_456_789 }, mtime: { sec: 1_500_000_000, nsec: 987_654_321 } });
  t.deepEqual(a.atime, { sec: 1_600_000_000, nsec: 123_456_789 });
  t.deepEqual(a.mtime, { sec: 1_500_000_000, nsec: 987_654_321 });
  const st = fs.statSync(path.join(dir, 'f'), { bigint: true });
  t.is(st.mtimeNs, 1_500_000_000_987_654_321n);
  t.is(st.atimeNs, 1_600_000_000_123_456_789n);
  // Only mtime: atime is left alone (UTIME_OMIT).
  a = await f.setattr(root, e.nodeId, { mtime: { sec: 42, nsec: 1 } });
  t.deepEqual(a.atime, { sec: 1_600_000_000, nsec: 123_456_789 });
  t.deepEqual(a.mtime, { sec: 42, nsec: 1 });
  const now = Date.now() / 1000;
  a = await f.setattr(root, e.nodeId, { atime: 'now', mtime: 'now' });
  t.true(Math.abs(a.mtime.sec - now) < 5);
  t.true(Math.abs(a.atime.sec - now) < 5);
  await errno(t, f.setattr(root, e.nodeId, { mtime: { sec: 1, nsec: 1e9 } }), E.EINVAL, 'nsec out of range');
  // Write-permission truncation as a user.
  fs.chmodSync(path.join(dir, 'f'), 0o644);
  fs.chownSync(path.join(dir, 'f'), 0, 0);
  await errno(t, f.setattr(user, e.nodeId, { size: 0 }), E.EACCES, 'truncate without write permission');
  // Directory handle cannot truncate; directory node neither.
  const d = await f.mkdir(root, ROOT_ID, b('d'), 0o755);
  await errno(t, f.setattr(root, d.nodeId, { size: 0 }), E.EISDIR, 'truncate a dir');
});

test('unlink, rmdir, rename with RENAME_NOREPLACE and RENAME_EXCHANGE', async (t) => {
  const { dir, fs: f } = await setup(t);
  await writeFile(f, ROOT_ID, 'a', 'A');
  await writeFile(f, ROOT_ID, 'b', 'B');
  const d = await f.mkdir(root, ROOT_ID, b('d'), 0o755);
  await errno(t, f.rename(root, ROOT_ID, b('a'), ROOT_ID, b('b'), RENAME_NOREPLACE), E.EEXIST, 'NOREPLACE onto existing');
  await f.rename(root, ROOT_ID, b('a'), ROOT_ID, b('b'), RENAME_EXCHANGE);
  t.is(fs.readFileSync(path.join(dir, 'a'), 'utf8'), 'B');
  t.is(fs.readFileSync(path.join(dir, 'b'), 'utf8'), 'A');
  await errno(t, f.rename(root, ROOT_ID, b('a'), ROOT_ID, b('zzz'), RENAME_EXCHANGE), E.ENOENT, 'EXCHANGE with missing');
  await f.rename(root, ROOT_ID, b('a'), d.nodeId, b('moved'), RENAME_NOREPLACE);
  t.is(fs.readFileSync(path.join(dir, 'd', 'moved'), 'utf8'), 'B');
  await f.rename(root, ROOT_ID, b('b'), d.nodeId, b('moved'), 0); // replace
  t.is(fs.readFileSync(path.join(dir, 'd', 'moved'), 'utf8'), 'A');
  t.false(fs.existsSync(path.join(dir, 'b')));
  await errno(t, f.rename(root, ROOT_ID, b('d'), ROOT_ID, b('x'), 8 /* unknown */), E.EINVAL, 'unknown flags');
  await errno(t, f.rename(root, ROOT_ID, b('d'), ROOT_ID, b('d'), RENAME_NOREPLACE | RENAME_EXCHANGE), E.EINVAL, 'both flags');
  const e = await f.mkdir(root, ROOT_ID, b('e'), 0o755);
  await writeFile(f, e.nodeId, 'f', 'x');
  await errno(t, f.rename(root, ROOT_ID, b('d'), ROOT_ID, b('e'), 0), E.ENOTEMPTY, 'rename onto non-empty dir');
  await f.unlink(root, d.nodeId, b('moved'));
  await f.rmdir(root, ROOT_ID, b('d'));
  t.false(fs.existsSync(path.join(dir, 'd')));
  // The node of a removed file still works by fd until forgotten.
  await errno(t, f.lookup(root, ROOT_ID, b('d')), E.ENOENT);
});

test('hard links: counts, same node id, symlinks linked as links', async (t) => {
  const { dir, fs: f } = await setup(t);
  const e = await writeFile(f, ROOT_ID, 'orig', 'data');
  t.is(e.attr.nlink, 1);
  const sub = await f.mkdir(root, ROOT_ID, b('sub'), 0o755);
  const l1 = await f.link(root, e.nodeId, sub.nodeId, b('l1'));
  t.is(l1.nodeId, e.nodeId, 'one inode, one node');
  t.is(l1.attr.nlink, 2);
  const l2 = await f.link(user, e.nodeId, ROOT_ID, b('l2')).catch((err: FsError) => err);
  t.true(l2 instanceof FsError, 'uid 1000 cannot write the root-owned export root');
  const l3 = await f.link(root, e.nodeId, ROOT_ID, b('l3'));
  t.is(l3.attr.nlink, 3);
  t.is(fs.statSync(path.join(dir, 'orig')).nlink, 3);
  await errno(t, f.link(root, e.nodeId, ROOT_ID, b('l3')), E.EEXIST, 'link onto existing name');
  await errno(t, f.link(root, sub.nodeId, ROOT_ID, b('dirlink')), E.EPERM, 'hard link to a directory');
  await f.unlink(root, ROOT_ID, b('orig'));
  t.is((await f.getattr(root, e.nodeId)).nlink, 2);
  const s = await f.symlink(root, ROOT_ID, b('sl'), b('/'));
  const sl = await f.link(root, s.nodeId, ROOT_ID, b('sl2'));
  t.is(sl.nodeId, s.nodeId);
  t.is(fs.readlinkSync(path.join(dir, 'sl2')), '/');
  t.true(fs.lstatSync(path.join(dir, 'sl2')).isSymbolicLink());
  // A user in a directory it owns: the link is made with its credentials.
  fs.chmodSync(path.join(dir, 'sub'), 0o777);
  const mine = await writeFile(f, sub.nodeId, 'mine', 'x', user);
  const ml = await f.link(user, mine.nodeId, sub.nodeId, b('mine2'));
  t.is(ml.attr.nlink, 2);
});

test('read-only export: every mutation is EROFS, reads work', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dirvisor-posix-ro-'));
  fs.writeFileSync(path.join(dir, 'f'), 'content');
  fs.mkdirSync(path.join(dir, 'd'));
  const f = await PosixBackend.create(dir, { readOnly: true });
  t.teardown(async () => {
    await f.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const e = await f.lookup(root, ROOT_ID, b('f'));
  const d = await f.lookup(root, ROOT_ID, b('d'));
  const rofs = async (p: Promise<unknown>, what: string) => errno(t, p, E.EROFS, what);
  await rofs(f.create(root, ROOT_ID, b('n'), 0o644, O_RDWR), 'create');
  await rofs(f.mkdir(root, ROOT_ID, b('n'), 0o755), 'mkdir');
  await rofs(f.mknod(root, ROOT_ID, b('n'), C.S_IFREG | 0o644, 0), 'mknod');
  await rofs(f.symlink(root, ROOT_ID, b('n'), b('x')), 'symlink');
  await rofs(f.link(root, e.nodeId, ROOT_ID, b('n')), 'link');
  await rofs(f.unlink(root, ROOT_ID, b('f')), 'unlink');
  await rofs(f.rmdir(root, ROOT_ID, b('d')), 'rmdir');
  await rofs(f.rename(root, ROOT_ID, b('f'), ROOT_ID, b('g'), 0), 'rename');
  await rofs(f.setattr(root, e.nodeId, { mode: 0o600 }), 'setattr');
  await rofs(f.open(root, e.nodeId, O_WRONLY), 'open for write');
  await rofs(f.open(root, e.nodeId, O_RDWR), 'open rdwr');
  await rofs(f.open(root, e.nodeId, O_RDONLY | C.O_TRUNC), 'open O_TRUNC');
  await rofs(f.setxattr(root, e.nodeId, b('user.a'), b('1'), 0), 'setxattr');
  await rofs(f.removexattr(root, e.nodeId, b('user.a')), 'removexattr');
  await rofs(f.access(root, e.nodeId, 2), 'access W_OK');
  const h = await f.open(root, e.nodeId, O_RDONLY);
  t.is((await f.read(root, e.nodeId, h.fh, 0, 100)).toString(), 'content');
  await rofs(f.write(root, e.nodeId, h.fh, 0, b('x')), 'write');
  await rofs(f.fallocate(root, e.nodeId, h.fh, 0, 0, 10), 'fallocate');
  await rofs(f.copyFileRange(root, e.nodeId, h.fh, 0, e.nodeId, h.fh, 10, 5, 0), 'copy_file_range');
  await f.release(root, e.nodeId, h.fh);
  await f.access(root, e.nodeId, 4);
  const dh = await f.opendir(root, d.nodeId, 0);
  t.is((await f.readdir(root, d.nodeId, dh.fh, 0, 10, false)).length, 2);
  await f.releasedir(root, d.nodeId, dh.fh);
  t.is(fs.readFileSync(path.join(dir, 'f'), 'utf8'), 'content');
});

test('sparse file: SEEK_DATA / SEEK_HOLE, fallocate and punch hole', async (t) => {
  const { dir, fs: f } = await setup(t);
  const c = await f.create(root, ROOT_ID, b('sparse'), 0o644, O_RDWR);
  const n = c.entry.nodeId;
  const MiB = 1 << 20;
  await f.write(root, n, c.fh, 4 * MiB, Buffer.alloc(MiB, 0x61));
  t.is((await f.getattr(root, n)).size, 5 * MiB);
  t.is(await f.lseek(root, n, c.fh, 0, C.SEEK_DATA), 4 * MiB);
  t.is(await f.lseek(root, n, c.fh, 0, C.SEEK_HOLE), 0);
  t.is(await f.lseek(root, n, c.fh, 4 * MiB, C.SEEK_HOLE), 5 * MiB);
  await errno(t, f.lseek(root, n, c.fh, 6 * MiB, C.SEEK_DATA), E.ENXIO, 'SEEK_DATA past the end');
  // fallocate: allocate the first MiB without changing the size, then punch a hole in the data.
  await f.fallocate(root, n, c.fh, C.FALLOC_FL_KEEP_SIZE, 0, MiB);
  const blocksAfterAlloc = (await f.getattr(root, n)).blocks;
  t.true(blocksAfterAlloc >= (2 * MiB) / 512);
  await f.fallocate(root, n, c.fh, C.FALLOC_FL_PUNCH_HOLE | C.FALLOC_FL_KEEP_SIZE, 4 * MiB, MiB / 2);
  const a = await f.getattr(root, n);
  t.is(a.size, 5 * MiB, 'punch hole keeps the size');
  t.true(a.blocks < blocksAfterAlloc);
  t.is(await f.lseek(root, n, c.fh, 4 * MiB, C.SEEK_DATA), 4 * MiB + MiB / 2);
  const data = await f.read(root, n, c.fh, 4 * MiB, 16);
  t.true(data.equals(Buffer.alloc(16)), 'punched range reads as zeros');
  // Extending fallocate changes the size.
  await f.fallocate(root, n, c.fh, 0, 5 * MiB, MiB);
  t.is((await f.getattr(root, n)).size, 6 * MiB);
  await errno(t, f.read(root, n, c.fh, 0, 64 * MiB), E.EINVAL, 'read over maxIoSize');
  await f.release(root, n, c.fh);
  t.is(fs.statSync(path.join(dir, 'sparse')).size, 6 * MiB);
});

test('copy_file_range between two handles', async (t) => {
  const { dir, fs: f } = await setup(t);
  const src = await writeFile(f, ROOT_ID, 'src', '0123456789abcdef');
  const dst = await f.create(root, ROOT_ID, b('dst'), 0o644, O_RDWR);
  const sh = await f.open(root, src.nodeId, O_RDONLY);
  const n = await f.copyFileRange(root, src.nodeId, sh.fh, 4, dst.entry.nodeId, dst.fh, 2, 8, 0);
  t.is(n, 8);
  t.is((await f.read(root, dst.entry.nodeId, dst.fh, 0, 100)).toString('latin1'), '\0\x00456789ab');
  t.is(await f.copyFileRange(root, src.nodeId, sh.fh, 100, dst.entry.nodeId, dst.fh, 0, 8, 0), 0, 'past EOF');
  await errno(t, f.copyFileRange(root, src.nodeId, 999, 0, dst.entry.nodeId, dst.fh, 0, 8, 0), E.EBADF, 'bad fh');
  await errno(t, f.copyFileRange(root, dst.entry.nodeId, dst.fh, 0, src.nodeId, sh.fh, 0, 8, 0), E.EBADF, 'into read-only fh');
  await f.release(root, src.nodeId, sh.fh);
  await f.release(root, dst.entry.nodeId, dst.fh);
  t.is(fs.readFileSync(path.join(dir, 'dst'), 'latin1'), '\0\x00456789ab');
});

test('xattrs: set, get (and size 0), list, remove, flags', async (t) => {
  const { fs: f } = await setup(t);
  const e = await writeFile(f, ROOT_ID, 'x', '');
  const n = e.nodeId;
  await f.setxattr(root, n, b('user.color'), b('blue'), 0);
  await f.setxattr(root, n, b('user.empty'), Buffer.alloc(0), 0);
  t.is(await f.getxattr(root, n, b('user.color'), 0), 4);
  t.is(((await f.getxattr(root, n, b('user.color'), 100)) as Buffer).toString(), 'blue');
  t.is(((await f.getxattr(root, n, b('user.empty'), 100)) as Buffer).length, 0);
  await errno(t, f.getxattr(root, n, b('user.color'), 2), E.ERANGE, 'buffer too small');
  await errno(t, f.getxattr(root, n, b('user.none'), 100), E.ENODATA, 'missing attribute');
  await errno(t, f.setxattr(root, n, b('user.color'), b('red'), C.XATTR_CREATE), E.EEXIST, 'XATTR_CREATE on existing');
  await errno(t, f.setxattr(root, n, b('user.new'), b('red'), C.XATTR_REPLACE), E.ENODATA, 'XATTR_REPLACE on missing');
  const len = await f.listxattr(root, n, 0);
  const list = (await f.listxattr(root, n, 1000)) as Buffer;
  t.is(list.length, len as number);
  const names = list.toString().split('\0').filter(Boolean).sort();
  t.deepEqual(names, ['user.color', 'user.empty']);
  await errno(t, f.listxattr(root, n, 3), E.ERANGE, 'list buffer too small');
  await f.removexattr(root, n, b('user.color'));
  await errno(t, f.getxattr(root, n, b('user.color'), 100), E.ENODATA, 'removed');
  await errno(t, f.removexattr(root, n, b('user.color')), E.ENODATA, 'remove missing');
  await errno(t, f.getxattr(root, n, Buffer.alloc(256, 0x61), 10), E.ERANGE, 'name too long');
  await errno(t, f.setxattr(root, n, b('user.big'), Buffer.alloc(65537), 0), E.E2BIG, 'value too large');
  // On directories too, and through a node that is an O_PATH fd only.
  const d = await f.mkdir(root, ROOT_ID, b('d'), 0o755);
  await f.setxattr(root, d.nodeId, b('user.dir'), b('yes'), 0);
  t.is(((await f.getxattr(root, d.nodeId, b('user.dir'), 10)) as Buffer).toString(), 'yes');
});

test('statfs and access', async (t) => {
  const { dir, fs: f } = await setup(t);
  const s = await f.statfs(root, ROOT_ID);
  const ref = fs.statfsSync(dir);
  t.is(s.bsize, ref.bsize);
  t.is(s.blocks, ref.blocks);
  t.is(s.namemax, 255);
  t.true(s.files > 0);
  await f.access(root, ROOT_ID, 7);
  const e = await writeFile(f, ROOT_ID, 'f', 'x');
  await f.setattr(root, e.nodeId, { mode: 0o640, uid: 0, gid: 1000 });
  await f.access(user, e.nodeId, 4);
  await errno(t, f.access(user, e.nodeId, 2), E.EACCES, 'group has no write');
  await errno(t, f.access({ uid: 1001, gid: 1001, pid: 9 }, e.nodeId, 4), E.EACCES, 'other has nothing');
  await f.access({ uid: 1001, gid: 1001, pid: 9, groups: [1000] }, e.nodeId, 4);
});

test('readdir: 10,000 entries paged, offsets resumable, readdirplus counts lookups', async (t) => {
  const { dir, fs: f } = await setup(t);
  const d = await f.mkdir(root, ROOT_ID, b('big'), 0o755);
  const N = 10_000;
  for (let i = 0; i < N; i++) fs.writeFileSync(path.join(dir, 'big', `file-${i}`), '');
  fs.mkdirSync(path.join(dir, 'big', 'subdir'));
  const h = await f.opendir(root, d.nodeId, 0);
  const seen = new Set<string>();
  const all: { name: string; next: number }[] = [];
  let offset = 0;
  let calls = 0;
  for (;;) {
    const page = await f.readdir(root, d.nodeId, h.fh, offset, 128, false);
    if (page.length === 0) break;
    t.true(page.length <= 128);
    calls++;
    for (const e of page) {
      const name = e.name.toString();
      t.false(seen.has(name), `duplicate ${name}`);
      seen.add(name);
      all.push({ name, next: e.nextOffset });
      t.true(Number.isSafeInteger(e.nextOffset));
      if (name === 'subdir') t.is(e.type, 4);
      else if (name.startsWith('file-')) t.is(e.type, 8);
    }
    offset = page[page.length - 1].nextOffset;
  }
  t.is(seen.size, N + 3, 'all files, subdir, "." and ".."');
  t.true(seen.has('.') && seen.has('..'));
  t.true(calls >= Math.ceil((N + 3) / 128));
  // Resume from an offset in the middle (as a guest seekdir would).
  const mid = all[5000];
  const resumed = await f.readdir(root, d.nodeId, h.fh, mid.next, 3, false);
  t.deepEqual(resumed.map((e) => e.name.toString()), all.slice(5001, 5004).map((e) => e.name));
  await errno(t, f.readdir(root, d.nodeId, h.fh, 2 ** 52 + 10_000_000, 3, false), E.EINVAL, 'offset never issued');
  await f.fsyncdir(root, d.nodeId, h.fh, false);
  await f.fsyncdir(root, d.nodeId, h.fh, true);
  await errno(t, f.fsyncdir(root, d.nodeId, 9999, false), E.EBADF, 'fsyncdir unknown fh');
  await f.releasedir(root, d.nodeId, h.fh);

  // readdirplus: an entry (and one lookup) per name except "." and "..".
  const before = f.stats().nodes;
  const hp = await f.opendir(root, d.nodeId, 0);
  const plusSeen = new Map<string, number>();
  offset = 0;
  for (;;) {
    const page = await f.readdir(root, d.nodeId, hp.fh, offset, 500, true);
    if (page.length === 0) break;
    for (const e of page) {
      const name = e.name.toString();
      if (name === '.' || name === '..') {
        t.is(e.entry, undefined);
      } else {
        t.truthy(e.entry, name);
        t.is(e.entry!.attr.ino, e.ino);
        plusSeen.set(name, e.entry!.nodeId);
      }
    }
    offset = page[page.length - 1].nextOffset;
  }
  await f.releasedir(root, d.nodeId, hp.fh);
  t.is(plusSeen.size, N + 1);
  t.is(f.stats().nodes, before + N + 1);
  const sample = plusSeen.get('file-77')!;
  t.is((await f.lookup(root, d.nodeId, b('file-77'))).nodeId, sample, 'readdirplus nodes are the lookup nodes');
  // Forgetting every readdirplus reference (and the extra lookup) frees the nodes.
  f.forget([...plusSeen.values()].map((nodeId) => ({ nodeId, nlookup: 1 })));
  t.is(f.stats().nodes, before + 1);
  f.forget([{ nodeId: sample, nlookup: 1 }]);
  t.is(f.stats().nodes, before);
});

test('readdir on tmpfs (small offsets) pages through every entry', async (t) => {
  if (!TMPFS) {
    t.pass('no tmpfs at /dev/shm');
    return;
  }
  const { dir, fs: f } = await setup(t, {}, TMPFS);
  const N = 3000;
  for (let i = 0; i < N; i++) fs.writeFileSync(path.join(dir, `n${i}`), '');
  const h = await f.opendir(root, ROOT_ID, 0);
  const names: string[] = [];
  let offset = 0;
  for (;;) {
    const page = await f.readdir(root, ROOT_ID, h.fh, offset, 100, true);
    if (page.length === 0) break;
    for (const e of page) {
      names.push(e.name.toString());
      t.true(e.nextOffset < 2 ** 52, 'tmpfs offsets pass through');
    }
    offset = page[page.length - 1].nextOffset;
  }
  await f.releasedir(root, ROOT_ID, h.fh);
  t.is(new Set(names).size, N + 2);
  t.is(names.length, N + 2);
  // xattrs and sparse seeks on tmpfs too.
  const e = await writeFile(f, ROOT_ID, 'x', '');
  await f.setxattr(root, e.nodeId, b('user.k'), b('v'), 0);
  t.is(((await f.getxattr(root, e.nodeId, b('user.k'), 10)) as Buffer).toString(), 'v');
});

test('concurrent calls with different callers never mix credentials', async (t) => {
  const { dir, fs: f } = await setup(t);
  fs.mkdirSync(path.join(dir, 'pub'));
  fs.chmodSync(path.join(dir, 'pub'), 0o777);
  const pub = await f.lookup(root, ROOT_ID, b('pub'));
  const callers: Caller[] = [root, user, { uid: 1001, gid: 1002, pid: 3, groups: [5, 6] }, { uid: 2000, gid: 0, pid: 4 }];
  const jobs = Array.from({ length: 400 }, async (_, i) => {
    const c = callers[i % callers.length];
    const made = i % 2 === 0
      ? (await f.mkdir(c, pub.nodeId, b(`d${i}`), 0o755))
      : (await f.create(c, pub.nodeId, b(`f${i}`), 0o644, O_WRONLY)).entry;
    return { i, c, made };
  });
  for (const { i, c, made } of await Promise.all(jobs)) {
    const st = fs.lstatSync(path.join(dir, 'pub', i % 2 === 0 ? `d${i}` : `f${i}`));
    t.is(st.uid, c.uid);
    t.is(st.gid, c.gid);
    t.is(made.attr.uid, c.uid);
  }
});

test('limits: open handles (EMFILE) and known nodes (ENFILE)', async (t) => {
  const { dir, fs: f } = await setup(t, { maxHandles: 3, maxNodes: 4 });
  for (const n of ['a', 'b', 'c', 'd']) fs.writeFileSync(path.join(dir, n), n);
  const a = await f.lookup(root, ROOT_ID, b('a'));
  const hs = [];
  for (let i = 0; i < 3; i++) hs.push(await f.open(root, a.nodeId, O_RDONLY));
  await errno(t, f.open(root, a.nodeId, O_RDONLY), E.EMFILE, 'fourth handle');
  await errno(t, f.opendir(root, ROOT_ID, 0), E.EMFILE, 'dir handle counts too');
  await f.release(root, a.nodeId, hs[0].fh);
  const again = await f.open(root, a.nodeId, O_RDONLY);
  await f.release(root, a.nodeId, again.fh);
  await f.lookup(root, ROOT_ID, b('b'));
  await f.lookup(root, ROOT_ID, b('c'));
  await errno(t, f.lookup(root, ROOT_ID, b('d')), E.ENFILE, 'fifth node');
  t.truthy(await f.lookup(root, ROOT_ID, b('a')), 'a known node is still fine');
});

test('release while a read is in flight does not close the fd under it', async (t) => {
  const { fs: f } = await setup(t);
  const e = await writeFile(f, ROOT_ID, 'f', Buffer.alloc(1 << 20, 0x62));
  for (let round = 0; round < 20; round++) {
    const h = await f.open(root, e.nodeId, O_RDONLY);
    const reads = Array.from({ length: 8 }, () => f.read(root, e.nodeId, h.fh, 0, 1 << 20));
    await f.release(root, e.nodeId, h.fh);
    for (const r of await Promise.all(reads)) t.is(r.length, 1 << 20);
  }
  const nodeBefore = f.stats().nodes;
  const x = await f.lookup(root, ROOT_ID, b('f'));
  const p = f.getattr(root, x.nodeId);
  f.forget([{ nodeId: x.nodeId, nlookup: 2 }]);
  t.is((await p).size, 1 << 20);
  t.is(f.stats().nodes, nodeBefore - 1);
});

test('create without O_EXCL opens an existing file; O_TRUNC truncates', async (t) => {
  const { dir, fs: f } = await setup(t);
  fs.writeFileSync(path.join(dir, 'exists'), 'old content');
  const c = await f.create(root, ROOT_ID, b('exists'), 0o600, O_RDWR);
  t.is((await f.read(root, c.entry.nodeId, c.fh, 0, 100)).toString(), 'old content');
  await f.release(root, c.entry.nodeId, c.fh);
  const c2 = await f.create(root, ROOT_ID, b('exists'), 0o600, O_WRONLY | C.O_TRUNC);
  t.is(c2.entry.nodeId, c.entry.nodeId);
  t.is(c2.entry.attr.size, 0);
  await f.release(root, c2.entry.nodeId, c2.fh);
  t.is(fs.statSync(path.join(dir, 'exists')).size, 0);
  // O_APPEND writes land at the end whatever the offset.
  const c3 = await f.create(root, ROOT_ID, b('log'), 0o644, O_WRONLY | C.O_APPEND);
  await f.write(root, c3.entry.nodeId, c3.fh, 0, b('one\n'));
  await f.write(root, c3.entry.nodeId, c3.fh, 0, b('two\n'));
  await f.release(root, c3.entry.nodeId, c3.fh);
  t.is(fs.readFileSync(path.join(dir, 'log'), 'utf8'), 'one\ntwo\n');
  await errno(t, f.open(root, c3.entry.nodeId, 3), E.EINVAL, 'access mode 3');
});

test.serial('destroy closes everything', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dirvisor-posix-destroy-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const countFds = () => fs.readdirSync('/proc/self/fd').length;
  const base = countFds();
  const f = await PosixBackend.create(dir);
  const e = await writeFile(f, ROOT_ID, 'f', 'x');
  await f.open(root, e.nodeId, O_RDONLY);
  await f.opendir(root, ROOT_ID, 0);
  t.true(countFds() >= base + 4);
  await f.destroy();
  t.is(countFds(), base);
  await errno(t, f.getattr(root, ROOT_ID), E.ESTALE, 'after destroy');
});
