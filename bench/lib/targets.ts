// The file systems under test, each over its own directory of the same backing file system:
//   bare            the backing directory itself
//   passthrough_ll  libfuse's C example, mounted with -o source=DIR (default options)
//   dirvisor        dirvisor-host serve DIR + dirvisor-guest mount over a unix socket (default options)
//   sshfs           sshfs root@127.0.0.1:DIR through a private sshd (default options)
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, run, waitFor, which } from './proc.js';
import { abortFuse, isMounted, mountEntry, unmountFuse, type MountEntry } from './mounts.js';
import { REPO, CACHE_DIR, type TargetName } from './config.js';
import type { Sshd } from './sshd.js';

export interface Target {
  name: TargetName;
  /** Where the workloads run. */
  dir: string;
  /** The processes serving it, whose CPU time we count. */
  procs: Daemon[];
  /** Why it stopped working mid-run, if it did. */
  broken: string | null;
  /** Fail everything in flight (a phase timed out). */
  abort(): void;
  stop(): Promise<void>;
}

function fuseTarget(name: TargetName, mnt: string, procs: Daemon[], fstype: string): Target {
  const entry: MountEntry = mountEntry(mnt)!;
  if (!entry.fstype.startsWith(fstype)) throw new Error(`${mnt} is mounted as ${entry.fstype}, expected ${fstype}`);
  return {
    name,
    dir: mnt,
    procs,
    broken: null,
    abort: () => abortFuse(entry.dev),
    async stop() {
      await unmountFuse(mnt);
      // The FUSE server (the last process) exits by itself once unmounted; the others (dirvisor's
      // host agent) are told to.
      const [server, ...others] = [...procs].reverse();
      if (!(await Promise.race([server.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5000))]))) await server.stop();
      for (const p of others) await p.stop();
    },
  };
}

/** Waits until mnt is a mount of type fstype, failing early (with its log) if a process exits. */
async function waitMounted(mnt: string, fstype: string, procs: Daemon[], timeoutMs = 30_000): Promise<void> {
  await waitFor(`${mnt} to be mounted`, () => {
    for (const p of procs) if (!p.running) throw new Error(`${p.name} exited (${JSON.stringify(p.exitInfo)}) before mounting: ${p.logTail(800)}`);
    return isMounted(mnt, fstype);
  }, timeoutMs);
}

export function bareTarget(dir: string): Target {
  fs.mkdirSync(dir, { recursive: true });
  return { name: 'bare', dir, procs: [], broken: null, abort: () => {}, stop: async () => {} };
}

export async function passthroughTarget(source: string, mnt: string, logDir: string): Promise<Target> {
  const build = await run('bash', [path.join(REPO, 'bench/passthrough.sh'), 'build'], { timeoutMs: 300_000, env: { ...process.env, BENCH_CACHE_DIR: CACHE_DIR } });
  if (build.code !== 0) throw new Error(build.stderr.trim().replace(/^passthrough\.sh: /, '') || `passthrough.sh exited ${build.code}`);
  const bin = build.stdout.trim().split('\n').pop()!;
  fs.mkdirSync(source, { recursive: true });
  fs.mkdirSync(mnt, { recursive: true });
  const p = new Daemon('passthrough_ll', bin, ['-f', '-o', `source=${source}`, mnt], path.join(logDir, 'passthrough_ll.log'));
  try {
    await waitMounted(mnt, 'fuse.passthrough_ll', [p]);
  } catch (err) {
    await p.stop();
    throw err;
  }
  return fuseTarget('passthrough_ll', mnt, [p], 'fuse.passthrough_ll');
}

export async function dirvisorTarget(source: string, mnt: string, workDir: string, label: string, extraOptions: string): Promise<Target> {
  fs.mkdirSync(source, { recursive: true });
  fs.mkdirSync(mnt, { recursive: true });
  const sock = path.join(workDir, `dv-${label}.sock`);
  const uri = `unix://${sock}`;
  const token = crypto.randomBytes(12).toString('hex');
  const host = new Daemon('dirvisor-host', process.execPath, [path.join(REPO, 'bin/dirvisor-host.js'), 'serve', source, '--listen', uri, '--token', token], path.join(workDir, `dirvisor-host-${label}.log`), { cwd: REPO });
  try {
    await waitFor('dirvisor-host to listen', () => {
      if (!host.running) throw new Error(`dirvisor-host exited before listening: ${host.logTail(800)}`);
      return fs.existsSync(sock);
    }, 30_000);
  } catch (err) {
    await host.stop();
    throw err;
  }
  const args = [path.join(REPO, 'bin/dirvisor-guest.js'), 'mount', uri, mnt, '--token', token, '--foreground'];
  if (extraOptions) args.push('-o', extraOptions);
  const guest = new Daemon('dirvisor-guest', process.execPath, args, path.join(workDir, `dirvisor-guest-${label}.log`), { cwd: REPO });
  try {
    await waitMounted(mnt, 'fuse', [host, guest]);
  } catch (err) {
    await unmountFuse(mnt);
    await guest.stop();
    await host.stop();
    throw err;
  }
  const fstype = mountEntry(mnt)!.fstype;
  return fuseTarget('dirvisor', mnt, [host, guest], fstype);
}

export async function sshfsTarget(sshd: Sshd, source: string, mnt: string, logDir: string): Promise<Target> {
  const sshfs = which('sshfs');
  if (!sshfs) throw new Error('no sshfs (apt-get install sshfs)');
  fs.mkdirSync(source, { recursive: true });
  fs.mkdirSync(mnt, { recursive: true });
  const args = [
    `root@127.0.0.1:${source}`, mnt, '-f',
    '-p', String(sshd.port),
    '-F', '/dev/null',
    '-o', `IdentityFile=${sshd.clientKey}`,
    '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'BatchMode=yes',
    '-o', 'LogLevel=ERROR',
  ];
  const p = new Daemon('sshfs', sshfs, args, path.join(logDir, 'sshfs.log'));
  try {
    await waitMounted(mnt, 'fuse.sshfs', [p]);
  } catch (err) {
    await unmountFuse(mnt);
    await p.stop();
    throw err;
  }
  return fuseTarget('sshfs', mnt, [p], 'fuse.sshfs');
}
