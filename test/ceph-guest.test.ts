// A VM's share on a real distributed filesystem, end to end: a single-node Ceph cluster
// (../shared/ceph: CephFS over ceph-fuse) is a storage node of `dirvisor-host run`, next to a small
// tmpfs node. A VM defined in vms.d gets a share created on CephFS; the running guest agent
// (`dirvisor-guest run`) mounts it; data written through the GUEST mount is checked through a
// second, independent ceph-fuse client (as another hypervisor would see it), and the other way round.
import test from 'ava';
import crypto from 'node:crypto';
import path from 'node:path';
import { cephTests, installAndStartCeph, cephMountsUnder, type CephCluster } from './helpers/ceph.js';
import { createWorld, token, waitFor, isMounted, sh, shOk, q, type World } from './helpers/daemons.js';

const { available, cephTest, title } = cephTests('ceph-guest');

let ceph: CephCluster | undefined;
let second: string | undefined;
const timings: Record<string, number> = {};

test.before(async (t) => {
  if (!available) return;
  ceph = await installAndStartCeph(t, timings);
  const t0 = Date.now();
  second = await ceph.mountClient('second-client');
  timings.second_mount_s = (Date.now() - t0) / 1000;
});

test.after.always(async (t) => {
  if (!ceph) return;
  const { seconds } = await ceph.down();
  timings.down_s = seconds;
  t.log(`timings: ${JSON.stringify(timings)}`);
  t.deepEqual(cephMountsUnder(ceph.base), [], 'no ceph-fuse mount is left behind');
});

/** sha256 and size of a file, read by a child process (these are FUSE mounts). */
async function digest(file: string): Promise<string> {
  const r = await sh(`stat -c %s ${q(file)} && sha256sum < ${q(file)}`, { timeoutMs: 30_000 });
  return r.code === 0 ? r.stdout.replace(/\s+-?\s*$/, '').replace(/\n/, ' ') : `(${r.stderr.trim()})`;
}

cephTest(title('a VM share created on CephFS: written through the guest mount, read back by a second ceph-fuse client'), async (t) => {
  t.timeout(5 * 60_000);
  const c = ceph!;
  const w: World = await createWorld('dvc-');
  t.teardown(() => w.cleanup());
  await w.addNode('small', 16);
  w.addExternalNode('cephfs', c.mount);
  await w.writeHostConfig();
  const tok = token('ceph-vm');
  const target = w.target('srv/data');
  const dir = `/vms/${path.basename(w.root)}/data`;
  await w.writeVm('ceph-vm.yaml', {
    name: 'ceph-vm',
    identity: { token: tok },
    shares: [{ dir, target, name: 'data', create: true, owner: '1000:1000', mode: '0775' }],
  });
  let t0 = Date.now();
  await w.startHost();
  const guest = await w.startGuest('ceph-vm', tok);
  timings.host_and_guest_up_ms = Date.now() - t0;
  t.true(await isMounted(target));

  const [vm] = await w.list();
  const s = vm.shares[0];
  t.like(s, { node: 'cephfs', hostPath: path.join(c.mount, dir.slice(1)) });
  t.regex(s.reason ?? '', /^created on cephfs: most free space/);
  t.log(`resolved: ${s.node}:${s.hostPath} (${s.reason})`);
  const seen = path.join(second!, dir.slice(1));
  t.is((await shOk(`stat -c '%u:%g %a' ${q(seen)}`)).trim(), '1000:1000 775', 'the second client sees the directory with the owner and mode asked for');

  // Written through the guest mount: a 4 MiB file (fsynced), a small file renamed into a new
  // subdirectory, and a symlink.
  const data = crypto.randomBytes(4 << 20);
  const want = `${data.length} ${crypto.createHash('sha256').update(data).digest('hex')}`;
  t0 = Date.now();
  await shOk(
    `cd ${q(target)} && cat > blob && python3 -c 'import os; fd = os.open("blob", os.O_RDONLY); os.fsync(fd); os.close(fd)' ` +
      `&& mkdir -p logs/2024 && printf 'line 1\\nline 2\\n' > tmp.log && mv tmp.log logs/2024/app.log && ln -s logs/2024/app.log latest`,
    { input: data, timeoutMs: 60_000 },
  );
  timings.guest_write_ms = Date.now() - t0;
  t.is(await digest(path.join(target, 'blob')), want, 'the guest reads back what it wrote');

  // The second, independent ceph-fuse client sees it (ceph's caps make it coherent; poll with a deadline).
  t0 = Date.now();
  await waitFor(async () => (await digest(path.join(seen, 'blob'))) === want, 'the second client to see the 4 MiB file', {
    timeoutMs: 30_000,
    details: async () => `second client: ${await digest(path.join(seen, 'blob'))}\n${await w.logs()}`,
  });
  timings.second_client_sees_ms = Date.now() - t0;
  t.is(await shOk(`cat ${q(path.join(seen, 'logs/2024/app.log'))}`), 'line 1\nline 2\n');
  t.is((await shOk(`readlink ${q(path.join(seen, 'latest'))}`)).trim(), 'logs/2024/app.log');
  t.is((await shOk(`ls -A ${q(seen)} | sort`)).trim(), 'blob\nlatest\nlogs');
  t.is((await shOk(`ls -A ${q(w.nodes.get('small')!)}`)).trim(), '', 'nothing landed on the tmpfs node');

  // The other way: written by the second client, read through the guest mount.
  await shOk(`printf 'from another hypervisor\\n' > ${q(path.join(seen, 'remote.txt'))} && sync -f ${q(path.join(seen, 'remote.txt'))}`);
  await waitFor(async () => (await sh(`cat ${q(path.join(target, 'remote.txt'))}`)).stdout === 'from another hypervisor\n', 'the guest to read a file the second client wrote', {
    timeoutMs: 30_000,
    details: () => w.logs(),
  });

  // A share attached live with dirvisorctl also lands on CephFS.
  const live = w.target('srv/live');
  const liveDir = `/vms/${path.basename(w.root)}/live`;
  t0 = Date.now();
  const r = await w.ctl('attach', 'ceph-vm', liveDir, live, '--create', '--name', 'live');
  t.is(r.code, 0, r.stderr);
  await waitFor(() => isMounted(live), `${live} to be mounted`, { timeoutMs: 10_000, details: () => w.logs() });
  timings.live_attach_ms = Date.now() - t0;
  t.regex(r.stdout, new RegExp(`cephfs:${path.join(c.mount, liveDir.slice(1))}`));
  await shOk(`echo live > ${q(path.join(live, 'f'))} && sync -f ${q(path.join(live, 'f'))}`);
  await waitFor(async () => (await sh(`cat ${q(path.join(second!, liveDir.slice(1), 'f'))}`)).stdout === 'live\n', 'the second client to see the live share\'s file', { timeoutMs: 30_000 });

  t.false((await guest.lines()).some((l) => (l.level ?? 0) >= 50), 'the guest logged no error');
  t.log(`timings so far: ${JSON.stringify(timings)}`);

  // Leave the CephFS tree as we found it (the cluster is torn down anyway).
  await sh(`rm -rf ${q(path.join(second!, 'vms', path.basename(w.root)))}`);
});
