// The changes waiting to be sent to one receiver (a mounted export on one connection). Sent as one
// `Changes` event per hub flush (chunked), unless the receiver is not reading: then they wait for
// the connection to drain, merged per node, and when too many pile up they are collapsed into
// "this directory changed" (DIR) and finally "anything changed" (ALL), so a storm costs a bounded
// amount of memory here and of work in the guest, and what the guest ends up with is still right.
import type { Session } from '../../shared/rpc/session.js';
import { pb } from '../../shared/rpc/wire.js';

export type WireChange = pb.Change.$Properties;
const K = pb.Change.Kind;

export interface OutboxLimits {
  /** Changes per Changes message. */
  chunk?: number;
  /** Bytes queued on the connection beyond which we wait for it to drain. */
  highWater?: number;
  /** Changes kept while waiting; beyond it they are collapsed into DIR changes. */
  maxQueued?: number;
  /** Directories kept after collapsing; beyond it everything becomes ALL. */
  maxDirs?: number;
}

export class Outbox {
  private queue: WireChange[] = [];
  private waiting = false;
  private closed = false;
  private readonly chunk: number;
  private readonly highWater: number;
  private readonly maxQueued: number;
  private readonly maxDirs: number;
  /** Counters for status and tests. */
  readonly stats = { sent: 0, messages: 0, collapsed: 0 };

  constructor(private readonly session: Session, private readonly exportId: number, limits: OutboxLimits = {}) {
    this.chunk = limits.chunk ?? 1024;
    this.highWater = limits.highWater ?? 4 << 20;
    this.maxQueued = limits.maxQueued ?? 8192;
    this.maxDirs = limits.maxDirs ?? 512;
  }

  push(changes: WireChange[]): void {
    if (this.closed || changes.length === 0) return;
    for (const c of changes) this.queue.push(c);
    this.queue = coalesce(this.queue);
    if (this.queue.length > this.maxQueued) this.collapse();
    this.send();
  }

  close(): void {
    this.closed = true;
    this.queue = [];
  }

  private send(): void {
    if (this.waiting || this.closed || this.session.closed) return;
    const stream = this.session.stream;
    if (stream.writableLength > this.highWater) {
      this.waiting = true;
      stream.once('drain', () => {
        this.waiting = false;
        this.send();
      });
      return;
    }
    const all = this.queue;
    this.queue = [];
    for (let i = 0; i < all.length; i += this.chunk) {
      const changes = all.slice(i, i + this.chunk);
      this.session.notify({ exportId: this.exportId, changes: { changes } });
      this.stats.messages++;
      this.stats.sent += changes.length;
    }
  }

  /** Too much is waiting: keep which directories and files changed, not how. */
  private collapse(): void {
    this.stats.collapsed++;
    const dirs = new Set<number>();
    const nodes = new Set<number>();
    let all = false;
    for (const c of this.queue) {
      switch (c.kind) {
        case K.ALL:
          all = true;
          break;
        case K.MODIFY:
        case K.ATTRIB:
          if (c.node) nodes.add(Number(c.node));
          else if (c.parent) dirs.add(Number(c.parent));
          break;
        case K.MOVE:
          dirs.add(Number(c.parent));
          dirs.add(Number(c.newParent));
          break;
        default:
          if (c.parent) dirs.add(Number(c.parent));
      }
    }
    if (all || dirs.size + nodes.size > this.maxDirs) {
      this.queue = [{ kind: K.ALL }];
      return;
    }
    this.queue = [
      ...[...dirs].map((parent): WireChange => ({ kind: K.DIR, parent })),
      ...[...nodes].map((node): WireChange => ({ kind: K.MODIFY, node, offset: 0, length: 0 })),
    ];
  }
}

/**
 * Merges what can be merged without changing the outcome: repeated MODIFYs (or ATTRIBs) of one node
 * become one, at the place of the last, with the union of the byte ranges; and nothing before an
 * ALL matters.
 */
export function coalesce(list: WireChange[]): WireChange[] {
  let start = 0;
  for (let i = list.length - 1; i >= 0; i--) {
    if (list[i].kind === K.ALL) {
      start = i;
      break;
    }
  }
  const src = start > 0 ? list.slice(start) : list;
  const last = new Map<string, number>();
  const merged = new Map<string, WireChange>();
  src.forEach((c, i) => {
    const k = nodeTarget(c);
    if (k === undefined) return;
    last.set(k, i);
    const prev = merged.get(k);
    merged.set(k, prev ? mergeNodeChanges(prev, c) : c);
  });
  if (merged.size === 0) return src;
  const out: WireChange[] = [];
  src.forEach((c, i) => {
    const k = nodeTarget(c);
    if (k === undefined) out.push(c);
    else if (last.get(k) === i) out.push(merged.get(k)!);
  });
  return out;
}

function nodeTarget(c: WireChange): string | undefined {
  if (c.kind !== K.MODIFY && c.kind !== K.ATTRIB) return undefined;
  return `${c.kind}:` + (c.node ? `n${c.node}` : `p${c.parent}/${Buffer.from(c.name ?? []).toString('latin1')}`);
}

function mergeNodeChanges(a: WireChange, b: WireChange): WireChange {
  if (b.kind === K.ATTRIB) return b;
  // Both MODIFY: union of [offset, offset+length) (length 0 = to the end).
  const aStart = Number(a.offset ?? 0), bStart = Number(b.offset ?? 0);
  const aEnd = Number(a.length ?? 0) === 0 ? Infinity : aStart + Number(a.length);
  const bEnd = Number(b.length ?? 0) === 0 ? Infinity : bStart + Number(b.length);
  const start = Math.min(aStart, bStart);
  const end = Math.max(aEnd, bEnd);
  return { ...b, offset: start, length: end === Infinity ? 0 : end - start };
}
