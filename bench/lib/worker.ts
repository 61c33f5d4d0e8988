// One workload phase, run in its own process so that a hung mount cannot freeze the bench (the
// parent kills us and aborts the FUSE connection). Synchronous fs calls on purpose: one request in
// flight at a time, no libuv thread pool in the way, the same driver for every target.
//   node dist/bench/lib/worker.js '{"op":"create","dir":"/mnt/x/meta","count":10000}'
// Prints one JSON line: { seconds, ops, bytes }.
import fs from 'node:fs';
import path from 'node:path';

export type WorkerJob =
  | { op: 'seqwrite'; file: string; bytes: number; block: number }
  | { op: 'seqread'; file: string; block: number }
  | { op: 'randread'; file: string; count: number; jobs: number; job: number; seed: number }
  | { op: 'create' | 'stat' | 'unlink'; dir: string; count: number }
  | { op: 'readdir'; dir: string }
  | { op: 'statRepeat'; dir: string; count: number; seconds: number }
  | { op: 'readdirRepeat'; dir: string; seconds: number };

export interface WorkerResult {
  seconds: number;
  ops: number;
  bytes: number;
}

export const fileName = (i: number): string => `f${String(i).padStart(6, '0')}`;

const now = (): number => Number(process.hrtime.bigint()) / 1e9;

function timed(fn: () => { ops: number; bytes: number }): WorkerResult {
  const t0 = now();
  const r = fn();
  return { seconds: now() - t0, ...r };
}

/** A block of pseudo-random bytes (xorshift32, fixed seed): incompressible, the same every run. */
function patternBlock(size: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  let x = 0x9e3779b9;
  for (let i = 0; i + 4 <= size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeUInt32LE(x >>> 0, i);
  }
  return b;
}

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));

export function runJob(job: WorkerJob): WorkerResult {
  switch (job.op) {
    case 'seqwrite': {
      const block = patternBlock(job.block);
      return timed(() => {
        const fd = fs.openSync(job.file, 'w', 0o644);
        let done = 0;
        while (done < job.bytes) done += fs.writeSync(fd, block, 0, Math.min(block.length, job.bytes - done));
        fs.fsyncSync(fd);
        fs.closeSync(fd);
        return { ops: Math.ceil(job.bytes / job.block), bytes: done };
      });
    }
    case 'seqread': {
      const buf = Buffer.allocUnsafe(job.block);
      return timed(() => {
        const fd = fs.openSync(job.file, 'r');
        let bytes = 0;
        let ops = 0;
        for (;;) {
          const n = fs.readSync(fd, buf, 0, buf.length, null);
          if (n === 0) break;
          bytes += n;
          ops++;
        }
        fs.closeSync(fd);
        return { ops, bytes };
      });
    }
    case 'randread': {
      // Every 4 KiB block at most once (an affine permutation of the block numbers), so nothing is
      // served from a page cache the run itself filled; job k of n takes every n-th of them.
      const size = fs.statSync(job.file).size;
      const blocks = Math.floor(size / 4096);
      let a = (job.seed * 2654435761) % blocks || 1;
      while (gcd(a, blocks) !== 1) a++;
      const buf = Buffer.allocUnsafe(4096);
      return timed(() => {
        const fd = fs.openSync(job.file, 'r');
        let ops = 0;
        for (let i = job.job; i < job.count; i += job.jobs) {
          const blk = (a * i + job.seed) % blocks;
          if (fs.readSync(fd, buf, 0, 4096, blk * 4096) !== 4096) throw new Error(`short read at block ${blk}`);
          ops++;
        }
        fs.closeSync(fd);
        return { ops, bytes: ops * 4096 };
      });
    }
    case 'create':
      fs.mkdirSync(job.dir, { recursive: true });
      return timed(() => {
        for (let i = 0; i < job.count; i++) fs.closeSync(fs.openSync(path.join(job.dir, fileName(i)), 'wx', 0o644));
        return { ops: job.count, bytes: 0 };
      });
    case 'stat':
      return timed(() => {
        for (let i = 0; i < job.count; i++) fs.lstatSync(path.join(job.dir, fileName(i)));
        return { ops: job.count, bytes: 0 };
      });
    case 'unlink':
      return timed(() => {
        for (let i = 0; i < job.count; i++) fs.unlinkSync(path.join(job.dir, fileName(i)));
        return { ops: job.count, bytes: 0 };
      });
    case 'readdir':
      return timed(() => ({ ops: fs.readdirSync(job.dir).length, bytes: 0 }));
    case 'statRepeat': {
      const names = Array.from({ length: job.count }, (_, i) => path.join(job.dir, fileName(i)));
      for (const n of names) fs.lstatSync(n); // the first pass fills the caches; not counted
      return timed(() => {
        const end = now() + job.seconds;
        let ops = 0;
        do {
          for (const n of names) fs.lstatSync(n);
          ops += names.length;
        } while (now() < end);
        return { ops, bytes: 0 };
      });
    }
    case 'readdirRepeat': {
      fs.readdirSync(job.dir);
      return timed(() => {
        const end = now() + job.seconds;
        let ops = 0;
        do ops += fs.readdirSync(job.dir).length;
        while (now() < end);
        return { ops, bytes: 0 };
      });
    }
  }
}

if (process.argv[1] && process.argv[1].endsWith('worker.js') && process.argv[2]) {
  const result = runJob(JSON.parse(process.argv[2]) as WorkerJob);
  process.stdout.write(JSON.stringify(result) + '\n');
}
