// Where replays run: a small helper process, one per agent, that makes each replay's syscall on a
// mount (native replaySync) and reports its errno. Never the agent itself: a thread of the process
// that serves a FUSE mount, waiting in the kernel for an answer to its own request, cannot be
// killed, so a SIGKILLed agent would stay a zombie and its mount would hang everyone who touches
// it. A helper's request instead fails (ENOTCONN) when the agent dies and its mount is aborted.
//
// The agent answers the helper's FUSE requests itself: they carry the helper's pid (its replays run
// on its main thread), see Replayer.intercept. Lines of JSON go both ways over the helper's stdin
// and stdout; it exits when its stdin closes (the agent exited or closed it).
import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { nativePath } from '../../native/index.js';
import type { ReplayOp } from '../../native/fuse.js';
import { E } from '../../shared/fs/errors.js';

// CommonJS, run with `node -e`: nothing to resolve, so it works the same from dist/ and from the
// packages' single-file bundles. argv[1] is the addon to load.
const HELPER = String.raw`
const addon = { exports: {} };
process.dlopen(addon, process.argv[1]);
process.on('SIGINT', () => {}); // a terminal's Ctrl-C is for the agent, which ends us by closing stdin
const decode = (v) => (v && typeof v === 'object' && typeof v.b64 === 'string' ? Buffer.from(v.b64, 'base64') : v);
require('readline').createInterface({ input: process.stdin })
  .on('line', (line) => {
    const { id, mountpoint, op } = JSON.parse(line);
    for (const k of Object.keys(op)) op[k] = decode(op[k]);
    let errno;
    try {
      errno = addon.exports.replaySync(mountpoint, op);
    } catch {
      errno = ${E.EINVAL};
    }
    process.stdout.write(JSON.stringify({ id, errno }) + '\n');
  })
  .on('close', () => process.exit(0));
`;

export class ReplayProcess {
  private child?: ChildProcess;
  private readonly pending = new Map<number, (errno: number) => void>();
  private nextId = 1;
  private partial = '';

  /** The helper's pid: the pid the kernel reports for its FUSE requests (0 before the first replay). */
  get pid(): number {
    return this.child?.pid ?? 0;
  }

  /** Runs one replay on the mount at `mountpoint`; resolves 0 or a positive errno. */
  run(mountpoint: string, op: ReplayOp): Promise<number> {
    const child = this.start();
    const id = this.nextId++;
    const wire = Object.fromEntries(Object.entries(op).map(([k, v]) => [k, Buffer.isBuffer(v) ? { b64: v.toString('base64') } : v]));
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.hold(true);
      child.stdin!.write(`${JSON.stringify({ id, mountpoint, op: wire })}\n`);
    });
  }

  /** Ends the helper (it is started again by the next replay). */
  close(): void {
    this.child?.stdin?.end();
  }

  private start(): ChildProcess {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) return this.child;
    const child = spawn(process.execPath, ['-e', HELPER, nativePath], { cwd: '/', stdio: ['pipe', 'pipe', 'inherit'] });
    this.child = child;
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => this.received(chunk));
    child.stdin!.on('error', () => undefined); // it died: 'exit' below fails what was pending
    child.on('exit', () => {
      if (this.child === child) this.child = undefined;
      this.partial = '';
      for (const resolve of this.pending.values()) resolve(E.ENOTCONN);
      this.pending.clear();
    });
    this.hold(false);
    return child;
  }

  private received(chunk: string): void {
    const lines = (this.partial + chunk).split('\n');
    this.partial = lines.pop()!;
    for (const line of lines) {
      const { id, errno } = JSON.parse(line) as { id: number; errno: number };
      this.pending.get(id)?.(errno);
      this.pending.delete(id);
    }
    if (this.pending.size === 0) this.hold(false);
  }

  /** The helper keeps the agent's event loop alive only while a replay is running. */
  private hold(busy: boolean): void {
    const c = this.child;
    if (!c) return;
    for (const s of [c.stdin, c.stdout] as unknown as Socket[]) {
      if (busy) s?.ref?.();
      else s?.unref?.();
    }
    if (busy) c.ref();
    else c.unref();
  }
}

let shared: ReplayProcess | undefined;

/** The agent's replay helper (one for all its mounts). */
export function replayProcess(): ReplayProcess {
  return (shared ??= new ReplayProcess());
}
