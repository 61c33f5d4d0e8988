// Directory handles the adapter answers itself when directory listings are cached (cache=long):
// the kernel keeps a listing across opens (FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE), so an opendir /
// readdir / releasedir cycle over an unchanged directory would otherwise still cost the host an
// opendir and a releasedir. The host's handle is opened when the kernel first reads the listing
// through one of ours.
//
// opendir is where a FileSystem checks permission (without default_permissions the kernel does
// not): an opendir is answered locally only for a caller (uid, gid, groups) the host already let
// open that directory, recently (within `ttlMs`) and with no change pushed to it since.
import type { Caller, FileSystem } from '../../shared/fs/interface.js';

/** Our handles start here, far from the FileSystem's and the coherence layer's own ranges. */
const FIRST_FH = 2 ** 48;

interface LazyDir {
  node: number;
  flags: number;
  caller: Caller;
  real?: Promise<number>;
}

interface Grant {
  at: number;
  generation: number;
}

export class LazyDirs {
  private readonly handles = new Map<number, LazyDir>();
  private readonly grants = new Map<string, Grant>();
  private nextFh = FIRST_FH;

  constructor(
    private readonly fs: FileSystem,
    private readonly ttlMs: number,
    /** Whether `node` changed since `generation` (coherence); without coherence, never. */
    private readonly changedSince: (generation: number, node: number) => boolean = () => false,
    private readonly generation: () => number = () => 0,
  ) {}

  has(fh: number): boolean {
    return this.handles.has(fh);
  }

  /** A handle for the kernel; asks the host first unless this caller was let in recently. */
  async open(caller: Caller, node: number, flags: number): Promise<number> {
    const fh = this.nextFh++;
    const dir: LazyDir = { node, flags, caller };
    const key = grantKey(node, caller);
    const g = this.grants.get(key);
    if (!g || Date.now() - g.at > this.ttlMs || this.changedSince(g.generation, node)) {
      const generation = this.generation();
      const real = await this.fs.opendir(caller, node, flags);
      dir.real = Promise.resolve(real.fh);
      if (this.grants.size > 65536) this.grants.clear();
      this.grants.set(key, { at: Date.now(), generation });
    }
    this.handles.set(fh, dir);
    return fh;
  }

  /** The FileSystem's handle behind ours, opened now if it was not yet. */
  real(fh: number): Promise<number> {
    const d = this.handles.get(fh)!;
    d.real ??= this.fs.opendir(d.caller, d.node, d.flags).then((r) => r.fh);
    return d.real;
  }

  async release(caller: Caller, fh: number): Promise<void> {
    const d = this.handles.get(fh);
    this.handles.delete(fh);
    if (!d?.real) return;
    const real = await d.real.catch(() => undefined);
    if (real !== undefined) await this.fs.releasedir(caller, d.node, real);
  }

  /** A handle the kernel will never release (its reply was not delivered). */
  drop(caller: Caller, fh: number): Promise<void> {
    return this.release(caller, fh);
  }
}

function grantKey(node: number, c: Caller): string {
  return `${node}:${c.uid}:${c.gid}:${c.groups?.join(',') ?? ''}`;
}
