// End-to-end helpers for the managed agents: `dirvisor-host run --config host.yaml` and
// `dirvisor-guest run --config guest.yaml` as real child processes, `dirvisorctl` against the
// host's control socket, storage nodes on tmpfs mounts made for the test, and real FUSE mounts.
//
// Everything lives in one temp directory per "world" (config, state_dir, vms_dir, sockets, logs,
// storage nodes, guest targets). `world.cleanup()` (for t.teardown) stops the daemons (SIGTERM,
// then SIGKILL), clears FUSE mounts (fusermount3 -uz), unmounts the tmpfs nodes and removes the
// directory, and fails if anything is still mounted under it. An exit hook does the same as a
// last resort if a test process dies without its teardown.
//
// The test process never makes synchronous fs calls on the FUSE mounts: mounts are touched through
// child processes (sh/py helpers here), which also carry a timeout each.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import { existsSync, openSync, closeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { exited, mountsUnder, parseMounts, terminate, unescapeMountField, waitExit, waitFor, type MountEntry } from './system.js';

/** The repository root (this file runs as dist/test/helpers/daemons.js). */
export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const HOST_BIN = path.join(REPO, 'bin/dirvisor-host.js');
export const GUEST_BIN = path.join(REPO, 'bin/dirvisor-guest.js');
export const CTL_BIN = path.join(REPO, 'bin/dirvisorctl.js');
export const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

// ---- last-resort cleanup -------------------------------------------------------------------------

const liveProcs = new Set<ChildProcess>();
const liveWorlds = new Set<string>();

process.once('exit', () => {
  for (const p of liveProcs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  for (const root of liveWorlds) {
    for (const m of mountsUnderSync(root).reverse()) {
      spawnSync(m.fstype.startsWith('fuse') ? 'fusermount3' : 'umount', m.fstype.startsWith('fuse') ? ['-uz', m.target] : ['-l', m.target], { stdio: 'ignore', timeout: 5000 });
    }
  }
});

function mountsUnderSync(dir: string): MountEntry[] {
  const r = spawnSync('cat', ['/proc/mounts'], { encoding: 'utf8' });
  return parseMounts(r.stdout ?? '').filter((m) => m.target === dir || m.target.startsWith(dir + '/'));
}

// ---- small utilities -----------------------------------------------------------------------------

export { waitFor, mountTable, mountEntry, isMounted, mountsUnder, type MountEntry } from './system.js';

/** The mount id (first field of /proc/self/mountinfo) of the mount at `mnt`: the same id means the same mount. */
export async function mountId(mnt: string): Promise<number | undefined> {
  const text = await fs.readFile('/proc/self/mountinfo', 'utf8');
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f.length > 4 && unescapeMountField(f[4]) === mnt) return Number(f[0]);
  }
  return undefined;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  ms: number;
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  input?: string | Buffer;
  timeoutMs?: number;
  uid?: number;
}

/** Runs argv as a child process in its own process group; never throws for a non-zero exit, throws on timeout. */
export function run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  const full = opts.uid === undefined ? argv : ['setpriv', `--reuid=${opts.uid}`, `--regid=${opts.uid}`, '--clear-groups', ...argv];
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const p = spawn(full[0], full.slice(1), {
      cwd: opts.cwd ?? REPO,
      env: { ...process.env, LC_ALL: 'C', ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    liveProcs.add(p);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout!.on('data', (c: Buffer) => out.push(c));
    p.stderr!.on('data', (c: Buffer) => err.push(c));
    p.stdin!.on('error', () => {});
    p.stdin!.end(opts.input ?? '');
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-p.pid!, 'SIGKILL');
      } catch {
        p.kill('SIGKILL');
      }
    }, timeoutMs);
    p.once('error', (e) => {
      clearTimeout(timer);
      liveProcs.delete(p);
      reject(e);
    });
    p.once('close', (code, signal) => {
      clearTimeout(timer);
      liveProcs.delete(p);
      const r = { stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), code, signal, ms: Date.now() - t0 };
      if (timedOut) reject(new Error(`command timed out after ${timeoutMs} ms: ${full.join(' ')}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`));
      else resolve(r);
    });
  });
}

/** `bash -c cmd` with pipefail. */
export function sh(cmd: string, opts: RunOptions = {}): Promise<RunResult> {
  return run(['bash', '-o', 'pipefail', '-c', cmd], opts);
}

/** `bash -c cmd` that must succeed; returns stdout. */
export async function shOk(cmd: string, opts: RunOptions = {}): Promise<string> {
  const r = await sh(cmd, opts);
  if (r.code !== 0) throw new Error(`command failed (exit ${r.code ?? r.signal}): ${cmd}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r.stdout;
}

/** Single-quotes a string for bash. */
export function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

// ---- one daemon process --------------------------------------------------------------------------

export type LogLine = Record<string, unknown> & { msg?: string; level?: number };

export class Daemon {
  readonly proc: ChildProcess;
  private stopping?: Promise<void>;

  constructor(readonly label: string, args: string[], readonly logFile: string) {
    const fd = openSync(logFile, 'a');
    try {
      this.proc = spawn(process.execPath, args, { cwd: REPO, stdio: ['ignore', fd, fd], env: { ...process.env, DIRVISOR_LOG_LEVEL: process.env.DIRVISOR_LOG_LEVEL ?? 'info' } });
    } finally {
      closeSync(fd);
    }
    liveProcs.add(this.proc);
    this.proc.once('exit', () => liveProcs.delete(this.proc));
  }

  get pid(): number {
    return this.proc.pid!;
  }

  get running(): boolean {
    return !exited(this.proc);
  }

  async log(): Promise<string> {
    return fs.readFile(this.logFile, 'utf8').catch((err: Error) => `(no log: ${err.message})`);
  }

  /** The JSON lines of the log (other lines are kept as { raw }). */
  async lines(): Promise<LogLine[]> {
    return (await this.log())
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => {
        try {
          return JSON.parse(l) as LogLine;
        } catch {
          return { raw: l };
        }
      });
  }

  async tail(n = 40): Promise<string> {
    return `--- ${this.label} log (${this.logFile}) ---\n${(await this.log()).trimEnd().split('\n').slice(-n).join('\n')}`;
  }

  /** Waits for a log line matching `pred`; fails early if the process exits. */
  async waitLog(pred: (l: LogLine) => boolean, what: string, timeoutMs = 15_000): Promise<LogLine> {
    return waitFor(
      async () => {
        const hit = (await this.lines()).find(pred);
        if (hit) return hit;
        if (!this.running) throw new Error(`${this.label} exited (${this.proc.exitCode ?? this.proc.signalCode}) while waiting for ${what}\n${await this.tail()}`);
        return undefined;
      },
      `${this.label}: ${what}`,
      { timeoutMs, details: () => this.tail() },
    );
  }

  /** SIGTERM (then SIGKILL); idempotent. */
  stop(): Promise<void> {
    return (this.stopping ??= terminate(this.proc, 8000));
  }

  /** SIGKILL now, and wait for the exit. */
  async kill9(): Promise<void> {
    if (!this.running) return;
    this.proc.kill('SIGKILL');
    await waitExit(this.proc, 10_000);
  }
}

// ---- a world: host config, storage nodes, host and guest daemons ---------------------------------

export interface ShareYaml {
  dir: string;
  target: string;
  name?: string;
  read_only?: boolean;
  create?: boolean;
  owner?: string;
  mode?: string;
  cache?: 'long' | 'auto' | 'none';
}

export interface VmYaml {
  name: string;
  identity: { token?: string; cid?: number; hvsock?: string };
  shares?: ShareYaml[];
}

export interface ShareRow {
  name: string;
  dir: string;
  target: string;
  readOnly: boolean;
  node?: string;
  hostPath?: string;
  reason?: string;
  error?: string;
}

export interface VmRow {
  name: string;
  source: string;
  identity: Record<string, unknown>;
  shares: ShareRow[];
  connections?: number;
  /** status only: what the VM holds against its limits. */
  usage?: { fds: number; maxFds: number; running: number; waiting: number; maxInFlight: number };
}

export interface ConnectionRow {
  id: number;
  vm: string | null;
  peer: string;
  since: string;
  exports: string[];
  inFlight: number;
  requests: number;
  bytesIn: number;
  bytesOut: number;
  errors: number;
}

export interface StatusReport {
  uptimeSeconds: number;
  vms: VmRow[];
  connections: ConnectionRow[];
  storage?: { nodes: Array<Record<string, unknown>>; decisions: Array<Record<string, unknown>> };
}

export interface World {
  root: string;
  /** Storage node name -> its tmpfs mount point. */
  nodes: Map<string, string>;
  configFile: string;
  vmsDir: string;
  stateDir: string;
  controlSocket: string;
  hostUri: string;
  /** Where guest targets go. */
  guestRoot: string;
  host?: Daemon;
  guests: Daemon[];
  /** Mounts a tmpfs of `sizeMiB` as a storage node. */
  addNode(name: string, sizeMiB: number): Promise<string>;
  /** Uses an existing mount (e.g. a ceph-fuse mount) as a storage node; cleanup leaves it alone. */
  addExternalNode(name: string, mountPoint: string): void;
  /** Writes host.yaml for the nodes added so far (plus extra top-level YAML). */
  writeHostConfig(extra?: Record<string, unknown>): Promise<void>;
  /** Writes vms.d/FILE (YAML). */
  writeVm(file: string, spec: VmYaml | string): Promise<string>;
  removeVm(file: string): Promise<void>;
  /** Starts `dirvisor-host run` and waits for "host agent ready". */
  startHost(): Promise<Daemon>;
  /** Starts `dirvisor-guest run` with a guest.yaml using `token`; waits for "ready" unless told not to. */
  startGuest(label: string, token: string, opts?: { wait?: boolean; extra?: Record<string, unknown> }): Promise<Daemon>;
  /** `dirvisorctl --socket S ...args`. */
  ctl(...args: string[]): Promise<RunResult>;
  /** `dirvisorctl --socket S ...args --json`, parsed; throws on a non-zero exit. */
  ctlJson<T = unknown>(...args: string[]): Promise<T>;
  status(): Promise<StatusReport>;
  list(): Promise<VmRow[]>;
  /** The guest path for a share: ROOT/guest/LABEL. */
  target(label: string): string;
  /** Logs of every daemon, for failure messages. */
  logs(): Promise<string>;
  cleanup(): Promise<void>;
}

/** A fresh world in a temp directory (prefix kept short: export names derive from target paths). */
export async function createWorld(prefix = 'dv-'): Promise<World> {
  const root = await fs.realpath(await fs.mkdtemp(path.join(os.tmpdir(), prefix)));
  await fs.chmod(root, 0o755);
  liveWorlds.add(root);
  const nodes = new Map<string, string>();
  const configFile = path.join(root, 'host.yaml');
  const vmsDir = path.join(root, 'vms.d');
  const stateDir = path.join(root, 'state');
  const controlSocket = path.join(root, 'control.sock');
  const hostSocket = path.join(root, 'host.sock');
  const guestRoot = path.join(root, 'g');
  await fs.mkdir(vmsDir);
  await fs.mkdir(guestRoot);
  const external = new Set<string>();
  let hostStarts = 0;
  const daemons: Daemon[] = [];

  const world: World = {
    root,
    nodes,
    configFile,
    vmsDir,
    stateDir,
    controlSocket,
    hostUri: `unix://${hostSocket}`,
    guestRoot,
    guests: [],

    async addNode(name, sizeMiB) {
      const dir = path.join(root, 'nodes', name);
      await fs.mkdir(dir, { recursive: true });
      await shOk(`mount -t tmpfs -o size=${sizeMiB}m,mode=0755 tmpfs ${q(dir)}`);
      nodes.set(name, dir);
      return dir;
    },

    addExternalNode(name, mountPoint) {
      nodes.set(name, mountPoint);
      external.add(name);
    },

    async writeHostConfig(extra = {}) {
      const cfg = {
        listen: [world.hostUri],
        control_socket: controlSocket,
        state_dir: stateDir,
        vms_dir: vmsDir,
        storage: {
          placement: { reserve: '1MiB' },
          nodes: [...nodes].map(([name, p]) => ({ name, path: p })),
        },
        ...extra,
      };
      await fs.writeFile(configFile, YAML.stringify(cfg));
    },

    async writeVm(file, spec) {
      const p = path.join(vmsDir, file);
      await fs.writeFile(p, typeof spec === 'string' ? spec : YAML.stringify(spec));
      return p;
    },

    async removeVm(file) {
      await fs.unlink(path.join(vmsDir, file));
    },

    async startHost() {
      if (world.host?.running) throw new Error('the host agent is already running');
      const logFile = path.join(root, `host.${++hostStarts}.log`);
      const d = new Daemon(`host#${hostStarts}`, [HOST_BIN, 'run', '--config', configFile], logFile);
      daemons.push(d);
      world.host = d;
      await d.waitLog((l) => l.msg === 'host agent ready', 'host agent ready', 20_000);
      return d;
    },

    async startGuest(label, token, opts = {}) {
      const cfgFile = path.join(root, `guest-${label}.yaml`);
      await fs.writeFile(cfgFile, YAML.stringify({ host: world.hostUri, token, reconnect_window: 30, ...opts.extra }));
      const d = new Daemon(`guest ${label}`, [GUEST_BIN, 'run', '--config', cfgFile], path.join(root, `guest-${label}.log`));
      daemons.push(d);
      world.guests.push(d);
      if (opts.wait !== false) await d.waitLog((l) => l.msg === 'ready', 'guest agent ready', 20_000);
      return d;
    },

    ctl(...args) {
      return run([process.execPath, CTL_BIN, '--socket', controlSocket, ...args], { timeoutMs: 30_000 });
    },

    async ctlJson<T>(...args: string[]) {
      const r = await world.ctl(...args, '--json');
      if (r.code !== 0) throw new Error(`dirvisorctl ${args.join(' ')} --json failed (exit ${r.code}): ${r.stderr}${r.stdout}`);
      return JSON.parse(r.stdout) as T;
    },

    status: () => world.ctlJson<StatusReport>('status'),
    list: () => world.ctlJson<VmRow[]>('list'),

    target: (label) => path.join(guestRoot, label),

    async logs() {
      return (await Promise.all(daemons.map((d) => d.tail(60)))).join('\n');
    },

    async cleanup() {
      const problems: string[] = [];
      // Guests first (they unmount what they mounted), then the host.
      await Promise.all(world.guests.map((g) => g.stop()));
      await Promise.all(daemons.map((d) => d.stop()));
      for (const m of (await mountsUnder(guestRoot)).reverse()) {
        problems.push(`${m.target} was still mounted after the guest agents stopped`);
        await run(['fusermount3', '-uz', m.target], { timeoutMs: 15_000 }).catch(() => undefined);
      }
      for (const m of (await mountsUnder(root)).filter((x) => x.fstype.startsWith('fuse')).reverse()) {
        await run(['fusermount3', '-uz', m.target], { timeoutMs: 15_000 }).catch(() => undefined);
      }
      for (const [name, dir] of nodes) {
        if (external.has(name)) continue;
        const r = await run(['umount', dir], { timeoutMs: 15_000 });
        if (r.code !== 0) await run(['umount', '-l', dir], { timeoutMs: 15_000 });
      }
      const left = await mountsUnder(root);
      if (left.length === 0) {
        await run(['rm', '-rf', '--one-file-system', root], { timeoutMs: 60_000 });
        liveWorlds.delete(root);
      } else {
        problems.push(`still mounted: ${left.map((m) => m.target).join(', ')}`);
      }
      if (problems.length) throw new Error(`cleanup of ${root}: ${problems.join('; ')}`);
    },
  };
  return world;
}

/** A random token (VM identities on unix:// need at least 8 characters). */
export function token(label = 'tok'): string {
  return `${label}-${crypto.randomBytes(9).toString('hex')}`;
}

/**
 * A long-lived shell command (e.g. a process whose cwd is inside a mount), killed as a process
 * group by `stop()`.
 */
export function background(cmd: string, opts: { cwd?: string } = {}): { proc: ChildProcess; stop(): Promise<void>; output(): string } {
  const p = spawn('bash', ['-c', cmd], { cwd: opts.cwd ?? REPO, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  liveProcs.add(p);
  p.once('exit', () => liveProcs.delete(p));
  let out = '';
  p.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  p.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  p.stdin!.on('error', () => {});
  return {
    proc: p,
    output: () => out,
    async stop() {
      if (exited(p)) return;
      try {
        process.kill(-p.pid!, 'SIGKILL');
      } catch {
        p.kill('SIGKILL');
      }
      await waitExit(p, 5000);
    },
  };
}

/**
 * An application holding `file` open read-write on one descriptor (a child process, so the test
 * never calls into a FUSE mount itself). `write()` writes and fsyncs through that descriptor and
 * resolves to "ok" or the errno name it got ("EIO", "ESTALE"...).
 */
export async function holdOpen(file: string, opts: { teardown(fn: () => void): void }): Promise<{ write(): Promise<string> }> {
  const code = String.raw`
import errno, os, sys
try:
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
except OSError as e:
    print("cannot open:", errno.errorcode.get(e.errno, str(e.errno)), flush=True)
    sys.exit(1)
print("open", flush=True)
for line in sys.stdin:
    try:
        os.pwrite(fd, b"held\n", 0)
        os.fsync(fd)
        print("ok", flush=True)
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)), flush=True)
`;
  const p = spawn(PYTHON, ['-c', code, file], { stdio: ['pipe', 'pipe', 'pipe'] });
  liveProcs.add(p);
  p.once('exit', () => liveProcs.delete(p));
  p.stdin!.on('error', () => {});
  let out = '';
  p.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  p.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  opts.teardown(() => {
    if (!exited(p)) p.kill('SIGKILL');
  });
  const lines = () => out.split('\n').filter(Boolean);
  await waitFor(() => lines().length > 0 || exited(p), `an application to open ${file}`, { timeoutMs: 30_000 });
  if (lines()[0] !== 'open') throw new Error(`the application could not open ${file}: ${out}`);
  return {
    async write() {
      const n = lines().length;
      p.stdin!.write('write\n');
      await waitFor(() => lines().length > n || exited(p), 'the application to answer', { timeoutMs: 30_000, details: () => out });
      return lines()[n] ?? `exited: ${out}`;
    },
  };
}
