// The storage map against a real distributed filesystem: a single-node Ceph cluster (CephFS over
// ceph-fuse, ../shared/ceph) configured in host.yaml as a storage node next to a small local one.
// A directory is resolved and created on CephFS, a file is written under the resolved host path,
// and both are checked through a second, independent ceph-fuse client (as another hypervisor
// would see them).
import test from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { parseConfig } from '../host-agent/config.js';
import { StorageMap, StorageError } from '../host-agent/storage/index.js';
import { capturingLogger } from './helpers/log.js';
import { cephTests, installAndStartCeph, cephMountsUnder, type CephCluster } from './helpers/ceph.js';

const { available, cephTest, title } = cephTests('ceph-storage');

let ceph: CephCluster | undefined;
let second: string | undefined;
let smallNode: string | undefined;
const timings: Record<string, number> = {};

test.before(async (t) => {
  if (!available) return;
  ceph = await installAndStartCeph(t, timings);
  const t0 = Date.now();
  second = await ceph.mountClient('second-client');
  timings.second_mount_s = (Date.now() - t0) / 1000;
  // A small local node beside CephFS, so that placement has a real choice to make.
  smallNode = path.join(ceph.base, 'small-node');
  fs.mkdirSync(smallNode);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=32m', 'tmpfs', smallNode]);
});

test.after.always(async (t) => {
  if (smallNode && fs.existsSync(smallNode)) {
    try {
      execFileSync('umount', [smallNode]);
    } catch {
      execFileSync('umount', ['-l', smallNode]);
    }
  }
  if (!ceph) return;
  const { seconds } = await ceph.down();
  timings.down_s = seconds;
  t.log(`timings: ${JSON.stringify(timings)}`);
  t.deepEqual(cephMountsUnder(ceph.base), [], 'no ceph-fuse mount is left behind');
  t.false(fs.existsSync(ceph.base), 'the work directory is gone');
});

function hostYaml(nodes: string): string {
  return `storage:\n  placement:\n    reserve: 1MiB\n  nodes:\n${nodes}`;
}

cephTest(title('a CephFS mount as a storage node: a new directory is created there, written on the host and read by a second ceph-fuse client'), async (t) => {
  t.timeout(5 * 60_000);
  const c = ceph!;
  const cfg = parseConfig(hostYaml(`    - name: small\n      path: ${smallNode}\n    - name: cephfs\n      path: ${c.mount}\n`), 'ceph-test host.yaml');
  const { logger, lines } = capturingLogger();
  const storage = new StorageMap(cfg.storage, logger);

  const status = await storage.nodeStatus();
  t.like(status[1], { name: 'cephfs', reachable: true });
  t.true(status[1].freeBytes! > status[0].freeBytes!, `CephFS reports more free space (${status[1].freeBytes}) than the 32 MiB node`);
  t.log(`cephfs: ${status[1].totalBytes} bytes, ${status[1].freeBytes} free`);

  let t0 = Date.now();
  const r = await storage.resolve('/projects/alpha', { create: true, owner: { uid: 1000, gid: 1000 }, mode: 0o2775 });
  timings.resolve_create_ms = Date.now() - t0;
  t.like(r, { node: 'cephfs', hostPath: path.join(c.mount, 'projects/alpha'), created: true });
  t.regex(r.reason, /^created on cephfs: most free space, [\d.]+ [GM]iB free \(reserve 1 MiB\); also had room: small 32 MiB free \(reserve 1 MiB\)$/);
  t.true(lines.some((l) => l.msg === 'storage directory created' && l.node === 'cephfs'));

  // Write under the resolved host path, durably.
  const data = crypto.randomBytes(1 << 20);
  const file = path.join(r.hostPath, 'hello.bin');
  const fd = fs.openSync(file, 'w', 0o644);
  fs.writeSync(fd, data);
  fs.fsyncSync(fd);
  fs.closeSync(fd);

  // The second client: its own ceph-fuse process, MDS session and caches.
  const seen = path.join(second!, 'projects/alpha');
  const st = fs.statSync(seen);
  t.true(st.isDirectory());
  t.deepEqual([st.uid, st.gid, st.mode & 0o7777], [1000, 1000, 0o2775], 'owner and mode as asked, seen by the other client');
  const parent = fs.statSync(path.join(second!, 'projects'));
  t.deepEqual([parent.uid, parent.gid, parent.mode & 0o7777], [1000, 1000, 0o2775], 'intermediate directories too');
  const back = fs.readFileSync(path.join(seen, 'hello.bin'));
  t.is(back.length, data.length);
  t.true(back.equals(data), 'the bytes read through the second client are the ones written on the host');
  t.false(fs.existsSync(path.join(smallNode!, 'projects')));

  // Resolving again finds it where it is, without creating anything.
  t0 = Date.now();
  t.like(await storage.resolve('/projects/alpha'), { node: 'cephfs', created: false, reason: 'found on node cephfs' });
  timings.resolve_found_ms = Date.now() - t0;
});

cephTest(title('directories made by another CephFS client are found there; a prefix rule sends a directory to CephFS'), async (t) => {
  t.timeout(5 * 60_000);
  const c = ceph!;
  // Another client (another hypervisor) makes a directory; this host's map finds it on CephFS.
  fs.mkdirSync(path.join(second!, 'shared/beta'), { recursive: true });
  const pool = new StorageMap(parseConfig(hostYaml(`    - name: small\n      path: ${smallNode}\n    - name: cephfs\n      path: ${c.mount}\n`)).storage, capturingLogger().logger);
  t.like(await pool.resolve('/shared/beta'), { node: 'cephfs', hostPath: path.join(c.mount, 'shared/beta'), created: false, reason: 'found on node cephfs' });

  // With the small node first and CephFS serving /teams by prefix: /teams/* goes to CephFS, never probed elsewhere.
  fs.mkdirSync(path.join(smallNode!, 'teams/red'), { recursive: true });
  t.teardown(() => fs.rmSync(path.join(smallNode!, 'teams'), { recursive: true, force: true }));
  const byPrefix = new StorageMap(parseConfig(hostYaml(`    - name: small\n      path: ${smallNode}\n    - name: cephfs\n      path: ${c.mount}\n      prefixes: [ /teams ]\n`)).storage, capturingLogger().logger);
  const err = await t.throwsAsync(byPrefix.resolve('/teams/red'), { instanceOf: StorageError });
  t.is(err!.code, 'ENOENT');
  const r = await byPrefix.resolve('/teams/red', { create: true });
  t.like(r, { node: 'cephfs', created: true, reason: 'created on cephfs: prefix /teams of node cephfs' });
  fs.writeFileSync(path.join(r.hostPath, 'note.txt'), 'from the host\n');
  t.is(fs.readFileSync(path.join(second!, 'teams/red/note.txt'), 'utf8'), 'from the host\n');

  // A symlink made on the other client is not followed by this host.
  const outside = path.join(c.base, 'outside');
  fs.mkdirSync(outside);
  fs.symlinkSync(outside, path.join(second!, 'teams/escape'));
  const loop = await t.throwsAsync(byPrefix.resolve('/teams/escape/x', { create: true }), { instanceOf: StorageError });
  t.is(loop!.code, 'ELOOP');
  t.deepEqual(fs.readdirSync(outside), []);
});
