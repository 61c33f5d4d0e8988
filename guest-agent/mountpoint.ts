// Checks on a mount point before mounting, so the user gets "busy" or "missing" in plain words
// rather than a FUSE error, and a way to find what is mounted where.
import fs from 'node:fs/promises';
import path from 'node:path';

/** Mount points currently in the mount table (decoded from /proc/self/mountinfo). */
export async function mountedPaths(): Promise<Map<string, string>> {
  const text = await fs.readFile('/proc/self/mountinfo', 'utf8');
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const parts = line.split(' ');
    if (parts.length < 10) continue;
    const sep = parts.indexOf('-');
    const mp = parts[4].replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    out.set(mp, parts[sep + 1] ?? '');
  }
  return out;
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
