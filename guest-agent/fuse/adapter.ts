// The FUSE adapter: serves a kernel FUSE mount from any FileSystem (shared/fs/interface.ts).
//
// Each kernel request arrives on the JS thread from the native session (native/fuse.ts), becomes
// one async FileSystem call, and is answered when that call settles; many run at once and replies
// go out in completion order. Errors travel as errno (FsError.errno / toErrno) to the application.
//
// The serving process must not use its own mounts in ways that wait for its JS thread: no
// synchronous fs calls on them, and no files left open on them while it spawns a child (the child
// closes its copy at exec, the kernel sends FLUSH, and the JS thread is waiting in spawn).
import { constants as osc } from 'node:fs';
import path from 'node:path';
import { FuseSession, fuseArgs, type FuseRequest, type NativeFuseSession, type ReplayOp, type RequestCaller } from '../../native/fuse.js';
import type { Caller, DirEntry, Entry, FileSystem, OpenResult } from '../../shared/fs/interface.js';
import { E, FsError, errnoName, toErrno } from '../../shared/fs/errors.js';
import type { Logger } from '../../shared/log.js';
import { cacheTimeouts, cachesDirectories, type MountOptions, type Timeouts } from './options.js';
import { LazyDirs } from './lazy-dirs.js';
import { DEFAULT_READAHEAD_BYTES, setReadahead } from './readahead.js';
import { replayProcess } from '../coherence/replay-process.js';

const O_ACCMODE = 3; // not among Node's fs constants

export interface AdapterOptions extends MountOptions {
  logger?: Logger;
  /** Call fs.destroy() once the mount is gone and its requests have settled. Default true. */
  destroyOnClose?: boolean;
  /** Keeps the kernel's caches coherent with changes made elsewhere (guest-agent/coherence/). */
  coherence?: MountCoherence;
}

/** What the adapter asks of the coherence layer (guest-agent/coherence/). */
export interface MountCoherence {
  /** Answers `req` itself (its own replays, nodes only it knows) and returns true; false: serve it. */
  intercept(req: Exclude<FuseRequest, { op: 'forget' }>, session: NativeFuseSession): boolean;
  /** Takes out the forgets of nodes only it knows; returns the rest. */
  forget(items: Array<{ nodeId: number; nlookup: number }>): Array<{ nodeId: number; nlookup: number }>;
  /** Moves on whenever a change arrives. */
  readonly generation: number;
  /** Whether a change to `node` arrived since `generation` (a reply computed before it may be stale). */
  changedSince(generation: number, node: number): boolean;
  /** A reply that raced with a change filled the kernel's cache: drop `node`'s attributes and data again. */
  revalidate(node: number): void;
  /** Whether a replay is about `name` in `parent` now (the kernel must not remember it as absent). */
  replaying(parent: number, name: Buffer): boolean;
}

export interface Mount {
  readonly mountpoint: string;
  /** Resolves once the mount is gone (by unmount(), fusermount3 -u, umount) and the FS is released. */
  readonly closed: Promise<void>;
  readonly isClosed: boolean;
  /** FUSE requests being served right now. */
  readonly inflight: number;
  /**
   * Unmounts. Plain: fails with EBUSY while in use, else resolves once closed. Lazy: detaches the
   * mount at once; it goes away (and `closed` resolves) when the last user lets go.
   */
  unmount(opts?: { lazy?: boolean }): Promise<void>;
  // Kernel cache notifications for coherence. Not cached (ENOENT) counts as done.
  invalidateEntry(parent: number, name: Buffer): Promise<void>;
  /** Marks the entry stale without dropping it (kernel 6.2+; ENOSYS before). */
  expireEntry(parent: number, name: Buffer): Promise<void>;
  /** offset < 0: attributes only; length 0: to the end. */
  invalidateInode(node: number, offset?: number, length?: number): Promise<void>;
  /** Like invalidateEntry, and tells inotify watchers that `child` was deleted. */
  notifyDelete(parent: number, child: number, name: Buffer): Promise<void>;
  /** Pushes data into the kernel's page cache. */
  store(node: number, offset: number, data: Uint8Array): Promise<void>;
  /**
   * Replays a change made elsewhere through the mount (a syscall made by the replay helper process,
   * see coherence/replay-process.ts) so the kernel raises inotify events; 0 or a positive errno.
   * Its requests carry `replayThreadId` as pid; MountCoherence.intercept answers them.
   */
  replay(op: ReplayOp): Promise<number>;
  readonly replayThreadId: number;
}

/** Mounts `fs` at `mountpoint` (an existing directory) and serves it until unmounted. */
export async function mountFileSystem(fs: FileSystem, mountpoint: string, options: AdapterOptions = {}): Promise<Mount> {
  const m = new FuseMount(fs, path.resolve(mountpoint), options);
  await m.start();
  return m;
}

// Sizes of the kernel's readdir records (fuse_dirent: 24 bytes + name padded to 8; plus adds a
// 128-byte fuse_entry_out), to ask the FileSystem for about as many entries as will fit.
const DIRENT_MIN = 32;
const DIRENTPLUS_MIN = 160;

class FuseMount implements Mount {
  readonly closed: Promise<void>;
  private readonly session: NativeFuseSession;
  private readonly t: Timeouts;
  private readonly log?: Logger;
  private closedFlag = false;
  private exited = false;
  private active = 0;
  private drained?: () => void;
  private readonly coherence?: MountCoherence;
  /** cache=long: directory handles answered here (listings stay in the kernel's cache). */
  private readonly lazyDirs?: LazyDirs;
  private resolveClosed!: () => void;

  constructor(
    private readonly fs: FileSystem,
    readonly mountpoint: string,
    private readonly opts: AdapterOptions,
  ) {
    this.t = cacheTimeouts(opts);
    this.coherence = opts.coherence;
    if (cachesDirectories(opts)) {
      const c = opts.coherence;
      this.lazyDirs = new LazyDirs(fs, this.t.attr * 1000, c && ((g, n) => c.changedSince(g, n)), c && (() => c.generation));
    }
    this.log = opts.logger;
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    this.session = new FuseSession(
      mountpoint,
      fuseArgs({
        fsname: opts.fsname,
        allowOther: opts.allowOther,
        defaultPermissions: opts.defaultPermissions,
        readOnly: opts.readOnly,
        maxRead: opts.maxRead,
        autoUnmount: opts.autoUnmount,
        flags: opts.flags,
        debug: opts.debug,
      }),
      {
        maxRead: opts.maxRead,
        maxWrite: opts.maxWrite,
        maxReadahead: opts.maxReadahead,
        maxBackground: opts.maxBackground,
        writeback: opts.writeback,
      },
      (req) => this.onRequest(req),
      () => this.onExit(),
    );
  }

  get isClosed(): boolean {
    return this.closedFlag;
  }

  get inflight(): number {
    return this.active;
  }

  async start(): Promise<void> {
    await this.session.mount();
    await setReadahead(this.mountpoint, this.opts.maxReadahead ?? DEFAULT_READAHEAD_BYTES, this.log);
  }

  async unmount(opts: { lazy?: boolean } = {}): Promise<void> {
    if (this.exited) return this.closed;
    const err = await this.session.unmount(!!opts.lazy);
    // EINVAL/ENOTCONN: it went away meanwhile (e.g. fusermount3 -u); 'exit' is on its way.
    if (err && err !== E.EINVAL && err !== E.ENOTCONN)
      throw new FsError(err, `unmount ${this.mountpoint}: ${errnoName(err)}`);
    if (!opts.lazy || err) await this.closed;
  }

  invalidateEntry(parent: number, name: Buffer): Promise<void> {
    return this.notified(this.session.notifyInvalEntry(parent, name), 'invalidate entry');
  }

  expireEntry(parent: number, name: Buffer): Promise<void> {
    return this.notified(this.session.notifyExpireEntry(parent, name), 'expire entry');
  }

  invalidateInode(node: number, offset = 0, length = 0): Promise<void> {
    return this.notified(this.session.notifyInvalInode(node, offset, length), 'invalidate inode');
  }

  notifyDelete(parent: number, child: number, name: Buffer): Promise<void> {
    return this.notified(this.session.notifyDelete(parent, child, name), 'notify delete');
  }

  store(node: number, offset: number, data: Uint8Array): Promise<void> {
    return this.notified(this.session.notifyStore(node, offset, data), 'store');
  }

  replay(op: ReplayOp): Promise<number> {
    return replayProcess().run(this.mountpoint, op);
  }

  get replayThreadId(): number {
    return replayProcess().pid;
  }

  private async notified(p: Promise<number>, what: string): Promise<void> {
    const err = await p;
    if (err && err !== E.ENOENT) throw new FsError(err, `${what}: ${errnoName(err)}`);
  }

  private onExit(): void {
    this.exited = true;
    void this.finish();
  }

  // After the mount is gone: let running calls settle, then release the file system.
  private async finish(): Promise<void> {
    if (this.active > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    if (this.opts.destroyOnClose ?? true) {
      try {
        await this.fs.destroy();
      } catch (err) {
        this.log?.warn({ err, mountpoint: this.mountpoint }, 'file system destroy failed');
      }
    }
    this.closedFlag = true;
    this.resolveClosed();
  }

  private onRequest(req: FuseRequest): void {
    if (req.op === 'forget') {
      if (this.exited) return;
      try {
        const items = this.coherence ? this.coherence.forget(req.items) : req.items;
        if (items.length) this.fs.forget(items);
      } catch (err) {
        this.log?.warn({ err }, 'forget failed');
      }
      return;
    }
    if (this.coherence?.intercept(req, this.session)) return;
    this.active++;
    void this.serve(req).finally(() => {
      if (--this.active === 0 && this.drained) this.drained();
    });
  }

  private async serve(req: Exclude<FuseRequest, { op: 'forget' }>): Promise<void> {
    try {
      await this.dispatch(req);
    } catch (err) {
      const errno = toErrno(err);
      if (errno === E.EIO && !(err instanceof FsError)) this.log?.warn({ err, op: req.op }, 'FUSE request failed');
      try {
        this.session.replyErr(req.id, errno);
      } catch (replyErr) {
        // Already answered: the error came from building the reply (the native side sent EIO).
        this.log?.error({ err, replyErr, op: req.op }, 'FUSE reply failed');
      }
    }
  }

  private async dispatch(req: Exclude<FuseRequest, { op: 'forget' }>): Promise<void> {
    const fs = this.fs;
    const s = this.session;
    const c = caller(req);
    const id = req.id;
    // Replies computed before a change to their node arrived must not be cached (or must be dropped).
    const gen = this.coherence?.generation ?? 0;
    const raced = (node: number): boolean => !!this.coherence?.changedSince(gen, node);
    switch (req.op) {
      case 'lookup': {
        let entry: Entry;
        try {
          entry = await fs.lookup(c, req.parent, req.name);
        } catch (err) {
          // A negative entry lets the kernel remember "no such name" for a while.
          if (this.t.negative > 0 && toErrno(err) === E.ENOENT) {
            const uncached = raced(req.parent) || this.coherence?.replaying(req.parent, req.name);
            s.replyEntry(id, null, uncached ? 0 : this.t.negative, 0);
            return;
          }
          throw err;
        }
        return this.entry(id, entry, raced(req.parent) || raced(entry.nodeId));
      }
      case 'getattr':
        s.replyAttr(id, await fs.getattr(c, req.node, req.fh), raced(req.node) ? 0 : this.t.attr);
        return;
      case 'setattr':
        s.replyAttr(id, await fs.setattr(c, req.node, req.set, req.fh), raced(req.node) ? 0 : this.t.attr);
        return;
      case 'readlink':
        s.replyReadlink(id, await fs.readlink(c, req.node));
        return;
      case 'mknod':
        return this.entry(id, await fs.mknod(c, req.parent, req.name, req.mode, req.rdev));
      case 'mkdir':
        return this.entry(id, await fs.mkdir(c, req.parent, req.name, req.mode));
      case 'symlink':
        return this.entry(id, await fs.symlink(c, req.parent, req.name, req.target));
      case 'link':
        return this.entry(id, await fs.link(c, req.node, req.newParent, req.newName));
      case 'unlink':
        await fs.unlink(c, req.parent, req.name);
        s.replyErr(id, 0);
        return;
      case 'rmdir':
        await fs.rmdir(c, req.parent, req.name);
        s.replyErr(id, 0);
        return;
      case 'rename':
        await fs.rename(c, req.parent, req.name, req.newParent, req.newName, req.flags);
        s.replyErr(id, 0);
        return;
      case 'open': {
        const { res, direct } = await this.opened(req.flags, (f) => fs.open(c, req.node, f));
        if (s.replyOpen(id, this.openReply(res, direct)) !== 0) await this.quietly(fs.release(c, req.node, res.fh));
        return;
      }
      case 'create': {
        const { res, direct } = await this.opened(req.flags, (f) => fs.create(c, req.parent, req.name, req.mode, f));
        if (s.replyCreate(id, res.entry, this.t.entry, this.t.attr, this.openReply(res, direct)) !== 0) {
          // The kernel never saw it: no release or forget will come.
          await this.quietly(fs.release(c, res.entry.nodeId, res.fh));
          this.forget(res.entry.nodeId);
        }
        return;
      }
      case 'read':
        s.replyData(id, await fs.read(c, req.node, req.fh, req.offset, req.size));
        if (raced(req.node)) this.coherence!.revalidate(req.node);
        return;
      case 'write':
        s.replyWrite(id, await fs.write(c, req.node, req.fh, req.offset, req.data));
        return;
      case 'flush':
        await fs.flush(c, req.node, req.fh);
        s.replyErr(id, 0);
        return;
      case 'release':
        await fs.release(c, req.node, req.fh);
        s.replyErr(id, 0);
        return;
      case 'fsync':
        await fs.fsync(c, req.node, req.fh, req.datasync);
        s.replyErr(id, 0);
        return;
      case 'opendir': {
        if (this.lazyDirs) {
          const fh = await this.lazyDirs.open(c, req.node, req.flags);
          if (s.replyOpen(id, { fh, keepCache: true, cacheDir: true }) !== 0) await this.quietly(this.lazyDirs.drop(c, fh));
          return;
        }
        const res = await fs.opendir(c, req.node, req.flags);
        const reply = { fh: res.fh, keepCache: res.keepCache ?? false };
        if (s.replyOpen(id, reply) !== 0) await this.quietly(fs.releasedir(c, req.node, res.fh));
        return;
      }
      case 'readdir':
      case 'readdirplus': {
        const plus = req.op === 'readdirplus';
        const max = Math.max(1, Math.floor(req.size / (plus ? DIRENTPLUS_MIN : DIRENT_MIN)));
        const fh = this.lazyDirs?.has(req.fh) ? await this.lazyDirs.real(req.fh) : req.fh;
        const entries = await fs.readdir(c, req.node, fh, req.offset, max, plus);
        const stale = raced(req.node);
        const sent = s.replyDirents(id, entries, stale ? 0 : this.t.entry, stale ? 0 : this.t.attr);
        // Entries the kernel did not get carry lookup references nobody will forget: drop them.
        if (plus) this.forgetUnsent(entries, sent < 0 ? 0 : sent);
        if (stale) this.coherence!.revalidate(req.node);
        return;
      }
      case 'releasedir':
        if (this.lazyDirs?.has(req.fh)) await this.lazyDirs.release(c, req.fh);
        else await fs.releasedir(c, req.node, req.fh);
        s.replyErr(id, 0);
        return;
      case 'fsyncdir':
        await fs.fsyncdir(c, req.node, this.lazyDirs?.has(req.fh) ? await this.lazyDirs.real(req.fh) : req.fh, req.datasync);
        s.replyErr(id, 0);
        return;
      case 'statfs':
        s.replyStatfs(id, await fs.statfs(c, req.node));
        return;
      case 'setxattr':
        await fs.setxattr(c, req.node, req.name, req.value, req.flags);
        s.replyErr(id, 0);
        return;
      case 'getxattr':
        return this.xattr(id, req.size, await fs.getxattr(c, req.node, req.name, req.size));
      case 'listxattr':
        return this.xattr(id, req.size, await fs.listxattr(c, req.node, req.size));
      case 'removexattr':
        await fs.removexattr(c, req.node, req.name);
        s.replyErr(id, 0);
        return;
      case 'access':
        await fs.access(c, req.node, req.mask);
        s.replyErr(id, 0);
        return;
      case 'fallocate':
        await fs.fallocate(c, req.node, req.fh, req.mode, req.offset, req.length);
        s.replyErr(id, 0);
        return;
      case 'copyFileRange':
        s.replyWrite(
          id,
          await fs.copyFileRange(c, req.nodeIn, req.fhIn, req.offsetIn, req.nodeOut, req.fhOut, req.offsetOut, req.length, req.flags),
        );
        return;
      case 'lseek':
        if (this.opts.writeback) {
          // Recent writes may still sit in the kernel's page cache, unseen by the file system.
          // ENOSYS makes the kernel answer from its own view (data up to its size) from now on.
          s.replyErr(id, E.ENOSYS);
          return;
        }
        s.replyLseek(id, await fs.lseek(c, req.node, req.fh, req.offset, req.whence));
        return;
      default: {
        const unknown = req as { id: number };
        s.replyErr(unknown.id, E.ENOSYS);
      }
    }
  }

  private entry(id: number, entry: Entry, stale = false): void {
    // Not delivered (request interrupted): the kernel took no reference, so give it back.
    if (this.session.replyEntry(id, entry, stale ? 0 : this.t.entry, stale ? 0 : this.t.attr) !== 0) this.forget(entry.nodeId);
  }

  private xattr(id: number, size: number, res: Buffer | number): void {
    const len = typeof res === 'number' ? res : res.length;
    if (size === 0 || typeof res === 'number') {
      this.session.replyXattr(id, len);
    } else if (len > size) {
      this.session.replyErr(id, E.ERANGE);
    } else {
      this.session.replyData(id, res);
    }
  }

  private openReply(res: OpenResult, direct = false): { fh: number; keepCache: boolean; directIo: boolean } {
    // The mount's cache mode decides whether pages survive a reopen; a backend can only ask for
    // less caching (direct I/O), never more.
    const directIo = this.t.directIo || !!res.directIo || direct;
    return { fh: res.fh, keepCache: this.t.keepCache && !directIo, directIo };
  }

  /**
   * Opens with the flags the writeback cache needs: the kernel then reads pages of write-only files
   * (to fill partial pages) and does O_APPEND itself. A caller who may write but not read (mode
   * 0200, a shared log) gets EACCES for read-write: that handle is then opened as asked and
   * bypasses the page cache (`direct`), so the kernel never needs to read through it.
   */
  private async opened<T extends OpenResult>(flags: number, open: (flags: number) => Promise<T>): Promise<{ res: T; direct: boolean }> {
    if (!this.opts.writeback) return { res: await open(flags), direct: false };
    const writeOnly = (flags & O_ACCMODE) === osc.O_WRONLY;
    const wanted = (writeOnly ? (flags & ~O_ACCMODE) | osc.O_RDWR : flags) & ~osc.O_APPEND;
    try {
      return { res: await open(wanted), direct: false };
    } catch (err) {
      if (!writeOnly || toErrno(err) !== E.EACCES) throw err;
      return { res: await open(flags), direct: true };
    }
  }

  private forgetUnsent(entries: readonly DirEntry[], sent: number): void {
    const items: Array<{ nodeId: number; nlookup: number }> = [];
    for (let i = sent; i < entries.length; i++) {
      const e = entries[i].entry;
      if (e) items.push({ nodeId: e.nodeId, nlookup: 1 });
    }
    if (items.length > 0 && !this.exited) this.fs.forget(items);
  }

  private forget(nodeId: number): void {
    if (!this.exited) this.fs.forget([{ nodeId, nlookup: 1 }]);
  }

  private async quietly(p: Promise<unknown>): Promise<void> {
    try {
      await p;
    } catch (err) {
      this.log?.warn({ err }, 'cleanup after an undelivered reply failed');
    }
  }
}

function caller(req: RequestCaller): Caller {
  const c: Caller = { uid: req.uid, gid: req.gid, pid: req.pid };
  if (req.groups) c.groups = req.groups;
  if (req.umask !== undefined) c.umask = req.umask;
  return c;
}
