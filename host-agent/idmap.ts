// Identity mapping for a share, enforced on the host: the guest's uids and gids are translated
// before they reach the storage (as the caller of an operation and in chown), and owners read from
// the storage are translated back. A wrapper around any FileSystem, so every backend gets it.
//
//   squash: none   ids pass through (after the maps)
//   squash: root   uid 0 / gid 0 become the anonymous ids (NFS root_squash)
//   squash: all    every id becomes the anonymous ids (NFS all_squash)
//   uid_map / gid_map: "GUEST:HOST" pairs; ids not listed pass through (or are squashed).
import type { FileSystem, Caller, Attr, Entry, SetAttr, DirEntry, CreateResult } from '../shared/fs/interface.js';

export type SquashMode = 'none' | 'root' | 'all';

export interface IdMapConfig {
  squash: SquashMode;
  anonUid: number;
  anonGid: number;
  uidMap?: Array<[guest: number, host: number]>;
  gidMap?: Array<[guest: number, host: number]>;
}

export class IdMap {
  private readonly uidToHost: Map<number, number>;
  private readonly gidToHost: Map<number, number>;
  private readonly uidToGuest: Map<number, number>;
  private readonly gidToGuest: Map<number, number>;

  constructor(readonly config: IdMapConfig) {
    this.uidToHost = new Map(config.uidMap ?? []);
    this.gidToHost = new Map(config.gidMap ?? []);
    this.uidToGuest = new Map((config.uidMap ?? []).map(([g, h]) => [h, g]));
    this.gidToGuest = new Map((config.gidMap ?? []).map(([g, h]) => [h, g]));
  }

  get isIdentity(): boolean {
    return this.config.squash === 'none' && this.uidToHost.size === 0 && this.gidToHost.size === 0;
  }

  uid(guest: number): number {
    if (this.config.squash === 'all' || (this.config.squash === 'root' && guest === 0)) return this.config.anonUid;
    return this.uidToHost.get(guest) ?? guest;
  }

  gid(guest: number): number {
    if (this.config.squash === 'all' || (this.config.squash === 'root' && guest === 0)) return this.config.anonGid;
    return this.gidToHost.get(guest) ?? guest;
  }

  caller(c: Caller): Caller {
    const out: Caller = { ...c, uid: this.uid(c.uid), gid: this.gid(c.gid) };
    if (c.groups) out.groups = c.groups.map((g) => this.gid(g));
    return out;
  }

  attr(a: Attr): Attr {
    const uid = this.uidToGuest.get(a.uid);
    const gid = this.gidToGuest.get(a.gid);
    return uid === undefined && gid === undefined ? a : { ...a, uid: uid ?? a.uid, gid: gid ?? a.gid };
  }

  entry(e: Entry): Entry {
    return { ...e, attr: this.attr(e.attr) };
  }
}

/** Parses "GUEST:HOST" pairs (config and API form). */
export function parseIdPairs(pairs: readonly string[], what: string): Array<[number, number]> {
  return pairs.map((p) => {
    const m = /^(\d+):(\d+)$/.exec(p.trim());
    if (!m) throw new Error(`${what}: "${p}" is not GUEST:HOST (two numeric ids)`);
    return [Number(m[1]), Number(m[2])];
  });
}

/** Wraps a FileSystem so every call goes through the map. Returns `fs` itself for the identity map. */
export function withIdMap(fs: FileSystem, map: IdMap): FileSystem {
  if (map.isIdentity) return fs;
  const c = (caller: Caller) => map.caller(caller);
  const entry = (p: Promise<Entry>) => p.then((e) => map.entry(e));
  const mapped: FileSystem = {
    lookup: (caller, parent, name) => entry(fs.lookup(c(caller), parent, name)),
    forget: (items) => fs.forget(items),
    getattr: (caller, node, fh) => fs.getattr(c(caller), node, fh).then((a) => map.attr(a)),
    setattr: (caller, node, set, fh) => {
      const s: SetAttr = { ...set };
      if (set.uid !== undefined) s.uid = map.uid(set.uid);
      if (set.gid !== undefined) s.gid = map.gid(set.gid);
      return fs.setattr(c(caller), node, s, fh).then((a) => map.attr(a));
    },
    readlink: (caller, node) => fs.readlink(c(caller), node),
    mknod: (caller, parent, name, mode, rdev) => entry(fs.mknod(c(caller), parent, name, mode, rdev)),
    mkdir: (caller, parent, name, mode) => entry(fs.mkdir(c(caller), parent, name, mode)),
    unlink: (caller, parent, name) => fs.unlink(c(caller), parent, name),
    rmdir: (caller, parent, name) => fs.rmdir(c(caller), parent, name),
    symlink: (caller, parent, name, target) => entry(fs.symlink(c(caller), parent, name, target)),
    rename: (caller, p, n, np, nn, flags) => fs.rename(c(caller), p, n, np, nn, flags),
    link: (caller, node, np, nn) => entry(fs.link(c(caller), node, np, nn)),
    open: (caller, node, flags) => fs.open(c(caller), node, flags),
    create: (caller, parent, name, mode, flags) =>
      fs.create(c(caller), parent, name, mode, flags).then((r): CreateResult => ({ ...r, entry: map.entry(r.entry) })),
    read: (caller, node, fh, offset, size) => fs.read(c(caller), node, fh, offset, size),
    write: (caller, node, fh, offset, data) => fs.write(c(caller), node, fh, offset, data),
    flush: (caller, node, fh) => fs.flush(c(caller), node, fh),
    fsync: (caller, node, fh, datasync) => fs.fsync(c(caller), node, fh, datasync),
    release: (caller, node, fh) => fs.release(c(caller), node, fh),
    opendir: (caller, node, flags) => fs.opendir(c(caller), node, flags),
    readdir: (caller, node, fh, offset, max, plus) =>
      fs.readdir(c(caller), node, fh, offset, max, plus).then((list) => list.map((d): DirEntry => (d.entry ? { ...d, entry: map.entry(d.entry) } : d))),
    fsyncdir: (caller, node, fh, datasync) => fs.fsyncdir(c(caller), node, fh, datasync),
    releasedir: (caller, node, fh) => fs.releasedir(c(caller), node, fh),
    statfs: (caller, node) => fs.statfs(c(caller), node),
    setxattr: (caller, node, name, value, flags) => fs.setxattr(c(caller), node, name, value, flags),
    getxattr: (caller, node, name, size) => fs.getxattr(c(caller), node, name, size),
    listxattr: (caller, node, size) => fs.listxattr(c(caller), node, size),
    removexattr: (caller, node, name) => fs.removexattr(c(caller), node, name),
    access: (caller, node, mask) => fs.access(c(caller), node, mask),
    fallocate: (caller, node, fh, mode, offset, length) => fs.fallocate(c(caller), node, fh, mode, offset, length),
    copyFileRange: (caller, ni, fi, oi, no, fo, oo, len, flags) => fs.copyFileRange(c(caller), ni, fi, oi, no, fo, oo, len, flags),
    lseek: (caller, node, fh, offset, whence) => fs.lseek(c(caller), node, fh, offset, whence),
    destroy: () => fs.destroy(),
  };
  return mapped;
}
