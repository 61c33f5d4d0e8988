// Random operations over a small namespace (a few directories, a handful of names in each), so
// that operations collide often: writes to renamed files, links to unlinked ones, renames over
// open files. The generator looks at the reference tree to pick existing names most of the time,
// and follows which descriptor slots are open; both are the same on every target (or the run has
// already failed), so a seed always gives the same sequence.
import { constants as fsc } from 'node:fs';
import { Prng } from '../fuzz/prng.js';
import type { Tree, EntryState } from './compare.js';
import {
  FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, RENAME_EXCHANGE, RENAME_NOREPLACE, SEEK_DATA, SEEK_HOLE,
  SLOTS, XATTR_CREATE, XATTR_REPLACE, type Op, type OpKind, type Outcome,
} from './ops.js';

const FILE_NAMES = ['f0', 'f1', 'f2', 'f3', 'f4', 'f5'];
const DIR_NAMES = ['a', 'b', 'c'];
const ALL_NAMES = [...FILE_NAMES, ...DIR_NAMES];
/** Deeper directories are not created into (a rename may still move one deeper). */
const MAX_PARENT_DEPTH = 2;
/** Relative and never with "..": wherever a symlink is moved, it cannot point out of the root. */
const SYMLINK_TARGETS = ['f0', 'f1', 'f2', 'a/f0', 'b/f1', 'c/f3', 'a', 'missing', 'f0/x', 'f4'];
const FILE_MODES = [0o644, 0o600, 0o666, 0o755, 0o444, 0o400, 0o000, 0o4755, 0o2755, 0o1644];
const DIR_MODES = [0o755, 0o700, 0o777, 0o2775, 0o1777, 0o555];
const FALLOC_MODES = [0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE];
const XATTR_NAMES = ['user.a', 'user.b', 'user.a-longer-name.for-the-differential-test'];
const KiB = 1024;
const MiB = 1024 * KiB;
const PAGE = 4096;

/** How often each operation is chosen, relative to the others. */
export const WEIGHTS: Readonly<Record<OpKind, number>> = {
  open: 12, reopen: 3, close: 3, pwrite: 16, write: 4, pread: 8, ftruncate: 4, fsync: 3, fstat: 3,
  writeFile: 3, truncate: 4, mmapWrite: 4, fallocate: 2, directWrite: 2, directRead: 2, seek: 3, copyFile: 2,
  setxattr: 3, getxattr: 1, removexattr: 1,
  rename: 7, link: 4, symlink: 3, unlink: 6, mkdir: 3, rmdir: 3, chmod: 3, utimes: 2,
};

export class OpGenerator {
  private readonly open = new Array<boolean>(SLOTS).fill(false);
  private tree: Tree = new Map();
  private readonly weights: Readonly<Record<OpKind, number>>;

  /** `skip`: operations never to generate (say, what a mount mode cannot do at all). */
  constructor(private readonly rng: Prng, skip: readonly OpKind[] = []) {
    const w = { ...WEIGHTS };
    for (const k of skip) w[k] = 0;
    this.weights = w;
  }

  /** The next operation, given the reference's tree as it is now. */
  next(tree: Tree): Op {
    this.tree = tree;
    const r = this.rng;
    const kind = r.weighted(this.weights);
    switch (kind) {
      case 'open':
        return { kind, slot: this.freeSlot(), path: r.chance(0.05) ? this.existing(isDir, DIR_NAMES) : this.filePath(), flags: this.openFlags(), mode: r.pick(FILE_MODES) };
      case 'reopen':
        return { kind, slot: this.openSlot(), flags: this.openFlags() & ~fsc.O_EXCL };
      case 'close':
      case 'fstat':
        return { kind, slot: this.openSlot() };
      case 'pwrite':
        return { kind, slot: this.openSlot(), offset: this.offset(), length: this.length(), seed: r.u32() };
      case 'write':
        return { kind, slot: this.openSlot(), length: this.length(), seed: r.u32() };
      case 'pread':
        return { kind, slot: this.openSlot(), offset: this.offset(), length: this.length() };
      case 'ftruncate':
        return { kind, slot: this.openSlot(), size: this.size() };
      case 'fsync':
        return { kind, slot: this.openSlot(), dataOnly: r.chance(0.5) };
      case 'writeFile':
        return { kind, path: this.filePath(), length: this.length(), seed: r.u32() };
      case 'truncate':
        return { kind, path: this.filePath(), size: this.size() };
      case 'mmapWrite':
        return { kind, path: this.filePath(), ppm: r.int(1_000_000), length: Math.min(this.length(), 256 * KiB), seed: r.u32() };
      case 'fallocate':
        return { kind, path: this.filePath(), mode: r.pick(FALLOC_MODES), offset: this.offset(), length: r.chance(0.02) ? 0 : this.length() };
      case 'directWrite':
        return { kind, path: this.filePath(), offset: r.int(256) * PAGE, length: r.range(1, 32) * PAGE, seed: r.u32() };
      case 'directRead':
        return { kind, path: this.filePath(), offset: r.int(256) * PAGE, length: r.range(1, 32) * PAGE };
      case 'seek':
        return { kind, path: this.filePath(), whence: r.chance(0.5) ? SEEK_DATA : SEEK_HOLE, offset: this.offset() };
      case 'setxattr': {
        const length = r.chance(0.9) ? r.int(65) : r.int(1001);
        const flags = r.pick([0, 0, XATTR_CREATE, XATTR_REPLACE]);
        return { kind, path: this.existing(() => true, ALL_NAMES), name: r.pick(XATTR_NAMES), flags, length, seed: r.u32() };
      }
      case 'getxattr':
      case 'removexattr':
        return { kind, path: this.existing(() => true, ALL_NAMES), name: r.pick(XATTR_NAMES) };
      case 'copyFile':
        return { kind, from: this.filePath(), to: this.filePath(0.5) };
      case 'rename': {
        const flags = r.chance(0.8) ? 0 : r.chance(0.5) ? RENAME_NOREPLACE : RENAME_EXCHANGE;
        return { kind, from: this.existing(() => true, ALL_NAMES), to: this.existing(() => true, ALL_NAMES, 0.5), flags };
      }
      case 'link':
        return { kind, from: this.existing(this.mostlyNot('dir'), FILE_NAMES), to: this.newPath(FILE_NAMES) };
      case 'symlink':
        return { kind, target: r.pick(SYMLINK_TARGETS), path: this.existing(() => true, FILE_NAMES, 0.1) };
      case 'unlink':
        return { kind, path: this.existing(this.mostlyNot('dir'), FILE_NAMES) };
      case 'mkdir':
        return { kind, path: this.existing(isDir, r.chance(0.8) ? DIR_NAMES : FILE_NAMES, 0.1), mode: r.pick(DIR_MODES) };
      case 'rmdir':
        return { kind, path: this.existing(this.rng.chance(0.05) ? () => true : isDir, DIR_NAMES) };
      case 'chmod': {
        const path = this.existing(() => true, ALL_NAMES);
        return { kind, path, mode: r.pick(this.tree.get(path)?.type === 'dir' ? DIR_MODES : FILE_MODES) };
      }
      case 'utimes':
        return { kind, path: this.existing(() => true, ALL_NAMES), atimeSec: r.range(1e9, 2e9), mtimeSec: r.range(1e9, 2e9) };
    }
  }

  /** Follows which slots hold an open descriptor, from the reference's outcome. */
  observe(op: Op, outcome: Outcome): void {
    if (op.kind === 'open' || op.kind === 'reopen') this.open[op.slot] = outcome.ok;
    else if (op.kind === 'close') this.open[op.slot] = false;
  }

  /** A filter that excludes `type`, except now and then (to get the errors for it). */
  private mostlyNot(type: EntryState['type']): (e: EntryState) => boolean {
    return this.rng.chance(0.05) ? () => true : (e) => e.type !== type;
  }

  private slots(open: boolean): number[] {
    return this.open.flatMap((o, i) => (o === open ? [i] : []));
  }

  /** Mostly an open slot (an empty one gives EBADF, which must match too). */
  private openSlot(): number {
    const open = this.slots(true);
    return open.length > 0 && this.rng.chance(0.97) ? this.rng.pick(open) : this.rng.int(SLOTS);
  }

  /** Mostly a free slot; else an open one is closed first. */
  private freeSlot(): number {
    const free = this.slots(false);
    return free.length > 0 && this.rng.chance(0.7) ? this.rng.pick(free) : this.rng.int(SLOTS);
  }

  private openFlags(): number {
    const r = this.rng;
    let f = r.pick([fsc.O_RDONLY, fsc.O_WRONLY, fsc.O_RDWR, fsc.O_RDWR]);
    if (r.chance(0.6)) f |= fsc.O_CREAT;
    if (f & fsc.O_CREAT && r.chance(0.15)) f |= fsc.O_EXCL;
    if (r.chance(0.12)) f |= fsc.O_TRUNC;
    if (r.chance(0.1)) f |= fsc.O_APPEND;
    if (r.chance(0.03)) f |= fsc.O_NOFOLLOW;
    return f;
  }

  /** An existing file or symlink most of the time, else a new name. */
  private filePath(pExisting = 0.8): string {
    return this.existing((e) => e.type === 'file' || e.type === 'symlink', FILE_NAMES, pExisting);
  }

  /** With probability `p`, an existing path that `want` accepts (if any); else a new name. */
  private existing(want: (e: EntryState) => boolean, names: readonly string[], p = 0.8): string {
    if (this.rng.chance(p)) {
      const found = [...this.tree].filter(([, e]) => want(e)).map(([path]) => path);
      if (found.length > 0) return this.rng.pick(found);
    }
    return this.newPath(names);
  }

  /** A name in an existing directory (now and then in one that is missing, or is a file). */
  private newPath(names: readonly string[]): string {
    const r = this.rng;
    const dirs = [''];
    for (const [p, e] of this.tree) if (e.type === 'dir' && p.split('/').length <= MAX_PARENT_DEPTH) dirs.push(p);
    const parent = r.chance(0.95) ? r.pick(dirs) : r.pick(['nodir', 'f0', 'a/f1']);
    const name = r.pick(names);
    return parent ? `${parent}/${name}` : name;
  }

  /** Offsets: mostly near the start, often on either side of a page boundary, now and then far out (holes). */
  private offset(): number {
    const r = this.rng;
    const x = r.float();
    if (x < 0.35) return r.int(16 * KiB);
    if (x < 0.6) return Math.max(0, r.int(256) * PAGE + r.range(-3, 3));
    if (x < 0.85) return r.int(MiB);
    return r.int(4 * MiB);
  }

  /** Lengths from 1 byte to 1 MiB, mostly small. */
  private length(): number {
    const r = this.rng;
    const x = r.float();
    if (x < 0.4) return r.range(1, 64);
    if (x < 0.7) return r.range(1, 8 * KiB);
    if (x < 0.8) return r.range(1, 4) * PAGE + r.range(-2, 2);
    if (x < 0.93) return r.range(1, 128 * KiB);
    return r.range(1, MiB);
  }

  /** Truncation sizes: empty, small, page-aligned or not, larger than most files. */
  private size(): number {
    const r = this.rng;
    const x = r.float();
    if (x < 0.15) return 0;
    if (x < 0.5) return r.int(16 * KiB);
    if (x < 0.7) return r.int(64) * PAGE;
    if (x < 0.9) return r.int(MiB);
    return r.int(5 * MiB);
  }
}

function isDir(e: EntryState): boolean {
  return e.type === 'dir';
}
