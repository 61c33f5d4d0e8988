// The host agent under test, as the product runs it: `node bin/dirvisor-host.js serve DIR --listen
// unix://... --token T` (serveDirectory) in a child process, so that a crash is an exit we see,
// and its memory is its own (VmRSS from /proc). Its log is read at "info": every session it
// closes for a protocol violation says so, it says why it closed each connection (matched to our
// sessions by the agent name in their Hello), and anything at "error" is worth a look.
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { REPO } from './schema.js';

export interface HostProcess {
  proc: ChildProcess;
  pid: number;
  uri: string;
  socketPath: string;
  token: string;
  /** Sessions the host closed for a protocol violation (from its log), by reason. */
  violations: Map<string, number>;
  violationCount: number;
  /** Other log lines at level warn, by message and reason. */
  warnings: Map<string, number>;
  /** Why the host says it closed the connection whose Hello gave this agent name (log level info). */
  closeReasonOf(agent: string): string | undefined;
  /** Log lines at level error or above (first 50), how many there were, and by message. */
  errorLines: string[];
  errorCount: number;
  errorKinds: Map<string, { count: number; sample: string }>;
  stderr: string;
  exit: { code: number | null; signal: NodeJS.Signals | null } | null;
  alive(): boolean;
  /** Resident memory in KiB (VmRSS), 0 once gone. */
  rssKb(): number;
  /** Open file descriptors (entries of /proc/PID/fd), -1 once gone. */
  fds(): number;
  stop(): Promise<void>;
}

export function rssKbOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Protocol-violation reasons without their numbers, so they group. */
function reasonKey(reason: string): string {
  return reason.replace(/\d+/g, 'N').slice(0, 80);
}

export async function startHostProcess(dir: string, workDir: string, opts: { logLevel?: string; args?: string[] } = {}): Promise<HostProcess> {
  const token = crypto.randomBytes(8).toString('hex');
  const socketPath = path.join(workDir, `host-${crypto.randomBytes(3).toString('hex')}.sock`);
  const uri = `unix://${socketPath}`;
  // FUZZ_HOST_NODE_ARGS, e.g. "--cpu-prof", to look inside the host during a run.
  const nodeArgs = (process.env.FUZZ_HOST_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const proc = spawn(process.execPath, [...nodeArgs, path.join(REPO, 'bin/dirvisor-host.js'), 'serve', dir, '--listen', uri, '--token', token, ...(opts.args ?? [])], {
    cwd: REPO,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, DIRVISOR_LOG_LEVEL: opts.logLevel ?? process.env.FUZZ_HOST_LOG_LEVEL ?? 'info' },
  });
  // FUZZ_HOST_LOG=FILE keeps the host's whole log (with FUZZ_HOST_LOG_LEVEL=debug, say).
  if (process.env.FUZZ_HOST_LOG) proc.stdout!.pipe(fs.createWriteStream(process.env.FUZZ_HOST_LOG));
  const connOfAgent = new Map<string, number>();
  const closeReasons = new Map<number, string>();
  const h: HostProcess = {
    proc,
    pid: proc.pid!,
    uri,
    socketPath,
    token,
    violations: new Map(),
    violationCount: 0,
    warnings: new Map(),
    closeReasonOf: (agent) => {
      const conn = connOfAgent.get(agent);
      return conn === undefined ? undefined : closeReasons.get(conn);
    },
    errorLines: [],
    errorCount: 0,
    errorKinds: new Map(),
    stderr: '',
    exit: null,
    alive: () => h.exit === null,
    rssKb: () => (h.exit === null ? rssKbOf(h.pid) : 0),
    fds: () => {
      try {
        return fs.readdirSync(`/proc/${h.pid}/fd`).length;
      } catch {
        return -1;
      }
    },
    async stop() {
      if (h.exit) return;
      proc.kill('SIGTERM');
      const gone = await Promise.race([new Promise((r) => proc.once('exit', r)), sleep(5000).then(() => null)]);
      if (!gone && !h.exit) proc.kill('SIGKILL');
    },
  };
  proc.once('exit', (code, signal) => (h.exit = { code, signal }));
  // If this process ends first (Ctrl-C, a crash), the host agent goes with it.
  const killOnExit = () => proc.kill('SIGKILL');
  process.once('exit', killOnExit);
  proc.once('exit', () => process.off('exit', killOnExit));
  proc.stderr!.on('data', (c: Buffer) => {
    h.stderr = (h.stderr + c.toString()).slice(-20_000);
  });
  readline.createInterface({ input: proc.stdout! }).on('line', (line) => {
    let rec: { level?: number; msg?: string; reason?: string; conn?: number; agent?: string; err?: { type?: string; message?: string; stack?: string } };
    try {
      rec = JSON.parse(line);
    } catch {
      h.errorCount++;
      if (h.errorLines.length < 50) h.errorLines.push(`(not JSON) ${line.slice(0, 500)}`);
      return;
    }
    if (rec.msg === 'peer identified' && rec.agent?.startsWith('fuzz-session-') && rec.conn !== undefined) {
      connOfAgent.set(rec.agent, rec.conn);
    } else if (rec.msg === 'connection closed' && rec.conn !== undefined && connOfAgent.size > 0) {
      closeReasons.set(rec.conn, String(rec.reason));
    }
    if (rec.msg === 'protocol violation; closing session') {
      h.violationCount++;
      const k = reasonKey(String(rec.reason ?? ''));
      h.violations.set(k, (h.violations.get(k) ?? 0) + 1);
    } else if ((rec.level ?? 0) === 40) {
      const k = `${rec.msg}${rec.reason ? `: ${reasonKey(String(rec.reason))}` : ''}`;
      h.warnings.set(k, (h.warnings.get(k) ?? 0) + 1);
    } else if ((rec.level ?? 0) >= 50) {
      h.errorCount++;
      if (h.errorLines.length < 50) h.errorLines.push(line.slice(0, 2000));
      // Group by message and error (the stack of the first one tells where).
      const k = `${rec.msg}: ${rec.err?.type ?? ''} ${String(rec.err?.message ?? '').replace(/-?\d+/g, 'N')}`.slice(0, 300);
      const known = h.errorKinds.get(k);
      if (known) known.count++;
      else h.errorKinds.set(k, { count: 1, sample: line.slice(0, 1500) });
    }
  });
  // Ready once the socket accepts a connection.
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (h.exit) throw new Error(`dirvisor-host exited (${h.exit.code ?? h.exit.signal}) before serving: ${h.stderr}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(socketPath);
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (ok) return h;
    if (Date.now() > deadline) {
      await h.stop();
      throw new Error(`dirvisor-host did not listen on ${uri} within 20 s: ${h.stderr}`);
    }
    await sleep(50);
  }
}
