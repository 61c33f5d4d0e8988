// Applies changes pushed by the host to one mount's kernel caches, in order, one at a time:
// first the invalidations (so whoever reacts to an event already reads the new state), then the
// replay that raises the inotify events (replayer.ts), then whatever the replay left behind.
//
// Bursts: changes queue up while one is applied; repeated data/attribute changes of one node merge,
// and when more than `maxQueue` wait, the queue is collapsed into "these directories changed" /
// "everything changed" -- invalidations only, without replays (the inotify events of a storm are
// lost, as they would be on an overflowing inotify queue), so the work stays bounded and the final
// state is still right.
import { pb } from '../../shared/rpc/wire.js';
import { ROOT_ID, type Attr, type Caller } from '../../shared/fs/interface.js';
import type { Logger } from '../../shared/log.js';
import type { ReplayOp } from '../../native/fuse.js';
import type { Mount } from '../fuse/adapter.js';
import type { ResilientFileSystem } from '../resilient-fs.js';
import type { Replayer, Answer } from './replayer.js';

const K = pb.Change.Kind;
const INTERNAL: Caller = { uid: 0, gid: 0, pid: 0 };
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const EISDIR = 21;
const ENOTDIR = 20;

/** A change in this mount's node ids (0: not known here). */
export interface GuestChange {
  kind: pb.Change.Kind;
  parent: number;
  name: Buffer;
  node: number;
  newParent: number;
  newName: Buffer;
  offset: number;
  length: number;
  attr?: Attr;
}

export interface ApplierOptions {
  /** Raise inotify events by replaying (off on read-only mounts: the kernel refuses any change there). */
  replay: boolean;
  /**
   * Replay data and attribute changes too. Off with the writeback cache: there the kernel keeps
   * its own size and times of a file and would write what a replay made it believe back to the host.
   */
  replayData: boolean;
  /** Changes waiting beyond which they are collapsed. */
  maxQueue?: number;
  /** Directories/files kept when collapsing; beyond it, everything is invalidated. */
  maxCollapsed?: number;
}

export class Applier {
  private queue: GuestChange[] = [];
  private running = false;
  private idleWaiters: Array<() => void> = [];
  private readonly maxQueue: number;
  private readonly maxCollapsed: number;
  /** Counters for status, tests and benchmarks. */
  readonly stats = { received: 0, applied: 0, collapsed: 0 };

  constructor(
    private readonly mount: Mount,
    private readonly fs: ResilientFileSystem,
    private readonly replayer: Replayer,
    private readonly opts: ApplierOptions,
    private readonly log: Logger,
  ) {
    this.maxQueue = opts.maxQueue ?? 4096;
    this.maxCollapsed = opts.maxCollapsed ?? 1024;
  }

  push(changes: GuestChange[]): void {
    this.stats.received += changes.length;
    for (const c of changes) this.queue.push(c);
    if (this.queue.length > 1) this.queue = coalesce(this.queue);
    if (this.queue.length > this.maxQueue) this.collapse();
    if (!this.running) void this.drain();
  }

  /** Resolves when nothing is waiting (tests, benchmarks). */
  idle(): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async drain(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.length > 0 && !this.mount.isClosed) {
        const c = this.queue.shift()!;
        try {
          await this.apply(c);
        } catch (err) {
          this.log.debug({ err, kind: c.kind }, 'applying a change failed');
        }
        this.stats.applied++;
      }
    } finally {
      this.running = false;
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  private collapse(): void {
    this.stats.collapsed++;
    const dirs = new Set<number>();
    const nodes = new Set<number>();
    let all = false;
    for (const c of this.queue) {
      if (c.kind === K.ALL) all = true;
      else if (c.kind === K.MODIFY || c.kind === K.ATTRIB) {
        const n = c.node || (c.parent ? this.fs.childOf(c.parent, c.name) : 0);
        if (n) nodes.add(n);
      } else {
        if (c.parent) dirs.add(c.parent);
        if (c.kind === K.MOVE && c.newParent) dirs.add(c.newParent);
      }
    }
    const blank = { name: Buffer.alloc(0), node: 0, newParent: 0, newName: Buffer.alloc(0), offset: 0, length: 0 };
    if (all || dirs.size + nodes.size > this.maxCollapsed) {
      this.queue = [{ kind: K.ALL, parent: 0, ...blank }];
    } else {
      this.queue = [
        ...[...dirs].map((parent) => ({ kind: K.DIR, parent, ...blank })),
        // Data and attributes only: no replay for collapsed changes.
        ...[...nodes].map((node) => ({ kind: K.DIR, parent: 0, ...blank, node })),
      ];
    }
    this.log.debug({ dirs: dirs.size, nodes: nodes.size, all }, 'change queue collapsed');
  }

  // ---- one change ----

  private async apply(c: GuestChange): Promise<void> {
    switch (c.kind) {
      case K.CREATE:
        return this.created(c);
      case K.DELETE:
        return this.deleted(c);
      case K.MOVE:
        return this.moved(c);
      case K.MODIFY:
      case K.ATTRIB:
        return this.changed(c);
      case K.DIR:
        return c.parent ? this.dirChanged(c.parent) : this.inode(c.node, 0, 0);
      case K.ALL:
        return this.allChanged();
    }
  }

  private async created(c: GuestChange): Promise<void> {
    if (!c.parent) return;
    await this.entry(c.parent, c.name);
    await this.inode(c.parent, 0, 0);
    const dir = this.replayPath(c.parent);
    if (dir) {
      const at = { dir, name: c.name };
      const mode = c.attr?.mode || S_IFREG | 0o644;
      const type = mode & S_IFMT;
      const op: ReplayOp =
        type === S_IFDIR ? { op: 'mkdir', ...at, mode }
        : type === S_IFLNK ? { op: 'symlink', ...at, target: Buffer.from('.') }
        : { op: 'mknod', ...at, mode: (type || S_IFREG) | (mode & 0o7777) };
      await this.replayer.run(op, { targets: [{ parent: c.parent, name: c.name, answer: 'enoent', mode }] });
    }
    // Whatever the kernel holds for the name now (a placeholder) goes: the next access looks it up.
    await this.entry(c.parent, c.name);
    // A file that arrives with data (its writes merged into the create) is also written, as a local
    // `echo > f` would be: watchers waiting for IN_CLOSE_WRITE (build tools, editors) see it.
    const size = c.attr?.size ?? 0;
    if (dir && size > 0 && ((c.attr?.mode ?? 0) & S_IFMT) === S_IFREG) {
      await this.changed({ ...c, kind: K.MODIFY, node: 0, offset: 0, length: size });
    }
  }

  private async deleted(c: GuestChange): Promise<void> {
    if (!c.parent) return;
    const child = c.node || this.fs.childOf(c.parent, c.name) || 0;
    await this.inode(c.parent, 0, 0);
    const dir = this.replayPath(c.parent);
    if (dir) {
      const at = { dir, name: c.name };
      const isDir = ((c.attr?.mode ?? 0) & S_IFMT) === S_IFDIR;
      const attempt = async (d: boolean) => {
        // A file is unlinked as the real node (its watchers see it go: IN_ATTRIB/IN_DELETE_SELF). A
        // directory never: rmdir marks its inode dead for good in this kernel, and it may live on
        // elsewhere (moved); its dentry is dropped first and a placeholder goes instead.
        if (d) await this.entry(c.parent, c.name);
        const answer: Answer = child && !d ? { real: child } : 'ghost';
        const targets = [{ parent: c.parent, name: c.name, answer, mode: d ? S_IFDIR | 0o755 : S_IFREG | 0o644 }];
        return this.replayer.run({ op: d ? 'rmdir' : 'unlink', ...at }, { targets });
      };
      const r = await attempt(isDir);
      // We did not know its type and the kernel did: the other way.
      if (r.errno === EISDIR || (r.errno === ENOTDIR && isDir)) await attempt(!isDir);
    }
    this.fs.noteRemoved(c.parent, c.name);
    await this.entry(c.parent, c.name);
    if (child) await this.inode(child, -1, 0);
  }

  private async moved(c: GuestChange): Promise<void> {
    if (!c.parent || !c.newParent) return;
    const child = c.node || this.fs.childOf(c.parent, c.name) || 0;
    await this.entry(c.newParent, c.newName);
    await this.inode(c.parent, 0, 0);
    if (c.newParent !== c.parent) await this.inode(c.newParent, 0, 0);
    const from = this.replayPath(c.parent);
    const to = this.replayPath(c.newParent);
    if (from && to) {
      const mode = c.attr?.mode || S_IFREG | 0o644;
      await this.replayer.run(
        { op: 'rename', dir: from, name: c.name, dir2: to, name2: c.newName },
        {
          targets: [
            { parent: c.parent, name: c.name, answer: child ? { real: child } : 'ghost', mode },
            { parent: c.newParent, name: c.newName, answer: 'enoent', mode },
          ],
        },
      );
    }
    this.fs.noteMoved(c.parent, c.name, c.newParent, c.newName);
    // The replay moved whatever dentry the kernel held at the old name, which may not be the node
    // that moved (an application may have looked up what the name holds now): both names are
    // looked up again. (inotify watches are on inodes: a watched directory keeps its watch.)
    await this.entry(c.parent, c.name);
    await this.entry(c.newParent, c.newName);
    if (child) await this.inode(child, -1, 0);
  }

  private async changed(c: GuestChange): Promise<void> {
    const node = c.node || (c.parent ? this.fs.childOf(c.parent, c.name) : 0) || 0;
    const modify = c.kind === K.MODIFY;
    // Invalidate first: a watcher woken by the event must read the new data.
    if (node) await this.inode(node, modify ? Math.max(0, c.offset) : -1, modify ? c.length : 0);
    if (!this.opts.replay || !this.opts.replayData) return;
    const place = node ? this.fs.placeOf(node) : c.parent ? { parent: c.parent, name: c.name } : undefined;
    if (!place || !place.name.length) return;
    const dir = this.replayPath(place.parent);
    if (!dir) return;
    const type = (c.attr?.mode ?? S_IFREG) & S_IFMT;
    if (modify && type !== S_IFREG) return;
    const at = { dir, name: place.name };
    const answer: Answer = node ? { real: node } : 'ghost';
    const targets = [{ parent: place.parent, name: place.name, answer, mode: c.attr?.mode || S_IFREG | 0o644 }];
    if (modify) {
      // One byte "written" inside the file: answered here, with direct I/O (nothing is cached), and
      // never beyond its size (the kernel would take that as the size until it asks again).
      const size = c.attr?.size ?? 1;
      const offset = Math.min(Math.max(0, c.offset), Math.max(0, size - 1));
      await this.replayer.run({ op: 'write', ...at, offset }, { targets, attr: c.attr });
      // Its size as of now, from the host (the write made the kernel drop it anyway).
      if (node) await this.inode(node, -1, 0);
    } else {
      const attr = node ? await this.fs.getattr(INTERNAL, node).catch(() => c.attr) : c.attr;
      if (!attr) return;
      await this.replayer.run({ op: 'utimens', ...at, atime: attr.atime, mtime: attr.mtime }, { targets, attr });
    }
  }

  private async dirChanged(dir: number): Promise<void> {
    await this.inode(dir, 0, 0);
    for (const n of [...this.fs.knownNodes()]) {
      if (n.parent !== dir) continue;
      await this.entry(dir, n.name);
      await this.inode(n.id, 0, 0);
    }
  }

  private async allChanged(): Promise<void> {
    for (const n of [...this.fs.knownNodes()]) {
      await this.entry(n.parent, n.name);
      await this.inode(n.id, 0, 0);
    }
    await this.inode(ROOT_ID, 0, 0);
  }

  // ---- helpers ----

  /** Where directory `dir` is, relative to the mount's root (names joined by "/"), if we can tell. */
  private replayPath(dir: number): Buffer | undefined {
    if (!this.opts.replay) return undefined;
    const names = this.fs.pathOf(dir);
    if (!names) return undefined;
    return Buffer.concat(names.flatMap((n, i) => (i ? [SLASH, n] : [n])));
  }

  private async entry(parent: number, name: Buffer): Promise<void> {
    await this.mount.invalidateEntry(parent, name).catch(() => undefined);
  }

  private async inode(node: number, offset: number, length: number): Promise<void> {
    if (node) await this.mount.invalidateInode(node, offset, length).catch(() => undefined);
  }
}

const SLASH = Buffer.from('/');

/** Repeated data (or attribute) changes of one node merge into the last (byte ranges united). */
function coalesce(list: GuestChange[]): GuestChange[] {
  const key = (c: GuestChange) =>
    c.kind === K.MODIFY || c.kind === K.ATTRIB ? `${c.kind}:` + (c.node ? `n${c.node}` : `p${c.parent}/${c.name.toString('latin1')}`) : undefined;
  const last = new Map<string, number>();
  const merged = new Map<string, GuestChange>();
  list.forEach((c, i) => {
    const k = key(c);
    if (!k) return;
    last.set(k, i);
    const prev = merged.get(k);
    merged.set(k, prev ? merge(prev, c) : c);
  });
  if (merged.size === 0) return list;
  return list.flatMap((c, i) => {
    const k = key(c);
    if (!k) return [c];
    return last.get(k) === i ? [merged.get(k)!] : [];
  });
}

function merge(a: GuestChange, b: GuestChange): GuestChange {
  if (b.kind === K.ATTRIB) return b;
  const aEnd = a.length === 0 ? Infinity : a.offset + a.length;
  const bEnd = b.length === 0 ? Infinity : b.offset + b.length;
  const start = Math.min(a.offset, b.offset);
  const end = Math.max(aEnd, bEnd);
  return { ...b, offset: start, length: end === Infinity ? 0 : end - start };
}
