// File-system errors travel as Linux errno values, from the backend through the protocol to the
// FUSE reply, so an application in the guest sees exactly what the storage node said.
import os from 'node:os';

export const E = os.constants.errno as Required<typeof os.constants.errno>;

const nameByErrno = new Map<number, string>(Object.entries(E).map(([k, v]) => [v as number, k]));

export function errnoName(errno: number): string {
  return nameByErrno.get(errno) ?? `errno ${errno}`;
}

/**
 * An errno result. These are ordinary answers (ENOENT for a lookup, ENODATA for an xattr), made
 * thousands of times a second, so no stack trace is captured: it cost more than the rest of the
 * error path, and the message names the operation.
 */
export class FsError extends Error {
  readonly errno: number;
  readonly code: string;
  constructor(errno: number, message?: string) {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(message ?? errnoName(errno));
    Error.stackTraceLimit = limit;
    this.errno = errno;
    this.code = errnoName(errno);
    this.name = 'FsError';
  }
}

/** Any thrown value as an errno: Node system errors carry a negative `errno`, ours a positive one. */
export function toErrno(err: unknown): number {
  if (err instanceof FsError) return err.errno;
  const e = err as { errno?: unknown; code?: unknown };
  if (typeof e?.errno === 'number' && e.errno !== 0) return Math.abs(e.errno);
  if (typeof e?.code === 'string' && e.code in E) return E[e.code as keyof typeof E] as number;
  return E.EIO;
}
