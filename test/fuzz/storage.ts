// The directory the fuzzed host serves: a size-limited tmpfs when we are root (fallocate, writes at
// huge offsets and copy_file_range of 1 GiB must not fill the machine's disk), seeded with a small
// tree of files, directories and links so requests find something to work on.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';

export interface FuzzStorage {
  work: string;
  dir: string;
  tmpfs: boolean;
  cleanup(): Promise<void>;
}

/** tmpfs mounts still mounted: unmounted (lazily) if the process exits without cleaning up. */
const mounted = new Set<string>();
process.once('exit', () => {
  for (const dir of mounted) {
    try {
      execFileSync('umount', ['-l', dir], { stdio: 'ignore' });
    } catch {
      // gone already
    }
  }
});

export async function makeStorage(prefix: string, opts: { tmpfs?: boolean; sizeMb?: number; inodes?: number } = {}): Promise<FuzzStorage> {
  const work = await fs.realpath(await fs.mkdtemp(path.join(os.tmpdir(), prefix)));
  const dir = path.join(work, 'storage');
  await fs.mkdir(dir);
  let tmpfs = false;
  if ((opts.tmpfs ?? true) && process.getuid?.() === 0) {
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${opts.sizeMb ?? 256}m,nr_inodes=${opts.inodes ?? 4096},nodev,nosuid,noexec,mode=0755`, 'dirvisor-fuzz', dir], { stdio: 'ignore' });
      tmpfs = true;
      mounted.add(dir);
    } catch {
      // not allowed here (no CAP_SYS_ADMIN): a plain directory will do
    }
  }
  await seedTree(dir);
  return {
    work,
    dir,
    tmpfs,
    async cleanup() {
      if (tmpfs && mounted.delete(dir)) {
        try {
          execFileSync('umount', [dir], { stdio: 'ignore' });
        } catch {
          execFileSync('umount', ['-l', dir], { stdio: 'ignore' });
        }
      }
      await fs.rm(work, { recursive: true, force: true }).catch(() => undefined);
    },
  };
}

export async function seedTree(dir: string): Promise<void> {
  for (let i = 0; i < 4; i++) await fs.writeFile(path.join(dir, `f${i}`), `file ${i}\n`.repeat(i * 100 + 1));
  await fs.writeFile(path.join(dir, 'big'), Buffer.alloc(1 << 20, 0x61));
  const fh = await fs.open(path.join(dir, 'sparse'), 'w');
  await fh.truncate(2 ** 40);
  await fh.close();
  for (let i = 0; i < 3; i++) {
    await fs.mkdir(path.join(dir, `d${i}`));
    await fs.writeFile(path.join(dir, `d${i}`, 'f0'), 'inner\n');
    await fs.mkdir(path.join(dir, `d${i}`, 'd0'));
  }
  await fs.symlink('f0', path.join(dir, 'link0'));
  await fs.symlink('../..', path.join(dir, 'up'));
  await fs.symlink('/etc/passwd', path.join(dir, 'abs'));
}
