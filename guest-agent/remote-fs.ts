// The guest side of the seam: a FileSystem whose every operation is a request to the host agent
// over a protocol session. Errors come back as FsError with the host's errno.
import type {
  FileSystem, Caller, Entry, Attr, SetAttr, OpenResult, CreateResult, DirEntry, StatFs,
} from '../shared/fs/interface.js';
import { FsError, E } from '../shared/fs/errors.js';
import { attrFromWire, entryFromWire, dirEntryFromWire, statfsFromWire, setattrToWire } from '../shared/fs/convert.js';
import type { Session } from '../shared/rpc/session.js';
import type { Frame } from '../shared/rpc/framing.js';
import type { EnvelopeInit } from '../shared/rpc/wire.js';

const EMPTY = Buffer.alloc(0);

export interface RemoteOptions {
  /** Deadline for one operation (ms). fsync and copy_file_range get four times as long. */
  deadlineMs?: number;
}

/** Where requests go right now: a session and the id the host gave the export on it. */
export interface Binding {
  session: Session;
  exportId: number;
}

/**
 * Talks to one export over one binding. The binding is read synchronously when an operation
 * starts, so a caller that just made sure it is current (ResilientFileSystem) gets exactly it.
 */
export class RemoteFileSystem implements FileSystem {
  private readonly deadlineMs: number;

  constructor(
    private readonly bind: () => Binding,
    options: RemoteOptions = {},
  ) {
    this.deadlineMs = options.deadlineMs ?? 60_000;
  }

  private call(caller: Caller, body: EnvelopeInit, payload?: Buffer, slow = false): Promise<Frame> {
    let session: Session;
    let exportId: number;
    try {
      ({ session, exportId } = this.bind());
    } catch (err) {
      return Promise.reject(err);
    }
    return session.request(
      { ...body, exportId, caller: { uid: caller.uid, gid: caller.gid, pid: caller.pid, groups: caller.groups ?? [], umask: caller.umask } },
      { payload, deadlineMs: slow ? this.deadlineMs * 4 : this.deadlineMs },
    );
  }

  private async entry(caller: Caller, body: EnvelopeInit): Promise<Entry> {
    const f = await this.call(caller, body);
    return entryFromWire(expect(f, 'entry').entry);
  }

  private async attr(caller: Caller, body: EnvelopeInit): Promise<Attr> {
    return attrFromWire(expect(await this.call(caller, body), 'attr').attr);
  }

  lookup(caller: Caller, parent: number, name: Buffer): Promise<Entry> {
    return this.entry(caller, { lookup: { parent, name } });
  }

  forget(items: ReadonlyArray<{ nodeId: number; nlookup: number }>): void {
    // Fire and forget: an event, no reply. If the session is gone the host dropped the nodes anyway.
    try {
      const { session, exportId } = this.bind();
      session.notify({ exportId, forget: { items: items.map((i) => ({ nodeId: i.nodeId, nlookup: i.nlookup })) } });
    } catch {
      // not connected: nothing to release
    }
  }

  getattr(caller: Caller, node: number, fh?: number): Promise<Attr> {
    return this.attr(caller, { getattr: fh !== undefined ? { node, fh } : { node } });
  }

  setattr(caller: Caller, node: number, set: SetAttr, fh?: number): Promise<Attr> {
    return this.attr(caller, { setattr: setattrToWire(node, set, fh) });
  }

  async readlink(caller: Caller, node: number): Promise<Buffer> {
    return (await this.call(caller, { readlink: { node } })).payload ?? EMPTY;
  }

  mknod(caller: Caller, parent: number, name: Buffer, mode: number, rdev: number): Promise<Entry> {
    return this.entry(caller, { mknod: { parent, name, mode, rdev } });
  }

  mkdir(caller: Caller, parent: number, name: Buffer, mode: number): Promise<Entry> {
    return this.entry(caller, { mkdir: { parent, name, mode } });
  }

  async unlink(caller: Caller, parent: number, name: Buffer): Promise<void> {
    await this.call(caller, { unlink: { parent, name } });
  }

  async rmdir(caller: Caller, parent: number, name: Buffer): Promise<void> {
    await this.call(caller, { rmdir: { parent, name } });
  }

  symlink(caller: Caller, parent: number, name: Buffer, target: Buffer): Promise<Entry> {
    return this.entry(caller, { symlink: { parent, name, target } });
  }

  async rename(caller: Caller, parent: number, name: Buffer, newParent: number, newName: Buffer, flags: number): Promise<void> {
    await this.call(caller, { rename: { parent, name, newParent, newName, flags } });
  }

  link(caller: Caller, node: number, newParent: number, newName: Buffer): Promise<Entry> {
    return this.entry(caller, { link: { node, newParent, newName } });
  }

  async open(caller: Caller, node: number, flags: number): Promise<OpenResult> {
    const o = expect(await this.call(caller, { open: { node, flags } }), 'opened');
    return { fh: Number(o.fh ?? 0), keepCache: !!o.keepCache, directIo: !!o.directIo };
  }

  async create(caller: Caller, parent: number, name: Buffer, mode: number, flags: number): Promise<CreateResult> {
    const c = expect(await this.call(caller, { create: { parent, name, mode, flags } }), 'created');
    return { entry: entryFromWire(c.entry), fh: Number(c.fh ?? 0), keepCache: !!c.keepCache, directIo: !!c.directIo };
  }

  async read(caller: Caller, node: number, fh: number, offset: number, size: number): Promise<Buffer> {
    return (await this.call(caller, { read: { node, fh, offset, size } })).payload ?? EMPTY;
  }

  async write(caller: Caller, node: number, fh: number, offset: number, data: Buffer): Promise<number> {
    return Number(expect(await this.call(caller, { write: { node, fh, offset } }, data), 'size').size ?? 0);
  }

  async flush(caller: Caller, node: number, fh: number): Promise<void> {
    await this.call(caller, { flush: { node, fh } });
  }

  async fsync(caller: Caller, node: number, fh: number, datasync: boolean): Promise<void> {
    await this.call(caller, { fsync: { node, fh, datasync } }, undefined, true);
  }

  async release(caller: Caller, node: number, fh: number): Promise<void> {
    await this.call(caller, { release: { node, fh } });
  }

  async opendir(caller: Caller, node: number, flags: number): Promise<OpenResult> {
    const o = expect(await this.call(caller, { opendir: { node, flags } }), 'opened');
    return { fh: Number(o.fh ?? 0), keepCache: !!o.keepCache };
  }

  async readdir(caller: Caller, node: number, fh: number, offset: number, maxEntries: number, plus: boolean): Promise<DirEntry[]> {
    const d = expect(await this.call(caller, { readdir: { node, fh, offset, maxEntries, plus } }), 'dir');
    return (d.entries ?? []).map(dirEntryFromWire);
  }

  async fsyncdir(caller: Caller, node: number, fh: number, datasync: boolean): Promise<void> {
    await this.call(caller, { fsyncdir: { node, fh, datasync } }, undefined, true);
  }

  async releasedir(caller: Caller, node: number, fh: number): Promise<void> {
    await this.call(caller, { releasedir: { node, fh } });
  }

  async statfs(caller: Caller, node: number): Promise<StatFs> {
    return statfsFromWire(expect(await this.call(caller, { statfs: { node } }), 'statfsReply'));
  }

  async setxattr(caller: Caller, node: number, name: Buffer, value: Buffer, flags: number): Promise<void> {
    await this.call(caller, { setxattr: { node, name, flags } }, value);
  }

  async getxattr(caller: Caller, node: number, name: Buffer, size: number): Promise<Buffer | number> {
    return sized(await this.call(caller, { getxattr: { node, name, size } }));
  }

  async listxattr(caller: Caller, node: number, size: number): Promise<Buffer | number> {
    return sized(await this.call(caller, { listxattr: { node, size } }));
  }

  async removexattr(caller: Caller, node: number, name: Buffer): Promise<void> {
    await this.call(caller, { removexattr: { node, name } });
  }

  async access(caller: Caller, node: number, mask: number): Promise<void> {
    await this.call(caller, { access: { node, mask } });
  }

  async fallocate(caller: Caller, node: number, fh: number, mode: number, offset: number, length: number): Promise<void> {
    await this.call(caller, { fallocate: { node, fh, mode, offset, length } });
  }

  async copyFileRange(
    caller: Caller, nodeIn: number, fhIn: number, offsetIn: number,
    nodeOut: number, fhOut: number, offsetOut: number, length: number, flags: number,
  ): Promise<number> {
    const body = { copyFileRange: { nodeIn, fhIn, offsetIn, nodeOut, fhOut, offsetOut, length, flags } };
    return Number(expect(await this.call(caller, body, undefined, true), 'size').size ?? 0);
  }

  async lseek(caller: Caller, node: number, fh: number, offset: number, whence: number): Promise<number> {
    return Number(expect(await this.call(caller, { lseek: { node, fh, offset, whence } }), 'offset').offset ?? 0);
  }

  async destroy(): Promise<void> {}
}

type Body = NonNullable<Frame['envelope']>;

function expect<K extends keyof Body & string>(f: Frame, kind: K): NonNullable<Body[K]> {
  const v = f.envelope[kind as keyof Body];
  if (f.envelope.body !== kind || v == null) {
    throw new FsError(E.EPROTO, `host answered with ${f.envelope.body ?? 'nothing'} where ${kind} was expected`);
  }
  return v as NonNullable<Body[K]>;
}

function sized(f: Frame): Buffer | number {
  if (f.envelope.body === 'size') return Number(f.envelope.size!.size ?? 0);
  return f.payload ?? EMPTY;
}
