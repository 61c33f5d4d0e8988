// Watches storage directories with inotify, by inode: a watch is added through an fd of the
// directory (/proc/self/fd/N of the export view's O_PATH fd), so it follows the directory wherever it
// is renamed and never resolves a path that a rename race could redirect. Events come out in
// batches, tagged with the watched directory's key ("dev:ino"), for the hub to interpret.
//
// Only directories some guest knows are watched (the hub decides): a guest can only have cached
// names under directories its kernel has looked up. At the inotify watch limit (ENOSPC) further
// directories stay unwatched; the per-share revalidation interval bounds their staleness.
import type { Logger } from '../../shared/log.js';
import { Inotify, IN, type InotifyEvent } from '../../native/inotify.js';

export interface WatchEvent {
  /** The watched directory. */
  dir: string;
  /** A child's name; absent for an event about the directory itself. */
  name?: Buffer;
  mask: number;
  cookie: number;
}

/** Events we need: names appearing, going, moving; data and attribute changes of children. */
const MASK = IN.CREATE | IN.DELETE | IN.MOVED_FROM | IN.MOVED_TO | IN.MODIFY | IN.ATTRIB | IN.CLOSE_WRITE |
  IN.ONLYDIR | IN.EXCL_UNLINK;

export class StorageWatcher {
  private inotify: Inotify | null = null;
  private readonly byWd = new Map<number, string>();
  private readonly byKey = new Map<string, number>();
  private full = false;

  constructor(
    private readonly log: Logger,
    private readonly onEvents: (events: WatchEvent[]) => void,
    /** The kernel dropped events (queue overflow): anything may have changed. */
    private readonly onOverflow: () => void,
    private readonly maxWatches = Infinity,
  ) {}

  get size(): number {
    return this.byKey.size;
  }

  isWatched(key: string): boolean {
    return this.byKey.has(key);
  }

  /** Watches directory `key` through `fd` (an fd of it, valid during the call); false if it cannot. */
  watch(key: string, fd: number): boolean {
    if (this.byKey.has(key)) return true;
    if (this.byKey.size >= this.maxWatches) return this.limit('max_watches');
    try {
      this.inotify ??= new Inotify((evs) => this.deliver(evs), (err) => this.log.warn({ err }, 'inotify read failed'));
      const wd = this.inotify.add(`/proc/self/fd/${fd}`, MASK);
      const other = this.byWd.get(wd);
      if (other !== undefined && other !== key) this.byKey.delete(other);
      this.byWd.set(wd, key);
      this.byKey.set(key, wd);
      return true;
    } catch (err) {
      const errno = (err as { errno?: number }).errno;
      if (errno === 28 /* ENOSPC */) return this.limit('fs.inotify.max_user_watches');
      this.log.debug({ err, key }, 'cannot watch a directory');
      return false;
    }
  }

  unwatch(key: string): void {
    const wd = this.byKey.get(key);
    if (wd === undefined) return;
    this.byKey.delete(key);
    this.byWd.delete(wd);
    this.inotify?.remove(wd);
  }

  close(): void {
    this.inotify?.close();
    this.inotify = null;
    this.byWd.clear();
    this.byKey.clear();
  }

  private limit(what: string): false {
    if (!this.full) {
      this.full = true;
      this.log.warn({ watches: this.byKey.size, limit: what },
        'inotify watch limit reached: further directories are not watched; changes there made outside dirvisor are seen after the revalidation interval');
    }
    return false;
  }

  private deliver(raw: InotifyEvent[]): void {
    const out: WatchEvent[] = [];
    for (const e of raw) {
      if (e.mask & IN.Q_OVERFLOW) {
        this.log.warn('inotify queue overflow: telling guests that anything may have changed');
        this.onOverflow();
        continue;
      }
      const dir = this.byWd.get(e.wd);
      if (dir === undefined) continue;
      if (e.mask & IN.IGNORED) {
        // The directory is gone (or the watch was removed): forget the descriptor.
        this.byWd.delete(e.wd);
        if (this.byKey.get(dir) === e.wd) this.byKey.delete(dir);
        continue;
      }
      out.push(e.name ? { dir, name: e.name, mask: e.mask, cookie: e.cookie } : { dir, mask: e.mask, cookie: e.cookie });
    }
    if (out.length) this.onEvents(out);
  }
}
