// End-to-end helpers: the real agents as child processes (`node bin/dirvisor-host.js serve ...`,
// `node bin/dirvisor-guest.js mount ... --foreground`), real unix sockets in a private temp dir,
// real FUSE mounts, and shell / python3 commands run as child processes (optionally as another uid).
//
// The test process never serves a mount itself, but it still prefers child processes for touching
// the mount, and it never uses synchronous fs calls there. Every process and mount started here is
// registered, so a crashed test cannot leave a mount behind: `stop()` / `unmount()` are meant for
// t.teardown / test.after.always, and an exit hook unmounts (fusermount3 -uz) and kills the rest.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import { existsSync, openSync, closeSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { exited, isMounted, mountsUnder, terminate, waitExit, waitFor } from './system.js';

/** The repository root (this file runs as dist/test/helpers/agents.js). */
export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const HOST_BIN = path.join(REPO, 'bin/dirvisor-host.js');
export const GUEST_BIN = path.join(REPO, 'bin/dirvisor-guest.js');
/** The system python3 (a pyenv shim under /root is not usable by other uids). */
export const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
/** An unprivileged user for permission and ownership tests. */
export const USER = { uid: 1000, gid: 1000 };

// ---- registry of what we started, for the last-resort cleanup ----------------------------------

const liveMounts = new Set<string>();
const liveProcs = new Set<ChildProcess>();
const agentProcs = new WeakSet<ChildProcess>();

process.once('exit', () => {
  // Commands first (they may keep a mount busy), then the mounts, then the agents.
  const alive = [...liveProcs].filter((p) => p.exitCode === null && p.signalCode === null);
  for (const p of alive) if (!agentProcs.has(p)) p.kill('SIGKILL');
  for (const mnt of liveMounts) spawnSync('fusermount3', ['-uz', mnt], { stdio: 'ignore', timeout: 5000 });
  for (const p of alive) if (agentProcs.has(p)) p.kill('SIGKILL');
});

// ---- small utilities ----------------------------------------------------------------------------

export { waitFor, mountTable, mountEntry, isMounted, mountsUnder, type MountEntry } from './system.js';

/** A fresh directory under the system temp dir, mode 0755 so other uids can reach into it. */
export async function tempDir(prefix = 'dirvisor-e2e-'): Promise<string> {
  const d = await fs.realpath(await fs.mkdtemp(path.join(os.tmpdir(), prefix)));
  await fs.chmod(d, 0o755);
  return d;
}

/**
 * rm -rf of a temp dir, unless something is still mounted in it (then it is left for inspection).
 * rm(1) rather than fs.rm: trees deeper than PATH_MAX are part of the tests.
 */
export async function removeTree(dir: string): Promise<void> {
  if ((await mountsUnder(dir)).length > 0) return;
  await run(['rm', '-rf', '--one-file-system', dir], { timeoutMs: 120_000 }).catch(() => undefined);
}

/** Whether something accepts connections on the unix socket `p` (the connection is closed at once). */
export function canConnect(p: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(p, () => {
      c.destroy();
      resolve(true);
    });
    c.on('error', () => resolve(false));
  });
}

async function readTail(file: string, maxBytes = 16_384): Promise<string> {
  try {
    const text = await fs.readFile(file, 'utf8');
    return text.length > maxBytes ? `...${text.slice(-maxBytes)}` : text;
  } catch (err) {
    return `(no log: ${(err as Error).message})`;
  }
}

/**
 * argv run so that it gets `signal` when this process dies, however it dies (a test runner that
 * kills a timed-out worker with SIGKILL runs no exit hook): the agents unmount and stop on SIGTERM.
 */
const HAVE_SETPRIV = existsSync('/usr/bin/setpriv') || existsSync('/bin/setpriv');
function withParentDeathSignal(argv: string[], signal: 'SIGTERM' | 'SIGKILL'): string[] {
  return HAVE_SETPRIV ? ['setpriv', `--pdeathsig=${signal}`, ...argv] : argv;
}

function spawnLogged(args: string[], logFile: string, env?: NodeJS.ProcessEnv): ChildProcess {
  const fd = openSync(logFile, 'a');
  try {
    const [cmd, ...rest] = withParentDeathSignal([process.execPath, ...args], 'SIGTERM');
    const p = spawn(cmd, rest, { cwd: REPO, stdio: ['ignore', fd, fd], env: { ...process.env, ...env } });
    liveProcs.add(p);
    agentProcs.add(p);
    p.once('exit', () => liveProcs.delete(p));
    return p;
  } finally {
    closeSync(fd);
  }
}

/**
 * Processes whose command line contains `needle` (pid and command line). Reads /proc through a
 * child shell with a timeout per process: a process stuck in a dead FUSE mount can make a read of
 * its cmdline block, and that must not block the test.
 */
export async function processesMatching(needle: string): Promise<Array<{ pid: number; cmdline: string }>> {
  const r = await run(['bash', '-c', 'for p in /proc/[0-9]*; do c=$(timeout 1 tr "\\0" " " < $p/cmdline 2>/dev/null) && printf "%s %s\\n" "${p#/proc/}" "$c"; done'], {
    timeoutMs: 60_000,
  });
  return r.stdout
    .split('\n')
    .map((l) => /^(\d+) (.*)$/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null && m[2].includes(needle) && Number(m[1]) !== process.pid)
    .map((m) => ({ pid: Number(m[1]), cmdline: m[2].trim() }));
}

// ---- shell and python ---------------------------------------------------------------------------

export interface RunOptions {
  /** Run as this uid (and `gid`, default the same number), with no supplementary groups unless `groups`. */
  uid?: number;
  gid?: number;
  groups?: number[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  input?: string | Buffer;
  timeoutMs?: number;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number | null;
  signal: NodeJS.Signals | null;
}

function asUser(argv: string[], opts: RunOptions): string[] {
  if (opts.uid === undefined) return withParentDeathSignal(argv, 'SIGKILL');
  const gid = opts.gid ?? opts.uid;
  const groups = opts.groups?.length ? [`--groups=${opts.groups.join(',')}`] : ['--clear-groups'];
  return ['setpriv', `--reuid=${opts.uid}`, `--regid=${gid}`, ...groups, ...argv];
}

/** Runs argv as a child process; never throws for a non-zero exit, throws on timeout. */
export function run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  const full = asUser(argv, opts);
  const timeoutMs = opts.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    const p = spawn(full[0], full.slice(1), {
      cwd: opts.cwd ?? REPO,
      env: { ...process.env, LC_ALL: 'C', ...opts.env }, // stable messages: "File exists", plain quotes
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true, // own process group: a timeout kills everything it started
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
      const r = { stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), code, signal };
      if (timedOut) reject(new Error(`command timed out after ${timeoutMs} ms: ${full.join(' ')}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`));
      else resolve(r);
    });
  });
}

/** `bash -c cmd` (with `set -o pipefail`). */
export function sh(cmd: string, opts: RunOptions = {}): Promise<RunResult> {
  return run(['bash', '-o', 'pipefail', '-c', cmd], opts);
}

/** `bash -c cmd` that must succeed; returns stdout. */
export async function shOk(cmd: string, opts: RunOptions = {}): Promise<string> {
  const r = await sh(cmd, opts);
  if (r.code !== 0) throw new Error(`command failed (exit ${r.code ?? r.signal}): ${cmd}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r.stdout;
}

/** `python3 -c code`. */
export function py(code: string, opts: RunOptions = {}): Promise<RunResult> {
  return run([PYTHON, '-c', code], opts);
}

/**
 * Helpers every pyJson snippet has:
 *   err(f)        -> f()'s value, or {"errno": "ENOENT", "strerror": ...} if it raised OSError
 *   renameat2(a, b, flags), fallocate(fd, mode, off, len)  (libc through ctypes, OSError on failure)
 *   st(path)      -> the interesting stat fields of os.stat, lst(path) the same for os.lstat
 *   out(value)    -> prints the JSON result (call it once, last)
 */
export const PY_PRELUDE = String.raw`
import os, sys, json, errno, stat, ctypes, hashlib, mmap, socket, time
_libc = ctypes.CDLL(None, use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
def _check(r):
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r
def renameat2(a, b, flags):
    return _check(_libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), flags))
def fallocate(fd, mode, off, length):
    return _check(_libc.fallocate(fd, mode, off, length))
def err(f):
    try:
        return f()
    except OSError as e:
        return {"errno": errno.errorcode.get(e.errno, str(e.errno)), "strerror": e.strerror}
def _st(s):
    return {"mode": s.st_mode, "ino": s.st_ino, "nlink": s.st_nlink, "uid": s.st_uid, "gid": s.st_gid,
            "size": s.st_size, "blocks": s.st_blocks, "atime_ns": s.st_atime_ns, "mtime_ns": s.st_mtime_ns,
            "ctime_ns": s.st_ctime_ns, "rdev": s.st_rdev,
            "type": ("dir" if stat.S_ISDIR(s.st_mode) else "file" if stat.S_ISREG(s.st_mode) else
                     "symlink" if stat.S_ISLNK(s.st_mode) else "fifo" if stat.S_ISFIFO(s.st_mode) else
                     "socket" if stat.S_ISSOCK(s.st_mode) else "chr" if stat.S_ISCHR(s.st_mode) else
                     "blk" if stat.S_ISBLK(s.st_mode) else "?"),
            "perm": stat.S_IMODE(s.st_mode)}
def st(p):
    return err(lambda: _st(os.stat(p)))
def lst(p):
    return err(lambda: _st(os.lstat(p)))
def read(p, mode="rb"):
    with open(p, mode) as f:
        return f.read()
def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
def out(v):
    sys.stdout.write("\n" + json.dumps(v) + "\n")
`;

/**
 * Runs a python3 snippet (with PY_PRELUDE) and returns the JSON value it printed last with out().
 * Arguments are in sys.argv[1:]. Throws with stdout/stderr if python fails.
 */
export async function pyJson<T = any>(code: string, args: string[] = [], opts: RunOptions = {}): Promise<T> {
  const script = `${PY_PRELUDE}\n${dedent(code)}\n`;
  const r = await run([PYTHON, '-c', script, ...args], opts);
  const lines = r.stdout.trimEnd().split('\n');
  if (r.code !== 0 || lines.length === 0) {
    throw new Error(`python3 failed (exit ${r.code ?? r.signal})${opts.uid !== undefined ? ` as uid ${opts.uid}` : ''}\n--- script ---\n${dedent(code)}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`);
  }
  try {
    return JSON.parse(lines[lines.length - 1]) as T;
  } catch {
    throw new Error(`python3 printed no JSON result\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`);
  }
}

/** Removes the common leading indentation, so snippets can be indented in template literals. */
export function dedent(code: string): string {
  const lines = code.replace(/^\n/, '').split('\n');
  const indents = lines.filter((l) => l.trim()).map((l) => /^ */.exec(l)![0].length);
  const cut = indents.length ? Math.min(...indents) : 0;
  return lines.map((l) => l.slice(cut)).join('\n');
}

/**
 * Traces some syscalls of a running process (and its threads) with strace, to check what an agent
 * really asked the kernel for. `null` when strace is not installed.
 */
export async function traceSyscalls(pid: number, syscalls: string[]): Promise<{ stop(): Promise<string> } | null> {
  if (!['/usr/bin/strace', '/bin/strace', '/usr/local/bin/strace'].some((p) => existsSync(p))) return null;
  const out = path.join(await tempDir('dirvisor-e2e-strace-'), 'trace');
  const p = spawn('strace', ['-f', '-e', `trace=${syscalls.join(',')}`, '-o', out, '-p', String(pid)], { stdio: ['ignore', 'ignore', 'pipe'] });
  liveProcs.add(p);
  let stderr = '';
  p.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  await waitFor(() => {
    if (exited(p)) throw new Error(`strace exited: ${stderr}`);
    return /attached/.test(stderr);
  }, `strace to attach to ${pid}`);
  return {
    async stop() {
      p.kill('SIGINT');
      await waitExit(p, 10_000);
      liveProcs.delete(p);
      const text = await fs.readFile(out, 'utf8').catch(() => '');
      await fs.rm(path.dirname(out), { recursive: true, force: true });
      return text;
    },
  };
}

// ---- the host agent -----------------------------------------------------------------------------

export interface HostAgent {
  uri: string;
  token: string;
  socketPath: string;
  dir: string;
  proc: ChildProcess;
  logFile: string;
  log(): Promise<string>;
  /** SIGTERM (then SIGKILL); resolves once the process is gone. Safe to call twice. */
  stop(): Promise<void>;
}

export interface StartHostOptions {
  /** The directory to serve. */
  dir: string;
  readOnly?: boolean;
  token?: string;
  /** Where the socket and log go (default: a new temp dir). */
  workDir?: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  /** Listen on this socket (default: a new one in workDir); a restarted host reuses its URI so. */
  socketPath?: string;
  /** More `serve` arguments (limits, timeouts). */
  args?: string[];
}

export async function startHost(opts: StartHostOptions): Promise<HostAgent> {
  const ownWork = opts.workDir === undefined;
  const work = opts.workDir ?? (await tempDir('dirvisor-e2e-host-'));
  const token = opts.token ?? crypto.randomBytes(12).toString('hex');
  const socketPath = opts.socketPath ?? path.join(work, `host-${crypto.randomBytes(3).toString('hex')}.sock`);
  const uri = `unix://${socketPath}`;
  const logFile = path.join(work, `${path.basename(socketPath, '.sock')}.log`);
  const args = [HOST_BIN, 'serve', opts.dir, '--listen', uri, '--token', token];
  if (opts.readOnly) args.push('--read-only');
  args.push(...(opts.args ?? []));
  const proc = spawnLogged(args, logFile, opts.env);
  const log = () => readTail(logFile);
  try {
    await waitFor(
      async () => {
        if (exited(proc)) throw new Error(`dirvisor-host exited (${proc.exitCode ?? proc.signalCode}) before serving:\n${await log()}`);
        return canConnect(socketPath);
      },
      `dirvisor-host to serve ${opts.dir} on ${uri}`,
      { timeoutMs: opts.timeoutMs ?? 20_000, details: async () => `host log:\n${await log()}` },
    );
  } catch (err) {
    await terminate(proc, 5000);
    throw err;
  }
  let stopping: Promise<void> | undefined;
  return {
    uri, token, socketPath, dir: opts.dir, proc, logFile, log,
    stop: () =>
      (stopping ??= (async () => {
        await terminate(proc, 5000);
        if (ownWork) await removeTree(work);
      })()),
  };
}

// ---- the guest agent ----------------------------------------------------------------------------

export interface GuestMount {
  mnt: string;
  proc: ChildProcess;
  logFile: string;
  log(): Promise<string>;
  /**
   * Unmounts (fusermount3 -u, retried while busy, -uz as a last resort), waits for the agent to
   * exit, and makes sure the mount is gone. Returns how the agent exited. Safe to call twice.
   */
  unmount(): Promise<{ code: number | null; signal: NodeJS.Signals | null; lazy: boolean }>;
}

export interface MountGuestOptions {
  token: string;
  /** -o words, e.g. 'allow_other,default_permissions' or ['cache=none']. */
  options?: string | string[];
  /** The mount point (created if missing); default: a new temp dir's `mnt`. */
  mnt?: string;
  /** Where the agent's output goes (default: beside the mount point, MNT.guest.log). */
  logFile?: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

export async function mountGuest(uri: string, opts: MountGuestOptions): Promise<GuestMount> {
  const mnt = path.resolve(opts.mnt ?? path.join(await tempDir('dirvisor-e2e-guest-'), 'mnt'));
  await fs.mkdir(mnt, { recursive: true });
  const logFile = opts.logFile ?? `${mnt}.guest.log`;
  const args = [GUEST_BIN, 'mount', uri, mnt, '--token', opts.token, '--foreground'];
  const words = typeof opts.options === 'string' ? [opts.options] : (opts.options ?? []);
  for (const w of words) if (w) args.push('-o', w);
  const proc = spawnLogged(args, logFile, opts.env);
  liveMounts.add(mnt);
  const log = () => readTail(logFile);
  const unmount = makeUnmount(mnt, proc);
  try {
    await waitFor(
      async () => {
        if (exited(proc)) throw new Error(`dirvisor-guest exited (${proc.exitCode ?? proc.signalCode}) before mounting ${mnt}:\n${await log()}`);
        return isMounted(mnt);
      },
      `${mnt} to appear in /proc/mounts`,
      { timeoutMs: opts.timeoutMs ?? 20_000, details: async () => `guest log:\n${await log()}` },
    );
  } catch (err) {
    await unmount();
    throw err;
  }
  return { mnt, proc, logFile, log, unmount };
}

function makeUnmount(mnt: string, proc: ChildProcess): GuestMount['unmount'] {
  let result: ReturnType<GuestMount['unmount']> | undefined;
  return () =>
    (result ??= (async () => {
      let lazy = false;
      // Something in the mount (a leftover child's cwd, an open file) makes -u fail with EBUSY for a
      // moment; give it a few tries before detaching lazily.
      for (let i = 0; i < 20 && (await isMounted(mnt)); i++) {
        if (exited(proc)) break;
        const r = await run(['fusermount3', '-u', mnt], { timeoutMs: 15_000 }).catch((e: Error) => ({ code: -1, stderr: e.message }));
        if (r.code === 0) break;
        await sleep(100);
      }
      if (!(await waitExit(proc, 10_000))) {
        await terminate(proc, 5000);
      }
      if (await isMounted(mnt)) {
        lazy = true;
        await run(['fusermount3', '-uz', mnt], { timeoutMs: 15_000 }).catch(() => undefined);
      }
      liveMounts.delete(mnt);
      return { code: proc.exitCode, signal: proc.signalCode, lazy };
    })());
}

// ---- one served directory and its mount, for a test file -----------------------------------------

export interface Export {
  /** The temp dir holding everything: storage/, guest/mnt, the socket and the logs. */
  work: string;
  storage: string;
  mnt: string;
  host: HostAgent;
  guest: GuestMount;
  /** A fresh subdirectory for one test: its path in the mount and in the storage. */
  subdir(label?: string): Promise<{ m: string; s: string; name: string }>;
  /** The last lines of both agents' logs, for a failing test. */
  logs(): Promise<string>;
  /** Unmounts, stops the host and removes the temp dir (unless something is still mounted there). */
  cleanup(): Promise<void>;
}

export interface ExportOptions {
  readOnly?: boolean;
  /** -o words for the guest. */
  options?: string | string[];
  /** Runs on the storage dir before the host starts. */
  populate?: (storage: string) => Promise<void>;
}

let subdirCounter = 0;

export async function startExport(opts: ExportOptions = {}): Promise<Export> {
  const work = await tempDir('dirvisor-e2e-');
  const storage = path.join(work, 'storage');
  await fs.mkdir(storage);
  await fs.chmod(storage, 0o755);
  await opts.populate?.(storage);
  await fs.mkdir(path.join(work, 'guest'), { mode: 0o755 });
  let host: HostAgent | undefined;
  let guest: GuestMount | undefined;
  const cleanup = async () => {
    await guest?.unmount();
    await host?.stop();
    await removeTree(work);
  };
  try {
    host = await startHost({ dir: storage, readOnly: opts.readOnly, workDir: work });
    guest = await mountGuest(host.uri, { token: host.token, options: opts.options, mnt: path.join(work, 'guest', 'mnt') });
  } catch (err) {
    await cleanup();
    throw err;
  }
  const h = host;
  const g = guest;
  return {
    work, storage, mnt: g.mnt, host: h, guest: g,
    async subdir(label = 'd') {
      const name = `${label.replace(/[^A-Za-z0-9_-]+/g, '_').slice(0, 40)}-${++subdirCounter}`;
      await fs.mkdir(path.join(storage, name));
      await fs.chmod(path.join(storage, name), 0o777);
      // Made on the storage side: the guest learns of it (and of its mode) by a push, a moment
      // later. Tests start once the mount agrees, so they test what they mean to.
      const m = path.join(g.mnt, name);
      await waitFor(async () => ((await fs.stat(m).catch(() => null))?.mode ?? 0) % 0o1000 === 0o777, `${m} to show mode 0777 through the mount`, { timeoutMs: 5000, intervalMs: 5 });
      return { m, s: path.join(storage, name), name };
    },
    async logs() {
      return `--- host log (${h.logFile}) ---\n${await h.log()}\n--- guest log (${g.logFile}) ---\n${await g.log()}`;
    },
    cleanup,
  };
}
