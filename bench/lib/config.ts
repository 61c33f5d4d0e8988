// What the data-path bench measures and how big, from the environment:
//   BENCH_QUICK=1        smoke run: 1/16 of the sizes, a small tree, 1 s repeated passes
//   BENCH_SCALE=F        multiply the sizes (file, number of files, random reads); default 1 (1/16 quick)
//   BENCH_DISK=0         skip the root-disk backing directory (default: measured)
//   BENCH_TMPFS=0        skip the tmpfs backing directory (default: measured)
//   BENCH_DISK_DIR=DIR   where the disk backing lives (default /var/tmp)
//   BENCH_TARGETS=a,b    only these of bare,passthrough_ll,dirvisor,sshfs (bare is always kept)
//   BENCH_PHASES=a,b     only these phases (ids: seqwrite seqread randread1 randreadN create stat readdir
//                        statRepeat readdirRepeat unlink untar find du rmtree; later ones need earlier ones)
//   BENCH_FIO=0          random reads with the built-in reader instead of fio
//   BENCH_NO_INSTALL=1   never apt-get install fio/sshfs/openssh-server/libfuse3-dev
//   BENCH_DV_OPTIONS=o   extra -o options for the dirvisor mount (default: none, i.e. the defaults)
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file is dist/bench/lib/config.js once built). */
export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const WORKER = path.join(REPO, 'dist/bench/lib/worker.js');
export const CACHE_DIR = path.join(REPO, '.bench');

export const TARGET_NAMES = ['bare', 'passthrough_ll', 'dirvisor', 'sshfs'] as const;
export type TargetName = (typeof TARGET_NAMES)[number];

export interface BenchConfig {
  quick: boolean;
  scale: number;
  /** Size of the sequential file, also read at random. */
  fileBytes: number;
  blockBytes: number;
  /** Files created, stat'ed, listed and unlinked. */
  files: number;
  /** 4 KiB random reads per run (split between the jobs of the parallel run). */
  randomReads: number;
  randomJobs: number;
  /** Minimum length of the repeated stat / readdir runs. */
  repeatSeconds: number;
  /** Which part of node_modules is tarred for untar/find/du. */
  tree: 'full' | 'small';
  backings: ('tmpfs' | 'disk')[];
  diskDir: string;
  targets: TargetName[];
  /** Phase ids to run (all when empty). */
  phases: string[];
  useFio: boolean;
  install: boolean;
  dirvisorOptions: string;
  /** Deadline for one phase on one target. */
  phaseTimeoutMs: number;
}

const flag = (name: string, dflt: boolean): boolean => {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  return !['0', 'false', 'no', 'off'].includes(v.toLowerCase());
};

export function loadConfig(): BenchConfig {
  const quick = flag('BENCH_QUICK', false);
  const scale = Number(process.env.BENCH_SCALE ?? (quick ? 1 / 16 : 1));
  if (!(scale > 0) || !Number.isFinite(scale)) throw new Error(`BENCH_SCALE must be a positive number, got ${process.env.BENCH_SCALE}`);
  const MiB = 1 << 20;
  const targets = (process.env.BENCH_TARGETS ?? TARGET_NAMES.join(','))
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const t of targets) if (!(TARGET_NAMES as readonly string[]).includes(t)) throw new Error(`BENCH_TARGETS: unknown target "${t}" (known: ${TARGET_NAMES.join(', ')})`);
  if (!targets.includes('bare')) targets.unshift('bare');
  const backings: ('tmpfs' | 'disk')[] = [];
  if (flag('BENCH_TMPFS', true)) backings.push('tmpfs');
  if (flag('BENCH_DISK', true)) backings.push('disk');
  return {
    quick,
    scale,
    fileBytes: Math.max(16, Math.round(1024 * scale)) * MiB,
    blockBytes: MiB,
    files: Math.max(100, Math.round(10_000 * scale)),
    randomReads: Math.max(1024, Math.round(65_536 * scale)),
    randomJobs: 4,
    repeatSeconds: quick ? 1 : 3,
    tree: quick ? 'small' : 'full',
    backings,
    diskDir: process.env.BENCH_DISK_DIR ?? '/var/tmp',
    targets: TARGET_NAMES.filter((t) => targets.includes(t)),
    phases: (process.env.BENCH_PHASES ?? '').split(',').map((s) => s.trim()).filter(Boolean),
    useFio: flag('BENCH_FIO', true),
    install: !flag('BENCH_NO_INSTALL', false),
    dirvisorOptions: process.env.BENCH_DV_OPTIONS ?? '',
    phaseTimeoutMs: (quick ? 180 : 900) * 1000,
  };
}
