// A small in-memory FileSystem for tests: POSIX-ish semantics, no permission checks (the kernel's
// default_permissions does those), errors as FsError. Not tuned for size or speed.
import { constants as osc } from 'node:fs';
import {
  RENAME_EXCHANGE, RENAME_NOREPLACE, ROOT_ID,
  type Attr, type Caller, type CreateResult, type DirEntry, type Entry, type FileSystem,
  type OpenResult, type SetAttr, type StatFs, type Timespec,
} from '../../shared/fs/interface.js';
import { E, FsError } from '../../shared/fs/errors.js';

const O_ACCMODE = 3; // not among Node's fs constants

const S_IFMT = 0o170000, S_IFDIR = 0o040000, S_IFREG = 0o100000, S_IFLNK = 0o120000;

interface Node {
  id: number;
  mode: number;
  uid: number;
  gid: number;
  rdev: number;
  nlink: number;
  atime: Timespec;
  mtime: Timespec;
  ctime: Timespec;
  data: Buffer; // file contents (capacity may exceed size)
  size: number;
  target?: Buffer; // symlink
  children?: Map<string, { id: number; cookie: number }>; // dir: latin1 name -> child
  nextCookie: number;
  parent: number;
  xattrs: Map<string, Buffer>;
  lookups: number;
}

function now(): Timespec {
  const ms = Date.now();
  return { sec: Math.floor(ms / 1000), nsec: (ms % 1000) * 1e6 };
}

const fail = (errno: number): never => {
  throw new FsError(errno);
};

export class MemFs implements FileSystem {
  readonly nodes = new Map<number, Node>();
  private nextId = ROOT_ID;
  private nextFh = 1;
  private readonly handles = new Map<number, { node: number; flags: number }>();
  /** Every call, by name, for tests that want to see what the adapter sent. */
  readonly calls: string[] = [];
  destroyed = false;

  constructor() {
    const root = this.newNode(S_IFDIR | 0o755, { uid: 0, gid: 0, pid: 0 });
    root.parent = root.id;
    root.nlink = 2;
  }

  private newNode(mode: number, c: Caller): Node {
    const t = now();
    const n: Node = {
      id: this.nextId++, mode, uid: c.uid, gid: c.gid, rdev: 0, nlink: 1,
      atime: t, mtime: t, ctime: t, data: Buffer.alloc(0), size: 0,
      nextCookie: 3, parent: 0, xattrs: new Map(), lookups: 0,
    };
    if ((mode & S_IFMT) === S_IFDIR) {
      n.children = new Map();
      n.nlink = 2;
    }
    this.nodes.set(n.id, n);
    return n;
  }

  private node(id: number): Node {
    return this.nodes.get(id) ?? fail(E.ENOENT);
  }

  private dir(id: number): Node & { children: Map<string, { id: number; cookie: number }> } {
    const n = this.node(id);
    if (!n.children) fail(E.ENOTDIR);
    return n as Node & { children: Map<string, { id: number; cookie: number }> };
  }

  private attr(n: Node): Attr {
    return {
      ino: n.id, mode: n.mode, nlink: n.nlink, uid: n.uid, gid: n.gid, rdev: n.rdev,
      size: n.children ? 4096 : n.target ? n.target.length : n.size,
      blocks: Math.ceil(n.size / 512), blksize: 4096,
      atime: n.atime, mtime: n.mtime, ctime: n.ctime,
    };
  }

  private entryOf(n: Node): Entry {
    n.lookups++;
    return { nodeId: n.id, generation: 0, attr: this.attr(n) };
  }

  private addName(parent: Node, name: Buffer, child: Node): void {
    if (name.length > 255) fail(E.ENAMETOOLONG);
    parent.children!.set(name.toString('latin1'), { id: child.id, cookie: parent.nextCookie++ });
    if (child.children) {
      child.parent = parent.id;
      parent.nlink++;
    }
    parent.mtime = parent.ctime = now();
  }

  private unlinkName(parent: Node, key: string): void {
    const child = this.node(parent.children!.get(key)!.id);
    parent.children!.delete(key);
    child.nlink -= child.children ? 2 : 1;
    if (child.children) parent.nlink--;
    child.ctime = parent.mtime = parent.ctime = now();
    this.maybeDrop(child);
  }

  private maybeDrop(n: Node): void {
    if (n.nlink > 0 || n.lookups > 0) return;
    for (const h of this.handles.values()) if (h.node === n.id) return;
    this.nodes.delete(n.id);
  }

  private create1(parent: number, name: Buffer, mode: number, c: Caller): Node {
    const p = this.dir(parent);
    if (p.children.has(name.toString('latin1'))) fail(E.EEXIST);
    const n = this.newNode(mode, c);
    this.addName(p, name, n);
    return n;
  }

  private resize(n: Node, size: number): void {
    if (size > n.data.length) {
      const grown = Buffer.alloc(Math.max(size, n.data.length * 2));
      n.data.copy(grown, 0, 0, n.size);
      n.data = grown;
    } else if (size < n.size) {
      n.data.fill(0, size, n.size);
    }
    n.size = size;
  }

  private handle(fh: number): { node: number; flags: number } {
    return this.handles.get(fh) ?? fail(E.EBADF);
  }

  // ---- test helpers: look and change things behind the kernel's back (no lookup counts) ----

  /** Node id of `name` in directory `parent`, or undefined. */
  idOf(parent: number, name: string): number | undefined {
    return this.nodes.get(parent)?.children?.get(Buffer.from(name).toString('latin1'))?.id;
  }

  /** Replaces a file's contents; with keepTimes, the kernel cannot tell from the attributes. */
  setContent(id: number, data: Buffer, keepTimes = false): void {
    const n = this.node(id);
    n.data = Buffer.from(data);
    n.size = data.length;
    if (!keepTimes) n.mtime = n.ctime = now();
  }

  // ---- FileSystem ----

  async lookup(c: Caller, parent: number, name: Buffer): Promise<Entry> {
    this.calls.push('lookup');
    const p = this.dir(parent);
    const e = p.children.get(name.toString('latin1')) ?? fail(E.ENOENT);
    return this.entryOf(this.node(e.id));
  }

  forget(items: ReadonlyArray<{ nodeId: number; nlookup: number }>): void {
    this.calls.push('forget');
    for (const { nodeId, nlookup } of items) {
      const n = this.nodes.get(nodeId);
      if (!n) continue;
      n.lookups = Math.max(0, n.lookups - nlookup);
      this.maybeDrop(n);
    }
  }

  async getattr(c: Caller, node: number): Promise<Attr> {
    this.calls.push('getattr');
    return this.attr(this.node(node));
  }

  async setattr(c: Caller, node: number, set: SetAttr): Promise<Attr> {
    this.calls.push('setattr');
    const n = this.node(node);
    if (set.mode !== undefined) n.mode = (n.mode & S_IFMT) | (set.mode & 0o7777);
    if (set.uid !== undefined) n.uid = set.uid;
    if (set.gid !== undefined) n.gid = set.gid;
    if (set.size !== undefined) {
      if (n.children) fail(E.EISDIR);
      this.resize(n, set.size);
      n.mtime = now();
    }
    if (set.atime !== undefined) n.atime = set.atime === 'now' ? now() : set.atime;
    if (set.mtime !== undefined) n.mtime = set.mtime === 'now' ? now() : set.mtime;
    n.ctime = now();
    return this.attr(n);
  }

  async readlink(c: Caller, node: number): Promise<Buffer> {
    this.calls.push('readlink');
    return this.node(node).target ?? fail(E.EINVAL);
  }

  async mknod(c: Caller, parent: number, name: Buffer, mode: number, rdev: number): Promise<Entry> {
    this.calls.push('mknod');
    const n = this.create1(parent, name, mode, c);
    n.rdev = rdev;
    return this.entryOf(n);
  }

  async mkdir(c: Caller, parent: number, name: Buffer, mode: number): Promise<Entry> {
    this.calls.push('mkdir');
    return this.entryOf(this.create1(parent, name, S_IFDIR | (mode & 0o7777), c));
  }

  async unlink(c: Caller, parent: number, name: Buffer): Promise<void> {
    this.calls.push('unlink');
    const p = this.dir(parent);
    const key = name.toString('latin1');
    const e = p.children.get(key) ?? fail(E.ENOENT);
    if (this.node(e.id).children) fail(E.EISDIR);
    this.unlinkName(p, key);
  }

  async rmdir(c: Caller, parent: number, name: Buffer): Promise<void> {
    this.calls.push('rmdir');
    const p = this.dir(parent);
    const key = name.toString('latin1');
    const e = p.children.get(key) ?? fail(E.ENOENT);
    const d = this.node(e.id);
    if (!d.children) fail(E.ENOTDIR);
    if (d.children!.size > 0) fail(E.ENOTEMPTY);
    this.unlinkName(p, key);
  }

  async symlink(c: Caller, parent: number, name: Buffer, target: Buffer): Promise<Entry> {
    this.calls.push('symlink');
    const n = this.create1(parent, name, S_IFLNK | 0o777, c);
    n.target = Buffer.from(target);
    return this.entryOf(n);
  }

  async rename(c: Caller, parent: number, name: Buffer, newParent: number, newName: Buffer, flags: number): Promise<void> {
    this.calls.push('rename');
    const p = this.dir(parent);
    const np = this.dir(newParent);
    const key = name.toString('latin1');
    const newKey = newName.toString('latin1');
    const src = p.children.get(key) ?? fail(E.ENOENT);
    const srcNode = this.node(src.id);
    const dst = np.children.get(newKey);
    // A directory may not move into its own subtree.
    if (srcNode.children) {
      for (let d = np; ; d = this.dir(d.parent)) {
        if (d.id === srcNode.id) fail(E.EINVAL);
        if (d.id === ROOT_ID) break;
      }
    }
    if (flags & RENAME_EXCHANGE) {
      if (!dst) fail(E.ENOENT);
      const dstNode = this.node(dst!.id);
      p.children.set(key, { id: dstNode.id, cookie: src.cookie });
      np.children.set(newKey, { id: srcNode.id, cookie: dst!.cookie });
      if (srcNode.children) srcNode.parent = np.id;
      if (dstNode.children) dstNode.parent = p.id;
      return;
    }
    if (dst) {
      if (flags & RENAME_NOREPLACE) fail(E.EEXIST);
      if (dst.id === src.id) return;
      const dstNode = this.node(dst.id);
      if (srcNode.children && !dstNode.children) fail(E.ENOTDIR);
      if (!srcNode.children && dstNode.children) fail(E.EISDIR);
      if (dstNode.children && dstNode.children.size > 0) fail(E.ENOTEMPTY);
      this.unlinkName(np, newKey);
    }
    p.children.delete(key);
    if (srcNode.children) p.nlink--;
    this.addName(np, newName, srcNode);
    srcNode.ctime = now();
  }

  async link(c: Caller, node: number, newParent: number, newName: Buffer): Promise<Entry> {
    this.calls.push('link');
    const n = this.node(node);
    if (n.children) fail(E.EPERM);
    const np = this.dir(newParent);
    if (np.children.has(newName.toString('latin1'))) fail(E.EEXIST);
    this.addName(np, newName, n);
    n.nlink++;
    n.ctime = now();
    return this.entryOf(n);
  }

  async open(c: Caller, node: number, flags: number): Promise<OpenResult> {
    this.calls.push('open');
    const n = this.node(node);
    if (n.children) fail(E.EISDIR);
    if (flags & osc.O_TRUNC && (flags & O_ACCMODE) !== osc.O_RDONLY) this.resize(n, 0);
    const fh = this.nextFh++;
    this.handles.set(fh, { node, flags });
    return { fh };
  }

  async create(c: Caller, parent: number, name: Buffer, mode: number, flags: number): Promise<CreateResult> {
    this.calls.push('create');
    const p = this.dir(parent);
    const existing = p.children.get(name.toString('latin1'));
    let n: Node;
    if (existing) {
      if (flags & osc.O_EXCL) fail(E.EEXIST);
      n = this.node(existing.id);
      if (flags & osc.O_TRUNC) this.resize(n, 0);
    } else {
      n = this.create1(parent, name, S_IFREG | (mode & 0o7777), c);
    }
    const fh = this.nextFh++;
    this.handles.set(fh, { node: n.id, flags });
    return { fh, entry: this.entryOf(n) };
  }

  async read(c: Caller, node: number, fh: number, offset: number, size: number): Promise<Buffer> {
    this.calls.push('read');
    this.handle(fh);
    const n = this.node(node);
    if (offset >= n.size) return Buffer.alloc(0);
    return Buffer.from(n.data.subarray(offset, Math.min(n.size, offset + size)));
  }

  async write(c: Caller, node: number, fh: number, offset: number, data: Buffer): Promise<number> {
    this.calls.push('write');
    const h = this.handle(fh);
    const n = this.node(node);
    if (h.flags & osc.O_APPEND) offset = n.size;
    if (offset + data.length > n.size) this.resize(n, offset + data.length);
    data.copy(n.data, offset);
    n.mtime = n.ctime = now();
    return data.length;
  }

  async flush(c: Caller, node: number, fh: number): Promise<void> {
    this.calls.push('flush');
    this.handle(fh);
  }

  async fsync(): Promise<void> {
    this.calls.push('fsync');
  }

  async release(c: Caller, node: number, fh: number): Promise<void> {
    this.calls.push('release');
    this.handles.delete(fh);
    const n = this.nodes.get(node);
    if (n) this.maybeDrop(n);
  }

  async opendir(c: Caller, node: number, flags: number): Promise<OpenResult> {
    this.calls.push('opendir');
    this.dir(node);
    const fh = this.nextFh++;
    this.handles.set(fh, { node, flags });
    return { fh };
  }

  async readdir(c: Caller, node: number, fh: number, offset: number, maxEntries: number, plus: boolean): Promise<DirEntry[]> {
    this.calls.push(plus ? 'readdirplus' : 'readdir');
    const d = this.dir(node);
    const out: DirEntry[] = [];
    const dots: Array<[string, number, number]> = [['.', d.id, 1], ['..', d.parent, 2]];
    for (const [name, id, cookie] of dots) {
      if (cookie > offset && out.length < maxEntries)
        out.push({ name: Buffer.from(name), ino: id, type: 4, nextOffset: cookie });
    }
    for (const [key, e] of d.children) {
      if (out.length >= maxEntries) break;
      if (e.cookie <= offset) continue;
      const n = this.node(e.id);
      const de: DirEntry = { name: Buffer.from(key, 'latin1'), ino: n.id, type: (n.mode & S_IFMT) >> 12, nextOffset: e.cookie };
      if (plus) de.entry = this.entryOf(n);
      out.push(de);
    }
    return out;
  }

  async fsyncdir(): Promise<void> {
    this.calls.push('fsyncdir');
  }

  async releasedir(c: Caller, node: number, fh: number): Promise<void> {
    this.calls.push('releasedir');
    this.handles.delete(fh);
  }

  async statfs(): Promise<StatFs> {
    this.calls.push('statfs');
    return { bsize: 4096, frsize: 4096, blocks: 1 << 20, bfree: 1 << 19, bavail: 1 << 19, files: 1 << 20, ffree: (1 << 20) - this.nodes.size, namemax: 255 };
  }

  async setxattr(c: Caller, node: number, name: Buffer, value: Buffer, flags: number): Promise<void> {
    this.calls.push('setxattr');
    const n = this.node(node);
    const key = name.toString('latin1');
    if (flags === 1 /* XATTR_CREATE */ && n.xattrs.has(key)) fail(E.EEXIST);
    if (flags === 2 /* XATTR_REPLACE */ && !n.xattrs.has(key)) fail(E.ENODATA);
    n.xattrs.set(key, Buffer.from(value));
  }

  async getxattr(c: Caller, node: number, name: Buffer, size: number): Promise<Buffer | number> {
    this.calls.push('getxattr');
    const v = this.node(node).xattrs.get(name.toString('latin1')) ?? fail(E.ENODATA);
    if (size === 0) return v.length;
    if (v.length > size) fail(E.ERANGE);
    return v;
  }

  async listxattr(c: Caller, node: number, size: number): Promise<Buffer | number> {
    this.calls.push('listxattr');
    const list = Buffer.concat([...this.node(node).xattrs.keys()].map((k) => Buffer.from(k + '\0', 'latin1')));
    if (size === 0) return list.length;
    if (list.length > size) fail(E.ERANGE);
    return list;
  }

  async removexattr(c: Caller, node: number, name: Buffer): Promise<void> {
    this.calls.push('removexattr');
    if (!this.node(node).xattrs.delete(name.toString('latin1'))) fail(E.ENODATA);
  }

  async access(c: Caller, node: number): Promise<void> {
    this.calls.push('access');
    this.node(node);
  }

  async fallocate(c: Caller, node: number, fh: number, mode: number, offset: number, length: number): Promise<void> {
    this.calls.push('fallocate');
    if (mode !== 0) fail(E.EOPNOTSUPP);
    const n = this.node(node);
    if (offset + length > n.size) this.resize(n, offset + length);
  }

  async copyFileRange(
    c: Caller, nodeIn: number, fhIn: number, offsetIn: number,
    nodeOut: number, fhOut: number, offsetOut: number, length: number,
  ): Promise<number> {
    this.calls.push('copyFileRange');
    const data = await this.read(c, nodeIn, fhIn, offsetIn, length);
    return this.write(c, nodeOut, fhOut, offsetOut, data);
  }

  async lseek(c: Caller, node: number, fh: number, offset: number, whence: number): Promise<number> {
    this.calls.push('lseek');
    const n = this.node(node);
    if (offset >= n.size) fail(E.ENXIO);
    return whence === 3 /* SEEK_DATA */ ? offset : n.size; // no holes
  }

  async destroy(): Promise<void> {
    this.calls.push('destroy');
    this.destroyed = true;
    this.handles.clear();
  }
}
