// The state the differential test compares: the tree (names and types) with what POSIX promises an
// application about each entry (permission bits, owner, link count, file size, symlink target),
// and file contents read through fresh opens. Left out on purpose, because they legitimately
// differ between two file systems or between a cache and its backing store: inode and device
// numbers, st_blocks, atime, ctime, mtime, directory sizes.
import fs from 'node:fs/promises';
import path from 'node:path';

export interface EntryState {
  type: 'file' | 'dir' | 'symlink' | 'other';
  perm: number;
  nlink: number;
  uid: number;
  gid: number;
  /** Regular files and symlinks only. */
  size?: number;
  target?: string;
  /** Not compared (differs between file systems): tells which paths are one file. */
  ino: number;
}

/** Relative path -> state, for every entry under a root (the root itself left out). */
export type Tree = Map<string, EntryState>;

const COMPARED: ReadonlyArray<keyof EntryState> = ['type', 'perm', 'nlink', 'uid', 'gid', 'size', 'target'];

export async function readTree(root: string): Promise<Tree> {
  const found: Array<[string, EntryState]> = [];
  // Each directory's entries at once: a step reads the whole tree twice, and most of it is waiting.
  const walk = async (rel: string): Promise<void> => {
    const names = await fs.readdir(path.join(root, rel));
    await Promise.all(names.map(async (name) => {
      const child = rel ? `${rel}/${name}` : name;
      const abs = path.join(root, child);
      const st = await fs.lstat(abs);
      const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
      const e: EntryState = { type, perm: st.mode & 0o7777, nlink: st.nlink, uid: st.uid, gid: st.gid, ino: st.ino };
      if (type === 'file' || type === 'symlink') e.size = st.size;
      if (type === 'symlink') e.target = await fs.readlink(abs);
      found.push([child, e]);
      if (type === 'dir') await walk(child);
    }));
  };
  await walk('');
  // In name order, so that iterating it (the generator picks from it) does not depend on timing.
  return new Map(found.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

function show(key: keyof EntryState, v: unknown): string {
  if (v === undefined) return '-';
  return key === 'perm' ? `0${(v as number).toString(8)}` : JSON.stringify(v);
}

/** Every difference between two trees, one line each, naming the path and the field. */
export function diffTrees(expected: Tree, actual: Tree, names: [string, string]): string[] {
  const [en, an] = names;
  const out: string[] = [];
  for (const [p, e] of expected) {
    const a = actual.get(p);
    if (!a) {
      out.push(`${p}: ${e.type} in ${en}, missing in ${an}`);
      continue;
    }
    for (const key of COMPARED) {
      if (e[key] !== a[key]) out.push(`${p}: ${key} ${en}=${show(key, e[key])} ${an}=${show(key, a[key])}`);
    }
  }
  for (const [p, a] of actual) if (!expected.has(p)) out.push(`${p}: ${a.type} in ${an}, missing in ${en}`);
  return out;
}

/** How two contents of one file differ (undefined: they do not). */
export function contentDifference(expected: Buffer, actual: Buffer, names: [string, string]): string | undefined {
  if (expected.equals(actual)) return undefined;
  const [en, an] = names;
  const n = Math.min(expected.length, actual.length);
  let i = 0;
  while (i < n && expected[i] === actual[i]) i++;
  const byte = (b: Buffer): string => (i < b.length ? `0x${b[i].toString(16).padStart(2, '0')}` : 'EOF');
  let end = i;
  while (end < n && expected[end] !== actual[end]) end++;
  const run = i < n ? `, ${end - i} byte(s) differ from there` : '';
  return `content differs at offset ${i} (page ${Math.floor(i / 4096)}): ${en}=${byte(expected)} ${an}=${byte(actual)}${run}; lengths ${en}=${expected.length} ${an}=${actual.length}`;
}

async function readContent(root: string, rel: string): Promise<Buffer | string> {
  try {
    return await fs.readFile(path.join(root, rel));
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
}

/**
 * Compares the contents of `paths` (regular files in both trees; other differences are the tree
 * comparison's to report), each read through a fresh open on both sides.
 */
export async function diffContents(
  roots: [string, string], trees: [Tree, Tree], paths: Iterable<string>, names: [string, string],
): Promise<string[]> {
  const out: string[] = [];
  for (const p of new Set(paths)) {
    if (trees[0].get(p)?.type !== 'file' || trees[1].get(p)?.type !== 'file') continue;
    const [e, a] = await Promise.all([readContent(roots[0], p), readContent(roots[1], p)]);
    if (typeof e === 'string' || typeof a === 'string') {
      if (e !== a) out.push(`${p}: reading it: ${names[0]}=${typeof e === 'string' ? e : 'ok'} ${names[1]}=${typeof a === 'string' ? a : 'ok'}`);
      continue;
    }
    const d = contentDifference(e, a, names);
    if (d) out.push(`${p}: ${d}`);
  }
  return out;
}

/** The files of a tree (for a full content comparison). */
export function filesOf(tree: Tree): string[] {
  return [...tree].filter(([, e]) => e.type === 'file').map(([p]) => p);
}

/** Paths of a tree that are the inode `ino` (all names of one file). */
export function pathsOfInode(tree: Tree, ino: number): string[] {
  return [...tree].filter(([, e]) => e.ino === ino && e.type === 'file').map(([p]) => p);
}
