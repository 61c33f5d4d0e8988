// Limits per VM, so that one VM cannot starve the others of the host's file descriptors or of its
// I/O capacity, whatever it sends and however many connections it opens.
//
// - fd budget: every node a VM's export views know (one O_PATH fd each on the host) and every
//   handle they hold open (one fd each) counts against the VM's budget, across all its connections
//   and exports; beyond it, opens fail with EMFILE and lookups with ENFILE, for that VM only.
// - requests in flight: at most `maxInFlight` of a VM's requests are served at once, across its
//   connections; the rest wait their turn (first come, first served). Each connection also stops
//   reading beyond its own limit (Session maxIncoming), so what waits here is bounded too.
import type {
  Attr, Caller, CreateResult, DirEntry, Entry, FileSystem, OpenResult, SetAttr, StatFs,
} from '../shared/fs/interface.js';
import { ROOT_ID } from '../shared/fs/interface.js';
import { FsError, E } from '../shared/fs/errors.js';

export interface VmLimitOptions {
  /** Nodes + open handles a VM's export views may hold at once (host fds). */
  maxFds: number;
  /** Requests of one VM served at once, across its connections. */
  maxInFlight: number;
}

export const DEFAULT_VM_LIMITS: VmLimitOptions = { maxFds: 16384, maxInFlight: 512 };

/** One VM's counters (shared by all its connections and export views). */
export class VmLimiter {
  private fds = 0;
  private running = 0;
  private readonly queue: Array<() => void> = [];

  constructor(readonly vmName: string, readonly limits: VmLimitOptions) {}

  get fdsInUse(): number {
    return this.fds;
  }

  get inFlight(): { running: number; waiting: number } {
    return { running: this.running, waiting: this.queue.length };
  }

  /** Takes one fd of the budget, or fails with `errno` naming the limit. */
  takeFd(errno: number, what: string): void {
    if (this.fds >= this.limits.maxFds) {
      throw new FsError(errno, `${what} refused: VM ${this.vmName} holds ${this.fds} host file descriptors, its limit (limits.max_fds); close files or raise the limit`);
    }
    this.fds++;
  }

  /** Counts an fd taken without asking (readdirplus entries, past the budget at most once). */
  addFd(): void {
    this.fds++;
  }

  giveFds(n = 1): void {
    this.fds = Math.max(0, this.fds - n);
  }

  /** Runs `op` when one of the VM's request slots is free. */
  async run<T>(op: () => Promise<T>): Promise<T> {
    if (this.running >= this.limits.maxInFlight) await new Promise<void>((resolve) => this.queue.push(resolve));
    else this.running++;
    try {
      return await op();
    } finally {
      const next = this.queue.shift();
      if (next) next(); // the slot passes on to the next waiter
      else this.running--;
    }
  }
}

/**
 * Counts the fds an export view makes the host hold against the VM's budget: one per distinct node
 * it has handed out (until forgotten) and one per open handle (until released), plus its root.
 * The view's own tables still apply their limits; this one is shared by all views of the VM.
 */
export class FdBudgetFs implements FileSystem {
  /** Node id -> lookup count, for the nodes this view has counted. */
  private readonly nodes = new Map<number, number>();
  private readonly handles = new Set<number>();
  private destroyed = false;

  constructor(private readonly inner: FileSystem, private readonly vm: VmLimiter) {
    vm.takeFd(E.EMFILE, 'mounting an export');
  }

  /** Runs `op` with one fd of the budget taken (`errno` when there is none); given back if it fails. */
  private async withFd<T>(errno: number, what: string, op: () => Promise<T>): Promise<T> {
    this.vm.takeFd(errno, what);
    try {
      return await op();
    } catch (err) {
      this.vm.giveFds();
      throw err;
    }
  }

  private async entry<T>(what: string, op: () => Promise<T>, pick: (r: T) => Entry): Promise<T> {
    const r = await this.withFd(E.ENFILE, what, op);
    const id = pick(r).nodeId;
    const n = this.nodes.get(id);
    if (n !== undefined || id === ROOT_ID || this.destroyed) this.vm.giveFds(); // no new fd
    if (id !== ROOT_ID && !this.destroyed) this.nodes.set(id, (n ?? 0) + 1);
    return r;
  }

  private async handle<T extends OpenResult>(what: string, op: () => Promise<T>): Promise<T> {
    const r = await this.withFd(E.EMFILE, what, op);
    if (this.destroyed || this.handles.has(r.fh)) this.vm.giveFds();
    else this.handles.add(r.fh);
    return r;
  }

  private released(fh: number): void {
    if (this.handles.delete(fh)) this.vm.giveFds();
  }

  lookup(caller: Caller, parent: number, name: Buffer): Promise<Entry> {
    return this.entry('lookup', () => this.inner.lookup(caller, parent, name), (e) => e);
  }

  forget(items: ReadonlyArray<{ nodeId: number; nlookup: number }>): void {
    for (const { nodeId, nlookup } of items) {
      const n = this.nodes.get(nodeId);
      if (n === undefined) continue;
      if (n - nlookup > 0) this.nodes.set(nodeId, n - nlookup);
      else {
        this.nodes.delete(nodeId);
        this.vm.giveFds();
      }
    }
    this.inner.forget(items);
  }

  mknod(caller: Caller, parent: number, name: Buffer, mode: number, rdev: number): Promise<Entry> {
    return this.entry('mknod', () => this.inner.mknod(caller, parent, name, mode, rdev), (e) => e);
  }

  mkdir(caller: Caller, parent: number, name: Buffer, mode: number): Promise<Entry> {
    return this.entry('mkdir', () => this.inner.mkdir(caller, parent, name, mode), (e) => e);
  }

  symlink(caller: Caller, parent: number, name: Buffer, target: Buffer): Promise<Entry> {
    return this.entry('symlink', () => this.inner.symlink(caller, parent, name, target), (e) => e);
  }

  link(caller: Caller, node: number, newParent: number, newName: Buffer): Promise<Entry> {
    return this.entry('link', () => this.inner.link(caller, node, newParent, newName), (e) => e);
  }

  open(caller: Caller, node: number, flags: number): Promise<OpenResult> {
    return this.handle('open', () => this.inner.open(caller, node, flags));
  }

  opendir(caller: Caller, node: number, flags: number): Promise<OpenResult> {
    return this.handle('opendir', () => this.inner.opendir(caller, node, flags));
  }

  async create(caller: Caller, parent: number, name: Buffer, mode: number, flags: number): Promise<CreateResult> {
    // Two fds: the handle and (if new) the node.
    return this.handle('create', () => this.entry('create', () => this.inner.create(caller, parent, name, mode, flags), (r) => r.entry));
  }

  async release(caller: Caller, node: number, fh: number): Promise<void> {
    try {
      await this.inner.release(caller, node, fh);
    } finally {
      this.released(fh);
    }
  }

  async releasedir(caller: Caller, node: number, fh: number): Promise<void> {
    try {
      await this.inner.releasedir(caller, node, fh);
    } finally {
      this.released(fh);
    }
  }

  async readdir(caller: Caller, node: number, fh: number, offset: number, maxEntries: number, plus: boolean): Promise<DirEntry[]> {
    if (plus && this.vm.fdsInUse >= this.vm.limits.maxFds) this.vm.takeFd(E.ENFILE, 'readdirplus'); // throws
    const entries = await this.inner.readdir(caller, node, fh, offset, maxEntries, plus);
    // Entries of readdirplus are lookups: count them (a batch may go past the budget once; the
    // next lookup or readdirplus is refused until the VM gives some back).
    for (const d of entries) {
      if (!d.entry || d.entry.nodeId === ROOT_ID || this.destroyed) continue;
      const n = this.nodes.get(d.entry.nodeId);
      if (n === undefined) this.vm.addFd();
      this.nodes.set(d.entry.nodeId, (n ?? 0) + 1);
    }
    return entries;
  }

  async destroy(): Promise<void> {
    if (!this.destroyed) {
      this.destroyed = true;
      this.vm.giveFds(this.nodes.size + this.handles.size + 1);
      this.nodes.clear();
      this.handles.clear();
    }
    await this.inner.destroy();
  }

  // Operations that neither make nor drop an fd pass straight through.
  getattr(caller: Caller, node: number, fh?: number): Promise<Attr> { return this.inner.getattr(caller, node, fh); }
  setattr(caller: Caller, node: number, set: SetAttr, fh?: number): Promise<Attr> { return this.inner.setattr(caller, node, set, fh); }
  readlink(caller: Caller, node: number): Promise<Buffer> { return this.inner.readlink(caller, node); }
  unlink(caller: Caller, parent: number, name: Buffer): Promise<void> { return this.inner.unlink(caller, parent, name); }
  rmdir(caller: Caller, parent: number, name: Buffer): Promise<void> { return this.inner.rmdir(caller, parent, name); }
  rename(caller: Caller, parent: number, name: Buffer, newParent: number, newName: Buffer, flags: number): Promise<void> {
    return this.inner.rename(caller, parent, name, newParent, newName, flags);
  }
  read(caller: Caller, node: number, fh: number, offset: number, size: number): Promise<Buffer> { return this.inner.read(caller, node, fh, offset, size); }
  write(caller: Caller, node: number, fh: number, offset: number, data: Buffer): Promise<number> { return this.inner.write(caller, node, fh, offset, data); }
  flush(caller: Caller, node: number, fh: number): Promise<void> { return this.inner.flush(caller, node, fh); }
  fsync(caller: Caller, node: number, fh: number, datasync: boolean): Promise<void> { return this.inner.fsync(caller, node, fh, datasync); }
  fsyncdir(caller: Caller, node: number, fh: number, datasync: boolean): Promise<void> { return this.inner.fsyncdir(caller, node, fh, datasync); }
  statfs(caller: Caller, node: number): Promise<StatFs> { return this.inner.statfs(caller, node); }
  setxattr(caller: Caller, node: number, name: Buffer, value: Buffer, flags: number): Promise<void> { return this.inner.setxattr(caller, node, name, value, flags); }
  getxattr(caller: Caller, node: number, name: Buffer, size: number): Promise<Buffer | number> { return this.inner.getxattr(caller, node, name, size); }
  listxattr(caller: Caller, node: number, size: number): Promise<Buffer | number> { return this.inner.listxattr(caller, node, size); }
  removexattr(caller: Caller, node: number, name: Buffer): Promise<void> { return this.inner.removexattr(caller, node, name); }
  access(caller: Caller, node: number, mask: number): Promise<void> { return this.inner.access(caller, node, mask); }
  fallocate(caller: Caller, node: number, fh: number, mode: number, offset: number, length: number): Promise<void> {
    return this.inner.fallocate(caller, node, fh, mode, offset, length);
  }
  copyFileRange(caller: Caller, nodeIn: number, fhIn: number, offsetIn: number, nodeOut: number, fhOut: number, offsetOut: number, length: number, flags: number): Promise<number> {
    return this.inner.copyFileRange(caller, nodeIn, fhIn, offsetIn, nodeOut, fhOut, offsetOut, length, flags);
  }
  lseek(caller: Caller, node: number, fh: number, offset: number, whence: number): Promise<number> { return this.inner.lseek(caller, node, fh, offset, whence); }
}
