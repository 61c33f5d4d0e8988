// Which mutating operations the host is serving for guests right now, and which names and inodes
// they change. The hub uses it to tell the inotify echo of a guest's own operation from somebody
// else's change:
//   - an event read while operations run is held back until they have completed (and been
//     recorded), so it is compared with their result;
//   - an event about a name or inode an operation is changing right now, or finished changing while
//     the hub was looking, is looked at again later;
//   - an event about a name or inode a guest changed a moment ago is not told to that guest.
// Names are "e:" + nameKey(dir, name), inodes "n:" + key.
import type { IncomingRequest } from '../../shared/rpc/session.js';
import type { NodeIdentity } from './identity.js';
import { Lru, nameKey } from './state.js';

const O_TRUNC = 0o1000;

export class InFlight<Actor> {
  private readonly running = new Set<number>();
  private seq = 0;
  private ended = 0;
  private readonly busy = new Map<string, number>();
  private readonly lastEnd = new Lru<string, number>(100_000);
  private readonly lastBy = new Lru<string, { actor: Actor; at: number }>(100_000);

  begin(touches: string[]): number {
    const seq = ++this.seq;
    this.running.add(seq);
    for (const t of touches) this.busy.set(t, (this.busy.get(t) ?? 0) + 1);
    return seq;
  }

  end(seq: number, touches: string[], actor: Actor): void {
    this.running.delete(seq);
    this.ended++;
    const at = Date.now();
    for (const t of touches) {
      const n = (this.busy.get(t) ?? 1) - 1;
      if (n > 0) this.busy.set(t, n);
      else this.busy.delete(t);
      this.lastEnd.set(t, this.ended);
      this.lastBy.set(t, { actor, at });
    }
  }

  /** For an event arriving now: the newest operation running (0: none). */
  get mark(): number {
    return this.running.size ? this.seq : 0;
  }

  /** Whether an operation that was running at `mark` still is. */
  stillRunning(mark: number): boolean {
    if (mark === 0) return false;
    for (const s of this.running) if (s <= mark) return true;
    return false;
  }

  /** Operations ended so far (a clock for contended()). */
  get ends(): number {
    return this.ended;
  }

  /** Whether one of `ids` is being changed, or an operation on it ended after `since` (ends). */
  contended(ids: string[], since: number): boolean {
    return ids.some((id) => this.busy.has(id) || (this.lastEnd.get(id) ?? 0) > since);
  }

  /** Who last changed one of `ids`, if within `windowMs`. */
  recentActor(ids: string[], windowMs: number): Actor | undefined {
    const now = Date.now();
    for (const id of ids) {
      const by = this.lastBy.get(id);
      if (by && now - by.at < windowMs) return by.actor;
    }
    return undefined;
  }
}

/** The names and inodes a request changes; undefined when it changes nothing in the storage. */
export function touchesOf(req: IncomingRequest, id: NodeIdentity): string[] | undefined {
  const m = req.envelope;
  const out: string[] = [];
  const node = (n: number | null | undefined) => {
    const k = n ? id.keyOf(Number(n)) : undefined;
    if (k) out.push(`n:${k}`);
  };
  const entry = (p: number | null | undefined, name: Uint8Array | null | undefined) => {
    const k = p ? id.keyOf(Number(p)) : undefined;
    if (k && name) out.push(`e:${nameKey(k, Buffer.from(name))}`);
  };
  switch (req.kind) {
    case 'mknod': entry(m.mknod!.parent, m.mknod!.name); break;
    case 'mkdir': entry(m.mkdir!.parent, m.mkdir!.name); break;
    case 'symlink': entry(m.symlink!.parent, m.symlink!.name); break;
    case 'create': entry(m.create!.parent, m.create!.name); break;
    case 'unlink': entry(m.unlink!.parent, m.unlink!.name); break;
    case 'rmdir': entry(m.rmdir!.parent, m.rmdir!.name); break;
    case 'link': entry(m.link!.newParent, m.link!.newName); node(m.link!.node); break;
    case 'rename': entry(m.rename!.parent, m.rename!.name); entry(m.rename!.newParent, m.rename!.newName); break;
    case 'open':
      if (!(Number(m.open!.flags ?? 0) & O_TRUNC)) return undefined;
      node(m.open!.node);
      break;
    case 'setattr': node(m.setattr!.node); break;
    case 'write': node(m.write!.node); break;
    case 'fallocate': node(m.fallocate!.node); break;
    case 'copyFileRange': node(m.copyFileRange!.nodeOut); break;
    case 'setxattr': node(m.setxattr!.node); break;
    case 'removexattr': node(m.removexattr!.node); break;
    default:
      return undefined;
  }
  return out;
}
