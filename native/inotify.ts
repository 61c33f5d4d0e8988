// inotify(7) for the host agent's storage watcher (native/src/inotify.cc). The instance's fd is
// read on the event loop by a UvStream (a libuv pipe handle reads whole events from it); each read
// is parsed into a batch of events and handed over at once, so a storm costs one callback per read.
import { native } from './index.js';

export interface InotifyEvent {
  wd: number;
  mask: number;
  cookie: number;
  /** The child's name; absent for events about the watched directory itself (and overflow). */
  name?: Buffer;
}

export const IN: Readonly<Record<
  'ACCESS' | 'MODIFY' | 'ATTRIB' | 'CLOSE_WRITE' | 'CLOSE_NOWRITE' | 'OPEN' | 'MOVED_FROM' | 'MOVED_TO' | 'CREATE' |
  'DELETE' | 'DELETE_SELF' | 'MOVE_SELF' | 'UNMOUNT' | 'Q_OVERFLOW' | 'IGNORED' | 'ONLYDIR' | 'DONT_FOLLOW' |
  'EXCL_UNLINK' | 'MASK_ADD' | 'ISDIR', number>> = Object.freeze(
  Object.fromEntries(Object.entries(native.inotifyConstants as Record<string, number>).map(([k, v]) => [k.slice(3), v])),
) as never;

interface NativeUvStream {
  readStart(): number;
  close(cb?: () => void): void;
  unref(): void;
}
type UvStreamCtor = new (fd: number, onRead: (chunk: Buffer | null, err?: Error) => void) => NativeUvStream;

/** One inotify instance. Watches are added by path (e.g. `/proc/self/fd/N` of an O_PATH fd). */
export class Inotify {
  private readonly fd: number;
  private stream: NativeUvStream | null;

  constructor(onEvents: (events: InotifyEvent[]) => void, onError?: (err: Error) => void) {
    this.fd = native.inotifyInit() as number;
    const UvStream = native.UvStream as UvStreamCtor;
    this.stream = new UvStream(this.fd, (chunk, err) => {
      if (err) return onError?.(err);
      if (chunk && chunk.length > 0) onEvents(parse(chunk));
    });
    const rc = this.stream.readStart();
    if (rc !== 0) {
      this.close();
      throw new Error(`inotify: cannot read events (${rc})`);
    }
    // The watcher must not keep the agent alive by itself.
    this.stream.unref();
  }

  /** Adds (or updates) a watch; returns its descriptor. Throws an Error with .errno (ENOSPC: limit). */
  add(path: string | Buffer, mask: number): number {
    return native.inotifyAddWatch(this.fd, path, mask) as number;
  }

  /** Removes a watch; 0 or a positive errno (EINVAL: it was already gone). */
  remove(wd: number): number {
    return native.inotifyRmWatch(this.fd, wd) as number;
  }

  close(): void {
    this.stream?.close();
    this.stream = null;
  }
}

/** struct inotify_event { int wd; u32 mask, cookie, len; char name[len] } (host byte order). */
function parse(buf: Buffer): InotifyEvent[] {
  const out: InotifyEvent[] = [];
  let p = 0;
  while (p + 16 <= buf.length) {
    const wd = buf.readInt32LE(p);
    const mask = buf.readUInt32LE(p + 4);
    const cookie = buf.readUInt32LE(p + 8);
    const len = buf.readUInt32LE(p + 12);
    const ev: InotifyEvent = { wd, mask, cookie };
    if (len > 0) {
      const raw = buf.subarray(p + 16, p + 16 + len);
      const nul = raw.indexOf(0);
      ev.name = Buffer.from(nul < 0 ? raw : raw.subarray(0, nul));
    }
    out.push(ev);
    p += 16 + len;
  }
  return out;
}
