// The data path end to end, as root: `dirvisor-host serve` on a storage directory, `dirvisor-guest
// mount` of it with FUSE, and real programs (bash, coreutils, python3) working through the mount.
// Every check looks at what a user would: contents, stat fields, errno names — and, where it
// matters, at the backing file in the storage directory too.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawn } from 'node:child_process';
import { Session } from '../shared/rpc/session.js';
import { sendHello } from '../shared/rpc/hello.js';
import { connect } from '../shared/transport/index.js';
import { FsError, errnoName } from '../shared/fs/errors.js';
import { silentLogger } from '../shared/log.js';
import {
  startExport, mountGuest, pyJson, sh, shOk, mountEntry, isMounted, waitFor, traceSyscalls, dedent, PYTHON, type Export, type GuestMount,
} from './helpers/agents.js';

let ex: Export;
/** A second guest mounting the same serve, with the kernel's writeback cache. */
let wb: GuestMount;

test.before(async () => {
  ex = await startExport({ options: 'allow_other,default_permissions' });
  wb = await mountGuest(ex.host.uri, { token: ex.host.token, options: 'allow_other,default_permissions,writeback', mnt: path.join(ex.work, 'guest', 'wb') });
});

test.after.always(async () => {
  await wb?.unmount();
  await ex?.cleanup();
});

test.afterEach.always(async (t) => {
  if (!t.passed && ex) t.log(await ex.logs());
});

const GiB = 1024 ** 3;

/** `p`, or a clear failure after `ms` (a hang must fail the test, not stall the run). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms))),
  ]);
}

// One strace at a time can attach to the host agent, and tests in this file run concurrently:
// traced sections take turns. `stop` ends the trace (and the turn) and returns what it saw.
let traceTurn: Promise<unknown> = Promise.resolve();
async function traceHost(syscalls: string[]): Promise<{ stop(): Promise<string> } | null> {
  const previous = traceTurn;
  let done!: () => void;
  traceTurn = new Promise<void>((resolve) => (done = resolve));
  await previous;
  try {
    const trace = await traceSyscalls(ex.host.proc.pid!, syscalls);
    if (!trace) done();
    return trace && { stop: () => trace.stop().finally(done) };
  } catch (err) {
    done();
    throw err;
  }
}

/**
 * The same test on the default mount and on the writeback-cache mount of the same serve (where the
 * guest kernel keeps written data in its page cache and opens files differently).
 */
type Which = 'default' | 'writeback';
function onBothMounts(title: string, label: string, fn: (t: ExecutionContext, d: { m: string; s: string; name: string; which: Which }) => Promise<void>): void {
  for (const which of ['default', 'writeback'] as const) {
    test(`${title} (${which} mount)`, async (t) => {
      const d = await ex.subdir(`${label}-${which}`);
      await fn(t, { ...d, which, m: which === 'default' ? d.m : path.join(wb.mnt, d.name) });
    });
  }
}

/**
 * Where SEEK_DATA / SEEK_HOLE from `offset` may land in a file of `size` bytes whose data is in
 * [dataStart, dataEnd) (and a hole right after it): the exact answer, or — where the mount does not
 * know the file's holes (the writeback cache answers from the guest kernel's view) — the generic
 * one, which is correct too: data wherever the offset is, the only hole at the end.
 */
function seekAnswers(which: Which, exact: number, generic: number): number[] {
  return which === 'default' ? [exact] : [exact, generic];
}

test('the mount is a dirvisor FUSE mount of the served directory', async (t) => {
  const m = await mountEntry(ex.mnt);
  t.truthy(m);
  t.is(m!.fstype, 'fuse.dirvisor');
  t.true(m!.options.includes('allow_other'));
  t.true(m!.options.includes('default_permissions'));
  t.true(m!.options.includes('rw'));
});

onBothMounts('create, write, read and append', 'rw', async (t, { m, s }) => {
  const out = await shOk(`
    cd ${m}
    printf 'hello' > f
    printf ' world\\n' >> f
    cat f
    echo 'line 2' >> f
    wc -c < f`);
  t.is(out, 'hello world\n19\n');
  t.is(await fs.readFile(path.join(s, 'f'), 'utf8'), 'hello world\nline 2\n');

  // Overwrite in the middle through an open file, and read it back through the mount and backing.
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    fd = os.open(m + "/f", os.O_RDWR)
    os.pwrite(fd, b"HELLO", 0)
    os.lseek(fd, 6, os.SEEK_SET)
    os.write(fd, b"W")
    os.close(fd)
    fd = os.open(m + "/f", os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"appended")  # O_APPEND writes at the end, whatever the offset
    os.close(fd)
    out({"mount": read(m + "/f").decode(), "backing": read(s + "/f").decode(), "st": st(m + "/f"), "bst": st(s + "/f")})
  `, [m, s]);
  t.is(r.mount, 'HELLO World\nline 2\nappended');
  t.is(r.backing, r.mount);
  t.is(r.st.size, r.mount.length);
  t.is(r.bst.size, r.mount.length);
  t.is(r.st.ino, r.bst.ino, 'the mount shows the backing inode number');

  // A file created on the storage side reads the same through the mount.
  const data = crypto.randomBytes(3 * 1024 * 1024 + 17);
  await fs.writeFile(path.join(s, 'big'), data);
  const sum = (await shOk(`sha256sum < ${m}/big`)).split(' ')[0];
  t.is(sum, crypto.createHash('sha256').update(data).digest('hex'));
  // ...and a large file written through the mount arrives whole.
  const written = (await shOk(`head -c 5000000 /dev/urandom | tee ${m}/big2 | sha256sum`)).split(' ')[0];
  t.is(crypto.createHash('sha256').update(await fs.readFile(path.join(s, 'big2'))).digest('hex'), written);
});

onBothMounts('truncate grows with zeros and shrinks, by path, by fd and with O_TRUNC', 'trunc', async (t, { m, s }) => {
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    with open(m + "/f", "wb") as f: f.write(b"0123456789")
    res = {}
    os.truncate(m + "/f", 100000)                       # grow by path
    res["grown"] = [st(m + "/f")["size"], st(s + "/f")["size"]]
    d = read(m + "/f")
    res["grown_ok"] = d[:10] == b"0123456789" and d[10:] == bytes(100000 - 10)
    os.truncate(m + "/f", 4)                            # shrink by path
    res["shrunk"] = [read(m + "/f").decode(), read(s + "/f").decode()]
    fd = os.open(m + "/f", os.O_RDWR)
    os.ftruncate(fd, 2)                                 # shrink by fd
    res["fd_shrunk"] = [os.fstat(fd).st_size, read(s + "/f").decode()]
    os.ftruncate(fd, 8)                                 # grow by fd
    res["fd_grown"] = [os.pread(fd, 100, 0).hex(), st(s + "/f")["size"]]
    os.close(fd)
    fd = os.open(m + "/f", os.O_WRONLY | os.O_TRUNC)    # O_TRUNC
    os.close(fd)
    res["otrunc"] = [st(m + "/f")["size"], st(s + "/f")["size"]]
    out(res)
  `, [m, s]);
  t.deepEqual(r.grown, [100000, 100000]);
  t.true(r.grown_ok);
  t.deepEqual(r.shrunk, ['0123', '0123']);
  t.deepEqual(r.fd_shrunk, [2, '01']);
  t.deepEqual(r.fd_grown, ['3031000000000000', 8]);
  t.deepEqual(r.otrunc, [0, 0]);
  // truncate(1) from the shell as well.
  await shOk(`truncate -s 1M ${m}/t && truncate -s 10 ${m}/t`);
  t.is((await fs.stat(path.join(s, 't'))).size, 10);
});

onBothMounts('sparse files and offsets above 4 GiB: size, blocks, zeros in the hole, data where written', 'sparse', async (t, { m, s, which }) => {
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    GiB = 1 << 30
    fd = os.open(m + "/sp", os.O_CREAT | os.O_RDWR, 0o644)
    os.pwrite(fd, b"HEAD", 0)
    os.pwrite(fd, b"ACROSS4G", 4 * GiB - 4)     # straddles the 32-bit boundary
    os.pwrite(fd, b"TAIL" * 1024, 5 * GiB + 123)
    os.fsync(fd)
    os.close(fd)
    fd = os.open(m + "/sp", os.O_RDONLY)
    res = {
      "st": st(m + "/sp"), "bst": st(s + "/sp"),
      "head": os.pread(fd, 4, 0).decode(),
      "across": os.pread(fd, 8, 4 * GiB - 4).decode(),
      "tail": os.pread(fd, 8, 5 * GiB + 123).decode(),
      "hole_zero": os.pread(fd, 1 << 20, 2 * GiB) == bytes(1 << 20),
      "hole_after_4g_zero": os.pread(fd, 65536, 4 * GiB + 4096) == bytes(65536),
      "past_eof": len(os.pread(fd, 100, 6 * GiB)),
      "data_at": os.lseek(fd, 4 * GiB, os.SEEK_DATA) <= 4 * GiB,
    }
    os.close(fd)
    # the backing file holds the same bytes at the same offsets
    bfd = os.open(s + "/sp", os.O_RDONLY)
    res["b_across"] = os.pread(bfd, 8, 4 * GiB - 4).decode()
    res["b_tail"] = os.pread(bfd, 8, 5 * GiB + 123).decode()
    os.close(bfd)
    # the other operations that take an offset, above 4 GiB
    with open(m + "/small", "wb") as f: f.write(b"S" * 8192)
    fi = os.open(m + "/small", os.O_RDONLY)
    fo = os.open(m + "/big", os.O_CREAT | os.O_RDWR, 0o644)
    res["cfr"] = os.copy_file_range(fi, fo, 4096, 0, 5 * GiB + 4096)
    res["cfr_data"] = [os.pread(fo, 4, 5 * GiB + 4096).decode(), os.lseek(fo, 0, os.SEEK_DATA) - 5 * GiB]
    fallocate(fo, 0, 6 * GiB, 65536)
    res["falloc_size"] = os.fstat(fo).st_size - 6 * GiB
    fallocate(fo, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 5 * GiB + 4096, 4096)
    res["punched"] = os.pread(fo, 4, 5 * GiB + 4096).hex()
    os.ftruncate(fo, 7 * GiB + 3)
    res["ftruncate"] = [os.fstat(fo).st_size - 7 * GiB, st(s + "/big")["size"] - 7 * GiB]
    os.close(fo); os.close(fi)
    os.truncate(m + "/big", 4 * GiB + 1)
    res["truncate"] = [st(m + "/big")["size"] - 4 * GiB, st(s + "/big")["size"] - 4 * GiB]
    out(res)
  `, [m, s]);
  t.is(r.cfr, 4096);
  t.is(r.cfr_data[0], 'SSSS');
  t.true(seekAnswers(which, 4096, -5 * GiB).includes(r.cfr_data[1]), `SEEK_DATA from 0 in a file whose data starts at 5 GiB + 4096: 5 GiB + ${r.cfr_data[1]}`);
  t.is(r.falloc_size, 65536);
  t.is(r.punched, '00000000');
  t.deepEqual(r.ftruncate, [3, 3]);
  t.deepEqual(r.truncate, [1, 1]);
  const size = 5 * GiB + 123 + 4 * 1024;
  t.is(r.st.size, size);
  t.is(r.bst.size, size);
  t.is(r.head, 'HEAD');
  t.is(r.across, 'ACROSS4G');
  t.is(r.tail, 'TAILTAIL');
  t.is(r.b_across, 'ACROSS4G');
  t.is(r.b_tail, 'TAILTAIL');
  t.true(r.hole_zero);
  t.true(r.hole_after_4g_zero);
  t.is(r.past_eof, 0);
  // Sparse: a handful of blocks for a 5 GiB file, and the mount reports what the backing file has.
  t.is(r.st.blocks, r.bst.blocks);
  t.true(r.st.blocks < 1024, `st_blocks ${r.st.blocks} for a sparse file of ${size} bytes`);
  t.true(r.st.blocks > 0);
  // du agrees (it reads st_blocks through the mount).
  const du = Number((await shOk(`du -k ${m}/sp`)).split('\t')[0]);
  t.is(du, r.st.blocks / 2);
});

onBothMounts('rename: plain, over an existing file, and with an open fd on the replaced file', 'rename', async (t, { m, s }) => {
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    res = {}
    with open(m + "/a", "w") as f: f.write("A")
    ino_a = os.stat(m + "/a").st_ino
    os.rename(m + "/a", m + "/b")
    res["plain"] = [err(lambda: read(m + "/a")), read(m + "/b").decode(), os.path.exists(s + "/a"), read(s + "/b").decode(),
                    os.stat(m + "/b").st_ino == ino_a]
    with open(m + "/c", "w") as f: f.write("C")
    keep = os.open(m + "/c", os.O_RDONLY)           # the file about to be replaced stays readable
    os.rename(m + "/b", m + "/c")
    res["over"] = [read(m + "/c").decode(), read(s + "/c").decode(), os.path.exists(m + "/b"), os.path.exists(s + "/b"),
                   os.pread(keep, 10, 0).decode(), os.fstat(keep).st_nlink]
    os.close(keep)
    os.mkdir(m + "/sub")
    os.rename(m + "/c", m + "/sub/moved")             # across directories
    res["across"] = [sorted(os.listdir(m)), sorted(os.listdir(m + "/sub")), read(s + "/sub/moved").decode()]
    os.rename(m + "/sub/moved", m + "/sub/moved")     # onto itself: a no-op
    res["self"] = read(m + "/sub/moved").decode()
    out(res)
  `, [m, s]);
  t.is(r.plain[0].errno, 'ENOENT');
  t.deepEqual(r.plain.slice(1), ['A', false, 'A', true]);
  t.deepEqual(r.over, ['A', 'A', false, false, 'C', 0]);
  t.deepEqual(r.across, [['sub'], ['moved'], 'A']);
  t.is(r.self, 'A');
  // mv(1) too.
  await shOk(`cd ${m} && echo x > one && mv one two && test ! -e one && test "$(cat two)" = x`);
  t.deepEqual(await fs.readdir(s).then((l) => l.sort()), ['sub', 'two']);
});

test('rename of directories: with contents, into a subdirectory of itself, over non-empty and mismatched types', async (t) => {
  const { m, s } = await ex.subdir('dirrename');
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    res = {}
    os.makedirs(m + "/d1/inner/deep")
    with open(m + "/d1/inner/deep/f", "w") as f: f.write("deep")
    os.rename(m + "/d1", m + "/d2")
    res["moved"] = [os.path.exists(m + "/d1"), read(m + "/d2/inner/deep/f").decode(), read(s + "/d2/inner/deep/f").decode()]
    res["into_self"] = err(lambda: os.rename(m + "/d2", m + "/d2/inner/x"))
    os.mkdir(m + "/full"); open(m + "/full/x", "w").close()
    os.mkdir(m + "/empty")
    res["over_nonempty"] = err(lambda: os.rename(m + "/empty", m + "/full"))
    open(m + "/file", "w").close()
    res["dir_over_file"] = err(lambda: os.rename(m + "/empty", m + "/file"))
    res["file_over_dir"] = err(lambda: os.rename(m + "/file", m + "/empty"))
    os.rename(m + "/d2", m + "/empty")                  # over an empty directory: allowed
    res["over_empty"] = [sorted(os.listdir(m)), read(m + "/empty/inner/deep/f").decode(), sorted(os.listdir(s))]
    res["nlink"] = [st(m)["nlink"], st(s)["nlink"]]
    # a directory moving between parents changes both parents' link counts
    os.makedirs(m + "/pa/sub"); os.mkdir(m + "/pb")
    counts = lambda: [st(m + "/pa")["nlink"], st(m + "/pb")["nlink"], st(s + "/pa")["nlink"], st(s + "/pb")["nlink"]]
    res["parents_before"] = counts()
    os.rename(m + "/pa/sub", m + "/pb/sub")
    res["parents_after"] = counts()
    out(res)
  `, [m, s]);
  t.deepEqual(r.parents_before, [3, 2, 3, 2]);
  t.deepEqual(r.parents_after, [2, 3, 2, 3]);
  t.deepEqual(r.moved, [false, 'deep', 'deep']);
  t.is(r.into_self.errno, 'EINVAL');
  t.true(['ENOTEMPTY', 'EEXIST'].includes(r.over_nonempty.errno), JSON.stringify(r.over_nonempty));
  t.is(r.dir_over_file.errno, 'ENOTDIR');
  t.is(r.file_over_dir.errno, 'EISDIR');
  t.deepEqual(r.over_empty, [['empty', 'file', 'full'], 'deep', ['empty', 'file', 'full']]);
  t.is(r.nlink[0], r.nlink[1], 'directory link count as on the backing directory');
});

onBothMounts('renameat2: RENAME_NOREPLACE gives EEXIST and RENAME_EXCHANGE swaps', 'renameat2', async (t, { m, s }) => {
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    res = {}
    with open(m + "/a", "w") as f: f.write("A")
    with open(m + "/b", "w") as f: f.write("B")
    ia, ib = os.stat(m + "/a").st_ino, os.stat(m + "/b").st_ino
    res["noreplace"] = err(lambda: renameat2(m + "/a", m + "/b", RENAME_NOREPLACE))
    res["after_noreplace"] = [read(m + "/a").decode(), read(m + "/b").decode(), read(s + "/a").decode(), read(s + "/b").decode()]
    res["noreplace_free"] = err(lambda: renameat2(m + "/a", m + "/c", RENAME_NOREPLACE))
    res["after_free"] = [os.path.exists(m + "/a"), read(m + "/c").decode(), os.path.exists(s + "/a"), read(s + "/c").decode()]
    res["exchange"] = err(lambda: renameat2(m + "/c", m + "/b", RENAME_EXCHANGE))
    res["after_exchange"] = [read(m + "/c").decode(), read(m + "/b").decode(), read(s + "/c").decode(), read(s + "/b").decode(),
                             os.stat(m + "/b").st_ino == ia, os.stat(m + "/c").st_ino == ib]
    os.mkdir(m + "/dir"); open(m + "/dir/inside", "w").close()
    res["exchange_file_dir"] = err(lambda: renameat2(m + "/c", m + "/dir", RENAME_EXCHANGE))
    res["after_file_dir"] = [st(m + "/c")["type"], os.listdir(m + "/c"), st(m + "/dir")["type"], read(m + "/dir").decode(),
                             st(s + "/c")["type"], st(s + "/dir")["type"]]
    res["exchange_missing"] = err(lambda: renameat2(m + "/b", m + "/missing", RENAME_EXCHANGE))
    res["both_flags"] = err(lambda: renameat2(m + "/b", m + "/dir", RENAME_EXCHANGE | RENAME_NOREPLACE))
    out(res)
  `, [m, s]);
  t.is(r.noreplace.errno, 'EEXIST');
  t.deepEqual(r.after_noreplace, ['A', 'B', 'A', 'B']);
  t.is(r.noreplace_free, 0);
  t.deepEqual(r.after_free, [false, 'A', false, 'A']);
  t.is(r.exchange, 0);
  t.deepEqual(r.after_exchange, ['B', 'A', 'B', 'A', true, true]);
  t.is(r.exchange_file_dir, 0);
  t.deepEqual(r.after_file_dir, ['dir', ['inside'], 'file', 'B', 'dir', 'file']);
  t.is(r.exchange_missing.errno, 'ENOENT');
  t.is(r.both_flags.errno, 'EINVAL');
});

test('two guests on one serve, each renaming in its own directory: each sees its own renames at once', async (t) => {
  // Both mounts of this file (default and writeback) are guests of the same host agent.
  const a = await ex.subdir('own-renames-a');
  const b = await ex.subdir('own-renames-b');
  const script = `
    m, tag = sys.argv[1:3]
    bad = []
    for k in range(20):
        d = "%s/%s%d" % (m, tag, k)
        os.mkdir(d)
        with open(d + "/c", "w") as f: f.write("C")
        os.mkdir(d + "/dir")
        open(d + "/dir/inside", "w").close()
        os.stat(d + "/c"); os.stat(d + "/dir")
        renameat2(d + "/c", d + "/dir", RENAME_EXCHANGE)
        seen = [st(d + "/c").get("type"), err(lambda: os.listdir(d + "/c")), st(d + "/dir").get("type")]
        if seen != ["dir", ["inside"], "file"]:
            bad.append([k, seen])
        os.rename(d + "/dir", d + "/moved")
        seen = [st(d + "/moved").get("type"), st(d + "/dir").get("errno")]
        if seen != ["file", "ENOENT"]:
            bad.append([k, "after rename", seen])
    out(bad)
  `;
  const [ra, rb] = await Promise.all([
    pyJson(script, [a.m, 'a']),
    pyJson(script, [path.join(wb.mnt, b.name), 'b']),
  ]);
  t.deepEqual(ra, [], 'the default mount saw a stale name after its own rename');
  t.deepEqual(rb, [], 'the writeback mount saw a stale name after its own rename');
});

test('directories: mkdir, EEXIST, rmdir, ENOTEMPTY, ENOTDIR, link counts', async (t) => {
  const { m, s } = await ex.subdir('dirs');
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    res = {}
    os.umask(0o022)
    os.mkdir(m + "/d", 0o777)
    res["mode"] = [st(m + "/d")["perm"], st(s + "/d")["perm"], st(m + "/d")["type"]]
    res["mkdir_again"] = err(lambda: os.mkdir(m + "/d"))
    os.mkdir(m + "/d/a"); os.mkdir(m + "/d/b"); open(m + "/d/f", "w").close()
    res["nlink"] = [st(m + "/d")["nlink"], st(s + "/d")["nlink"]]
    res["rmdir_nonempty"] = err(lambda: os.rmdir(m + "/d"))
    res["rmdir_file"] = err(lambda: os.rmdir(m + "/d/f"))
    res["rmdir_missing"] = err(lambda: os.rmdir(m + "/d/none"))
    res["mkdir_under_file"] = err(lambda: os.mkdir(m + "/d/f/x"))
    os.rmdir(m + "/d/a")
    res["after_rmdir"] = [sorted(os.listdir(m + "/d")), sorted(os.listdir(s + "/d")), st(m + "/d")["nlink"], st(s + "/d")["nlink"]]
    os.makedirs(m + "/p/q/r/s")
    res["makedirs"] = os.path.isdir(s + "/p/q/r/s")
    out(res)
  `, [m, s]);
  t.deepEqual(r.mode, [0o755, 0o755, 'dir']);
  t.is(r.mkdir_again.errno, 'EEXIST');
  t.is(r.nlink[0], r.nlink[1]);
  t.is(r.nlink[0], 4, '2 + one per subdirectory');
  t.is(r.rmdir_nonempty.errno, 'ENOTEMPTY');
  t.is(r.rmdir_file.errno, 'ENOTDIR');
  t.is(r.rmdir_missing.errno, 'ENOENT');
  t.is(r.mkdir_under_file.errno, 'ENOTDIR');
  t.deepEqual(r.after_rmdir, [['b', 'f'], ['b', 'f'], 3, 3]);
  t.true(r.makedirs);
  // rm -r of a tree through the mount empties it on the storage side.
  await shOk(`rm -r ${m}/p ${m}/d`);
  t.deepEqual(await fs.readdir(s), []);
});

onBothMounts('hard links: one inode, link counts on both names and on the backing files', 'links', async (t, { m, s }) => {
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    res = {}
    with open(m + "/a", "w") as f: f.write("one")
    os.link(m + "/a", m + "/b")
    os.mkdir(m + "/sub")
    os.link(m + "/b", m + "/sub/c")
    res["nlink"] = [st(m + "/a")["nlink"], st(m + "/b")["nlink"], st(m + "/sub/c")["nlink"],
                    st(s + "/a")["nlink"], st(s + "/b")["nlink"], st(s + "/sub/c")["nlink"]]
    res["same_ino"] = st(m + "/a")["ino"] == st(m + "/b")["ino"] == st(m + "/sub/c")["ino"] == st(s + "/a")["ino"]
    with open(m + "/b", "a") as f: f.write(" two")
    res["shared"] = [read(m + "/a").decode(), read(m + "/sub/c").decode(), read(s + "/a").decode()]
    os.unlink(m + "/a")
    res["after_unlink"] = [st(m + "/b")["nlink"], st(s + "/b")["nlink"], st(m + "/sub/c")["nlink"], st(m + "/a").get("errno")]
    res["link_exists"] = err(lambda: os.link(m + "/b", m + "/sub/c"))
    res["link_dir"] = err(lambda: os.link(m + "/sub", m + "/sub2"))
    res["link_missing"] = err(lambda: os.link(m + "/nope", m + "/x"))
    out(res)
  `, [m, s]);
  t.deepEqual(r.nlink, [3, 3, 3, 3, 3, 3]);
  t.true(r.same_ino);
  t.deepEqual(r.shared, ['one two', 'one two', 'one two']);
  t.deepEqual(r.after_unlink, [2, 2, 2, 'ENOENT']);
  t.is(r.link_exists.errno, 'EEXIST');
  t.is(r.link_dir.errno, 'EPERM');
  t.is(r.link_missing.errno, 'ENOENT');
  // ln(1) and stat(1) agree.
  t.is(await shOk(`cd ${m} && ln b d && stat -c %h b d`), '3\n3\n');
});

test('symlinks: readlink, lstat versus stat, dangling links, O_NOFOLLOW', async (t) => {
  const { m, s } = await ex.subdir('symlinks');
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    res = {}
    with open(m + "/target", "w") as f: f.write("pointed at")
    os.chmod(m + "/target", 0o640)
    os.symlink("target", m + "/rel")
    os.mkdir(m + "/dir"); open(m + "/dir/inside", "w").close()
    os.symlink("dir", m + "/dirlink")
    os.symlink("no/such/thing", m + "/dangling")
    long_target = "x" * 1000 + "/" + "y" * 2000
    os.symlink(long_target, m + "/long")
    res["readlink"] = [os.readlink(m + "/rel"), os.readlink(s + "/rel"), os.readlink(m + "/dangling")]
    res["long"] = os.readlink(m + "/long") == long_target and os.readlink(s + "/long") == long_target
    l, f = lst(m + "/rel"), st(m + "/rel")
    res["lstat"] = [l["type"], l["size"], l["perm"]]
    res["stat"] = [f["type"], f["size"], f["perm"], f["ino"] == st(m + "/target")["ino"]]
    res["through"] = [read(m + "/rel").decode(), sorted(os.listdir(m + "/dirlink"))]
    res["dangling"] = [lst(m + "/dangling")["type"], st(m + "/dangling").get("errno"), err(lambda: read(m + "/dangling")).get("errno")]
    res["nofollow"] = err(lambda: os.open(m + "/rel", os.O_RDONLY | os.O_NOFOLLOW))
    res["readlink_file"] = err(lambda: os.readlink(m + "/target"))
    res["exists"] = err(lambda: os.symlink("x", m + "/rel"))
    res["backing_type"] = lst(s + "/rel")["type"]
    # writing through the link changes the target
    with open(m + "/rel", "a") as f: f.write("!")
    res["written"] = read(s + "/target").decode()
    out(res)
  `, [m, s]);
  t.deepEqual(r.readlink, ['target', 'target', 'no/such/thing']);
  t.true(r.long);
  t.deepEqual(r.lstat, ['symlink', 'target'.length, 0o777]);
  t.deepEqual(r.stat, ['file', 'pointed at'.length, 0o640, true]);
  t.deepEqual(r.through, ['pointed at', ['inside']]);
  t.deepEqual(r.dangling, ['symlink', 'ENOENT', 'ENOENT']);
  t.is(r.nofollow.errno, 'ELOOP');
  t.is(r.readlink_file.errno, 'EINVAL');
  t.is(r.exists.errno, 'EEXIST');
  t.is(r.backing_type, 'symlink');
  t.is(r.written, 'pointed at!');
  t.is(await shOk(`ls -l ${m}/rel | sed 's/.* -> //'`), 'target\n');
});

onBothMounts('chmod, chown and utimensat with nanoseconds, on the mount and the backing file', 'attrs', async (t, { m, s }) => {
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    res = {}
    open(m + "/f", "w").close()
    os.chmod(m + "/f", 0o751)
    res["chmod"] = [st(m + "/f")["perm"], st(s + "/f")["perm"]]
    os.chmod(m + "/f", 0o4755 | 0o2000)
    res["setid"] = [st(m + "/f")["perm"], st(s + "/f")["perm"]]
    os.mkdir(m + "/sticky"); os.chmod(m + "/sticky", 0o1777)
    res["sticky"] = [st(m + "/sticky")["perm"], st(s + "/sticky")["perm"]]
    os.chown(m + "/f", 1234, 5678)
    res["chown"] = [st(m + "/f")["uid"], st(m + "/f")["gid"], st(s + "/f")["uid"], st(s + "/f")["gid"]]
    os.chown(m + "/f", -1, 42)                           # group only
    res["chgrp"] = [st(m + "/f")["uid"], st(m + "/f")["gid"], st(s + "/f")["gid"]]
    times = [(1234567890123456789, 1500000000987654321),  # odd nanoseconds
             (-1000000000123, -5000000000456),            # before 1970
             (2**33 * 10**9 + 7, 2**33 * 10**9 + 999999999)]  # after 2038 (and 2106)
    res["utime"] = []
    for a, mt in times:
        os.utime(m + "/f", ns=(a, mt))
        res["utime"].append([st(m + "/f")["atime_ns"], st(m + "/f")["mtime_ns"], st(s + "/f")["atime_ns"], st(s + "/f")["mtime_ns"]])
    res["expected"] = times
    before = time.time_ns()
    os.utime(m + "/f")                                    # now
    after = time.time_ns()
    res["now"] = [before - 10**9 <= st(m + "/f")["mtime_ns"] <= after + 10**9, st(m + "/f")["mtime_ns"] == st(s + "/f")["mtime_ns"]]
    # a symlink's own times and owner (utimensat/fchownat with AT_SYMLINK_NOFOLLOW)
    os.symlink("f", m + "/l")
    target_mtime = st(s + "/f")["mtime_ns"]
    os.utime(m + "/l", ns=(1000000001, 2000000002), follow_symlinks=False)
    os.chown(m + "/l", 77, 88, follow_symlinks=False)
    res["link"] = [lst(m + "/l")["mtime_ns"], lst(s + "/l")["mtime_ns"], lst(s + "/l")["uid"], lst(m + "/l")["gid"],
                   st(s + "/f")["mtime_ns"] == target_mtime, st(s + "/f")["uid"]]
    # a directory's times
    os.utime(m + "/sticky", ns=(3000000003, 4000000004))
    res["dir"] = [st(m + "/sticky")["mtime_ns"], st(s + "/sticky")["mtime_ns"]]
    out(res)
  `, [m, s]);
  t.deepEqual(r.chmod, [0o751, 0o751]);
  t.deepEqual(r.setid, [0o6755, 0o6755]);
  t.deepEqual(r.sticky, [0o1777, 0o1777]);
  t.deepEqual(r.chown, [1234, 5678, 1234, 5678]);
  t.deepEqual(r.chgrp, [1234, 42, 42]);
  for (let i = 0; i < r.expected.length; i++) {
    const [a, mt] = r.expected[i];
    t.deepEqual(r.utime[i], [a, mt, a, mt], `utime(ns=(${a}, ${mt}))`);
  }
  t.deepEqual(r.now, [true, true]);
  t.deepEqual(r.link, [2000000002, 2000000002, 77, 88, true, 1234]);
  t.deepEqual(r.dir, [4000000004, 4000000004]);
  // touch -m leaves atime alone (UTIME_OMIT), touch -a leaves mtime alone.
  const out = await shOk(`cd ${m} && touch -d @100.25 f && touch -m -d @200.5 f && stat -c '%X %Y' f && touch -a -d @300 f && stat -c '%X %Y' f`);
  t.is(out, '100 200\n300 200\n');
  const b = await fs.stat(path.join(s, 'f'), { bigint: true });
  t.is(b.atimeNs, 300_000_000_000n);
  t.is(b.mtimeNs, 200_500_000_000n);
});

test('xattrs: set, get, list, create/replace flags, remove; visible on the backing file', async (t) => {
  const { m, s } = await ex.subdir('xattr');
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    res = {}
    open(m + "/f", "w").close()
    os.mkdir(m + "/d")
    value = bytes(range(256)) * 4                          # binary, with NULs, 1 KiB
    os.setxattr(m + "/f", "user.bin", value)
    os.setxattr(m + "/f", "user.text", b"hello")
    os.setxattr(m + "/f", "user.empty", b"")
    os.setxattr(m + "/d", "user.ondir", b"dir value")
    res["get"] = [os.getxattr(m + "/f", "user.bin") == value, os.getxattr(m + "/f", "user.text").decode(),
                  os.getxattr(m + "/f", "user.empty").decode(), os.getxattr(m + "/d", "user.ondir").decode()]
    res["backing"] = [os.getxattr(s + "/f", "user.bin") == value, os.getxattr(s + "/d", "user.ondir").decode()]
    res["list"] = sorted(os.listxattr(m + "/f"))
    res["create_exists"] = err(lambda: os.setxattr(m + "/f", "user.text", b"x", os.XATTR_CREATE))
    res["replace_missing"] = err(lambda: os.setxattr(m + "/f", "user.none", b"x", os.XATTR_REPLACE))
    os.setxattr(m + "/f", "user.text", b"replaced", os.XATTR_REPLACE)
    res["replaced"] = [os.getxattr(m + "/f", "user.text").decode(), os.getxattr(s + "/f", "user.text").decode()]
    res["get_missing"] = err(lambda: os.getxattr(m + "/f", "user.none"))
    os.removexattr(m + "/f", "user.text")
    res["removed"] = [sorted(os.listxattr(m + "/f")), sorted(os.listxattr(s + "/f")), err(lambda: os.getxattr(m + "/f", "user.text"))]
    res["remove_missing"] = err(lambda: os.removexattr(m + "/f", "user.text"))
    res["trusted"] = err(lambda: (os.setxattr(m + "/f", "trusted.t", b"root only"), os.getxattr(s + "/f", "trusted.t").decode())[1])
    # a value set on the storage side is read through the mount
    os.setxattr(s + "/f", "user.fromhost", b"host")
    res["fromhost"] = os.getxattr(m + "/f", "user.fromhost").decode()
    out(res)
  `, [m, s]);
  t.deepEqual(r.get, [true, 'hello', '', 'dir value']);
  t.deepEqual(r.backing, [true, 'dir value']);
  t.deepEqual(r.list, ['user.bin', 'user.empty', 'user.text']);
  t.is(r.create_exists.errno, 'EEXIST');
  t.is(r.replace_missing.errno, 'ENODATA');
  t.deepEqual(r.replaced, ['replaced', 'replaced']);
  t.is(r.get_missing.errno, 'ENODATA');
  t.deepEqual(r.removed.slice(0, 2), [['user.bin', 'user.empty'], ['user.bin', 'user.empty']]);
  t.is(r.removed[2].errno, 'ENODATA');
  t.is(r.remove_missing.errno, 'ENODATA');
  t.is(r.trusted, 'root only');
  t.is(r.fromhost, 'host');
  // setfattr/getfattr(1) as well.
  const out = await shOk(`cd ${m} && setfattr -n user.shell -v '"quoted value"' f && getfattr --only-values -n user.shell f`);
  t.is(out, 'quoted value');
});

test('statfs matches the backing file system', async (t) => {
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    a, b = os.statvfs(m), os.statvfs(s)
    out({"m": [a.f_bsize, a.f_frsize, a.f_blocks, a.f_bfree, a.f_bavail, a.f_files, a.f_ffree, a.f_namemax],
         "s": [b.f_bsize, b.f_frsize, b.f_blocks, b.f_bfree, b.f_bavail, b.f_files, b.f_ffree, b.f_namemax]})
  `, [ex.mnt, ex.storage]);
  const [bsize, frsize, blocks, bfree, bavail, files, ffree, namemax] = r.m;
  const [sbsize, sfrsize, sblocks, sbfree, sbavail, sfiles, sffree, snamemax] = r.s;
  t.is(frsize, sfrsize);
  t.is(blocks, sblocks);
  t.is(files, sfiles);
  t.is(namemax, snamemax);
  t.is(bsize, sbsize);
  // Free space moves while other tests write: within 1% of the size (and 1% of the inodes).
  t.true(Math.abs(bfree - sbfree) <= sblocks / 100, `bfree ${bfree} vs ${sbfree}`);
  t.true(Math.abs(bavail - sbavail) <= sblocks / 100, `bavail ${bavail} vs ${sbavail}`);
  t.true(Math.abs(ffree - sffree) <= sfiles / 100, `ffree ${ffree} vs ${sffree}`);
  // df(1) shows the mount with the backing file system's size.
  const df = (await shOk(`df -k --output=size ${ex.mnt} ${ex.storage} | tail -n 2`)).trim().split(/\s+/).map(Number);
  t.is(df[0], df[1]);
});

test('a 10,000-entry directory is listed completely', async (t) => {
  t.timeout(5 * 60_000); // 5,000 creates through the mount: slow on a loaded machine
  const { m, s } = await ex.subdir('big');
  // Half the entries created through the mount, half on the storage side; names of varied lengths
  // (up to 255 bytes) so listings take many readdir batches.
  const names: string[] = [];
  for (let i = 0; i < 10_000; i++) {
    const base = `e${String(i).padStart(5, '0')}`;
    names.push(i % 97 === 0 ? base + '-'.repeat(255 - base.length) : i % 3 === 0 ? `${base}.with.some.longer.name.${i}` : base);
  }
  const viaMount = names.filter((_, i) => i % 2 === 0);
  const viaStorage = names.filter((_, i) => i % 2 === 1);
  for (let i = 0; i < viaStorage.length; i += 500) {
    await Promise.all(viaStorage.slice(i, i + 500).map((n) => fs.writeFile(path.join(s, n), '')));
  }
  await pyJson(`
    d = sys.argv[1]
    for n in sys.stdin.read().split("\\n"):
        if n:
            os.close(os.open(d + "/" + n, os.O_CREAT | os.O_WRONLY, 0o644))
    out(True)
  `, [m], { input: viaMount.join('\n') });
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    names = os.listdir(m)
    with os.scandir(m) as it:
        kinds = {e.name: e.is_file(follow_symlinks=False) for e in it}
    out({"names": sorted(names), "n": len(names), "scandir": len(kinds), "all_files": all(kinds.values()),
         "backing": len(os.listdir(s))})
  `, [m, s]);
  t.is(r.n, 10_000);
  t.is(r.scandir, 10_000);
  t.true(r.all_files);
  t.is(r.backing, 10_000);
  t.deepEqual(r.names, [...names].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
  // ls -f lists "." and ".." too; find sees every file.
  t.is((await shOk(`ls -f ${m} | wc -l`)).trim(), '10002');
  t.is((await shOk(`find ${m} -type f | wc -l`)).trim(), '10000');
  // rm of all of them through the mount leaves the directory empty on both sides.
  await shOk(`find ${m} -type f -delete`);
  t.deepEqual(await fs.readdir(s), []);
  t.is((await shOk(`ls -A ${m} | wc -l`)).trim(), '0');
});

onBothMounts('mmap writes are in the backing file after msync', 'mmap', async (t, { m, s }) => {
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    with open(m + "/f", "wb") as f: f.write(bytes(3 * 4096))
    fd = os.open(m + "/f", os.O_RDWR)
    mp = mmap.mmap(fd, 3 * 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    mp[10:19] = b"FIRSTPAGE"
    mp[2 * 4096 + 100:2 * 4096 + 109] = b"LASTPAGE!"
    mp.flush()                                              # msync(MS_SYNC)
    backing = read(s + "/f")                                # the mapping is still open
    res = {"first": backing[10:19].decode(), "last": backing[2 * 4096 + 100:2 * 4096 + 109].decode(),
           "rest_zero": backing[:10] == bytes(10) and backing[4096:8192] == bytes(4096), "size": len(backing)}
    mp.close(); os.close(fd)
    # a read-only mapping sees what is in the file
    fd = os.open(m + "/f", os.O_RDONLY)
    mp = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ)
    res["mapped_read"] = mp[10:19].decode()
    mp.close(); os.close(fd)
    out(res)
  `, [m, s]);
  t.deepEqual(r, { first: 'FIRSTPAGE', last: 'LASTPAGE!', rest_zero: true, size: 3 * 4096, mapped_read: 'FIRSTPAGE' });
});

test('fsync: data is in the backing file before close, also with the writeback cache', async (t) => {
  const { m, s, name } = await ex.subdir('fsync');
  // On the writeback mount writes may stay in the guest's page cache until fsync, which must push
  // them to the storage.
  // Watch the host agent's syscalls: "in the backing file" could be the host's page cache; fsync
  // must reach the storage as fsync/fdatasync of the backing file.
  const trace = await traceHost(['fsync', 'fdatasync']);
  const r = await pyJson(`
    m, wbm, s = sys.argv[1:4]
    res = {}
    for label, d in (("default", m), ("writeback", wbm)):
        fd = os.open(d + "/" + label, os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, b"durable " * 1000)
        os.fsync(fd)
        res[label] = [len(read(s + "/" + label)), read(s + "/" + label)[:8].decode()]
        os.pwrite(fd, b"DATASYNC", 0)
        os.fdatasync(fd)
        res[label].append(read(s + "/" + label)[:8].decode())
        os.close(fd)
    out(res)
  `, [m, path.join(wb.mnt, name), s]);
  t.deepEqual(r.default, [8000, 'durable ', 'DATASYNC']);
  t.deepEqual(r.writeback, [8000, 'durable ', 'DATASYNC']);
  if (trace) {
    const calls = await trace.stop();
    // Two files, each fsync'd and fdatasync'd (other tests may add more).
    t.true((calls.match(/\bfsync\(\d+\)\s+= 0/g) ?? []).length >= 2, calls);
    t.true((calls.match(/\bfdatasync\(\d+\)\s+= 0/g) ?? []).length >= 2, calls);
  } else {
    t.log('strace is not installed: not checking the host\'s fsync calls');
  }
  // sync(1) of the file works too (fsync through coreutils).
  await shOk(`echo synced > ${wb.mnt}/${name}/viasync && sync ${wb.mnt}/${name}/viasync`);
  t.is(await fs.readFile(path.join(s, 'viasync'), 'utf8'), 'synced\n');
});

onBothMounts('fallocate, punch hole, SEEK_DATA and SEEK_HOLE', 'fallocate', async (t, { m, s, which }) => {
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    res = {}
    fd = os.open(m + "/f", os.O_CREAT | os.O_RDWR, 0o644)
    os.posix_fallocate(fd, 0, 1 << 20)
    res["allocated"] = [os.fstat(fd).st_size, os.fstat(fd).st_blocks, st(s + "/f")["size"], st(s + "/f")["blocks"]]
    os.pwrite(fd, b"A" * (1 << 20), 0)
    os.fsync(fd)
    blocks_before = st(s + "/f")["blocks"]
    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 65536, 131072)
    res["punched"] = [os.fstat(fd).st_size, st(s + "/f")["size"], blocks_before - st(s + "/f")["blocks"],
                      st(m + "/f")["blocks"] == st(s + "/f")["blocks"]]
    res["hole_zero"] = os.pread(fd, 131072, 65536) == bytes(131072)
    res["around"] = [os.pread(fd, 65536, 0) == b"A" * 65536, os.pread(fd, 65536, 196608) == b"A" * 65536]
    res["seek"] = [os.lseek(fd, 0, os.SEEK_HOLE), os.lseek(fd, 65536, os.SEEK_DATA), os.lseek(fd, 0, os.SEEK_DATA),
                   os.lseek(fd, 196608, os.SEEK_HOLE)]
    res["seek_data_eof"] = err(lambda: os.lseek(fd, 2 << 20, os.SEEK_DATA))
    # KEEP_SIZE beyond the end: blocks grow, size does not
    fallocate(fd, FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20)
    res["keep_size"] = [os.fstat(fd).st_size, st(s + "/f")["size"], st(s + "/f")["blocks"] > blocks_before]
    os.close(fd)
    out(res)
  `, [m, s]);
  t.is(r.allocated[0], 1 << 20);
  t.true(r.allocated[1] >= 2048, `st_blocks ${r.allocated[1]} after fallocate of 1 MiB`);
  t.deepEqual(r.allocated.slice(2), [1 << 20, r.allocated[1]]);
  t.deepEqual(r.punched, [1 << 20, 1 << 20, 256, true]);
  t.true(r.hole_zero);
  t.deepEqual(r.around, [true, true]);
  // SEEK_HOLE from 0, SEEK_DATA from the hole, SEEK_DATA from 0, SEEK_HOLE after the hole.
  const [hole0, dataAfterHole, data0, holeAfter] = r.seek;
  t.true(seekAnswers(which, 65536, 1 << 20).includes(hole0), `SEEK_HOLE 0 -> ${hole0}`);
  t.true(seekAnswers(which, 196608, 65536).includes(dataAfterHole), `SEEK_DATA 65536 -> ${dataAfterHole}`);
  t.is(data0, 0);
  t.is(holeAfter, 1 << 20);
  t.is(r.seek_data_eof.errno, 'ENXIO');
  t.deepEqual(r.keep_size, [1 << 20, 1 << 20, true]);
  // fallocate(1) --punch-hole and --zero-range work through the mount too.
  await shOk(`cd ${m} && head -c 1048576 /dev/zero | tr '\\0' B > g && fallocate -p -o 4096 -l 8192 g && fallocate -z -o 65536 -l 4096 g`);
  const g = await fs.readFile(path.join(s, 'g'));
  t.is(g.length, 1 << 20);
  t.true(g.subarray(4096, 12288).equals(Buffer.alloc(8192)));
  t.true(g.subarray(65536, 69632).equals(Buffer.alloc(4096)));
  t.is(g[4095], 0x42);
  t.is(g[12288], 0x42);
  t.is(g[65535], 0x42);
  t.is(g[69632], 0x42);
});

onBothMounts('copy_file_range copies the right bytes, whole and in ranges, on the host', 'cfr', async (t, { m, s }) => {
  // Done on the server side: the host copies with copy_file_range(2), the bytes never cross.
  const trace = await traceHost(['copy_file_range']);
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    data = os.urandom(3 * 1024 * 1024 + 12345)
    with open(m + "/src", "wb") as f: f.write(data)
    fi = os.open(m + "/src", os.O_RDONLY)
    fo = os.open(m + "/dst", os.O_CREAT | os.O_WRONLY, 0o644)
    total = 0
    while total < len(data):
        n = os.copy_file_range(fi, fo, len(data) - total)
        if n == 0: break
        total += n
    os.close(fo)
    res = {"total": total, "whole": read(m + "/dst") == data, "backing": read(s + "/dst") == data}
    # a range at offsets, into the middle of an existing file
    with open(m + "/mid", "wb") as f: f.write(b"." * 100000)
    fo = os.open(m + "/mid", os.O_WRONLY)
    n = os.copy_file_range(fi, fo, 5000, 1000000, 20000)
    os.close(fo); os.close(fi)
    mid = read(m + "/mid")
    res["range"] = [n, len(mid), mid[:20000] == b"." * 20000, mid[20000:25000] == data[1000000:1005000], mid[25000:] == b"." * 75000,
                    read(s + "/mid") == mid]
    out(res)
  `, [m, s]);
  t.is(r.total, 3 * 1024 * 1024 + 12345);
  t.true(r.whole);
  t.true(r.backing);
  t.deepEqual(r.range, [5000, 100000, true, true, true, true]);
  if (trace) {
    const calls = await trace.stop();
    t.regex(calls, /copy_file_range\(\d+, \[1000000\], \d+, \[20000\], 5000, 0\) = 5000/, calls);
  } else {
    t.log('strace is not installed: not checking that the host did the copy');
  }
  // cp(1) (which uses copy_file_range where it can) gives an identical file.
  await shOk(`cp ${m}/src ${m}/cp && cmp ${m}/src ${m}/cp`);
});

test('FIFOs and unix sockets: created through the mount, of the right type, and usable', async (t) => {
  const { m, s } = await ex.subdir('special');
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    res = {}
    os.mkfifo(m + "/fifo", 0o644)
    res["fifo"] = [st(m + "/fifo")["type"], st(s + "/fifo")["type"], st(m + "/fifo")["perm"]]
    pid = os.fork()
    if pid == 0:
        with open(m + "/fifo", "w") as f: f.write("through the fifo")
        os._exit(0)
    with open(m + "/fifo") as f: res["fifo_data"] = f.read()
    os.waitpid(pid, 0)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(m + "/sock")
    srv.listen(1)
    res["sock"] = [st(m + "/sock")["type"], st(s + "/sock")["type"]]
    cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cli.connect(m + "/sock")
    conn, _ = srv.accept()
    cli.sendall(b"ping")
    res["sock_data"] = conn.recv(10).decode()
    for x in (conn, cli, srv): x.close()
    res["ls"] = sorted(os.listdir(m))
    out(res)
  `, [m, s]);
  t.deepEqual(r.fifo, ['fifo', 'fifo', 0o644]);
  t.is(r.fifo_data, 'through the fifo');
  t.deepEqual(r.sock, ['socket', 'socket']);
  t.is(r.sock_data, 'ping');
  t.deepEqual(r.ls, ['fifo', 'sock']);
  // The shell's view: ls -l type letters.
  t.is(await shOk(`cd ${m} && stat -c '%F' fifo sock`), 'fifo\nsocket\n');
});

test('errno: ENAMETOOLONG, ENOENT, EEXIST, ENOTDIR, EISDIR', async (t) => {
  const { m, s } = await ex.subdir('errno');
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    res = {}
    n255, n256 = "n" * 255, "n" * 256
    res["name255"] = [err(lambda: os.close(os.open(m + "/" + n255, os.O_CREAT | os.O_WRONLY, 0o644))), os.path.exists(s + "/" + n255)]
    res["create256"] = err(lambda: os.open(m + "/" + n256, os.O_CREAT | os.O_WRONLY, 0o644))
    res["mkdir256"] = err(lambda: os.mkdir(m + "/" + n256))
    res["stat256"] = err(lambda: os.stat(m + "/" + n256))
    res["symlink256"] = err(lambda: os.symlink("x", m + "/" + n256))
    open(m + "/file", "w").close()
    os.mkdir(m + "/dir")
    res["rename256"] = err(lambda: os.rename(m + "/file", m + "/" + n256))
    res["open_missing"] = err(lambda: os.open(m + "/missing", os.O_RDONLY))
    res["create_in_missing"] = err(lambda: os.open(m + "/missing/f", os.O_CREAT | os.O_WRONLY, 0o644))
    res["unlink_missing"] = err(lambda: os.unlink(m + "/missing"))
    res["excl"] = err(lambda: os.open(m + "/file", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    res["excl_dir"] = err(lambda: os.open(m + "/dir", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    res["mkdir_exists"] = err(lambda: os.mkdir(m + "/file"))
    res["enotdir_stat"] = err(lambda: os.stat(m + "/file/x"))
    res["enotdir_create"] = err(lambda: os.open(m + "/file/x", os.O_CREAT | os.O_WRONLY, 0o644))
    res["enotdir_listdir"] = err(lambda: os.listdir(m + "/file"))
    res["enotdir_opendir"] = err(lambda: os.open(m + "/file", os.O_RDONLY | os.O_DIRECTORY))
    res["eisdir_open_w"] = err(lambda: os.open(m + "/dir", os.O_WRONLY))
    res["eisdir_open_rw"] = err(lambda: os.open(m + "/dir", os.O_RDWR))
    res["eisdir_unlink"] = err(lambda: os.unlink(m + "/dir"))
    res["eisdir_truncate"] = err(lambda: os.truncate(m + "/dir", 0))
    fd = os.open(m + "/dir", os.O_RDONLY)
    res["eisdir_read"] = err(lambda: os.read(fd, 10))
    os.close(fd)
    res["left"] = sorted(x if len(x) < 20 else "n*%d" % len(x) for x in os.listdir(s))
    out(res)
  `, [m, s]);
  t.deepEqual(r.name255, [null, true]);
  for (const k of ['create256', 'mkdir256', 'stat256', 'symlink256', 'rename256']) t.is(r[k].errno, 'ENAMETOOLONG', k);
  for (const k of ['open_missing', 'create_in_missing', 'unlink_missing']) t.is(r[k].errno, 'ENOENT', k);
  for (const k of ['excl', 'excl_dir', 'mkdir_exists']) t.is(r[k].errno, 'EEXIST', k);
  for (const k of ['enotdir_stat', 'enotdir_create', 'enotdir_listdir', 'enotdir_opendir']) t.is(r[k].errno, 'ENOTDIR', k);
  for (const k of ['eisdir_open_w', 'eisdir_open_rw', 'eisdir_unlink', 'eisdir_truncate', 'eisdir_read']) t.is(r[k].errno, 'EISDIR', k);
  t.deepEqual(r.left, ['dir', 'file', 'n*255']);
  // The shell's messages carry the same errors.
  const c = await sh(`cat ${m}/missing; mkdir ${m}/dir; cat ${m}/file/x; echo > ${m}/dir`);
  t.regex(c.stderr, /missing: No such file or directory/);
  t.regex(c.stderr, /dir'?: File exists/);
  t.regex(c.stderr, /file\/x: Not a directory/);
  t.regex(c.stderr, /dir: Is a directory/);
});

onBothMounts('several processes writing at once: separate files and disjoint ranges of one file', 'parallel', async (t, { m, s }) => {
  const src = await fs.mkdtemp(path.join(ex.work, 'parallel-src-'));
  t.teardown(() => fs.rm(src, { recursive: true, force: true }));
  const sums: string[] = [];
  for (let i = 0; i < 8; i++) {
    const data = crypto.randomBytes(4 * 1024 * 1024 + i * 4099);
    await fs.writeFile(path.join(src, `p${i}`), data);
    sums.push(crypto.createHash('sha256').update(data).digest('hex'));
  }
  const parts: Buffer[] = [];
  for (let i = 0; i < 4; i++) {
    parts.push(crypto.randomBytes(8 * 1024 * 1024));
    await fs.writeFile(path.join(src, `part${i}`), parts[i]);
  }
  // 8 dd into 8 files and 4 dd into one file at disjoint 8 MiB ranges, all at once, small blocks
  // so the requests interleave.
  await shOk(`
    set -e
    pids=""
    for i in 0 1 2 3 4 5 6 7; do dd if=${src}/p$i of=${m}/p$i bs=64k status=none & pids="$pids $!"; done
    for i in 0 1 2 3; do dd if=${src}/part$i of=${m}/shared bs=32k seek=$((i * 256)) conv=notrunc status=none & pids="$pids $!"; done
    for p in $pids; do wait $p; done`);
  const inMount = (await shOk(`cd ${m} && sha256sum p0 p1 p2 p3 p4 p5 p6 p7 shared`)).trim().split('\n').map((l) => l.split(' ')[0]);
  const shared = crypto.createHash('sha256').update(Buffer.concat(parts)).digest('hex');
  t.deepEqual(inMount, [...sums, shared]);
  for (let i = 0; i < 8; i++) {
    t.is(crypto.createHash('sha256').update(await fs.readFile(path.join(s, `p${i}`))).digest('hex'), sums[i], `backing p${i}`);
  }
  t.is(crypto.createHash('sha256').update(await fs.readFile(path.join(s, 'shared'))).digest('hex'), shared);
  // And readers at the same time as writers: 4 readers of the shared file while 4 writers append
  // to their own files.
  const out = await shOk(`
    for i in 0 1 2 3; do (sha256sum < ${m}/shared > ${src}/r$i) & done
    for i in 0 1 2 3; do (for j in $(seq 200); do echo "$i $j" >> ${m}/log$i; done) & done
    wait
    cat ${src}/r0 ${src}/r1 ${src}/r2 ${src}/r3 | sort -u | wc -l
    cat ${m}/log0 ${m}/log1 ${m}/log2 ${m}/log3 | wc -l`);
  t.is(out, '1\n800\n');
});

test('device nodes created by root: type and rdev as asked, on the storage too (the mount is nodev)', async (t) => {
  const { m, s } = await ex.subdir('mknod');
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    os.mknod(m + "/chr", 0o20600, os.makedev(1, 3))
    os.mknod(m + "/blk", 0o60600, os.makedev(7, 42))
    os.mknod(m + "/reg", 0o100640)
    res = {n: [st(m + "/" + n)["type"], st(s + "/" + n)["type"], st(m + "/" + n)["rdev"], st(s + "/" + n)["rdev"]] for n in ("chr", "blk", "reg")}
    res["dev"] = [os.makedev(1, 3), os.makedev(7, 42)]
    res["open_chr"] = err(lambda: os.open(m + "/chr", os.O_RDONLY))   # nodev: the guest kernel refuses
    res["reg_perm"] = st(s + "/reg")["perm"]
    out(res)
  `, [m, s]);
  t.deepEqual(r.chr, ['chr', 'chr', r.dev[0], r.dev[0]]);
  t.deepEqual(r.blk, ['blk', 'blk', r.dev[1], r.dev[1]]);
  t.deepEqual(r.reg, ['file', 'file', 0, 0]);
  t.is(r.reg_perm, 0o640);
  t.is(r.open_chr.errno, 'EACCES');
});

test('odd names (non-UTF-8 bytes, newline, spaces, unicode, glob characters) round-trip as bytes', async (t) => {
  const { m, s } = await ex.subdir('names');
  const r = await pyJson(`
    m, s = [os.fsencode(x) for x in sys.argv[1:3]]
    names = [b"\\xff\\xfe-latin1", "ünïcödé ☃".encode(), b"with space", b"new\\nline", b"back\\\\slash", b"-dash", b"?*[glob]", b".hidden", b"..dots", b"trailing."]
    for n in names:
        with open(m + b"/" + n, "wb") as f: f.write(n)
    out({"mount": sorted(x.hex() for x in os.listdir(m)), "backing": sorted(x.hex() for x in os.listdir(s)),
         "expected": sorted(n.hex() for n in names),
         "contents": all(read(s + b"/" + n) == n and read(m + b"/" + n) == n for n in names)})
  `, [m, s]);
  t.deepEqual(r.mount, r.expected);
  t.deepEqual(r.backing, r.expected);
  t.true(r.contents);
});

onBothMounts('an open file keeps working after unlink; O_SYNC and O_APPEND from several processes', 'openfiles', async (t, { m, s }) => {
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    res = {}
    fd = os.open(m + "/gone", os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, b"abc")
    os.unlink(m + "/gone")
    os.pwrite(fd, b"XYZ", 3)
    res["unlinked"] = [os.pread(fd, 10, 0).decode(), os.fstat(fd).st_nlink, os.fstat(fd).st_size, os.path.exists(m + "/gone"), os.path.exists(s + "/gone")]
    os.close(fd)
    fd = os.open(m + "/sync", os.O_CREAT | os.O_WRONLY | os.O_SYNC, 0o644)
    os.write(fd, b"synced")
    res["osync"] = read(s + "/sync").decode()
    os.close(fd)
    out(res)
  `, [m, s]);
  t.deepEqual(r.unlinked, ['abcXYZ', 0, 6, false, false]);
  t.is(r.osync, 'synced');
  // 4 shells appending 300 lines each to one file: every line arrives once, none torn.
  await shOk(`for i in 1 2 3 4; do (for j in $(seq 300); do echo "writer $i line $j padding-padding" >> ${m}/log; done) & done; wait`);
  const lines = (await fs.readFile(path.join(s, 'log'), 'utf8')).trimEnd().split('\n');
  t.is(lines.length, 1200);
  t.is(new Set(lines).size, 1200);
  t.true(lines.every((l) => /^writer [1-4] line \d+ padding-padding$/.test(l)));
});

test('paths longer than PATH_MAX, walked one directory at a time', async (t) => {
  const { m, s } = await ex.subdir('deep');
  const r = await pyJson(`
    m = sys.argv[1]
    os.chdir(m)
    name = "x" * 200
    for i in range(40):
        os.mkdir(name)
        os.chdir(name)
    with open("leaf", "w") as f: f.write("leaf")
    out({"cwd": len(os.getcwd()), "leaf": read("leaf").decode()})
  `, [m]);
  t.true(r.cwd > 8000);
  t.is(r.leaf, 'leaf');
  t.teardown(() => sh(`rm -rf ${s}/x*`));
  t.is((await shOk(`cd ${s} && find . -name leaf`)).trim(), `./${`${'x'.repeat(200)}/`.repeat(40)}leaf`);
  await shOk(`rm -r ${m}/x*`);
  t.deepEqual(await fs.readdir(s), []);
});

test('the host holds nodes only while the guest kernel knows them (lookup counts and forget)', async (t) => {
  // A mount of its own, so that other tests do not move the host's fd count.
  const N = 2000;
  const own = await startExport({
    populate: async (dir) => {
      await fs.mkdir(path.join(dir, 'many'));
      for (let i = 0; i < N; i += 500) {
        await Promise.all(Array.from({ length: 500 }, (_, j) => fs.writeFile(path.join(dir, 'many', `f${i + j}`), `${i + j}`)));
      }
    },
  });
  let holder: ReturnType<typeof spawn> | undefined;
  t.teardown(async () => {
    // The guest process first: its open files would keep the mount busy.
    if (holder && holder.exitCode === null) {
      holder.kill('SIGKILL');
      await new Promise((resolve) => holder!.once('exit', resolve));
    }
    await own.cleanup();
  });
  const fds = async () => (await fs.readdir(`/proc/${own.host.proc.pid}/fd`)).length;
  await shOk(`ls ${own.mnt} > /dev/null`);
  const baseline = await fds();
  // A process in the guest holds all N files open: the kernel cannot forget those inodes (whatever
  // else drops caches meanwhile), so the host must hold a node and a handle for each.
  holder = spawn('setpriv', ['--pdeathsig=SIGKILL', PYTHON, '-c', dedent(`
    import os, sys, resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, ${N} + 100)), hard))
    fds = [os.open(sys.argv[1] + "/f%d" % i, os.O_RDONLY) for i in range(${N})]
    ok = all(os.pread(fd, 10, 0) == str(i).encode() for i, fd in enumerate(fds))
    print("open" if ok else "bad contents", flush=True)
    sys.stdin.readline()
    for fd in fds: os.close(fd)
    print("closed", flush=True)
  `), path.join(own.mnt, 'many')], { stdio: ['pipe', 'pipe', 'inherit'] });
  let said = '';
  holder.stdout!.on('data', (c: Buffer) => (said += c.toString()));
  await waitFor(() => said.includes('open') || said.includes('bad') || holder.exitCode !== null, 'the guest process to open the files', { timeoutMs: 60_000 });
  t.is(said.trim(), 'open');
  const held = await fds();
  // (a node and a handle each; a few fds of the agent's own come and go)
  t.true(held >= baseline + 2 * N - 20, `host fds: ${baseline} before, ${held} with ${N} files open in the guest`);
  holder.stdin!.write('\n');
  await waitFor(() => said.includes('closed'), 'the guest process to close the files');
  // Closed: the handles go at once.
  await waitFor(async () => (await fds()) <= held - N, 'the host to release the handles', {
    details: async () => `host fds: ${await fds()}, with the files open ${held}`,
  });
  // The kernel drops what it does not use and sends FORGET: the host lets go of those nodes.
  await fs.writeFile('/proc/sys/vm/drop_caches', '2');
  await waitFor(async () => (await fds()) < baseline + 50, 'the host to release the forgotten nodes', {
    details: async () => `host fds: ${await fds()}, baseline ${baseline}`,
  });
  // ...and looks them up again when asked.
  t.is(await shOk(`cat ${own.mnt}/many/f1999; stat -c %s ${own.mnt}/many/f1234`), '19994\n');
});

// With -o writeback, data written a moment ago may still be only in the guest's page cache; the
// answers must include it (a host that answered from the backing file alone said ENXIO here).
// On writeback mounts the adapter answers lseek ENOSYS, so the kernel uses its own view.
test('SEEK_DATA and SEEK_HOLE see data written a moment ago, also on the writeback mount', async (t) => {
  const { name } = await ex.subdir('seek-fresh');
  const r = await pyJson(`
    res = {}
    for label, d in (("default", sys.argv[1]), ("writeback", sys.argv[2])):
        fd = os.open(d + "/f", os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
        os.write(fd, b"D" * 8192)
        res[label] = [err(lambda: os.lseek(fd, 0, os.SEEK_DATA)), err(lambda: os.lseek(fd, 0, os.SEEK_HOLE)), os.fstat(fd).st_size]
        os.close(fd)
    out(res)
  `, [path.join(ex.mnt, name), path.join(wb.mnt, name)]);
  t.deepEqual(r.default, [0, 8192, 8192], 'default mount');
  t.deepEqual(r.writeback, [0, 8192, 8192], 'writeback mount');
});

test('1 MiB requests (-o max_write=1048576,max_readahead=1048576): large files move intact both ways', async (t) => {
  const { s, name } = await ex.subdir('maxwrite');
  const g = await mountGuest(ex.host.uri, { token: ex.host.token, options: 'max_write=1048576,max_readahead=1048576', mnt: path.join(ex.work, 'guest', 'maxwrite') });
  t.teardown(() => g.unmount());
  const m = path.join(g.mnt, name);
  const data = crypto.randomBytes(48 * 1024 * 1024 + 4321);
  const src = path.join(ex.work, `maxwrite-src-${name}`);
  await fs.writeFile(src, data);
  t.teardown(() => fs.rm(src, { force: true }));
  const sum = crypto.createHash('sha256').update(data).digest('hex');
  await shOk(`dd if=${src} of=${m}/big bs=4M status=none`);
  t.is(crypto.createHash('sha256').update(await fs.readFile(path.join(s, 'big'))).digest('hex'), sum);
  t.is((await shOk(`dd if=${m}/big bs=4M status=none | sha256sum`)).split(' ')[0], sum);
});

// -o max_read=N goes both to the kernel (mount option) and to libfuse's INIT, which must agree;
// the background `mount` returns only once INIT has been accepted.
test('-o max_read=1048576: the mount comes up and reads 1 MiB requests intact', async (t) => {
  const { s, name } = await ex.subdir('maxread');
  await fs.writeFile(path.join(s, 'f'), crypto.randomBytes(8 * 1024 * 1024));
  const mnt = path.join(ex.work, 'guest', 'maxread-bg');
  await fs.mkdir(mnt, { recursive: true });
  t.teardown(async () => {
    if (await isMounted(mnt)) await sh(`fusermount3 -u ${mnt} || fusermount3 -uz ${mnt}`);
  });
  // The background mount says it is ready: then the mount must be there.
  const r = await sh(`node bin/dirvisor-guest.js mount ${ex.host.uri} ${mnt} --token ${ex.host.token} -o max_read=1048576 --log-file ${mnt}.log`);
  t.is(r.code, 0, r.stderr);
  t.true(await isMounted(mnt), 'mounted once `mount` has returned 0');
  const g = await mountGuest(ex.host.uri, { token: ex.host.token, options: 'max_read=1048576,max_write=1048576', mnt: path.join(ex.work, 'guest', 'maxread') });
  t.teardown(() => g.unmount());
  t.is(await shOk(`cmp ${s}/f ${g.mnt}/${name}/f && echo same`), 'same\n');
});

// O_DIRECT is the guest kernel's business (it bypasses its own page cache and sends the caller's
// I/O as it comes); the host opens the backing file without it, so storage that refuses O_DIRECT
// (or our unaligned buffers) does not turn it into EINVAL.
test('O_DIRECT reads and writes work (dd oflag=direct / iflag=direct)', async (t) => {
  const { m, s } = await ex.subdir('odirect');
  const local = await sh(`dd if=/dev/urandom of=${s}/ref bs=1M count=4 status=none && dd if=${s}/ref of=${s}/ref2 bs=1M iflag=direct oflag=direct status=none && cmp ${s}/ref ${s}/ref2 && echo local-ok`);
  t.is(local.stdout, 'local-ok\n', 'O_DIRECT works on the backing directory');
  const w = await sh(`dd if=${s}/ref of=${m}/direct bs=1M oflag=direct status=none`);
  t.is(w.code, 0, `dd oflag=direct through the mount: ${w.stderr}`);
  const rd = await sh(`dd if=${m}/direct of=/dev/null bs=1M iflag=direct status=none`);
  t.is(rd.code, 0, `dd iflag=direct through the mount: ${rd.stderr}`);
  t.is(await shOk(`cmp ${s}/ref ${s}/direct && echo same`), 'same\n');
});

onBothMounts('an O_DIRECT handle bypasses the guest page cache and can still be mmapped, as on a local file system', 'odirect-cache', async (t, { m, s }) => {
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    buf = mmap.mmap(-1, 8192)
    buf.write(b"A" * 8192)
    fd = os.open(m + "/f", os.O_CREAT | os.O_RDWR | os.O_DIRECT | os.O_TRUNC, 0o644)
    res = {"written": os.write(fd, buf)}
    res["storage_now"] = read(s + "/f")[:4].decode()          # no close, no fsync
    with open(s + "/f", "r+b") as f: f.write(b"BBBB")           # changed behind the guest's back
    rb = mmap.mmap(-1, 4096)
    res["read"] = [os.preadv(fd, [rb], 0), rb[:4].decode()]
    def shared_map():
        mm = mmap.mmap(fd, 4096)
        v = mm[:4].decode()
        mm.close()
        return v
    res["mmap"] = err(shared_map)
    os.close(fd)
    out(res)
  `, [m, s]);
  t.deepEqual(r, { written: 8192, storage_now: 'AAAA', read: [4096, 'BBBB'], mmap: 'BBBB' });
});

// ---- a read-only export ---------------------------------------------------------------------------

test('a read-only export: reads work, every change fails with EROFS, storage untouched', async (t) => {
  const ro = await startExport({
    readOnly: true,
    options: 'allow_other,default_permissions',
    populate: async (dir) => {
      await fs.writeFile(path.join(dir, 'file'), 'read me\n');
      await fs.mkdir(path.join(dir, 'dir'));
      await fs.writeFile(path.join(dir, 'dir', 'inner'), 'inner\n');
      await fs.symlink('file', path.join(dir, 'link'));
    },
  });
  t.teardown(() => ro.cleanup());
  t.teardown(async () => {
    if (!t.passed) t.log(await ro.logs());
  });
  t.true((await mountEntry(ro.mnt))!.options.includes('ro'), 'mounted read-only');
  const before = await shOk(`cd ${ro.storage} && find . -printf '%p %s %m %T@\\n' | sort`);
  const r = await pyJson(`
    m = sys.argv[1]
    res = {}
    res["read"] = [read(m + "/file").decode(), read(m + "/dir/inner").decode(), os.readlink(m + "/link"), sorted(os.listdir(m)),
                   st(m + "/link")["type"], os.statvfs(m).f_blocks > 0]
    ops = {
      "create": lambda: os.open(m + "/new", os.O_CREAT | os.O_WRONLY, 0o644),
      "open_w": lambda: os.open(m + "/file", os.O_WRONLY),
      "append": lambda: os.open(m + "/file", os.O_WRONLY | os.O_APPEND),
      "o_trunc": lambda: os.open(m + "/file", os.O_RDONLY | os.O_TRUNC),
      "truncate": lambda: os.truncate(m + "/file", 0),
      "mkdir": lambda: os.mkdir(m + "/newdir"),
      "rmdir": lambda: os.rmdir(m + "/dir"),
      "unlink": lambda: os.unlink(m + "/file"),
      "rename": lambda: os.rename(m + "/file", m + "/moved"),
      "link": lambda: os.link(m + "/file", m + "/hard"),
      "symlink": lambda: os.symlink("x", m + "/sym"),
      "mkfifo": lambda: os.mkfifo(m + "/fifo"),
      "chmod": lambda: os.chmod(m + "/file", 0o777),
      "chown": lambda: os.chown(m + "/file", 1, 1),
      "utime": lambda: os.utime(m + "/file", ns=(1, 1)),
      "setxattr": lambda: os.setxattr(m + "/file", "user.x", b"1"),
      "removexattr": lambda: os.removexattr(m + "/file", "user.x"),
    }
    res["ops"] = {k: err(f) for k, f in ops.items()}
    res["access_w"] = os.access(m + "/file", os.W_OK)
    out(res)
  `, [ro.mnt]);
  t.deepEqual(r.read, ['read me\n', 'inner\n', 'file', ['dir', 'file', 'link'], 'file', true]);
  for (const [op, res] of Object.entries(r.ops as Record<string, { errno?: string }>)) t.is(res?.errno, 'EROFS', op);
  t.false(r.access_w);
  t.is(await shOk(`cd ${ro.storage} && find . -printf '%p %s %m %T@\\n' | sort`), before, 'the storage is unchanged');

  // The host enforces it as well, not only the guest kernel's read-only mount: a raw client that
  // asks for writes on this export gets EROFS.
  const { stream } = await connect(ro.host.uri);
  const session = new Session(stream, { logger: silentLogger(), keepaliveMs: 0 });
  t.teardown(() => session.close());
  await sendHello(session, { token: ro.host.token, agent: 'datapath-test/0' });
  const exportId = (await session.request({ mountExport: { name: 'default' } })).envelope.mountReply!.exportId!;
  const call = (body: Record<string, unknown>) => session.request({ ...body, exportId, caller: { uid: 0, gid: 0, pid: 1 } } as never);
  const errnoOf = async (p: Promise<unknown>) => {
    try {
      await p;
      return 'OK';
    } catch (err) {
      return err instanceof FsError ? errnoName(err.errno) : String(err);
    }
  };
  const file = (await call({ lookup: { parent: 1, name: Buffer.from('file') } })).envelope.entry!.entry!;
  t.is(await errnoOf(call({ open: { node: file.nodeId, flags: 1 /* O_WRONLY */ } })), 'EROFS');
  t.is(await errnoOf(call({ create: { parent: 1, name: Buffer.from('x'), mode: 0o100644, flags: 0o101 } })), 'EROFS');
  t.is(await errnoOf(call({ mkdir: { parent: 1, name: Buffer.from('x'), mode: 0o755 } })), 'EROFS');
  t.is(await errnoOf(call({ unlink: { parent: 1, name: Buffer.from('file') } })), 'EROFS');
  t.is(await errnoOf(call({ setattr: { node: file.nodeId, size: 0 } })), 'EROFS');
  t.is(await errnoOf(call({ setattr: { node: file.nodeId, mode: 0o777 } })), 'EROFS');
  const ro_fh = (await call({ open: { node: file.nodeId, flags: 0 } })).envelope.opened!.fh!;
  t.is(await errnoOf(session.request({ write: { node: file.nodeId, fh: ro_fh, offset: 0 }, exportId, caller: { uid: 0, gid: 0, pid: 1 } }, { payload: Buffer.from('x') })), 'EROFS');
  t.is(await fs.readFile(path.join(ro.storage, 'file'), 'utf8'), 'read me\n');
});

// The mount follows the agent: SIGTERM/SIGINT unmount cleanly, and a SIGKILLed agent leaves no
// "Transport endpoint is not connected" behind (auto_unmount, the default), unless asked to.
for (const sig of ['SIGTERM', 'SIGINT', 'SIGKILL'] as const) {
  test(`the guest agent ended by ${sig}: the mount goes with it`, async (t) => {
    const g = await mountGuest(ex.host.uri, { token: ex.host.token, mnt: path.join(ex.work, 'guest', `sig-${sig}`) });
    t.teardown(() => g.unmount());
    t.is(await shOk(`ls ${g.mnt} >/dev/null && echo ok`), 'ok\n');
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => g.proc.once('exit', (code, signal) => resolve([code, signal])));
    g.proc.kill(sig);
    const [code, signal] = await within(exited, 20_000, `the agent to exit after ${sig}`);
    // SIGTERM/SIGINT: a clean exit once unmounted.
    t.deepEqual([code, signal], sig === 'SIGKILL' ? [null, 'SIGKILL'] : [0, null]);
    await waitFor(async () => !(await isMounted(g.mnt)), `${g.mnt} to go away`, { timeoutMs: 5000 });
    t.is((await sh(`ls ${g.mnt}`)).code, 0, 'the mount point is a plain directory again');
  });
}

test('SIGTERM while a process works inside the mount: the agent detaches it lazily and ends when that process lets go', async (t) => {
  const g = await mountGuest(ex.host.uri, { token: ex.host.token, mnt: path.join(ex.work, 'guest', 'sig-busy') });
  t.teardown(() => g.unmount());
  // A shell whose cwd is in the mount keeps it busy until told to leave.
  const holder = spawn('sh', ['-c', 'cd "$1" && read line && ls >/dev/null && echo done', 'sh', g.mnt], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.teardown(() => { if (holder.exitCode === null) holder.kill('SIGKILL'); });
  let said = '';
  holder.stdout!.on('data', (c: Buffer) => (said += c.toString()));
  await waitFor(async () => (await fs.readlink(`/proc/${holder.pid}/cwd`).catch(() => '')) === g.mnt, 'the holder to be inside');
  const exited = new Promise((resolve) => g.proc.once('exit', resolve));
  g.proc.kill('SIGTERM');
  await waitFor(async () => !(await isMounted(g.mnt)), `${g.mnt} to be detached`, { timeoutMs: 15_000 });
  t.is(g.proc.exitCode, null, 'still serving the process inside');
  holder.stdin!.write('\n');
  await waitFor(() => said.includes('done'), 'the holder to finish its work in the detached mount');
  t.is(await within(exited, 15_000, 'the agent to exit once the mount is released'), 0);
});

test('-o no_auto_unmount: a SIGKILLed agent leaves its mount, not connected, for fusermount3 -uz', async (t) => {
  const g = await mountGuest(ex.host.uri, { token: ex.host.token, options: 'no_auto_unmount', mnt: path.join(ex.work, 'guest', 'no-auto') });
  t.teardown(() => g.unmount());
  const exited = new Promise((resolve) => g.proc.once('exit', resolve));
  g.proc.kill('SIGKILL');
  await within(exited, 20_000, 'the agent to die');
  t.true(await isMounted(g.mnt));
  t.regex((await sh(`ls ${g.mnt}`)).stderr, /Transport endpoint is not connected/);
  await shOk(`fusermount3 -uz ${g.mnt}`);
  t.false(await isMounted(g.mnt));
});

test('unmounting ends the guest agent cleanly and leaves no mount', async (t) => {
  // A separate mount of the same serve, unmounted with `dirvisor-guest umount`.
  const g = await mountGuest(ex.host.uri, { token: ex.host.token, mnt: path.join(ex.work, 'guest', 'umount-me') });
  t.teardown(() => g.unmount());
  t.is(await shOk(`ls ${g.mnt} >/dev/null && echo ok`), 'ok\n');
  // Anything on this machine walking /tmp at that moment (a find, another suite's cleanup) makes
  // the mount busy for an instant: like a user, try again shortly, but not forever.
  let r = await sh(`node bin/dirvisor-guest.js umount ${g.mnt}`);
  for (let i = 0; i < 10 && r.code !== 0 && /busy/i.test(r.stderr); i++) {
    t.log(`umount: ${r.stderr.trim()}; trying again`);
    await new Promise((resolve) => setTimeout(resolve, 300));
    r = await sh(`node bin/dirvisor-guest.js umount ${g.mnt}`);
  }
  t.is(r.code, 0, r.stderr);
  const how = await g.unmount();
  t.false(how.lazy);
  t.is(how.code, 0, await g.log());
  t.false(await isMounted(g.mnt));
});
