// POSIX backend: serves a directory on a host-mounted file system (NFS, CephFS, Lustre, ext4...)
// through the FileSystem interface, in the style of virtiofsd's passthrough backend.
//
// Confinement. Every node holds an O_PATH|O_NOFOLLOW fd; every operation is a syscall relative to
// such an fd with at most ONE validated name component (names.ts), or on the fd itself (via
// AT_EMPTY_PATH or the /proc/self/fd/N magic link, which resolves to the inode, not a path). The
// host never builds a multi-component path and never follows a symlink stored in the export, so a
// rename race on the storage side cannot lead it outside the export.
//
// Identity. Operations that create, or that the kernel permission-checks, run with the caller's
// fs credentials (setfsuid/setfsgid/setgroups on the native worker thread): what a guest user
// creates is owned by that user, and EACCES/EPERM are the kernel's verdicts. uid/gid squashing is
// the caller's job (map Caller before it reaches the backend).
//
// Storage that goes away. When the filesystem under the export is unmounted or replaced
// (storage/mount-watch.ts), storageGone() drops every fd into it and operations answer EIO;
// storageBack() opens the root again on the filesystem mounted now. Node ids and handles given out
// before answer ESTALE: they named files of the old filesystem.
//
// Errno choices:
//   unknown node id                      ESTALE  (the guest may re-lookup, e.g. after a restart)
//   unknown/released fh, or fh of another node, or a dir handle used as a file (or vice versa)
//                                        EBADF
//   bad names                            EINVAL / ENAMETOOLONG (names.ts)
//   read-only export, any mutation       EROFS   (also open for write or O_TRUNC, access W_OK)
//   too many open handles                EMFILE;  too many known nodes  ENFILE
//   open of a symlink                    ELOOP;   of a directory for writing  EISDIR
//   open of a device, FIFO or socket     ENXIO   (the guest kernel serves those itself; the host
//                                                 must never open a device node or block on a FIFO)
//   chmod of a symlink                   EOPNOTSUPP
//   read/write larger than maxIoSize     EINVAL
import type { Logger } from 'pino';

import type {
  Attr, Caller, CreateResult, DirEntry, Entry, FileSystem, OpenResult, SetAttr, StatFs, Timespec,
} from '../../shared/fs/interface.js';
import { ROOT_ID } from '../../shared/fs/interface.js';
import { E, FsError } from '../../shared/fs/errors.js';
import * as sys from '../../native/sys.js';
import { C, type Creds, type Stat } from '../../native/sys.js';
import { checkLinkTarget, checkName, checkXattrName, XATTR_SIZE_MAX } from './names.js';
import { NodeTable, type Node } from './node-table.js';
import { HandleTable, type Handle, type HandleKind } from './handle-table.js';

export interface PosixBackendOptions {
  readOnly?: boolean;
  logger?: Logger;
  /** Open handles (files + directories) at once; beyond: EMFILE. Default 65536. */
  maxHandles?: number;
  /** Nodes the kernel may know at once (each holds an fd); beyond: ENFILE. Default 1,048,576. */
  maxNodes?: number;
  /** Largest read or write, in bytes; beyond: EINVAL. Default 16 MiB. */
  maxIoSize?: number;
}

const { S_IFMT, S_IFREG, S_IFDIR, S_IFLNK } = C;
const W_OK = 2;
const S_ISUID = 0o4000, S_ISGID = 0o2000;
const RENAME_FLAGS = C.RENAME_NOREPLACE | C.RENAME_EXCHANGE | C.RENAME_WHITEOUT;
const XATTR_FLAGS = C.XATTR_CREATE | C.XATTR_REPLACE;
// Flags a guest open may carry through to the host open. Everything else is dropped: O_CREAT /
// O_EXCL (create() handles those), O_NOFOLLOW (always implied), O_NOCTTY, O_NOATIME (needs
// ownership), O_PATH, O_TMPFILE, O_LARGEFILE, O_NONBLOCK (regular files only anyway), and O_DIRECT:
// the guest kernel already bypasses its own page cache for it, our buffers are not aligned as the
// host's O_DIRECT requires (EINVAL), and some storage refuses it outright (as virtiofsd drops it).
const OPEN_FLAGS = C.O_ACCMODE | C.O_APPEND | C.O_TRUNC | C.O_SYNC | C.O_DSYNC;
// copy_file_range may return short; bound one call so it cannot hold a worker thread for long.
const MAX_COPY = 1 << 30;
const MAX_DIR_BATCH = 65536;

function creds(caller: Caller): Creds {
  return { uid: caller.uid, gid: caller.gid, groups: caller.groups ?? [] };
}

/** A host stat as the interface's attributes (also what coherence pushes). */
export function statToAttr(st: Stat): Attr {
  return {
    ino: Number(st.ino),
    mode: st.mode,
    nlink: st.nlink,
    uid: st.uid,
    gid: st.gid,
    rdev: st.rdev,
    size: st.size,
    blocks: st.blocks,
    blksize: st.blksize,
    atime: { sec: st.atimeSec, nsec: st.atimeNsec },
    mtime: { sec: st.mtimeSec, nsec: st.mtimeNsec },
    ctime: { sec: st.ctimeSec, nsec: st.ctimeNsec },
  };
}

function errnoOf(err: unknown): number | undefined {
  const e = err as { errno?: unknown };
  return typeof e?.errno === 'number' ? Math.abs(e.errno) : undefined;
}

function checkOffset(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new FsError(E.EINVAL, `bad ${what}`);
}

/** Why a node cannot be opened as a file; undefined when it can. */
function openRefusal(type: number, accmode: number): FsError | undefined {
  if (type === S_IFREG) return undefined;
  if (type === S_IFDIR) return accmode === C.O_RDONLY ? undefined : new FsError(E.EISDIR);
  if (type === S_IFLNK) return new FsError(E.ELOOP);
  return new FsError(E.ENXIO, 'special files are not opened on the host');
}

export class PosixBackend implements FileSystem {
  readonly rootDir: string;
  readonly readOnly: boolean;
  private readonly log?: Logger;
  private readonly maxIoSize: number;
  private readonly nodes: NodeTable;
  private readonly handles: HandleTable;
  private readonly closing = new Set<Promise<void>>();
  private opened = false;
  private destroyed = false;
  /** Why the storage is not there (every operation answers EIO), between storageGone and storageBack. */
  private unavailable?: string;
  /** Counts storageGone() calls, so a storageBack() overtaken by another loss does not revive the view. */
  private losses = 0;
  private onReplaced?: () => void;

  /** Opens the export root and returns a ready backend. */
  static async create(rootDir: string, options: PosixBackendOptions = {}): Promise<PosixBackend> {
    const fs = new PosixBackend(rootDir, options);
    await fs.init();
    return fs;
  }

  constructor(rootDir: string, options: PosixBackendOptions = {}) {
    this.rootDir = rootDir;
    this.readOnly = options.readOnly ?? false;
    this.log = options.logger;
    this.maxIoSize = options.maxIoSize ?? 16 * 1024 * 1024;
    const closeFd = (fd: number): void => this.closeFd(fd);
    this.nodes = new NodeTable(options.maxNodes ?? 1 << 20, closeFd);
    this.handles = new HandleTable(options.maxHandles ?? 65536, closeFd);
  }

  /**
   * Opens the root directory (node 1); `create()` calls it. (Not named `open`: that is the
   * interface's file open.) The root path itself is trusted configuration.
   */
  async init(): Promise<void> {
    if (this.opened) return;
    const fd = await sys.openat(C.AT_FDCWD, this.rootDir, C.O_PATH | C.O_DIRECTORY);
    try {
      this.nodes.setRoot(fd, await sys.fstatat(fd));
    } catch (err) {
      this.closeFd(fd);
      throw err;
    }
    this.opened = true;
  }

  get closed(): boolean {
    return this.destroyed;
  }

  /** The filesystem under the export went away: drop every fd into it, answer EIO with `reason`. */
  storageGone(reason: string): void {
    this.unavailable = reason;
    this.losses++;
    if (this.destroyed) return;
    this.handles.expireAll();
    this.nodes.clear();
  }

  /** Opens the root again on the filesystem mounted now; earlier node ids and handles stay ESTALE. */
  async storageBack(): Promise<void> {
    if (this.destroyed || this.unavailable === undefined) return;
    const losses = this.losses;
    const fd = await sys.openat(C.AT_FDCWD, this.rootDir, C.O_PATH | C.O_DIRECTORY);
    let stat: Stat;
    try {
      stat = await sys.fstatat(fd);
    } catch (err) {
      this.closeFd(fd);
      throw err;
    }
    if (this.destroyed || this.losses !== losses) {
      this.closeFd(fd);
      return;
    }
    this.nodes.setRoot(fd, stat);
    this.unavailable = undefined;
    this.onReplaced?.();
  }

  /** Tells `listener` when storageBack() has opened the export on another filesystem (coherence). */
  onStorageReplaced(listener: () => void): void {
    this.onReplaced = listener;
  }

  /** Known nodes and open handles, for status and tests. */
  stats(): { nodes: number; handles: number } {
    return { nodes: this.nodes.size, handles: this.handles.size };
  }

  // ---- identity lookups (host-agent/coherence/identity.ts: NodeIdentity) ---------------------------

  /** "dev:ino" of a node this view knows. */
  keyOf(nodeId: number): string | undefined {
    return this.nodes.keyOfId(nodeId);
  }

  /** This view's node id for inode "dev:ino", if it knows it. */
  nodeOf(key: string): number | undefined {
    return this.nodes.idOfKey(key);
  }

  /** lstat of `name` in directory node `dir`, with the agent's credentials; null if there is none. */
  async statChild(dir: number, name: Buffer): Promise<Stat | null> {
    return this.withNode(dir, (p) => sys.fstatat(p.fd, name, C.AT_SYMLINK_NOFOLLOW)).catch((err: unknown) => {
      const errno = errnoOf(err);
      if (errno === E.ENOENT || errno === E.ENOTDIR) return null;
      throw err;
    });
  }

  async statNode(nodeId: number): Promise<Stat> {
    return this.withNode(nodeId, (n) => sys.fstatat(n.fd));
  }

  /** Runs `fn` with the node's O_PATH fd, open for the duration of the (synchronous) call. */
  withNodeFd<T>(nodeId: number, fn: (fd: number) => T): T | undefined {
    let n: Node;
    try {
      n = this.nodes.pin(nodeId);
    } catch {
      return undefined;
    }
    try {
      return fn(n.fd);
    } finally {
      this.nodes.unpin(n);
    }
  }

  /** Tells `listener` the key of every node this view forgets. */
  onNodeDropped(listener: (key: string) => void): void {
    this.nodes.onRemove = listener;
  }

  // ---- nodes and entries ------------------------------------------------------------------------

  async lookup(caller: Caller, parent: number, name: Buffer): Promise<Entry> {
    checkName(name);
    return this.withNode(parent, (p) => this.lookupIn(p, name, creds(caller)));
  }

  forget(items: ReadonlyArray<{ nodeId: number; nlookup: number }>): void {
    for (const { nodeId, nlookup } of items) this.nodes.forget(nodeId, nlookup);
  }

  async getattr(caller: Caller, node: number, fh?: number): Promise<Attr> {
    return this.withNode(node, async (n) => {
      if (fh !== undefined) this.checkHandle(fh, node);
      return statToAttr(await sys.fstatat(n.fd));
    });
  }

  async setattr(caller: Caller, node: number, set: SetAttr, fh?: number): Promise<Attr> {
    if (Object.values(set).some((v) => v !== undefined)) this.checkWritable();
    return this.withNode(node, async (n) => {
      const cr = creds(caller);
      // Ownership first: chown by a non-root user clears set-id bits, so a mode given in the same
      // call is applied afterwards and sticks.
      if (set.uid !== undefined || set.gid !== undefined) {
        await sys.fchownfd(n.fd, set.uid ?? -1, set.gid ?? -1, cr);
      }
      if (set.mode !== undefined) {
        if (n.type === S_IFLNK) throw new FsError(E.EOPNOTSUPP, 'chmod of a symlink');
        await this.chmod(n, set.mode & 0o7777, cr);
      }
      if (set.size !== undefined) {
        checkOffset(set.size, 'size');
        if (fh !== undefined) {
          await this.withHandle(node, fh, 'file', (h) => sys.ftruncate(h.fd, set.size!, cr));
        } else {
          await this.truncateNode(n, set.size, cr);
        }
      }
      if (set.atime !== undefined || set.mtime !== undefined) await this.setTimes(n, set, fh, cr);
      return statToAttr(await sys.fstatat(n.fd));
    });
  }

  async readlink(caller: Caller, node: number): Promise<Buffer> {
    return this.withNode(node, async (n) => {
      if (n.type !== S_IFLNK) throw new FsError(E.EINVAL, 'not a symlink');
      return sys.readlinkat(n.fd, '');
    });
  }

  async mknod(caller: Caller, parent: number, name: Buffer, mode: number, rdev: number): Promise<Entry> {
    this.checkWritable();
    checkName(name);
    return this.withNode(parent, async (p) => {
      const cr = creds(caller);
      // The kernel decides: device nodes need CAP_MKNOD, which only a root caller keeps.
      await sys.mknodat(p.fd, name, mode, rdev, cr);
      return this.lookupIn(p, name, cr);
    });
  }

  async mkdir(caller: Caller, parent: number, name: Buffer, mode: number): Promise<Entry> {
    this.checkWritable();
    checkName(name);
    return this.withNode(parent, async (p) => {
      const cr = creds(caller);
      await sys.mkdirat(p.fd, name, mode & 0o7777, cr);
      return this.lookupIn(p, name, cr);
    });
  }

  async unlink(caller: Caller, parent: number, name: Buffer): Promise<void> {
    this.checkWritable();
    checkName(name);
    return this.withNode(parent, (p) => sys.unlinkat(p.fd, name, 0, creds(caller)));
  }

  async rmdir(caller: Caller, parent: number, name: Buffer): Promise<void> {
    this.checkWritable();
    checkName(name);
    return this.withNode(parent, (p) => sys.unlinkat(p.fd, name, C.AT_REMOVEDIR, creds(caller)));
  }

  async symlink(caller: Caller, parent: number, name: Buffer, target: Buffer): Promise<Entry> {
    this.checkWritable();
    checkName(name);
    checkLinkTarget(target);
    return this.withNode(parent, async (p) => {
      const cr = creds(caller);
      await sys.symlinkat(target, p.fd, name, cr);
      return this.lookupIn(p, name, cr);
    });
  }

  async rename(caller: Caller, parent: number, name: Buffer, newParent: number, newName: Buffer, flags: number): Promise<void> {
    this.checkWritable();
    checkName(name);
    checkName(newName);
    if (flags & ~RENAME_FLAGS) throw new FsError(E.EINVAL, 'unknown rename flags');
    return this.withNode(parent, (p) =>
      this.withNode(newParent, (np) => sys.renameat2(p.fd, name, np.fd, newName, flags, creds(caller))));
  }

  async link(caller: Caller, node: number, newParent: number, newName: Buffer): Promise<Entry> {
    this.checkWritable();
    checkName(newName);
    return this.withNode(node, (n) =>
      this.withNode(newParent, async (np) => {
        if (n.type === S_IFDIR) throw new FsError(E.EPERM, 'hard link to a directory');
        const cr = creds(caller);
        await sys.linkfd(n.fd, np.fd, newName, cr);
        return this.lookupIn(np, newName, cr);
      }));
  }

  // ---- files ----------------------------------------------------------------------------------

  async open(caller: Caller, node: number, flags: number): Promise<OpenResult> {
    return this.withNode(node, async (n) => {
      const oflags = this.openFlags(flags);
      const refusal = openRefusal(n.type, oflags & C.O_ACCMODE);
      if (refusal) throw refusal;
      this.handles.checkRoom();
      const fd = await sys.reopen(n.fd, n.type === S_IFDIR ? oflags | C.O_DIRECTORY : oflags, creds(caller));
      return { fh: this.addHandle(n.id, fd, 'file').fh };
    });
  }

  async create(caller: Caller, parent: number, name: Buffer, mode: number, flags: number): Promise<CreateResult> {
    this.checkWritable();
    checkName(name);
    const oflags = this.openFlags(flags);
    return this.withNode(parent, async (p) => {
      this.handles.checkRoom();
      return this.finishCreate(await this.createOrOpen(p, name, mode & 0o7777, oflags, (flags & C.O_EXCL) !== 0, creds(caller)));
    });
  }

  async read(caller: Caller, node: number, fh: number, offset: number, size: number): Promise<Buffer> {
    checkOffset(offset, 'offset');
    if (!Number.isSafeInteger(size) || size < 0 || size > this.maxIoSize) throw new FsError(E.EINVAL, 'bad read size');
    return this.withHandle(node, fh, 'file', (h) => sys.pread(h.fd, size, offset));
  }

  async write(caller: Caller, node: number, fh: number, offset: number, data: Buffer): Promise<number> {
    this.checkWritable();
    checkOffset(offset, 'offset');
    if (data.length > this.maxIoSize) throw new FsError(E.EINVAL, 'write too large');
    // With the caller's credentials: a non-root writer clears set-user-ID bits, as on a local fs.
    return this.withHandle(node, fh, 'file', (h) => sys.pwrite(h.fd, data, offset, creds(caller)));
  }

  async flush(caller: Caller, node: number, fh: number): Promise<void> {
    return this.withHandle(node, fh, 'file', (h) => sys.flush(h.fd));
  }

  async fsync(caller: Caller, node: number, fh: number, datasync: boolean): Promise<void> {
    return this.withHandle(node, fh, 'file', (h) => sys.fsync(h.fd, datasync));
  }

  async release(caller: Caller, node: number, fh: number): Promise<void> {
    this.handles.release(fh, node, 'file');
  }

  async fallocate(caller: Caller, node: number, fh: number, mode: number, offset: number, length: number): Promise<void> {
    this.checkWritable();
    checkOffset(offset, 'offset');
    checkOffset(length, 'length');
    return this.withHandle(node, fh, 'file', (h) => sys.fallocate(h.fd, mode, offset, length, creds(caller)));
  }

  async copyFileRange(
    caller: Caller,
    nodeIn: number, fhIn: number, offsetIn: number,
    nodeOut: number, fhOut: number, offsetOut: number,
    length: number, flags: number,
  ): Promise<number> {
    this.checkWritable();
    checkOffset(offsetIn, 'offset');
    checkOffset(offsetOut, 'offset');
    checkOffset(length, 'length');
    return this.withHandle(nodeIn, fhIn, 'file', (hIn) =>
      this.withHandle(nodeOut, fhOut, 'file', (hOut) =>
        sys.copyFileRange(hIn.fd, offsetIn, hOut.fd, offsetOut, Math.min(length, MAX_COPY), flags, creds(caller))));
  }

  async lseek(caller: Caller, node: number, fh: number, offset: number, whence: number): Promise<number> {
    if (!Number.isSafeInteger(offset)) throw new FsError(E.EINVAL, 'bad offset');
    return this.withHandle(node, fh, 'file', (h) => sys.lseek(h.fd, offset, whence));
  }

  // ---- directories ----------------------------------------------------------------------------

  async opendir(caller: Caller, node: number, flags: number): Promise<OpenResult> {
    return this.withNode(node, async (n) => {
      if (n.type !== S_IFDIR) throw new FsError(E.ENOTDIR);
      this.handles.checkRoom();
      const fd = await sys.reopen(n.fd, C.O_RDONLY | C.O_DIRECTORY, creds(caller));
      return { fh: this.addHandle(n.id, fd, 'dir').fh };
    });
  }

  async readdir(caller: Caller, node: number, fh: number, offset: number, maxEntries: number, plus: boolean): Promise<DirEntry[]> {
    if (!Number.isSafeInteger(maxEntries) || maxEntries <= 0) throw new FsError(E.EINVAL, 'bad maxEntries');
    return this.withNode(node, (n) => this.withHandle(node, fh, 'dir', async (h) => {
      const dir = h.dir!;
      const start = dir.real(offset);
      // getdents seeks the shared fd: one call per handle at a time.
      const raw = await dir.serialize(() => sys.getdents(h.fd, start, Math.min(maxEntries, MAX_DIR_BATCH)));
      const out: DirEntry[] = raw.map((d) => ({ name: d.name, ino: Number(d.ino), type: d.type, nextOffset: dir.cookie(d.off) }));
      if (!plus) return out;
      // readdirplus: every entry but "." and ".." is a lookup (and counts as one).
      const cr = creds(caller);
      const looked = await Promise.all(out.map(async (d) => {
        if (isDotOrDotDot(d.name)) return d;
        try {
          return { ...d, entry: await this.lookupIn(n, d.name, cr) };
        } catch (err) {
          // Gone since getdents: leave it out. Other failures: list it without attributes.
          return errnoOf(err) === E.ENOENT ? undefined : d;
        }
      }));
      return looked.filter((d): d is DirEntry => d !== undefined);
    }));
  }

  async fsyncdir(caller: Caller, node: number, fh: number, datasync: boolean): Promise<void> {
    return this.withHandle(node, fh, 'dir', (h) => sys.fsync(h.fd, datasync));
  }

  async releasedir(caller: Caller, node: number, fh: number): Promise<void> {
    this.handles.release(fh, node, 'dir');
  }

  // ---- file system, xattrs, access ------------------------------------------------------------

  async statfs(caller: Caller, node: number): Promise<StatFs> {
    return this.withNode(node, async (n) => {
      const s = await sys.fstatfs(n.fd);
      return {
        bsize: s.bsize, frsize: s.frsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail,
        files: s.files, ffree: s.ffree, namemax: s.namemax,
      };
    });
  }

  async setxattr(caller: Caller, node: number, name: Buffer, value: Buffer, flags: number): Promise<void> {
    this.checkWritable();
    checkXattrName(name);
    if (value.length > XATTR_SIZE_MAX) throw new FsError(E.E2BIG);
    if (flags & ~XATTR_FLAGS) throw new FsError(E.EINVAL, 'unknown setxattr flags');
    return this.withNode(node, (n) => sys.setxattr(n.fd, name, value, flags, creds(caller)));
  }

  async getxattr(caller: Caller, node: number, name: Buffer, size: number): Promise<Buffer | number> {
    checkXattrName(name);
    checkOffset(size, 'size');
    return this.withNode(node, (n) => sys.getxattr(n.fd, name, Math.min(size, XATTR_SIZE_MAX), creds(caller)));
  }

  async listxattr(caller: Caller, node: number, size: number): Promise<Buffer | number> {
    checkOffset(size, 'size');
    return this.withNode(node, (n) => sys.listxattr(n.fd, Math.min(size, XATTR_SIZE_MAX), creds(caller)));
  }

  async removexattr(caller: Caller, node: number, name: Buffer): Promise<void> {
    this.checkWritable();
    checkXattrName(name);
    return this.withNode(node, (n) => sys.removexattr(n.fd, name, creds(caller)));
  }

  async access(caller: Caller, node: number, mask: number): Promise<void> {
    if (this.readOnly && mask & W_OK) throw new FsError(E.EROFS);
    return this.withNode(node, (n) => sys.faccess(n.fd, mask, creds(caller)));
  }

  async destroy(): Promise<void> {
    this.destroyed = true;
    this.handles.clear();
    this.nodes.clear();
    // Fds still pinned by in-flight calls close when those end; wait for the closes started now.
    while (this.closing.size > 0) await Promise.all([...this.closing]);
  }

  // ---- helpers --------------------------------------------------------------------------------

  /** Looks up one validated name under a pinned directory node and references the result. */
  private async lookupIn(parent: Node, name: Buffer, cr: Creds): Promise<Entry> {
    const { fd, stat } = await sys.lookupat(parent.fd, name, cr);
    return this.entryFor(fd, stat);
  }

  /** Takes ownership of an O_PATH fd: one more reference on its node. */
  private entryFor(fd: number, stat: Stat): Entry {
    if (this.destroyed) {
      this.closeFd(fd);
      throw new FsError(E.ESTALE, 'backend destroyed');
    }
    const node = this.nodes.insertOrRef(fd, stat);
    return { nodeId: node.id, generation: 0, attr: statToAttr(stat) };
  }

  /**
   * The real fd, an O_PATH fd and (when it was just created) the stat of a file created as `name`
   * under `p` with O_EXCL, or, when the guest did not ask for O_EXCL, of the regular file already
   * there. O_CREAT is never given a chance to open an existing FIFO or device (it would block, or
   * open the device on the host).
   */
  private async createOrOpen(p: Node, name: Buffer, mode: number, oflags: number, excl: boolean, cr: Creds): Promise<{ fd: number; pathFd: number; stat?: Stat }> {
    for (let attempt = 0; ; attempt++) {
      try {
        // One trip: create, an O_PATH fd of exactly that inode (not a second lookup), its stat.
        return await sys.createat(p.fd, name, oflags, mode, cr);
      } catch (err) {
        if (errnoOf(err) !== E.EEXIST || excl) throw err;
      }
      let found: { fd: number; stat: Stat };
      try {
        found = await sys.lookupat(p.fd, name, cr);
      } catch (e) {
        // Removed between the two calls: try creating again (a few times at most).
        if (errnoOf(e) === E.ENOENT && attempt < 3) continue;
        throw e;
      }
      try {
        const refusal = openRefusal(found.stat.mode & S_IFMT, C.O_WRONLY);
        if (refusal) throw refusal;
        // Its stat is taken again after the open (O_TRUNC changes the size).
        return { fd: await sys.reopen(found.fd, oflags, cr), pathFd: found.fd };
      } catch (e) {
        this.closeFd(found.fd);
        throw e;
      }
    }
  }

  private async finishCreate({ fd, pathFd, stat }: { fd: number; pathFd: number; stat?: Stat }): Promise<CreateResult> {
    let entry: Entry;
    try {
      entry = this.entryFor(pathFd, stat ?? (await sys.fstatat(pathFd)));
    } catch (err) {
      this.closeFd(fd);
      throw err;
    }
    return { fh: this.addHandle(entry.nodeId, fd, 'file').fh, entry };
  }

  private addHandle(nodeId: number, fd: number, kind: HandleKind): Handle {
    if (this.destroyed) {
      this.closeFd(fd);
      throw new FsError(E.EBADF, 'backend destroyed');
    }
    return this.handles.add(nodeId, fd, kind);
  }

  /** Flags for a host open: the allowed subset, EINVAL for a bad access mode, EROFS for writing. */
  private openFlags(flags: number): number {
    const accmode = flags & C.O_ACCMODE;
    if (accmode === C.O_ACCMODE) throw new FsError(E.EINVAL, 'bad access mode');
    if (this.readOnly && (accmode !== C.O_RDONLY || flags & C.O_TRUNC)) throw new FsError(E.EROFS);
    return flags & OPEN_FLAGS;
  }

  /**
   * utimensat as the caller. With the writeback cache the guest kernel keeps mtime itself and sends
   * it as an explicit time, which only an owner may set, where the user did something any writer
   * may do: utime(NULL) (atime "now" comes along), a truncate, or a close or fsync of an open file
   * (with its handle). Those get what a local file system would do for that writer.
   */
  private async setTimes(n: Node, set: SetAttr, fh: number | undefined, cr: Creds): Promise<void> {
    const [as, an] = utime(set.atime);
    const [ms, mn] = utime(set.mtime);
    try {
      await sys.utimensfd(n.fd, as, an, ms, mn, cr);
    } catch (err) {
      if (errnoOf(err) !== E.EPERM) throw err;
      if (set.atime === 'now' && set.mtime !== undefined) {
        await sys.utimensfd(n.fd, 0, C.UTIME_NOW, 0, C.UTIME_NOW, cr); // what the user asked for
      } else if (set.size !== undefined || (fh !== undefined && (await this.mayWrite(n, cr)))) {
        await sys.utimensfd(n.fd, as, an, ms, mn); // as the agent: the time of that writer's write
      } else {
        throw err;
      }
    }
  }

  /**
   * chmod as the caller, except that whoever may write a regular file may also drop its set-ID
   * bits. The guest kernel asks for exactly that, as the writing user, before a write or truncate
   * by an unprivileged process (libfuse 3.14 cannot negotiate FUSE_HANDLE_KILLPRIV_V2, which would
   * leave it to us): a local file system drops them as part of that write, so must we.
   */
  private async chmod(n: Node, mode: number, cr: Creds): Promise<void> {
    try {
      await sys.fchmodfd(n.fd, mode, cr);
    } catch (err) {
      if (errnoOf(err) !== E.EPERM || !(await this.onlyDropsSetId(n, mode, cr))) throw err;
      await sys.fchmodfd(n.fd, mode); // as the agent: the kernel would have done it for this writer
    }
  }

  /** Whether `mode` is the file's mode minus set-ID bits, and `cr` may write the file. */
  private async onlyDropsSetId(n: Node, mode: number, cr: Creds): Promise<boolean> {
    if (n.type !== S_IFREG) return false;
    const cur = (await sys.fstatat(n.fd)).mode & 0o7777;
    const dropped = cur & ~mode;
    // Which of them a write drops (the guest kernel knows the writer's groups) is its call.
    if (mode & ~cur || dropped === 0 || dropped & ~(S_ISUID | S_ISGID)) return false;
    return this.mayWrite(n, cr);
  }

  private async mayWrite(n: Node, cr: Creds): Promise<boolean> {
    try {
      await sys.faccess(n.fd, W_OK, cr);
      return true;
    } catch {
      return false;
    }
  }

  private async truncateNode(n: Node, size: number, cr: Creds): Promise<void> {
    if (n.type === S_IFDIR) throw new FsError(E.EISDIR);
    if (n.type !== S_IFREG) throw new FsError(E.EINVAL, 'truncate of a special file');
    const fd = await sys.reopen(n.fd, C.O_WRONLY, cr);
    try {
      await sys.ftruncate(fd, size, cr);
    } finally {
      await sys.close(fd).catch(() => undefined);
    }
  }

  private checkWritable(): void {
    if (this.readOnly) throw new FsError(E.EROFS);
  }

  private checkHandle(fh: number, node: number): void {
    // getattr accepts either kind of handle; it only has to exist and belong to the node.
    try {
      this.handles.unpin(this.handles.pin(fh, node, 'file'));
    } catch {
      this.handles.unpin(this.handles.pin(fh, node, 'dir'));
    }
  }

  private async withNode<T>(id: number, fn: (n: Node) => Promise<T>): Promise<T> {
    if (!this.opened) throw new FsError(E.EIO, 'backend not opened');
    if (this.unavailable !== undefined) throw new FsError(E.EIO, this.unavailable);
    const n = this.nodes.pin(id);
    try {
      return await fn(n);
    } catch (err) {
      throw this.asFsError(err);
    } finally {
      this.nodes.unpin(n);
    }
  }

  private async withHandle<T>(node: number, fh: number, kind: HandleKind, fn: (h: Handle) => Promise<T>): Promise<T> {
    if (this.unavailable !== undefined) throw new FsError(E.EIO, this.unavailable);
    const h = this.handles.pin(fh, node, kind);
    try {
      return await fn(h);
    } catch (err) {
      throw this.asFsError(err);
    } finally {
      this.handles.unpin(h);
    }
  }

  private asFsError(err: unknown): FsError {
    if (err instanceof FsError) return err;
    const errno = errnoOf(err);
    if (errno !== undefined && errno > 0) return new FsError(errno, (err as Error).message);
    this.log?.error({ err }, 'posix backend: unexpected error');
    return new FsError(E.EIO, String(err));
  }

  private closeFd(fd: number): void {
    const p: Promise<void> = sys.close(fd).then(
      () => undefined,
      (err: unknown) => { this.log?.warn({ err, fd }, 'posix backend: close failed'); },
    ).finally(() => this.closing.delete(p));
    this.closing.add(p);
  }
}

function utime(t: Timespec | 'now' | undefined): [number, number] {
  if (t === undefined) return [0, C.UTIME_OMIT];
  if (t === 'now') return [0, C.UTIME_NOW];
  if (!Number.isSafeInteger(t.sec) || !Number.isInteger(t.nsec) || t.nsec < 0 || t.nsec > 999_999_999) {
    throw new FsError(E.EINVAL, 'bad timespec');
  }
  return [t.sec, t.nsec];
}

function isDotOrDotDot(name: Buffer): boolean {
  return name[0] === 0x2e && (name.length === 1 || (name.length === 2 && name[1] === 0x2e));
}
