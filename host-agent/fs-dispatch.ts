// Serves one file-operation request from the protocol against a FileSystem (the host side of the
// seam). Each case decodes the request, calls the interface, and encodes the reply.
import type { FileSystem, Caller } from '../shared/fs/interface.js';
import { FsError, E } from '../shared/fs/errors.js';
import { entryToWire, attrToWire, dirEntryToWire, setattrFromWire } from '../shared/fs/convert.js';
import type { IncomingRequest, Reply } from '../shared/rpc/session.js';
import type { pb } from '../shared/rpc/wire.js';
import { DEFAULT_MAX_PAYLOAD } from '../shared/rpc/framing.js';

const EMPTY = Buffer.alloc(0);
const MAX_IO = DEFAULT_MAX_PAYLOAD;
const n = (v: number | null | undefined): number => Number(v ?? 0);
const b = (v: Uint8Array | null | undefined): Buffer => (v ? Buffer.from(v.buffer, v.byteOffset, v.length) : EMPTY);

/** (uid_t)-1 means "no id" to the kernel; a caller claiming it is malformed. */
const ID_MAX = 0xfffffffe;
const NGROUPS_MAX = 65536;

export function callerFromWire(c: pb.Caller.$Properties | null | undefined): Caller {
  const caller: Caller = { uid: c?.uid ?? 0, gid: c?.gid ?? 0, pid: c?.pid ?? 0 };
  // All of them, up to the kernel's NGROUPS_MAX: a user in more than a few dozen groups must keep
  // access through every one (the frame size limit bounds the list anyway).
  if (c?.groups?.length) caller.groups = c.groups.slice(0, NGROUPS_MAX);
  if (caller.uid > ID_MAX || caller.gid > ID_MAX || caller.groups?.some((g) => g > ID_MAX)) {
    throw new FsError(E.EINVAL, 'caller ids must be below 4294967295');
  }
  if (c?.umask != null) caller.umask = c.umask;
  return caller;
}

const ok: Reply = { body: { ok: {} } };

/** Returns null when `req` is not a file operation (the caller handles control messages). */
export async function dispatchFsRequest(fs: FileSystem, req: IncomingRequest, caller: Caller): Promise<Reply | null> {
  const m = req.envelope;
  switch (req.kind) {
    case 'lookup': {
      const r = m.lookup!;
      return { body: { entry: { entry: entryToWire(await fs.lookup(caller, n(r.parent), b(r.name))) } } };
    }
    case 'getattr': {
      const r = m.getattr!;
      return { body: { attr: { attr: attrToWire(await fs.getattr(caller, n(r.node), r.fh != null ? n(r.fh) : undefined)) } } };
    }
    case 'setattr': {
      const { set, fh } = setattrFromWire(m.setattr!);
      return { body: { attr: { attr: attrToWire(await fs.setattr(caller, n(m.setattr!.node), set, fh)) } } };
    }
    case 'readlink':
      return { body: { data: {} }, payload: await fs.readlink(caller, n(m.readlink!.node)) };
    case 'mknod': {
      const r = m.mknod!;
      return { body: { entry: { entry: entryToWire(await fs.mknod(caller, n(r.parent), b(r.name), n(r.mode), n(r.rdev))) } } };
    }
    case 'mkdir': {
      const r = m.mkdir!;
      return { body: { entry: { entry: entryToWire(await fs.mkdir(caller, n(r.parent), b(r.name), n(r.mode))) } } };
    }
    case 'unlink':
      await fs.unlink(caller, n(m.unlink!.parent), b(m.unlink!.name));
      return ok;
    case 'rmdir':
      await fs.rmdir(caller, n(m.rmdir!.parent), b(m.rmdir!.name));
      return ok;
    case 'symlink': {
      const r = m.symlink!;
      return { body: { entry: { entry: entryToWire(await fs.symlink(caller, n(r.parent), b(r.name), b(r.target))) } } };
    }
    case 'rename': {
      const r = m.rename!;
      await fs.rename(caller, n(r.parent), b(r.name), n(r.newParent), b(r.newName), n(r.flags));
      return ok;
    }
    case 'link': {
      const r = m.link!;
      return { body: { entry: { entry: entryToWire(await fs.link(caller, n(r.node), n(r.newParent), b(r.newName))) } } };
    }
    case 'open': {
      const o = await fs.open(caller, n(m.open!.node), n(m.open!.flags));
      return { body: { opened: { fh: o.fh, keepCache: !!o.keepCache, directIo: !!o.directIo } } };
    }
    case 'create': {
      const r = m.create!;
      const c = await fs.create(caller, n(r.parent), b(r.name), n(r.mode), n(r.flags));
      return { body: { created: { entry: entryToWire(c.entry), fh: c.fh, keepCache: !!c.keepCache, directIo: !!c.directIo } } };
    }
    case 'read': {
      const r = m.read!;
      // A reply carries at most one frame payload: refuse before reading, not after.
      if (n(r.size) > MAX_IO) throw new FsError(E.EINVAL, `read of ${n(r.size)} bytes exceeds the ${MAX_IO}-byte limit`);
      return { body: { data: {} }, payload: await fs.read(caller, n(r.node), n(r.fh), n(r.offset), n(r.size)) };
    }
    case 'write': {
      const r = m.write!;
      return { body: { size: { size: await fs.write(caller, n(r.node), n(r.fh), n(r.offset), req.payload ?? EMPTY) } } };
    }
    case 'flush':
      await fs.flush(caller, n(m.flush!.node), n(m.flush!.fh));
      return ok;
    case 'fsync':
      await fs.fsync(caller, n(m.fsync!.node), n(m.fsync!.fh), !!m.fsync!.datasync);
      return ok;
    case 'release':
      await fs.release(caller, n(m.release!.node), n(m.release!.fh));
      return ok;
    case 'opendir': {
      const o = await fs.opendir(caller, n(m.opendir!.node), n(m.opendir!.flags));
      return { body: { opened: { fh: o.fh, keepCache: !!o.keepCache } } };
    }
    case 'readdir': {
      const r = m.readdir!;
      const entries = await fs.readdir(caller, n(r.node), n(r.fh), n(r.offset), Math.min(n(r.maxEntries) || 1024, 4096), !!r.plus);
      return { body: { dir: { entries: entries.map(dirEntryToWire) } } };
    }
    case 'fsyncdir':
      await fs.fsyncdir(caller, n(m.fsyncdir!.node), n(m.fsyncdir!.fh), !!m.fsyncdir!.datasync);
      return ok;
    case 'releasedir':
      await fs.releasedir(caller, n(m.releasedir!.node), n(m.releasedir!.fh));
      return ok;
    case 'statfs':
      return { body: { statfsReply: await fs.statfs(caller, n(m.statfs!.node)) } };
    case 'setxattr': {
      const r = m.setxattr!;
      await fs.setxattr(caller, n(r.node), b(r.name), req.payload ?? EMPTY, n(r.flags));
      return ok;
    }
    case 'getxattr': {
      const r = m.getxattr!;
      return sizedReply(await fs.getxattr(caller, n(r.node), b(r.name), n(r.size)));
    }
    case 'listxattr':
      return sizedReply(await fs.listxattr(caller, n(m.listxattr!.node), n(m.listxattr!.size)));
    case 'removexattr':
      await fs.removexattr(caller, n(m.removexattr!.node), b(m.removexattr!.name));
      return ok;
    case 'access':
      await fs.access(caller, n(m.access!.node), n(m.access!.mask));
      return ok;
    case 'fallocate': {
      const r = m.fallocate!;
      await fs.fallocate(caller, n(r.node), n(r.fh), n(r.mode), n(r.offset), n(r.length));
      return ok;
    }
    case 'copyFileRange': {
      const r = m.copyFileRange!;
      const size = await fs.copyFileRange(caller, n(r.nodeIn), n(r.fhIn), n(r.offsetIn), n(r.nodeOut), n(r.fhOut), n(r.offsetOut), n(r.length), n(r.flags));
      return { body: { size: { size } } };
    }
    case 'lseek': {
      const r = m.lseek!;
      return { body: { offset: { offset: await fs.lseek(caller, n(r.node), n(r.fh), n(r.offset), n(r.whence)) } } };
    }
    default:
      return null;
  }
}

function sizedReply(v: Buffer | number): Reply {
  return typeof v === 'number' ? { body: { size: { size: v } } } : { body: { data: {} }, payload: v };
}

/** Forget arrives as an event (no reply). */
export function dispatchForget(fs: FileSystem, m: pb.ForgetRequest.$Properties): void {
  const items = (m.items ?? []).map((i) => ({ nodeId: n(i.nodeId), nlookup: n(i.nlookup) })).filter((i) => i.nlookup > 0);
  if (items.length) fs.forget(items);
}

export function unknownExport(id: number): FsError {
  return new FsError(E.EBADF, `export ${id} is not mounted on this connection`);
}
