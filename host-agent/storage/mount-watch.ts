// Notices when a storage node's filesystem is no longer the one its exports were opened on, and
// brings the exports back by themselves once a filesystem is mounted there again.
//
// Why. An export is served through fds opened on the node's filesystem. After `umount -l` of that
// mount, or when an NFS/CephFS mount is replaced by a new one, those fds still reach the old,
// detached filesystem: writes succeed where nobody else will ever see them, and an export opened
// afterwards lands on whatever lies below the mount point (the host's own disk). A CephFS client
// that was evicted answers ESHUTDOWN to some calls and ENOENT to others (even for its root) and
// never recovers until it is remounted.
//
// How. While the node serves, the watch holds an O_PATH fd of the node's path, so the device
// number it compares with cannot be given to another mount meanwhile. Every `intervalMs`, and at
// once when a storage call fails in a way that can mean the mount is gone (guard.ts), it stats the
// path again:
//   - the same device and inode: nothing to do;
//   - another one (unmounted or replaced), the path missing, or an answer only a dead client gives
//     (ESHUTDOWN, ESTALE, ENODEV, ENOENT for the root itself): the node is lost. Every export view
//     on it drops its fds (so the old filesystem can go, and a plain umount of a dead mount is not
//     refused as busy) and answers EIO; new export views on it are refused with EIO;
//   - no answer in time (a frozen mount): no verdict; the guard's deadlines deal with that.
// A lost node serves again once the place it was mounted at holds a mount again (per
// /proc/self/mountinfo, so the directory left below an unmounted mount point never counts), its
// path is not on the host's root filesystem (require_mount), and a fresh open and read of it
// works. Each view then opens its root again on the new filesystem: node ids and handles given out
// before answer ESTALE, and the coherence hub tells the guests that anything may have changed.
import fs from 'node:fs/promises';
import type { Logger } from '../../shared/log.js';
import { E, FsError } from '../../shared/fs/errors.js';
import * as sys from '../../native/sys.js';
import { C } from '../../native/sys.js';
import type { StorageNodeConfig } from '../config.js';
import { NodeIo } from './node-io.js';
import { mountOf, readMountTable } from './mount-table.js';

/** An export view on the node (backend/posix.ts). */
export interface MountedView {
  readonly closed: boolean;
  /** Drop every fd into the storage and answer EIO with `reason` until storageBack(). */
  storageGone(reason: string): void;
  /** Open the root again on the filesystem now mounted; throws when it cannot. */
  storageBack(): Promise<void>;
}

export interface MountWatchOptions {
  /** Time between two checks. */
  intervalMs: number;
  /** Deadline of one call a check makes on the node (stat, open, read). */
  timeoutMs: number;
}

export interface MountStatus {
  state: 'serving' | 'lost';
  /** ISO time of the last change. */
  since: string;
  /** Why it is lost. */
  reason?: string;
  /** Where its filesystem is mounted (as last seen serving). */
  mountPoint?: string;
}

type State =
  | { kind: 'serving'; fd: number; key: string; generation: number; since: number }
  | { kind: 'lost'; reason: string; since: number };

/** Answers to a stat of the node's own path that mean its filesystem is not there any more. */
const GONE = new Set(['ENOENT', 'ENOTDIR', 'ESHUTDOWN', 'ESTALE', 'ENODEV']);
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;

export class MountWatch {
  private state: State = { kind: 'lost', reason: 'not checked yet', since: Date.now() };
  /** The path with symlinks resolved, and the mount point it was on, as last seen serving. */
  private realPath?: string;
  private mountPoint?: string;
  private rootDev?: bigint;
  private generation = 0;
  private everServed = false;
  private readonly views = new Set<MountedView>();
  /** Views whose root has not been opened again on the current filesystem yet. */
  private readonly reopening = new Set<MountedView>();
  private readonly warnedReopen = new WeakSet<MountedView>();
  private readonly io: NodeIo;
  private running: Promise<void> | null = null;
  private again: Promise<void> | null = null;
  private timer?: NodeJS.Timeout;
  private stopped = false;

  constructor(readonly node: StorageNodeConfig, private readonly log: Logger, private readonly opts: MountWatchOptions) {
    this.io = new NodeIo(node.name, opts.timeoutMs);
  }

  /** Checks once, then every intervalMs. */
  async start(): Promise<void> {
    await this.check();
    if (this.stopped) return;
    this.timer = setInterval(() => void this.check(), this.opts.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    if (this.state.kind === 'serving') closeQuietly(this.state.fd);
    this.state = { kind: 'lost', reason: 'the host agent is stopping', since: Date.now() };
  }

  /** The error operations on the node get while it is lost (EIO); undefined while it serves. */
  get problem(): FsError | undefined {
    return this.state.kind === 'lost' ? new FsError(E.EIO, this.explain(this.state.reason)) : undefined;
  }

  status(): MountStatus {
    const s = this.state;
    return { state: s.kind, since: new Date(s.since).toISOString(), reason: s.kind === 'lost' ? s.reason : undefined, mountPoint: this.mountPoint };
  }

  /** Before opening a new view on the node: the generation to give track(). Throws EIO while lost. */
  openable(): number {
    const problem = this.problem;
    if (problem) throw problem;
    return this.generation;
  }

  /** Keeps `view`, opened while `generation` served, in step with the node's filesystem. */
  track(view: MountedView, generation: number): void {
    this.views.add(view);
    // It may have been opened on a filesystem that went away while it was being opened.
    if (this.state.kind === 'serving' && this.state.generation === generation) return;
    view.storageGone(this.explain(this.state.kind === 'lost' ? this.state.reason : 'its filesystem was replaced while the export was being opened'));
    if (this.state.kind === 'serving') {
      this.reopening.add(view);
      void this.check();
    }
  }

  /**
   * Checks now. A check already running may have looked before whatever made the caller ask, so
   * one more runs after it (one, however many callers ask meanwhile).
   */
  check(): Promise<void> {
    if (!this.running) {
      this.running = this.checkOnce()
        .catch((err: unknown) => this.log.error({ node: this.node.name, err }, 'storage mount check failed'))
        .finally(() => (this.running = null));
      return this.running;
    }
    this.again ??= this.running.then(() => {
      this.again = null;
      return this.check();
    });
    return this.again;
  }

  // ---- one check ---------------------------------------------------------------------------------

  private async checkOnce(): Promise<void> {
    if (this.stopped) return;
    for (const v of this.views) {
      if (v.closed) {
        this.views.delete(v);
        this.reopening.delete(v);
      }
    }
    const s = this.state;
    if (s.kind === 'serving') {
      const lostBecause = await this.verify(s);
      if (lostBecause === undefined) return this.reopenViews();
      this.lose(lostBecause);
      // Replaced in one go (a new mount already there): serve it now. Otherwise the loss was logged.
      return this.recover(false);
    }
    await this.recover(true);
  }

  /** Why the serving filesystem is gone, or undefined when it is still there (or cannot be told). */
  private async verify(s: Extract<State, { kind: 'serving' }>): Promise<string | undefined> {
    const p = this.node.path;
    let st: sys.Stat;
    try {
      st = await this.io.run(`stat ${p}`, () => sys.fstatat(C.AT_FDCWD, p, 0));
    } catch (err) {
      const code = codeOf(err);
      return GONE.has(code) ? `stat of ${p} fails with ${code} (${words(err)}): its filesystem is gone or its client was cut off from the storage` : undefined;
    }
    if (keyOf(st) === s.key) return undefined;
    const now = this.realPath ? mountOf(this.realPath, await readMountTable()) : undefined;
    return now && now.mountPoint === this.mountPoint
      ? `another filesystem (${now.fstype} ${now.source}) was mounted at ${this.mountPoint} in place of the one its exports were opened on`
      : `the filesystem its exports were opened on was unmounted from ${this.mountPoint ?? p}`;
  }

  private lose(reason: string): void {
    const s = this.state;
    if (s.kind !== 'serving') return;
    closeQuietly(s.fd);
    this.state = { kind: 'lost', reason, since: Date.now() };
    this.reopening.clear();
    const message = this.explain(reason);
    this.log.error({ node: this.node.name, path: this.node.path, mountPoint: this.mountPoint, reason, exportViews: this.views.size },
      `storage node ${this.node.name} is unavailable: ${reason}; its exports answer EIO until a filesystem is mounted at ${this.mountPoint ?? this.node.path} again (remount it there; service then resumes by itself)`);
    for (const v of this.views) v.storageGone(message);
  }

  /** A lost node: serves again when its filesystem is back (see the top of this file). */
  private async recover(logChange: boolean): Promise<void> {
    const p = this.node.path;
    const notYet = await this.whyNotMounted();
    if (notYet) return this.stillLost(notYet, logChange);
    let fd: number;
    let st: sys.Stat;
    try {
      fd = await this.io.run(`open ${p}`, () => sys.openat(C.AT_FDCWD, p, C.O_PATH | C.O_DIRECTORY), closeQuietly);
    } catch (err) {
      return this.stillLost(`cannot open ${p}: ${words(err)}`, logChange);
    }
    try {
      st = await this.io.run(`stat ${p}`, () => sys.fstatat(fd));
      // Where it is mounted, from the fd (a /proc magic link: no call on the storage).
      this.realPath = await fs.readlink(`/proc/self/fd/${fd}`);
      this.mountPoint = mountOf(this.realPath, await readMountTable())?.mountPoint ?? this.mountPoint;
    } catch (err) {
      closeQuietly(fd);
      return this.stillLost(`cannot stat ${p}: ${words(err)}`, logChange);
    }
    if (this.stopped || this.state.kind === 'serving') return closeQuietly(fd);
    const wasLost = this.everServed;
    this.everServed = true;
    this.state = { kind: 'serving', fd, key: keyOf(st), generation: ++this.generation, since: Date.now() };
    for (const v of this.views) this.reopening.add(v);
    if (wasLost) {
      this.log.info({ node: this.node.name, path: p, mountPoint: this.mountPoint, exportViews: this.views.size }, `storage node ${this.node.name} is back: its exports are opened again on the filesystem now mounted at ${this.mountPoint}`);
    } else {
      this.log.info({ node: this.node.name, path: p, mountPoint: this.mountPoint }, 'storage node mounted');
    }
    await this.reopenViews();
  }

  private async whyNotMounted(): Promise<string | undefined> {
    const p = this.node.path;
    if (this.realPath && this.mountPoint && this.mountPoint !== '/') {
      const now = mountOf(this.realPath, await readMountTable());
      if (now?.mountPoint !== this.mountPoint) return `nothing is mounted at ${this.mountPoint}`;
    }
    let st: sys.Stat;
    try {
      st = await this.io.run(`stat ${p}`, () => sys.fstatat(C.AT_FDCWD, p, 0));
    } catch (err) {
      return `stat of ${p} fails with ${codeOf(err)} (${words(err)})`;
    }
    if ((st.mode & S_IFMT) !== S_IFDIR) return `${p} is not a directory`;
    if (this.node.requireMount && st.dev === (await this.rootDevice())) {
      return `${p} is on the host's root filesystem, so its network filesystem is not mounted`;
    }
    // A client cut off from its storage may still answer stat from its cache: read the directory.
    try {
      await this.io.run(`read ${p}`, async () => {
        const dirFd = await sys.openat(C.AT_FDCWD, p, C.O_RDONLY | C.O_DIRECTORY);
        try {
          await sys.getdents(dirFd, 0n, 1);
        } finally {
          await sys.close(dirFd).catch(() => undefined);
        }
      });
    } catch (err) {
      return `${p} cannot be read: ${codeOf(err)} (${words(err)})`;
    }
    return undefined;
  }

  private stillLost(reason: string, logChange: boolean): void {
    const s = this.state;
    if (s.kind !== 'lost' || s.reason === reason) return;
    s.reason = reason;
    if (!logChange) return;
    const first = !this.everServed && this.views.size === 0;
    this.log[first ? 'warn' : 'info']({ node: this.node.name, path: this.node.path, reason },
      first ? `storage node ${this.node.name} is not available: ${reason}; exports on it are refused (EIO) until it is` : `storage node ${this.node.name} is still lost: ${reason}`);
  }

  /** Opens the views' roots again on the current filesystem; those that cannot stay on EIO and are tried at every check. */
  private async reopenViews(): Promise<void> {
    for (const v of [...this.reopening]) {
      if (this.state.kind !== 'serving') return;
      if (v.closed) {
        this.reopening.delete(v);
        continue;
      }
      try {
        await this.io.run('open an export root again', () => v.storageBack());
        this.reopening.delete(v);
      } catch (err) {
        const reason = `storage node ${this.node.name} is mounted again, but this export's directory cannot be opened there: ${codeOf(err)} (${words(err)}); restore it on the storage`;
        if (!v.closed) v.storageGone(reason);
        if (!this.warnedReopen.has(v)) {
          this.warnedReopen.add(v);
          this.log.warn({ node: this.node.name, reason }, 'export not reopened after its storage came back');
        }
      }
    }
  }

  // ---- helpers -----------------------------------------------------------------------------------

  private explain(reason: string): string {
    return `storage node ${this.node.name} (${this.node.path}) is not available: ${reason}; its exports answer EIO until a filesystem is mounted at ${this.mountPoint ?? this.node.path} again`;
  }

  private async rootDevice(): Promise<bigint> {
    this.rootDev ??= (await sys.fstatat(C.AT_FDCWD, '/', 0)).dev;
    return this.rootDev;
  }
}

function keyOf(st: sys.Stat): string {
  return `${st.dev}:${st.ino}`;
}

function codeOf(err: unknown): string {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' ? code : 'EIO';
}

/** "No such file or directory" from a system error's message, or the message itself. */
function words(err: unknown): string {
  const m = (err as Error)?.message ?? String(err);
  return /^[A-Z0-9_]+: ([^,]+)/.exec(m)?.[1] ?? m;
}

function closeQuietly(fd: number): void {
  sys.close(fd).catch(() => undefined);
}
