// The external tools the bench uses and, where allowed (root, apt-get, BENCH_NO_INSTALL unset),
// installing the missing ones from Debian's packages: fio, sshfs, openssh-server.
import { run, progress, which } from './proc.js';
import type { BenchConfig } from './config.js';

export interface Tools {
  fio: string | null;
  sshfs: string | null;
  sshd: string | null;
  /** Why a tool is missing, for the report. */
  notes: string[];
}

function find(): Omit<Tools, 'notes'> {
  return { fio: which('fio'), sshfs: which('sshfs'), sshd: which('/usr/sbin/sshd') ?? which('sshd') };
}

export async function ensureTools(cfg: BenchConfig): Promise<Tools> {
  let t = find();
  const notes: string[] = [];
  const wanted: string[] = [];
  if (!t.fio && cfg.useFio) wanted.push('fio');
  if (cfg.targets.includes('sshfs')) {
    if (!t.sshfs) wanted.push('sshfs');
    if (!t.sshd) wanted.push('openssh-server');
  }
  if (wanted.length) {
    if (!cfg.install) notes.push(`not installing ${wanted.join(', ')} (BENCH_NO_INSTALL)`);
    else if (process.getuid?.() !== 0 || !which('apt-get')) notes.push(`cannot install ${wanted.join(', ')} (needs root and apt-get)`);
    else {
      progress(`apt-get install ${wanted.join(' ')}`);
      const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
      const install = () => run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...wanted], { timeoutMs: 600_000, env });
      let r = await install();
      if (r.code !== 0) {
        await run('apt-get', ['update', '-qq'], { timeoutMs: 300_000, env });
        r = await install();
      }
      if (r.code !== 0) notes.push(`apt-get install ${wanted.join(' ')} failed: ${r.stderr.trim().split('\n').pop()}`);
      t = find();
    }
  }
  if (!t.fio) notes.push(cfg.useFio ? 'fio unavailable: random reads use the built-in reader' : 'random reads use the built-in reader (BENCH_FIO=0)');
  if (!cfg.useFio) t.fio = null;
  return { ...t, notes };
}
