// Conversions between the file-system interface's types and their protobuf messages.
import type { pb } from '../rpc/wire.js';
import type { Attr, Entry, DirEntry, StatFs, Timespec, SetAttr } from './interface.js';

type TimespecMsg = pb.Timespec.$Properties | null | undefined;
type AttrMsg = pb.Attr.$Properties | null | undefined;

const ts = (t: TimespecMsg): Timespec => ({ sec: Number(t?.sec ?? 0), nsec: t?.nsec ?? 0 });

export function attrToWire(a: Attr): pb.Attr.$Properties {
  return { ...a };
}

export function attrFromWire(a: AttrMsg): Attr {
  return {
    ino: Number(a?.ino ?? 0),
    mode: a?.mode ?? 0,
    nlink: a?.nlink ?? 0,
    uid: a?.uid ?? 0,
    gid: a?.gid ?? 0,
    rdev: Number(a?.rdev ?? 0),
    size: Number(a?.size ?? 0),
    blocks: Number(a?.blocks ?? 0),
    blksize: a?.blksize ?? 0,
    atime: ts(a?.atime),
    mtime: ts(a?.mtime),
    ctime: ts(a?.ctime),
  };
}

export function entryToWire(e: Entry): pb.Entry.$Properties {
  return { nodeId: e.nodeId, generation: e.generation, attr: attrToWire(e.attr) };
}

export function entryFromWire(e: pb.Entry.$Properties | null | undefined): Entry {
  return { nodeId: Number(e?.nodeId ?? 0), generation: Number(e?.generation ?? 0), attr: attrFromWire(e?.attr) };
}

export function dirEntryToWire(d: DirEntry): pb.DirEntry.$Properties {
  return { name: d.name, ino: d.ino, type: d.type, nextOffset: d.nextOffset, entry: d.entry ? entryToWire(d.entry) : null };
}

export function dirEntryFromWire(d: pb.DirEntry.$Properties): DirEntry {
  const out: DirEntry = { name: Buffer.from(d.name ?? []), ino: Number(d.ino ?? 0), type: d.type ?? 0, nextOffset: Number(d.nextOffset ?? 0) };
  if (d.entry) out.entry = entryFromWire(d.entry);
  return out;
}

export function statfsFromWire(s: pb.StatfsReply.$Properties | null | undefined): StatFs {
  return {
    bsize: s?.bsize ?? 0,
    frsize: s?.frsize ?? 0,
    blocks: Number(s?.blocks ?? 0),
    bfree: Number(s?.bfree ?? 0),
    bavail: Number(s?.bavail ?? 0),
    files: Number(s?.files ?? 0),
    ffree: Number(s?.ffree ?? 0),
    namemax: s?.namemax ?? 0,
  };
}

export function setattrToWire(node: number, set: SetAttr, fh?: number): pb.SetattrRequest.$Properties {
  const m: pb.SetattrRequest.$Properties = { node };
  if (fh !== undefined) m.fh = fh;
  if (set.mode !== undefined) m.mode = set.mode;
  if (set.uid !== undefined) m.uid = set.uid;
  if (set.gid !== undefined) m.gid = set.gid;
  if (set.size !== undefined) m.size = set.size;
  if (set.atime === 'now') m.atimeNow = true;
  else if (set.atime) m.atime = set.atime;
  if (set.mtime === 'now') m.mtimeNow = true;
  else if (set.mtime) m.mtime = set.mtime;
  return m;
}

export function setattrFromWire(m: pb.SetattrRequest.$Properties): { set: SetAttr; fh?: number } {
  const set: SetAttr = {};
  if (m.mode != null) set.mode = m.mode;
  if (m.uid != null) set.uid = m.uid;
  if (m.gid != null) set.gid = m.gid;
  if (m.size != null) set.size = Number(m.size);
  if (m.atimeNow) set.atime = 'now';
  else if (m.atime) set.atime = ts(m.atime);
  if (m.mtimeNow) set.mtime = 'now';
  else if (m.mtime) set.mtime = ts(m.mtime);
  return m.fh != null ? { set, fh: Number(m.fh) } : { set };
}
