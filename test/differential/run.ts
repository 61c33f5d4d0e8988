// `npm run test:differential -- [--seed N] [--ops N] [--options WORDS]` (node dist/test/differential/run.js):
// a long differential run against a real dirvisor mount (the suite's is short, with fixed seeds).
// Starts its own host and guest agents, prints progress, and ends with one PASS or FAIL line.
//   --seed N       PRNG seed, decimal or 0x hex (default: from the clock; printed, to repeat a run)
//   --ops N        operations (default 100,000)
//   --options W    -o words of the guest mount, e.g. "writeback" (default: none, the defaults)
//   --skip K,K     operation kinds to leave out, e.g. "mmapWrite" for cache=none, where FUSE
//                  refuses shared mappings (direct I/O)
//   --restart-every N   SIGKILL the host agent and start it again every N operations (default:
//                  never); descriptors of unlinked files are closed first (README: a restart
//                  cannot bring those back)
// The same from the environment: DIRVISOR_DIFF_SEED, DIRVISOR_DIFF_OPS, DIRVISOR_DIFF_OPTIONS,
// DIRVISOR_DIFF_SKIP, DIRVISOR_DIFF_RESTART_EVERY.
// A failure's report and the agents' logs are kept in /tmp/dirvisor-differential-SEED/.
// Exit status 0: no difference; 1: a difference (reported); 2: the run itself broke.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { seedFrom } from '../fuzz/prng.js';
import { runAgainstMount } from './mounted.js';
import { formatCounts, formatFailure } from './runner.js';
import { WEIGHTS } from './generator.js';
import type { OpKind } from './ops.js';

function count(text: string, what: string): number {
  const n = Number(text.replace(/_/g, ''));
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`${what} must be a positive integer, got "${text}"`);
  return n;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { seed: { type: 'string' }, ops: { type: 'string' }, options: { type: 'string' }, skip: { type: 'string' }, 'restart-every': { type: 'string' } },
    strict: true,
  });
  const seedText = values.seed ?? process.env.DIRVISOR_DIFF_SEED;
  if (seedText && !/^(0x[0-9a-f]+|\d+)$/i.test(seedText.trim())) throw new Error(`--seed must be a number, got "${seedText}"`);
  const seed = seedFrom(seedText);
  const ops = count(values.ops ?? process.env.DIRVISOR_DIFF_OPS ?? '100000', '--ops');
  const mountOptions = values.options ?? process.env.DIRVISOR_DIFF_OPTIONS ?? '';
  const skip = (values.skip ?? process.env.DIRVISOR_DIFF_SKIP ?? '').split(',').filter(Boolean) as OpKind[];
  const unknown = skip.filter((k) => !(k in WEIGHTS));
  if (unknown.length) throw new Error(`--skip: unknown operation(s) ${unknown.join(', ')}; known: ${Object.keys(WEIGHTS).join(', ')}`);
  const restartText = values['restart-every'] ?? process.env.DIRVISOR_DIFF_RESTART_EVERY;
  const restartEvery = restartText ? count(restartText, '--restart-every') : 0;
  const outDir = path.join(os.tmpdir(), `dirvisor-differential-${seed}`);
  const label = `seed ${seed}, ${ops} ops, mount options "${mountOptions || '(defaults)'}"${skip.length ? `, without ${skip.join(', ')}` : ''}${restartEvery ? `, host restarted every ${restartEvery} ops` : ''}`;
  console.log(`differential: ${label}`);
  const r = await runAgainstMount({
    seed, ops, mountOptions, skip, logsDir: outDir, interruptEvery: restartEvery,
    progress: (p) => console.log(`differential: ${p.step}/${p.total} ops, ${p.opsPerSecond.toFixed(0)} ops/s, ${(p.elapsedMs / 1000).toFixed(0)} s`),
  });
  const seconds = (r.elapsedMs / 1000).toFixed(1);
  console.log(`differential: operations run: ${formatCounts(r.counts)}`);
  if (!r.failure) {
    console.log(`differential: PASS: ${label}: ${r.steps} ops in ${seconds} s (${((r.steps * 1000) / r.elapsedMs).toFixed(0)} ops/s)`);
    return 0;
  }
  const opt = `${mountOptions ? ` --options ${mountOptions}` : ''}${skip.length ? ` --skip ${skip.join(',')}` : ''}${restartEvery ? ` --restart-every ${restartEvery}` : ''}`;
  const report = formatFailure(r.failure, `npm run test:differential -- --seed ${seed} --ops ${r.failure.step}${opt}`);
  await fs.mkdir(outDir, { recursive: true });
  await fs.writeFile(path.join(outDir, 'report.txt'), `${report}\n`);
  console.log(report);
  console.log(`differential: report and agent logs in ${outDir}`);
  console.log(`differential: FAIL: ${label}: step ${r.failure.step} of ${ops}, after ${seconds} s`);
  return 1;
}

// Ctrl-C: exit through the 'exit' hooks, which unmount and stop the agents.
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`differential: the run broke: ${(err as Error)?.stack ?? String(err)}`);
    process.exit(2);
  },
);
