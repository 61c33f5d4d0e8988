// The operations of the differential test, as plain data: the generator makes them, every target
// applies them, and a failure report prints them. Paths are relative to the target's root; `slot`
// names one of the target's open file descriptors. Written data is named by a seed, not carried.
import { constants as fsc } from 'node:fs';
import { Prng } from '../fuzz/prng.js';

export const SLOTS = 6;

export type Op =
  | { kind: 'open'; slot: number; path: string; flags: number; mode: number }
  | { kind: 'reopen'; slot: number; flags: number } // close, then open the slot's path again
  | { kind: 'close'; slot: number }
  | { kind: 'pwrite'; slot: number; offset: number; length: number; seed: number }
  | { kind: 'write'; slot: number; length: number; seed: number } // at the descriptor's position
  | { kind: 'pread'; slot: number; offset: number; length: number }
  | { kind: 'ftruncate'; slot: number; size: number }
  | { kind: 'fsync'; slot: number; dataOnly: boolean }
  | { kind: 'fstat'; slot: number }
  | { kind: 'writeFile'; path: string; length: number; seed: number }
  | { kind: 'truncate'; path: string; size: number }
  | { kind: 'mmapWrite'; path: string; ppm: number; length: number; seed: number }
  | { kind: 'fallocate'; path: string; mode: number; offset: number; length: number }
  | { kind: 'directWrite'; path: string; offset: number; length: number; seed: number } // O_DIRECT, 4 KiB aligned
  | { kind: 'directRead'; path: string; offset: number; length: number }
  | { kind: 'seek'; path: string; whence: number; offset: number } // SEEK_DATA / SEEK_HOLE
  | { kind: 'setxattr'; path: string; name: string; flags: number; length: number; seed: number }
  | { kind: 'getxattr'; path: string; name: string }
  | { kind: 'removexattr'; path: string; name: string }
  | { kind: 'copyFile'; from: string; to: string }
  | { kind: 'rename'; from: string; to: string; flags: number } // renameat2 flags
  | { kind: 'link'; from: string; to: string }
  | { kind: 'symlink'; target: string; path: string }
  | { kind: 'unlink'; path: string }
  | { kind: 'mkdir'; path: string; mode: number }
  | { kind: 'rmdir'; path: string }
  | { kind: 'chmod'; path: string; mode: number }
  | { kind: 'utimes'; path: string; atimeSec: number; mtimeSec: number };

export type OpKind = Op['kind'];

/** What an operation returned: the same on every target, or the run fails. */
export type Outcome = { ok: true; value?: string } | { ok: false; errno: string };

export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;

export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;
export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;

export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

let lastPayload: { seed: number; data: Buffer } | undefined;

/** The data an operation writes: the same bytes on every target (made once for all of them). */
export function payload(seed: number, length: number): Buffer {
  if (lastPayload?.seed !== seed || lastPayload.data.length !== length) lastPayload = { seed, data: new Prng(seed).bytes(length) };
  return lastPayload.data;
}

const OPEN_FLAG_NAMES: Array<[number, string]> = [
  [fsc.O_CREAT, 'CREAT'],
  [fsc.O_EXCL, 'EXCL'],
  [fsc.O_TRUNC, 'TRUNC'],
  [fsc.O_APPEND, 'APPEND'],
  [fsc.O_NOFOLLOW, 'NOFOLLOW'],
];

export function openFlagsText(flags: number): string {
  const acc = flags & 3;
  const words = [acc === fsc.O_RDONLY ? 'RDONLY' : acc === fsc.O_WRONLY ? 'WRONLY' : 'RDWR'];
  for (const [bit, name] of OPEN_FLAG_NAMES) if (flags & bit) words.push(name);
  return words.join('|');
}

const oct = (mode: number): string => `0${mode.toString(8)}`;

function renameFlagsText(flags: number): string {
  if (flags === RENAME_NOREPLACE) return ' NOREPLACE';
  if (flags === RENAME_EXCHANGE) return ' EXCHANGE';
  return flags ? ` flags=${flags}` : '';
}

/** One line per operation, as a failure report shows it. */
export function describe(op: Op): string {
  switch (op.kind) {
    case 'open':
      return `open #${op.slot} ${op.path} ${openFlagsText(op.flags)} ${oct(op.mode)}`;
    case 'reopen':
      return `reopen #${op.slot} ${openFlagsText(op.flags)}`;
    case 'close':
    case 'fstat':
      return `${op.kind} #${op.slot}`;
    case 'pwrite':
      return `pwrite #${op.slot} offset=${op.offset} length=${op.length} seed=${op.seed}`;
    case 'write':
      return `write #${op.slot} length=${op.length} seed=${op.seed}`;
    case 'pread':
      return `pread #${op.slot} offset=${op.offset} length=${op.length}`;
    case 'ftruncate':
      return `ftruncate #${op.slot} ${op.size}`;
    case 'fsync':
      return `${op.dataOnly ? 'fdatasync' : 'fsync'} #${op.slot}`;
    case 'writeFile':
      return `writeFile ${op.path} length=${op.length} seed=${op.seed}`;
    case 'truncate':
      return `truncate ${op.path} ${op.size}`;
    case 'mmapWrite':
      return `mmapWrite ${op.path} at=${op.ppm}ppm length=${op.length} seed=${op.seed}`;
    case 'fallocate':
      return `fallocate ${op.path} mode=0x${op.mode.toString(16)} offset=${op.offset} length=${op.length}`;
    case 'directWrite':
      return `directWrite ${op.path} offset=${op.offset} length=${op.length} seed=${op.seed}`;
    case 'directRead':
      return `directRead ${op.path} offset=${op.offset} length=${op.length}`;
    case 'seek':
      return `seek ${op.path} ${op.whence === SEEK_DATA ? 'SEEK_DATA' : op.whence === SEEK_HOLE ? 'SEEK_HOLE' : `whence=${op.whence}`} ${op.offset}`;
    case 'setxattr': {
      const flags = op.flags === XATTR_CREATE ? ' CREATE' : op.flags === XATTR_REPLACE ? ' REPLACE' : '';
      return `setxattr ${op.path} ${op.name}${flags} length=${op.length} seed=${op.seed}`;
    }
    case 'getxattr':
    case 'removexattr':
      return `${op.kind} ${op.path} ${op.name}`;
    case 'copyFile':
    case 'link':
      return `${op.kind} ${op.from} ${op.to}`;
    case 'rename':
      return `rename ${op.from} ${op.to}${renameFlagsText(op.flags)}`;
    case 'symlink':
      return `symlink ${op.path} -> ${op.target}`;
    case 'unlink':
    case 'rmdir':
      return `${op.kind} ${op.path}`;
    case 'mkdir':
    case 'chmod':
      return `${op.kind} ${op.path} ${oct(op.mode)}`;
    case 'utimes':
      return `utimes ${op.path} atime=${op.atimeSec} mtime=${op.mtimeSec}`;
  }
}

export function outcomeText(o: Outcome): string {
  if (!o.ok) return o.errno;
  return o.value === undefined ? 'ok' : `ok ${o.value}`;
}

/** The paths an operation names (its slot's file is found separately, by inode). */
export function pathsOf(op: Op): string[] {
  switch (op.kind) {
    case 'open':
    case 'writeFile':
    case 'truncate':
    case 'mmapWrite':
    case 'fallocate':
    case 'directWrite':
    case 'directRead':
    case 'seek':
    case 'setxattr':
    case 'getxattr':
    case 'removexattr':
    case 'symlink':
    case 'unlink':
    case 'mkdir':
    case 'rmdir':
    case 'chmod':
    case 'utimes':
      return [op.path];
    case 'copyFile':
    case 'rename':
    case 'link':
      return [op.from, op.to];
    default:
      return [];
  }
}

/** The slot an operation works through, if any. */
export function slotOf(op: Op): number | undefined {
  return 'slot' in op ? op.slot : undefined;
}
