// A storage node that freezes, with the managed agents: a VM has one share on a node whose
// filesystem stops answering (a FUSE mount whose daemon we freeze: calls into it block in the kernel
// with no timeout, as on a hard NFS mount or a CephFS with its OSDs stopped; see
// helpers/freezable-storage.ts) and one share on a tmpfs node of the same host agent.
// While frozen: the guest's operations on that share fail with ETIMEDOUT after the host's
// io_timeout, at most max_calls_per_node calls (+ one of the mount check, one of the storage map)
// are stuck in the frozen filesystem (the host's I/O threads are not used up), the other share
// keeps its speed, and `dirvisorctl status` answers.
// Thawed: the share serves again by itself, with what was written before.
//
// (test/ceph-faults.test.ts freezes a real CephFS OSD too, but only on request: a stopped OSD
// sometimes leaves ceph-fuse wedged on these machines. This freeze always thaws.)
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { createWorld, token, waitFor, isMounted, sh, shOk, q, run, REPO } from './helpers/daemons.js';
import { checkFrozenShare } from './helpers/frozen-share.js';

const FREEZABLE = path.join(REPO, 'dist/test/helpers/freezable-storage.js');

/** A line of helpers/freezable-storage.ts. */
interface State {
  state: string;
  waiting: number;
  threads: number;
  held: Record<string, number>;
}

interface FreezableStorage {
  mountpoint: string;
  /** Lines it printed: {state, waiting}. */
  states: State[];
  signal(sig: 'SIGUSR1' | 'SIGUSR2'): Promise<State>;
  stop(): Promise<void>;
}

async function startFreezable(backing: string, mountpoint: string): Promise<FreezableStorage> {
  await fs.mkdir(backing, { recursive: true });
  await fs.mkdir(mountpoint, { recursive: true });
  const proc: ChildProcess = spawn(process.execPath, [FREEZABLE, backing, mountpoint], { stdio: ['ignore', 'pipe', 'inherit'] });
  const states: FreezableStorage['states'] = [];
  let buf = '';
  proc.stdout!.setEncoding('utf8');
  proc.stdout!.on('data', (d: string) => {
    buf += d;
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      states.push(JSON.parse(buf.slice(0, nl)));
      buf = buf.slice(nl + 1);
    }
  });
  const next = async (count: number) => {
    await waitFor(() => states.length > count || proc.exitCode !== null, 'the freezable storage to answer', { timeoutMs: 20_000 });
    if (states.length <= count) throw new Error(`the freezable storage exited (${proc.exitCode})`);
    return states[count];
  };
  await next(0);
  return {
    mountpoint,
    states,
    async signal(sig) {
      const n = states.length;
      proc.kill(sig);
      return next(n);
    },
    async stop() {
      if (proc.exitCode !== null) return;
      proc.kill('SIGTERM');
      await waitFor(() => proc.exitCode !== null, 'the freezable storage to exit', { timeoutMs: 10_000 }).catch(() => proc.kill('SIGKILL'));
      if (await isMounted(mountpoint)) await run(['fusermount3', '-uz', mountpoint]);
    },
  };
}

test('a frozen storage node: ETIMEDOUT within io_timeout, calls stuck in it bounded by max_calls_per_node, the other share unaffected, then service resumes', async (t) => {
  t.timeout(4 * 60_000);
  const w = await createWorld('dvz-');
  const frozenMount = path.join(w.root, 'nodes', 'frozen');
  const storage = await startFreezable(path.join(w.root, 'frozen-backing'), frozenMount);
  // Thaw before the world's cleanup stops the host: its stuck calls must return first.
  t.teardown(async () => {
    await storage.stop();
    await w.cleanup();
  });
  w.addExternalNode('frozen', frozenMount);
  const small = await w.addNode('small', 16);
  await w.writeHostConfig({
    storage: {
      placement: { reserve: '1MiB' },
      nodes: [
        { name: 'small', path: small, prefixes: ['/small'] },
        { name: 'frozen', path: frozenMount, prefixes: ['/frozen'] },
      ],
      io_timeout: '2s',
      max_calls_per_node: 3,
    },
  });
  const tok = token('frz');
  const frozenTarget = w.target('frozen');
  const smallTarget = w.target('small');
  await w.writeVm('frz.yaml', {
    name: 'frz',
    identity: { token: tok },
    shares: [
      { dir: '/frozen/data', target: frozenTarget, name: 'frozen', create: true },
      { dir: '/small/data', target: smallTarget, name: 'small', create: true },
    ],
  });
  await w.startHost();
  await w.startGuest('frz', tok);
  t.true(await isMounted(frozenTarget));
  t.true(await isMounted(smallTarget));
  await shOk(`echo base > ${q(path.join(frozenTarget, 'base.txt'))}`);
  // One directory per writer: creates in one directory wait for each other in the guest's kernel,
  // in eight they reach the host at once.
  await shOk(`cd ${q(frozenTarget)} && mkdir d0 d1 d2 d3 d4 d5 d6 d7`);

  // ---- freeze ----
  t.is((await storage.signal('SIGUSR1')).state, 'frozen');
  await checkFrozenShare(t, Array.from({ length: 8 }, (_, i) => path.join(frozenTarget, `d${i}`)), smallTarget);
  const s0 = Date.now();
  const status = await w.status();
  t.log(`dirvisorctl status answered in ${Date.now() - s0} ms during the freeze`);
  t.truthy(status.storage?.nodes.find((n) => n.name === 'small')?.reachable, 'status shows the other node reachable');

  // ---- thaw ----
  const thawed = await storage.signal('SIGUSR2');
  t.log(`calls held in the frozen filesystem: ${thawed.waiting}, ${thawed.threads} of them blocking a thread: ${JSON.stringify(thawed.held)}`);
  t.true(thawed.threads >= 1, 'the host did call into the frozen filesystem');
  // The node's guard lets max_calls_per_node (3) calls in; the node's mount check and the storage
  // map's probes (status, resolution) each run one call at a time with their own deadline.
  t.true(thawed.threads <= 3 + 2, `no more than max_calls_per_node (3) + 2 threads were stuck in it (${thawed.threads})`);
  await waitFor(async () => (await sh(`dd if=/dev/zero of=${q(path.join(frozenTarget, 'after-thaw'))} bs=64k count=4 conv=fsync`, { timeoutMs: 30_000 })).code === 0,
    'writes on the frozen share to work again after the thaw', { timeoutMs: 30_000, details: () => w.logs() });
  t.is(await shOk(`cat ${q(path.join(frozenTarget, 'base.txt'))}`), 'base\n');
  t.is((await fs.stat(path.join(w.root, 'frozen-backing', 'frozen/data/after-thaw'))).size, 256 * 1024, 'on the storage');
});
