// Changes in storage terms (inode keys "dev:ino", names under directory keys) and their form for
// one receiver: in its connection's node ids, or nothing when it knows none of the nodes involved
// (its kernel cannot have cached anything about them).
import type { Attr } from '../../shared/fs/interface.js';
import { pb } from '../../shared/rpc/wire.js';
import type { NodeIdentity } from './identity.js';
import type { WireChange } from './outbox.js';
import { nameKey, type Place } from './state.js';

const K = pb.Change.Kind;

/** A change in storage terms: inode keys ("dev:ino"), not node ids. */
export interface StorageChange<Origin = unknown> {
  kind: pb.Change.Kind;
  dir?: string;
  name?: Buffer;
  key?: string;
  newDir?: string;
  newName?: Buffer;
  offset?: number;
  length?: number;
  attr?: Attr;
  /** File type (S_IFMT bits) when only that is known. */
  type?: number;
  /** The receiver whose own operation this was (it is not told). */
  origin?: Origin;
  cookie?: number;
  /** CREATE by an open with O_TRUNC. */
  trunc?: boolean;
  /** CREATE of a name that was there already (an open without O_EXCL). */
  existed?: boolean;
}

/**
 * `c` in the node ids of a view, or null when the view knows none of the nodes involved.
 * `placeOf` names an inode for receivers that know its directory but not the inode itself.
 */
export function toReceiver(c: StorageChange, id: NodeIdentity, placeOf: (key: string) => Place | undefined): WireChange | null {
  const node = (k?: string): number => (k ? id.nodeOf(k) ?? 0 : 0);
  const attr = c.attr ? { ...c.attr, uid: 0, gid: 0 } : c.type ? { mode: c.type } : undefined;
  switch (c.kind) {
    case K.CREATE:
    case K.DELETE: {
      const parent = node(c.dir);
      return parent ? { kind: c.kind, parent, name: c.name, node: node(c.key), attr } : null;
    }
    case K.MOVE: {
      const parent = node(c.dir);
      const newParent = node(c.newDir);
      if (parent && newParent) return { kind: K.MOVE, parent, name: c.name, newParent, newName: c.newName, node: node(c.key), attr };
      if (parent) return { kind: K.DELETE, parent, name: c.name, node: node(c.key), attr };
      if (newParent) return { kind: K.CREATE, parent: newParent, name: c.newName, node: node(c.key), attr };
      return null;
    }
    case K.MODIFY:
    case K.ATTRIB: {
      const n = node(c.key);
      const place = c.dir && c.name ? { dir: c.dir, name: c.name } : c.key ? placeOf(c.key) : undefined;
      const parent = place ? node(place.dir) : 0;
      if (!n && !parent) return null;
      return { kind: c.kind, node: n, parent, name: parent ? place!.name : undefined, offset: c.offset ?? 0, length: c.length ?? 0, attr };
    }
    case K.DIR: {
      const parent = node(c.dir);
      return parent ? { kind: K.DIR, parent } : null;
    }
    case K.ALL:
      return { kind: K.ALL };
    default:
      return null;
  }
}

/** The names ("e:") and inodes ("n:") a change is about (see inflight.ts). */
export function touchIds(c: StorageChange): string[] {
  const ids: string[] = [];
  if (c.key) ids.push(`n:${c.key}`);
  if (c.dir && c.name) ids.push(`e:${nameKey(c.dir, c.name)}`);
  if (c.newDir && c.newName) ids.push(`e:${nameKey(c.newDir, c.newName)}`);
  return ids;
}

/**
 * A name that went away and one that appeared with the same inotify move cookie, or the same inode,
 * in one batch are one move. (Events of one name are merged per batch, so the two may come in
 * either order.) The move takes the earlier place: what happened to either name after the move
 * (a new file created at the old name, say) must reach guests after it.
 */
export function pairMoves<O>(list: StorageChange<O>[]): StorageChange<O>[] {
  const deletes = new Map<string, number>();
  list.forEach((c, i) => {
    if (c.kind !== K.DELETE || c.origin) return;
    if (c.cookie) deletes.set(`c${c.cookie}`, i);
    if (c.key) deletes.set(`k${c.key}`, i);
  });
  if (deletes.size === 0) return list;
  const drop = new Set<number>();
  const out = list.slice();
  list.forEach((c, i) => {
    if (c.kind !== K.CREATE || c.origin) return;
    const j = (c.cookie ? deletes.get(`c${c.cookie}`) : undefined) ?? (c.key ? deletes.get(`k${c.key}`) : undefined);
    if (j === undefined || drop.has(j) || drop.has(i)) return;
    const d = list[j];
    const move: StorageChange<O> = { kind: K.MOVE, dir: d.dir, name: d.name, newDir: c.dir, newName: c.name, key: c.key, type: c.type, attr: c.attr };
    out[Math.min(i, j)] = move;
    drop.add(Math.max(i, j));
  });
  return out.filter((_, i) => !drop.has(i));
}

