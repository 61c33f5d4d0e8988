// The storage map against real filesystems: two storage nodes of different size (tmpfs mounts made
// here, 64 MiB "big" and 16 MiB "small"), directories found where they are, created on the node
// with the most room above its reserve, prefix rules before probing, symlinks never followed.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { StorageMap, StorageError, NodeIo, pickNode, parseBytes, parseDuration, formatBytes, type Resolution, type Candidate } from '../host-agent/storage/index.js';
import type { StorageConfig, StorageNodeConfig } from '../host-agent/config.js';
import { silentLogger } from '../shared/log.js';
import { capturingLogger } from './helpers/log.js';
import { tempDir } from './helpers/sockets.js';

const MiB = 2 ** 20;
const base = tempDir('dirvisor-storage-');
const BIG = path.join(base, 'big');
const SMALL = path.join(base, 'small');
const OUTSIDE = path.join(base, 'outside'); // on the host's root filesystem, outside every node
const mounted: string[] = [];

function mountTmpfs(dir: string, size: string): void {
  fs.mkdirSync(dir, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', dir]);
  mounted.push(dir);
}

test.before(() => {
  mountTmpfs(BIG, '64m');
  mountTmpfs(SMALL, '16m');
  fs.mkdirSync(OUTSIDE);
});

test.after.always(() => {
  for (const dir of mounted.reverse()) {
    try {
      execFileSync('umount', [dir]);
    } catch {
      execFileSync('umount', ['-l', dir]);
    }
  }
  fs.rmSync(base, { recursive: true, force: true });
});

function node(name: string, p: string, extra: Partial<StorageNodeConfig> = {}): StorageNodeConfig {
  return { name, backend: 'posix', path: p, prefixes: [], placement: true, requireMount: true, ...extra };
}

function storage(nodes: StorageNodeConfig[], extra: Partial<StorageConfig['placement']> & { timeoutMs?: number } = {}): StorageConfig {
  const { timeoutMs = 5000, ...placement } = extra;
  return { nodes, placement: { reserve: { bytes: MiB }, skipUnreachable: false, ...placement }, timeoutMs, ioTimeoutMs: 30_000, maxCallsPerNode: 8, mountCheckIntervalMs: 1000 };
}

function map(cfg: StorageConfig) {
  const { logger, lines } = capturingLogger();
  return { map: new StorageMap(cfg, logger), lines };
}

/** A file of `mib` MiB on a node, removed when the test ends. */
function fill(t: import('ava').ExecutionContext, dir: string, mib: number): void {
  const file = path.join(dir, `fill-${mib}-${Date.now()}`);
  fs.writeFileSync(file, Buffer.alloc(mib * MiB, 1));
  t.teardown(() => fs.rmSync(file, { force: true }));
}

function freeMiB(dir: string): number {
  const s = fs.statfsSync(dir);
  return (s.bavail * s.bsize) / MiB;
}

function isDir(p: string): boolean {
  return fs.lstatSync(p, { throwIfNoEntry: false })?.isDirectory() ?? false;
}

function rm(t: import('ava').ExecutionContext, ...paths: string[]): void {
  t.teardown(() => {
    for (const p of paths) fs.rmSync(p, { recursive: true, force: true });
  });
}

test.serial('a new directory lands on the node with more free space, with the reason logged and kept', async (t) => {
  // "small" first in the config: the choice is by space, not by order.
  const { map: m, lines } = map(storage([node('small', SMALL), node('big', BIG)]));
  rm(t, path.join(BIG, 'new'), path.join(SMALL, 'new'));
  const r = await m.resolve('/new/one', { create: true });
  t.like(r, { dir: '/new/one', node: 'big', hostPath: path.join(BIG, 'new/one'), created: true });
  t.regex(r.reason, /^created on big: most free space, 64 MiB free \(reserve 1 MiB\); also had room: small 16 MiB free \(reserve 1 MiB\)$/);
  t.deepEqual(r.considered, [
    { node: 'small', note: 'does not hold it; 16 MiB free (reserve 1 MiB)' },
    { node: 'big', note: 'does not hold it; 64 MiB free (reserve 1 MiB); created it here' },
  ]);
  t.true(isDir(path.join(BIG, 'new/one')));
  t.false(fs.existsSync(path.join(SMALL, 'new')));

  const logged = lines.find((l) => l.msg === 'storage directory created');
  t.like(logged, { dir: '/new/one', node: 'big', created: true, reason: r.reason });
  t.like(m.decisions().at(-1), { dir: '/new/one', create: true, outcome: 'created', node: 'big', reason: r.reason });

  // Asked again: found where it was created.
  const again = await m.resolve('/new/one', { create: true });
  t.like(again, { node: 'big', created: false, reason: 'found on node big' });
});

test.serial('an existing directory is found where it is, even on the smaller node', async (t) => {
  const { map: m } = map(storage([node('big', BIG), node('small', SMALL)]));
  fs.mkdirSync(path.join(SMALL, 'exists/here'), { recursive: true });
  rm(t, path.join(SMALL, 'exists'), path.join(BIG, 'exists'));
  t.like(await m.resolve('/exists/here'), { node: 'small', hostPath: path.join(SMALL, 'exists/here'), created: false, reason: 'found on node small' });
  t.like(await m.resolve('/exists/here', { create: true }), { node: 'small', created: false });
  t.false(fs.existsSync(path.join(BIG, 'exists')));

  // On both: the first in the config, and the reason says so.
  fs.mkdirSync(path.join(BIG, 'exists/here'), { recursive: true });
  const both = await m.resolve('/exists/here');
  t.is(both.node, 'big');
  t.is(both.reason, 'found on nodes big, small; using big, the first in host.yaml');

  // Nowhere, and creation not asked for: ENOENT naming the nodes looked at.
  const err = await t.throwsAsync(m.resolve('/exists/not'), { instanceOf: StorageError });
  t.is(err!.code, 'ENOENT');
  t.is(err!.message, '/exists/not does not exist on any storage node (looked on big, small); creation was not asked for');
  t.false(fs.existsSync(path.join(BIG, 'exists/not')));
  t.like(m.decisions().at(-1), { dir: '/exists/not', outcome: 'failed', code: 'ENOENT' });
});

test.serial('prefix rules win over probing; the longest prefix wins, by whole components', async (t) => {
  const { map: m } = map(storage([node('big', BIG), node('small', SMALL, { prefixes: ['/teams'] })]));
  // /teams/red exists on big, but /teams belongs to small.
  fs.mkdirSync(path.join(BIG, 'teams/red'), { recursive: true });
  rm(t, path.join(BIG, 'teams'), path.join(SMALL, 'teams'), path.join(BIG, 'teamster'));
  const err = await t.throwsAsync(m.resolve('/teams/red'), { instanceOf: StorageError });
  t.is(err!.code, 'ENOENT');
  t.is(err!.message, '/teams/red does not exist on node small, which serves it by its prefix /teams; creation was not asked for');
  const r = await m.resolve('/teams/red', { create: true });
  t.like(r, { node: 'small', hostPath: path.join(SMALL, 'teams/red'), created: true, reason: 'created on small: prefix /teams of node small' });
  t.like(await m.resolve('/teams/red'), { node: 'small', created: false, reason: 'prefix /teams of node small' });
  // "/teamster" is not under "/teams": it goes by probing and placement.
  t.like(await m.resolve('/teamster', { create: true }), { node: 'big', created: true });

  // Nested prefixes on two nodes: the longest wins.
  const { map: nested } = map(storage([node('big', BIG, { prefixes: ['/teams'] }), node('small', SMALL, { prefixes: ['/teams/blue'] })]));
  t.like(await nested.resolve('/teams/blue/x', { create: true }), { node: 'small', reason: 'created on small: prefix /teams/blue of node small' });
  t.like(await nested.resolve('/teams/bluegreen', { create: true }), { node: 'big', reason: 'created on big: prefix /teams of node big' });
  t.true(isDir(path.join(SMALL, 'teams/blue/x')));
  t.true(isDir(path.join(BIG, 'teams/bluegreen')));
  // No prefix covers it and no node is in the general pool.
  const none = await t.throwsAsync(nested.resolve('/elsewhere', { create: true }), { instanceOf: StorageError });
  t.is(none!.code, 'ENOENT');
  t.is(none!.message, "no storage node serves /elsewhere: it is under no node's prefixes (big: /teams; small: /teams/blue), and no node is in the general pool (a node without prefixes)");
});

test.serial('the reserve is respected: a node at or under its reserve gets nothing new, even with more raw free space', async (t) => {
  // Reserve 50%: big keeps 32 MiB, small keeps 8 MiB.
  const { map: m } = map(storage([node('big', BIG), node('small', SMALL)], { reserve: { percent: 50 } }));
  rm(t, path.join(BIG, 'reserved'), path.join(SMALL, 'reserved'), path.join(BIG, 'reserve-override'));
  fill(t, BIG, 34);
  t.true(freeMiB(BIG) > freeMiB(SMALL), 'big still has more raw free space than small');
  const r = await m.resolve('/reserved/dir', { create: true });
  t.like(r, { node: 'small', created: true });
  t.is(r.reason, 'created on small: the only node with room, 16 MiB free (reserve 8 MiB); not eligible: big 30 MiB free (reserve 32 MiB)');
  t.false(fs.existsSync(path.join(BIG, 'reserved')));

  // A per-node reserve overrides the global one.
  const { map: m2 } = map(storage([node('big', BIG, { reserve: { bytes: 4 * MiB } }), node('small', SMALL)], { reserve: { percent: 50 } }));
  t.like(await m2.resolve('/reserve-override', { create: true }), { node: 'big', reason: 'created on big: most free space, 30 MiB free (reserve 4 MiB); also had room: small 16 MiB free (reserve 8 MiB)' });
});

test.serial('a full map gives a clear ENOSPC naming every node, its free space and reserve', async (t) => {
  const { map: m } = map(storage([node('big', BIG), node('small', SMALL), node('archive', path.join(BIG, 'archive-node'), { placement: false, requireMount: false })], { reserve: { percent: 50 } }));
  fs.mkdirSync(path.join(BIG, 'archive-node'));
  rm(t, path.join(BIG, 'archive-node'));
  fill(t, BIG, 34);
  fill(t, SMALL, 9);
  const err = await t.throwsAsync(m.resolve('/full/dir', { create: true }), { instanceOf: StorageError });
  t.is(err!.code, 'ENOSPC');
  t.is(err!.errno, 28);
  t.is(err!.message, 'no storage node has room for /full/dir: big 30 MiB free (reserve 32 MiB), small 7 MiB free (reserve 8 MiB), archive not eligible (placement: false)');
  t.false(fs.existsSync(path.join(BIG, 'full')));
  t.false(fs.existsSync(path.join(SMALL, 'full')));
  t.like(m.decisions().at(-1), { dir: '/full/dir', outcome: 'failed', code: 'ENOSPC', reason: err!.message });
  // Lookups of existing directories still work on a full map.
  fs.mkdirSync(path.join(SMALL, 'full-but-found'));
  rm(t, path.join(SMALL, 'full-but-found'));
  t.like(await m.resolve('/full-but-found', { create: true }), { node: 'small', created: false });
});

test.serial('a symlink planted in the storage path is never followed, at any component', async (t) => {
  const { map: m } = map(storage([node('big', BIG), node('small', SMALL)]));
  fs.symlinkSync(OUTSIDE, path.join(BIG, 'evil'));
  fs.mkdirSync(path.join(BIG, 'deep/er'), { recursive: true });
  fs.symlinkSync(OUTSIDE, path.join(BIG, 'deep/er/link'));
  fs.writeFileSync(path.join(BIG, 'plainfile'), 'x');
  rm(t, path.join(BIG, 'evil'), path.join(BIG, 'deep'), path.join(BIG, 'plainfile'), path.join(SMALL, 'evil'), path.join(SMALL, 'deep'));

  for (const [dir, where] of [['/evil/sub', '/evil'], ['/evil', '/evil'], ['/deep/er/link/x/y', '/deep/er/link']]) {
    for (const create of [false, true]) {
      const err = await t.throwsAsync(m.resolve(dir, { create }), { instanceOf: StorageError });
      t.is(err!.code, 'ELOOP');
      t.is(err!.message, `cannot use ${dir}: on node big, ${where} is a symlink; dirvisor never follows symlinks on storage`);
    }
  }
  const file = await t.throwsAsync(m.resolve('/plainfile/x', { create: true }), { instanceOf: StorageError });
  t.is(file!.code, 'ENOTDIR');
  t.is(file!.message, 'cannot use /plainfile/x: on node big, /plainfile exists but is not a directory');
  t.deepEqual(fs.readdirSync(OUTSIDE), [], 'nothing was created through the symlinks');
  t.false(fs.existsSync(path.join(SMALL, 'evil')), 'nor placed on the other node behind the symlink\'s back');

  // The same under a prefix rule.
  const { map: byPrefix } = map(storage([node('big', BIG, { prefixes: ['/deep'] }), node('small', SMALL)]));
  const err = await t.throwsAsync(byPrefix.resolve('/deep/er/link/z', { create: true }), { instanceOf: StorageError });
  t.is(err!.code, 'ELOOP');
  t.is(err!.message, 'cannot use /deep/er/link/z: on node big, /deep/er/link is a symlink; dirvisor never follows symlinks on storage');
  t.deepEqual(fs.readdirSync(OUTSIDE), []);
});

test.serial('created directories get the owner and mode asked for (no umask), existing ones are left alone', async (t) => {
  const { map: m } = map(storage([node('big', BIG), node('small', SMALL)]));
  // /o exists on small only: the new tree goes there, next to its parent, although big is freer.
  fs.mkdirSync(path.join(SMALL, 'o'), { mode: 0o711 });
  rm(t, path.join(SMALL, 'o'), path.join(BIG, 'o'), path.join(BIG, 'plain'));
  const r = await m.resolve('/o/p/q', { create: true, owner: { uid: 1234, gid: 5678 }, mode: 0o777 });
  t.like(r, { node: 'small', created: true });
  t.is(r.reason, 'created on small: it holds /o and has room, 16 MiB free (reserve 1 MiB); also had room: big 64 MiB free (reserve 1 MiB)');
  const o = fs.statSync(path.join(SMALL, 'o'));
  t.deepEqual([o.uid, o.gid, o.mode & 0o7777], [0, 0, 0o711]);
  for (const p of ['o/p', 'o/p/q']) {
    const st = fs.statSync(path.join(SMALL, p));
    t.deepEqual([st.uid, st.gid, st.mode & 0o7777], [1234, 5678, 0o777], p);
  }
  // Defaults: root:root, 0755.
  const plain = await m.resolve('/plain/dir', { create: true });
  for (const p of ['plain', 'plain/dir']) {
    const st = fs.statSync(path.join(BIG, p));
    t.deepEqual([st.uid, st.gid, st.mode & 0o7777], [0, 0, 0o755], p);
  }
  t.is(plain.node, 'big');
  // A set-gid mode is kept as given.
  await m.resolve('/plain/sgid', { create: true, mode: 0o2750, owner: { uid: 7, gid: 8 } });
  const sgid = fs.statSync(path.join(BIG, 'plain/sgid'));
  t.deepEqual([sgid.uid, sgid.gid, sgid.mode & 0o7777], [7, 8, 0o2750]);
});

test.serial('unreachable nodes are skipped with a reason; creation waits for them unless skip_unreachable', async (t) => {
  // A directory on the root filesystem, as a mount point is when its NFS is not mounted.
  const onRoot = fs.statSync(base).dev === fs.statSync('/').dev;
  const notMounted = onRoot ? path.join(base, 'not-mounted') : fs.mkdtempSync('/.dirvisor-test-');
  fs.mkdirSync(notMounted, { recursive: true });
  t.teardown(() => fs.rmSync(notMounted, { recursive: true, force: true }));
  const nodes = [node('big', BIG), node('ghost', path.join(base, 'no-such-dir')), node('local', notMounted)];
  const { map: m, lines } = map(storage(nodes));
  fs.mkdirSync(path.join(BIG, 'known'));
  rm(t, path.join(BIG, 'known'), path.join(BIG, 'maybe'));

  const found = await m.resolve('/known');
  t.is(found.node, 'big');
  t.is(found.reason, 'found on node big; not checked: ghost, local (unreachable)');
  t.regex(found.considered[1].note, /^unreachable: node ghost: .*no-such-dir is not usable: no such file or directory \(ENOENT\)$/);
  t.regex(found.considered[2].note, /^unreachable: node local: .*not-mounted is on the host's root filesystem, so its network filesystem is not mounted \(set require_mount: false if that is intended\)$/);

  const lookup = await t.throwsAsync(m.resolve('/maybe'), { instanceOf: StorageError });
  t.is(lookup!.code, 'EHOSTUNREACH');
  t.regex(lookup!.message, /^\/maybe was not found on big, and ghost \(.*\), local \(.*\) could not be checked$/);
  const refused = await t.throwsAsync(m.resolve('/maybe', { create: true }), { instanceOf: StorageError });
  t.is(refused!.code, 'EHOSTUNREACH');
  t.regex(refused!.message, /^\/maybe was not created: no reachable node holds it, but ghost \(.*\), local \(.*\) could not be checked and may hold it; retry when it is back \(or set storage\.placement\.skip_unreachable: true\)$/);
  t.false(fs.existsSync(path.join(BIG, 'maybe')));
  t.true(lines.some((l) => l.msg === 'storage node skipped' && l.node === 'ghost'));

  const { map: skipping } = map(storage(nodes, { skipUnreachable: true }));
  const r = await skipping.resolve('/maybe', { create: true });
  t.like(r, { node: 'big', created: true });
  t.regex(r.reason, /^created on big: the only node with room, 64 MiB free \(reserve 1 MiB\); not eligible: ghost unreachable, local unreachable$/);

  // A prefix node that is unreachable is an error, never a fallback to another node.
  const { map: prefixed } = map(storage([node('big', BIG), node('ghost', path.join(base, 'no-such-dir'), { prefixes: ['/g'] })]));
  const g = await t.throwsAsync(prefixed.resolve('/g/x', { create: true }), { instanceOf: StorageError });
  t.is(g!.code, 'EHOSTUNREACH');
  t.regex(g!.message, /^\/g\/x belongs to node ghost by its prefix \/g, but the node is unreachable: /);
  t.false(fs.existsSync(path.join(BIG, 'g')));

  // require_mount: false accepts a node on the root filesystem.
  const { map: local } = map(storage([node('local', notMounted, { requireMount: false })]));
  t.like(await local.resolve('/here', { create: true }), { node: 'local', created: true });

  const status = await m.nodeStatus();
  t.like(status[0], { name: 'big', reachable: true, totalBytes: 64 * MiB, reserveBytes: MiB });
  t.like(status[1], { name: 'ghost', reachable: false });
  t.regex(status[2].problem!, /not mounted/);
});

test.serial('a node whose calls hang is cut off after the deadline and fails fast until the call returns', async (t) => {
  const io = new NodeIo('frozen', 100);
  let release!: (fd: number) => void;
  const lateResults: number[] = [];
  const started = Date.now();
  const hung = io.run('statfs /mnt/frozen', () => new Promise<number>((r) => (release = r)), (late) => lateResults.push(late));
  const err = await t.throwsAsync(hung, { instanceOf: StorageError });
  t.is(err!.code, 'ETIMEDOUT');
  t.is(err!.message, 'node frozen: statfs /mnt/frozen did not return within 100 ms');
  t.true(Date.now() - started < 1000);
  t.truthy(io.stalled);

  let ran = false;
  const fast = await t.throwsAsync(io.run('lstat /x', async () => { ran = true; return 1; }), { instanceOf: StorageError });
  t.is(fast!.code, 'EHOSTUNREACH');
  t.regex(fast!.message, /^node frozen is not responding: statfs \/mnt\/frozen has been blocked for [\d.]+ m?s$/);
  t.false(ran, 'no further call is made on a stuck node');

  release(42); // the kernel finally answers
  await new Promise((r) => setImmediate(r));
  t.deepEqual(lateResults, [42], 'the late result is disposed of');
  t.is(io.stalled, null);
  t.is(await io.run('lstat /x', async () => 7), 7);
});

test.serial('concurrent requests for the same new directory create it once, on one node', async (t) => {
  const { map: m } = map(storage([node('big', BIG), node('small', SMALL)]));
  rm(t, path.join(BIG, 'race'), path.join(SMALL, 'race'));
  const results: Resolution[] = await Promise.all([1, 2, 3].map(() => m.resolve('/race/dir', { create: true })));
  t.deepEqual(results.map((r) => r.node), ['big', 'big', 'big']);
  t.deepEqual(results.map((r) => r.created), [true, false, false]);
});

test.serial('bad requests are refused with EINVAL before touching storage', async (t) => {
  const m = new StorageMap(storage([node('big', BIG)]), silentLogger());
  const cases: Array<[string, object, RegExp]> = [
    ['projects', {}, /^storage directory must be an absolute path, got "projects"$/],
    ['/a/../b', {}, /^storage directory must not contain "\.\." components/],
    ['/a//b', {}, /did you mean "\/a\/b"\?$/],
    ['/a/', {}, /did you mean "\/a"\?$/],
    ['/', {}, /^storage directory must name a directory below "\/"$/],
    ['/ok', { mode: 0o10000 }, /^mode must be from 0 to 0o7777/],
    ['/ok', { owner: { uid: -1, gid: 0 } }, /^owner ids must be from 0 to 4294967294, got -1$/],
  ];
  for (const [dir, opts, message] of cases) {
    const err = await t.throwsAsync(m.resolve(dir, { create: true, ...opts }), { instanceOf: StorageError, message });
    t.is(err!.code, 'EINVAL');
  }
  t.false(fs.existsSync(path.join(BIG, 'ok')));
});

test('placement policy: room above the reserve, then the deepest ancestor, then headroom, then config order', (t) => {
  const c = (name: string, order: number, free: number, reserve: number, depth = 0): Candidate => ({ name, order, totalBytes: 100, freeBytes: free, reserveBytes: reserve, depth });
  t.is(pickNode([c('a', 0, 50, 10), c('b', 1, 80, 10)])!.chosen.name, 'b');
  t.is(pickNode([c('a', 0, 50, 10), c('b', 1, 50, 10)])!.chosen.name, 'a');
  t.is(pickNode([c('a', 0, 50, 10), c('b', 1, 80, 75)])!.chosen.name, 'a');
  t.is(pickNode([c('a', 0, 10, 10), c('b', 1, 5, 10)]), null);
  t.is(pickNode([c('a', 0, 90, 10), c('b', 1, 30, 10, 2), c('c', 2, 60, 10, 1)])!.chosen.name, 'b');
  t.is(pickNode([c('a', 0, 90, 10), c('b', 1, 10, 10, 2)])!.chosen.name, 'a', 'an ancestor on a full node does not count');
  t.is(pickNode([]), null);
});

test('sizes and durations as operators write them, bytes as people read them', (t) => {
  t.is(parseBytes('1048576'), 1048576);
  t.is(parseBytes('5GiB'), 5 * 2 ** 30);
  t.is(parseBytes('5 G'), 5 * 2 ** 30);
  t.is(parseBytes('1.5MiB'), 1.5 * MiB);
  t.is(parseBytes('500MB'), 500e6);
  t.is(parseBytes('2tb'), 2e12);
  t.regex(String(parseBytes('5 GiBs')), /^must be a size like/);
  t.is(parseDuration('500ms'), 500);
  t.is(parseDuration('5s'), 5000);
  t.is(parseDuration('2m'), 120_000);
  t.is(parseDuration(3), 3000);
  t.deepEqual([0, 512, 1024, 95 * MiB, 12.3 * 2 ** 30, 2038431744, 1.5 * 2 ** 40].map(formatBytes), ['0 B', '512 B', '1 KiB', '95 MiB', '12.3 GiB', '1.9 GiB', '1.5 TiB']);
});
