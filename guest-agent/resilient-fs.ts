// Keeps a guest mount working across host-agent restarts and transport resets.
//
// The kernel holds node ids and file handles for as long as it likes; the host's ids are valid only
// on the connection (epoch) that issued them. So the kernel gets ids of our own, and we remember for
// each node its parent and name, and for each handle its node and open flags. After a reconnection,
// a node is found again by looking its name up under its (found again) parent, checked to be the
// same inode, and a handle is opened again with the same flags (minus O_CREAT/O_EXCL/O_TRUNC).
//
// Operations interrupted by a lost connection are retried once the link is back, within a bounded
// window counted from the loss of the connection (then they fail with ENOTCONN): reads, writes at an offset, getattr and the like are safe
// to repeat. Creating and removing operations are repeated too, and a repeat that finds its own
// earlier effect (EEXIST after mkdir, ENOENT after unlink) counts as success — as NFS clients do.
import type {
  FileSystem, Caller, Entry, Attr, SetAttr, OpenResult, CreateResult, DirEntry, StatFs,
} from '../shared/fs/interface.js';
import { ROOT_ID } from '../shared/fs/interface.js';
import { FsError, E } from '../shared/fs/errors.js';
import type { Logger } from '../shared/log.js';
import type { HostLink } from './host-link.js';
import { RemoteFileSystem } from './remote-fs.js';

const INTERNAL: Caller = { uid: 0, gid: 0, pid: 0 };
const REOPEN_MASK = ~(0o100 | 0o200 | 0o1000); // O_CREAT | O_EXCL | O_TRUNC
/** Deepest chain of parents found again by name after a reconnection (PATH_MAX / 2: "a/" each). */
const MAX_RELOOKUP_DEPTH = 2048;
/** Earlier names remembered per node (hard links), for a relookup whose first name is gone. */
const MAX_OTHER_NAMES = 8;

interface Place {
  parent: number;
  name: Buffer;
}

/** An earlier name of a node, with the path it had then: its parent may be forgotten since. */
interface OtherName extends Place {
  path?: Buffer[];
}

interface NodeRecord extends Place {
  /**
   * Other names the node was seen under before `name` (hard links: the kernel looks a file up by
   * each of its names, and `name` follows the latest), most recent first. Only hints, checked by
   * inode: if `name` was removed, a relookup after a reconnection finds the file by one of these,
   * under its parent if we still know it, else by the path it had (the kernel may have forgotten
   * a directory that only led to a name it no longer uses).
   */
  otherNames?: OtherName[];
  /** Where `name` was when the kernel forgot its parent: it is looked up by that path then. */
  path?: Buffer[];
  ino: number;
  /** References the kernel holds (lookup count). */
  lookups: number;
  hostId: number;
  epoch: number;
  /** References we hold on hostId in `epoch`, returned to the host when the kernel forgets. */
  hostLookups: number;
}

interface HandleRecord {
  node: number;
  flags: number;
  dir: boolean;
  hostFh: number;
  epoch: number;
}

export interface ResilientOptions {
  logger: Logger;
  /** How long an operation waits for the host to come back before failing with ENOTCONN. */
  retryWindowMs?: number;
  /** Deadline of one request on the wire. */
  requestDeadlineMs?: number;
  /** Called each time the export is mounted on a connection (epoch 1 first; later ones after a reconnection). */
  onMounted?: (epoch: number) => void;
}

export class ResilientFileSystem implements FileSystem {
  private readonly nodes = new Map<number, NodeRecord>();
  /** "parent/name" -> our id, for the names in `nodes` (coherence events name entries). */
  private readonly byName = new Map<string, number>();
  /** Our id -> the nodes whose parent it is, to give them a path when the kernel forgets it. */
  private readonly children = new Map<number, Set<number>>();
  /** Host node id -> our id, for the current export epoch only. */
  private byHost = new Map<number, number>();
  private readonly handles = new Map<number, HandleRecord>();
  private readonly resolving = new Map<number, Promise<number>>();
  private nextNode = ROOT_ID + 1;
  private nextFh = 1;
  private exportId = 0;
  private exportEpoch = 0;
  private mounting: Promise<void> | null = null;
  private readonly remote: RemoteFileSystem;
  private readonly retryWindowMs: number;
  private readonly log: Logger;
  private readonly onMounted?: (epoch: number) => void;
  private impatient: (caller: Caller) => boolean = () => false;

  constructor(private readonly hostLink: HostLink, readonly exportName: string, options: ResilientOptions) {
    this.log = options.logger;
    this.retryWindowMs = options.retryWindowMs ?? 30_000;
    this.onMounted = options.onMounted;
    this.remote = new RemoteFileSystem(() => {
      const session = this.hostLink.activeSession;
      if (!session || this.exportEpoch !== this.hostLink.epoch) throw new FsError(E.ENOTCONN, 'connection to the host agent lost');
      return { session, exportId: this.exportId };
    }, { deadlineMs: options.requestDeadlineMs });
  }

  /**
   * Callers for whom a lost host is an immediate ENOTCONN, never a wait: the coherence replay
   * helper, whose syscall holds the mount busy (an unmount would wait for it) while it waits.
   */
  failFastFor(test: (caller: Caller) => boolean): void {
    this.impatient = test;
  }

  // ---- epochs and retries ----

  /** Waits until connected and the export is mounted on the current connection; returns the epoch. */
  private async ready(deadline: number): Promise<number> {
    for (;;) {
      await this.hostLink.current(Math.max(0, deadline - Date.now()));
      const epoch = this.hostLink.epoch;
      if (this.exportEpoch === epoch) return epoch;
      this.mounting ??= this.mountExport(epoch).finally(() => (this.mounting = null));
      await this.mounting;
      if (this.exportEpoch === this.hostLink.epoch) return this.exportEpoch;
    }
  }

  private async mountExport(epoch: number): Promise<void> {
    const session = this.hostLink.activeSession;
    if (!session) return;
    try {
      const m = await this.hostLink.mountExport(this.exportName, session);
      if (this.hostLink.epoch !== epoch) return;
      this.exportId = m.exportId;
      if (this.exportEpoch > 0) this.log.info({ epoch }, 'export mounted again after reconnecting');
      this.exportEpoch = epoch;
      this.byHost = new Map();
      this.onMounted?.(epoch);
    } catch (err) {
      if (err instanceof FsError && err.errno === E.ENOENT) {
        throw new FsError(E.ESTALE, `export ${this.exportName} is no longer offered to this VM`);
      }
      throw err;
    }
  }

  /**
   * Runs `op` against the current connection. If the connection is lost while it runs, waits for
   * the next one and runs it again, until the retry window closes.
   */
  private async run<T>(caller: Caller, op: (epoch: number) => Promise<T>, onRepeat?: (err: FsError) => Promise<T> | null): Promise<T> {
    // The window counts from when the connection was lost, not from each operation: once the host
    // has been away longer, operations fail at once (ENOTCONN) until it is back, instead of each
    // one waiting the whole window again. Impatient callers never wait.
    const window = this.impatient(caller) ? 0 : this.retryWindowMs;
    const deadline = (this.hostLink.disconnectedAt ?? Date.now()) + window;
    let repeated = false;
    for (;;) {
      const epoch = await this.ready(deadline);
      try {
        return await op(epoch);
      } catch (err) {
        // Only a connection that really went away is a reason to repeat. An ENOTCONN *reply* from
        // a live host (a FUSE-based storage mount whose daemon is gone says that) is the answer.
        if (err instanceof FsError && err.errno === E.ENOTCONN && this.connectionLost(epoch) && Date.now() < deadline) {
          repeated = true;
          continue;
        }
        if (repeated && err instanceof FsError && onRepeat) {
          const answer = onRepeat(err);
          if (answer) return answer;
        }
        throw err;
      }
    }
  }

  /** True when the connection `epoch` ran on is gone (closed, or replaced by a newer one). */
  private connectionLost(epoch: number): boolean {
    return !this.hostLink.connected || this.hostLink.epoch !== epoch || this.exportEpoch !== epoch;
  }

  // ---- node and handle translation ----

  /**
   * The host's id for one of our nodes on the connection `epoch`, finding it again by name if it
   * was known on an earlier one. `chain` holds the nodes whose relookup waits for this one: a
   * node met twice is a cycle in the remembered parents (directories moved on the storage side),
   * and a chain deeper than any real path is refused too; both are ESTALE, never a stack overflow.
   */
  private async hostNode(id: number, epoch: number, chain: ReadonlySet<number> = new Set()): Promise<number> {
    if (id === ROOT_ID) return ROOT_ID;
    const rec = this.nodes.get(id);
    if (!rec) throw new FsError(E.ESTALE, `node ${id} is not known`);
    if (rec.epoch === epoch) return rec.hostId;
    if (chain.has(id) || chain.size >= MAX_RELOOKUP_DEPTH) {
      throw new FsError(E.ESTALE, `${rec.name.toString()} cannot be found again: its remembered parents form a cycle or a chain over ${MAX_RELOOKUP_DEPTH} deep (moved on the storage side); look it up again`);
    }
    let pending = this.resolving.get(id);
    if (!pending) {
      pending = this.relookup(id, rec, epoch, new Set(chain).add(id)).finally(() => this.resolving.delete(id));
      this.resolving.set(id, pending);
    }
    return pending;
  }

  /**
   * Finds a node again on a new connection: look its name up under its parent, same inode or
   * ESTALE. A file with several names is tried under each name it was seen under, its latest
   * first (that one may have been removed while another still exists); the first one's error is
   * the answer if none fits.
   */
  private async relookup(id: number, rec: NodeRecord, epoch: number, chain: ReadonlySet<number>): Promise<number> {
    const places: OtherName[] = [{ parent: rec.parent, name: rec.name, path: rec.path }, ...(rec.otherNames ?? [])];
    let firstError: unknown;
    for (const place of places) {
      let entry: Entry;
      try {
        entry = await this.lookupPlace(rec, place, epoch, chain);
      } catch (err) {
        // A lost connection is for run() to repeat, not a reason to try another name.
        if (!(err instanceof FsError) || err.errno === E.ENOTCONN || places.length === 1) throw err;
        firstError ??= err;
        continue;
      }
      if (rec.epoch !== epoch) {
        rec.hostId = entry.nodeId;
        rec.epoch = epoch;
        rec.hostLookups = 1;
        this.byHost.set(entry.nodeId, id);
        // The names tried before the one that worked are gone. It becomes the node's name, unless
        // it was found by its path (its parent is not a node we know): then it is tried first.
        if (place !== places[0]) {
          const rest = rec.otherNames!.slice(Math.max(0, rec.otherNames!.indexOf(place)));
          if (place.parent === ROOT_ID || this.nodes.has(place.parent)) {
            rec.otherNames = rest.slice(1);
            this.relocate(id, rec, place.parent, place.name);
          } else {
            rec.otherNames = rest;
          }
        }
      } else {
        this.remote.forget([{ nodeId: entry.nodeId, nlookup: 1 }]); // resolved twice; keep one reference
      }
      return rec.hostId;
    }
    throw firstError;
  }

  /** The host's entry for `place` if it is still the node's inode (else ESTALE). */
  private async lookupPlace(rec: NodeRecord, place: OtherName, epoch: number, chain: ReadonlySet<number>): Promise<Entry> {
    const walked = !this.nodes.has(place.parent) && place.parent !== ROOT_ID && place.path !== undefined;
    const parent = walked ? await this.walk(place.path!.slice(0, -1)) : await this.hostNode(place.parent, epoch, chain);
    let entry: Entry;
    try {
      entry = await this.remote.lookup(INTERNAL, parent, place.name);
    } finally {
      if (walked && parent !== ROOT_ID) this.remote.forget([{ nodeId: parent, nlookup: 1 }]);
    }
    if (entry.attr.ino !== rec.ino) {
      this.remote.forget([{ nodeId: entry.nodeId, nlookup: 1 }]);
      throw new FsError(E.ESTALE, `${place.name.toString()} was replaced on the storage side while the host agent was away`);
    }
    return entry;
  }

  /** The host's id of the directory at `path` from the root, holding one reference (none for the root). */
  private async walk(path: Buffer[]): Promise<number> {
    let dir = ROOT_ID;
    for (const name of path) {
      const next = await this.remote.lookup(INTERNAL, dir, name).finally(() => {
        if (dir !== ROOT_ID) this.remote.forget([{ nodeId: dir, nlookup: 1 }]);
      });
      dir = next.nodeId;
    }
    return dir;
  }

  /** Takes an entry from the host and gives the kernel our id for it. */
  private adopt(parent: number, name: Buffer, entry: Entry, epoch: number): Entry {
    let id = this.byHost.get(entry.nodeId);
    let rec = id !== undefined ? this.nodes.get(id) : undefined;
    if (!rec || rec.epoch !== epoch) {
      // Not seen on this connection yet. A node of an earlier one, known by this name and with
      // this inode, is the same file (as relookup judges): it keeps its id, so the kernel does
      // not get a second inode for one file (whose caches would go stale, each missing what is
      // done through the other).
      const earlier = this.byName.get(nameKey(parent, name));
      const known = earlier !== undefined ? this.nodes.get(earlier) : undefined;
      if (known && known.epoch !== epoch && known.ino === entry.attr.ino) {
        known.hostId = entry.nodeId;
        known.epoch = epoch;
        known.hostLookups = 0; // counted below, with this lookup's reference
        this.byHost.set(entry.nodeId, earlier!);
        id = earlier;
        rec = known;
      }
    }
    if (id !== undefined && rec && rec.epoch === epoch) {
      rec.lookups++;
      rec.hostLookups++;
      // The same inode under another name: a hard link (or a rename made elsewhere). Keep the
      // name it had too, in case it is this new one that goes away.
      if (rec.parent !== parent || !rec.name.equals(name)) {
        const others = (rec.otherNames ?? []).filter((p) => p.parent !== parent || !p.name.equals(name));
        rec.otherNames = [{ parent: rec.parent, name: rec.name, path: this.pathTo(id) }, ...others].slice(0, MAX_OTHER_NAMES);
      }
      this.relocate(id, rec, parent, name);
      rec.ino = entry.attr.ino;
    } else {
      id = this.nextNode++;
      this.nodes.set(id, { parent, name: Buffer.from(name), ino: entry.attr.ino, lookups: 1, hostId: entry.nodeId, epoch, hostLookups: 1 });
      this.byHost.set(entry.nodeId, id);
      this.byName.set(nameKey(parent, name), id);
      this.addChild(parent, id);
    }
    return { ...entry, nodeId: id };
  }

  private async hostHandle(fh: number, epoch: number): Promise<{ node: number; hostFh: number }> {
    const h = this.handles.get(fh);
    if (!h) throw new FsError(E.EBADF, `file handle ${fh} is not open`);
    const node = await this.hostNode(h.node, epoch);
    if (h.epoch !== epoch) {
      const reopened = h.dir ? await this.remote.opendir(INTERNAL, node, h.flags) : await this.remote.open(INTERNAL, node, h.flags & REOPEN_MASK);
      if (h.epoch !== epoch) {
        h.hostFh = reopened.fh;
        h.epoch = epoch;
      }
    }
    return { node, hostFh: h.hostFh };
  }

  private newHandle(node: number, flags: number, dir: boolean, hostFh: number, epoch: number): number {
    const fh = this.nextFh++;
    this.handles.set(fh, { node, flags, dir, hostFh, epoch });
    return fh;
  }

  /** Our own rename changes where a node lives; remember it so a later relookup finds it. */
  private moved(parent: number, name: Buffer, newParent: number, newName: Buffer, exchange = false): void {
    const from = this.byName.get(nameKey(parent, name));
    const to = this.byName.get(nameKey(newParent, newName));
    if (to !== undefined && to !== from) {
      // RENAME_EXCHANGE: the other one moved the other way; otherwise it was replaced (no name now).
      if (exchange) this.relocate(to, this.nodes.get(to)!, parent, name);
      else this.byName.delete(nameKey(newParent, newName));
    }
    if (from !== undefined) this.relocate(from, this.nodes.get(from)!, newParent, newName);
  }

  private relocate(id: number, rec: NodeRecord, parent: number, name: Buffer): void {
    if (rec.parent === parent && rec.name.equals(name)) return;
    if (this.byName.get(nameKey(rec.parent, rec.name)) === id) this.byName.delete(nameKey(rec.parent, rec.name));
    this.dropChild(rec.parent, id);
    rec.parent = parent;
    rec.name = Buffer.from(name);
    rec.path = undefined;
    this.byName.set(nameKey(parent, name), id);
    this.addChild(parent, id);
  }

  private addChild(parent: number, id: number): void {
    let set = this.children.get(parent);
    if (!set) this.children.set(parent, (set = new Set()));
    set.add(id);
  }

  private dropChild(parent: number, id: number): void {
    const set = this.children.get(parent);
    if (set?.delete(id) && set.size === 0) this.children.delete(parent);
  }

  /**
   * Names from the root to node `id`: through its parents, or from the path an ancestor was given
   * when the kernel forgot that ancestor's parent. Undefined if we cannot tell.
   */
  private pathTo(id: number): Buffer[] | undefined {
    const names: Buffer[] = [];
    for (let depth = 0; id !== ROOT_ID; depth++) {
      const rec = this.nodes.get(id);
      if (!rec || depth > MAX_RELOOKUP_DEPTH) return undefined;
      if (rec.path && !this.nodes.has(rec.parent)) return [...rec.path, ...names.reverse()];
      names.push(rec.name);
      id = rec.parent;
    }
    return names.reverse();
  }

  // ---- FileSystem ----

  lookup(caller: Caller, parent: number, name: Buffer): Promise<Entry> {
    return this.run(caller, async (epoch) => this.adopt(parent, name, await this.remote.lookup(caller, await this.hostNode(parent, epoch), name), epoch));
  }

  forget(items: ReadonlyArray<{ nodeId: number; nlookup: number }>): void {
    const toHost: Array<{ nodeId: number; nlookup: number }> = [];
    for (const { nodeId, nlookup } of items) {
      const rec = this.nodes.get(nodeId);
      if (!rec || nodeId === ROOT_ID) continue;
      rec.lookups -= nlookup;
      if (rec.lookups > 0) continue;
      // Nodes still known under this one (an open file whose directory the kernel let go of)
      // will be found again by their path from now on.
      for (const child of this.children.get(nodeId) ?? []) {
        const c = this.nodes.get(child);
        if (c) c.path = this.pathTo(child);
      }
      this.children.delete(nodeId);
      this.dropChild(rec.parent, nodeId);
      this.nodes.delete(nodeId);
      if (this.byName.get(nameKey(rec.parent, rec.name)) === nodeId) this.byName.delete(nameKey(rec.parent, rec.name));
      if (rec.epoch === this.exportEpoch) {
        this.byHost.delete(rec.hostId);
        toHost.push({ nodeId: rec.hostId, nlookup: rec.hostLookups });
      }
    }
    if (toHost.length) this.remote.forget(toHost);
  }

  getattr(caller: Caller, node: number, fh?: number): Promise<Attr> {
    return this.run(caller, async (epoch) => this.remote.getattr(caller, await this.hostNode(node, epoch), fh !== undefined && this.handles.has(fh) ? (await this.hostHandle(fh, epoch)).hostFh : undefined));
  }

  setattr(caller: Caller, node: number, set: SetAttr, fh?: number): Promise<Attr> {
    return this.run(caller, async (epoch) => this.remote.setattr(caller, await this.hostNode(node, epoch), set, fh !== undefined && this.handles.has(fh) ? (await this.hostHandle(fh, epoch)).hostFh : undefined));
  }

  readlink(caller: Caller, node: number): Promise<Buffer> {
    return this.run(caller, async (epoch) => this.remote.readlink(caller, await this.hostNode(node, epoch)));
  }

  private creating(caller: Caller, parent: number, name: Buffer, make: (hostParent: number, epoch: number) => Promise<Entry>): Promise<Entry> {
    return this.run(
      caller,
      async (epoch) => this.adopt(parent, name, await make(await this.hostNode(parent, epoch), epoch), epoch),
      (err) => (err.errno === E.EEXIST ? this.lookup(caller, parent, name) : null),
    );
  }

  mknod(caller: Caller, parent: number, name: Buffer, mode: number, rdev: number): Promise<Entry> {
    return this.creating(caller, parent, name, (p) => this.remote.mknod(caller, p, name, mode, rdev));
  }

  mkdir(caller: Caller, parent: number, name: Buffer, mode: number): Promise<Entry> {
    return this.creating(caller, parent, name, (p) => this.remote.mkdir(caller, p, name, mode));
  }

  symlink(caller: Caller, parent: number, name: Buffer, target: Buffer): Promise<Entry> {
    return this.creating(caller, parent, name, (p) => this.remote.symlink(caller, p, name, target));
  }

  link(caller: Caller, node: number, newParent: number, newName: Buffer): Promise<Entry> {
    return this.creating(caller, newParent, newName, async (p, epoch) => this.remote.link(caller, await this.hostNode(node, epoch), p, newName));
  }

  unlink(caller: Caller, parent: number, name: Buffer): Promise<void> {
    return this.run(
      caller,
      async (epoch) => this.remote.unlink(caller, await this.hostNode(parent, epoch), name),
      (err) => (err.errno === E.ENOENT ? Promise.resolve() : null),
    );
  }

  rmdir(caller: Caller, parent: number, name: Buffer): Promise<void> {
    return this.run(
      caller,
      async (epoch) => this.remote.rmdir(caller, await this.hostNode(parent, epoch), name),
      (err) => (err.errno === E.ENOENT ? Promise.resolve() : null),
    );
  }

  async rename(caller: Caller, parent: number, name: Buffer, newParent: number, newName: Buffer, flags: number): Promise<void> {
    await this.run(
      caller,
      async (epoch) => this.remote.rename(caller, await this.hostNode(parent, epoch), name, await this.hostNode(newParent, epoch), newName, flags),
      (err) => (err.errno === E.ENOENT ? this.lookup(INTERNAL, newParent, newName).then((e) => this.forget([{ nodeId: e.nodeId, nlookup: 1 }])) : null),
    );
    this.moved(parent, name, newParent, newName, (flags & 2) !== 0 /* RENAME_EXCHANGE */);
  }

  open(caller: Caller, node: number, flags: number): Promise<OpenResult> {
    return this.run(caller, async (epoch) => {
      const r = await this.remote.open(caller, await this.hostNode(node, epoch), flags);
      return { ...r, fh: this.newHandle(node, flags, false, r.fh, epoch) };
    });
  }

  create(caller: Caller, parent: number, name: Buffer, mode: number, flags: number): Promise<CreateResult> {
    return this.run(
      caller,
      async (epoch) => {
        const r = await this.remote.create(caller, await this.hostNode(parent, epoch), name, mode, flags);
        const entry = this.adopt(parent, name, r.entry, epoch);
        return { ...r, entry, fh: this.newHandle(entry.nodeId, flags, false, r.fh, epoch) };
      },
      // Our create went through before the connection dropped: open what it made.
      (err) => (err.errno === E.EEXIST ? this.lookup(caller, parent, name).then(async (entry) => ({ entry, ...(await this.open(caller, entry.nodeId, flags & REOPEN_MASK)) })) : null),
    );
  }

  read(caller: Caller, node: number, fh: number, offset: number, size: number): Promise<Buffer> {
    return this.run(caller, async (epoch) => {
      const h = await this.hostHandle(fh, epoch);
      return this.remote.read(caller, h.node, h.hostFh, offset, size);
    });
  }

  write(caller: Caller, node: number, fh: number, offset: number, data: Buffer): Promise<number> {
    return this.run(caller, async (epoch) => {
      const h = await this.hostHandle(fh, epoch);
      return this.remote.write(caller, h.node, h.hostFh, offset, data);
    });
  }

  flush(caller: Caller, node: number, fh: number): Promise<void> {
    return this.run(caller, async (epoch) => {
      const h = await this.hostHandle(fh, epoch);
      return this.remote.flush(caller, h.node, h.hostFh);
    });
  }

  fsync(caller: Caller, node: number, fh: number, datasync: boolean): Promise<void> {
    return this.run(caller, async (epoch) => {
      const h = await this.hostHandle(fh, epoch);
      return this.remote.fsync(caller, h.node, h.hostFh, datasync);
    });
  }

  async release(caller: Caller, node: number, fh: number): Promise<void> {
    const h = this.handles.get(fh);
    this.handles.delete(fh);
    // A handle from an earlier connection died with it on the host: nothing to release there.
    if (!h || h.epoch !== this.exportEpoch || !this.hostLink.connected) return;
    const hostNode = this.nodes.get(h.node)?.hostId ?? ROOT_ID;
    await (h.dir ? this.remote.releasedir(caller, hostNode, h.hostFh) : this.remote.release(caller, hostNode, h.hostFh)).catch((err) => {
      if (!(err instanceof FsError && err.errno === E.ENOTCONN)) throw err;
    });
  }

  opendir(caller: Caller, node: number, flags: number): Promise<OpenResult> {
    return this.run(caller, async (epoch) => {
      const r = await this.remote.opendir(caller, await this.hostNode(node, epoch), flags);
      return { ...r, fh: this.newHandle(node, flags, true, r.fh, epoch) };
    });
  }

  readdir(caller: Caller, node: number, fh: number, offset: number, maxEntries: number, plus: boolean): Promise<DirEntry[]> {
    return this.run(caller, async (epoch) => {
      const h = await this.hostHandle(fh, epoch);
      const entries = await this.remote.readdir(caller, h.node, h.hostFh, offset, maxEntries, plus);
      return entries.map((d) => (d.entry ? { ...d, entry: this.adopt(node, d.name, d.entry, epoch) } : d));
    });
  }

  fsyncdir(caller: Caller, node: number, fh: number, datasync: boolean): Promise<void> {
    return this.run(caller, async (epoch) => {
      const h = await this.hostHandle(fh, epoch);
      return this.remote.fsyncdir(caller, h.node, h.hostFh, datasync);
    });
  }

  releasedir(caller: Caller, node: number, fh: number): Promise<void> {
    return this.release(caller, node, fh);
  }

  statfs(caller: Caller, node: number): Promise<StatFs> {
    return this.run(caller, async (epoch) => this.remote.statfs(caller, await this.hostNode(node, epoch)));
  }

  setxattr(caller: Caller, node: number, name: Buffer, value: Buffer, flags: number): Promise<void> {
    return this.run(caller, async (epoch) => this.remote.setxattr(caller, await this.hostNode(node, epoch), name, value, flags));
  }

  getxattr(caller: Caller, node: number, name: Buffer, size: number): Promise<Buffer | number> {
    return this.run(caller, async (epoch) => this.remote.getxattr(caller, await this.hostNode(node, epoch), name, size));
  }

  listxattr(caller: Caller, node: number, size: number): Promise<Buffer | number> {
    return this.run(caller, async (epoch) => this.remote.listxattr(caller, await this.hostNode(node, epoch), size));
  }

  removexattr(caller: Caller, node: number, name: Buffer): Promise<void> {
    return this.run(caller, async (epoch) => this.remote.removexattr(caller, await this.hostNode(node, epoch), name));
  }

  access(caller: Caller, node: number, mask: number): Promise<void> {
    return this.run(caller, async (epoch) => this.remote.access(caller, await this.hostNode(node, epoch), mask));
  }

  fallocate(caller: Caller, node: number, fh: number, mode: number, offset: number, length: number): Promise<void> {
    return this.run(caller, async (epoch) => {
      const h = await this.hostHandle(fh, epoch);
      return this.remote.fallocate(caller, h.node, h.hostFh, mode, offset, length);
    });
  }

  copyFileRange(
    caller: Caller, nodeIn: number, fhIn: number, offsetIn: number,
    nodeOut: number, fhOut: number, offsetOut: number, length: number, flags: number,
  ): Promise<number> {
    return this.run(caller, async (epoch) => {
      const a = await this.hostHandle(fhIn, epoch);
      const b = await this.hostHandle(fhOut, epoch);
      return this.remote.copyFileRange(caller, a.node, a.hostFh, offsetIn, b.node, b.hostFh, offsetOut, length, flags);
    });
  }

  lseek(caller: Caller, node: number, fh: number, offset: number, whence: number): Promise<number> {
    return this.run(caller, async (epoch) => {
      const h = await this.hostHandle(fh, epoch);
      return this.remote.lseek(caller, h.node, h.hostFh, offset, whence);
    });
  }

  async destroy(): Promise<void> {
    this.nodes.clear();
    this.byName.clear();
    this.children.clear();
    this.handles.clear();
  }

  // ---- for coherence (guest-agent/coherence/) ----

  /** Our node id for a host node id on the current connection (coherence events use it). */
  guestNodeFor(hostId: number): number | undefined {
    return hostId === ROOT_ID ? ROOT_ID : this.byHost.get(hostId);
  }

  /** The export id the host gave us on the current connection, if mounted there (else undefined). */
  get currentExportId(): number | undefined {
    return this.exportEpoch === this.hostLink.epoch && this.hostLink.connected ? this.exportId : undefined;
  }

  /** The node we know as `name` in `parent`. */
  childOf(parent: number, name: Buffer): number | undefined {
    return this.byName.get(nameKey(parent, name));
  }

  /** Where a node is, as names from the root (as far as we know); undefined if we cannot tell. */
  pathOf(id: number): Buffer[] | undefined {
    const names: Buffer[] = [];
    for (let depth = 0; id !== ROOT_ID; depth++) {
      const rec = this.nodes.get(id);
      if (!rec || depth > 4096) return undefined;
      names.push(rec.name);
      id = rec.parent;
    }
    return names.reverse();
  }

  /** The parent and name we know a node under. */
  placeOf(id: number): { parent: number; name: Buffer } | undefined {
    const rec = this.nodes.get(id);
    return rec ? { parent: rec.parent, name: rec.name } : undefined;
  }

  /** A change made elsewhere moved an entry. */
  noteMoved(parent: number, name: Buffer, newParent: number, newName: Buffer): void {
    this.moved(parent, name, newParent, newName);
  }

  /** A change made elsewhere removed an entry: the node (if still known) has no name any more. */
  noteRemoved(parent: number, name: Buffer): void {
    this.byName.delete(nameKey(parent, name));
  }

  /** One more kernel reference on a known node (the kernel was given it in a reply we made). */
  addKernelRef(id: number): boolean {
    const rec = this.nodes.get(id);
    if (!rec) return id === ROOT_ID;
    rec.lookups++;
    return true;
  }

  /** Every node we know, with where it is. */
  *knownNodes(): IterableIterator<{ id: number; parent: number; name: Buffer }> {
    for (const [id, rec] of this.nodes) yield { id, parent: rec.parent, name: rec.name };
  }
}

function nameKey(parent: number, name: Buffer): string {
  return `${parent}/${name.toString('latin1')}`;
}
