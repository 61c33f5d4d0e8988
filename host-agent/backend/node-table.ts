// Known nodes of a POSIX export, virtiofsd passthrough style: each holds an O_PATH|O_NOFOLLOW fd
// on its inode, and is keyed by (dev, ino) so that the id the kernel knows stays the same however
// often (and by whichever name) the inode is looked up. Ids are never reused, so a stale id can
// never reach a different file.
//
// Two counts per node:
//   refs  the kernel's lookup count (lookup/create/readdirplus add, forget subtracts);
//   pins  operations currently using `fd`. A node whose refs reach 0 leaves the table at once, but
//         its fd is closed only when no operation still uses it: otherwise the fd number could be
//         reused by another open while a call is in flight, and that call would hit the wrong file.
import { E, FsError } from '../../shared/fs/errors.js';
import { ROOT_ID } from '../../shared/fs/interface.js';
import type { Stat } from '../../native/sys.js';

export interface Node {
  readonly id: number;
  /** O_PATH|O_NOFOLLOW fd of the inode. */
  readonly fd: number;
  readonly key: string;
  /** S_IFMT bits: an inode's type never changes. */
  readonly type: number;
  refs: number;
  pins: number;
  dead: boolean;
}

const S_IFMT = 0o170000;

export class NodeTable {
  private readonly byId = new Map<number, Node>();
  private readonly byKey = new Map<string, Node>();
  private nextId = ROOT_ID + 1;
  /** Told the key of every node that leaves the table (coherence: stop watching what nobody knows). */
  onRemove?: (key: string) => void;

  constructor(
    private readonly maxNodes: number,
    /** Closes a node fd; must not throw. */
    private readonly closeFd: (fd: number) => void,
  ) {}

  get size(): number {
    return this.byId.size;
  }

  static keyOf(stat: Stat): string {
    return `${stat.dev}:${stat.ino}`;
  }

  /** The export's root: id 1, never forgotten. */
  setRoot(fd: number, stat: Stat): Node {
    const node: Node = { id: ROOT_ID, fd, key: NodeTable.keyOf(stat), type: stat.mode & S_IFMT, refs: 1, pins: 0, dead: false };
    this.byId.set(node.id, node);
    this.byKey.set(node.key, node);
    return node;
  }

  /**
   * Takes ownership of `fd` (an O_PATH fd of the inode `stat` describes) and returns the node for
   * that inode with one more lookup reference. If the inode is already known, `fd` is closed.
   */
  insertOrRef(fd: number, stat: Stat): Node {
    const key = NodeTable.keyOf(stat);
    const known = this.byKey.get(key);
    if (known) {
      this.closeFd(fd);
      if (known.id !== ROOT_ID) known.refs++;
      return known;
    }
    if (this.byId.size >= this.maxNodes) {
      this.closeFd(fd);
      throw new FsError(E.ENFILE, 'too many known nodes');
    }
    const node: Node = { id: this.nextId++, fd, key, type: stat.mode & S_IFMT, refs: 1, pins: 0, dead: false };
    this.byId.set(node.id, node);
    this.byKey.set(key, node);
    return node;
  }

  /** The id of the node for inode `key` ("dev:ino"), if known. */
  idOfKey(key: string): number | undefined {
    return this.byKey.get(key)?.id;
  }

  /** The inode key of a known node id. */
  keyOfId(id: number): string | undefined {
    return this.byId.get(id)?.key;
  }

  /** Pins a node for the duration of an operation. Unknown ids: ESTALE (see posix.ts). */
  pin(id: number): Node {
    const node = this.byId.get(id);
    if (!node) throw new FsError(E.ESTALE, `unknown node ${id}`);
    node.pins++;
    return node;
  }

  unpin(node: Node): void {
    node.pins--;
    if (node.dead && node.pins === 0) this.closeFd(node.fd);
  }

  /** Drops `nlookup` kernel references; unknown ids and the root are ignored. */
  forget(id: number, nlookup: number): void {
    const node = this.byId.get(id);
    if (!node || id === ROOT_ID || !(nlookup > 0)) return;
    node.refs -= Math.min(nlookup, node.refs);
    if (node.refs === 0) this.remove(node);
  }

  /** Forgets every node, the root included (the backend is being destroyed). */
  clear(): void {
    for (const node of [...this.byId.values()]) this.remove(node);
  }

  private remove(node: Node): void {
    this.byId.delete(node.id);
    if (this.byKey.get(node.key) === node) this.byKey.delete(node.key);
    node.dead = true;
    if (node.pins === 0) this.closeFd(node.fd);
    this.onRemove?.(node.key);
  }
}
