// What a frozen storage node must look like from a guest, checked the same way for every kind of
// freeze (test/frozen-storage.test.ts, test/ceph-faults.test.ts): eight writers with fsync at once
// on the frozen share (more than its node's max_calls_per_node) all fail with ETIMEDOUT in bounded
// time, while write+read on another share of the same host agent stays fast.
import type { ExecutionContext } from 'ava';
import path from 'node:path';
import { sh, shOk, q } from './daemons.js';

/**
 * Runs the writers in `frozenDirs` (one each, cycling; directories of their own let the guest's
 * kernel send their creates at once) and 20 write+reads in `otherShare` meanwhile; asserts.
 */
export async function checkFrozenShare(t: ExecutionContext, frozenDirs: string[], otherShare: string, bytesEach = 256 * 1024): Promise<void> {
  const t0 = Date.now();
  const writers = Array.from({ length: 8 }, (_, i) =>
    sh(`dd if=/dev/urandom of=${q(path.join(frozenDirs[i % frozenDirs.length], `frozen-${i}`))} bs=64k count=${bytesEach / 65536} conv=fsync`, { timeoutMs: 120_000 })
      .then((r) => ({ ...r, ms: Date.now() - t0 })));
  const fast: number[] = [];
  for (let i = 0; i < 20; i++) {
    const s0 = Date.now();
    const f = q(path.join(otherShare, `during-${i}`));
    await shOk(`echo ${i} > ${f} && cat ${f} > /dev/null`, { timeoutMs: 10_000 });
    fast.push(Date.now() - s0);
  }
  const results = await Promise.all(writers);
  t.log(`frozen share: ${results.map((r) => `exit ${r.code} after ${r.ms} ms (${r.stderr.trim().split('\n').pop()})`).join('; ')}`);
  t.log(`other share during the freeze: slowest of 20 write+read ${Math.max(...fast)} ms`);
  t.true(results.every((r) => r.code !== 0), 'every writer on the frozen share fails');
  t.true(results.every((r) => /Connection timed out/.test(r.stderr)), 'with ETIMEDOUT');
  t.true(Math.max(...results.map((r) => r.ms)) < 60_000, 'within a bounded time (io_timeout 2 s, fsync 4x, waits for a slot included)');
  t.true(Math.max(...fast) < 5000, 'the other share is not held up by the frozen node');
}
