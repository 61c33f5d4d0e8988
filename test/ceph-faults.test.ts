// Storage faults on a real CephFS node (../shared/ceph, "Fault injection recipes"), with the
// managed agents: a VM has one share on CephFS and one on a tmpfs node of the same host agent.
// - a directory quota is hit: writes fail with EDQUOT, the other share is not affected, and writes
//   work again once the quota is lifted;
// - the storage freezes (the OSD stopped: CephFS calls block in the kernel, with no timeout of their
//   own): the guest's operations on that share fail with ETIMEDOUT after the host's io_timeout, the
//   calls stuck in the frozen mount stay within max_calls_per_node (the host's I/O threads are not
//   used up), the other share keeps its speed, and service resumes when the OSD is back.
//   Only with DIRVISOR_TEST_CEPH_FREEZE=1: on these machines a stopped OSD sometimes leaves
//   ceph-fuse itself wedged after SIGCONT, and a process in its mount (the test's own cleanup)
//   then waits in the kernel forever, which would hang the whole suite.
// - the host's CephFS client is evicted (`ceph tell mds.a client evict`: every call then fails with
//   ESHUTDOWN, or ENOENT even for the mount's root, for good): the share's operations fail with EIO
//   at once, the other share is not affected, the host lets go of the dead mount (a plain umount
//   works), and once the operator has mounted CephFS at the same place again the share works again
//   by itself, with the data written before the eviction.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { cephTests, installAndStartCeph, type CephCluster } from './helpers/ceph.js';
import { createWorld, token, waitFor, isMounted, sh, shOk, q, holdOpen } from './helpers/daemons.js';
import { checkFrozenShare } from './helpers/frozen-share.js';

const { available, cephTest, title } = cephTests('ceph-faults');

let ceph: CephCluster | undefined;

test.before(async (t) => {
  if (!available) return;
  ceph = await installAndStartCeph(t);
});

test.after.always(async () => {
  if (ceph) await ceph.down();
});

const FREEZE = process.env.DIRVISOR_TEST_CEPH_FREEZE === '1';

cephTest(title(`CephFS quota hit${FREEZE ? ' and OSD frozen' : ''}: EDQUOT${FREEZE ? ', then ETIMEDOUT within the io_timeout' : ''} with the other share unaffected, then service resumes`), async (t) => {
  t.timeout(5 * 60_000);
  const c = ceph!;
  const w = await createWorld('dvx-');
  t.teardown(() => w.cleanup());
  const small = await w.addNode('small', 16);
  await w.writeHostConfig({
    storage: {
      placement: { reserve: '1MiB' },
      nodes: [
        { name: 'small', path: small, prefixes: ['/small'] },
        { name: 'cephfs', path: c.mount, prefixes: ['/ceph'] },
      ],
      io_timeout: '2s',
      max_calls_per_node: 3,
    },
  });
  const tok = token('cfv');
  const cephTarget = w.target('ceph');
  const smallTarget = w.target('small');
  const cephDir = `/ceph/${path.basename(w.root)}`;
  await w.writeVm('cfv.yaml', {
    name: 'cfv',
    identity: { token: tok },
    shares: [
      { dir: cephDir, target: cephTarget, name: 'ceph', create: true },
      { dir: '/small/data', target: smallTarget, name: 'small', create: true },
    ],
  });
  await w.startHost();
  await w.startGuest('cfv', tok);
  t.true(await isMounted(cephTarget));
  t.true(await isMounted(smallTarget));
  const hostDir = path.join(c.mount, cephDir.slice(1));
  t.teardown(() => sh(`rm -rf ${q(hostDir)}`, { timeoutMs: 60_000 }).then(() => undefined));
  await shOk(`echo base > ${q(path.join(cephTarget, 'base.txt'))}`);

  // ---- quota ----
  await shOk(`setfattr -n ceph.quota.max_bytes -v 4000000 ${q(hostDir)}`);
  const quota = await sh(`dd if=/dev/zero of=${q(path.join(cephTarget, 'big'))} bs=1M count=16 conv=fsync`, { timeoutMs: 60_000 });
  t.log(`dd of 16 MiB under a 4 MB quota: exit ${quota.code}: ${quota.stderr.trim().split('\n')[0]}`);
  t.not(quota.code, 0);
  t.regex(quota.stderr, /Disk quota exceeded/, 'EDQUOT reaches the application');
  await shOk(`echo fine > ${q(path.join(smallTarget, 'fine.txt'))}`);
  t.is(await fs.readFile(path.join(small, 'small/data/fine.txt'), 'utf8'), 'fine\n', 'the other share is not affected');
  await shOk(`setfattr -n ceph.quota.max_bytes -v 0 ${q(hostDir)}`);
  await shOk(`rm -f ${q(path.join(cephTarget, 'big'))}`);
  await waitFor(async () => (await sh(`dd if=/dev/zero of=${q(path.join(cephTarget, 'after-quota'))} bs=1M count=6 conv=fsync`, { timeoutMs: 60_000 })).code === 0,
    'writes beyond the old quota to work once it is lifted', { timeoutMs: 30_000, details: () => w.logs() });

  if (!FREEZE) {
    t.log('the frozen-OSD part runs with DIRVISOR_TEST_CEPH_FREEZE=1 (see the top of this file)');
    return;
  }
  // ---- freeze ----
  const osdPid = Number((await fs.readFile(path.join(c.workdir, 'pids/osd'), 'utf8')).trim());
  process.kill(osdPid, 'SIGSTOP');
  let thawed = false;
  const thaw = () => {
    if (!thawed) process.kill(osdPid, 'SIGCONT');
    thawed = true;
  };
  t.teardown(thaw);
  await checkFrozenShare(t, [cephTarget], smallTarget, 1 << 20);
  const status = await w.status();
  t.log(`status during the freeze: ${JSON.stringify(status).slice(0, 300)}`);

  // ---- thaw ----
  thaw();
  await waitFor(async () => (await sh(`dd if=/dev/zero of=${q(path.join(cephTarget, 'after-thaw'))} bs=256k count=4 conv=fsync`, { timeoutMs: 60_000 })).code === 0,
    'writes on the CephFS share to work again after the OSD is back', { timeoutMs: 60_000, details: () => w.logs() });
  t.is(await shOk(`cat ${q(path.join(cephTarget, 'base.txt'))}`), 'base\n');
  t.is((await fs.stat(path.join(hostDir, 'after-thaw'))).size, 1 << 20, 'on the storage');
});

/** The id the MDS knows the ceph-fuse client mounted at `mountPoint` by. */
async function cephClientId(c: CephCluster, mountPoint: string): Promise<number> {
  const conf = path.join(c.workdir, 'ceph.conf');
  const clients = JSON.parse(await shOk(`ceph -c ${q(conf)} tell mds.a client ls 2>/dev/null`)) as Array<{ id: number; client_metadata?: { mount_point?: string } }>;
  const mine = clients.find((x) => x.client_metadata?.mount_point === mountPoint);
  if (!mine) throw new Error(`no CephFS client is mounted at ${mountPoint}: ${JSON.stringify(clients).slice(0, 500)}`);
  return mine.id;
}

cephTest(title('the host\'s CephFS client evicted: EIO at once with the other share unaffected, the dead mount let go, and service resumes once it is mounted again'), async (t) => {
  t.timeout(3 * 60_000);
  const c = ceph!;
  // Its own ceph-fuse client, so the eviction leaves the cluster's first mount alone.
  const client = await c.mountClient('evictable');
  const w = await createWorld('dve-');
  t.teardown(() => w.cleanup());
  const small = await w.addNode('small', 16);
  await w.writeHostConfig({
    storage: {
      placement: { reserve: '1MiB' },
      nodes: [
        { name: 'small', path: small, prefixes: ['/small'] },
        { name: 'cephfs', path: client, prefixes: ['/ceph'] },
      ],
    },
  });
  const tok = token('cev');
  const cephTarget = w.target('ceph');
  const smallTarget = w.target('small');
  const cephDir = `/ceph/${path.basename(w.root)}`;
  await w.writeVm('cev.yaml', {
    name: 'cev',
    identity: { token: tok },
    shares: [
      { dir: cephDir, target: cephTarget, name: 'ceph', create: true },
      { dir: '/small/data', target: smallTarget, name: 'small', create: true },
    ],
  });
  await w.startHost();
  await w.startGuest('cev', tok);
  // Seen through the cluster's first mount: another client of the same CephFS.
  const hostDir = path.join(c.mount, cephDir.slice(1));
  t.teardown(() => sh(`rm -rf ${q(hostDir)}`, { timeoutMs: 60_000 }).then(() => undefined));
  // fsync'd: ceph-fuse buffers writes, and an evicted client's unflushed writes are lost.
  await shOk(`printf 'base\n' | dd of=${q(path.join(cephTarget, 'base.txt'))} conv=fsync status=none`);
  const app = await holdOpen(path.join(cephTarget, 'held.txt'), t);
  t.is(await app.write(), 'ok');

  // ---- evicted ----
  await shOk(`ceph -c ${q(path.join(c.workdir, 'ceph.conf'))} tell mds.a client evict id=${await cephClientId(c, client)} 2>&1`);
  const t0 = Date.now();
  const first = await sh(`echo x > ${q(path.join(cephTarget, 'after-evict.txt'))}`, { timeoutMs: 30_000 });
  const ms = Date.now() - t0;
  t.log(`first write after the eviction: exit ${first.code} after ${ms} ms: ${first.stderr.trim()}`);
  t.regex(first.stderr, /Input\/output error/, 'EIO, not ESHUTDOWN or a bogus ENOENT');
  t.true(ms < 5000, `at once: ${ms} ms`);
  t.regex((await sh(`cat ${q(path.join(cephTarget, 'base.txt'))}`)).stderr, /Input\/output error/, 'reading an existing file fails the same way');
  t.is(await app.write(), 'EIO', 'and so does the file held open');
  const lostLine = (await w.host!.lines()).find((l) => l.level === 50 && l.node === 'cephfs' && /^storage node cephfs is unavailable: /.test(l.msg ?? ''));
  t.truthy(lostLine, 'the host logs the loss, naming the node');
  t.log(`host: ${lostLine?.msg}`);
  await shOk(`echo fine > ${q(path.join(smallTarget, 'fine.txt'))}`);
  t.is(await fs.readFile(path.join(small, 'small/data/fine.txt'), 'utf8'), 'fine\n', 'the other share is not affected');

  // ---- the operator remounts ----
  // The host holds nothing open on the dead mount any more, so a plain umount is not refused as busy.
  await shOk(`umount ${q(client)}`);
  t.false(await isMounted(client));
  t.is(await c.mountClient('evictable'), client);
  const r0 = Date.now();
  await waitFor(async () => (await sh(`cat ${q(path.join(cephTarget, 'base.txt'))}`)).stdout === 'base\n', 'the share to work again with the data written before', { timeoutMs: 15_000, details: () => w.logs() });
  t.log(`service resumed ${Date.now() - r0} ms after the remount`);
  await shOk(`echo after > ${q(path.join(cephTarget, 'after.txt'))}`);
  await waitFor(async () => (await fs.readFile(path.join(hostDir, 'after.txt'), 'utf8').catch(() => '')) === 'after\n', 'the new file to be on CephFS, seen by another client', { timeoutMs: 10_000 });
  const stale = await app.write();
  t.log(`the file held open from before: ${stale}`);
  t.is(stale, 'ESTALE', 'the file held open through the dead client stays failed: its file was on the old filesystem');
  const again = await holdOpen(path.join(cephTarget, 'held.txt'), t);
  t.is(await again.write(), 'ok', 'opening it again works');
  t.truthy((await w.host!.lines()).find((l) => l.msg?.startsWith('storage node cephfs is back')), 'the host logs the return');
});
