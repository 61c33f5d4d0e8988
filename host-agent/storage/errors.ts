// Errors of storage resolution carry an errno code, so the control API and the protocol can pass
// them on as they pass on file-system errors, and a sentence an operator can act on.
import { FsError, E } from '../../shared/fs/errors.js';

export type StorageErrorCode =
  | 'EINVAL' // not a valid storage directory name
  | 'ENOENT' // found nowhere, and creation not asked for
  | 'ENOSPC' // creation asked for, no eligible node has room above its reserve
  | 'ENOTDIR' // a component on the node is not a directory
  | 'ELOOP' // a component on the node is a symlink (never followed)
  | 'EHOSTUNREACH' // the answer depends on a node that is unreachable
  | 'ETIMEDOUT' // a call on a node missed its deadline
  | 'EACCES'
  | 'EPERM'
  | 'EROFS'
  | 'EDQUOT'
  | 'EIO';

export class StorageError extends FsError {
  declare readonly code: StorageErrorCode;
  constructor(code: StorageErrorCode, message: string) {
    super(E[code], message);
    this.name = 'StorageError';
  }
}

const PASSED_ON: readonly StorageErrorCode[] = ['ENOENT', 'ENOSPC', 'ENOTDIR', 'ELOOP', 'ETIMEDOUT', 'EACCES', 'EPERM', 'EROFS', 'EDQUOT'];

/** A Node system error from a call on a node as a StorageError with our sentence in front. */
export function fromSystemError(err: unknown, what: string): StorageError {
  if (err instanceof StorageError) return err;
  const e = err as NodeJS.ErrnoException;
  const code = PASSED_ON.includes(e?.code as StorageErrorCode) ? (e.code as StorageErrorCode) : 'EIO';
  // Node's message is "ENOENT: no such file or directory, open '/proc/self/fd/18/x'": keep the words.
  const words = /^[A-Z0-9_]+: ([^,]+)/.exec(e?.message ?? '')?.[1] ?? e?.message ?? String(err);
  return new StorageError(code, `${what}: ${words}${e?.code ? ` (${e.code})` : ''}`);
}
