// Typed face of the native libfuse3 low-level binding (native/src/fuse.cc).
//
// The session's loop thread reads kernel requests and hands each one to `onRequest` on the JS
// thread; JS answers later with exactly one reply* call per request id (any order, many in flight).
// Forget requests (id 0) are already answered natively and need no reply.
import type { Attr, Entry, OpenResult, StatFs, SetAttr, Timespec, DirEntry } from '../shared/fs/interface.js';
import { native } from './index.js';

/** Who sent the request (fuse_req_ctx), plus supplementary groups for permission-relevant ops. */
export interface RequestCaller {
  uid: number;
  gid: number;
  pid: number;
  /** Only for mknod, mkdir, create (the mode already has it applied). */
  umask?: number;
  /** Read from /proc for ops whose outcome depends on the caller (absent if the process is gone). */
  groups?: number[];
}

interface Base extends RequestCaller {
  /** Opaque handle for the reply; 0 for forget. */
  id: number;
}

export type FuseRequest =
  | (Base & { op: 'lookup' | 'unlink' | 'rmdir'; parent: number; name: Buffer })
  | { id: 0; op: 'forget'; items: Array<{ nodeId: number; nlookup: number }> }
  | (Base & { op: 'getattr'; node: number; fh?: number })
  | (Base & { op: 'setattr'; node: number; fh?: number; valid: number; set: SetAttr; ctime?: Timespec })
  | (Base & { op: 'readlink' | 'statfs'; node: number })
  | (Base & { op: 'mknod'; parent: number; name: Buffer; mode: number; rdev: number })
  | (Base & { op: 'mkdir'; parent: number; name: Buffer; mode: number })
  | (Base & { op: 'symlink'; parent: number; name: Buffer; target: Buffer })
  | (Base & { op: 'rename'; parent: number; name: Buffer; newParent: number; newName: Buffer; flags: number })
  | (Base & { op: 'link'; node: number; newParent: number; newName: Buffer })
  | (Base & { op: 'open' | 'opendir'; node: number; flags: number })
  | (Base & { op: 'read' | 'readdir' | 'readdirplus'; node: number; fh: number; offset: number; size: number })
  | (Base & { op: 'write'; node: number; fh: number; offset: number; data: Buffer; writepage: boolean })
  | (Base & { op: 'flush' | 'releasedir'; node: number; fh: number })
  | (Base & { op: 'release'; node: number; fh: number; flags: number })
  | (Base & { op: 'fsync' | 'fsyncdir'; node: number; fh: number; datasync: boolean })
  | (Base & { op: 'setxattr'; node: number; name: Buffer; value: Buffer; flags: number })
  | (Base & { op: 'getxattr'; node: number; name: Buffer; size: number })
  | (Base & { op: 'listxattr'; node: number; size: number })
  | (Base & { op: 'removexattr'; node: number; name: Buffer })
  | (Base & { op: 'access'; node: number; mask: number })
  | (Base & { op: 'create'; parent: number; name: Buffer; mode: number; flags: number })
  | (Base & { op: 'fallocate'; node: number; fh: number; mode: number; offset: number; length: number })
  | (Base & {
      op: 'copyFileRange';
      nodeIn: number; fhIn: number; offsetIn: number;
      nodeOut: number; fhOut: number; offsetOut: number;
      length: number; flags: number;
    })
  | (Base & { op: 'lseek'; node: number; fh: number; offset: number; whence: number });

export type FuseOp = FuseRequest['op'];

/** Open reply flags (fuse_file_info): the FileSystem's OpenResult plus kernel-only knobs. */
export interface FuseOpen extends OpenResult {
  /** opendir only: let the kernel cache the listing (FOPEN_CACHE_DIR). */
  cacheDir?: boolean;
  nonseekable?: boolean;
  /** No flush request on close (FOPEN_NOFLUSH). */
  noflush?: boolean;
}

/** Tuning applied in the session's init callback (not mount options). */
export interface FuseSessionConfig {
  /** conn->max_read: must equal FuseMountArgs.maxRead (libfuse refuses INIT otherwise). Default 0, no limit. */
  maxRead?: number;
  /** conn->max_write, at most 1 MiB (libfuse's buffer). Default 1 MiB. */
  maxWrite?: number;
  maxReadahead?: number;
  /** Requests the kernel keeps in flight in the background (readahead, writeback). */
  maxBackground?: number;
  /** Ask for FUSE_CAP_WRITEBACK_CACHE (the kernel then merges writes and sends them later). */
  writeback?: boolean;
  /** Read supplementary groups for permission-relevant ops. Default true. */
  groups?: boolean;
}

/** Mount-time options, turned into fuse_session_new arguments. */
export interface FuseMountArgs {
  fsname?: string;
  subtype?: string;
  allowOther?: boolean;
  defaultPermissions?: boolean;
  readOnly?: boolean;
  maxRead?: number;
  /** fusermount3 stays behind and unmounts when this process dies (even by SIGKILL). */
  autoUnmount?: boolean;
  /** Generic mount flags passed through: nodev, nosuid, noexec, noatime, sync, dirsync... */
  flags?: string[];
  /** libfuse debug output on stderr. */
  debug?: boolean;
}

export type FuseState = 'idle' | 'mounting' | 'mounted' | 'closed';

/** Result of reply*: 0, or -errno when the kernel no longer wanted the answer (e.g. interrupted). */
export type ReplyResult = number;

export interface NativeFuseSession {
  readonly state: FuseState;
  /** Requests handed to JS and not answered yet. */
  readonly pending: number;
  /** Resolves once the kernel's INIT has been answered (the mount is usable); rejects if it failed. */
  mount(): Promise<void>;
  /** Resolves 0 or a positive errno (EBUSY if in use and not lazy). */
  unmount(lazy: boolean): Promise<number>;

  /** errno 0 is the success reply without data (unlink, rmdir, rename, flush, release, setxattr...). */
  replyErr(id: number, errno: number): ReplyResult;
  /** entry null: a negative entry, cached for entryTimeout (lookup only). */
  replyEntry(id: number, entry: Entry | null, entryTimeout: number, attrTimeout: number): ReplyResult;
  replyCreate(id: number, entry: Entry, entryTimeout: number, attrTimeout: number, open: FuseOpen): ReplyResult;
  replyAttr(id: number, attr: Attr, attrTimeout: number): ReplyResult;
  replyReadlink(id: number, target: Buffer): ReplyResult;
  replyOpen(id: number, open: FuseOpen): ReplyResult;
  replyWrite(id: number, count: number): ReplyResult;
  /** read / getxattr / listxattr data; cut to the size the kernel asked for. */
  replyData(id: number, data: Uint8Array): ReplyResult;
  replyStatfs(id: number, st: StatFs): ReplyResult;
  replyXattr(id: number, size: number): ReplyResult;
  /** Packs entries into the kernel's buffer: how many fit (>= 0), or -errno if the reply failed. */
  replyDirents(id: number, entries: readonly DirEntry[], entryTimeout: number, attrTimeout: number): number;
  replyLseek(id: number, offset: number): ReplyResult;

  /** Kernel cache notifications, served by a dedicated thread: resolve 0 or a positive errno. */
  notifyInvalEntry(parent: number, name: Buffer): Promise<number>;
  notifyExpireEntry(parent: number, name: Buffer): Promise<number>;
  notifyInvalInode(node: number, offset: number, length: number): Promise<number>;
  notifyDelete(parent: number, child: number, name: Buffer): Promise<number>;
  notifyStore(node: number, offset: number, data: Uint8Array): Promise<number>;
}

/**
 * A change replayed through a mount so that the kernel raises the inotify events a local change
 * would: one syscall on entry `name` of directory `dir`, made by guest-agent/coherence/
 * replay-process.ts (never by the process serving the mount). The directory is resolved beneath
 * the mount's root without following symlinks or leaving the mount (openat2 RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV), and `name` must be one component.
 */
interface ReplayAt {
  /** The directory, relative to the mount's root ("" for the root). */
  dir: Buffer;
  /** One name in it. */
  name: Buffer;
}

export type ReplayOp =
  | (ReplayAt & { op: 'mknod' | 'mkdir'; mode: number })
  | (ReplayAt & { op: 'symlink'; target: Buffer })
  | (ReplayAt & { op: 'unlink' | 'rmdir' })
  | (ReplayAt & { op: 'rename'; dir2: Buffer; name2: Buffer })
  /** open(O_WRONLY) of a regular file, one byte written at `offset` (offset < 0: ftruncate to 0), close. */
  | (ReplayAt & { op: 'write'; offset: number })
  /** utimensat(AT_SYMLINK_NOFOLLOW) with both times. */
  | (ReplayAt & { op: 'utimens'; atime: Timespec; mtime: Timespec });

interface NativeFuseSessionCtor {
  new (
    mountpoint: string,
    args: string[],
    config: FuseSessionConfig,
    onRequest: (req: FuseRequest) => void,
    onExit: () => void,
  ): NativeFuseSession;
}

export const FuseSession: NativeFuseSessionCtor = native.FuseSession;
export const fuseVersion: number = native.fuseVersion;

// setattr `valid` bits (FUSE_SET_ATTR_*).
export const SETATTR = {
  MODE: 1 << 0, UID: 1 << 1, GID: 1 << 2, SIZE: 1 << 3, ATIME: 1 << 4, MTIME: 1 << 5,
  ATIME_NOW: 1 << 7, MTIME_NOW: 1 << 8, CTIME: 1 << 10,
} as const;

/** A -o option value escaped for libfuse's option parser (commas and backslashes). */
export function escapeOption(value: string): string {
  return value.replace(/[\\,]/g, (c) => '\\' + c);
}

/** fuse_session_new arguments for the given mount options. */
export function fuseArgs(m: FuseMountArgs): string[] {
  const o: string[] = [];
  o.push(`fsname=${escapeOption(m.fsname ?? 'dirvisor')}`);
  o.push(`subtype=${escapeOption(m.subtype ?? 'dirvisor')}`);
  if (m.allowOther) o.push('allow_other');
  if (m.defaultPermissions) o.push('default_permissions');
  if (m.readOnly) o.push('ro');
  if (m.maxRead) o.push(`max_read=${m.maxRead}`);
  if (m.autoUnmount) o.push('auto_unmount');
  for (const f of m.flags ?? []) o.push(f);
  const args = ['-o', o.join(',')];
  if (m.debug) args.push('-d');
  return args;
}
