// Storage directory names: what an operator asks for ("/projects/alpha"), independent of which
// storage node holds it. Always absolute and normalized, compared component by component.
import path from 'node:path';

const NAME_MAX = 255;
const PATH_MAX = 4096;

/**
 * Why `dir` is not a valid storage directory name, or null when it is. `allowRoot` admits "/" (a
 * prefix that matches everything); a directory to serve is always below "/".
 */
export function storageDirProblem(dir: unknown, allowRoot = false): string | null {
  if (typeof dir !== 'string') return `must be an absolute path (a string), got ${JSON.stringify(dir)}`;
  if (!dir.startsWith('/')) return `must be an absolute path, got "${dir}"`;
  if (dir.includes('\0')) return 'must not contain a NUL byte';
  if (Buffer.byteLength(dir) > PATH_MAX) return `is longer than ${PATH_MAX} bytes`;
  if (dir === '/') return allowRoot ? null : 'must name a directory below "/"';
  const parts = dir.slice(1).split('/');
  if (parts.includes('..')) return `must not contain ".." components, got "${dir}"`;
  const normalized = path.posix.normalize(dir).replace(/(.)\/+$/, '$1');
  if (normalized !== dir) return `must be normalized (no "//", "." or trailing "/"), got "${dir}"; did you mean "${normalized}"?`;
  const long = parts.find((p) => Buffer.byteLength(p) > NAME_MAX);
  if (long !== undefined) return `has a component longer than ${NAME_MAX} bytes ("${long.slice(0, 20)}...")`;
  return null;
}

/** The components of a valid storage directory ("/a/b" → ["a", "b"], "/" → []). */
export function components(dir: string): string[] {
  return dir === '/' ? [] : dir.slice(1).split('/');
}

/** True when `dir` is `prefix` or below it, by whole components ("/ab" is not under "/a"). */
export function isUnder(dir: string, prefix: string): boolean {
  return prefix === '/' || dir === prefix || dir.startsWith(prefix + '/');
}

/** Where a storage directory lives on a node: the node's host path joined with the directory. */
export function hostPathOf(nodePath: string, dir: string): string {
  return dir === '/' ? nodePath : path.posix.join(nodePath, dir);
}

/** A host path given by the operator (node mount point, sockets, state): absolute and normalized. */
export function hostPathProblem(p: unknown): string | null {
  if (typeof p !== 'string') return `must be an absolute path (a string), got ${JSON.stringify(p)}`;
  if (!p.startsWith('/')) return `must be an absolute path, got "${p}"`;
  if (p.includes('\0')) return 'must not contain a NUL byte';
  const normalized = p === '/' ? '/' : path.posix.normalize(p).replace(/(.)\/+$/, '$1');
  if (normalized !== p) return `must be normalized (no "//", "." , ".." or trailing "/"), got "${p}"; did you mean "${normalized}"?`;
  return null;
}
