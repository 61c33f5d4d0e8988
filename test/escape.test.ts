// Escape attempts, all of which must fail: symlinks in the storage pointing out of it, raw protocol
// requests with names that are paths, node ids and handles that were never issued or belong to
// another connection or export, and a directory swapped for a symlink while a guest walks it.
//
// Layout (the storage and the mount point have different parents, each with its own markers, so a
// link resolved on the wrong side shows):
//   WORK/host/h2/storage/      the served directory
//   WORK/host/h2/secret/SECRET "HOST-SECRET..."     WORK/host/h2/HOST_PARENT_MARKER, VICTIM
//   WORK/host/HOST_SIDE_MARKER
//   WORK/guest/g2/mnt/         the mount point
//   WORK/guest/g2/secret/SECRET "GUEST-VIEW"        WORK/guest/g2/GUEST_PARENT_MARKER
//   WORK/guest/GUEST_SIDE_MARKER
import test from 'ava';
import fs from 'node:fs/promises';
import { constants as C } from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Session } from '../shared/rpc/session.js';
import { sendHello } from '../shared/rpc/hello.js';
import { connect } from '../shared/transport/index.js';
import { FsError, errnoName } from '../shared/fs/errors.js';
import { silentLogger } from '../shared/log.js';
import type { EnvelopeInit } from '../shared/rpc/wire.js';
import {
  tempDir, startHost, mountGuest, pyJson, sh, shOk, removeTree, waitFor, type HostAgent, type GuestMount,
} from './helpers/agents.js';

const S_IFMT = 0o170000, S_IFDIR = 0o040000, S_IFLNK = 0o120000, S_IFREG = 0o100000;
const exists = (p: string) => fs.access(p).then(() => true, () => false);
const HOST_SECRET = `HOST-SECRET-${crypto.randomBytes(6).toString('hex')}`;

let work: string;
let storage: string;
let hostParent: string;
let host: HostAgent;
let guest: GuestMount;
let mnt: string;

test.before(async () => {
  work = await tempDir('dirvisor-e2e-escape-');
  hostParent = path.join(work, 'host', 'h2');
  storage = path.join(hostParent, 'storage');
  const guestParent = path.join(work, 'guest', 'g2');
  mnt = path.join(guestParent, 'mnt');
  for (const d of [storage, path.join(hostParent, 'secret'), mnt, path.join(guestParent, 'secret')]) await fs.mkdir(d, { recursive: true });
  await fs.writeFile(path.join(work, 'host', 'HOST_SIDE_MARKER'), 'host side\n');
  await fs.writeFile(path.join(hostParent, 'HOST_PARENT_MARKER'), 'host parent\n');
  await fs.writeFile(path.join(hostParent, 'VICTIM'), 'must survive\n');
  await fs.writeFile(path.join(hostParent, 'secret', 'SECRET'), `${HOST_SECRET}\n`);
  await fs.writeFile(path.join(work, 'guest', 'GUEST_SIDE_MARKER'), 'guest side\n');
  await fs.writeFile(path.join(guestParent, 'GUEST_PARENT_MARKER'), 'guest parent\n');
  await fs.writeFile(path.join(guestParent, 'secret', 'SECRET'), 'GUEST-VIEW\n');
  // The links and a small tree in the storage.
  await fs.symlink('/', path.join(storage, 'to-root'));
  await fs.symlink('..', path.join(storage, 'up1'));
  await fs.symlink('../..', path.join(storage, 'up2'));
  await fs.symlink('../secret', path.join(storage, 'rel-secret'));
  await fs.mkdir(path.join(storage, 'd', 'inner'), { recursive: true });
  await fs.writeFile(path.join(storage, 'd', 'inner', 'file'), 'INNER\n');
  await fs.writeFile(path.join(storage, 'file'), 'top file\n');
  host = await startHost({ dir: storage, workDir: work });
  // No caching in the guest kernel: every path walk reaches the host, which is what the swap
  // tests want to race against.
  guest = await mountGuest(host.uri, { token: host.token, mnt, logFile: path.join(work, 'guest.log'), options: 'allow_other,default_permissions,cache=none' });
});

test.after.always(async () => {
  await guest?.unmount();
  await host?.stop();
  if (work) await removeTree(work);
});

test.afterEach.always(async (t) => {
  if (!t.passed && host) t.log(`--- host log ---\n${await host.log()}\n--- guest log ---\n${guest ? await guest.log() : ''}`);
});

/** What exists next to the storage and above it: must never change because of a guest. */
async function outsideSnapshot(): Promise<string> {
  return shOk(`cd ${work}/host && find . -path ./h2/storage -prune -o -printf '%p %s %m %U %T@\\n' | sort`);
}

// ---- symlinks through the mount ---------------------------------------------------------------

test.serial('symlinks to .., ../.. and ../secret resolve in the guest\'s view, never the storage side\'s', async (t) => {
  const r = await pyJson(`
    m = sys.argv[1]
    out({
      "readlink": [os.readlink(m + "/" + n) for n in ("to-root", "up1", "up2", "rel-secret")],
      "types": [lst(m + "/" + n)["type"] for n in ("to-root", "up1", "up2", "rel-secret")],
      "up1": sorted(os.listdir(m + "/up1/")),
      "up2": sorted(os.listdir(m + "/up2/")),
      "secret": read(m + "/rel-secret/SECRET").decode(),
      "via_up1": err(lambda: read(m + "/up1/HOST_PARENT_MARKER")),
    })
  `, [mnt]);
  t.deepEqual(r.readlink, ['/', '..', '../..', '../secret']);
  t.deepEqual(r.types, ['symlink', 'symlink', 'symlink', 'symlink']);
  t.deepEqual(r.up1, ['GUEST_PARENT_MARKER', 'mnt', 'secret']);
  t.deepEqual(r.up2, ['GUEST_SIDE_MARKER', 'g2']);
  t.is(r.secret, 'GUEST-VIEW\n');
  t.is(r.via_up1.errno, 'ENOENT');
  // The shell's view, the way a user would look.
  const ls = await shOk(`ls ${mnt}/up2/ ${mnt}/up1/; cat ${mnt}/rel-secret/SECRET`);
  t.notRegex(ls, /HOST_SIDE_MARKER|HOST_PARENT_MARKER|HOST-SECRET|storage/);
  t.regex(ls, /GUEST_SIDE_MARKER/);
});

test.serial('a symlink to / lists the guest\'s own root, also when the guest\'s root is not the host\'s', async (t) => {
  // Same machine: the guest's / is this /, so `ls mnt/to-root/` is `ls /`.
  t.is(await shOk(`ls -A ${mnt}/to-root/`), await shOk('ls -A /'));
  // A guest whose root is a different tree: a private mount namespace, chrooted into a small root
  // that has the mount at /mnt. Following the link must list that root, not the host's.
  const groot = path.join(work, 'guest-root');
  await fs.mkdir(path.join(groot, 'usr'), { recursive: true });
  await fs.mkdir(path.join(groot, 'mnt'));
  for (const l of ['bin', 'lib', 'lib64']) await fs.symlink(`usr/${l}`, path.join(groot, l));
  await fs.writeFile(path.join(groot, 'GUEST_ROOT_MARKER'), '');
  const r = await sh(
    `unshare -m --propagation private sh -c 'mount --bind /usr ${groot}/usr && mount --bind ${mnt} ${groot}/mnt && ` +
    `chroot ${groot} /bin/readlink /mnt/to-root && echo --- && chroot ${groot} /bin/ls -A /mnt/to-root/'`,
    { timeoutMs: 30_000 },
  );
  t.is(r.code, 0, r.stderr);
  const [link, listing] = r.stdout.split('---\n');
  t.is(link, '/\n');
  t.deepEqual(listing.trim().split('\n').sort(), ['GUEST_ROOT_MARKER', 'bin', 'lib', 'lib64', 'mnt', 'usr']);
});

// ---- raw protocol ------------------------------------------------------------------------------

interface Raw {
  session: Session;
  exportId: number;
  call(body: EnvelopeInit, payload?: Buffer, exportId?: number): Promise<NonNullable<Awaited<ReturnType<Session['request']>>>>;
  close(): void;
}

async function rawClient(opts: { mount?: boolean; token?: string } = {}): Promise<Raw> {
  const { stream } = await connect(host.uri);
  const session = new Session(stream, { logger: silentLogger(), keepaliveMs: 0, defaultDeadlineMs: 20_000 });
  await sendHello(session, { token: opts.token ?? host.token, agent: 'escape-test/0' });
  let exportId = 0;
  if (opts.mount !== false) {
    exportId = (await session.request({ mountExport: { name: 'default' } })).envelope.mountReply!.exportId!;
  }
  return {
    session,
    exportId,
    call: (body, payload, id) => session.request({ ...body, exportId: id ?? exportId, caller: { uid: 0, gid: 0, pid: 1 } }, { payload }),
    close: () => session.close('test done'),
  };
}

/** 'OK' or the errno name the request failed with. */
async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    return err instanceof FsError ? errnoName(err.errno) : `not an FsError: ${String(err)}`;
  }
}

const B = (s: string | Buffer) => (typeof s === 'string' ? Buffer.from(s, 'latin1') : s);

async function lookup(c: Raw, parent: number, name: string | Buffer): Promise<{ nodeId: number; attr: { mode: number; ino: number } }> {
  const e = (await c.call({ lookup: { parent, name: B(name) } })).envelope.entry!.entry!;
  return { nodeId: Number(e.nodeId), attr: { mode: e.attr?.mode ?? 0, ino: Number(e.attr?.ino ?? 0) } };
}

test.serial('raw protocol: names that are not one component are refused, and nothing outside changes', async (t) => {
  const c = await rawClient();
  t.teardown(() => c.close());
  const before = await outsideSnapshot();
  const storageBefore = (await fs.readdir(storage)).sort();
  const fileNode = (await lookup(c, 1, 'file')).nodeId;
  const bad: Array<[string, Buffer, string[]]> = [
    ['..', B('..'), ['EINVAL']],
    ['.', B('.'), ['EINVAL']],
    ['empty', B(''), ['EINVAL']],
    ['a/b', B('d/inner'), ['EINVAL']],
    ['../VICTIM', B('../VICTIM'), ['EINVAL']],
    ['/etc', B('/etc'), ['EINVAL']],
    ['../../HOST_SIDE_MARKER', B('../../HOST_SIDE_MARKER'), ['EINVAL']],
    ['a\\0b', Buffer.from('file\0b'), ['EINVAL']],
    ['name\\0', Buffer.from('file\0'), ['EINVAL']],
    ['4 KiB of x', Buffer.alloc(4096, 'x'), ['ENAMETOOLONG']],
    ['4 KiB of random bytes', crypto.randomBytes(4096), ['ENAMETOOLONG', 'EINVAL']],
    ['256 bytes', Buffer.alloc(256, 'y'), ['ENAMETOOLONG']],
  ];
  for (const [label, name, errnos] of bad) {
    const ops: Record<string, () => Promise<unknown>> = {
      lookup: () => c.call({ lookup: { parent: 1, name } }),
      create: () => c.call({ create: { parent: 1, name, mode: S_IFREG | 0o644, flags: C.O_CREAT | C.O_WRONLY } }),
      mkdir: () => c.call({ mkdir: { parent: 1, name, mode: 0o755 } }),
      mknod: () => c.call({ mknod: { parent: 1, name, mode: 0o010644, rdev: 0 } }),
      symlink: () => c.call({ symlink: { parent: 1, name, target: B('x') } }),
      unlink: () => c.call({ unlink: { parent: 1, name } }),
      rmdir: () => c.call({ rmdir: { parent: 1, name } }),
      renameFrom: () => c.call({ rename: { parent: 1, name, newParent: 1, newName: B('stolen'), flags: 0 } }),
      renameTo: () => c.call({ rename: { parent: 1, name: B('file'), newParent: 1, newName: name, flags: 0 } }),
      link: () => c.call({ link: { node: fileNode, newParent: 1, newName: name } }),
    };
    for (const [op, f] of Object.entries(ops)) {
      const got = await outcome(f());
      t.true(errnos.includes(got), `${op} "${label}": ${got}, expected ${errnos.join(' or ')}`);
    }
  }
  t.is(await outsideSnapshot(), before, 'nothing outside the storage changed');
  t.deepEqual((await fs.readdir(storage)).sort(), storageBefore, 'nothing inside changed either');
  t.is(await fs.readFile(path.join(storage, 'file'), 'utf8'), 'top file\n');
});

test.serial('raw protocol: node ids never issued are ESTALE, handles never issued are EBADF', async (t) => {
  const c = await rawClient();
  t.teardown(() => c.close());
  // A fresh connection has issued only the root (1).
  for (const node of [2, 3, 1000, 123456789, 2 ** 40, Number.MAX_SAFE_INTEGER]) {
    t.is(await outcome(c.call({ getattr: { node } })), 'ESTALE', `getattr ${node}`);
    t.is(await outcome(c.call({ lookup: { parent: node, name: B('file') } })), 'ESTALE', `lookup under ${node}`);
    t.is(await outcome(c.call({ open: { node, flags: 0 } })), 'ESTALE', `open ${node}`);
    t.is(await outcome(c.call({ opendir: { node, flags: 0 } })), 'ESTALE', `opendir ${node}`);
    t.is(await outcome(c.call({ setattr: { node, mode: 0o777 } })), 'ESTALE', `setattr ${node}`);
    t.is(await outcome(c.call({ mkdir: { parent: node, name: B('x'), mode: 0o755 } })), 'ESTALE', `mkdir under ${node}`);
    t.is(await outcome(c.call({ readlink: { node } })), 'ESTALE', `readlink ${node}`);
  }
  const file = await lookup(c, 1, 'file');
  const other = await lookup(c, 1, 'd');
  for (const fh of [0, 1, 7, 99999, 2 ** 40]) {
    t.is(await outcome(c.call({ read: { node: file.nodeId, fh, offset: 0, size: 100 } })), 'EBADF', `read fh ${fh}`);
    t.is(await outcome(c.call({ write: { node: file.nodeId, fh, offset: 0 } }, Buffer.from('x'))), 'EBADF', `write fh ${fh}`);
    t.is(await outcome(c.call({ fsync: { node: file.nodeId, fh, datasync: false } })), 'EBADF', `fsync fh ${fh}`);
    t.is(await outcome(c.call({ readdir: { node: 1, fh, offset: 0, maxEntries: 10, plus: false } })), 'EBADF', `readdir fh ${fh}`);
  }
  // A real handle used with another node, a directory handle used as a file, a released handle.
  const fh = (await c.call({ open: { node: file.nodeId, flags: C.O_RDWR } })).envelope.opened!.fh!;
  t.is((await c.call({ read: { node: file.nodeId, fh, offset: 0, size: 100 } })).payload!.toString(), 'top file\n');
  t.is(await outcome(c.call({ read: { node: other.nodeId, fh, offset: 0, size: 100 } })), 'EBADF', 'handle of another node');
  const dfh = (await c.call({ opendir: { node: 1, flags: 0 } })).envelope.opened!.fh!;
  t.is(await outcome(c.call({ read: { node: 1, fh: dfh, offset: 0, size: 100 } })), 'EBADF', 'directory handle read as a file');
  t.is(await outcome(c.call({ readdir: { node: file.nodeId, fh, offset: 0, maxEntries: 10, plus: false } })), 'EBADF', 'file handle as a directory');
  await c.call({ release: { node: file.nodeId, fh } });
  t.is(await outcome(c.call({ read: { node: file.nodeId, fh, offset: 0, size: 100 } })), 'EBADF', 'released handle');
  t.is(await outcome(c.call({ write: { node: file.nodeId, fh, offset: 0 } }, Buffer.from('x'))), 'EBADF', 'released handle write');
  t.is(await fs.readFile(path.join(storage, 'file'), 'utf8'), 'top file\n');
});

test.serial('raw protocol: an export not mounted on the connection is EBADF; no Hello, no service', async (t) => {
  const c = await rawClient({ mount: false });
  t.teardown(() => c.close());
  for (const exportId of [0, 1, 2, 77]) {
    t.is(await outcome(c.call({ getattr: { node: 1 } }, undefined, exportId)), 'EBADF', `getattr on export ${exportId}`);
    t.is(await outcome(c.call({ lookup: { parent: 1, name: B('file') } }, undefined, exportId)), 'EBADF', `lookup on export ${exportId}`);
  }
  // Mounted, then an id next to it, then unmounted.
  const m = await rawClient();
  t.teardown(() => m.close());
  t.is(await outcome(m.call({ getattr: { node: 1 } })), 'OK');
  t.is(await outcome(m.call({ getattr: { node: 1 } }, undefined, m.exportId + 1)), 'EBADF');
  await m.session.request({ unmountExport: { exportId: m.exportId } });
  t.is(await outcome(m.call({ getattr: { node: 1 } })), 'EBADF', 'after unmountExport');
  t.is(await outcome(m.session.request({ unmountExport: { exportId: m.exportId } })), 'EBADF', 'unmount twice');
  // A connection that has not said Hello, and one with a wrong token.
  const { stream } = await connect(host.uri);
  const anon = new Session(stream, { logger: silentLogger(), keepaliveMs: 0 });
  t.teardown(() => anon.close());
  t.is(await outcome(anon.request({ mountExport: { name: 'default' } })), 'EACCES', 'mountExport before Hello');
  t.is(await outcome(anon.request({ exportId: 1, getattr: { node: 1 } })), 'EACCES', 'getattr before Hello');
  t.is(await outcome(anon.request({ listExports: {} })), 'EACCES', 'listExports before Hello');
  await t.throwsAsync(rawClient({ token: 'not-the-token' }), { instanceOf: FsError, message: /wrong token/ });
});

test.serial('raw protocol: node ids and handles from connection A are not valid on connection B', async (t) => {
  const a = await rawClient();
  const b = await rawClient();
  t.teardown(() => {
    a.close();
    b.close();
  });
  const d = await lookup(a, 1, 'd');
  const inner = await lookup(a, d.nodeId, 'inner');
  const file = await lookup(a, inner.nodeId, 'file');
  const fh = (await a.call({ open: { node: file.nodeId, flags: C.O_RDWR } })).envelope.opened!.fh!;
  t.is((await a.call({ read: { node: file.nodeId, fh, offset: 0, size: 100 } })).payload!.toString(), 'INNER\n');
  // B has looked nothing up: none of A's ids mean anything there.
  for (const [label, node] of [['d', d.nodeId], ['inner', inner.nodeId], ['file', file.nodeId]] as const) {
    t.is(await outcome(b.call({ getattr: { node } })), 'ESTALE', `getattr of A's ${label}`);
    t.is(await outcome(b.call({ lookup: { parent: node, name: B('file') } })), 'ESTALE', `lookup under A's ${label}`);
  }
  const refused = ['ESTALE', 'EBADF'];
  const read = await outcome(b.call({ read: { node: file.nodeId, fh, offset: 0, size: 100 } }));
  t.true(refused.includes(read), `read with A's node and handle: ${read}`);
  const write = await outcome(b.call({ write: { node: file.nodeId, fh, offset: 0 } }, Buffer.from('B was here')));
  t.true(refused.includes(write), `write with A's node and handle: ${write}`);
  // B's own handle numbers do not reach A's file either: B opens its own file and uses A's node id.
  const bTop = await lookup(b, 1, 'file');
  const bfh = (await b.call({ open: { node: bTop.nodeId, flags: C.O_RDONLY } })).envelope.opened!.fh!;
  t.not(bTop.nodeId, file.nodeId);
  const mixed = await outcome(b.call({ read: { node: file.nodeId, fh: bfh, offset: 0, size: 100 } }));
  t.true(refused.includes(mixed), `B's handle with A's node id: ${mixed}`);
  t.is(await fs.readFile(path.join(storage, 'd', 'inner', 'file'), 'utf8'), 'INNER\n');
  // A's ids die with A's connection: a new connection C does not inherit them.
  a.close();
  const c = await rawClient();
  t.teardown(() => c.close());
  t.is(await outcome(c.call({ getattr: { node: file.nodeId } })), 'ESTALE');
});

test.serial('raw protocol: ids of another export view, bad flags and oversized requests are refused; the host keeps serving', async (t) => {
  const c = await rawClient();
  t.teardown(() => c.close());
  // The same export mounted a second time on this connection is a second view with its own ids.
  const other = (await c.session.request({ mountExport: { name: 'default' } })).envelope.mountReply!.exportId!;
  t.not(other, c.exportId);
  const d = await lookup(c, 1, 'd');
  const file = await lookup(c, 1, 'file');
  const fh = (await c.call({ open: { node: file.nodeId, flags: C.O_RDONLY } })).envelope.opened!.fh!;
  t.is(await outcome(c.call({ getattr: { node: d.nodeId } }, undefined, other)), 'ESTALE', 'node id of the first view on the second');
  const crossRead = await outcome(c.call({ read: { node: file.nodeId, fh, offset: 0, size: 10 } }, undefined, other));
  t.true(['ESTALE', 'EBADF'].includes(crossRead), `handle of the first view on the second: ${crossRead}`);
  // Flags and sizes out of range.
  t.is(await outcome(c.call({ rename: { parent: 1, name: B('file'), newParent: 1, newName: B('file2'), flags: 1 << 10 } })), 'EINVAL', 'unknown rename flag');
  t.is(await outcome(c.call({ read: { node: file.nodeId, fh, offset: 0, size: 0x7fffffff } })), 'EINVAL', '2 GiB read');
  t.is(await outcome(c.call({ symlink: { parent: 1, name: B('l'), target: Buffer.from('a\0b') } })), 'EINVAL', 'NUL in a symlink target');
  t.is(await outcome(c.call({ symlink: { parent: 1, name: B('l'), target: Buffer.alloc(5000, 'a') } })), 'ENAMETOOLONG', '5000-byte symlink target');
  t.is(await outcome(c.call({ setxattr: { node: file.nodeId, name: Buffer.from('user.a\0b'), flags: 0 } }, Buffer.from('x'))), 'EINVAL', 'NUL in an xattr name');
  t.is(await outcome(c.call({ setxattr: { node: file.nodeId, name: B(''), flags: 0 } }, Buffer.from('x'))), 'ERANGE', 'empty xattr name');
  t.is(await outcome(c.call({ open: { node: file.nodeId, flags: 3 /* O_ACCMODE */ } })), 'EINVAL', 'access mode 3');
  // Still serving, and nothing changed.
  t.is((await c.call({ read: { node: file.nodeId, fh, offset: 0, size: 100 } })).payload!.toString(), 'top file\n');
  t.deepEqual((await fs.readdir(storage)).filter((n) => n === 'l' || n === 'file2'), []);
});

test.serial('raw protocol: a directory swapped for a symlink after lookup stays the renamed directory; the link is not followed', async (t) => {
  const c = await rawClient();
  t.teardown(() => c.close());
  const outsideDir = path.join(hostParent, 'outside');
  await fs.mkdir(outsideDir, { recursive: true });
  await fs.writeFile(path.join(outsideDir, 'outside-file'), 'outside\n');
  await fs.mkdir(path.join(storage, 'swap', 'inner'), { recursive: true });
  await fs.writeFile(path.join(storage, 'swap', 'inner', 'file'), 'SWAPPED-INNER\n');
  await fs.mkdir(path.join(storage, 'swap2'));
  t.teardown(async () => {
    for (const n of ['swap', 'swap2', 'swap.moved', 'swap2.moved']) await fs.rm(path.join(storage, n), { recursive: true, force: true });
    await fs.rm(outsideDir, { recursive: true, force: true });
  });
  const old = await lookup(c, 1, 'swap');
  const old2 = await lookup(c, 1, 'swap2');
  t.is(old.attr.mode & S_IFMT, S_IFDIR);

  // On the storage side: the directories go away and symlinks take their names.
  await fs.rename(path.join(storage, 'swap'), path.join(storage, 'swap.moved'));
  await fs.symlink('/', path.join(storage, 'swap'));
  await fs.rename(path.join(storage, 'swap2'), path.join(storage, 'swap2.moved'));
  await fs.symlink(outsideDir, path.join(storage, 'swap2'));
  const before = await outsideSnapshot();

  // Under the old node id: the renamed directory, never /.
  const inner = await lookup(c, old.nodeId, 'inner');
  t.is(inner.attr.ino, (await fs.stat(path.join(storage, 'swap.moved', 'inner'))).ino);
  t.is(await outcome(lookup(c, old.nodeId, 'etc')), 'ENOENT', '/etc is not reachable under the old node');
  t.is(await outcome(lookup(c, old.nodeId, 'proc')), 'ENOENT');
  const dfh = (await c.call({ opendir: { node: old.nodeId, flags: 0 } })).envelope.opened!.fh!;
  const entries = (await c.call({ readdir: { node: old.nodeId, fh: dfh, offset: 0, maxEntries: 100, plus: false } })).envelope.dir!.entries!;
  t.deepEqual(entries.map((e) => Buffer.from(e.name!).toString()).filter((n) => n !== '.' && n !== '..').sort(), ['inner']);
  await c.call({ releasedir: { node: old.nodeId, fh: dfh } });
  // Creating under the old node creates in the renamed directory.
  await c.call({ mkdir: { parent: old2.nodeId, name: B('made-under-old-id'), mode: 0o755 } });
  t.deepEqual(await fs.readdir(path.join(storage, 'swap2.moved')), ['made-under-old-id']);

  // The name now is a symlink: the host reports it as one and never walks through it.
  for (const [name, target] of [['swap', '/'], ['swap2', outsideDir]] as const) {
    const link = await lookup(c, 1, name);
    t.is(link.attr.mode & S_IFMT, S_IFLNK, `${name} is a symlink now`);
    t.is((await c.call({ readlink: { node: link.nodeId } })).payload!.toString(), target);
    const under = (n: string) => c.call({ lookup: { parent: link.nodeId, name: B(n) } });
    const refused = ['ENOTDIR', 'ELOOP'];
    for (const [op, p] of [
      ['lookup etc', under('etc')],
      ['lookup outside-file', under('outside-file')],
      ['opendir', c.call({ opendir: { node: link.nodeId, flags: 0 } })],
      ['open', c.call({ open: { node: link.nodeId, flags: C.O_RDONLY } })],
      ['mkdir', c.call({ mkdir: { parent: link.nodeId, name: B('escaped-dir'), mode: 0o755 } })],
      ['create', c.call({ create: { parent: link.nodeId, name: B('escaped-file'), mode: S_IFREG | 0o644, flags: C.O_CREAT | C.O_WRONLY } })],
      ['symlink', c.call({ symlink: { parent: link.nodeId, name: B('escaped-link'), target: B('x') } })],
      ['unlink', c.call({ unlink: { parent: link.nodeId, name: B('outside-file') } })],
      ['rename out', c.call({ rename: { parent: link.nodeId, name: B('outside-file'), newParent: 1, newName: B('stolen'), flags: 0 } })],
    ] as const) {
      const got = await outcome(p);
      t.true(refused.includes(got), `${op} under the ${name} symlink node: ${got}`);
    }
    // Changes addressed to the link node touch the link at most, never what it points to.
    await outcome(c.call({ setattr: { node: link.nodeId, uid: 4321, gid: 4321 } }));
    await outcome(c.call({ setattr: { node: link.nodeId, mode: 0o700 } }));
    await outcome(c.call({ setxattr: { node: link.nodeId, name: B('user.escaped'), flags: 0 } }, Buffer.from('x')));
  }
  const rootStat = await fs.stat('/');
  t.is(rootStat.uid, 0);
  t.is(rootStat.mode & 0o7777, 0o755);
  await t.throwsAsync(fs.access('/escaped-dir'));
  await t.throwsAsync(fs.access('/escaped-file'));
  t.is(await outsideSnapshot(), before, 'nothing outside the storage changed');
  t.deepEqual(await fs.readdir(outsideDir), ['outside-file']);
  t.regex((await sh(`getfattr -n user.escaped ${outsideDir}`)).stderr, /No such attribute/);
});

// ---- the same swap while a guest shell walks the mount -----------------------------------------

test.serial('a directory swapped for symlinks (to /, and to ../secret) while a guest shell walks it: nothing of the host side shows', async (t) => {
  const walk = path.join(storage, 'walk');
  const d = path.join(walk, 'd');
  const away = path.join(walk, 'd.away');
  await fs.mkdir(path.join(d, 'inner'), { recursive: true });
  await fs.writeFile(path.join(d, 'inner', 'file'), 'WALK-INNER\n');
  await fs.writeFile(path.join(d, 'SECRET'), 'NOT-A-SECRET-INSIDE\n');
  t.teardown(() => fs.rm(walk, { recursive: true, force: true }));
  const before = await outsideSnapshot();

  // Two walkers: one whose cwd is the directory (its node stays pinned while the name changes
  // under it), one that walks from the top each time. Each says when it is in place; the swapping
  // starts after that.
  const seconds = 5;
  const ready = (n: string) => path.join(work, `walker-${n}-ready`);
  const walker = (n: string, prelude: string, body: string) =>
    sh(`${prelude} && touch ${ready(n)} && end=$((SECONDS + ${seconds})) && n=0 && while [ $SECONDS -lt $end ]; do ${body}; n=$((n + 1)); done; echo "ITERATIONS $n"`, {
      timeoutMs: 60_000,
    });
  await fs.rm(ready('pinned'), { force: true });
  await fs.rm(ready('top'), { force: true });
  const pinned = walker('pinned', `cd ${mnt}/walk/d && [ -f inner/file ]`, 'cat inner/file SECRET 2>/dev/null; ls -a 2>/dev/null; ls inner 2>/dev/null; cat ../../../secret/SECRET 2>/dev/null');
  const fromTop = walker(
    'top',
    'true',
    `[ -L ${mnt}/walk/d ] && echo SAW-LINK; cat ${mnt}/walk/d/inner/file ${mnt}/walk/d/SECRET 2>/dev/null; ls ${mnt}/walk/d/ 2>/dev/null; ` +
      `find ${mnt}/walk -maxdepth 3 2>/dev/null; cat ${mnt}/walk/d/../d/SECRET 2>/dev/null`,
  );
  let done = false;
  const settled = Promise.all([pinned, fromTop]).finally(() => (done = true));
  await waitFor(async () => done || ((await exists(ready('pinned'))) && (await exists(ready('top')))), 'the walkers to start');
  let swaps = 0;
  const targets = ['/', '../../secret'];
  while (!done) {
    await fs.rename(d, away);
    await fs.symlink(targets[swaps % 2], d);
    await sleep(3);
    await fs.unlink(d);
    await fs.rename(away, d);
    await sleep(3);
    swaps++;
  }
  const [p, f] = await settled;
  const all = p.stdout + f.stdout;
  t.true(swaps > 10, `swaps: ${swaps}`);
  t.notRegex(all, /HOST-SECRET/, 'the host-side secret never shows');
  t.notRegex(all, /HOST_SIDE_MARKER|HOST_PARENT_MARKER|VICTIM/, 'nothing next to the storage shows');
  // The walker in the directory did walk (that it can on every round is the next test's subject).
  const iterations = Number(/ITERATIONS (\d+)/.exec(p.stdout)?.[1] ?? 0);
  t.true(iterations > 0, p.stdout.slice(-2000));
  t.true((p.stdout.match(/WALK-INNER/g) ?? []).length > 0, `the pinned walker read its directory: ${p.stdout.slice(0, 1500)} ${p.stderr.slice(0, 1500)}`);
  // ...and saw the swapped state too (the race happened).
  const sawLink = (f.stdout.match(/SAW-LINK/g) ?? []).length;
  t.log(`${swaps} swaps; ${iterations} rounds in the directory, ${(p.stdout.match(/WALK-INNER/g) ?? []).length} reads there; the walker from the top read the file ${(f.stdout.match(/WALK-INNER/g) ?? []).length} times and saw the symlink ${sawLink} times`);
  t.true(sawLink > 0);
  t.regex(p.stdout, /ITERATIONS [1-9]/);
  t.regex(f.stdout, /ITERATIONS [1-9]/);
  t.is(await outsideSnapshot(), before, 'nothing outside the storage changed');
  t.is(await fs.readFile(path.join(d, 'inner', 'file'), 'utf8'), 'WALK-INNER\n');
  // And the mount is still healthy afterwards.
  t.is(await shOk(`cat ${mnt}/walk/d/inner/file`), 'WALK-INNER\n');
});

test.serial('a guest process whose cwd is a directory swapped for a symlink and back keeps using that directory', async (t) => {
  const name = 'cwdswap';
  const sdir = path.join(storage, name);
  await fs.mkdir(sdir);
  await fs.writeFile(path.join(sdir, 'file'), 'still here\n');
  t.teardown(async () => {
    await fs.rm(path.join(storage, `${name}.away`), { recursive: true, force: true });
    await fs.rm(sdir, { recursive: true, force: true });
  });
  // One python process in the guest: its cwd is the directory; the storage side changes are made
  // by the same process on the storage path (as another storage client would), step by step, each
  // step waiting until the guest sees it.
  const r = await pyJson(`
    m, s = sys.argv[1:3]
    def until(cond, what, timeout=10):
        end = time.time() + timeout
        while not cond():
            if time.time() > end: raise SystemExit("timed out waiting for " + what)
            time.sleep(0.02)
    def try_read():
        try: return read("file").decode()
        except OSError as e: return errno.errorcode.get(e.errno)
    res = {}
    os.chdir(m)
    res["before"] = try_read()
    os.rename(s, s + ".away")
    os.symlink("/", s)
    until(lambda: os.path.islink(m), "the guest to see the symlink")
    res["swapped"] = [try_read(), os.path.realpath(m)]
    os.unlink(s)
    os.rename(s + ".away", s)
    until(lambda: os.path.isdir(m) and not os.path.islink(m), "the guest to see the directory again")
    # the cwd is the same directory inode all along: reading in it must work again at once (or
    # after a short settling of pushed invalidations)
    end = time.time() + 2
    after = try_read()
    while after != "still here\\n" and time.time() < end:
        time.sleep(0.05)
        after = try_read()
    res["after"] = after
    res["listdir"] = err(lambda: sorted(os.listdir(".")))
    def create():
        with open("created-in-cwd", "w") as f: f.write("x")
        return os.path.exists(s + "/created-in-cwd")
    res["created"] = err(create)
    out(res)
  `, [path.join(mnt, name), sdir]);
  t.is(r.before, 'still here\n');
  t.is(r.swapped[0], 'still here\n', 'while the name is a symlink, the cwd is still the directory');
  t.is(r.swapped[1], '/', 'and the name leads to the guest\'s own /');
  t.is(r.after, 'still here\n', 'after the swap back');
  t.deepEqual(r.listdir, ['file']);
  t.is(r.created, true, JSON.stringify(r.created));
});
