// Mount helpers: reading /proc/self/mountinfo (never stat()ing a mount point, which would hang on a
// stuck FUSE server), unmounting FUSE mounts and tmpfs, aborting a stuck FUSE connection, and
// dropping the kernel's caches between phases.
import fs from 'node:fs';
import { run, progress } from './proc.js';

export interface MountEntry {
  mountpoint: string;
  fstype: string;
  /** "major:minor"; for FUSE the minor is the connection's number in /sys/fs/fuse/connections. */
  dev: string;
}

const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

export function mountEntry(mountpoint: string): MountEntry | null {
  let found: MountEntry | null = null;
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f.length < 10 || unescape(f[4]) !== mountpoint) continue;
    const dash = f.indexOf('-', 6);
    found = { mountpoint, dev: f[2], fstype: f[dash + 1] }; // the last one wins (stacked mounts)
  }
  return found;
}

export const isMounted = (mountpoint: string, fstypePrefix = ''): boolean => mountEntry(mountpoint)?.fstype.startsWith(fstypePrefix) ?? false;

/** Tells the kernel to fail every request of a FUSE connection (for a server that stopped answering). */
export function abortFuse(dev: string): void {
  const minor = dev.split(':')[1];
  try {
    fs.writeFileSync(`/sys/fs/fuse/connections/${minor}/abort`, '1');
    progress(`aborted FUSE connection ${minor}`);
  } catch {
    // already gone
  }
}

/** fusermount3 -u, retried while busy, then lazily. */
export async function unmountFuse(mountpoint: string): Promise<void> {
  for (let i = 0; i < 5 && isMounted(mountpoint); i++) {
    const r = await run('fusermount3', ['-u', mountpoint], { timeoutMs: 10_000 });
    if (r.code === 0) break;
    await new Promise((res) => setTimeout(res, 200));
  }
  if (isMounted(mountpoint)) await run('fusermount3', ['-uz', mountpoint], { timeoutMs: 10_000 });
}

export async function mountTmpfs(dir: string, sizeBytes: number): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const mib = Math.ceil(sizeBytes / (1 << 20));
  const r = await run('mount', ['-t', 'tmpfs', '-o', `size=${mib}m,mode=0755`, 'dirvisor-bench', dir], { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`mount -t tmpfs on ${dir}: ${r.stderr.trim()}`);
}

export async function unmountTmpfs(dir: string): Promise<void> {
  if (!isMounted(dir, 'tmpfs')) return;
  const r = await run('umount', [dir], { timeoutMs: 20_000 });
  if (r.code !== 0) await run('umount', ['-l', dir], { timeoutMs: 10_000 });
}

/** The file system type of a directory as statfs sees it (tmpfs, ext2/ext3, xfs, ...). */
export async function fsType(dir: string): Promise<string> {
  const r = await run('stat', ['-f', '-c', '%T', dir], { timeoutMs: 5_000 });
  return r.stdout.trim() || 'unknown';
}

let canDrop: boolean | null = null;

/**
 * Writes back the backing file system (syncfs on it only: a global sync could wait on other
 * people's FUSE mounts) and drops the page cache, dentries and inodes. Returns false when this
 * machine does not let us (not root, read-only /proc/sys).
 */
export async function dropCaches(backingDir: string): Promise<boolean> {
  await run('sync', ['-f', backingDir], { timeoutMs: 120_000 });
  if (canDrop === false) return false;
  try {
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
    canDrop = true;
  } catch (err) {
    if (canDrop === null) progress(`cannot drop caches (${(err as Error).message}): cold phases run warm`);
    canDrop = false;
  }
  // Evicted FUSE inodes turn into FORGETs the servers handle asynchronously: let them settle.
  await new Promise((r) => setTimeout(r, 200));
  return canDrop;
}
