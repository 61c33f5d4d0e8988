// The phases of the data-path bench, in the order they run. Each runs on every target before the
// next phase starts (so slow drifts in machine load spread over all targets), in a child process
// with a deadline. Rates are "higher is better"; times (untar, find, du) are "lower is better".
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { run } from './proc.js';
import { WORKER, type BenchConfig } from './config.js';
import type { Target } from './targets.js';
import type { WorkerJob, WorkerResult } from './worker.js';

export interface TreeInfo {
  tarball: string;
  /** Entries in the tarball (files, directories, links). */
  entries: number;
  bytes: number;
  label: string;
}

export interface PhaseCtx {
  target: Target;
  cfg: BenchConfig;
  tree: TreeInfo;
  fio: string | null;
  deadline: number;
}

export interface PhaseResult {
  /** The figure in the phase's unit. */
  value: number;
  seconds: number;
  /** What CPU time is divided by: operations, or MiB for the sequential phases. */
  units: number;
  note?: string;
}

export interface Phase {
  id: string;
  label: string;
  unit: 'MB/s' | 'IOPS' | 'ops/s' | 'entries/s' | 's';
  higherBetter: boolean;
  /** Sync the backing file system and drop the kernel's caches before it runs on each target. */
  dropBefore: boolean;
  /** The target for dirvisor against passthrough_ll (rate ratio ≥ min, or time ratio ≤ max). */
  goal?: { min?: number; max?: number; text: string };
  /** Print CPU per unit in the CPU table. */
  cpu?: { per: 'op' | 'MiB'; label: string };
  /** What to delete (untimed) on each target once the phase has run on all of them. */
  removeAfter?: (t: Target) => string;
  run(ctx: PhaseCtx): Promise<PhaseResult>;
}

export class PhaseTimeout extends Error {}

/** Runs one WorkerJob in a child process, killed at the deadline. */
export function runWorker(job: WorkerJob, deadline: number): Promise<WorkerResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WORKER, JSON.stringify(job)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (err += d));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, Math.max(1000, deadline - Date.now()));
    child.once('close', (code) => {
      clearTimeout(timer);
      if (timedOut) return reject(new PhaseTimeout(`${job.op} did not finish in time`));
      if (code !== 0) return reject(new Error(`${job.op} failed: ${err.trim().split('\n').slice(0, 6).join(' | ')}`));
      resolve(JSON.parse(out) as WorkerResult);
    });
  });
}

async function timedCommand(cmd: string, args: string[], ctx: PhaseCtx, what: string): Promise<{ seconds: number; stdout: string }> {
  const r = await run(cmd, args, { timeoutMs: Math.max(1000, ctx.deadline - Date.now()) });
  if (r.timedOut) throw new PhaseTimeout(`${what} did not finish in time`);
  if (r.code !== 0) throw new Error(`${what} exited ${r.code ?? r.signal}: ${r.stderr.trim().split('\n').slice(0, 4).join(' | ')}`);
  return { seconds: r.seconds, stdout: r.stdout };
}

const MB = 1e6;
const MiB = 1 << 20;
const bigFile = (t: Target) => path.join(t.dir, 'big.dat');
const metaDir = (t: Target) => path.join(t.dir, 'meta');
const treeDir = (t: Target) => path.join(t.dir, 'tree');

async function randomReads(ctx: PhaseCtx, jobs: number): Promise<PhaseResult> {
  const { cfg } = ctx;
  const file = bigFile(ctx.target);
  const perJob = Math.floor(cfg.randomReads / jobs);
  if (ctx.fio) {
    // Each job reads its own quarter of the file, every block at most once (fio's random map), so
    // no read is served from a page cache the run itself filled.
    const region = Math.floor(cfg.fileBytes / jobs / 4096) * 4096;
    const seconds = Math.max(10, Math.ceil((ctx.deadline - Date.now()) / 1000) - 5);
    const { stdout } = await timedCommand(ctx.fio, [
      '--name=randread', `--filename=${file}`, '--rw=randread', '--bs=4k', '--ioengine=psync',
      `--numjobs=${jobs}`, '--thread', '--group_reporting', `--size=${region}`, `--offset_increment=${region}`,
      `--io_size=${perJob * 4096}`, '--randrepeat=1', '--randseed=1234', '--invalidate=1',
      `--runtime=${Math.min(seconds, cfg.quick ? 30 : 60)}`, '--output-format=json',
    ], ctx, 'fio');
    const json = JSON.parse(stdout.slice(stdout.indexOf('{'))) as { jobs: { read: { iops: number; total_ios: number; runtime: number } }[] };
    const rd = json.jobs[0].read;
    return { value: rd.iops, seconds: rd.runtime / 1000, units: rd.total_ios };
  }
  const results = await Promise.all(
    Array.from({ length: jobs }, (_, job) => runWorker({ op: 'randread', file, count: perJob * jobs, jobs, job, seed: 1234 }, ctx.deadline)),
  );
  const ops = results.reduce((a, r) => a + r.ops, 0);
  const seconds = Math.max(...results.map((r) => r.seconds));
  return { value: ops / seconds, seconds, units: ops };
}

export function phases(cfg: BenchConfig, tree: TreeInfo): Phase[] {
  const sizeLabel = cfg.fileBytes >= 1 << 30 ? `${cfg.fileBytes / (1 << 30)} GiB` : `${cfg.fileBytes / MiB} MiB`;
  const n = cfg.files.toLocaleString('en-US');
  const meta = (op: 'create' | 'stat' | 'unlink', label: string, dropBefore: boolean, extra: Partial<Phase> = {}): Phase => ({
    id: op,
    label,
    unit: 'ops/s',
    higherBetter: true,
    dropBefore,
    ...extra,
    async run(ctx) {
      const r = await runWorker({ op, dir: metaDir(ctx.target), count: cfg.files }, ctx.deadline);
      return { value: r.ops / r.seconds, seconds: r.seconds, units: r.ops };
    },
  });
  return [
    {
      id: 'seqwrite',
      label: `seq write ${sizeLabel}, 1 MiB blocks, +fsync`,
      unit: 'MB/s',
      higherBetter: true,
      dropBefore: true,
      goal: { min: 0.8, text: '≥80%' },
      cpu: { per: 'MiB', label: 'seq write' },
      async run(ctx) {
        const r = await runWorker({ op: 'seqwrite', file: bigFile(ctx.target), bytes: cfg.fileBytes, block: cfg.blockBytes }, ctx.deadline);
        return { value: r.bytes / MB / r.seconds, seconds: r.seconds, units: r.bytes / MiB };
      },
    },
    {
      id: 'seqread',
      label: `seq read ${sizeLabel}, 1 MiB blocks, cold`,
      unit: 'MB/s',
      higherBetter: true,
      dropBefore: true,
      goal: { min: 0.8, text: '≥80%' },
      cpu: { per: 'MiB', label: 'seq read' },
      async run(ctx) {
        const r = await runWorker({ op: 'seqread', file: bigFile(ctx.target), block: cfg.blockBytes }, ctx.deadline);
        const note = r.bytes !== cfg.fileBytes ? `read ${r.bytes} bytes of ${cfg.fileBytes}` : undefined;
        return { value: r.bytes / MB / r.seconds, seconds: r.seconds, units: r.bytes / MiB, note };
      },
    },
    {
      id: 'randread1',
      label: `4 KiB random reads, 1 thread`,
      unit: 'IOPS',
      higherBetter: true,
      dropBefore: true,
      goal: { min: 0.7, text: '≥70%' },
      cpu: { per: 'op', label: 'random read 4 KiB' },
      run: (ctx) => randomReads(ctx, 1),
    },
    {
      id: 'randreadN',
      label: `4 KiB random reads, ${cfg.randomJobs} threads`,
      unit: 'IOPS',
      higherBetter: true,
      dropBefore: true,
      goal: { min: 0.7, text: '≥70%' },
      removeAfter: bigFile,
      run: (ctx) => randomReads(ctx, cfg.randomJobs),
    },
    meta('create', `create ${n} empty files`, false, { goal: { min: 0.6, text: '≥60%' }, cpu: { per: 'op', label: 'create' } }),
    meta('stat', `stat ${n} files, cold`, true, { cpu: { per: 'op', label: 'stat (cold)' } }),
    {
      id: 'readdir',
      label: `readdir ${n} entries, cold`,
      unit: 'entries/s',
      higherBetter: true,
      dropBefore: true,
      async run(ctx) {
        const r = await runWorker({ op: 'readdir', dir: metaDir(ctx.target) }, ctx.deadline);
        const note = r.ops !== cfg.files ? `listed ${r.ops} of ${cfg.files}` : undefined;
        return { value: r.ops / r.seconds, seconds: r.seconds, units: r.ops, note };
      },
    },
    {
      id: 'statRepeat',
      label: `stat ${n} files, repeated ${cfg.repeatSeconds}s`,
      unit: 'ops/s',
      higherBetter: true,
      dropBefore: false,
      goal: { min: 1, text: '>100%' },
      cpu: { per: 'op', label: 'stat (repeated)' },
      async run(ctx) {
        const r = await runWorker({ op: 'statRepeat', dir: metaDir(ctx.target), count: cfg.files, seconds: cfg.repeatSeconds }, ctx.deadline);
        return { value: r.ops / r.seconds, seconds: r.seconds, units: r.ops };
      },
    },
    {
      id: 'readdirRepeat',
      label: `readdir ${n} entries, repeated ${cfg.repeatSeconds}s`,
      unit: 'entries/s',
      higherBetter: true,
      dropBefore: false,
      goal: { min: 1, text: '>100%' },
      async run(ctx) {
        const r = await runWorker({ op: 'readdirRepeat', dir: metaDir(ctx.target), seconds: cfg.repeatSeconds }, ctx.deadline);
        return { value: r.ops / r.seconds, seconds: r.seconds, units: r.ops };
      },
    },
    meta('unlink', `unlink ${n} files`, false, { goal: { min: 0.6, text: '≥60%' }, cpu: { per: 'op', label: 'unlink' }, removeAfter: metaDir }),
    {
      id: 'untar',
      label: `untar ${tree.label}`,
      unit: 's',
      higherBetter: false,
      dropBefore: false,
      goal: { max: 1.5, text: '≤1.5×' },
      cpu: { per: 'op', label: 'untar (per entry)' },
      async run(ctx) {
        fs.readFileSync(ctx.tree.tarball); // in the page cache for every target alike
        fs.mkdirSync(treeDir(ctx.target), { recursive: true });
        const r = await timedCommand('tar', ['-xf', ctx.tree.tarball, '-C', treeDir(ctx.target)], ctx, 'tar -x');
        return { value: r.seconds, seconds: r.seconds, units: ctx.tree.entries };
      },
    },
    {
      id: 'find',
      label: 'find tree, cold',
      unit: 's',
      higherBetter: false,
      dropBefore: true,
      goal: { max: 1.5, text: '≤1.5×' },
      async run(ctx) {
        const r = await timedCommand('find', [treeDir(ctx.target)], ctx, 'find');
        const found = r.stdout.split('\n').filter(Boolean).length - 1;
        const note = found !== ctx.tree.entries ? `found ${found} of ${ctx.tree.entries} entries` : undefined;
        return { value: r.seconds, seconds: r.seconds, units: found, note };
      },
    },
    {
      id: 'du',
      label: 'du -s tree, after find',
      unit: 's',
      higherBetter: false,
      dropBefore: false,
      goal: { max: 1.5, text: '≤1.5×' },
      async run(ctx) {
        const r = await timedCommand('du', ['-s', treeDir(ctx.target)], ctx, 'du');
        return { value: r.seconds, seconds: r.seconds, units: ctx.tree.entries };
      },
    },
    {
      id: 'rmtree',
      label: 'rm -rf tree',
      unit: 's',
      higherBetter: false,
      dropBefore: false,
      async run(ctx) {
        const r = await timedCommand('rm', ['-rf', treeDir(ctx.target)], ctx, 'rm -rf');
        return { value: r.seconds, seconds: r.seconds, units: ctx.tree.entries };
      },
    },
  ];
}

/** Everything the phases may leave on a target (removed after a failed run too). */
export function leftovers(t: Target): string[] {
  return [bigFile(t), metaDir(t), treeDir(t)];
}
