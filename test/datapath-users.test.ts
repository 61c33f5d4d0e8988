// The data path as an unprivileged user (uid 1000 through setpriv) on a mount with
// allow_other,default_permissions: what a user creates is owned by that user, on the mount and on
// the storage; what a user may not do fails with the errno a local file system gives.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { startExport, mountGuest, pyJson, sh, shOk, USER, type Export, type GuestMount } from './helpers/agents.js';

let ex: Export;
/** A second mount of the same serve without default_permissions: the host alone checks. */
let hostChecked: GuestMount;
/** A third one with the kernel's writeback cache (which changes how files are opened). */
let writeback: GuestMount;

test.before(async () => {
  ex = await startExport({ options: 'allow_other,default_permissions' });
  hostChecked = await mountGuest(ex.host.uri, { token: ex.host.token, options: 'allow_other', mnt: path.join(ex.work, 'guest', 'host-checked') });
  writeback = await mountGuest(ex.host.uri, {
    token: ex.host.token, options: 'allow_other,default_permissions,writeback', mnt: path.join(ex.work, 'guest', 'writeback'),
  });
});

test.after.always(async () => {
  await writeback?.unmount();
  await hostChecked?.unmount();
  await ex?.cleanup();
});

const MOUNTS = {
  kernel: 'checked by the guest kernel',
  host: 'checked by the host',
  writeback: 'with the writeback cache',
} as const;
type Which = keyof typeof MOUNTS;
const mountFor = (which: Which, name: string) => path.join(which === 'kernel' ? ex.mnt : which === 'host' ? hostChecked.mnt : writeback.mnt, name);

test.afterEach.always(async (t) => {
  if (!t.passed && ex) t.log(await ex.logs());
});

const asUser = { uid: USER.uid, gid: USER.gid };

test('what uid 1000 creates is owned by 1000:1000 in the mount and in the storage', async (t) => {
  const { m, s } = await ex.subdir('owner');
  const r = await pyJson(`
    m = sys.argv[1]
    os.umask(0o022)
    with open(m + "/file", "w") as f: f.write("mine")
    os.mkdir(m + "/dir")
    with open(m + "/dir/nested", "w") as f: f.write("nested")
    os.symlink("file", m + "/link")
    os.mkfifo(m + "/fifo")
    os.link(m + "/file", m + "/hard")
    s = socket.socket(socket.AF_UNIX); s.bind(m + "/sock"); s.close()
    os.rename(m + "/dir/nested", m + "/moved")
    out({"uid": os.getuid(), "gid": os.getgid()})
  `, [m], asUser);
  t.deepEqual(r, { uid: 1000, gid: 1000 });
  const owners = await pyJson(`
    m, s = sys.argv[1:3]
    names = ["file", "dir", "link", "fifo", "hard", "sock", "moved"]
    out({n: [lst(m + "/" + n)["uid"], lst(m + "/" + n)["gid"], lst(s + "/" + n)["uid"], lst(s + "/" + n)["gid"]] for n in names})
  `, [m, s]);
  for (const [name, ids] of Object.entries(owners)) t.deepEqual(ids, [1000, 1000, 1000, 1000], name);
  // ls -ln through the mount, as the user and as root, shows the same owner.
  t.is(await shOk(`stat -c '%u:%g %n' ${m}/file ${m}/dir`, asUser), `1000:1000 ${m}/file\n1000:1000 ${m}/dir\n`);
  t.is(await fs.readFile(path.join(s, 'moved'), 'utf8'), 'nested');
});

test('the caller\'s umask and a setgid directory apply as on a local file system', async (t) => {
  const { m, s } = await ex.subdir('umask');
  await fs.mkdir(path.join(s, 'shared'));
  await fs.chown(path.join(s, 'shared'), 0, 4242);
  await fs.chmod(path.join(s, 'shared'), 0o2777);
  await pyJson(`
    m = sys.argv[1]
    os.umask(0o027)
    os.close(os.open(m + "/u027", os.O_CREAT | os.O_WRONLY, 0o666))
    os.mkdir(m + "/d027", 0o777)
    os.umask(0o002)
    os.close(os.open(m + "/shared/f", os.O_CREAT | os.O_WRONLY, 0o666))
    os.mkdir(m + "/shared/sub", 0o777)
    out(True)
  `, [m], asUser);
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    out({n: [st(m + "/" + n)["perm"], st(s + "/" + n)["perm"], st(m + "/" + n)["gid"], st(s + "/" + n)["gid"]]
         for n in ["u027", "d027", "shared/f", "shared/sub"]})
  `, [m, s]);
  t.deepEqual(r.u027, [0o640, 0o640, 1000, 1000]);
  t.deepEqual(r.d027, [0o750, 0o750, 1000, 1000]);
  // In a setgid directory new entries take the directory's group; subdirectories keep the bit.
  t.deepEqual(r['shared/f'], [0o664, 0o664, 4242, 4242]);
  t.deepEqual(r['shared/sub'], [0o2775, 0o2775, 4242, 4242]);
});

// The same denials whoever checks: the guest kernel (default_permissions) or, without it, the host
// (it runs each operation with the caller's fs credentials).
const permissionErrors = test.macro({
  async exec(t, which: Which) {
    const { s, name } = await ex.subdir(`perm-${which}`);
    const m = mountFor(which, name);
    // Set up as root on the storage side: a root file 0644, a private root file, a root directory
    // 0755 with a file in it, a sticky world-writable directory with a root file in it.
    await fs.writeFile(path.join(s, 'rootfile'), 'root data\n');
    await fs.chmod(path.join(s, 'rootfile'), 0o644);
    await fs.writeFile(path.join(s, 'private'), 'secret\n');
    await fs.chmod(path.join(s, 'private'), 0o600);
    await fs.mkdir(path.join(s, 'rootdir'));
    await fs.chmod(path.join(s, 'rootdir'), 0o755);
    await fs.writeFile(path.join(s, 'rootdir', 'inside'), 'inside\n');
    await fs.mkdir(path.join(s, 'sticky'));
    await fs.chmod(path.join(s, 'sticky'), 0o1777);
    await fs.writeFile(path.join(s, 'sticky', 'rootowned'), 'x');
    // (The test's own directory changes when "mine" comes and goes; everything in it must not.)
    const snapshot = () => shOk(`cd ${s} && find . -mindepth 1 -printf '%p %s %m %U:%G %T@\\n' | sort`);
    const before = await snapshot();
    const r = await pyJson(`
      m = sys.argv[1]
      with open(m + "/mine", "w") as f: f.write("mine")
      ops = {
        "write_root_0644": lambda: open(m + "/rootfile", "w"),
        "append_root_0644": lambda: os.open(m + "/rootfile", os.O_WRONLY | os.O_APPEND),
        "truncate_root_0644": lambda: os.truncate(m + "/rootfile", 0),
        "read_root_0600": lambda: read(m + "/private"),
        "create_in_root_dir": lambda: os.open(m + "/rootdir/new", os.O_CREAT | os.O_WRONLY, 0o644),
        "mkdir_in_root_dir": lambda: os.mkdir(m + "/rootdir/newdir"),
        "unlink_in_root_dir": lambda: os.unlink(m + "/rootdir/inside"),
        "rename_in_root_dir": lambda: os.rename(m + "/rootdir/inside", m + "/rootdir/renamed"),
        "rename_out_of_root_dir": lambda: os.rename(m + "/rootdir/inside", m + "/stolen"),
        "symlink_in_root_dir": lambda: os.symlink("x", m + "/rootdir/l"),
        "utime_now_root_0644": lambda: os.utime(m + "/rootfile"),
        "setxattr_root_0644": lambda: os.setxattr(m + "/rootfile", "user.x", b"1"),
        "chown_own_to_root": lambda: os.chown(m + "/mine", 0, -1),
        "chgrp_own_to_foreign_group": lambda: os.chown(m + "/mine", -1, 0),
        "chown_root_file": lambda: os.chown(m + "/rootfile", 1000, 1000),
        "chmod_root_file": lambda: os.chmod(m + "/rootfile", 0o666),
        "utime_explicit_root_file": lambda: os.utime(m + "/rootfile", ns=(1, 1)),
        "unlink_in_sticky_dir": lambda: os.unlink(m + "/sticky/rootowned"),
        "rename_in_sticky_dir": lambda: os.rename(m + "/sticky/rootowned", m + "/sticky/mine"),
        "mknod_char_device": lambda: os.mknod(m + "/null", 0o20666, os.makedev(1, 3)),
        "setxattr_trusted": lambda: os.setxattr(m + "/mine", "trusted.x", b"1"),
      }
      out({k: err(f) for k, f in ops.items()})
    `, [m], asUser);
    const expected: Record<string, string> = {
      write_root_0644: 'EACCES',
      append_root_0644: 'EACCES',
      truncate_root_0644: 'EACCES',
      read_root_0600: 'EACCES',
      create_in_root_dir: 'EACCES',
      mkdir_in_root_dir: 'EACCES',
      unlink_in_root_dir: 'EACCES',
      rename_in_root_dir: 'EACCES',
      rename_out_of_root_dir: 'EACCES',
      symlink_in_root_dir: 'EACCES',
      utime_now_root_0644: 'EACCES',
      setxattr_root_0644: 'EACCES',
      chown_own_to_root: 'EPERM',
      chgrp_own_to_foreign_group: 'EPERM',
      chown_root_file: 'EPERM',
      chmod_root_file: 'EPERM',
      utime_explicit_root_file: 'EPERM',
      unlink_in_sticky_dir: 'EPERM',
      rename_in_sticky_dir: 'EPERM',
      mknod_char_device: 'EPERM',
      setxattr_trusted: 'EPERM',
    };
    for (const [op, errno] of Object.entries(expected)) t.is(r[op]?.errno, errno, `${op}: ${JSON.stringify(r[op])}`);
    await fs.rm(path.join(s, 'mine'));
    t.is(await snapshot(), before, 'the storage is unchanged');
    // The shell says the same.
    const c = await sh(`echo x > ${m}/rootfile; chown root ${m}/rootfile`, asUser);
    t.regex(c.stderr, /rootfile: Permission denied/);
    t.regex(c.stderr, /Operation not permitted/);
  },
  title: (_, which: Which) => `permission errors (${MOUNTS[which]}): EACCES for modes, EPERM for ownership; storage untouched`,
});

test(permissionErrors, 'kernel');
test(permissionErrors, 'host');
test(permissionErrors, 'writeback');

// What a user may write but not read (mode 0200, or a shared log -rw--w--w-) opens for writing as
// on a local file system.
const writeOnlyFile = test.macro({
  async exec(t, which: Which) {
    const { s, name } = await ex.subdir(`wonly-${which}`);
    const m = mountFor(which, name);
    await fs.writeFile(path.join(s, 'shared.log'), 'first\n');
    await fs.chmod(path.join(s, 'shared.log'), 0o622);
    const r = await pyJson(`
      m = sys.argv[1]
      res = {}
      def append():
          fd = os.open(m + "/shared.log", os.O_WRONLY | os.O_APPEND)
          os.write(fd, b"from uid %d\\n" % os.getuid())
          os.close(fd)
          return "ok"
      res["append"] = err(append)
      res["read"] = err(lambda: read(m + "/shared.log"))
      def own_0200():
          fd = os.open(m + "/mine", os.O_CREAT | os.O_WRONLY, 0o200)
          os.close(fd)
          fd = os.open(m + "/mine", os.O_WRONLY)   # reopen: write permission only
          os.write(fd, b"x")
          os.close(fd)
          return "ok"
      res["own_0200"] = err(own_0200)
      out(res)
    `, [m], asUser);
    t.is(r.append, 'ok', JSON.stringify(r.append));
    t.is(r.read.errno, 'EACCES');
    t.is(r.own_0200, 'ok', JSON.stringify(r.own_0200));
    t.is(await fs.readFile(path.join(s, 'shared.log'), 'utf8'), 'first\nfrom uid 1000\n');
    t.is(await fs.readFile(path.join(s, 'mine'), 'utf8'), 'x');
  },
  title: (_, which: Which) => `a file the user may write but not read opens for writing (${MOUNTS[which]})`,
});

test(writeOnlyFile, 'kernel');
test(writeOnlyFile, 'host');
// With -o writeback the guest agent opens write-only files read-write (the kernel may read pages
// to fill partial ones); the host opens with the caller's credentials, so that must not turn into
// EACCES for a user who may write but not read.
// The adapter opens O_WRONLY as O_RDWR and, when the host refuses that (EACCES), falls back to a
// write-only direct-I/O handle, through which the kernel never needs to read.
test(writeOnlyFile, 'writeback');

test('what the user may do: own files, chmod, utime, group-writable files through supplementary groups', async (t) => {
  const { m, s } = await ex.subdir('allowed');
  // A file of group 4242, mode 0660, owned by root: the user may use it only as a member of 4242.
  await fs.writeFile(path.join(s, 'groupfile'), 'group data\n');
  await fs.chown(path.join(s, 'groupfile'), 0, 4242);
  await fs.chmod(path.join(s, 'groupfile'), 0o660);
  await fs.mkdir(path.join(s, 'groupdir'));
  await fs.chown(path.join(s, 'groupdir'), 0, 4242);
  await fs.chmod(path.join(s, 'groupdir'), 0o770);
  const script = `
    m = sys.argv[1]
    res = {}
    res["read_group"] = err(lambda: read(m + "/groupfile").decode())
    def append():
        with open(m + "/groupfile", "a") as f: f.write("appended by " + str(os.getuid()) + "\\n")
        return "ok"
    res["append_group"] = err(append)
    res["create_in_group_dir"] = err(lambda: os.close(os.open(m + "/groupdir/new" + str(len(os.getgroups())), os.O_CREAT | os.O_WRONLY, 0o644)))
    out(res)
  `;
  const member = await pyJson(script, [m], { ...asUser, groups: [4242] });
  t.deepEqual(member, { read_group: 'group data\n', append_group: 'ok', create_in_group_dir: null });
  const stranger = await pyJson(script, [m], asUser);
  t.is(stranger.read_group.errno, 'EACCES');
  t.is(stranger.append_group.errno, 'EACCES');
  t.is(stranger.create_in_group_dir.errno, 'EACCES');
  t.is(await fs.readFile(path.join(s, 'groupfile'), 'utf8'), 'group data\nappended by 1000\n');
  t.deepEqual(await fs.readdir(path.join(s, 'groupdir')), ['new1']);

  // The owner changes mode and times of its own files, and chgrp to a group it is in.
  const r = await pyJson(`
    m, = sys.argv[1:2]
    with open(m + "/own", "w") as f: f.write("x")
    os.chmod(m + "/own", 0o600)
    os.utime(m + "/own", ns=(1111111111222222222, 1333333333444444444))
    os.chown(m + "/own", -1, 4242)
    os.utime(m + "/own")  # "now" needs only write access or ownership
    out({"perm": st(m + "/own")["perm"], "gid": st(m + "/own")["gid"]})
  `, [m], { ...asUser, groups: [4242] });
  t.deepEqual(r, { perm: 0o600, gid: 4242 });
  const b = await fs.stat(path.join(s, 'own'));
  t.is(b.mode & 0o7777, 0o600);
  t.is(b.gid, 4242);
  t.is(b.uid, 1000);
});

// The guest kernel drops set-ID bits before a write or truncate by an unprivileged process with a
// SETATTR(mode) sent as that user, who may not chmod a file it does not own: the host allows exactly
// that drop to whoever may write the file, as a local file system does within the write.
test('a write by a non-root user clears the set-user-ID bit, on the storage too', async (t) => {
  const { m, s } = await ex.subdir('suid');
  await fs.writeFile(path.join(s, 'prog'), '#!/bin/sh\n');
  await fs.chmod(path.join(s, 'prog'), 0o4777);
  await shOk(`echo 'echo pwned' >> ${m}/prog`, asUser);
  t.is((await fs.stat(path.join(s, 'prog'))).mode & 0o7777, 0o777);
  t.is(Number(await shOk(`stat -c %a ${m}/prog`)), 777);
  t.is(await fs.readFile(path.join(s, 'prog'), 'utf8'), '#!/bin/sh\necho pwned\n');
});

// Not compared: S_ISGID without group execute on a file of a group the writer is not in. A local
// file system drops it on write (Linux 6.x); the FUSE kernel module keeps its older rule (only with
// group execute) and asks for nothing, so the guest keeps the bit (the storage too, or not, depending
// on which credentials the data reaches the host with): a limit of FUSE, not of this agent.
const setIdBits = test.macro({
  async exec(t, which: Which) {
    const { s, name } = await ex.subdir(`setid-${which}`);
    const local = path.join(s, 'local');
    const files: Record<string, number> = {
      write_suid: 0o4777, write_sgid_gx: 0o2777, write_sgid_mygroup: 0o2666, trunc_suid: 0o4777,
      ftrunc_suid: 0o4777, owner_suid: 0o4755, nowrite_suid: 0o4755,
    };
    // The same files on the local file system (the backing directory, as the kernel treats it
    // there) and in the mount; the user works on both and the outcomes must be the same.
    await fs.mkdir(local);
    for (const dir of [s, local]) {
      for (const [f, mode] of Object.entries(files)) {
        await fs.writeFile(path.join(dir, f), 'data\n');
        if (f === 'owner_suid') await fs.chown(path.join(dir, f), USER.uid, USER.gid);
        if (f === 'write_sgid_mygroup') await fs.chown(path.join(dir, f), 0, USER.gid);
        await fs.chmod(path.join(dir, f), mode);
      }
    }
    const script = `
      d = sys.argv[1]
      def append(f):
          with open(d + "/" + f, "ab") as fh: fh.write(b"more\\n")
          return "ok"
      def ftrunc(f):
          fd = os.open(d + "/" + f, os.O_WRONLY)
          os.ftruncate(fd, 2)
          os.close(fd)
          return "ok"
      res = {
        "write_suid": err(lambda: append("write_suid")),
        "write_sgid_gx": err(lambda: append("write_sgid_gx")),
        "write_sgid_mygroup": err(lambda: append("write_sgid_mygroup")),
        "trunc_suid": err(lambda: os.truncate(d + "/trunc_suid", 1)),
        "ftrunc_suid": err(lambda: ftrunc("ftrunc_suid")),
        "owner_suid": err(lambda: append("owner_suid")),
        "nowrite_suid": [err(lambda: append("nowrite_suid")), err(lambda: os.chmod(d + "/nowrite_suid", 0o755))],
      }
      out({"res": res, "modes": {f: oct(st(d + "/" + f)["perm"]) for f in sorted(res)}})
    `;
    const expected = await pyJson(script, [local], asUser);
    const got = await pyJson(script, [mountFor(which, name)], asUser);
    t.deepEqual(got, expected);
    // The mount shows what the storage holds.
    const storage = await pyJson(`
      out({f: oct(st(sys.argv[1] + "/" + f)["perm"]) for f in sys.argv[2:]})
    `, [s, ...Object.keys(files)]);
    t.deepEqual(storage, expected.modes);
    // (what the kernel does, spelled out: the writer's bits go, the rest stay)
    t.is(expected.modes.write_suid, '0o777');
    t.is(expected.modes.write_sgid_mygroup, '0o2666', 'no group execute, and the writer is in the group');
    t.is(expected.modes.nowrite_suid, '0o4755');
  },
  title: (_, which: Which) => `set-ID bits after writes and truncates by a non-root user match a local file system (${MOUNTS[which]})`,
});

test(setIdBits, 'kernel');
test(setIdBits, 'host');
test(setIdBits, 'writeback');

// With the writeback cache the guest kernel keeps mtime itself and sends it to the host as an
// explicit time (on fsync and close, with a truncate), as the writing user: for a file the user may
// write but does not own, that must not turn into EPERM, while a user's own explicit utime still does.
test('writing a file one does not own on the writeback mount: fsync and close succeed, mtime follows', async (t) => {
  const { s, name } = await ex.subdir('wb-times');
  await fs.writeFile(path.join(s, 'shared'), 'x');
  await fs.chmod(path.join(s, 'shared'), 0o666);
  const old = new Date('2001-01-01T00:00:00Z');
  await fs.utimes(path.join(s, 'shared'), old, old);
  const r = await pyJson(`
    f = sys.argv[1] + "/shared"
    res = {}
    def write():
        fd = os.open(f, os.O_WRONLY | os.O_APPEND)
        os.write(fd, b"y")
        os.fsync(fd)
        os.ftruncate(fd, 5)
        os.close(fd)
        return "ok"
    res["write"] = err(write)
    res["truncate"] = err(lambda: os.truncate(f, 6))
    res["explicit_utime"] = err(lambda: os.utime(f, ns=(1, 1)))
    res["now_utime"] = err(lambda: os.utime(f))
    out(res)
  `, [mountFor('writeback', name)], asUser);
  t.is(r.write, 'ok', JSON.stringify(r.write));
  t.is(r.truncate, null, JSON.stringify(r.truncate));
  t.is(r.explicit_utime?.errno, 'EPERM', 'only the owner sets explicit times');
  t.is(r.now_utime, null);
  const b = await fs.stat(path.join(s, 'shared'));
  t.is(b.size, 6);
  t.true(b.mtimeMs > old.getTime() + 1000, `mtime ${b.mtime.toISOString()} moved on`);
  t.is((await fs.readFile(path.join(s, 'shared'))).subarray(0, 2).toString(), 'xy');
});

// The groups come from the guest's /proc for each request that needs them; none may be lost on the
// way (the host once kept only the first 64).
const manyGroups = test.macro({
  async exec(t, which: Which) {
    const { s, name } = await ex.subdir(`groups-${which}`);
    await fs.writeFile(path.join(s, 'g'), 'for the last group\n');
    await fs.chown(path.join(s, 'g'), 0, 5299);
    await fs.chmod(path.join(s, 'g'), 0o640);
    const groups = Array.from({ length: 300 }, (_, i) => 5000 + i);
    const script = `out(err(lambda: read(sys.argv[1] + "/g").decode()))`;
    t.is(await pyJson(script, [mountFor(which, name)], { ...asUser, groups }), 'for the last group\n');
    t.is((await pyJson(script, [mountFor(which, name)], { ...asUser, groups: groups.slice(0, -1) })).errno, 'EACCES');
  },
  title: (_, which: Which) => `a user in 300 supplementary groups reads through the last one (${MOUNTS[which]})`,
});

test(manyGroups, 'kernel');
test(manyGroups, 'host');

test('an ordinary shell session as uid 1000 in its own directory', async (t) => {
  const { m, s } = await ex.subdir('session');
  await fs.chown(s, USER.uid, USER.gid);
  await fs.chmod(s, 0o755);
  const out = await shOk(`
    set -e
    cd ${m}
    umask 022
    mkdir -p src/lib && printf 'int main(void) { return 0; }\\n' > src/main.c
    for i in $(seq 1 50); do echo "line $i" >> src/lib/data.txt; done
    cp src/main.c src/copy.c && mv src/copy.c src/lib/ && ln -s lib/data.txt src/data
    tar -C ${m} -cf ${m}/archive.tar src && mkdir unpacked && tar -C unpacked -xf archive.tar
    rm archive.tar
    sed -i 's/line 7$/LINE SEVEN/' src/lib/data.txt
    diff src/lib/data.txt unpacked/src/lib/data.txt | grep -c SEVEN || true
    find . | sort
    stat -c '%u %a %n' src/lib/data.txt unpacked/src/data
  `, asUser);
  t.is(out, [
    '1',
    '.', './src', './src/data', './src/lib', './src/lib/copy.c', './src/lib/data.txt', './src/main.c',
    './unpacked', './unpacked/src', './unpacked/src/data', './unpacked/src/lib', './unpacked/src/lib/copy.c',
    './unpacked/src/lib/data.txt', './unpacked/src/main.c',
    `${USER.uid} 644 src/lib/data.txt`, `${USER.uid} 777 unpacked/src/data`, '',
  ].join('\n'));
  // On the storage: every file the session made belongs to 1000:1000.
  const owners = (await shOk(`cd ${s} && find . -mindepth 1 -printf '%U:%G\\n' | sort -u`)).trim();
  t.is(owners, '1000:1000');
  t.regex(await fs.readFile(path.join(s, 'src/lib/data.txt'), 'utf8'), /^line 6\nLINE SEVEN\nline 8$/m);
});
