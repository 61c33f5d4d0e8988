// One backing file system (a fresh tmpfs, or a directory on the root disk): start every target
// over its own directory of it, run each phase on each target in turn, stop everything.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Cleanup, cpuSeconds, interrupted, progress, run } from './proc.js';
import { dropCaches, fsType, mountTmpfs, unmountTmpfs } from './mounts.js';
import { bareTarget, dirvisorTarget, passthroughTarget, sshfsTarget, type Target } from './targets.js';
import { PhaseTimeout, leftovers, type Phase, type TreeInfo } from './workloads.js';
import { fmtNum, type BackingResults } from './table.js';
import type { BenchConfig, TargetName } from './config.js';
import type { Sshd } from './sshd.js';
import type { Tools } from './tools.js';

export interface BackingRun {
  name: 'tmpfs' | 'disk';
  /** What the backing is, e.g. "tmpfs 4.9 GiB" or "ext2/ext3 at /var/tmp". */
  description: string;
  results: BackingResults;
  /** Targets that could not be started, and why. */
  skipped: Partial<Record<TargetName, string>>;
  /** Problems and remarks worth printing under the table. */
  notes: string[];
  /** CPU seconds each serving process used from start to stop. */
  totalCpu: Record<string, number>;
  wallSeconds: number;
  loadavg: [number, number];
}

interface Env {
  cfg: BenchConfig;
  tools: Tools;
  tree: TreeInfo;
  phases: Phase[];
  workDir: string;
  sshd: Sshd | null;
  sshdError: string | null;
  cleanup: Cleanup;
}

function backingBytes(env: Env): number {
  const n = env.cfg.targets.length;
  return n * (env.cfg.fileBytes + 3 * env.tree.bytes) + 512 * (1 << 20);
}

async function prepareBacking(name: 'tmpfs' | 'disk', env: Env, cleanup: Cleanup): Promise<{ root: string; description: string }> {
  const need = backingBytes(env);
  if (name === 'tmpfs') {
    const root = path.join(env.workDir, 'tmpfs');
    await mountTmpfs(root, need);
    cleanup.add('unmount tmpfs', () => unmountTmpfs(root));
    return { root, description: `fresh tmpfs of ${(need / (1 << 30)).toFixed(1)} GiB` };
  }
  fs.mkdirSync(env.cfg.diskDir, { recursive: true });
  const st = fs.statfsSync(env.cfg.diskDir);
  if (st.bavail * st.bsize < need * 1.1) throw new Error(`${env.cfg.diskDir} has ${(st.bavail * st.bsize / (1 << 30)).toFixed(1)} GiB free, needs ${(need / (1 << 30)).toFixed(1)}`);
  const root = fs.mkdtempSync(path.join(env.cfg.diskDir, 'dirvisor-bench-'));
  cleanup.add(`remove ${root}`, async () => {
    await run('rm', ['-rf', root], { timeoutMs: 300_000 });
  });
  const type = await fsType(root);
  return { root, description: `${type} at ${env.cfg.diskDir}${type === 'tmpfs' ? ' (NOTE: tmpfs, not a disk)' : ''}` };
}

async function startTargets(name: string, root: string, env: Env, out: BackingRun, cleanup: Cleanup): Promise<Target[]> {
  const logDir = path.join(env.workDir, `logs-${name}`);
  fs.mkdirSync(logDir, { recursive: true });
  const mnt = (t: string) => path.join(env.workDir, `mnt-${name}-${t}`);
  const targets: Target[] = [];
  for (const t of env.cfg.targets) {
    if (interrupted.value) throw new Error('interrupted');
    progress(`[${name}] starting ${t}`);
    try {
      let target: Target;
      if (t === 'bare') target = bareTarget(path.join(root, 'bare'));
      else if (t === 'passthrough_ll') target = await passthroughTarget(path.join(root, 'pt'), mnt('pt'), logDir);
      else if (t === 'dirvisor') target = await dirvisorTarget(path.join(root, 'dv'), mnt('dv'), logDir, name, env.cfg.dirvisorOptions);
      else {
        if (!env.sshd) throw new Error(env.sshdError ?? 'no sshd');
        target = await sshfsTarget(env.sshd, path.join(root, 'ssh'), mnt('ssh'), logDir);
      }
      cleanup.add(`stop ${t} (${name})`, () => target.stop());
      targets.push(target);
    } catch (err) {
      out.skipped[t] = (err as Error).message;
      progress(`[${name}] ${t} skipped: ${(err as Error).message}`);
    }
  }
  return targets;
}

const cpuOf = (t: Target): Record<string, number> => Object.fromEntries(t.procs.map((p) => [p.name, cpuSeconds(p.pid)]));

async function runPhase(ph: Phase, t: Target, root: string, env: Env, out: BackingRun): Promise<void> {
  const res = (out.results[ph.id] ??= {});
  if (t.broken) {
    res[t.name] = { error: t.broken };
    return;
  }
  // Write back what earlier phases left dirty, so it is not written during this one.
  if (ph.dropBefore) await dropCaches(root);
  else await run('sync', ['-f', root], { timeoutMs: 120_000 });
  const before = cpuOf(t);
  const deadline = Date.now() + env.cfg.phaseTimeoutMs;
  try {
    const r = await ph.run({ target: t, cfg: env.cfg, tree: env.tree, fio: env.tools.fio, deadline });
    const after = cpuOf(t);
    const byProc = Object.fromEntries(Object.keys(before).map((k) => [k, after[k] - before[k]]));
    res[t.name] = { ...r, cpu: { byProc } };
    if (r.note) out.notes.push(`${ph.label} on ${t.name}: ${r.note}`);
    progress(`[${out.name}] ${ph.label}: ${t.name} ${fmtNum(r.value)} ${ph.unit} (${r.seconds.toFixed(2)} s)`);
  } catch (err) {
    const msg = (err as Error).message;
    res[t.name] = { error: msg };
    out.notes.push(`${ph.label} on ${t.name} failed: ${msg}`);
    progress(`[${out.name}] ${ph.label}: ${t.name} FAILED: ${msg}`);
    if (err instanceof PhaseTimeout) {
      t.broken = `broken by an earlier timeout (${ph.label})`;
      t.abort();
    }
  }
}

export async function runBacking(name: 'tmpfs' | 'disk', env: Env): Promise<BackingRun> {
  const out: BackingRun = { name, description: '', results: {}, skipped: {}, notes: [], totalCpu: {}, wallSeconds: 0, loadavg: [os.loadavg()[0], 0] };
  const t0 = Date.now();
  // Everything of this backing is undone at its end, or by the global cleanup on a signal.
  const local = new Cleanup();
  const undo = env.cleanup.add(`${name} backing`, () => local.runAll());
  let targets: Target[] = [];
  const startCpu = new Map<Target, Record<string, number>>();
  try {
    const backing = await prepareBacking(name, env, local);
    out.description = backing.description;
    progress(`[${name}] backing: ${backing.description} (${backing.root})`);
    targets = await startTargets(name, backing.root, env, out, local);
    for (const t of targets) startCpu.set(t, cpuOf(t));
    for (const ph of env.phases) {
      for (const t of targets) {
        if (interrupted.value) throw new Error('interrupted');
        await runPhase(ph, t, backing.root, env, out);
      }
      if (ph.removeAfter) for (const t of targets) if (!t.broken) await run('rm', ['-rf', ph.removeAfter(t)], { timeoutMs: 300_000 });
    }
  } finally {
    for (const t of targets) {
      const end = cpuOf(t);
      const start = startCpu.get(t)!;
      for (const k of Object.keys(end)) out.totalCpu[k] = end[k] - start[k];
      if (!t.broken) for (const p of leftovers(t)) await run('rm', ['-rf', p], { timeoutMs: 300_000 });
    }
    progress(`[${name}] stopping`);
    await undo(); // stops the targets, then removes the backing
  }
  out.wallSeconds = (Date.now() - t0) / 1000;
  out.loadavg[1] = os.loadavg()[0];
  return out;
}
