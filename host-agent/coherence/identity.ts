// How the coherence hub sees the nodes of one export view in storage terms. Every connection's
// view has its own node table (its own ids), so a change is described by inode identity
// ("dev:ino" keys) and translated into each receiver's ids; a receiver that does not know a node
// cannot have it cached and is not told about it.
//
// The POSIX backend implements this (backend/posix.ts). Views are often wrapped (uid/gid mapping),
// so the identity is attached to the outermost FileSystem object with withIdentity() and found
// again by the server with identityOf().
import type { FileSystem } from '../../shared/fs/interface.js';
import type { Stat } from '../../native/sys.js';

export interface NodeIdentity {
  /** "dev:ino" of a node this view knows. */
  keyOf(nodeId: number): string | undefined;
  /** This view's node id for an inode, if the view knows it. */
  nodeOf(key: string): number | undefined;
  /** lstat of `name` in the directory node `dir`; null when there is no such entry. */
  statChild(dir: number, name: Buffer): Promise<Stat | null>;
  /** fstat of a node. */
  statNode(nodeId: number): Promise<Stat>;
  /** Runs `fn` with an fd of the node, kept open for the duration of the synchronous call. */
  withNodeFd<T>(nodeId: number, fn: (fd: number) => T): T | undefined;
  /** Tells `listener` the key of every node the view forgets (one listener per view). */
  onNodeDropped(listener: (key: string) => void): void;
  /**
   * Tells `listener` when the view was opened again on another filesystem (its storage was
   * unmounted or replaced, then mounted again): every node the guest knew is gone.
   */
  onStorageReplaced?(listener: () => void): void;
}

const identities = new WeakMap<FileSystem, NodeIdentity>();

/** Marks `view` (as the server will hold it) as having the node identities of `identity`. */
export function withIdentity<T extends FileSystem>(view: T, identity: NodeIdentity): T {
  identities.set(view, identity);
  return view;
}

export function identityOf(view: FileSystem): NodeIdentity | undefined {
  return identities.get(view);
}

export function keyOfStat(st: Stat): string {
  return `${st.dev}:${st.ino}`;
}
