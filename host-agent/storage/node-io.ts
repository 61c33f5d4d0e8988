// One storage node's filesystem calls, made so that a frozen network mount cannot hang the agent
// and a symlink on the storage side is never followed.
//
// Deadline. A call on a hung NFS/CephFS mount blocks a libuv threadpool thread (4 by default) in
// the kernel, and nothing can cancel it. So each node runs its calls one at a time, each with a
// deadline; when one misses it, the node is "stalled" and every further call fails at once until
// the stuck call returns. A hung node thus holds at most one threadpool thread, and resolution
// moves on in bounded time.
//
// No symlinks. The walk opens the node's root, then each component with
// O_PATH|O_DIRECTORY|O_NOFOLLOW relative to its parent's fd (through /proc/self/fd/N/NAME, one
// component at a time), and creates with mkdir on the same kind of path. A component that is a
// symlink or not a directory stops the walk; a rename race on the storage side cannot redirect it.
import fs from 'node:fs';
import { promisify } from 'node:util';
import type { StorageNodeConfig } from '../config.js';
import { StorageError, fromSystemError } from './errors.js';
import { formatDuration } from './units.js';

const O_PATH = 0o10000000; // Linux; not in fs.constants
const DIR_FLAGS = O_PATH | fs.constants.O_DIRECTORY;
const CHILD_FLAGS = DIR_FLAGS | fs.constants.O_NOFOLLOW;

const open = promisify(fs.open);
const fstat = promisify(fs.fstat);
const lstat = promisify(fs.lstat);
const mkdir = promisify(fs.mkdir);
const chown = promisify(fs.chown);
const chmod = promisify(fs.chmod);
const statfs = promisify(fs.statfs);

function closeQuietly(fd: number): void {
  fs.close(fd, () => {});
}

const at = (fd: number, name?: string) => (name === undefined ? `/proc/self/fd/${fd}` : `/proc/self/fd/${fd}/${name}`);

/** Serializes a node's calls and bounds each with a deadline (see the top of this file). */
export class NodeIo {
  private tail: Promise<unknown> = Promise.resolve();
  private stuck: { what: string; since: number } | null = null;

  constructor(readonly node: string, readonly timeoutMs: number) {}

  /** The call that is blocked past its deadline, if any. */
  get stalled(): { what: string; since: number } | null {
    return this.stuck;
  }

  /**
   * Runs `op` after the node's earlier calls. Rejects with ETIMEDOUT past the deadline, or with
   * EHOSTUNREACH at once while an earlier call is still stuck. `late` disposes of a result that
   * arrives after the deadline (e.g. closes an fd).
   */
  run<T>(what: string, op: () => Promise<T>, late?: (value: T) => void): Promise<T> {
    const result = this.tail.then(() => this.start(what, op, late));
    this.tail = result.catch(() => undefined);
    return result;
  }

  private start<T>(what: string, op: () => Promise<T>, late?: (value: T) => void): Promise<T> {
    if (this.stuck) {
      const secs = formatDuration(Math.round((Date.now() - this.stuck.since) / 100) * 100);
      return Promise.reject(new StorageError('EHOSTUNREACH', `node ${this.node} is not responding: ${this.stuck.what} has been blocked for ${secs}`));
    }
    return new Promise<T>((resolve, reject) => {
      const since = Date.now();
      let expired = false;
      const timer = setTimeout(() => {
        expired = true;
        this.stuck = { what, since };
        reject(new StorageError('ETIMEDOUT', `node ${this.node}: ${what} did not return within ${formatDuration(this.timeoutMs)}`));
      }, this.timeoutMs);
      op().then(
        (v) => {
          clearTimeout(timer);
          if (!expired) return resolve(v);
          this.stuck = null;
          late?.(v);
        },
        (err) => {
          clearTimeout(timer);
          if (!expired) return reject(err);
          this.stuck = null;
        },
      );
    });
  }
}

export type WalkResult =
  /** The directory exists; `fd` is an O_PATH fd of it. */
  | { found: true; fd: number }
  /** `fd` is the deepest existing directory, `depth` components deep; the rest is missing. */
  | { found: false; fd: number; depth: number };

export interface Capacity {
  totalBytes: number;
  /** Space an unprivileged writer may use (f_bavail * f_bsize). */
  freeBytes: number;
}

/** Filesystem calls on one storage node, through its NodeIo. Every fd returned is the caller's to close. */
export class NodeFs {
  readonly io: NodeIo;

  constructor(readonly config: StorageNodeConfig, timeoutMs: number) {
    this.io = new NodeIo(config.name, timeoutMs);
  }

  get name(): string {
    return this.config.name;
  }

  /**
   * Opens the node's root: its path must be a directory (symlinks in the operator's own path are
   * fine) and, with require_mount, on another filesystem than "/" (`rootDev`). Throws EHOSTUNREACH
   * saying why the node cannot be used.
   */
  async openRoot(rootDev: number): Promise<number> {
    const p = this.config.path;
    const fd = await this.io.run(`open ${p}`, () => open(p, DIR_FLAGS), closeQuietly).catch((err) => {
      throw unreachable(this.name, err, p);
    });
    try {
      const st = await this.io.run(`stat ${p}`, () => fstat(fd));
      if (this.config.requireMount && st.dev === rootDev) {
        throw new StorageError('EHOSTUNREACH', `node ${this.name}: ${p} is on the host's root filesystem, so its network filesystem is not mounted (set require_mount: false if that is intended)`);
      }
      return fd;
    } catch (err) {
      closeQuietly(fd);
      throw unreachable(this.name, err, p);
    }
  }

  /**
   * Walks `names` below `rootFd` without following symlinks. Throws ELOOP / ENOTDIR when a
   * component exists but is a symlink or not a directory. `rootFd` stays open.
   */
  async walk(rootFd: number, names: string[]): Promise<WalkResult> {
    let fd = rootFd;
    for (let i = 0; i < names.length; i++) {
      let child: number;
      try {
        child = await this.openChild(fd, names, i);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { found: false, fd: fd === rootFd ? await this.dup(rootFd) : fd, depth: i };
        if (fd !== rootFd) closeQuietly(fd);
        throw err;
      }
      if (fd !== rootFd) closeQuietly(fd);
      fd = child;
    }
    return { found: true, fd: fd === rootFd ? await this.dup(rootFd) : fd };
  }

  /**
   * mkdir -p of `names` below `parentFd` (which is `depth` components below the node root, for
   * messages, with `all` the full component list). Each directory made is chowned to `owner` (when
   * given) and chmodded to `mode` exactly (no umask). Returns an O_PATH fd of the last one and
   * whether it was made by us (false when another client made it at the same moment).
   */
  async mkdirs(parentFd: number, all: string[], depth: number, mode: number, owner?: { uid: number; gid: number }): Promise<{ fd: number; created: boolean }> {
    let fd = parentFd;
    let created = false;
    for (let i = depth; i < all.length; i++) {
      const name = all[i];
      const where = `/${all.slice(0, i + 1).join('/')}`;
      try {
        created = true;
        await this.io.run(`mkdir ${where}`, () => mkdir(at(fd, name), { mode: 0o700 })).catch((err) => {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw fromSystemError(err, `node ${this.name}: cannot create ${where}`);
          created = false;
        });
        const child = await this.openChild(fd, all, i);
        if (fd !== parentFd) closeQuietly(fd);
        fd = child;
        if (created) {
          // Ownership first, then the mode: chown clears set-id bits.
          if (owner) await this.io.run(`chown ${where}`, () => chown(at(fd), owner.uid, owner.gid)).catch((err) => { throw fromSystemError(err, `node ${this.name}: cannot give ${where} to ${owner.uid}:${owner.gid}`); });
          await this.io.run(`chmod ${where}`, () => chmod(at(fd), mode)).catch((err) => { throw fromSystemError(err, `node ${this.name}: cannot set the mode of ${where}`); });
        }
      } catch (err) {
        if (fd !== parentFd) closeQuietly(fd);
        throw err;
      }
    }
    return { fd: fd === parentFd ? await this.dup(parentFd) : fd, created };
  }

  /** Size and free space of the node's filesystem. */
  async capacity(): Promise<Capacity> {
    const p = this.config.path;
    const s = await this.io.run(`statfs ${p}`, () => statfs(p, { bigint: true })).catch((err) => {
      throw unreachable(this.name, err, p);
    });
    return { totalBytes: Number(s.blocks * s.bsize), freeBytes: Number(s.bavail * s.bsize) };
  }

  close(fd: number): void {
    closeQuietly(fd);
  }

  /** Opens names[i] below `parentFd` as a directory, never through a symlink. */
  private async openChild(parentFd: number, names: string[], i: number): Promise<number> {
    const where = `/${names.slice(0, i + 1).join('/')}`;
    try {
      return await this.io.run(`open ${where}`, () => open(at(parentFd, names[i]), CHILD_FLAGS), closeQuietly);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw err;
      if (code !== 'ENOTDIR' && code !== 'ELOOP') throw fromSystemError(err, `node ${this.name}: cannot open ${where}`);
      const st = await this.io.run(`lstat ${where}`, () => lstat(at(parentFd, names[i]))).catch(() => null);
      if (st?.isSymbolicLink()) throw new StorageError('ELOOP', `on node ${this.name}, ${where} is a symlink; dirvisor never follows symlinks on storage`);
      throw new StorageError('ENOTDIR', `on node ${this.name}, ${where} exists but is not a directory`);
    }
  }

  /** A second fd of the same directory, so every fd a walk returns can be closed the same way. */
  private dup(fd: number): Promise<number> {
    return this.io.run('reopen', () => open(at(fd), DIR_FLAGS), closeQuietly);
  }
}

function unreachable(node: string, err: unknown, p: string): StorageError {
  if (err instanceof StorageError && (err.code === 'EHOSTUNREACH' || err.code === 'ETIMEDOUT')) return err;
  if (err instanceof StorageError) return new StorageError('EHOSTUNREACH', err.message);
  const e = fromSystemError(err, `node ${node}: ${p} is not usable`);
  return new StorageError('EHOSTUNREACH', e.message);
}
