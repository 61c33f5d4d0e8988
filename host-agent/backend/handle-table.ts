// Open handles (fh) of a POSIX export: each owns a real fd (file or directory), opened from a node.
// Like nodes, handles are pinned while an operation uses their fd, so a concurrent release cannot
// close (and let the kernel reuse) an fd that a read or write still uses. fh numbers are never
// reused; an fh that was never issued, was released, or belongs to another node is EBADF. Handles
// dropped because their filesystem went away (expireAll) are ESTALE, and may still be released.
import { E, FsError } from '../../shared/fs/errors.js';

export type HandleKind = 'file' | 'dir';

export interface Handle {
  readonly fh: number;
  readonly nodeId: number;
  readonly fd: number;
  readonly kind: HandleKind;
  pins: number;
  dead: boolean;
  /** Directories only: readdir position cookies and the queue that keeps one getdents at a time. */
  dir?: DirState;
}

// Directory offsets: getdents' d_off can use all 63 bits (ext4 hash positions, NFS cookies), but
// the file-system interface carries offsets as JS numbers. Offsets below 2^52 pass through as they
// are; larger ones are replaced by 2^52 + n and remembered per handle, so a later readdir (or a
// guest seekdir) can go back to any offset this handle issued.
const COOKIE_BASE = 2 ** 52;

export class DirState {
  private readonly toReal = new Map<number, bigint>();
  private readonly toCookie = new Map<bigint, number>();
  private tail: Promise<unknown> = Promise.resolve();

  /** The interface offset for a real directory position. */
  cookie(real: bigint): number {
    if (real >= 0n && real < BigInt(COOKIE_BASE)) return Number(real);
    let c = this.toCookie.get(real);
    if (c === undefined) {
      c = COOKIE_BASE + this.toReal.size + 1;
      this.toReal.set(c, real);
      this.toCookie.set(real, c);
    }
    return c;
  }

  /** The real directory position for an interface offset; EINVAL for one never issued. */
  real(offset: number): bigint {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new FsError(E.EINVAL, 'bad directory offset');
    if (offset < COOKIE_BASE) return BigInt(offset);
    const r = this.toReal.get(offset);
    if (r === undefined) throw new FsError(E.EINVAL, 'unknown directory offset');
    return r;
  }

  /** Runs `fn` after every earlier call on this directory handle has finished (getdents seeks). */
  serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => undefined);
    return run;
  }
}

export class HandleTable {
  private readonly byFh = new Map<number, Handle>();
  /** Handles dropped by expireAll() that the guest has not released yet. */
  private readonly expired = new Set<number>();
  private nextFh = 1;

  constructor(
    private readonly maxHandles: number,
    private readonly closeFd: (fd: number) => void,
  ) {}

  get size(): number {
    return this.byFh.size;
  }

  /** EMFILE when the export already has `maxHandles` open handles. */
  checkRoom(): void {
    if (this.byFh.size >= this.maxHandles) throw new FsError(E.EMFILE, 'too many open handles');
  }

  /** Takes ownership of `fd`; closes it when there is no room. */
  add(nodeId: number, fd: number, kind: HandleKind): Handle {
    try {
      this.checkRoom();
    } catch (err) {
      this.closeFd(fd);
      throw err;
    }
    const h: Handle = { fh: this.nextFh++, nodeId, fd, kind, pins: 0, dead: false };
    if (kind === 'dir') h.dir = new DirState();
    this.byFh.set(h.fh, h);
    return h;
  }

  pin(fh: number, nodeId: number, kind: HandleKind): Handle {
    const h = this.byFh.get(fh);
    if (!h && this.expired.has(fh)) throw new FsError(E.ESTALE, `handle ${fh} was open on a filesystem that is gone`);
    if (!h || h.nodeId !== nodeId || h.kind !== kind) throw new FsError(E.EBADF, `bad handle ${fh}`);
    h.pins++;
    return h;
  }

  unpin(h: Handle): void {
    h.pins--;
    if (h.dead && h.pins === 0) this.closeFd(h.fd);
  }

  /** Forgets the handle; its fd closes now or when the last operation using it ends. */
  release(fh: number, nodeId: number, kind: HandleKind): void {
    const h = this.byFh.get(fh);
    if (!h && this.expired.delete(fh)) return;
    if (!h || h.nodeId !== nodeId || h.kind !== kind) throw new FsError(E.EBADF, `bad handle ${fh}`);
    this.remove(h);
  }

  clear(): void {
    for (const h of [...this.byFh.values()]) this.remove(h);
    this.expired.clear();
  }

  /** Drops every handle because its filesystem went away: using one afterwards is ESTALE. */
  expireAll(): void {
    for (const h of [...this.byFh.values()]) {
      this.expired.add(h.fh);
      this.remove(h);
    }
  }

  private remove(h: Handle): void {
    this.byFh.delete(h.fh);
    h.dead = true;
    if (h.pins === 0) this.closeFd(h.fd);
  }
}
