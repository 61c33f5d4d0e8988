// A throwaway single-node Ceph cluster (CephFS over ceph-fuse) for tests, through the harness in
// ../shared/ceph (see its README.md): cephfs-up.sh brings it up in ~2 s, cephfs-mount.sh adds an
// independent ceph-fuse client, cephfs-down.sh unmounts everything, stops every daemon and removes
// the work directory.
//
//   const avail = cephAvailability();            // synchronous: decide at load time whether to skip
//   await ensureCephInstalled();                 // apt-get install when missing (~70 s)
//   const ceph = await startCeph();              // cluster + mount at ceph.mount
//   const other = await ceph.mountClient();      // a second ceph-fuse client of the same fs
//   await ceph.down();                           // always (also run at process exit)
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const PACKAGES = ['ceph-mon', 'ceph-osd', 'ceph-mds', 'ceph-mgr', 'ceph-fuse'];
const COMMANDS = ['ceph', 'ceph-mon', 'ceph-osd', 'ceph-mds', 'ceph-mgr', 'ceph-fuse', 'ceph-authtool', 'monmaptool'];
// Tools the harness scripts use besides Ceph, and the package that brings each.
const TOOLS: Record<string, string> = { uuidgen: 'uuid-runtime', curl: 'curl', md5sum: 'coreutils', realpath: 'coreutils' };

/** ../shared/ceph next to the repository (or $DIRVISOR_CEPH_HARNESS). */
export function cephHarnessDir(): string | undefined {
  const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..'); // dist/test/helpers → repo
  const candidates = [process.env.DIRVISOR_CEPH_HARNESS, path.resolve(repoRoot, '../shared/ceph'), path.resolve(process.cwd(), '../shared/ceph')];
  return candidates.find((d): d is string => !!d && fs.existsSync(path.join(d, 'cephfs-up.sh')));
}

function has(command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}

function missingPackages(): string[] {
  const missing = COMMANDS.some((c) => !has(c)) || spawnSync('/usr/bin/python3', ['-c', 'import rados'], { stdio: 'ignore' }).status !== 0 ? [...PACKAGES] : [];
  for (const [tool, pkg] of Object.entries(TOOLS)) if (!has(tool) && !missing.includes(pkg)) missing.push(pkg);
  return missing;
}

export type CephAvailability = { ok: true; missing: string[]; harness: string } | { ok: false; reason: string };

/**
 * Whether a cluster can be had here, decided quickly and without side effects: the harness is
 * present, we are root with FUSE, and the packages are installed or installable with apt-get.
 */
export function cephAvailability(): CephAvailability {
  const harness = cephHarnessDir();
  if (!harness) return { ok: false, reason: 'the Ceph harness (../shared/ceph/cephfs-up.sh) is not there' };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'the Ceph harness needs root (FUSE allow_other, mount, umount)' };
  if (!fs.existsSync('/dev/fuse')) return { ok: false, reason: '/dev/fuse is missing' };
  const missing = missingPackages();
  if (!missing.length) return { ok: true, missing, harness };
  if (!has('apt-get')) return { ok: false, reason: `Ceph is not installed (${missing.join(', ')}) and there is no apt-get to install it` };
  // Ask apt whether it could install them (a dry run: no download, no change), with fresh package
  // lists if it cannot.
  const simulate = () => spawnSync('apt-get', ['install', '-s', ...missing], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  let dry = simulate();
  if (dry.status !== 0) {
    spawnSync('apt-get', ['update', '-o', 'DPkg::Lock::Timeout=120'], { stdio: 'ignore', timeout: 90_000 });
    dry = simulate();
  }
  if (dry.status !== 0) {
    const why = `${dry.stdout ?? ''}${dry.stderr ?? ''}`.split('\n').find((l) => /^E:/.test(l)) ?? `apt-get exit ${dry.status}`;
    return { ok: false, reason: `Ceph is not installed and apt-get cannot install ${missing.join(' ')}: ${why}` };
  }
  return { ok: true, missing, harness };
}

function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs: number }): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    const timer = setTimeout(() => {
      output += `\n[killed after ${opts.timeoutMs} ms]`;
      child.kill('SIGTERM');
    }, opts.timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: -1, output: output + String(err) });
    });
  });
}

const tail = (text: string, lines = 25) => text.trim().split('\n').slice(-lines).join('\n');

/** Installs the Ceph packages when missing (apt-get; an update first only if apt cannot find them). */
export async function ensureCephInstalled(log: (line: string) => void = () => {}): Promise<{ installedNow: string[]; seconds: number }> {
  const missing = missingPackages();
  const t0 = Date.now();
  if (!missing.length) return { installedNow: [], seconds: 0 };
  const env = { DEBIAN_FRONTEND: 'noninteractive' };
  const install = () => run('apt-get', ['install', '-y', '-o', 'DPkg::Lock::Timeout=600', ...missing], { env, timeoutMs: 15 * 60_000 });
  log(`installing ${missing.join(' ')} with apt-get (about 70 s)`);
  let r = await install();
  if (r.code !== 0 && /Unable to locate package|has no installation candidate|404\s+Not Found/.test(r.output)) {
    log('apt-get could not find them; running apt-get update and trying again');
    await run('apt-get', ['update', '-o', 'DPkg::Lock::Timeout=600'], { env, timeoutMs: 5 * 60_000 });
    r = await install();
  }
  if (r.code !== 0 || missingPackages().length) {
    throw new Error(`could not install the Ceph packages (apt-get exit ${r.code}):\n${tail(r.output)}`);
  }
  return { installedNow: missing, seconds: (Date.now() - t0) / 1000 };
}

export interface CephCluster {
  /** Temporary directory holding the work directory and every mount point. */
  base: string;
  workdir: string;
  /** The first ceph-fuse mount (made by cephfs-up.sh). */
  mount: string;
  /** Seconds cephfs-up.sh reported (UP_SECONDS). */
  upSeconds: number;
  /** WORKDIR/env: CEPH_CONF, CEPH_KEYRING, CEPH_MON_HOST, CEPH_FSID, CEPH_FS_NAME, CEPH_MOUNTPOINT. */
  env: Record<string, string>;
  /** Mounts the file system again with a new, independent ceph-fuse client; returns the mount point. */
  mountClient(name?: string): Promise<string>;
  /** Unmounts every client, stops every daemon, removes the work directory. Idempotent. */
  down(): Promise<{ seconds: number }>;
}

const live = new Set<CephCluster>();
let exitHooked = false;

function hookExit(harness: string): void {
  if (exitHooked) return;
  exitHooked = true;
  // Last resort when a test process ends without its after-hook (crash, timeout): down is idempotent.
  process.once('exit', () => {
    for (const c of live) {
      try {
        execFileSync(path.join(harness, 'cephfs-down.sh'), [c.workdir, c.mount], { stdio: 'ignore', timeout: 60_000 });
        fs.rmSync(c.base, { recursive: true, force: true });
      } catch {
        // nothing more can be done at exit
      }
    }
  });
}

/** Starts a cluster in a fresh temporary directory. Extra env: CEPH_OSD_BYTES, CEPH_FUSE_OPTS, ... */
export async function startCeph(opts: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CephCluster> {
  const harness = cephHarnessDir();
  if (!harness) throw new Error('the Ceph harness (../shared/ceph) is not there');
  hookExit(harness);
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'dirvisor-ceph-'));
  const workdir = path.join(base, 'ceph');
  const mount = path.join(base, 'mnt');
  const clients: string[] = [];
  let downed: Promise<{ seconds: number }> | null = null;
  const cluster: CephCluster = {
    base,
    workdir,
    mount,
    upSeconds: NaN,
    env: {},
    async mountClient(name = `mnt${clients.length + 2}`) {
      const dir = path.join(base, name);
      const r = await run(path.join(harness, 'cephfs-mount.sh'), [workdir, dir], { env: opts.env, timeoutMs: 90_000 });
      if (r.code !== 0) throw new Error(`cephfs-mount.sh ${dir} failed (exit ${r.code}):\n${tail(r.output)}`);
      clients.push(dir);
      return dir;
    },
    down() {
      downed ??= (async () => {
        const t0 = Date.now();
        const r = await run(path.join(harness, 'cephfs-down.sh'), [workdir, mount], { timeoutMs: 120_000 });
        live.delete(cluster);
        if (r.code !== 0) throw new Error(`cephfs-down.sh failed (exit ${r.code}):\n${tail(r.output)}`);
        fs.rmSync(base, { recursive: true, force: true });
        return { seconds: (Date.now() - t0) / 1000 };
      })();
      return downed;
    },
  };
  live.add(cluster);
  const r = await run(path.join(harness, 'cephfs-up.sh'), [workdir, mount], { env: opts.env, timeoutMs: opts.timeoutMs ?? 180_000 });
  if (r.code !== 0) {
    await cluster.down().catch(() => undefined);
    throw new Error(`cephfs-up.sh failed (exit ${r.code}):\n${tail(r.output)}`);
  }
  cluster.upSeconds = Number(/UP_SECONDS\s+([\d.]+)/.exec(r.output)?.[1] ?? NaN);
  for (const line of fs.readFileSync(path.join(workdir, 'env'), 'utf8').split('\n')) {
    const m = /^(?:export\s+)?([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) cluster.env[m[1]] = m[2].replace(/^(['"])(.*)\1$/, '$2');
  }
  // statfs on the mount is answered from the mgr's PG statistics, which lag the start by a moment;
  // until then the file system reports 0 bytes, which would fool placement by free space.
  const deadline = Date.now() + 60_000;
  while (fs.statfsSync(mount).blocks === 0) {
    if (Date.now() > deadline) {
      await cluster.down().catch(() => undefined);
      throw new Error(`statfs on ${mount} still reports 0 bytes after 60 s (is ceph-mgr running?)`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return cluster;
}

/** Every fuse.ceph-fuse mount below `dir` still listed in /proc/mounts. */
export function cephMountsUnder(dir: string): string[] {
  return fs.readFileSync('/proc/mounts', 'utf8').split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'fuse.ceph-fuse' && (f[1] === dir || f[1]?.startsWith(dir + '/')))
    .map((f) => f[1]);
}

/**
 * What every Ceph test file starts with: its tests run serially, or are skipped (saying why, in the
 * title too) where Ceph cannot run here.
 */
export function cephTests(file: string): { available: boolean; cephTest: typeof test.serial | typeof test.serial.skip; title: (t: string) => string } {
  const avail = cephAvailability();
  if (!avail.ok) console.warn(`${file}: skipped: ${avail.reason}`);
  return {
    available: avail.ok,
    cephTest: avail.ok ? test.serial : test.serial.skip,
    title: (t) => (avail.ok ? t : `${t} (skipped: ${avail.reason})`),
  };
}

/** Installs Ceph when missing and starts a cluster, for a `test.before`; adds install_s and up_s to `timings`. */
export async function installAndStartCeph(t: ExecutionContext, timings: Record<string, number> = {}): Promise<CephCluster> {
  t.timeout(20 * 60_000, 'installing Ceph and starting the cluster took more than 20 minutes');
  let t0 = Date.now();
  const installed = await ensureCephInstalled((line) => t.log(line));
  if (installed.installedNow.length) t.log(`installed ${installed.installedNow.join(' ')} in ${installed.seconds.toFixed(1)} s`);
  timings.install_s = (Date.now() - t0) / 1000;
  t0 = Date.now();
  const ceph = await startCeph();
  timings.up_s = (Date.now() - t0) / 1000;
  return ceph;
}
