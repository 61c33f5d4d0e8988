// Processes for the data-path bench: children we start (and only those, by PID), commands with a
// deadline, CPU time from /proc, and a cleanup stack that runs even when the bench fails.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import fs from 'node:fs';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Progress on stderr, so stdout holds only the tables. */
export function progress(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  seconds: number;
  timedOut: boolean;
}

/**
 * Runs a command to completion (or kills it by PID after timeoutMs). Times it from spawn to exit.
 * stdout is collected unless `discardStdout` (for find/du over thousands of names it is cheap
 * enough to collect anyway, and lets us count).
 */
export function run(cmd: string, args: string[], opts: { timeoutMs?: number; cwd?: string; env?: NodeJS.ProcessEnv; discardStdout?: boolean } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['ignore', opts.discardStdout ? 'ignore' : 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => err.push(d));
    let timedOut = false;
    const timer = opts.timeoutMs
      ? setTimeout(() => {
          timedOut = true;
          if (child.pid) killPid(child.pid, 'SIGKILL');
        }, opts.timeoutMs)
      : null;
    child.once('error', (e) => {
      if (timer) clearTimeout(timer);
      reject(new Error(`cannot run ${cmd}: ${e.message}`));
    });
    child.once('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
        seconds: Number(process.hrtime.bigint() - start) / 1e9,
        timedOut,
      });
    });
  });
}

/** run() that throws with the command's stderr unless it exited 0. */
export async function runOk(cmd: string, args: string[], opts: Parameters<typeof run>[2] = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    const why = r.timedOut ? `timed out after ${opts.timeoutMs} ms` : `exited ${r.code ?? r.signal}`;
    throw new Error(`${cmd} ${args.join(' ')}: ${why}: ${(r.stderr || r.stdout).trim().slice(-800)}`);
  }
  return r;
}

export function killPid(pid: number, signal: NodeJS.Signals = 'SIGTERM'): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** A long-running child (an agent, a FUSE server, sshd) with its output in a log file. */
export class Daemon {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;

  constructor(readonly name: string, cmd: string, args: string[], readonly logFile: string, opts: SpawnOptions = {}) {
    const fd = fs.openSync(logFile, 'a');
    this.child = spawn(cmd, args, { stdio: ['ignore', fd, fd], ...opts });
    fs.closeSync(fd);
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      });
      this.child.once('error', (e) => {
        fs.appendFileSync(logFile, `spawn error: ${e.message}\n`);
        this.exitInfo = { code: -1, signal: null };
        resolve(this.exitInfo);
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return this.exitInfo === null && this.child.pid !== undefined;
  }

  logTail(chars = 1500): string {
    try {
      return fs.readFileSync(this.logFile, 'utf8').slice(-chars).trim();
    } catch {
      return '';
    }
  }

  /** SIGTERM, then SIGKILL if it has not exited after graceMs. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.running) return;
    killPid(this.pid, 'SIGTERM');
    if (await Promise.race([this.exited.then(() => true), sleep(graceMs).then(() => false)])) return;
    killPid(this.pid, 'SIGKILL');
    await Promise.race([this.exited, sleep(graceMs)]);
  }
}

/** Polls cond() every intervalMs until it is true; throws `what` after timeoutMs. */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs: number, intervalMs = 50): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

const CLK_TCK = 100; // Linux's USER_HZ for /proc/PID/stat on every architecture we run on

/** User+system CPU seconds of a process (all its threads, live and exited), or NaN if it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may hold spaces and parentheses: fields after the last ')' are fixed.
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of the whole line, so 11 and 12 after comm and state.
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** Set on SIGINT/SIGTERM: the bench starts nothing new and unwinds. */
export const interrupted = { value: false };

interface CleanupAction {
  name: string;
  fn: () => Promise<void> | void;
  /** Set once the action has started; every later caller waits for the same run. */
  done?: Promise<void>;
}

/**
 * Cleanup actions run in reverse order of registration, each exactly once (a second caller waits
 * for the first run), errors logged. runAll() may be called concurrently (signal handler and the
 * main flow's finally): both wait for the same unwinding.
 */
export class Cleanup {
  private actions: CleanupAction[] = [];
  private running: Promise<void> | null = null;

  add(name: string, fn: () => Promise<void> | void): () => Promise<void> {
    const entry: CleanupAction = { name, fn };
    this.actions.push(entry);
    // The returned function runs this one action now (or waits for it if it is already running).
    return async () => {
      const i = this.actions.indexOf(entry);
      if (i >= 0) this.actions.splice(i, 1);
      await runAction(entry);
    };
  }

  runAll(): Promise<void> {
    this.running ??= (async () => {
      while (this.actions.length) await runAction(this.actions.pop()!);
      this.running = null;
    })();
    return this.running;
  }
}

function runAction(a: CleanupAction): Promise<void> {
  a.done ??= (async () => {
    try {
      await a.fn();
    } catch (err) {
      progress(`cleanup: ${a.name} failed: ${(err as Error).message}`);
    }
  })();
  return a.done;
}

/** Whether a command is on PATH (without running it). */
export function which(cmd: string): string | null {
  if (cmd.includes('/')) return fs.existsSync(cmd) ? cmd : null;
  for (const dir of (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':').concat(['/usr/sbin', '/sbin'])) {
    const p = `${dir}/${cmd}`;
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return null;
}
