// Makes the guest kernel raise inotify events for changes made outside the VM.
//
// FUSE cannot tell the kernel "this file was created / written / removed" in a way inotify sees
// (a notify_delete drops the dentry but raises nothing). What inotify does see is a change made
// through the mount. So the agent replays each change through its own mount: a helper process
// (one per agent, see replay-process.ts; never the agent itself, which could then not be killed
// while the kernel waits for its own answer) makes the syscall --
// mknod, mkdir, symlink, unlink, rmdir, rename, open+write+close, utimensat -- on the entry (its
// directory resolved beneath the mount's root, never following a symlink or leaving the mount),
// and the kernel, when it succeeds, raises exactly the events a local change would (IN_CREATE,
// IN_DELETE, IN_MOVED_FROM/TO with a cookie, IN_OPEN/IN_MODIFY/IN_CLOSE_WRITE, IN_ATTRIB, and the
// *_SELF events for watchers of the inode itself).
//
// Nothing of a replay reaches the host: the kernel's requests carry the helper's pid, and
// this interceptor answers them from here. The one name a replay is about is answered from a
// script: "no such entry" for the name a create or move makes, the real node (looked up again) or
// else a placeholder for the name it removes, moves or writes. A placeholder ("ghost") is a node id
// from a range the FileSystem never uses, handed out with timeouts 0; every request anybody else
// makes on it fails with ESTALE, which makes the kernel's path walk revalidate and find the real
// entry, and the applier drops its dentry right after the replay anyway. Writes are answered with
// direct I/O (no page is cached), handles come from our own range, and setattr answers carry the
// node's real attributes with a timeout of 0.
import { constants as osc } from 'node:fs';
import type { FuseRequest, NativeFuseSession, ReplayOp } from '../../native/fuse.js';
import type { Attr, Caller } from '../../shared/fs/interface.js';
import { E } from '../../shared/fs/errors.js';
import type { Logger } from '../../shared/log.js';
import type { Mount } from '../fuse/adapter.js';
import type { ResilientFileSystem } from '../resilient-fs.js';

type Req = Exclude<FuseRequest, { op: 'forget' }>;

/** Node ids and file handles from here on are ours (FileSystem ids are small; LazyDirs use 2^48+). */
export const OWN_BASE = 2 ** 52;
const INTERNAL: Caller = { uid: 0, gid: 0, pid: 0 };
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;

/** How the replay's lookup of one name is answered. */
export type Answer = 'enoent' | 'ghost' | { real: number };

export interface Target {
  parent: number;
  name: Buffer;
  answer: Answer;
  /** Type and mode of a placeholder. */
  mode: number;
}

export interface Script {
  targets: Target[];
  /** Attributes for setattr answers on real nodes (utimens, truncate). */
  attr?: Attr;
}

export interface ReplayResult {
  errno: number;
  /** A placeholder node was handed to the kernel (its dentry should be dropped). */
  ghost: boolean;
}

interface Ghost {
  attr: Attr;
  refs: number;
}

export class Replayer {
  private mount?: Mount;
  private script: (Script & { ghostIds: Map<number, number>; ghost: boolean }) | null = null;
  private readonly ghosts = new Map<number, Ghost>();
  private readonly fhs = new Set<number>();
  private nextId = OWN_BASE;
  /** Counters for status and tests. */
  readonly stats = { replays: 0, failed: 0, answered: 0 };

  constructor(private readonly fs: ResilientFileSystem, private readonly log: Logger) {
    // A replay that waited for a lost host would keep the mount busy (and its unmount waiting) for
    // the whole reconnect window; it only serves inotify watchers, so it fails at once instead.
    fs.failFastFor((caller) => caller.pid !== 0 && caller.pid === this.replayPid);
  }

  private get replayPid(): number {
    return this.mount?.replayThreadId ?? 0;
  }

  attach(mount: Mount): void {
    this.mount = mount;
  }

  /** Runs one replay with `script` answering its lookups. One at a time (the caller serializes). */
  async run(op: ReplayOp, script: Script): Promise<ReplayResult> {
    if (!this.mount || this.mount.isClosed) return { errno: E.ENOTCONN, ghost: false };
    const s = { ...script, ghostIds: new Map<number, number>(), ghost: false };
    this.script = s;
    this.stats.replays++;
    let errno: number;
    try {
      // A "no such name" the kernel cached before this replay began would make its syscall fail
      // without asking us; while it runs, such answers are not cached (see isTarget).
      for (const t of script.targets) await this.mount.invalidateEntry(t.parent, t.name).catch(() => undefined);
      errno = await this.mount.replay(op);
    } finally {
      this.script = null;
    }
    if (errno) {
      this.stats.failed++;
      this.log.debug({ op: op.op, dir: op.dir.toString(), name: op.name.toString(), errno }, 'replay did not go through');
    }
    return { errno, ghost: s.ghost };
  }

  /** Whether the running replay is about `name` in `parent`. */
  isTarget(parent: number, name: Buffer): boolean {
    return !!this.script?.targets.some((t) => t.parent === parent && t.name.equals(name));
  }

  /** Forgets of our own nodes stay here. */
  forget(items: Array<{ nodeId: number; nlookup: number }>): Array<{ nodeId: number; nlookup: number }> {
    if (!items.some((i) => i.nodeId >= OWN_BASE)) return items;
    for (const i of items) {
      const g = i.nodeId >= OWN_BASE ? this.ghosts.get(i.nodeId) : undefined;
      if (g && (g.refs -= i.nlookup) <= 0) this.ghosts.delete(i.nodeId);
    }
    return items.filter((i) => i.nodeId < OWN_BASE);
  }

  intercept(req: Req, s: NativeFuseSession): boolean {
    const tid = this.replayPid;
    const mine = tid !== 0 && req.pid === tid;
    if (this.touchesOwn(req)) {
      this.stats.answered++;
      if (mine) this.answerReplay(req, s);
      else this.answerOther(req, s);
      return true;
    }
    if (!mine) return false;
    // The replay thread's path walk: lookups of other names go to the host like anyone's.
    if (req.op === 'lookup') {
      const t = this.script?.targets.find((x) => x.parent === req.parent && x.name.equals(req.name));
      if (!t) return false;
      this.stats.answered++;
      this.answerLookup(req.id, t, s);
      return true;
    }
    if (!MUTATING.has(req.op)) return false;
    this.stats.answered++;
    this.answerReplay(req, s);
    return true;
  }

  // ---- answers ----

  private touchesOwn(req: Req): boolean {
    const r = req as Partial<Record<'node' | 'parent' | 'newParent' | 'nodeIn' | 'nodeOut' | 'fh' | 'fhIn' | 'fhOut', number>>;
    if ((r.node ?? 0) >= OWN_BASE || (r.parent ?? 0) >= OWN_BASE || (r.newParent ?? 0) >= OWN_BASE) return true;
    if ((r.nodeIn ?? 0) >= OWN_BASE || (r.nodeOut ?? 0) >= OWN_BASE) return true;
    return (r.fh !== undefined && this.fhs.has(r.fh)) || (r.fhIn !== undefined && this.fhs.has(r.fhIn)) || (r.fhOut !== undefined && this.fhs.has(r.fhOut));
  }

  private answerLookup(id: number, t: Target, s: NativeFuseSession): void {
    if (t.answer === 'enoent') {
      s.replyErr(id, E.ENOENT);
      return;
    }
    if (t.answer === 'ghost') {
      this.replyGhost(id, t.parent, t.name, t.mode, s);
      return;
    }
    const real = t.answer.real;
    // The real node, with its current attributes: the kernel then acts on the inode it may hold.
    void this.fs.getattr({ ...INTERNAL, pid: this.replayPid }, real).then(
      (attr) => {
        if (!this.fs.addKernelRef(real)) return this.replyGhost(id, t.parent, t.name, t.mode, s);
        if (s.replyEntry(id, { nodeId: real, generation: 0, attr }, 0, 0) !== 0) this.fs.forget([{ nodeId: real, nlookup: 1 }]);
      },
      () => this.replyGhost(id, t.parent, t.name, t.mode, s),
    );
  }

  private replyGhost(id: number, parent: number, name: Buffer, mode: number, s: NativeFuseSession): void {
    const script = this.script;
    const key = script?.targets.findIndex((x) => x.parent === parent && x.name.equals(name)) ?? -1;
    let nodeId = key >= 0 ? script!.ghostIds.get(key) : undefined;
    if (nodeId === undefined || !this.ghosts.has(nodeId)) {
      nodeId = this.nextId++;
      this.ghosts.set(nodeId, { attr: ghostAttr(nodeId, mode), refs: 0 });
      if (key >= 0) script!.ghostIds.set(key, nodeId);
    }
    const g = this.ghosts.get(nodeId)!;
    if (script) script.ghost = true;
    if (s.replyEntry(id, { nodeId, generation: 0, attr: g.attr }, 0, 0) === 0) g.refs++;
  }

  /** The replay thread's own mutation: it happened elsewhere already; just say it went through. */
  private answerReplay(req: Req, s: NativeFuseSession): void {
    switch (req.op) {
      case 'mknod':
        return this.replyGhost(req.id, req.parent, req.name, req.mode, s);
      case 'mkdir':
        return this.replyGhost(req.id, req.parent, req.name, S_IFDIR | (req.mode & 0o7777), s);
      case 'symlink':
        return this.replyGhost(req.id, req.parent, req.name, 0o120777, s);
      case 'open':
      case 'opendir':
        s.replyOpen(req.id, { fh: this.newFh(), directIo: req.op === 'open', keepCache: true });
        return;
      case 'write':
        s.replyWrite(req.id, req.data.length);
        return;
      case 'setattr':
        s.replyAttr(req.id, this.attrFor(req.node, req.set), 0);
        return;
      case 'getattr':
        s.replyAttr(req.id, this.attrFor(req.node, {}), 0);
        return;
      case 'lookup':
        s.replyErr(req.id, E.ENOENT);
        return;
      case 'read':
        s.replyData(req.id, Buffer.alloc(0));
        return;
      case 'readdir':
      case 'readdirplus':
        s.replyDirents(req.id, [], 0, 0);
        return;
      case 'release':
      case 'releasedir':
        this.fhs.delete(req.fh);
        s.replyErr(req.id, 0);
        return;
      case 'create':
      case 'link':
        s.replyErr(req.id, E.ENOSYS);
        return;
      default:
        // unlink, rmdir, rename, flush, fsync, xattrs, access...: done.
        s.replyErr(req.id, 0);
    }
  }

  /** Someone else reached one of our nodes or handles (a race with a replay). */
  private answerOther(req: Req, s: NativeFuseSession): void {
    switch (req.op) {
      case 'release':
      case 'releasedir':
        this.fhs.delete(req.fh);
        s.replyErr(req.id, 0);
        return;
      case 'flush':
      case 'fsync':
      case 'fsyncdir':
        s.replyErr(req.id, 0);
        return;
      default:
        // ESTALE makes the kernel look the path up again (and find the real entry).
        s.replyErr(req.id, E.ESTALE);
    }
  }

  private newFh(): number {
    const fh = this.nextId++;
    this.fhs.add(fh);
    return fh;
  }

  private attrFor(node: number, set: { mode?: number; size?: number; atime?: unknown; mtime?: unknown }): Attr {
    const base = this.ghosts.get(node)?.attr ?? this.script?.attr ?? ghostAttr(node, osc.S_IFREG | 0o644);
    const out: Attr = { ...base };
    if (set.size !== undefined) out.size = set.size;
    if (set.mode !== undefined) out.mode = (base.mode & S_IFMT) | (set.mode & 0o7777);
    const t = (v: unknown) => (v && typeof v === 'object' ? (v as Attr['mtime']) : undefined);
    out.atime = t(set.atime) ?? out.atime;
    out.mtime = t(set.mtime) ?? out.mtime;
    return out;
  }
}

const MUTATING = new Set<Req['op']>([
  'mknod', 'mkdir', 'symlink', 'link', 'unlink', 'rmdir', 'rename', 'open', 'create', 'write', 'setattr',
  'flush', 'fsync', 'release', 'setxattr', 'removexattr', 'fallocate', 'copyFileRange',
]);

function ghostAttr(ino: number, mode: number): Attr {
  const now = { sec: Math.floor(Date.now() / 1000), nsec: 0 };
  return {
    ino, mode: mode || osc.S_IFREG | 0o644, nlink: (mode & S_IFMT) === S_IFDIR ? 2 : 1, uid: 0, gid: 0, rdev: 0,
    size: 0, blocks: 0, blksize: 4096, atime: now, mtime: now, ctime: now,
  };
}
