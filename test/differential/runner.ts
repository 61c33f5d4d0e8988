// The differential run: the same random operations on the directory under test (a dirvisor mount)
// and on a reference directory (a local file system); every outcome must match, and after every
// step so must the state. Stops at the first difference with what is needed to repeat it: the
// seed, the step, the last operations and what differed.
import fs from 'node:fs/promises';
import { Prng } from '../fuzz/prng.js';
import { diffContents, diffTrees, filesOf, pathsOfInode, readTree, contentDifference, type Tree } from './compare.js';
import { OpGenerator } from './generator.js';
import { SLOTS, describe, outcomeText, pathsOf, slotOf, type Op, type OpKind } from './ops.js';
import { FsTarget } from './target.js';

export interface DifferentialOptions {
  seed: number;
  ops: number;
  /** Operations left out of the run. */
  skip?: readonly OpKind[];
  /** The local reference directory (empty at the start). */
  reference: string;
  /** The directory under test, as applications see it (empty at the start). */
  subject: string;
  /** The directory the host serves `subject` from: equal to the reference once all is closed. */
  backing?: string;
  /** Compare `backing` at every checkpoint too (right only when writes are not cached in the guest). */
  backingAtCheckpoints?: boolean;
  /** Every this many steps, all file contents are compared (between: the files a step touched). */
  checkpointEvery?: number;
  /** Operations shown in a failure report. */
  historyLength?: number;
  progress?: (p: Progress) => void;
  progressEveryMs?: number;
  /** For the test of the test: runs after each step's operation, before the comparison. */
  afterOp?: (step: number) => Promise<void>;
  /** Every this many steps (0: never), `interrupt` runs between two steps: a host agent restart. */
  interruptEvery?: number;
  /** Returns what it did, for the history. */
  interrupt?: (step: number) => Promise<string>;
}

export interface Progress {
  step: number;
  total: number;
  elapsedMs: number;
  opsPerSecond: number;
}

export interface Failure {
  seed: number;
  step: number;
  op: string;
  problems: string[];
  history: string[];
}

export interface DifferentialResult {
  seed: number;
  steps: number;
  elapsedMs: number;
  /** Per operation kind: how many succeeded, and the errno outcomes seen. */
  counts: Map<OpKind, { ok: number; errors: Map<string, number> }>;
  failure?: Failure;
}

const NAMES: [string, string] = ['reference', 'mount'];
const BACKING_NAMES: [string, string] = ['reference', 'storage'];

/** Raised inside the run with the differences of one step. */
class Divergence extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
  }
}

export async function runDifferential(o: DifferentialOptions): Promise<DifferentialResult> {
  const started: FsTarget[] = [];
  const start = async (root: string): Promise<FsTarget> => {
    const t = await FsTarget.start(root);
    started.push(t);
    return t;
  };
  try {
    // Every helper process first, while nothing is open on the mount.
    const ref = await start(o.reference);
    const sub = await start(o.subject);
    const backing = o.backing !== undefined ? await start(o.backing) : undefined;
    return await new Run(o, ref, sub, backing).run();
  } finally {
    await Promise.all(started.map((t) => t.stop()));
  }
}

/** One run's state: the two sides, the generator, the history for the report. */
class Run {
  private readonly gen: OpGenerator;
  private readonly sides: [FsTarget, FsTarget];
  private readonly history: string[] = [];
  private readonly counts: DifferentialResult['counts'] = new Map();
  private readonly started = Date.now();
  private step = 0;
  private current = '(start)';

  constructor(private readonly o: DifferentialOptions, private readonly ref: FsTarget, private readonly sub: FsTarget, private readonly backing?: FsTarget) {
    this.sides = [ref, sub];
    this.gen = new OpGenerator(new Prng(o.seed), o.skip);
  }

  async run(): Promise<DifferentialResult> {
    const o = this.o;
    let lastProgress = this.started;
    try {
      let trees = await readTrees(this.sides);
      check(diffTrees(trees[0], trees[1], NAMES), 'the directories differ before the first operation');
      for (this.step = 1; this.step <= o.ops; this.step++) {
        const op = this.gen.next(trees[0]);
        await this.apply(op);
        await o.afterOp?.(this.step);
        trees = await this.compareAfter(op);
        if (o.interrupt && o.interruptEvery && this.step % o.interruptEvery === 0 && this.step < o.ops) await this.interrupt();
        if (o.progress && Date.now() - lastProgress >= (o.progressEveryMs ?? 5000)) {
          lastProgress = Date.now();
          const elapsedMs = lastProgress - this.started;
          o.progress({ step: this.step, total: o.ops, elapsedMs, opsPerSecond: (this.step * 1000) / elapsedMs });
        }
      }
      this.step = o.ops;
      await this.finish();
      return this.result();
    } catch (err) {
      const problems = err instanceof Divergence ? err.problems : [`error: ${(err as Error)?.stack ?? String(err)}`];
      // Leave nothing open on the mount (it is about to be unmounted); outcomes no longer matter.
      await Promise.all(this.sides.map((s) => s.closeAll().catch(() => [])));
      return this.result({ seed: o.seed, step: this.step, op: this.current, problems, history: [...this.history] });
    }
  }

  private result(failure?: Failure): DifferentialResult {
    return { seed: this.o.seed, steps: this.step, elapsedMs: Date.now() - this.started, counts: this.counts, failure };
  }

  private remember(line: string): void {
    this.history.push(line);
    if (this.history.length > (this.o.historyLength ?? 20)) this.history.shift();
  }

  /** The operation on both sides: the same outcome, or the run fails. */
  private async apply(op: Op): Promise<void> {
    this.current = describe(op);
    const [a, b] = await Promise.all([this.ref.apply(op), this.sub.apply(op)]);
    const [ta, tb] = [outcomeText(a), outcomeText(b)];
    this.remember(`${this.step}: ${this.current} -> ${ta}${ta === tb ? '' : `  (mount: ${tb})`}`);
    count(this.counts, op.kind, ta);
    check(ta === tb ? [] : [`outcome: reference=${ta} mount=${tb}`]);
    this.gen.observe(op, a);
  }

  /**
   * The state after a step: the whole tree, the contents of what it touched (of everything at a
   * checkpoint), its descriptor's file, xattrs it changed; returns the trees.
   */
  private async compareAfter(op: Op): Promise<[Tree, Tree]> {
    const { ref, sub, sides, backing } = this;
    const trees = await readTrees(sides);
    check(diffTrees(trees[0], trees[1], NAMES));
    const checkpoint = this.step % (this.o.checkpointEvery ?? 50) === 0;
    const touched = checkpoint ? [...filesOf(trees[0]), ...filesOf(trees[1])] : await touchedPaths(op, sides, trees);
    check(await diffContents([ref.root, sub.root], trees, touched, NAMES));
    check(await compareOpenFile(op, sides));
    const xattrsChanged = op.kind === 'setxattr' || op.kind === 'removexattr';
    if (checkpoint || xattrsChanged) check(await diffXattrs(sides, checkpoint ? [...trees[0].keys()] : pathsOf(op), NAMES));
    if (checkpoint && backing && this.o.backingAtCheckpoints) check(await compareBacking(ref, trees[0], backing));
    return trees;
  }

  /** A host agent restart, say; descriptors it cannot bring back are closed first. */
  private async interrupt(): Promise<void> {
    const step = this.step;
    check(await closeUnlinked(this.sides, (line) => this.remember(`${step}: ${line}`), (slot) => this.gen.observe({ kind: 'close', slot }, { ok: true })));
    this.remember(`${step}: -- ${await this.o.interrupt!(step)}`);
  }

  /** Everything closed: the mount, and the storage behind it, must hold what the reference does. */
  private async finish(): Promise<void> {
    const { ref, sub, sides, backing } = this;
    this.current = '(the end: closing every descriptor)';
    const [ca, cb] = await Promise.all([ref.closeAll(), sub.closeAll()]);
    check(ca.join() === cb.join() ? [] : [`close: reference=${ca.join(', ')} mount=${cb.join(', ')}`]);
    this.current = '(the end: everything closed)';
    const trees = await readTrees(sides);
    check(diffTrees(trees[0], trees[1], NAMES));
    check(await diffContents([ref.root, sub.root], trees, [...filesOf(trees[0]), ...filesOf(trees[1])], NAMES));
    check(await diffXattrs(sides, [...trees[0].keys()], NAMES));
    if (backing) check(await compareBacking(ref, trees[0], backing), 'the storage directory differs from the reference');
  }
}

function check(problems: string[], headline?: string): void {
  if (problems.length > 0) throw new Divergence(headline ? [headline, ...problems] : problems);
}

function count(counts: DifferentialResult['counts'], kind: OpKind, outcome: string): void {
  let c = counts.get(kind);
  if (!c) counts.set(kind, (c = { ok: 0, errors: new Map() }));
  if (outcome.startsWith('ok')) c.ok++;
  else c.errors.set(outcome, (c.errors.get(outcome) ?? 0) + 1);
}

function readTrees(sides: [FsTarget, FsTarget]): Promise<[Tree, Tree]> {
  return Promise.all([readTree(sides[0].root), readTree(sides[1].root)]);
}

/** Every name, on either side, of a file the operation may have changed (by path, or through its slot). */
async function touchedPaths(op: Op, sides: [FsTarget, FsTarget], trees: [Tree, Tree]): Promise<string[]> {
  const out = new Set(pathsOf(op));
  const slot = slotOf(op);
  for (let i = 0; i < 2; i++) {
    const inodes: number[] = [];
    for (const p of pathsOf(op)) {
      // Following symlinks: a write through one changes its target.
      const st = await fs.stat(sides[i].abs(p)).catch(() => undefined);
      if (st) inodes.push(st.ino);
    }
    if (slot !== undefined) {
      const st = await sides[i].slotStat(slot);
      if (st && 'ino' in st) inodes.push(st.ino); // an fstat error is compareOpenFile's to report
    }
    for (const ino of inodes) for (const p of pathsOfInode(trees[i], ino)) out.add(p);
  }
  return [...out];
}

/**
 * Closes the descriptors of files that have no name left, on both sides: README's "Failure
 * behaviour" lists them as what a host agent restart cannot bring back (ESTALE).
 */
async function closeUnlinked(sides: [FsTarget, FsTarget], remember: (line: string) => void, closed: (slot: number) => void): Promise<string[]> {
  for (let slot = 0; slot < SLOTS; slot++) {
    const st = await sides[0].slotStat(slot);
    if (!st || !('nlink' in st) || st.nlink !== 0) continue;
    const [a, b] = (await Promise.all(sides.map((s) => s.apply({ kind: 'close', slot })))).map(outcomeText);
    closed(slot);
    remember(`close #${slot} (unlinked, before the restart) -> ${a}${a === b ? '' : `  (mount: ${b})`}`);
    if (a !== b) return [`close of unlinked #${slot}: reference=${a} mount=${b}`];
  }
  return [];
}

/** The file of the slot an operation used: fstat alike, and if it has no name left, its content. */
async function compareOpenFile(op: Op, sides: [FsTarget, FsTarget]): Promise<string[]> {
  const slot = slotOf(op);
  if (slot === undefined) return [];
  const [a, b] = await Promise.all(sides.map((s) => s.slotStat(slot)));
  const show = (st: typeof a): string => (!st ? 'closed' : 'errno' in st ? st.errno : `nlink=${st.nlink}`);
  if (show(a) !== show(b)) return [`#${slot}: fstat reference=${show(a)} mount=${show(b)}`];
  if (!a || !('nlink' in a) || a.nlink !== 0) return [];
  const [ca, cb] = await Promise.all(sides.map((s) => s.slotContent(slot)));
  const d = ca && cb && contentDifference(ca, cb, NAMES);
  return d ? [`#${slot} (unlinked): ${d}`] : [];
}

/** Extended attributes of `paths` (all present on both sides), one line per path that differs. */
async function diffXattrs(sides: [FsTarget, FsTarget], paths: readonly string[], names: [string, string]): Promise<string[]> {
  const [a, b] = await Promise.all(sides.map((s) => s.xattrs(paths)));
  return paths.filter((p) => a.get(p) !== b.get(p)).map((p) => `${p}: xattrs ${names[0]}="${a.get(p)}" ${names[1]}="${b.get(p)}"`);
}

/** The host's storage directory against the reference: what is really stored, bypassing every cache. */
async function compareBacking(ref: FsTarget, refTree: Tree, backing: FsTarget): Promise<string[]> {
  const tree = await readTree(backing.root);
  const problems = diffTrees(refTree, tree, BACKING_NAMES);
  problems.push(...(await diffContents([ref.root, backing.root], [refTree, tree], filesOf(refTree), BACKING_NAMES)));
  if (problems.length === 0) problems.push(...(await diffXattrs([ref, backing], [...refTree.keys()], BACKING_NAMES)));
  return problems.map((p) => `storage: ${p}`);
}

/** A failure as a report: enough to understand it, and to repeat it. */
export function formatFailure(f: Failure, rerun?: string): string {
  return [
    `differential run FAILED: seed ${f.seed}, step ${f.step}: ${f.op}`,
    ...f.problems.map((p) => `  ${p}`),
    `last ${f.history.length} operations (-> the reference's outcome):`,
    ...f.history.map((h) => `  ${h}`),
    ...(rerun ? [`repeat with: ${rerun}`] : []),
  ].join('\n');
}

/** Which operations ran and how they ended, e.g. "rename 120 ok, ENOENT 30, EXDEV 2". */
export function formatCounts(counts: DifferentialResult['counts']): string {
  return [...counts]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([kind, c]) => `${kind} ${c.ok} ok${[...c.errors].sort((x, y) => y[1] - x[1]).map(([e, n]) => `, ${e} ${n}`).join('')}`)
    .join('; ');
}
