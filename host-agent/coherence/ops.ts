// What a file operation served for one connection changed in the export, and what it taught us
// about names (lookups and entry-returning replies), in that connection's node ids. Read from the
// request and its reply on the wire, after the operation succeeded.
import type { Attr } from '../../shared/fs/interface.js';
import { attrFromWire } from '../../shared/fs/convert.js';
import type { IncomingRequest, Reply } from '../../shared/rpc/session.js';
import type { pb } from '../../shared/rpc/wire.js';

export type Effect =
  /** `trunc`: opened with O_TRUNC (if the name existed already, this truncated it). */
  | { kind: 'create'; parent: number; name: Buffer; node: number; attr: Attr; trunc?: boolean }
  | { kind: 'delete'; parent: number; name: Buffer }
  | { kind: 'move'; parent: number; name: Buffer; newParent: number; newName: Buffer; exchange: boolean }
  /** Data of `node` changed in [offset, offset + length) (length 0: to the end). */
  | { kind: 'modify'; node: number; offset: number; length: number }
  | { kind: 'attrib'; node: number };

/** An entry the connection's kernel now holds: `name` in `parent` is node `node`. */
export interface Learned {
  parent: number;
  name: Buffer;
  node: number;
  mode: number;
}

const O_TRUNC = 0o1000;
const RENAME_EXCHANGE = 2;
const n = (v: number | null | undefined): number => Number(v ?? 0);
const buf = (v: Uint8Array | null | undefined): Buffer => (v ? Buffer.from(v) : Buffer.alloc(0));

/** Entries a reply handed to the kernel (each is a lookup reference). */
export function learnedFrom(req: IncomingRequest, reply: Reply): Learned[] {
  const m = req.envelope;
  const entry = (parent: number, name: Uint8Array | null | undefined, e: pb.Entry.$Properties | null | undefined): Learned[] =>
    e && n(e.nodeId) ? [{ parent, name: buf(name), node: n(e.nodeId), mode: e.attr?.mode ?? 0 }] : [];
  const b = reply.body;
  switch (req.kind) {
    case 'lookup':
      return entry(n(m.lookup!.parent), m.lookup!.name, b.entry?.entry);
    case 'mknod':
      return entry(n(m.mknod!.parent), m.mknod!.name, b.entry?.entry);
    case 'mkdir':
      return entry(n(m.mkdir!.parent), m.mkdir!.name, b.entry?.entry);
    case 'symlink':
      return entry(n(m.symlink!.parent), m.symlink!.name, b.entry?.entry);
    case 'link':
      return entry(n(m.link!.newParent), m.link!.newName, b.entry?.entry);
    case 'create':
      return entry(n(m.create!.parent), m.create!.name, b.created?.entry);
    case 'readdir': {
      if (!m.readdir!.plus) return [];
      const dir = n(m.readdir!.node);
      return (b.dir?.entries ?? []).flatMap((d) => entry(dir, d.name, d.entry));
    }
    default:
      return [];
  }
}

/** What the (successful) request changed. */
export function effectsOf(req: IncomingRequest, reply: Reply): Effect[] {
  const m = req.envelope;
  const b = reply.body;
  const created = (parent: number, name: Uint8Array | null | undefined, e: pb.Entry.$Properties | null | undefined): Effect[] =>
    e ? [{ kind: 'create', parent, name: buf(name), node: n(e.nodeId), attr: attrFromWire(e.attr) }] : [];
  switch (req.kind) {
    case 'mknod':
      return created(n(m.mknod!.parent), m.mknod!.name, b.entry?.entry);
    case 'mkdir':
      return created(n(m.mkdir!.parent), m.mkdir!.name, b.entry?.entry);
    case 'symlink':
      return created(n(m.symlink!.parent), m.symlink!.name, b.entry?.entry);
    case 'link':
      return created(n(m.link!.newParent), m.link!.newName, b.entry?.entry);
    case 'create': {
      // Without O_EXCL an existing file may have been opened (and truncated): the hub tells.
      const out = created(n(m.create!.parent), m.create!.name, b.created?.entry);
      if (n(m.create!.flags) & O_TRUNC && out[0]?.kind === 'create') out[0].trunc = true;
      return out;
    }
    case 'unlink':
      return [{ kind: 'delete', parent: n(m.unlink!.parent), name: buf(m.unlink!.name) }];
    case 'rmdir':
      return [{ kind: 'delete', parent: n(m.rmdir!.parent), name: buf(m.rmdir!.name) }];
    case 'rename': {
      const r = m.rename!;
      return [{ kind: 'move', parent: n(r.parent), name: buf(r.name), newParent: n(r.newParent), newName: buf(r.newName), exchange: (n(r.flags) & RENAME_EXCHANGE) !== 0 }];
    }
    case 'open':
      return n(m.open!.flags) & O_TRUNC ? [{ kind: 'modify', node: n(m.open!.node), offset: 0, length: 0 }] : [];
    case 'setattr': {
      const s = m.setattr!;
      // A size change drops cached data from the smaller of the sizes on; we do not know the old
      // size here, so all of it.
      return s.size != null ? [{ kind: 'modify', node: n(s.node), offset: 0, length: 0 }] : [{ kind: 'attrib', node: n(s.node) }];
    }
    case 'write': {
      const w = m.write!;
      return [{ kind: 'modify', node: n(w.node), offset: n(w.offset), length: n(b.size?.size) }];
    }
    case 'fallocate': {
      const f = m.fallocate!;
      return [{ kind: 'modify', node: n(f.node), offset: n(f.offset), length: n(f.length) }];
    }
    case 'copyFileRange': {
      const c = m.copyFileRange!;
      return [{ kind: 'modify', node: n(c.nodeOut), offset: n(c.offsetOut), length: n(b.size?.size) }];
    }
    case 'setxattr':
      return [{ kind: 'attrib', node: n(m.setxattr!.node) }];
    case 'removexattr':
      return [{ kind: 'attrib', node: n(m.removexattr!.node) }];
    default:
      return [];
  }
}
