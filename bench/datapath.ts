// npm run bench (= npm run bench:datapath) — the data path side by side, in one run, over the same
// kind of backing directory: the bare directory, libfuse's passthrough_ll (C, in-process: the
// "as fast as FUSE allows" reference), dirvisor (host serve + guest mount over a unix socket, default
// options) and sshfs over 127.0.0.1. Sequential write/read, 4 KiB random reads, create/stat/readdir/
// unlink of many files, repeated stat/readdir, untar + find + du of a source tree, and the CPU time
// of the serving processes per operation. On a fresh tmpfs and on the root disk.
// Sizes and switches: see bench/lib/config.ts (BENCH_QUICK=1 for a smoke run). Run as root.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, CACHE_DIR, type BenchConfig } from './lib/config.js';
import { Cleanup, interrupted, progress, run } from './lib/proc.js';
import { isMounted, unmountFuse, unmountTmpfs } from './lib/mounts.js';
import { ensureTools } from './lib/tools.js';
import { sourceTree } from './lib/tree.js';
import { startSshd, type Sshd } from './lib/sshd.js';
import { phases as allPhases } from './lib/workloads.js';
import { runBacking, type BackingRun } from './lib/runner.js';
import { resultsTable, cpuTable, fmtNum } from './lib/table.js';

function header(cfg: BenchConfig, versions: string[]): string {
  const mib = cfg.fileBytes / (1 << 20);
  return [
    `dirvisor bench:datapath — ${cfg.quick ? 'QUICK (smoke) run' : 'full run'}, scale ${fmtNum(cfg.scale)}: ${mib} MiB file, ${cfg.files} files, ${cfg.randomReads} random reads`,
    `machine: ${os.cpus().length} CPUs, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${os.release()}, Node ${process.version}; load average at start ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`,
    `versions: ${versions.join(', ')}`,
    'Each phase runs on every target in turn (one request in flight per thread, sync calls from a child process);',
    'caches are dropped (after syncfs on the backing) before the phases marked cold.',
  ].join('\n');
}

async function versions(): Promise<string[]> {
  const v = async (cmd: string, args: string[], re: RegExp) => {
    const r = await run(cmd, args, { timeoutMs: 5000 }).catch(() => null);
    const m = r && (r.stdout + r.stderr).match(re);
    return m ? m[1] : null;
  };
  const out = [`libfuse ${(await v('pkg-config', ['--modversion', 'fuse3'], /([\d.]+)/)) ?? '?'}`];
  const fio = await v('fio', ['--version'], /fio-([\d.]+)/);
  if (fio) out.push(`fio ${fio}`);
  const sshfs = await v('sshfs', ['--version'], /SSHFS version ([\d.]+)/);
  if (sshfs) out.push(`sshfs ${sshfs}`);
  const ssh = await v('ssh', ['-V'], /(OpenSSH_[\w.]+)/);
  if (ssh) out.push(ssh);
  return out;
}

function backingReport(cfg: BenchConfig, r: BackingRun, phases: ReturnType<typeof allPhases>): string {
  const lines = ['', `=== ${r.name}: ${r.description} — ${r.wallSeconds.toFixed(0)} s, load average ${r.loadavg[0].toFixed(2)} → ${r.loadavg[1].toFixed(2)} ===`, ''];
  lines.push(resultsTable(phases, r.results, cfg.targets));
  lines.push('', cpuTable(phases, r.results, cfg.targets));
  const cpu = Object.entries(r.totalCpu).map(([k, v]) => `${k} ${v.toFixed(1)} s`);
  if (cpu.length) lines.push('', `CPU over the whole ${r.name} run: ${cpu.join(', ')}`);
  for (const [t, why] of Object.entries(r.skipped)) lines.push(`skipped ${t}: ${why}`);
  for (const n of r.notes) lines.push(`note: ${n}`);
  return lines.join('\n');
}

const LEGEND = `
Ratios: for rates (MB/s, IOPS, ops/s, entries/s), the first figure as a percentage of the second (higher is better);
for times (s), the first as a multiple of the second (lower is better). "dv goal": the issue's target for dirvisor
against passthrough_ll. "!" after a figure: see the notes. CPU: user+system time of the serving processes from
/proc/PID/stat (10 ms ticks), including the asynchronous work that finished before the next phase started.
sshfs keeps its own attribute and directory cache in the client process, which dropping the kernel's caches does
not clear: its "cold" stat and find are not cold.
This machine may be shared (other builds and tests on few CPUs): figures are noisy; compare ratios within one run.`;

async function main(): Promise<number> {
  const cfg = loadConfig();
  const cleanup = new Cleanup();
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    interrupted.value = true;
    progress(`${sig}: cleaning up`);
    void cleanup.runAll().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    if (process.getuid?.() !== 0) progress('not root: tmpfs mounts and dropping caches will fail');
    const tools = await ensureTools(cfg);
    const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dirvisor-bench-'));
    cleanup.add(`remove ${workDir}`, async () => {
      // Whatever is still mounted in it is ours: unmount it rather than delete through it.
      for (const e of fs.readdirSync(workDir)) {
        const p = path.join(workDir, e);
        if (isMounted(p, 'fuse')) await unmountFuse(p);
        else if (isMounted(p, 'tmpfs')) await unmountTmpfs(p);
      }
      await run('rm', ['-rf', '--one-file-system', workDir], { timeoutMs: 120_000 });
    });
    const tree = await sourceTree(cfg.tree);
    const known = allPhases(cfg, tree);
    for (const id of cfg.phases) if (!known.some((p) => p.id === id)) throw new Error(`BENCH_PHASES: unknown phase "${id}" (known: ${known.map((p) => p.id).join(' ')})`);
    const phases = cfg.phases.length ? known.filter((p) => cfg.phases.includes(p.id)) : known;
    let sshd: Sshd | null = null;
    let sshdError: string | null = null;
    if (cfg.targets.includes('sshfs')) {
      try {
        if (!tools.sshfs) throw new Error('no sshfs (apt-get install sshfs)');
        sshd = await startSshd(path.join(workDir, 'ssh'));
        const d = sshd.daemon;
        cleanup.add('stop sshd', () => d.stop());
        progress(`private sshd on 127.0.0.1:${sshd.port}`);
      } catch (err) {
        sshdError = `cannot start a local sshd: ${(err as Error).message}`;
      }
    }
    console.log(header(cfg, await versions()));
    const runs: BackingRun[] = [];
    for (const b of cfg.backings) {
      if (interrupted.value) break;
      try {
        const r = await runBacking(b, { cfg, tools, tree, phases, workDir, sshd, sshdError, cleanup });
        runs.push(r);
        console.log(backingReport(cfg, r, phases));
      } catch (err) {
        progress(`${b} backing failed: ${(err as Error).message}`);
        console.log(`\n=== ${b}: not measured: ${(err as Error).message} ===`);
      }
    }
    console.log(LEGEND);
    for (const n of tools.notes) console.log(`note: ${n}`);
    fs.mkdirSync(CACHE_DIR, { recursive: true });
    const json = path.join(CACHE_DIR, `datapath-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    fs.writeFileSync(json, JSON.stringify({ config: cfg, tree, runs }, null, 2));
    progress(`results saved to ${path.relative(process.cwd(), json)}`);
    return runs.length ? 0 : 1;
  } finally {
    await cleanup.runAll();
  }
}

process.exitCode = await main().catch((err: Error) => {
  process.stderr.write(`bench:datapath: ${err.message}\n`);
  return 2;
});
