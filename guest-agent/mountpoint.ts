// Checks on a mount point before mounting, so the user gets "busy" or "missing" in plain words
// rather than a FUSE error, and a way to find what is mounted where.
import fs from 'node:fs/promises';
import path from 'node:path';

export interface MountInfo {
  mountpoint: string;
  /** "MAJ:MIN" of the mounted file system. */
  dev: string;
  fstype: string;
}

/** This process's mount table, from /proc/self/mountinfo, in order (a later entry is on top). */
export async function mountInfo(): Promise<MountInfo[]> {
  const text = await fs.readFile('/proc/self/mountinfo', 'utf8');
  const out: MountInfo[] = [];
  for (const line of text.split('\n')) {
    const parts = line.split(' ');
    if (parts.length < 10) continue;
    const sep = parts.indexOf('-');
    // Spaces and the like in paths are octal escapes.
    const mountpoint = parts[4].replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    out.push({ mountpoint, dev: parts[2], fstype: parts[sep + 1] ?? '' });
  }
  return out;
}

/** Mount points currently in the mount table, with their file system types. */
export async function mountedPaths(): Promise<Map<string, string>> {
  return new Map((await mountInfo()).map((m) => [m.mountpoint, m.fstype]));
}

export async function checkMountpoint(mountpoint: string, options: { create?: boolean } = {}): Promise<string> {
  const abs = path.resolve(mountpoint);
  let st = await fs.stat(abs).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOTCONN') throw new Error(`mount point ${abs} is a dead FUSE mount (its agent died); clear it with "fusermount3 -uz ${abs}"`);
    return null;
  });
  if (!st && options.create) {
    await fs.mkdir(abs, { recursive: true });
    st = await fs.stat(abs);
  }
  if (!st) throw new Error(`mount point ${abs} does not exist; create it first (mkdir -p ${abs})`);
  if (!st.isDirectory()) throw new Error(`mount point ${abs} is not a directory`);
  const mounted = await mountedPaths();
  if (mounted.has(abs)) throw new Error(`mount point ${abs} is busy: a ${mounted.get(abs)} file system is already mounted there (unmount it first)`);
  return abs;
}
