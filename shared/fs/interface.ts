// The seam of dirvisor: one inode-based file-system interface (see ARCHITECTURE.md).
// Backends implement it, the host server exposes it over a protocol session, the guest's remote
// client implements it by sending requests, and the FUSE adapter consumes it.
//
// Conventions
// - Node ids: 1 is the export's root (FUSE_ROOT_ID). Every Entry returned by lookup, mknod, mkdir,
//   symlink, link, create and readdirplus adds one to that node's lookup count; forget subtracts.
// - Names are raw bytes (Linux file names need not be UTF-8) and always a single component.
// - Errors are thrown as FsError with a positive Linux errno.
// - Numbers are plain JS numbers: sizes and offsets stay below 2^53.

export const ROOT_ID = 1;

/** Who is asking: the calling process in the guest, as the kernel reported it to FUSE. */
export interface Caller {
  uid: number;
  gid: number;
  pid: number;
  /** Supplementary groups, when known (the guest reads them from /proc; permission checks use them). */
  groups?: number[];
  /** The caller's umask, when the kernel reported it (create, mkdir, mknod); modes passed in already have it applied. */
  umask?: number;
}

export interface Timespec {
  sec: number;
  nsec: number;
}

export interface Attr {
  ino: number;
  mode: number; // type bits + permission bits, as st_mode
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  size: number;
  blocks: number; // 512-byte blocks
  blksize: number;
  atime: Timespec;
  mtime: Timespec;
  ctime: Timespec;
}

export interface Entry {
  nodeId: number;
  generation: number;
  attr: Attr;
}

/** Fields present are changed; `atime`/`mtime` of 'now' mean UTIME_NOW. */
export interface SetAttr {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  atime?: Timespec | 'now';
  mtime?: Timespec | 'now';
}

export interface OpenResult {
  fh: number;
  /** The kernel may keep cached pages from an earlier open (FOPEN_KEEP_CACHE). */
  keepCache?: boolean;
  /** Bypass the page cache for this open (FOPEN_DIRECT_IO). */
  directIo?: boolean;
}

export interface CreateResult extends OpenResult {
  entry: Entry;
}

export interface DirEntry {
  name: Buffer;
  ino: number;
  /** File type as in d_type (DT_REG = 8, DT_DIR = 4, ...). */
  type: number;
  /** Offset to pass to the next readdir to continue after this entry. */
  nextOffset: number;
  /** Present for readdirplus (except for "." and ".."): counts as a lookup. */
  entry?: Entry;
}

export interface StatFs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  namemax: number;
}

export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;
export const RENAME_WHITEOUT = 4;

export interface FileSystem {
  lookup(caller: Caller, parent: number, name: Buffer): Promise<Entry>;
  /** Drop `nlookup` references to each node; no reply. */
  forget(items: ReadonlyArray<{ nodeId: number; nlookup: number }>): void;
  getattr(caller: Caller, node: number, fh?: number): Promise<Attr>;
  setattr(caller: Caller, node: number, set: SetAttr, fh?: number): Promise<Attr>;
  readlink(caller: Caller, node: number): Promise<Buffer>;
  mknod(caller: Caller, parent: number, name: Buffer, mode: number, rdev: number): Promise<Entry>;
  mkdir(caller: Caller, parent: number, name: Buffer, mode: number): Promise<Entry>;
  unlink(caller: Caller, parent: number, name: Buffer): Promise<void>;
  rmdir(caller: Caller, parent: number, name: Buffer): Promise<void>;
  symlink(caller: Caller, parent: number, name: Buffer, target: Buffer): Promise<Entry>;
  rename(caller: Caller, parent: number, name: Buffer, newParent: number, newName: Buffer, flags: number): Promise<void>;
  link(caller: Caller, node: number, newParent: number, newName: Buffer): Promise<Entry>;
  open(caller: Caller, node: number, flags: number): Promise<OpenResult>;
  create(caller: Caller, parent: number, name: Buffer, mode: number, flags: number): Promise<CreateResult>;
  read(caller: Caller, node: number, fh: number, offset: number, size: number): Promise<Buffer>;
  write(caller: Caller, node: number, fh: number, offset: number, data: Buffer): Promise<number>;
  flush(caller: Caller, node: number, fh: number): Promise<void>;
  fsync(caller: Caller, node: number, fh: number, datasync: boolean): Promise<void>;
  release(caller: Caller, node: number, fh: number): Promise<void>;
  opendir(caller: Caller, node: number, flags: number): Promise<OpenResult>;
  /** Entries after `offset`, at most `maxEntries`; an empty list means the end. */
  readdir(caller: Caller, node: number, fh: number, offset: number, maxEntries: number, plus: boolean): Promise<DirEntry[]>;
  fsyncdir(caller: Caller, node: number, fh: number, datasync: boolean): Promise<void>;
  releasedir(caller: Caller, node: number, fh: number): Promise<void>;
  statfs(caller: Caller, node: number): Promise<StatFs>;
  setxattr(caller: Caller, node: number, name: Buffer, value: Buffer, flags: number): Promise<void>;
  /** With size 0, returns the value's length only (as an empty buffer of that length is wasteful). */
  getxattr(caller: Caller, node: number, name: Buffer, size: number): Promise<Buffer | number>;
  /** NUL-separated names; with size 0, the length only. */
  listxattr(caller: Caller, node: number, size: number): Promise<Buffer | number>;
  removexattr(caller: Caller, node: number, name: Buffer): Promise<void>;
  access(caller: Caller, node: number, mask: number): Promise<void>;
  fallocate(caller: Caller, node: number, fh: number, mode: number, offset: number, length: number): Promise<void>;
  copyFileRange(
    caller: Caller,
    nodeIn: number, fhIn: number, offsetIn: number,
    nodeOut: number, fhOut: number, offsetOut: number,
    length: number, flags: number,
  ): Promise<number>;
  lseek(caller: Caller, node: number, fh: number, offset: number, whence: number): Promise<number>;
  /** Release everything (handles, node references); the file system is not used afterwards. */
  destroy(): Promise<void>;
}
