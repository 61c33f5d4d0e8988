// The host side of coherence: one hub per host agent. Every mounted export view with node
// identities (a POSIX view) is a Subscription. Changes come from two sources:
//   - operations the host serves for a connection (exact: entry, attributes, byte range), told at
//     once to every OTHER subscription that knows the nodes involved;
//   - an inotify watch of the storage directories guests know (changes by anyone else: processes
//     on the host, other storage clients whose changes this host sees), told to every subscription.
// Both end up in one per-tick flush that (1) takes a stat snapshot of what changed, (2) compares it
// with what it recorded when it last pushed (KnownState) -- equal means the inotify event is the echo
// of a change already pushed, so it is dropped, and since the snapshot is taken before the push,
// nothing that happened after it can be hidden -- (3) pairs moves, and (4) translates each change
// into every receiver's node ids (skipping receivers that know none of them) and queues it in the
// receiver's Outbox.
import { ROOT_ID, type Attr, type FileSystem } from '../../shared/fs/interface.js';
import type { Logger } from '../../shared/log.js';
import type { IncomingRequest, Reply, Session } from '../../shared/rpc/session.js';
import type { Stat } from '../../native/sys.js';
import { IN } from '../../native/inotify.js';
import { identityOf, keyOfStat, type NodeIdentity } from './identity.js';
import { effectsOf, learnedFrom } from './ops.js';
import { KnownState, Lru, TOLD_ATTR, TOLD_DATA, fingerprint, nameKey, type NameState } from './state.js';
import { Outbox, type OutboxLimits, type WireChange } from './outbox.js';
import { InFlight, touchesOf } from './inflight.js';
import { pairMoves, toReceiver, touchIds, type StorageChange as Change } from './translate.js';
import { StorageWatcher, type WatchEvent } from './watcher.js';
import { pb } from '../../shared/rpc/wire.js';
import { statToAttr } from '../backend/posix.js';

const K = pb.Change.Kind;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
/** See fanOut(). */
const ECHO_WINDOW_MS = 1000;
const NAME_EVENTS = IN.CREATE | IN.DELETE | IN.MOVED_FROM | IN.MOVED_TO;
const DATA_EVENTS = IN.MODIFY | IN.CLOSE_WRITE;

export interface HubOptions {
  logger: Logger;
  /** Directories watched at most (beyond, and beyond the kernel's limit, changes are found by revalidation). */
  maxWatches?: number;
  outbox?: OutboxLimits;
}

type StorageChange = Change<Subscription>;

type OpItem =
  | { src: 'op'; origin: Subscription; change: StorageChange; stat?: () => Promise<Stat | null> }
  /** `after`: operations that were running when the event came (it may be their echo). */
  | { src: 'watch'; dir: string; name?: Buffer; mask: number; cookies: number[]; after: number }
  | { src: 'overflow' };

export class CoherenceHub {
  readonly log: Logger;
  private readonly subs = new Set<Subscription>();
  private readonly known = new KnownState();
  /** Names as guests last looked them up (hints for deletes and moves; never used to suppress). */
  private readonly seen = new Lru<string, NameState>(100_000);
  private readonly watcher: StorageWatcher;
  private pending: OpItem[] = [];
  private scheduled = false;
  private flushing: Promise<void> | null = null;
  private rerun = false;
  /** `ends` when the current flush took its batch. */
  private flushStart = 0;
  private closed = false;
  /** Operations being served for guests (see inflight.ts). */
  private readonly inflight = new InFlight<Subscription>();
  /** Counters for status, tests and benchmarks. */
  readonly stats = { opChanges: 0, watchEvents: 0, echoes: 0, pushed: 0, overflows: 0 };

  constructor(private readonly opts: HubOptions) {
    this.log = opts.logger.child({ component: 'coherence' });
    this.watcher = new StorageWatcher(
      this.log,
      (events) => this.onWatch(events),
      () => this.enqueue({ src: 'overflow' }),
      opts.maxWatches,
    );
  }

  get watchedDirectories(): number {
    return this.watcher.size;
  }

  /** Starts telling `view` (exported as `exportId` on `session`) about changes; undefined if it has no identities. */
  subscribe(view: FileSystem, session: Session, exportId: number): Subscription | undefined {
    const identity = identityOf(view);
    if (!identity || this.closed) return undefined;
    const sub = new Subscription(this, identity, new Outbox(session, exportId, this.opts.outbox));
    this.subs.add(sub);
    identity.onNodeDropped((key) => this.dropped(key));
    identity.onStorageReplaced?.(() => this.storageReplaced(sub));
    const root = identity.keyOf(ROOT_ID);
    if (root) this.ensureWatched(root, identity, ROOT_ID);
    return sub;
  }

  /**
   * `sub`'s view was opened again on another filesystem: watch its new root, and tell the guest
   * that anything may have changed, so its kernel drops what it cached from the old one.
   */
  private storageReplaced(sub: Subscription): void {
    if (this.closed || !this.subs.has(sub)) return;
    const root = sub.identity.keyOf(ROOT_ID);
    if (root) this.ensureWatched(root, sub.identity, ROOT_ID);
    sub.outbox.push([{ kind: K.ALL }]);
  }

  close(): void {
    this.closed = true;
    for (const s of this.subs) s.outbox.close();
    this.subs.clear();
    this.watcher.close();
  }

  // ---- inputs ----

  /** @internal A request `sub`'s connection made succeeded with `reply`. */
  observed(sub: Subscription, req: IncomingRequest, reply: Reply): void {
    const id = sub.identity;
    const effects = effectsOf(req, reply);
    // Whether a created name was there already (an open without O_EXCL), before this reply teaches it.
    const existed = effects.map((e) => {
      if (e.kind !== 'create') return false;
      const dir = id.keyOf(e.parent);
      const prev = dir ? this.known.name(dir, e.name) ?? this.seen.get(nameKey(dir, e.name)) : undefined;
      return !!prev && prev.key === id.keyOf(e.node);
    });
    for (const l of learnedFrom(req, reply)) {
      const dir = id.keyOf(l.parent);
      const key = id.keyOf(l.node);
      if (!dir || !key) continue;
      this.seen.set(nameKey(dir, l.name), { key, type: l.mode & S_IFMT });
      this.known.setPlace(key, dir, l.name);
      // Watch a directory before the guest hears of it: what it caches under it is then covered.
      if ((l.mode & S_IFMT) === S_IFDIR) this.ensureWatched(key, id, l.node);
    }
    effects.forEach((e, i) => {
      const op = (change: StorageChange, stat?: () => Promise<Stat | null>): void => {
        this.stats.opChanges++;
        this.enqueue({ src: 'op', origin: sub, change: { ...change, origin: sub }, stat });
      };
      switch (e.kind) {
        case 'create': {
          const dir = id.keyOf(e.parent);
          const key = id.keyOf(e.node);
          if (!dir) break;
          op({ kind: K.CREATE, dir, name: e.name, key, type: e.attr.mode & S_IFMT, attr: e.attr, trunc: e.trunc, existed: existed[i] }, () => id.statNode(e.node));
          break;
        }
        case 'delete': {
          const dir = id.keyOf(e.parent);
          if (dir) op({ kind: K.DELETE, dir, name: e.name });
          break;
        }
        case 'move': {
          const dir = id.keyOf(e.parent);
          const newDir = id.keyOf(e.newParent);
          if (!dir || !newDir) break;
          if (e.exchange) {
            // The two names swapped inodes (the kernel had looked both up: we know them).
            const a = this.known.name(dir, e.name) ?? this.seen.get(nameKey(dir, e.name));
            const b = this.known.name(newDir, e.newName) ?? this.seen.get(nameKey(newDir, e.newName));
            if (b !== undefined) this.known.setName(dir, e.name, b);
            if (a !== undefined) this.known.setName(newDir, e.newName, a);
            op({ kind: K.DIR, dir });
            op({ kind: K.DIR, dir: newDir });
          } else {
            op({ kind: K.MOVE, dir, name: e.name, newDir, newName: e.newName }, () => id.statChild(e.newParent, e.newName));
          }
          break;
        }
        case 'modify':
        case 'attrib': {
          const key = id.keyOf(e.node);
          if (!key) break;
          const kind = e.kind === 'modify' ? K.MODIFY : K.ATTRIB;
          op(e.kind === 'modify' ? { kind, key, offset: e.offset, length: e.length } : { kind, key }, () => id.statNode(e.node));
          break;
        }
      }
    });
  }

  /**
   * @internal A mutating request starts. The inotify events it causes may be read before it
   * completes; they are held back until it has, so they are compared with its recorded result
   * (and recognised as its echo) instead of being taken for someone else's change.
   */
  begin(touches: string[]): number {
    return this.inflight.begin(touches);
  }

  /** @internal */
  end(seq: number, touches: string[], sub: Subscription): void {
    this.inflight.end(seq, touches, sub);
    if (this.pending.length) this.enqueue(null);
  }

  /** @internal */
  unsubscribe(sub: Subscription): void {
    this.subs.delete(sub);
    sub.outbox.close();
  }

  private onWatch(events: WatchEvent[]): void {
    this.stats.watchEvents += events.length;
    const after = this.inflight.mark;
    for (const e of events) this.enqueue({ src: 'watch', dir: e.dir, name: e.name, mask: e.mask, cookies: e.cookie ? [e.cookie] : [], after });
  }

  private enqueue(item: OpItem | null): void {
    if (item) this.pending.push(item);
    if (this.scheduled || this.closed) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (this.flushing) {
        this.rerun = true;
        return;
      }
      this.flushing = this.flushAll().finally(() => {
        this.flushing = null;
        if (this.rerun) {
          this.rerun = false;
          this.enqueue(null);
        }
      });
    });
  }

  private async flushAll(): Promise<void> {
    while (this.pending.length > 0 && !this.closed) {
      // Storage events wait for the operations that were running when they came (see begin()).
      const held = this.pending.findIndex((i) => i.src === 'watch' && this.inflight.stillRunning(i.after));
      const batch = held < 0 ? this.pending : this.pending.slice(0, held);
      this.pending = held < 0 ? [] : this.pending.slice(held);
      if (batch.length === 0) return;
      this.flushStart = this.inflight.ends;
      try {
        if (await this.flush(batch)) {
          // Some events wait for operations on the same names: look again shortly.
          setTimeout(() => this.enqueue(null), 1);
          return;
        }
      } catch (err) {
        this.log.error({ err }, 'coherence flush failed; telling guests that anything may have changed');
        this.fanOut([{ kind: K.ALL }]);
      }
    }
  }

  // ---- watching ----

  private ensureWatched(key: string, id: NodeIdentity, node: number): void {
    if (this.watcher.isWatched(key)) return;
    id.withNodeFd(node, (fd) => this.watcher.watch(key, fd));
  }

  /** A view forgot an inode: stop watching it once no view knows it. */
  private dropped(key: string): void {
    if (!this.watcher.isWatched(key)) return;
    for (const s of this.subs) if (s.identity.nodeOf(key) !== undefined) return;
    this.watcher.unwatch(key);
  }

  /** A view that knows inode `key`, with its node id there. */
  private viewOf(key: string): { id: NodeIdentity; node: number } | undefined {
    for (const s of this.subs) {
      const node = s.identity.nodeOf(key);
      if (node !== undefined) return { id: s.identity, node };
    }
    return undefined;
  }

  // ---- the flush ----

  /** Returns whether some events were put back for later. */
  private async flush(batch: OpItem[]): Promise<boolean> {
    if (batch.some((i) => i.src === 'overflow')) {
      this.stats.overflows++;
      this.known.clear();
      this.fanOut([{ kind: K.ALL }]);
      return false;
    }
    // Operations first: the watcher's events in the same batch are then compared with their result.
    const ops = batch.filter((i): i is Extract<OpItem, { src: 'op' }> => i.src === 'op');
    const watches = mergeWatchEvents(batch.filter((i): i is Extract<OpItem, { src: 'watch' }> => i.src === 'watch'));
    // 1. Snapshots, all at once.
    const opStats = await Promise.all(ops.map((o) => (o.stat ? o.stat().catch(() => null) : Promise.resolve(null))));
    const watchStats = await Promise.all(watches.map((w) => this.snapshot(w)));
    // 2. What changed, in order.
    const out: StorageChange[] = [];
    ops.forEach((o, i) => this.classifyOp(o.change, opStats[i], out));
    const later: OpItem[] = [];
    watches.forEach((w, i) => {
      // An operation on the same name or inode is running, or ended while we looked: what we saw
      // may be its doing. Look again once it is recorded.
      if (this.contended(w, watchStats[i])) later.push(w);
      else this.classifyWatch(w, watchStats[i], out);
    });
    if (later.length) this.pending.unshift(...later);
    // 3. To every receiver.
    this.fanOut(pairMoves(out));
    return later.length > 0;
  }

  private contended(w: Extract<OpItem, { src: 'watch' }>, st: Stat | null | undefined): boolean {
    const ids = [w.name ? `e:${nameKey(w.dir, w.name)}` : `n:${w.dir}`];
    if (st) ids.push(`n:${keyOfStat(st)}`);
    return this.inflight.contended(ids, this.flushStart);
  }

  private snapshot(w: Extract<OpItem, { src: 'watch' }>): Promise<Stat | null | undefined> {
    const v = this.viewOf(w.dir);
    if (!v) return Promise.resolve(undefined); // nobody knows the directory any more
    const p = w.name ? v.id.statChild(v.node, w.name) : v.id.statNode(v.node);
    return p.catch(() => undefined);
  }

  private classifyOp(c: StorageChange, st: Stat | null, out: StorageChange[]): void {
    switch (c.kind) {
      case K.CREATE: {
        // An open without O_EXCL of a name that was there: not a creation (a truncation, maybe).
        this.known.setName(c.dir!, c.name!, c.key ? { key: c.key, type: c.type ?? 0 } : null);
        if (st && c.key) this.known.setPrint(c.key, fingerprint(st), TOLD_DATA);
        if (!c.existed) out.push(c);
        else if (c.trunc) out.push({ ...c, kind: K.MODIFY, offset: 0, length: 0, attr: st ? statToAttr(st) : c.attr });
        return;
      }
      case K.DELETE: {
        const prev = this.known.name(c.dir!, c.name!) ?? this.seen.get(nameKey(c.dir!, c.name!));
        this.known.setName(c.dir!, c.name!, null);
        out.push({ ...c, key: prev?.key, type: prev?.type });
        return;
      }
      case K.MOVE: {
        const prev = this.known.name(c.dir!, c.name!) ?? this.seen.get(nameKey(c.dir!, c.name!));
        const now: NameState = st ? { key: keyOfStat(st), type: st.mode & S_IFMT } : prev ?? null;
        this.known.setName(c.dir!, c.name!, null);
        this.known.setName(c.newDir!, c.newName!, now);
        out.push({ ...c, key: now?.key, type: now?.type, attr: st ? statToAttr(st) : undefined });
        return;
      }
      case K.MODIFY:
      case K.ATTRIB:
        if (st) this.known.setPrint(c.key!, fingerprint(st), c.kind === K.MODIFY ? TOLD_DATA : TOLD_ATTR);
        out.push({ ...c, attr: st ? statToAttr(st) : undefined });
        return;
      default:
        out.push(c);
    }
  }

  private classifyWatch(w: Extract<OpItem, { src: 'watch' }>, st: Stat | null | undefined, out: StorageChange[]): void {
    if (st === undefined) return; // the directory is no longer known, or the stat failed
    if (!w.name) {
      // The watched directory itself (its attributes).
      if (st && w.mask & IN.ATTRIB) this.nodeChanged(keyOfStat(st), st, w.mask, out);
      return;
    }
    const now: NameState = st ? { key: keyOfStat(st), type: st.mode & S_IFMT } : null;
    const prev = this.known.name(w.dir, w.name);
    if (w.mask & NAME_EVENTS || prev !== undefined) {
      if (!sameName(prev, now)) {
        const hint = prev ?? this.seen.get(nameKey(w.dir, w.name));
        if (now === null) {
          out.push({ kind: K.DELETE, dir: w.dir, name: w.name, key: hint?.key, type: hint?.type, cookie: w.cookies[0] });
        } else {
          if (prev) out.push({ kind: K.DELETE, dir: w.dir, name: w.name, key: prev.key, type: prev.type });
          const attr = statToAttr(st!);
          out.push({ kind: K.CREATE, dir: w.dir, name: w.name, key: now.key, type: now.type, attr, cookie: w.cookies[w.cookies.length - 1] });
          this.known.setPrint(now.key, fingerprint(st!), TOLD_DATA);
          // Created with data already in it (and not moved here): that is a write too.
          if (now.type === S_IFREG && st!.size > 0 && !(w.mask & IN.MOVED_TO)) {
            out.push({ kind: K.MODIFY, key: now.key, dir: w.dir, name: w.name, offset: 0, length: 0, attr });
          }
        }
        this.known.setName(w.dir, w.name, now);
        if (now) return;
      }
    }
    if (st && w.mask & (DATA_EVENTS | IN.ATTRIB)) this.nodeChanged(now!.key, st, w.mask, out, w.dir, w.name);
  }

  /**
   * An inode's data or attributes may have changed. Compared with the state guests were last told
   * about: a new state is told (as MODIFY if size or mtime changed, ATTRIB otherwise, both if the
   * event says both); the same state is the echo of what was told -- unless the event is of a kind
   * not told yet for it (two changes caught by one snapshot: a write and a chmod).
   */
  private nodeChanged(key: string, st: Stat, mask: number, out: StorageChange[], dir?: string, name?: Buffer): void {
    const print = fingerprint(st);
    const rec = this.known.print(key);
    const isDir = (st.mode & S_IFMT) === S_IFDIR;
    let kinds = 0;
    if (!rec || rec.print !== print) {
      const dataChanged = !isDir && (rec ? !sameData(rec.print, print) : (mask & DATA_EVENTS) !== 0);
      kinds = dataChanged ? TOLD_DATA : TOLD_ATTR;
      if (dataChanged && mask & IN.ATTRIB && (!rec || !sameMeta(rec.print, print))) kinds |= TOLD_ATTR;
      this.known.setPrint(key, print, kinds);
    } else {
      if (mask & IN.MODIFY && !isDir && !(rec.told & TOLD_DATA)) kinds |= TOLD_DATA;
      if (mask & IN.ATTRIB && !(rec.told & TOLD_ATTR)) kinds |= TOLD_ATTR;
      if (!kinds) {
        this.stats.echoes++;
        return;
      }
      rec.told |= kinds;
    }
    const attr = statToAttr(st);
    if (kinds & TOLD_DATA) out.push({ kind: K.MODIFY, key, dir, name, offset: 0, length: 0, attr });
    if (kinds & TOLD_ATTR) out.push({ kind: K.ATTRIB, key, dir, name, attr });
  }

  private fanOut(changes: StorageChange[]): void {
    if (changes.length === 0) return;
    // A change seen by the watcher on a name or inode a guest itself changed a moment ago is most
    // likely the echo of that (the state compare could not tell): not told to that guest.
    const echoOf = changes.map((c) => (c.origin ? undefined : this.inflight.recentActor(touchIds(c), ECHO_WINDOW_MS)));
    const placeOf = (key: string) => this.known.place(key);
    for (const sub of this.subs) {
      // A connection that has not asked anything yet has nothing cached: nothing to tell it.
      if (!sub.active) continue;
      const list: WireChange[] = [];
      for (let i = 0; i < changes.length; i++) {
        const c = changes[i];
        if (c.origin === sub || echoOf[i] === sub) continue;
        const w = toReceiver(c, sub.identity, placeOf);
        if (w) list.push(w);
      }
      if (list.length) {
        this.stats.pushed += list.length;
        sub.outbox.push(list);
      }
    }
  }

}

/** One mounted export view on one connection. */
export class Subscription {
  /**
   * Set by its first file request. Until then its guest cannot have cached anything (every name,
   * attribute or listing it could hold came from a request), so changes are not sent to it: idle
   * mounted connections cost the others nothing.
   */
  active = false;

  constructor(
    private readonly hub: CoherenceHub,
    readonly identity: NodeIdentity,
    readonly outbox: Outbox,
  ) {}

  /** A request of this connection is being served; `end` it with its reply (null: it failed). */
  begin(req: IncomingRequest): { end(reply: Reply | null): void } {
    this.active = true;
    const touches = touchesOf(req, this.identity);
    const seq = touches ? this.hub.begin(touches) : 0;
    return {
      end: (reply) => {
        try {
          if (reply) this.hub.observed(this, req, reply);
        } catch (err) {
          this.hub.log.error({ err, kind: req.kind }, 'coherence: cannot record a change');
        } finally {
          if (seq) this.hub.end(seq, touches!, this);
        }
      },
    };
  }

  close(): void {
    this.hub.unsubscribe(this);
  }
}

// ---- helpers ----

function sameName(a: NameState | undefined, b: NameState): boolean {
  if (a === undefined) return false;
  if (a === null || b === null) return a === b;
  return a.key === b.key;
}

/** Same size and mtime (see fingerprint()). */
function sameData(a: string, b: string): boolean {
  const pa = a.split(':');
  const pb_ = b.split(':');
  return pa[4] === pb_[4] && pa[5] === pb_[5];
}

/** Same mode, owner and group. */
function sameMeta(a: string, b: string): boolean {
  const pa = a.split(':');
  const pb_ = b.split(':');
  return pa[0] === pb_[0] && pa[2] === pb_[2] && pa[3] === pb_[3];
}

/** Several events about one name in one batch are one item (masks united, move cookies kept). */
function mergeWatchEvents(items: Array<Extract<OpItem, { src: 'watch' }>>): Array<Extract<OpItem, { src: 'watch' }>> {
  const byName = new Map<string, Extract<OpItem, { src: 'watch' }>>();
  const out: Array<Extract<OpItem, { src: 'watch' }>> = [];
  for (const i of items) {
    const k = i.name ? nameKey(i.dir, i.name) : `${i.dir}/.`;
    const have = byName.get(k);
    if (have) {
      have.mask |= i.mask;
      have.cookies.push(...i.cookies);
    } else {
      const copy = { ...i, cookies: [...i.cookies] };
      byName.set(k, copy);
      out.push(copy);
    }
  }
  return out;
}
