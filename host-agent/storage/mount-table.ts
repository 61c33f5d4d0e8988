// Which mount a path is on, read from /proc/self/mountinfo. Reading it never touches the mounted
// filesystems themselves, so it answers at once even while a network mount is hung.
import fs from 'node:fs/promises';

export interface MountEntry {
  /** Mount id (first field): the same id at the same place means the same mount. */
  id: number;
  mountPoint: string;
  fstype: string;
  source: string;
}

/** This process's mount table, in order (a later entry at the same place is on top). */
export async function readMountTable(file = '/proc/self/mountinfo'): Promise<MountEntry[]> {
  return parseMountInfo(await fs.readFile(file, 'utf8'));
}

export function parseMountInfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    if (f.length < 10 || sep < 0) continue;
    out.push({ id: Number(f[0]), mountPoint: unescape(f[4]), fstype: f[sep + 1] ?? '', source: unescape(f[sep + 2] ?? '') });
  }
  return out;
}

/**
 * The mount `path` (absolute, symlinks resolved) is on: the entry whose mount point is the longest
 * ancestor-or-self of it, the topmost of several at that place.
 */
export function mountOf(path: string, table: readonly MountEntry[]): MountEntry | undefined {
  let best: MountEntry | undefined;
  for (const m of table) {
    const covers = m.mountPoint === '/' || path === m.mountPoint || path.startsWith(`${m.mountPoint}/`);
    if (covers && (!best || m.mountPoint.length >= best.mountPoint.length)) best = m;
  }
  return best;
}

/** Spaces, tabs, newlines and backslashes in mountinfo paths are octal escapes. */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}
