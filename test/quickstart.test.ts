// The README's quick start: `bash scripts/demo.sh` sets up what it needs, serves a storage
// directory, mounts it, walks through writing on both sides, and cleans up: run non-interactively
// (as CI would) and in a terminal ended with Ctrl-C, each in a private directory and from a copy of
// the working tree; afterwards nothing of it may be left running or mounted. Also the README's
// sshfs-like commands.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  REPO, tempDir, sh, isMounted, mountsUnder, processesMatching, run, removeTree, startHost, shOk, waitFor, canConnect,
} from './helpers/agents.js';

/** The text between the line "== <title>" and the next "== " line. */
function section(out: string, title: string): string {
  const start = out.indexOf(`== ${title}`);
  if (start < 0) return '';
  const rest = out.slice(start + 3 + title.length);
  const end = rest.indexOf('\n== ');
  return end < 0 ? rest : rest.slice(0, end);
}

interface Demo {
  work: string;
  storage: string;
  mnt: string;
  clone: string;
}

/**
 * A private demo directory and a copy of this working tree to run scripts/demo.sh from. The demo
 * starts by building the project (scripts/setup.sh); in a copy, as a clone with its dependencies
 * installed, that build does not rewrite the dist/ other tests are running from. node_modules is
 * shared (read-only use) unless setup.sh would reinstall it, which must not happen to the shared one.
 * Whatever happens, teardown leaves no mount and no agent behind.
 */
async function prepareDemo(t: ExecutionContext): Promise<Demo | null> {
  const work = await tempDir('dirvisor-e2e-demo-');
  const clone = await tempDir('dirvisor-e2e-clone-');
  const demo = { work, clone, storage: path.join(work, 'storage'), mnt: path.join(work, 'mnt') };
  t.teardown(async () => {
    if (await isMounted(demo.mnt)) await run(['fusermount3', '-uz', demo.mnt]);
    for (const p of [...(await processesMatching(work)), ...(await processesMatching(clone))]) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    await removeTree(work);
    await removeTree(clone);
  });
  const lock = await fs.stat(path.join(REPO, 'package-lock.json'));
  const installed = await fs.stat(path.join(REPO, 'node_modules/.package-lock.json')).catch(() => null);
  if (!installed || lock.mtimeMs > installed.mtimeMs) {
    t.fail('node_modules is missing or older than package-lock.json: run npm ci first');
    return null;
  }
  await shOk(`tar -C ${REPO} --exclude=./node_modules --exclude=./out --exclude=./.git -cf - . | tar -C ${clone} -xf -`);
  await fs.symlink(path.join(REPO, 'node_modules'), path.join(clone, 'node_modules'));
  return demo;
}

async function demoLogs(d: Demo, stdout: string, stderr: string): Promise<string> {
  const read = (f: string) => fs.readFile(path.join(d.work, f), 'utf8').catch(() => '');
  return `--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}\n--- host.log ---\n${await read('host.log')}\n--- guest.log ---\n${await read('guest.log')}`;
}

/** The walkthrough shows the files on both sides; at the end nothing is left but the files. */
async function checkWalkthroughAndCleanup(t: ExecutionContext, d: Demo, out: string): Promise<void> {
  const { storage, mnt, work } = d;
  // The agents started and the mount appeared.
  t.regex(section(out, 'starting the host agent'), new RegExp(`serving ${storage} on unix://`));
  const mounted = section(out, `starting the guest agent: mounting it at ${mnt}`);
  t.regex(mounted, new RegExp(`dirvisor:default ${mnt} fuse\\.dirvisor rw`), 'the mount shows in /proc/mounts');

  // Written through the mount, seen on the storage side.
  const storageSide = section(out, 'the files are on the storage side');
  t.regex(storageSide, /hello\.txt/);
  t.regex(storageSide, /projects/);
  t.regex(storageSide, /numbers/);
  t.regex(storageSide, /\$ cat \S+\/storage\/hello\.txt\r?\nhello from the guest\r?\n/);

  // Written on the storage side, seen through the mount.
  const guestSide = section(out, 'someone changes the storage directly; the guest sees it');
  t.regex(guestSide, /\$ cat \S+\/mnt\/from-storage\.txt\r?\nwritten on the storage node\r?\n/);
  t.regex(guestSide, /from-storage\.txt/);
  t.regex(guestSide, new RegExp(`hello\\.txt: 21 bytes, mode -rw-r--r--, owner ${os.userInfo().username}`));

  // The end: cleaned up, files kept.
  t.regex(section(out, 'cleaning up'), new RegExp(`stopped; the storage directory ${storage} keeps the files`));
  t.false(await isMounted(mnt), 'no mount left');
  t.deepEqual(await mountsUnder(work), []);
  // The background guest agent leaves once its mount is gone: give it a moment, not forever.
  await waitFor(async () => (await processesMatching(work)).length === 0, 'both agents to exit', {
    timeoutMs: 10_000,
    details: async () => JSON.stringify(await processesMatching(work)),
  });
  t.false(await canConnect(path.join(work, 'host.sock')), 'the host agent socket no longer accepts connections');
  // The files stay on the storage side.
  t.is(await fs.readFile(path.join(storage, 'hello.txt'), 'utf8'), 'hello from the guest\n');
  t.is(await fs.readFile(path.join(storage, 'projects/alpha/numbers'), 'utf8'), '1\n2\n3\n4\n5\n');
  t.is(await fs.readFile(path.join(storage, 'from-storage.txt'), 'utf8'), 'written on the storage node\n');
  // The guest agent logged a clean unmount.
  t.regex(await fs.readFile(path.join(work, 'guest.log'), 'utf8'), /"msg":"unmounted"/);
}

test('scripts/demo.sh runs the walkthrough non-interactively and cleans up after itself', async (t) => {
  t.timeout(15 * 60_000);
  const d = await prepareDemo(t);
  if (!d) return;
  const r = await sh('bash scripts/demo.sh', {
    cwd: d.clone,
    env: { DIRVISOR_DEMO_NONINTERACTIVE: '1', DIRVISOR_DEMO_DIR: d.work },
    timeoutMs: 14 * 60_000,
  });
  t.teardown(async () => {
    if (!t.passed) t.log(await demoLogs(d, r.stdout, r.stderr));
  });
  t.is(r.code, 0, 'demo.sh exits 0');
  await checkWalkthroughAndCleanup(t, d, r.stdout);
});

test('scripts/demo.sh in a terminal keeps the mount up until Ctrl-C, then cleans up', async (t) => {
  t.timeout(15 * 60_000);
  if (!existsSync('/usr/bin/script')) {
    t.log('script(1) is not installed: no terminal to run the demo in');
    t.pass();
    return;
  }
  const d = await prepareDemo(t);
  if (!d) return;
  // script(1) gives the demo a terminal; a ^C written to it is the terminal's interrupt, sent to the
  // demo's foreground process group exactly as Ctrl-C would be.
  const p = spawn('script', ['-qfc', 'bash scripts/demo.sh', '/dev/null'], {
    cwd: d.clone,
    env: { ...process.env, DIRVISOR_DEMO_DIR: d.work, DIRVISOR_DEMO_NONINTERACTIVE: '', LC_ALL: 'C' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  p.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  p.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((resolve) => p.once('exit', (code) => resolve(code)));
  t.teardown(async () => {
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    if (!t.passed) t.log(await demoLogs(d, out, err));
  });
  await waitFor(() => out.includes('the mount stays up') || p.exitCode !== null, 'the demo to reach "the mount stays up"', {
    timeoutMs: 12 * 60_000,
    details: () => out.slice(-3000),
  });
  t.true(await isMounted(d.mnt), 'the mount is up while the demo waits');
  t.is(await shOk(`cat ${d.mnt}/hello.txt`), 'hello from the guest\n');
  p.stdin!.write('\x03');
  const code = await Promise.race([exited, new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 60_000))]);
  t.not(code, 'hung', 'the demo ends after Ctrl-C');
  p.stdin!.end();
  await checkWalkthroughAndCleanup(t, d, out);
});

test('the README\'s sshfs-like commands: background mount, umount, fusermount3 -u, clear errors', async (t) => {
  t.timeout(5 * 60_000);
  const work = await tempDir('dirvisor-e2e-cli-');
  const storage = path.join(work, 'share');
  const mnt = path.join(work, 'mnt');
  await fs.mkdir(storage);
  await fs.mkdir(mnt);
  await fs.writeFile(path.join(storage, 'hello'), 'hi\n');
  const host = await startHost({ dir: storage, workDir: work });
  t.teardown(async () => {
    if (await isMounted(mnt)) await run(['fusermount3', '-uz', mnt]);
    for (const p of await processesMatching(mnt)) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    await host.stop();
    await removeTree(work);
  });
  // npx installs this package once more, in place, for its own commands: that must not rebuild
  // the addon or the JavaScript that other running processes use.
  const builtAt = async () => (await Promise.all(['build/Release/dirvisor_native.node', 'dist/native/index.js'].map((f) => fs.stat(path.join(REPO, f))))).map((st) => st.mtimeMs);
  const before = await builtAt();
  const guestLog = path.join(work, 'guest.log');
  const mount = () => sh(`npx dirvisor-guest mount ${host.uri} ${mnt} --token ${host.token} -o allow_other --log-file ${guestLog}`);
  const daemonGone = () => waitFor(async () => (await processesMatching(mnt)).length === 0, 'the guest agent to exit', {
    details: async () => JSON.stringify(await processesMatching(mnt)),
  });

  // `mount` returns once the mount is usable, and keeps serving in the background.
  let r = await mount();
  t.is(r.code, 0, r.stderr);
  t.is(await shOk(`cat ${mnt}/hello && echo written > ${mnt}/new && cat ${storage}/new`), 'hi\nwritten\n');
  t.true((await processesMatching(mnt)).length > 0, 'a background agent serves the mount');
  // A second mount on the same mount point is refused clearly.
  r = await mount();
  t.not(r.code, 0);
  t.regex(r.stderr, /busy|already mounted/i);
  // `umount` unmounts, and the background agent exits.
  r = await sh(`npx dirvisor-guest umount ${mnt}`);
  t.is(r.code, 0, r.stderr);
  t.false(await isMounted(mnt));
  await daemonGone();
  // fusermount3 -u works the same.
  t.is((await mount()).code, 0);
  t.is(await shOk(`cat ${mnt}/new`), 'written\n');
  await shOk(`fusermount3 -u ${mnt}`);
  t.false(await isMounted(mnt));
  await daemonGone();
  t.regex(await fs.readFile(guestLog, 'utf8'), /"msg":"unmounted"/);

  // Clear messages for the usual mistakes.
  r = await sh(`npx dirvisor-guest mount ${host.uri} ${mnt} --token wrong-token`);
  t.not(r.code, 0);
  t.regex(r.stderr, /token/);
  t.false(await isMounted(mnt));
  r = await sh(`npx dirvisor-host serve ${work}/does-not-exist --listen unix://${work}/x.sock --token t`);
  t.not(r.code, 0);
  t.regex(r.stderr, /does not exist/);
  r = await sh(`npx dirvisor-host serve ${storage} --listen unix://${work}/y.sock`);
  t.not(r.code, 0);
  t.regex(r.stderr, /token/);
  r = await sh('npx dirvisor-guest mount');
  t.not(r.code, 0);
  t.regex(r.stderr, /URI and MOUNTPOINT|usage/i);
  t.regex((await sh('npx dirvisor-guest --help')).stdout, /dirvisor-guest mount URI MOUNTPOINT/);
  t.regex((await sh('npx dirvisor-host --help')).stdout, /dirvisor-host serve DIR --listen URI/);
  t.deepEqual(await builtAt(), before, 'npx left the build as it was');
});
