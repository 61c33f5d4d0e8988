// The VM lifecycle end to end, with the real programs: `dirvisor-host run` (host.yaml, vms.d,
// control socket, state_dir) over storage nodes that are tmpfs mounts made here, `dirvisor-guest
// run` (guest.yaml) mounting exports with FUSE at their targets, and `dirvisorctl` driving it.
// Covers: mounts at boot, data landing on the resolved storage node, live attach/detach from
// dirvisorctl and from vms.d, a busy detach (lazy unmount), list/status, and a host agent killed
// with SIGKILL and started again under a running guest.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { spawn } from 'node:child_process';
import {
  createWorld, token, waitFor, isMounted, mountEntry, mountId, sh, shOk, q, run, background,
  PYTHON, CTL_BIN, type World, type VmRow, type LogLine,
} from './helpers/daemons.js';

async function world(t: ExecutionContext): Promise<World> {
  const w = await createWorld('dvl-');
  t.teardown(() => w.cleanup());
  return w;
}

const exists = (p: string) => fs.access(p).then(() => true, () => false);
const sha256 = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

/** Fails with the daemons' logs attached. */
async function withLogs<T>(w: World, what: Promise<T>): Promise<T> {
  try {
    return await what;
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${await w.logs()}`);
  }
}

async function waitMounted(w: World, target: string, timeoutMs = 10_000): Promise<void> {
  await waitFor(() => isMounted(target), `${target} to be mounted`, { timeoutMs, details: () => w.logs() });
}

async function waitUnmounted(w: World, target: string, timeoutMs = 10_000): Promise<void> {
  await waitFor(async () => !(await isMounted(target)), `${target} to be unmounted`, { timeoutMs, details: () => w.logs() });
}

function share(vms: VmRow[], vm: string, target: string) {
  return vms.find((v) => v.name === vm)?.shares.find((s) => s.target === target);
}

// A VM in vms.d when the host starts: the guest mounts it at boot, creating the target; what is
// written through the mount is on the storage node the map chose (the freer of two), at the path
// `list` shows; and a change on the storage side is read through the mount.
test.serial('boot: a VM defined in vms.d is mounted by its guest at start, and its files land on the resolved storage node', async (t) => {
  const w = await world(t);
  const big = await w.addNode('big', 64);
  const small = await w.addNode('small', 16);
  await w.writeHostConfig();
  const tok = token('web1');
  const target = w.target('web-1/srv/alpha');
  await w.writeVm('web-1.yaml', { name: 'web-1', identity: { token: tok }, shares: [{ dir: '/projects/alpha', target, create: true, name: 'alpha' }] });
  await w.startHost();
  t.false(await exists(target), 'the target directory does not exist before the guest starts');

  const t0 = Date.now();
  const guest = await w.startGuest('web-1', tok);
  t.log(`guest agent ready with its mount in ${Date.now() - t0} ms`);
  const entry = await mountEntry(target);
  t.truthy(entry, `${target} is mounted once the guest agent says it is ready`);
  t.is(entry?.fstype, 'fuse.dirvisor');
  t.is(entry?.source, 'dirvisor:alpha');
  const mounted = await guest.waitLog((l) => l.msg === 'export mounted' && l.target === target, 'export mounted log line');
  t.is(mounted.export, 'alpha');

  const [vm] = await w.list();
  t.is(vm.name, 'web-1');
  t.is(vm.source, 'vms.d/web-1.yaml');
  const s = vm.shares[0];
  t.like(s, { name: 'alpha', dir: '/projects/alpha', target, node: 'big', hostPath: path.join(big, 'projects/alpha') });
  t.regex(s.reason ?? '', /created on big/);
  t.false(await exists(path.join(small, 'projects/alpha')), 'nothing was created on the fuller node');

  // Guest -> storage node.
  await shOk(`cd ${q(target)} && echo hello > hello.txt && mkdir -p sub/deeper && head -c 1048576 /dev/urandom > sub/deeper/blob && sync -f hello.txt && sha256sum sub/deeper/blob`, { timeoutMs: 30_000 });
  const hostPath = s.hostPath!;
  t.is(await fs.readFile(path.join(hostPath, 'hello.txt'), 'utf8'), 'hello\n');
  const blobHost = await fs.readFile(path.join(hostPath, 'sub/deeper/blob'));
  const blobGuest = (await shOk(`sha256sum ${q(path.join(target, 'sub/deeper/blob'))}`)).split(' ')[0];
  t.is(blobHost.length, 1 << 20);
  t.is(sha256(blobHost), blobGuest, 'the 1 MiB file is the same on the storage node as in the guest');

  // Storage node -> guest.
  await fs.writeFile(path.join(hostPath, 'from-host.txt'), 'written on the host\n');
  t.is(await shOk(`cat ${q(path.join(target, 'from-host.txt'))}`), 'written on the host\n');
  t.is((await shOk(`ls ${q(target)} | sort`)).trim(), ['from-host.txt', 'hello.txt', 'sub'].join('\n'));
});

test.serial('the guest agent killed with SIGKILL leaves no dead mount behind', async (t) => {
  const w = await world(t);
  await w.addNode('big', 64);
  await w.writeHostConfig();
  const tok = token('web1');
  const target = w.target('web-1/srv/k');
  await w.writeVm('web-1.yaml', { name: 'web-1', identity: { token: tok }, shares: [{ dir: '/projects/k', target, create: true, name: 'k' }] });
  await w.startHost();
  const guest = await w.startGuest('web-1', tok);
  await waitMounted(w, target);
  guest.proc.kill('SIGKILL');
  await waitUnmounted(w, target, 30_000);
  t.false(await isMounted(target), 'the mount went away with its agent');
  t.true((await fs.stat(target)).isDirectory(), 'the target directory answers again (no ENOTCONN)');
});

// Boot order is not guaranteed: a guest agent that starts before the host agent retries with
// backoff (at most 2 s apart) and mounts once the host answers.
test.serial('a guest agent started before the host agent retries and mounts once the host is up', async (t) => {
  const w = await world(t);
  const node = await w.addNode('n1', 16);
  await w.writeHostConfig();
  const tok = token('early');
  const target = w.target('early');
  await w.writeVm('early.yaml', { name: 'early', identity: { token: tok }, shares: [{ dir: '/early', target, create: true }] });
  const guest = await w.startGuest('early', tok, { wait: false });
  const first = await guest.waitLog((l) => l.msg === 'cannot reach the host agent yet', 'the guest to find no host agent');
  t.regex(String(first.error), /ENOENT|ECONNREFUSED/);
  t.false(await isMounted(target));
  await w.startHost();
  const t0 = Date.now();
  await withLogs(w, guest.waitLog((l) => l.msg === 'ready', 'the guest to connect and mount', 15_000));
  await waitMounted(w, target);
  const ms = Date.now() - t0;
  t.log(`mounted ${ms} ms after the host agent was ready`);
  t.true(ms < 5000, `mounted ${ms} ms after the host agent was ready (the guest's backoff is capped at 2 s)`);
  await shOk(`echo early > ${q(path.join(target, 'e'))}`);
  t.is(await fs.readFile(path.join(node, 'early/e'), 'utf8'), 'early\n');
});

// `dirvisorctl attach` under a running guest: the new mount appears within a bound; --ro gives a
// read-only mount; `detach` (by target, name or directory) makes each disappear, and the data stays
// on the storage node.
test.serial('dirvisorctl attach mounts live in the running guest within 3 s; detach unmounts it', async (t) => {
  const w = await world(t);
  const node = await w.addNode('n1', 64);
  await w.writeHostConfig();
  const tok = token('web1');
  const first = w.target('first');
  await w.writeVm('web-1.yaml', { name: 'web-1', identity: { token: tok }, shares: [{ dir: '/projects/first', target: first, create: true }] });
  await w.startHost();
  const guest = await w.startGuest('web-1', tok);
  t.true(await isMounted(first));

  // attach --create: a directory that exists nowhere yet.
  const logs = w.target('var/log/shared');
  let t0 = Date.now();
  const r = await w.ctl('attach', 'web-1', '/projects/logs', logs, '--create');
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, new RegExp(`attached /projects/logs to web-1 at ${logs}: n1:${node}/projects/logs`));
  await waitMounted(w, logs, 10_000);
  const attachMs = Date.now() - t0;
  t.log(`attach: mount appeared ${attachMs} ms after dirvisorctl started (dirvisorctl itself took ${r.ms} ms)`);
  t.true(attachMs < 3000, `the attached export was mounted in ${attachMs} ms (bound: 3000 ms)`);
  t.true(await exists(path.join(node, 'projects/logs')), 'the directory was created on the storage node');
  await shOk(`echo line1 >> ${q(path.join(logs, 'app.log'))}`);
  t.is(await fs.readFile(path.join(node, 'projects/logs/app.log'), 'utf8'), 'line1\n');
  t.like(share(await w.list(), 'web-1', logs), { dir: '/projects/logs', node: 'n1', hostPath: path.join(node, 'projects/logs') });

  // attach --ro with an explicit name: a read-only mount of the same storage directory.
  const ro = w.target('ro-view');
  t0 = Date.now();
  const r2 = await w.ctl('attach', 'web-1', '/projects/logs', ro, '--ro', '--name', 'logs-ro');
  t.is(r2.code, 0, r2.stderr);
  await waitMounted(w, ro);
  t.log(`attach --ro: mounted after ${Date.now() - t0} ms`);
  t.is((await mountEntry(ro))?.source, 'dirvisor:logs-ro');
  t.is(await shOk(`cat ${q(path.join(ro, 'app.log'))}`), 'line1\n');
  const denied = await sh(`echo nope > ${q(path.join(ro, 'new.txt'))}`);
  t.not(denied.code, 0);
  t.regex(denied.stderr, /Read-only file system/);
  t.false(await exists(path.join(node, 'projects/logs/new.txt')));

  // detach by target.
  t0 = Date.now();
  const d1 = await w.ctl('detach', 'web-1', logs);
  t.is(d1.code, 0, d1.stderr);
  t.regex(d1.stdout, new RegExp(`detached ${logs} from web-1`));
  await waitUnmounted(w, logs);
  const detachMs = Date.now() - t0;
  t.log(`detach: mount gone ${detachMs} ms after dirvisorctl started`);
  t.true(detachMs < 3000, `the detached export was unmounted in ${detachMs} ms (bound: 3000 ms)`);
  await guest.waitLog((l) => l.msg === 'export unmounted' && l.target === logs, 'export unmounted log line');
  t.is(await fs.readFile(path.join(node, 'projects/logs/app.log'), 'utf8'), 'line1\n', 'detaching keeps the data on the storage node');
  t.is(share(await w.list(), 'web-1', logs), undefined, 'the share is gone from list');

  // detach by export name.
  t.is((await w.ctl('detach', 'web-1', 'logs-ro')).code, 0);
  await waitUnmounted(w, ro);

  // The share defined in vms.d is still mounted and working.
  t.true(await isMounted(first));
  await shOk(`echo still > ${q(path.join(first, 'f'))} && cat ${q(path.join(first, 'f'))}`);
  t.is(await fs.readFile(path.join(node, 'projects/first/f'), 'utf8'), 'still\n');
  t.true(guest.running);
});

// A detach while a process has its cwd inside the mount: the guest cannot unmount it normally, so
// it detaches it lazily, says so in its log, and keeps serving its other mounts.
test.serial('detach of a busy mount (a process cwd inside) unmounts lazily with a clear log line', async (t) => {
  const w = await world(t);
  await w.addNode('n1', 64);
  await w.writeHostConfig();
  const tok = token('web1');
  const keep = w.target('keep');
  await w.writeVm('web-1.yaml', { name: 'web-1', identity: { token: tok }, shares: [{ dir: '/projects/keep', target: keep, create: true }] });
  await w.startHost();
  const guest = await w.startGuest('web-1', tok);

  const busy = w.target('busy');
  t.is((await w.ctl('attach', 'web-1', '/projects/busy', busy, '--create', '--name', 'busy')).code, 0);
  await waitMounted(w, busy);
  const holder = background(`cd ${q(busy)} && echo inside && exec sleep 120`);
  t.teardown(() => holder.stop());
  await waitFor(() => holder.output().includes('inside'), 'the holder process to be inside the mount');

  const t0 = Date.now();
  const r = await w.ctl('detach', 'web-1', busy);
  t.is(r.code, 0, r.stderr);
  await waitUnmounted(w, busy);
  t.log(`busy mount detached from the namespace ${Date.now() - t0} ms after dirvisorctl started`);
  const line = await guest.waitLog((l) => l.target === busy && l.level === 40 && /lazily/.test(String(l.msg)), 'a warning about the lazy unmount');
  t.regex(String(line.msg), /busy/);
  t.regex(String(line.msg), /lazily/);
  t.is(line.export, 'busy');
  t.log(`guest log: ${JSON.stringify(line)}`);
  t.false((await guest.lines()).some((l) => l.level !== undefined && l.level >= 50 && l.target === busy), 'no error was logged for the lazy unmount');

  await holder.stop();
  t.true(guest.running, 'the guest agent is still running');
  await shOk(`echo ok > ${q(path.join(keep, 'after'))} && cat ${q(path.join(keep, 'after'))}`);
  t.true(await isMounted(keep));
});

// vms.d is reconciled live: a guest that boots before its VM is defined connects once the file
// appears; adding a share to the file mounts it, moving a share's target moves the mount,
// removing a share unmounts it, a broken edit changes nothing, and removing the file unmounts all.
test.serial('vms.d live: adding, changing and removing a VM file mounts and unmounts in the running guest', async (t) => {
  const w = await world(t);
  const node = await w.addNode('n1', 64);
  await w.writeHostConfig();
  await w.startHost();
  const tok = token('db1');
  const guest = await w.startGuest('db-1', tok, { wait: false });
  // Not defined yet: refused, and retried.
  await guest.waitLog((l) => l.msg === 'cannot reach the host agent yet' && /refused/.test(String(l.error)), 'the guest to be refused before its VM exists');
  await w.host!.waitLog((l) => l.msg === 'connection refused', 'the host to log the refusal');

  const a = w.target('db/a');
  const b = w.target('db/b');
  const b2 = w.target('db/b-moved');
  const shareA = { dir: '/db/a', target: a, create: true, name: 'a' };
  const shareB = { dir: '/db/b', target: b, create: true, name: 'b' };

  let t0 = Date.now();
  await w.writeVm('db-1.yaml', { name: 'db-1', identity: { token: tok }, shares: [shareA] });
  await withLogs(w, guest.waitLog((l) => l.msg === 'ready', 'the guest to connect once its VM is defined', 15_000));
  await waitMounted(w, a);
  t.log(`new vms.d file: guest (retrying with backoff) mounted it ${Date.now() - t0} ms after the file was written`);

  t0 = Date.now();
  await w.writeVm('db-1.yaml', { name: 'db-1', identity: { token: tok }, shares: [shareA, shareB] });
  await waitMounted(w, b);
  const addMs = Date.now() - t0;
  t.log(`share added to the file: mounted after ${addMs} ms`);
  t.true(addMs < 3000, `a share added to vms.d was mounted in ${addMs} ms (bound: 3000 ms)`);
  await shOk(`echo b > ${q(path.join(b, 'b.txt'))}`);
  t.is(await fs.readFile(path.join(node, 'db/b/b.txt'), 'utf8'), 'b\n');

  // The same share moved to another target.
  t0 = Date.now();
  await w.writeVm('db-1.yaml', { name: 'db-1', identity: { token: tok }, shares: [shareA, { ...shareB, target: b2 }] });
  await waitMounted(w, b2);
  await waitUnmounted(w, b);
  t.log(`share target changed: moved after ${Date.now() - t0} ms`);
  t.is(await shOk(`cat ${q(path.join(b2, 'b.txt'))}`), 'b\n');

  // A share removed from the file.
  t0 = Date.now();
  await w.writeVm('db-1.yaml', { name: 'db-1', identity: { token: tok }, shares: [{ ...shareB, target: b2 }] });
  await waitUnmounted(w, a);
  t.log(`share removed from the file: unmounted after ${Date.now() - t0} ms`);
  t.true(await isMounted(b2));

  // A broken edit is rejected and changes nothing.
  await w.writeVm('db-1.yaml', `name: db-1\nidentity: { token: ${tok} }\nshares:\n  - dir: relative/path\n    target: ${b2}\n`);
  const rejected = await w.host!.waitLog((l) => l.msg === 'VM definition rejected; keeping the previous one', 'the broken file to be rejected');
  t.regex(String(rejected.error), /absolute path/);
  t.true(await isMounted(b2), 'the mount stays after a broken edit');
  t.like(share(await w.list(), 'db-1', b2), { dir: '/db/b', node: 'n1' });

  // The file removed: the VM and its mounts are gone.
  t0 = Date.now();
  await w.removeVm('db-1.yaml');
  await waitUnmounted(w, b2);
  t.log(`file removed: unmounted after ${Date.now() - t0} ms`);
  t.deepEqual((await w.list()).map((v) => v.name), []);
  t.true(guest.running);
  t.is(await fs.readFile(path.join(node, 'db/b/b.txt'), 'utf8'), 'b\n', 'the data stays on the storage node');
});

// What an operator sees: list and status (human and --json) name each VM, where each share
// resolved and why, and the live connections with their exports and counters; no token is shown.
test.serial('dirvisorctl list and status (--json) show VMs, where each share resolved and why, and connections', async (t) => {
  const w = await world(t);
  const big = await w.addNode('big', 48);
  await w.addNode('small', 8);
  await w.writeHostConfig();
  const tok = token('web1');
  const apiTok = token('api1');
  const target = w.target('srv/alpha');
  await w.writeVm('web-1.yaml', { name: 'web-1', identity: { token: tok }, shares: [{ dir: '/projects/alpha', target, create: true, name: 'alpha' }] });
  await w.startHost();
  await w.startGuest('web-1', tok);
  await shOk(`head -c 100000 /dev/zero > ${q(path.join(target, 'z'))} && cat ${q(path.join(target, 'z'))} > /dev/null`);
  const created = await w.ctl('vm', 'create', 'api-1', '--token', apiTok, '--share', `/projects/beta:${w.target('api/beta')}`, '--create');
  t.is(created.code, 0, created.stderr);

  const list = await w.list();
  t.deepEqual(list.map((v) => v.name), ['api-1', 'web-1']);
  const web = list.find((v) => v.name === 'web-1')!;
  t.like(web, { source: 'vms.d/web-1.yaml' });
  t.like(web.shares[0], { name: 'alpha', dir: '/projects/alpha', target, readOnly: false, node: 'big', hostPath: path.join(big, 'projects/alpha') });
  t.regex(web.shares[0].reason!, /created on big.*free/);
  const api = list.find((v) => v.name === 'api-1')!;
  t.is(api.source, 'api');
  t.like(api.shares[0], { dir: '/projects/beta', node: 'big' });

  const st = await w.status();
  t.true(st.uptimeSeconds >= 0);
  const webSt = st.vms.find((v) => v.name === 'web-1')!;
  t.is(webSt.connections, 1, 'web-1 has one connection');
  t.is(st.vms.find((v) => v.name === 'api-1')!.connections, 0);
  // Per VM, what it holds against its limits: web-1 knows nodes (one host fd each), api-1 nothing.
  t.true(webSt.usage!.fds >= 2, `web-1 holds host fds (${webSt.usage!.fds})`);
  t.like(webSt.usage, { maxFds: 16384, maxInFlight: 512, waiting: 0 });
  t.like(st.vms.find((v) => v.name === 'api-1')!.usage, { fds: 0, running: 0, waiting: 0 });
  t.is(st.connections.length, 1);
  const c = st.connections[0];
  t.is(c.vm, 'web-1');
  t.regex(c.peer, /^unix /);
  t.deepEqual(c.exports, ['alpha']);
  t.true(c.requests > 0, 'requests are counted');
  t.true(c.bytesIn > 100_000, `bytes in counted (${c.bytesIn})`);
  t.true(c.bytesOut > 100_000, `bytes out counted (${c.bytesOut})`);
  t.is(typeof c.inFlight, 'number');
  t.is(typeof c.errors, 'number');
  t.truthy(st.storage, 'status shows the storage nodes');
  t.deepEqual(st.storage!.nodes.map((n) => n.name), ['big', 'small']);
  t.true(st.storage!.decisions.some((d) => d.dir === '/projects/alpha' && d.node === 'big'), 'the placement decision is kept');

  for (const text of [JSON.stringify(st), JSON.stringify(list), (await w.ctl('status')).stdout, (await w.ctl('list')).stdout]) {
    t.false(text.includes(tok) || text.includes(apiTok), 'no token is shown');
  }
  const human = await w.ctl('status');
  t.is(human.code, 0);
  t.regex(human.stdout, /host agent up \d+s, 2 VMs, 1 connections/);
  t.regex(human.stdout, /web-1 {2}\(token, from vms\.d\/web-1\.yaml, 1 connection\)/);
  t.true(human.stdout.includes(`big:${path.join(big, 'projects/alpha')}`));
  t.regex(human.stdout, /#\d+ web-1 via unix .*exports \[alpha\]/);
  t.regex(human.stdout, /web-1 .*\n {2}host fds \d+\/16384, requests \d+\/512 running, 0 waiting/);
});

// The host agent is killed (SIGKILL: no goodbye, stale sockets left) and started again while the
// guest agent runs. The guest keeps the same mounts; an operation issued during the outage
// completes once the host is back; a file held open across the restart keeps working; and what
// dirvisorctl created before (a VM, an attached share) is still there after.
test.serial('host agent SIGKILLed and restarted under a running guest: mounts, open files and dirvisorctl state survive', async (t) => {
  t.timeout(120_000);
  const w = await world(t);
  const node = await w.addNode('n1', 64);
  await w.writeHostConfig();
  const tok = token('web1');
  const alpha = w.target('alpha');
  await w.writeVm('web-1.yaml', { name: 'web-1', identity: { token: tok }, shares: [{ dir: '/projects/alpha', target: alpha, create: true, name: 'alpha' }] });
  await w.startHost();
  const guest = await w.startGuest('web-1', tok);

  // State made through dirvisorctl before the restart.
  const apiTok = token('api1');
  t.is((await w.ctl('vm', 'create', 'api-vm', '--token', apiTok, '--share', `/projects/api:${w.target('api')}`, '--create')).code, 0);
  const extra = w.target('extra');
  t.is((await w.ctl('attach', 'web-1', '/projects/extra', extra, '--create', '--name', 'extra')).code, 0);
  await waitMounted(w, extra);
  const before = await w.list();

  await shOk(`echo before > ${q(path.join(alpha, 'before.txt'))} && echo x > ${q(path.join(extra, 'x.txt'))}`);
  const idAlpha = await mountId(alpha);
  const idExtra = await mountId(extra);
  t.truthy(idAlpha);

  // A process holding files open across the restart: it writes and reads one line before, waits
  // for "go" on stdin, then writes, reads and fsyncs again through the same descriptors.
  const held = spawn(PYTHON, ['-c', `
import os, sys, json
w = open(sys.argv[1] + "/held.txt", "w")
w.write("one\\n"); w.flush()
r = os.open(sys.argv[1] + "/before.txt", os.O_RDONLY)
first = os.pread(r, 100, 0).decode()
print("opened", flush=True)
sys.stdin.readline()
w.write("two\\n"); w.flush(); os.fsync(w.fileno()); w.close()
again = os.pread(r, 100, 0).decode()
os.close(r)
print(json.dumps({"first": first, "again": again}), flush=True)
`, alpha], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  t.teardown(() => {
    if (held.exitCode === null && held.signalCode === null) process.kill(-held.pid!, 'SIGKILL');
  });
  let heldOut = '';
  let heldErr = '';
  held.stdout!.on('data', (c: Buffer) => (heldOut += c.toString()));
  held.stderr!.on('data', (c: Buffer) => (heldErr += c.toString()));
  const heldExit = new Promise<number | null>((resolve) => held.once('exit', (code) => resolve(code)));
  await waitFor(() => heldOut.includes('opened'), 'the holder to open its files', { details: () => heldErr });

  // Kill the host agent hard.
  const killedAt = Date.now();
  await w.host!.kill9();
  await guest.waitLog((l) => l.msg === 'connection to the host agent lost; reconnecting', 'the guest to notice the host is gone');
  t.true(await isMounted(alpha), 'the mount stays while the host is down');

  // dirvisorctl says clearly that the host agent is not there.
  const down = await w.ctl('list');
  t.is(down.code, 1);
  t.regex(down.stderr, /cannot reach the host agent's control socket .*control\.sock: ECONNREFUSED \(is dirvisor-host running\?/);

  // An operation issued during the outage waits for the host (reconnect_window 30 s).
  const during = sh(`cat ${q(path.join(alpha, 'before.txt'))} && echo during > ${q(path.join(alpha, 'during.txt'))}`, { timeoutMs: 60_000 });
  let duringDone = false;
  void during.then(() => (duringDone = true), () => (duringDone = true));
  await guest.waitLog((l) => l.msg === 'cannot reach the host agent yet' && Date.parse(String(l.time)) >= killedAt, 'the guest to retry while the host is down');
  t.false(duringDone, 'the operation waits while the host agent is down (it neither completes nor fails)');

  const host2 = await w.startHost();
  const reconnected = await guest.waitLog((l) => l.msg === 'connected to the host agent' && l.epoch === 2, 'the guest to reconnect');
  t.log(`host down for ${Date.parse(String(reconnected.time)) - killedAt} ms (SIGKILL to the guest's reconnection)`);
  t.truthy(await host2.waitLog((l) => l.msg === 'state restored', 'the state file to be read'));

  const d = await during;
  t.is(d.code, 0, `the operation issued during the outage completed: ${d.stderr}`);
  t.is(d.stdout, 'before\n');
  t.is(await fs.readFile(path.join(node, 'projects/alpha/during.txt'), 'utf8'), 'during\n');

  // The held descriptors.
  held.stdin!.end('go\n');
  t.is(await heldExit, 0, `the holder finished cleanly: ${heldErr}`);
  const heldResult = JSON.parse(heldOut.trim().split('\n').pop()!) as { first: string; again: string };
  t.deepEqual(heldResult, { first: 'before\n', again: 'before\n' });
  t.is(await fs.readFile(path.join(node, 'projects/alpha/held.txt'), 'utf8'), 'one\ntwo\n', 'writes before and after the restart, through one descriptor, are on the storage node');

  // The same mounts (same mount ids) still read and write.
  t.is(await mountId(alpha), idAlpha, 'the same mount, not a new one');
  t.is(await mountId(extra), idExtra, 'the attached share is the same mount too');
  await shOk(`echo after > ${q(path.join(alpha, 'after.txt'))} && cat ${q(path.join(alpha, 'before.txt'))} ${q(path.join(alpha, 'after.txt'))}`);
  t.is(await fs.readFile(path.join(node, 'projects/alpha/after.txt'), 'utf8'), 'after\n');
  t.is(await shOk(`cat ${q(path.join(extra, 'x.txt'))} && echo y > ${q(path.join(extra, 'y.txt'))} && cat ${q(path.join(extra, 'y.txt'))}`), 'x\ny\n');
  t.is(await fs.readFile(path.join(node, 'projects/extra/y.txt'), 'utf8'), 'y\n');

  // dirvisorctl state survived.
  const after = await w.list();
  t.deepEqual(after, before, 'list shows the same VMs, shares and resolutions after the restart');
  t.truthy(after.find((v) => v.name === 'api-vm' && v.source === 'api'), 'the VM made with "vm create" is still defined');
  t.truthy(share(after, 'web-1', extra), 'the share attached with dirvisorctl is still there');
  const st = await w.status();
  t.is(st.connections.filter((c) => c.vm === 'web-1').length, 1, 'the guest is connected to the new host agent');

  // And it still follows attach/detach on the new host agent.
  const late = w.target('late');
  t.is((await w.ctl('attach', 'web-1', '/projects/late', late, '--create')).code, 0);
  await waitMounted(w, late, 5000);
  t.is((await w.ctl('detach', 'web-1', late)).code, 0);
  await waitUnmounted(w, late, 5000);
  t.false((await guest.lines()).some((l: LogLine) => (l.level ?? 0) >= 50), 'the guest logged no error');
});

// A VM whose share cannot be resolved (the directory exists nowhere, creation not asked for)
// says why in list; after a host restart it must still say why (and not "undefined").
test.serial('an unresolved share keeps its reason in list across a host agent restart', async (t) => {
  const w = await world(t);
  await w.addNode('n1', 16);
  await w.writeHostConfig();
  await w.startHost();
  const r = await w.ctl('vm', 'create', 'web-2', '--token', token('web2'), '--share', `/projects/missing:${w.target('m')}`);
  t.is(r.code, 0, r.stderr);
  const before = share(await w.list(), 'web-2', w.target('m'))!;
  t.regex(before.error ?? '', /does not exist on any storage node/);
  await w.host!.stop();
  await w.startHost();
  const after = share(await w.list(), 'web-2', w.target('m'))!;
  t.regex(after.error ?? '', /does not exist on any storage node/, `after the restart the share says why it is not served: ${JSON.stringify(after)}`);
  const human = (await w.ctl('list')).stdout;
  t.false(human.includes('undefined'), `list prints no "undefined":\n${human}`);
});

// `dirvisorctl --help` walks an operator through a day.
test.serial('dirvisorctl --help describes an operator\'s day', async (t) => {
  const r = await run([process.execPath, CTL_BIN, '--help']);
  t.is(r.code, 0);
  for (const needle of ['vm create', 'vm delete', 'attach', '--create', 'detach', 'list', 'status', '--json', 'host.yaml', 'storage.nodes', 'vms.d', '--socket']) {
    t.true(r.stdout.includes(needle), `--help mentions ${needle}`);
  }
  t.regex(r.stdout, /operator's day/i);
  t.regex(r.stdout, /dirvisorctl vm create \S+ --cid \d+ --share \/\S+:\/\S+/);
  t.regex(r.stdout, /dirvisorctl attach \S+ \/\S+ \/\S+ --create/);
  t.regex(r.stdout, /dirvisorctl detach \S+ \/\S+/);
  const bare = await run([process.execPath, CTL_BIN]);
  t.is(bare.code, 2, 'no command is a usage error');
  t.true(bare.stdout.includes('vm create'));
});
