// The randomized differential test, short and with fixed seeds (`npm run test:differential` is the
// long run): random operations applied both through a dirvisor mount and to a local directory,
// with every outcome and, after every step, the state compared (test/differential/); the host
// agent is SIGKILLed and started again now and then. Then the test of the test: a planted
// difference must be reported with its path, place and step.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { tempDir, removeTree } from './helpers/agents.js';
import { runAgainstMount } from './differential/mounted.js';
import { runDifferential, formatCounts, formatFailure } from './differential/runner.js';
import { diffContents, diffTrees, readTree } from './differential/compare.js';
import { seekProblem } from './differential/target.js';
import { SEEK_DATA, SEEK_HOLE, type OpKind } from './differential/ops.js';

const OPS = 1500;
/** The host agent is SIGKILLed and started again this often (what --restart-every does). */
const RESTART_EVERY = 400;

/** The fixed-seed runs: both mounts, every operation, the host agent restarted now and then. */
const RUNS: Array<{ mountOptions: string; seed: number; restartEvery?: number; skip?: OpKind[] }> = [
  { mountOptions: '', seed: 20251201, restartEvery: RESTART_EVERY },
  { mountOptions: 'writeback', seed: 20251202, restartEvery: RESTART_EVERY },
];

for (const { mountOptions, seed, restartEvery, skip = [] } of RUNS) {
  const title = `differential: ${OPS} random operations through the mount (${mountOptions || 'default options'}${restartEvery ? `, host agent restarted every ${restartEvery}` : ''}${skip.length ? `, without ${skip.join(', ')}` : ''}) match a local directory`;
  test(title, async (t) => {
    t.timeout(180_000);
    const r = await runAgainstMount({ seed, ops: OPS, mountOptions, skip, interruptEvery: restartEvery ?? 0 });
    t.log(`${r.steps} ops in ${(r.elapsedMs / 1000).toFixed(1)} s: ${formatCounts(r.counts)}`);
    if (r.failure) {
      const rerun = `npm run test:differential -- --seed ${seed} --ops ${r.failure.step}${mountOptions ? ` --options ${mountOptions}` : ''}${skip.length ? ` --skip ${skip.join(',')}` : ''}${restartEvery ? ` --restart-every ${restartEvery}` : ''}`;
      t.log(formatFailure(r.failure, rerun));
      t.log(r.logTail);
      t.fail(`the mount differs from the reference at step ${r.failure.step} (seed ${seed})`);
      return;
    }
    t.is(r.steps, OPS);
  });
}

test('the comparison names the path, the field and the first differing byte of a planted difference', async (t) => {
  const a = await tempDir('dirvisor-diff-a-');
  const b = await tempDir('dirvisor-diff-b-');
  t.teardown(() => Promise.all([removeTree(a), removeTree(b)]));
  const data = Buffer.alloc(3 * 4096, 7);
  for (const root of [a, b]) {
    await fs.mkdir(path.join(root, 'd'));
    await fs.writeFile(path.join(root, 'd/f'), data);
    await fs.symlink('d/f', path.join(root, 'l'));
  }
  const same = await readTree(b);
  t.deepEqual(diffTrees(await readTree(a), same, ['reference', 'mount']), []);
  // One byte changed, in the reference only: same size, so only the content can tell.
  const changed = Buffer.from(data);
  changed[5000] = 8;
  await fs.writeFile(path.join(a, 'd/f'), changed);
  const trees = [await readTree(a), same] as const;
  t.deepEqual(diffTrees(trees[0], trees[1], ['reference', 'mount']), []);
  t.deepEqual(await diffContents([a, b], [trees[0], trees[1]], ['d/f'], ['reference', 'mount']), [
    'd/f: content differs at offset 5000 (page 1): reference=0x08 mount=0x07, 1 byte(s) differ from there; lengths reference=12288 mount=12288',
  ]);
  // Metadata differences name the field.
  await fs.chmod(path.join(b, 'd/f'), 0o600);
  await fs.unlink(path.join(b, 'l'));
  await fs.symlink('d/g', path.join(b, 'l'));
  t.deepEqual(diffTrees(await readTree(a), await readTree(b), ['reference', 'mount']), ['d/f: perm reference=0644 mount=0600', 'l: target reference="d/f" mount="d/g"']);
});

test('SEEK_DATA and SEEK_HOLE answers are judged by what the content allows (holes may be reported as data)', (t) => {
  const page = 4096;
  const file = Buffer.concat([Buffer.alloc(page), Buffer.alloc(page, 1), Buffer.alloc(page)]); // zeros, data, zeros
  t.is(seekProblem(file, SEEK_DATA, 0, page), undefined, 'the real data');
  t.is(seekProblem(file, SEEK_DATA, 0, 100), undefined, 'a hole reported as data');
  t.is(seekProblem(file, SEEK_DATA, 0, page + 1), 'it skips non-zero bytes');
  t.is(seekProblem(file, SEEK_DATA, 2 * page, undefined), undefined, 'no data after the offset: ENXIO');
  t.is(seekProblem(file, SEEK_DATA, 0, undefined), 'there are non-zero bytes after the offset');
  t.is(seekProblem(file, SEEK_HOLE, 0, 0), undefined, 'the real hole');
  t.is(seekProblem(file, SEEK_HOLE, 0, 3 * page), undefined, 'the end of the file');
  t.is(seekProblem(file, SEEK_HOLE, page, page), 'its hole holds non-zero bytes');
  t.is(seekProblem(file, SEEK_HOLE, 3 * page, undefined), undefined, 'at the end: ENXIO');
  t.is(seekProblem(file, SEEK_HOLE, 3 * page, 3 * page), 'the offset is at or past the end of the file');
});

test('a run stops at the step where the sides start to differ, with the seed and the last operations', async (t) => {
  const a = await tempDir('dirvisor-diff-a-');
  const b = await tempDir('dirvisor-diff-b-');
  t.teardown(() => Promise.all([removeTree(a), removeTree(b)]));
  // Two local directories agree with each other for a while: the generator and the comparison
  // are deterministic. Then a byte of some file in the reference is flipped behind its back.
  let planted: string | undefined;
  const r = await runDifferential({
    seed: 7, ops: 400, reference: a, subject: b,
    afterOp: async (step) => {
      if (step < 300 || planted) return;
      const files = [...(await readTree(a))].filter(([, e]) => e.type === 'file' && e.size! > 0).map(([p]) => p);
      if (files.length === 0) return;
      planted = files[0];
      const f = await fs.open(path.join(a, planted), 'r+');
      const byte = Buffer.alloc(1);
      await f.read(byte, 0, 1, 0);
      await f.write(Buffer.from([byte[0] ^ 0xff]), 0, 1, 0);
      await f.close();
    },
  });
  t.truthy(planted, 'a byte was planted');
  t.truthy(r.failure, 'the run failed');
  const f = r.failure!;
  t.true(f.step >= 300 && f.step <= 350, `failed at step ${f.step}, right after the plant (within a checkpoint)`);
  t.true(f.problems.some((p) => p.startsWith(`${planted}: content differs at offset 0 `)), f.problems.join('\n'));
  t.is(f.history.length, 20);
  const report = formatFailure(f, 'npm run test:differential -- --seed 7');
  t.regex(report, new RegExp(`seed 7, step ${f.step}: `));
  t.regex(report, /last 20 operations/);
  t.log(report);
});
