// Typed wrapper over the addon's `sys` object (native/src/sys.cc): fd-relative Linux file
// syscalls run on a dedicated native thread pool, with optional per-call fs credentials.
//
// Every call returns a Promise that rejects with a SysError: `errno` is the POSITIVE Linux errno,
// `code` its name ('ENOENT'), `syscall` the failing call. Paths and names are strings or raw
// Buffers (Linux names need not be UTF-8). `creds`, when given, makes the kernel act as that
// user for the call: files are created owned by it and permission checks (EACCES) are its own.
import { native } from './index.js';

export interface Creds {
  uid: number;
  gid: number;
  /** Supplementary groups; none when absent. */
  groups?: number[];
}

export interface SysError extends Error {
  errno: number;
  code: string;
  syscall: string;
}

export interface Stat {
  /** dev and ino are exact (64-bit): together they identify an inode. */
  dev: bigint;
  ino: bigint;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  size: number;
  blocks: number;
  blksize: number;
  atimeSec: number;
  atimeNsec: number;
  mtimeSec: number;
  mtimeNsec: number;
  ctimeSec: number;
  ctimeNsec: number;
}

export interface StatFs {
  type: number;
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  namemax: number;
  flags: number;
}

export interface RawDirent {
  name: Buffer;
  ino: bigint;
  /** d_type */
  type: number;
  /** Directory position after this entry (may use all 63 bits, e.g. ext4 hashes). */
  off: bigint;
}

export type PathArg = string | Buffer;
type Int = number | bigint;

interface SysBinding {
  openat(dirfd: number, path: PathArg, flags: number, mode: number, creds?: Creds): Promise<number>;
  openat2(dirfd: number, path: PathArg, flags: number, mode: number, resolve: number, creds?: Creds): Promise<number>;
  reopen(fd: number, flags: number, creds?: Creds): Promise<number>;
  lookupat(dirfd: number, name: PathArg, creds?: Creds): Promise<{ fd: number; stat: Stat }>;
  createat(dirfd: number, name: PathArg, flags: number, mode: number, creds?: Creds): Promise<{ fd: number; pathFd: number; stat: Stat }>;
  close(fd: number): Promise<void>;
  fstatat(dirfd: number, path: PathArg, flags: number, creds?: Creds): Promise<Stat>;
  mkdirat(dirfd: number, path: PathArg, mode: number, creds?: Creds): Promise<void>;
  mknodat(dirfd: number, path: PathArg, mode: number, rdev: number, creds?: Creds): Promise<void>;
  symlinkat(target: PathArg, dirfd: number, path: PathArg, creds?: Creds): Promise<void>;
  readlinkat(dirfd: number, path: PathArg, creds?: Creds): Promise<Buffer>;
  unlinkat(dirfd: number, path: PathArg, flags: number, creds?: Creds): Promise<void>;
  renameat2(olddirfd: number, oldpath: PathArg, newdirfd: number, newpath: PathArg, flags: number, creds?: Creds): Promise<void>;
  linkat(olddirfd: number, oldpath: PathArg, newdirfd: number, newpath: PathArg, flags: number, creds?: Creds): Promise<void>;
  linkfd(fd: number, newdirfd: number, newpath: PathArg, creds?: Creds): Promise<void>;
  fchmodfd(fd: number, mode: number, creds?: Creds): Promise<void>;
  fchownfd(fd: number, uid: number, gid: number, creds?: Creds): Promise<void>;
  utimensfd(fd: number, atimeSec: Int, atimeNsec: number, mtimeSec: Int, mtimeNsec: number, creds?: Creds): Promise<void>;
  ftruncate(fd: number, length: Int, creds?: Creds): Promise<void>;
  pread(fd: number, size: number, offset: Int): Promise<Buffer>;
  pwrite(fd: number, data: Buffer, offset: Int, creds?: Creds): Promise<number>;
  fsync(fd: number, datasync: boolean): Promise<void>;
  flush(fd: number): Promise<void>;
  fallocate(fd: number, mode: number, offset: Int, length: Int, creds?: Creds): Promise<void>;
  copyFileRange(fdIn: number, offIn: Int, fdOut: number, offOut: Int, length: number, flags: number, creds?: Creds): Promise<number>;
  lseek(fd: number, offset: Int, whence: number): Promise<number>;
  fstatfs(fd: number): Promise<StatFs>;
  getdents(fd: number, offset: Int, maxEntries: number): Promise<RawDirent[]>;
  getxattr(fd: number, name: PathArg, size: number, creds?: Creds): Promise<Buffer | number>;
  listxattr(fd: number, size: number, creds?: Creds): Promise<Buffer | number>;
  setxattr(fd: number, name: PathArg, value: Buffer, flags: number, creds?: Creds): Promise<void>;
  removexattr(fd: number, name: PathArg, creds?: Creds): Promise<void>;
  faccess(fd: number, mask: number, creds?: Creds): Promise<void>;
  setThreads(n: number): void;
  constants: Record<SysConstant, number>;
}

export type SysConstant =
  | 'O_RDONLY' | 'O_WRONLY' | 'O_RDWR' | 'O_ACCMODE' | 'O_CREAT' | 'O_EXCL' | 'O_TRUNC' | 'O_APPEND'
  | 'O_NONBLOCK' | 'O_DIRECTORY' | 'O_NOFOLLOW' | 'O_PATH' | 'O_CLOEXEC' | 'O_DIRECT' | 'O_SYNC'
  | 'O_DSYNC' | 'O_NOATIME' | 'O_NOCTTY' | 'O_TMPFILE' | 'O_LARGEFILE'
  | 'AT_FDCWD' | 'AT_EMPTY_PATH' | 'AT_SYMLINK_NOFOLLOW' | 'AT_SYMLINK_FOLLOW' | 'AT_REMOVEDIR' | 'AT_EACCESS'
  | 'RESOLVE_BENEATH' | 'RESOLVE_NO_SYMLINKS' | 'RESOLVE_NO_MAGICLINKS' | 'RESOLVE_NO_XDEV' | 'RESOLVE_IN_ROOT'
  | 'RENAME_NOREPLACE' | 'RENAME_EXCHANGE' | 'RENAME_WHITEOUT'
  | 'UTIME_NOW' | 'UTIME_OMIT'
  | 'SEEK_SET' | 'SEEK_CUR' | 'SEEK_END' | 'SEEK_DATA' | 'SEEK_HOLE'
  | 'FALLOC_FL_KEEP_SIZE' | 'FALLOC_FL_PUNCH_HOLE' | 'FALLOC_FL_COLLAPSE_RANGE' | 'FALLOC_FL_ZERO_RANGE'
  | 'FALLOC_FL_INSERT_RANGE' | 'FALLOC_FL_UNSHARE_RANGE'
  | 'XATTR_CREATE' | 'XATTR_REPLACE'
  | 'S_IFMT' | 'S_IFREG' | 'S_IFDIR' | 'S_IFLNK' | 'S_IFCHR' | 'S_IFBLK' | 'S_IFIFO' | 'S_IFSOCK';

const sys = native.sys as SysBinding;

/** Linux constants the syscalls take (O_PATH, AT_EMPTY_PATH, RESOLVE_*, UTIME_NOW...). */
export const C: Readonly<Record<SysConstant, number>> = Object.freeze({ ...sys.constants });

/** openat(2); O_CLOEXEC is always added. */
export const openat = (dirfd: number, path: PathArg, flags: number, mode = 0, creds?: Creds): Promise<number> =>
  sys.openat(dirfd, path, flags, mode, creds);

/** openat2(2) with RESOLVE_* flags (Linux 5.6+). */
export const openat2 = (dirfd: number, path: PathArg, flags: number, mode: number, resolve: number, creds?: Creds): Promise<number> =>
  sys.openat2(dirfd, path, flags, mode, resolve, creds);

/** A real open of what `fd` (typically O_PATH) refers to, via /proc/self/fd/N: no name is
 *  resolved again. O_CREAT/O_EXCL/O_NOFOLLOW are ignored; a symlink inode gives ELOOP. */
export const reopen = (fd: number, flags: number, creds?: Creds): Promise<number> => sys.reopen(fd, flags, creds);

/** O_PATH|O_NOFOLLOW open of ONE name under dirfd (openat2 RESOLVE_BENEATH|NO_SYMLINKS when
 *  available) plus its stat, in one trip to the pool. */
/** Creates `name` (O_CREAT|O_EXCL|O_NOFOLLOW added): the open fd, an O_PATH fd of the same inode, its stat. */
export const createat = (dirfd: number, name: PathArg, flags: number, mode: number, creds?: Creds): Promise<{ fd: number; pathFd: number; stat: Stat }> =>
  sys.createat(dirfd, name, flags, mode, creds);
export const lookupat = (dirfd: number, name: PathArg, creds?: Creds): Promise<{ fd: number; stat: Stat }> =>
  sys.lookupat(dirfd, name, creds);

export const close = (fd: number): Promise<void> => sys.close(fd);

/** fstatat(2); flags default to AT_EMPTY_PATH|AT_SYMLINK_NOFOLLOW for `fstatat(fd)`. */
export const fstatat = (dirfd: number, path: PathArg = '', flags?: number, creds?: Creds): Promise<Stat> =>
  sys.fstatat(dirfd, path, flags ?? (C.AT_EMPTY_PATH | C.AT_SYMLINK_NOFOLLOW), creds);

export const mkdirat = (dirfd: number, path: PathArg, mode: number, creds?: Creds): Promise<void> =>
  sys.mkdirat(dirfd, path, mode, creds);

export const mknodat = (dirfd: number, path: PathArg, mode: number, rdev: number, creds?: Creds): Promise<void> =>
  sys.mknodat(dirfd, path, mode, rdev, creds);

export const symlinkat = (target: PathArg, dirfd: number, path: PathArg, creds?: Creds): Promise<void> =>
  sys.symlinkat(target, dirfd, path, creds);

/** readlinkat(2); with an O_PATH fd of a symlink, pass "" to read that link. */
export const readlinkat = (dirfd: number, path: PathArg = '', creds?: Creds): Promise<Buffer> =>
  sys.readlinkat(dirfd, path, creds);

export const unlinkat = (dirfd: number, path: PathArg, flags = 0, creds?: Creds): Promise<void> =>
  sys.unlinkat(dirfd, path, flags, creds);

export const renameat2 = (olddirfd: number, oldpath: PathArg, newdirfd: number, newpath: PathArg, flags = 0, creds?: Creds): Promise<void> =>
  sys.renameat2(olddirfd, oldpath, newdirfd, newpath, flags, creds);

export const linkat = (olddirfd: number, oldpath: PathArg, newdirfd: number, newpath: PathArg, flags = 0, creds?: Creds): Promise<void> =>
  sys.linkat(olddirfd, oldpath, newdirfd, newpath, flags, creds);

/** A new name for what `fd` refers to (O_PATH fds and symlinks included). */
export const linkfd = (fd: number, newdirfd: number, newpath: PathArg, creds?: Creds): Promise<void> =>
  sys.linkfd(fd, newdirfd, newpath, creds);

/** chmod of what `fd` refers to (O_PATH fine); a symlink gives EOPNOTSUPP on Linux 6.6+. */
export const fchmodfd = (fd: number, mode: number, creds?: Creds): Promise<void> => sys.fchmodfd(fd, mode, creds);

/** chown of what `fd` refers to, a symlink itself included; -1 keeps an id. */
export const fchownfd = (fd: number, uid: number, gid: number, creds?: Creds): Promise<void> =>
  sys.fchownfd(fd, uid, gid, creds);

/** utimensat on what `fd` refers to (never through a symlink); nsec may be C.UTIME_NOW/UTIME_OMIT. */
export const utimensfd = (fd: number, atimeSec: Int, atimeNsec: number, mtimeSec: Int, mtimeNsec: number, creds?: Creds): Promise<void> =>
  sys.utimensfd(fd, atimeSec, atimeNsec, mtimeSec, mtimeNsec, creds);

export const ftruncate = (fd: number, length: Int, creds?: Creds): Promise<void> => sys.ftruncate(fd, length, creds);

/** pread(2) into a Buffer the worker allocates; shorter than `size` at end of file. */
export const pread = (fd: number, size: number, offset: Int): Promise<Buffer> => sys.pread(fd, size, offset);

export const pwrite = (fd: number, data: Buffer, offset: Int, creds?: Creds): Promise<number> =>
  sys.pwrite(fd, data, offset, creds);

export const fsync = (fd: number, datasync = false): Promise<void> => sys.fsync(fd, datasync);

/** close(dup(fd)): the file system sees a close (NFS flushes, reports errors) but fd stays open. */
export const flush = (fd: number): Promise<void> => sys.flush(fd);

export const fallocate = (fd: number, mode: number, offset: Int, length: Int, creds?: Creds): Promise<void> =>
  sys.fallocate(fd, mode, offset, length, creds);

export const copyFileRange = (fdIn: number, offIn: Int, fdOut: number, offOut: Int, length: number, flags = 0, creds?: Creds): Promise<number> =>
  sys.copyFileRange(fdIn, offIn, fdOut, offOut, length, flags, creds);

export const lseek = (fd: number, offset: Int, whence: number): Promise<number> => sys.lseek(fd, offset, whence);

/** fstatfs(2); O_PATH fds work. */
export const fstatfs = (fd: number): Promise<StatFs> => sys.fstatfs(fd);

/** Up to `maxEntries` entries of a directory fd (a real one, not O_PATH) from `offset` (0 or an
 *  `off` returned earlier). Not safe to run twice at once on one fd (it seeks). */
export const getdents = (fd: number, offset: Int, maxEntries: number): Promise<RawDirent[]> =>
  sys.getdents(fd, offset, maxEntries);

/** With size 0, the value's length; ERANGE when `size` is too small. */
export const getxattr = (fd: number, name: PathArg, size: number, creds?: Creds): Promise<Buffer | number> =>
  sys.getxattr(fd, name, size, creds);

export const listxattr = (fd: number, size: number, creds?: Creds): Promise<Buffer | number> => sys.listxattr(fd, size, creds);

export const setxattr = (fd: number, name: PathArg, value: Buffer, flags = 0, creds?: Creds): Promise<void> =>
  sys.setxattr(fd, name, value, flags, creds);

export const removexattr = (fd: number, name: PathArg, creds?: Creds): Promise<void> => sys.removexattr(fd, name, creds);

/** access check with the fs credentials (AT_EACCESS): `creds` decide. Linux 5.8+. */
export const faccess = (fd: number, mask: number, creds?: Creds): Promise<void> => sys.faccess(fd, mask, creds);

/** How many native pool threads may run at once (default 16 or $DIRVISOR_SYS_THREADS). */
export const setThreads = (n: number): void => sys.setThreads(n);

export function isSysError(err: unknown): err is SysError {
  return err instanceof Error && typeof (err as SysError).errno === 'number' && typeof (err as SysError).syscall === 'string';
}
