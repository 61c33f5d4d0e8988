// Bounds what one storage node can take from the host agent when it stops answering.
//
// A call on a frozen network mount (CephFS with its MDS gone, a hard NFS mount) blocks a native
// I/O thread in the kernel and cannot be cancelled. Without a bound, a few frozen calls use up the
// whole pool and every export on every other node stops too. So, per storage node:
//   - at most `maxCalls` calls run at once (the others wait for a slot), so a frozen node holds at
//     most that many threads, whatever its VMs send;
//   - each call has a deadline (`timeoutMs`, counting the wait for a slot; fsync, fallocate and
//     copy_file_range get 4x): past it the caller gets ETIMEDOUT at once, while the call itself
//     keeps its slot until it really returns. A result that arrives late is undone where it holds
//     something (a handle opened late is released, a node looked up late is forgotten);
//   - calls waiting for a slot are served in turn per lane (one export view, i.e. one guest's
//     connection), so a guest with hundreds of calls queued delays another guest's next call by
//     one round of the lanes, not by its whole queue.
// Errors the storage itself gives (EIO, ENOSPC, EDQUOT, ESTALE...) pass through unchanged, except
// that one which can mean the node's filesystem itself went away (ESHUTDOWN from an evicted CephFS
// client, EIO, ENOTCONN, ENODEV) first has the node's mount checked (mount-watch.ts): if it is
// gone, the caller gets the node's EIO, which names the node and what to do.
import type {
  Attr, Caller, CreateResult, DirEntry, Entry, FileSystem, OpenResult, SetAttr, StatFs,
} from '../../shared/fs/interface.js';
import { FsError, E } from '../../shared/fs/errors.js';
import { formatDuration } from './units.js';
import type { NodeIdentity } from '../coherence/identity.js';

export interface NodeGuardOptions {
  /** Calls on the node at once. */
  maxCalls: number;
  /** Deadline of one call, including its wait for a slot. */
  timeoutMs: number;
}

export const DEFAULT_NODE_GUARD: NodeGuardOptions = { maxCalls: 8, timeoutMs: 30_000 };

/** What a guard needs of its node's mount watch (mount-watch.ts). */
export interface NodeMountCheck {
  /** The error operations get while the node's filesystem is gone; undefined while it serves. */
  readonly problem: FsError | undefined;
  check(): Promise<void>;
}

/** Linux's ESHUTDOWN, which Node's os.constants.errno lacks. */
const ESHUTDOWN = 108;
/** Answers that can mean the mount is gone rather than one file failing. */
const MOUNT_SUSPECTS: ReadonlySet<number> = new Set([ESHUTDOWN, E.EIO, E.ENOTCONN, E.ENODEV]);

/** One storage node's slots and deadline, shared by every export view on that node. */
export class NodeGuard {
  private running = 0;
  /** Calls waiting for a slot, per lane, lanes in turn (a Map keeps insertion order). */
  private readonly lanes = new Map<object, Array<() => void>>();
  /** Calls past their deadline that have not returned yet. */
  stuck = 0;
  timeouts = 0;

  /** The node's mount watch, when it has one. */
  mount?: NodeMountCheck;

  constructor(readonly node: string, readonly options: NodeGuardOptions) {}

  /** `err` from the storage, or the node's own error when it says the node's mount is gone. */
  async explain(err: unknown): Promise<unknown> {
    const mount = this.mount;
    if (!mount || !(err instanceof FsError) || !MOUNT_SUSPECTS.has(err.errno)) return err;
    if (!mount.problem) await mount.check();
    return mount.problem ?? err;
  }

  get inFlight(): number {
    return this.running;
  }

  /**
   * Runs `op` within the node's bound. `undo` disposes of a result that arrives after the caller
   * was told ETIMEDOUT.
   */
  run<T>(what: string, op: () => Promise<T>, slow = 1, undo?: (value: T) => void, lane: object = this): Promise<T> {
    const deadlineMs = this.options.timeoutMs * slow;
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      let started = false;
      const timer = setTimeout(() => {
        settled = true;
        this.timeouts++;
        if (started) this.stuck++;
        else this.dequeue(lane, start);
        reject(new FsError(E.ETIMEDOUT, `${what} on storage node ${this.node} did not complete within ${formatDuration(deadlineMs)}${started ? '' : ` (waiting behind ${this.running} calls that have not returned)`}; the storage is not answering: check its mount on the host`));
      }, deadlineMs);
      const start = (): void => {
        started = true;
        this.running++;
        let p: Promise<T>;
        try {
          p = op();
        } catch (err) {
          p = Promise.reject(err);
        }
        p.then(
          (v) => {
            if (!settled) {
              settled = true;
              clearTimeout(timer);
              resolve(v);
            } else {
              this.stuck--;
              try {
                undo?.(v);
              } catch {
                // nothing more to do for a result nobody waits for
              }
            }
          },
          (err: unknown) => {
            if (!settled) {
              settled = true;
              clearTimeout(timer);
              reject(err);
            } else {
              this.stuck--;
            }
          },
        ).finally(() => {
          this.running--;
          this.nextWaiting()?.();
        });
      };
      if (this.running < this.options.maxCalls) start();
      else {
        const waiting = this.lanes.get(lane);
        if (waiting) waiting.push(start);
        else this.lanes.set(lane, [start]);
      }
    });
  }

  /** The next waiting call: the first lane's oldest; that lane then goes to the back of the line. */
  private nextWaiting(): (() => void) | undefined {
    for (const [lane, waiting] of this.lanes) {
      const next = waiting.shift();
      this.lanes.delete(lane);
      if (waiting.length) this.lanes.set(lane, waiting);
      if (next) return next;
    }
    return undefined;
  }

  private dequeue(lane: object, start: () => void): void {
    const waiting = this.lanes.get(lane);
    const i = waiting?.indexOf(start) ?? -1;
    if (i >= 0) waiting!.splice(i, 1);
    if (waiting && !waiting.length) this.lanes.delete(lane);
  }
}

/** Deadline of the coherence hub's own stats: a flush for every export waits for them. */
const HUB_STAT_DEADLINE_MS = 2000;

/**
 * The coherence hub's view of a backend's nodes, with its stats within the node's bound too: on a
 * frozen node they would otherwise add stuck threads beyond max_calls_per_node, and hold up the
 * hub's pushes for every other export until the node answered.
 */
export function guardedIdentity(id: NodeIdentity, guard: NodeGuard): NodeIdentity {
  const slow = Math.min(1, HUB_STAT_DEADLINE_MS / guard.options.timeoutMs);
  return {
    keyOf: (nodeId) => id.keyOf(nodeId),
    nodeOf: (key) => id.nodeOf(key),
    statChild: (dir, name) => guard.run('stat', () => id.statChild(dir, name), slow),
    statNode: (nodeId) => guard.run('stat', () => id.statNode(nodeId), slow),
    withNodeFd: (nodeId, fn) => id.withNodeFd(nodeId, fn),
    onNodeDropped: (listener) => id.onNodeDropped(listener),
    onStorageReplaced: id.onStorageReplaced ? (listener) => id.onStorageReplaced!(listener) : undefined,
  };
}

/** An export view whose storage calls go through its node's guard. */
export class GuardedFs implements FileSystem {
  constructor(private readonly inner: FileSystem, private readonly guard: NodeGuard) {}

  private g<T>(what: string, op: () => Promise<T>, slow = 1, undo?: (v: T) => void): Promise<T> {
    // Each view (one guest's connection to this export) is a lane of its own.
    return this.guard.run(what, op, slow, undo, this).catch(async (err: unknown) => {
      throw await this.guard.explain(err);
    });
  }

  private forgetLate = (e: Entry): void => this.inner.forget([{ nodeId: e.nodeId, nlookup: 1 }]);

  lookup(c: Caller, parent: number, name: Buffer): Promise<Entry> { return this.g('lookup', () => this.inner.lookup(c, parent, name), 1, this.forgetLate); }
  forget(items: ReadonlyArray<{ nodeId: number; nlookup: number }>): void { this.inner.forget(items); }
  getattr(c: Caller, node: number, fh?: number): Promise<Attr> { return this.g('getattr', () => this.inner.getattr(c, node, fh)); }
  setattr(c: Caller, node: number, set: SetAttr, fh?: number): Promise<Attr> { return this.g('setattr', () => this.inner.setattr(c, node, set, fh)); }
  readlink(c: Caller, node: number): Promise<Buffer> { return this.g('readlink', () => this.inner.readlink(c, node)); }
  mknod(c: Caller, parent: number, name: Buffer, mode: number, rdev: number): Promise<Entry> { return this.g('mknod', () => this.inner.mknod(c, parent, name, mode, rdev), 1, this.forgetLate); }
  mkdir(c: Caller, parent: number, name: Buffer, mode: number): Promise<Entry> { return this.g('mkdir', () => this.inner.mkdir(c, parent, name, mode), 1, this.forgetLate); }
  unlink(c: Caller, parent: number, name: Buffer): Promise<void> { return this.g('unlink', () => this.inner.unlink(c, parent, name)); }
  rmdir(c: Caller, parent: number, name: Buffer): Promise<void> { return this.g('rmdir', () => this.inner.rmdir(c, parent, name)); }
  symlink(c: Caller, parent: number, name: Buffer, target: Buffer): Promise<Entry> { return this.g('symlink', () => this.inner.symlink(c, parent, name, target), 1, this.forgetLate); }
  rename(c: Caller, parent: number, name: Buffer, newParent: number, newName: Buffer, flags: number): Promise<void> {
    return this.g('rename', () => this.inner.rename(c, parent, name, newParent, newName, flags));
  }
  link(c: Caller, node: number, newParent: number, newName: Buffer): Promise<Entry> { return this.g('link', () => this.inner.link(c, node, newParent, newName), 1, this.forgetLate); }
  open(c: Caller, node: number, flags: number): Promise<OpenResult> {
    return this.g('open', () => this.inner.open(c, node, flags), 1, (r) => void this.inner.release(c, node, r.fh).catch(() => {}));
  }
  create(c: Caller, parent: number, name: Buffer, mode: number, flags: number): Promise<CreateResult> {
    return this.g('create', () => this.inner.create(c, parent, name, mode, flags), 1, (r) => {
      void this.inner.release(c, r.entry.nodeId, r.fh).catch(() => {});
      this.forgetLate(r.entry);
    });
  }
  read(c: Caller, node: number, fh: number, offset: number, size: number): Promise<Buffer> { return this.g('read', () => this.inner.read(c, node, fh, offset, size)); }
  write(c: Caller, node: number, fh: number, offset: number, data: Buffer): Promise<number> { return this.g('write', () => this.inner.write(c, node, fh, offset, data)); }
  flush(c: Caller, node: number, fh: number): Promise<void> { return this.g('flush', () => this.inner.flush(c, node, fh)); }
  fsync(c: Caller, node: number, fh: number, datasync: boolean): Promise<void> { return this.g('fsync', () => this.inner.fsync(c, node, fh, datasync), 4); }
  // Releasing must not wait for a slot or fail: the guest forgets the handle either way.
  release(c: Caller, node: number, fh: number): Promise<void> { return this.inner.release(c, node, fh); }
  opendir(c: Caller, node: number, flags: number): Promise<OpenResult> {
    return this.g('opendir', () => this.inner.opendir(c, node, flags), 1, (r) => void this.inner.releasedir(c, node, r.fh).catch(() => {}));
  }
  readdir(c: Caller, node: number, fh: number, offset: number, maxEntries: number, plus: boolean): Promise<DirEntry[]> {
    return this.g('readdir', () => this.inner.readdir(c, node, fh, offset, maxEntries, plus), 1, (entries) => {
      const items = entries.filter((d) => d.entry).map((d) => ({ nodeId: d.entry!.nodeId, nlookup: 1 }));
      if (items.length) this.inner.forget(items);
    });
  }
  fsyncdir(c: Caller, node: number, fh: number, datasync: boolean): Promise<void> { return this.g('fsyncdir', () => this.inner.fsyncdir(c, node, fh, datasync), 4); }
  releasedir(c: Caller, node: number, fh: number): Promise<void> { return this.inner.releasedir(c, node, fh); }
  statfs(c: Caller, node: number): Promise<StatFs> { return this.g('statfs', () => this.inner.statfs(c, node)); }
  setxattr(c: Caller, node: number, name: Buffer, value: Buffer, flags: number): Promise<void> { return this.g('setxattr', () => this.inner.setxattr(c, node, name, value, flags)); }
  getxattr(c: Caller, node: number, name: Buffer, size: number): Promise<Buffer | number> { return this.g('getxattr', () => this.inner.getxattr(c, node, name, size)); }
  listxattr(c: Caller, node: number, size: number): Promise<Buffer | number> { return this.g('listxattr', () => this.inner.listxattr(c, node, size)); }
  removexattr(c: Caller, node: number, name: Buffer): Promise<void> { return this.g('removexattr', () => this.inner.removexattr(c, node, name)); }
  access(c: Caller, node: number, mask: number): Promise<void> { return this.g('access', () => this.inner.access(c, node, mask)); }
  fallocate(c: Caller, node: number, fh: number, mode: number, offset: number, length: number): Promise<void> {
    return this.g('fallocate', () => this.inner.fallocate(c, node, fh, mode, offset, length), 4);
  }
  copyFileRange(c: Caller, nodeIn: number, fhIn: number, offsetIn: number, nodeOut: number, fhOut: number, offsetOut: number, length: number, flags: number): Promise<number> {
    return this.g('copy_file_range', () => this.inner.copyFileRange(c, nodeIn, fhIn, offsetIn, nodeOut, fhOut, offsetOut, length, flags), 4);
  }
  lseek(c: Caller, node: number, fh: number, offset: number, whence: number): Promise<number> { return this.g('lseek', () => this.inner.lseek(c, node, fh, offset, whence)); }
  destroy(): Promise<void> { return this.inner.destroy(); }
}
