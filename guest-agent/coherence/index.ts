// The guest side of coherence for one mount. The host pushes `Changes` events (in the host's node
// ids for this connection); this turns them into this mount's ids (ResilientFileSystem), keeps its
// records of where nodes are up to date, and hands them to the Applier, which drops what the
// kernel cached and replays the change for inotify watchers (Replayer). It is also the adapter's
// MountCoherence: it answers the replays' own requests, and tells the adapter when a reply raced
// with a change (such a reply is not cached, or is dropped again).
//
// After the connection to the host was lost, nothing tells us what changed meanwhile: when the
// export is mounted again on the new connection, everything cached is invalidated.
import type { FuseRequest, NativeFuseSession } from '../../native/fuse.js';
import { attrFromWire } from '../../shared/fs/convert.js';
import type { Logger } from '../../shared/log.js';
import type { Frame } from '../../shared/rpc/framing.js';
import { pb, type BodyKind } from '../../shared/rpc/wire.js';
import type { HostLink } from '../host-link.js';
import type { Mount, MountCoherence } from '../fuse/adapter.js';
import { ResilientFileSystem as ResilientFS, type ResilientFileSystem } from '../resilient-fs.js';
import { Applier, type GuestChange } from './applier.js';
import { Replayer } from './replayer.js';

const K = pb.Change.Kind;
const EMPTY = Buffer.alloc(0);

export interface GuestCoherenceOptions {
  logger: Logger;
  /** Raise inotify events for changes made elsewhere (needs a writable mount). Default true. */
  inotify?: boolean;
  readOnly?: boolean;
  /** The mount uses the kernel's writeback cache (no data/attribute replays there). */
  writeback?: boolean;
  /** Changes waiting in the guest beyond which they are collapsed (default 4096). */
  maxQueue?: number;
}

export class GuestCoherence implements MountCoherence {
  private readonly replayer: Replayer;
  private applier?: Applier;
  private readonly log: Logger;
  private gen = 0;
  /** Generation at which a node was last touched by a change. */
  private touched = new Map<number, number>();
  /** Changes to whole directories or everything, and forgetting `touched`, count for every node. */
  private broad = 0;
  private readonly onEvent = (frame: Frame & { kind: BodyKind }) => this.received(frame);

  constructor(
    private readonly link: HostLink,
    private readonly fs: ResilientFileSystem,
    private readonly opts: GuestCoherenceOptions,
  ) {
    this.log = opts.logger.child({ component: 'coherence' });
    this.replayer = new Replayer(fs, this.log);
  }

  /** Starts applying pushed changes to `mount` (the mount served with this as its MountCoherence). */
  attach(mount: Mount): void {
    this.replayer.attach(mount);
    this.applier = new Applier(mount, this.fs, this.replayer, { replay: this.opts.inotify !== false && !this.opts.readOnly, replayData: !this.opts.writeback, maxQueue: this.opts.maxQueue }, this.log);
    // One listener per mount on the shared link: many exports are no leak.
    this.link.setMaxListeners(Math.max(this.link.getMaxListeners(), this.link.listenerCount('event') + 10));
    this.link.on('event', this.onEvent);
    mount.closed.then(() => this.link.off('event', this.onEvent), () => undefined);
  }

  /** ResilientFileSystem's onMounted: after a reconnection, what changed meanwhile is unknown. */
  remounted(epoch: number): void {
    if (epoch <= 1 || !this.applier) return;
    this.log.info({ epoch }, 'reconnected: invalidating everything cached');
    this.bump();
    this.broad = this.gen;
    this.applier.push([{ kind: K.ALL, parent: 0, name: EMPTY, node: 0, newParent: 0, newName: EMPTY, offset: 0, length: 0 }]);
  }

  /** Resolves once every change received so far has been applied (tests, benchmarks). */
  idle(): Promise<void> {
    return this.applier?.idle() ?? Promise.resolve();
  }

  get stats(): { replays: number; received: number; applied: number; collapsed: number } {
    return { replays: this.replayer.stats.replays, ...(this.applier?.stats ?? { received: 0, applied: 0, collapsed: 0 }) };
  }

  // ---- MountCoherence ----

  replaying(parent: number, name: Buffer): boolean {
    return this.replayer.isTarget(parent, name);
  }

  intercept(req: Exclude<FuseRequest, { op: 'forget' }>, session: NativeFuseSession): boolean {
    return this.replayer.intercept(req, session);
  }

  forget(items: Array<{ nodeId: number; nlookup: number }>): Array<{ nodeId: number; nlookup: number }> {
    return this.replayer.forget(items);
  }

  get generation(): number {
    return this.gen;
  }

  changedSince(generation: number, node: number): boolean {
    return this.broad > generation || (this.touched.get(node) ?? 0) > generation;
  }

  revalidate(node: number): void {
    this.applier?.push([{ kind: K.DIR, parent: 0, name: EMPTY, node, newParent: 0, newName: EMPTY, offset: 0, length: 0 }]);
  }

  // ---- events ----

  private received(frame: Frame & { kind: BodyKind }): void {
    if (frame.kind !== 'changes' || !this.applier) return;
    const exportId = this.fs.currentExportId;
    if (exportId === undefined || frame.envelope.exportId !== exportId) return;
    const out: GuestChange[] = [];
    this.bump();
    for (const w of frame.envelope.changes?.changes ?? []) {
      const c = this.translate(w);
      if (!c) continue;
      out.push(c);
      this.touch(c);
    }
    if (out.length) this.applier.push(out);
  }

  /** A change in our ids; null when we know none of the nodes it is about. */
  private translate(w: pb.Change.$Properties): GuestChange | null {
    const id = (hostId: number | null | undefined): number => (hostId ? this.fs.guestNodeFor(Number(hostId)) ?? 0 : 0);
    let kind = w.kind ?? K.UNSPECIFIED;
    let parent = id(w.parent);
    let name = w.name ? Buffer.from(w.name) : EMPTY;
    const newParent = id(w.newParent);
    const newName = w.newName ? Buffer.from(w.newName) : EMPTY;
    // Names become replays (syscalls in this guest): one component each, or the change is not
    // trusted beyond "this directory changed".
    if ((name.length && !oneComponent(name)) || (newName.length && !oneComponent(newName))) {
      return parent ? { kind: K.DIR, parent, name: EMPTY, node: 0, newParent: 0, newName: EMPTY, offset: 0, length: 0 } : null;
    }
    const node = id(w.node);
    if (kind === K.MOVE && !(parent && newParent)) {
      if (parent) kind = K.DELETE;
      else if (newParent) [kind, parent, name] = [K.CREATE, newParent, newName];
      else return null;
    }
    switch (kind) {
      case K.CREATE:
      case K.DELETE:
      case K.DIR:
        if (!parent) return null;
        break;
      case K.MODIFY:
      case K.ATTRIB:
        if (!node && !parent) return null;
        break;
      case K.MOVE:
      case K.ALL:
        break;
      default:
        return null;
    }
    return {
      kind, parent, name, node, newParent, newName,
      offset: Number(w.offset ?? 0), length: Number(w.length ?? 0),
      attr: w.attr ? attrFromWire(w.attr) : undefined,
    };
  }

  private bump(): void {
    this.gen++;
    if (this.touched.size > 100_000) {
      this.touched = new Map();
      this.broad = this.gen;
    }
  }

  private touch(c: GuestChange): void {
    if (c.kind === K.ALL || c.kind === K.DIR) {
      this.broad = this.gen;
      return;
    }
    for (const n of [c.parent, c.node, c.newParent]) if (n) this.touched.set(n, this.gen);
    if (!c.node && c.parent && c.name.length) {
      const child = this.fs.childOf(c.parent, c.name);
      if (child) this.touched.set(child, this.gen);
    }
  }
}

/**
 * A ResilientFileSystem for one export and the coherence of its mount, wired together. Mount the
 * file system with `{ coherence }` in the adapter options, then call `coherence.attach(mount)`.
 */
export function coherentExport(
  link: HostLink,
  exportName: string,
  opts: { logger: Logger; retryWindowMs?: number; requestDeadlineMs?: number; readOnly?: boolean; inotify?: boolean; writeback?: boolean },
): { remote: ResilientFileSystem; coherence: GuestCoherence } {
  let coherence: GuestCoherence | undefined;
  const remote = new ResilientFS(link, exportName, {
    logger: opts.logger,
    retryWindowMs: opts.retryWindowMs,
    requestDeadlineMs: opts.requestDeadlineMs,
    onMounted: (epoch) => coherence?.remounted(epoch),
  });
  coherence = new GuestCoherence(link, remote, { logger: opts.logger, readOnly: opts.readOnly, inotify: opts.inotify, writeback: opts.writeback });
  return { remote, coherence };
}

function oneComponent(name: Buffer): boolean {
  return name.length <= 255 && !name.includes(0x2f) && !name.includes(0) && !(name[0] === 0x2e && (name.length === 1 || (name.length === 2 && name[1] === 0x2e)));
}
