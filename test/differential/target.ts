// One side of the differential test: a directory (the FUSE mount, or the local reference) that
// operations are applied to, with its own table of open file descriptors ("slots"). Everything
// here is asynchronous: the mount is served by another process, but a blocked synchronous call
// would still stall the whole test.
import crypto from 'node:crypto';
import fs, { type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { SEEK_DATA, SLOTS, payload, type Op, type Outcome } from './ops.js';
import { FsHelper, type HelperResult } from './native-helper.js';
import { errnoName } from '../../shared/fs/errors.js';

/** Paths per xattrs command (fs-helper.c takes at most 256 words a line). */
const XATTR_BATCH = 100;

const sha1 = (data: Uint8Array): string => crypto.createHash('sha1').update(data).digest('hex').slice(0, 16);

/** Errors an application can get are outcomes; anything else is a failure of the test itself. */
function errnoCode(err: unknown): string {
  const { code, errno, syscall } = err as { code?: unknown; errno?: unknown; syscall?: unknown };
  if (typeof code === 'string' && /^E[A-Z0-9]+$/.test(code)) return code;
  // libuv has no name for some (ESTALE is "Unknown system error -116"): the number has one.
  if (typeof errno === 'number' && errno < 0 && typeof syscall === 'string') return errnoName(-errno);
  throw err;
}

function helperValue(r: HelperResult): string | undefined {
  if (!r.ok) throw Object.assign(new Error(r.errno), { code: r.errno });
  return r.values.length ? r.values.join(' ') : undefined;
}

function typeOf(st: { isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean }): string {
  return st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
}

interface Slot {
  fh: FileHandle;
  /** The path it was opened by (a reopen uses it again, whatever happened to the file since). */
  path: string;
}

export class FsTarget {
  private readonly slots: Array<Slot | undefined> = new Array<Slot | undefined>(SLOTS).fill(undefined);

  private constructor(readonly root: string, private readonly helper: FsHelper) {}

  /** Call before anything is open under `root` (fs-helper.c says why). */
  static async start(root: string): Promise<FsTarget> {
    return new FsTarget(root, await FsHelper.start());
  }

  /** Ends the helper process; close the slots first (closeAll). */
  stop(): Promise<void> {
    return this.helper.stop();
  }

  /** `rel` under the root. Generated paths never hold "..", so this stays inside. */
  abs(rel: string): string {
    return path.join(this.root, rel);
  }

  async apply(op: Op): Promise<Outcome> {
    try {
      const value = await this.exec(op);
      return value === undefined ? { ok: true } : { ok: true, value };
    } catch (err) {
      return { ok: false, errno: errnoCode(err) };
    }
  }

  /** The inode and link count of a slot's file (or why fstat failed); undefined for an empty slot. */
  async slotStat(slot: number): Promise<{ ino: number; nlink: number } | { errno: string } | undefined> {
    const s = this.slots[slot];
    if (!s) return undefined;
    try {
      const st = await s.fh.stat();
      return { ino: st.ino, nlink: st.nlink };
    } catch (err) {
      return { errno: errnoCode(err) };
    }
  }

  /** The whole content of a slot's file read through its descriptor; undefined if not readable. */
  async slotContent(slot: number): Promise<Buffer | undefined> {
    const s = this.slots[slot];
    if (!s) return undefined;
    try {
      const { size } = await s.fh.stat();
      const buf = Buffer.alloc(size);
      let done = 0;
      while (done < size) {
        const { bytesRead } = await s.fh.read(buf, done, size - done, done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return buf.subarray(0, done);
    } catch (err) {
      if (errnoCode(err) === 'EBADF') return undefined; // opened write-only
      throw err;
    }
  }

  /** The extended attributes of each path (symlinks not followed), one line per path. */
  async xattrs(paths: readonly string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>(paths.map((p) => [p, '']));
    for (let start = 0; start < paths.length; start += XATTR_BATCH) {
      const batch = paths.slice(start, start + XATTR_BATCH);
      const r = await this.helper.call(['xattrs', ...batch.map((p) => this.abs(p))]);
      if (!r.ok) throw new Error(`xattrs: ${r.errno}`);
      for (const item of r.values) {
        const colon = item.indexOf(':');
        const p = batch[Number(item.slice(0, colon))];
        // Errno numbers as names, like every other outcome.
        const shown = item.slice(colon + 1).replace(/!(\d+)$/, (_, n: string) => `!${errnoName(Number(n))}`);
        out.set(p, out.get(p) ? `${out.get(p)} ${shown}` : shown);
      }
    }
    return out;
  }

  /** Closes every slot; the outcome of each close that was needed, in slot order. */
  async closeAll(): Promise<string[]> {
    const results: string[] = [];
    for (let slot = 0; slot < SLOTS; slot++) {
      if (!this.slots[slot]) continue;
      const o = await this.apply({ kind: 'close', slot });
      results.push(`#${slot} ${o.ok ? 'ok' : o.errno}`);
    }
    return results;
  }

  private slot(n: number): Slot {
    const s = this.slots[n];
    if (!s) throw Object.assign(new Error('empty slot'), { code: 'EBADF' });
    return s;
  }

  private async close(n: number): Promise<void> {
    const s = this.slots[n];
    this.slots[n] = undefined; // gone even if close reports an error, as with close(2)
    await s?.fh.close();
  }

  private async open(n: number, rel: string, flags: number, mode: number): Promise<void> {
    await this.close(n);
    this.slots[n] = { fh: await fs.open(this.abs(rel), flags, mode), path: rel };
  }

  /**
   * SEEK_DATA / SEEK_HOLE, judged against the file's content rather than compared: POSIX lets a
   * file system report any hole as data, and ext4 itself answers differently for the same file
   * depending on its page cache (a fallocated range whose pages were read counts as data). So the
   * outcome is whether the answer is one a file with this content may give.
   */
  private async seek(rel: string, whence: number, offset: number): Promise<string> {
    const r = await this.helper.call(['seek', this.abs(rel), String(whence), String(offset)]);
    if (!r.ok && r.errno !== 'ENXIO') return helperValue(r)!;
    const content = await fs.readFile(this.abs(rel));
    const answer = r.ok ? Number(r.values[0]) : undefined;
    const why = seekProblem(content, whence, offset, answer);
    return why ? `impossible answer ${answer ?? 'ENXIO'}: ${why}` : 'possible';
  }

  private async exec(op: Op): Promise<string | void> {
    switch (op.kind) {
      case 'open':
        return this.open(op.slot, op.path, op.flags, op.mode);
      case 'reopen':
        return this.open(op.slot, this.slot(op.slot).path, op.flags, 0o644);
      case 'close':
        this.slot(op.slot);
        return this.close(op.slot);
      case 'pwrite': {
        const { bytesWritten } = await this.slot(op.slot).fh.write(payload(op.seed, op.length), 0, op.length, op.offset);
        return String(bytesWritten);
      }
      case 'write': {
        const { bytesWritten } = await this.slot(op.slot).fh.write(payload(op.seed, op.length), 0, op.length, null);
        return String(bytesWritten);
      }
      case 'pread': {
        const buf = Buffer.alloc(op.length);
        const { bytesRead } = await this.slot(op.slot).fh.read(buf, 0, op.length, op.offset);
        return `${bytesRead} ${sha1(buf.subarray(0, bytesRead))}`;
      }
      case 'ftruncate':
        return this.slot(op.slot).fh.truncate(op.size);
      case 'fsync':
        return op.dataOnly ? this.slot(op.slot).fh.datasync() : this.slot(op.slot).fh.sync();
      case 'fstat': {
        const st = await this.slot(op.slot).fh.stat();
        // Directory sizes are the file system's business; a file's is the application's.
        const size = st.isFile() ? ` size=${st.size}` : '';
        return `${typeOf(st)} mode=${(st.mode & 0o7777).toString(8)} nlink=${st.nlink}${size}`;
      }
      case 'writeFile':
        return fs.writeFile(this.abs(op.path), payload(op.seed, op.length));
      case 'truncate':
        return helperValue(await this.helper.call(['truncate', this.abs(op.path), String(op.size)]));
      case 'mmapWrite':
        return helperValue(await this.helper.call(['mmap-write', this.abs(op.path), String(op.ppm), String(op.length)], payload(op.seed, op.length)));
      case 'fallocate':
        return helperValue(await this.helper.call(['fallocate', this.abs(op.path), String(op.mode), String(op.offset), String(op.length)]));
      case 'directWrite':
        return helperValue(await this.helper.call(['direct-write', this.abs(op.path), String(op.offset), String(op.length)], payload(op.seed, op.length)));
      case 'directRead':
        return helperValue(await this.helper.call(['direct-read', this.abs(op.path), String(op.offset), String(op.length)]));
      case 'seek':
        return this.seek(op.path, op.whence, op.offset);
      case 'setxattr':
        return helperValue(await this.helper.call(['setxattr', this.abs(op.path), op.name, String(op.flags), String(op.length)], payload(op.seed, op.length)));
      case 'getxattr':
        return helperValue(await this.helper.call(['getxattr', this.abs(op.path), op.name]));
      case 'removexattr':
        return helperValue(await this.helper.call(['removexattr', this.abs(op.path), op.name]));
      case 'copyFile':
        return fs.copyFile(this.abs(op.from), this.abs(op.to));
      case 'rename':
        if (op.flags) return helperValue(await this.helper.call(['rename2', this.abs(op.from), this.abs(op.to), String(op.flags)]));
        return fs.rename(this.abs(op.from), this.abs(op.to));
      case 'link':
        return fs.link(this.abs(op.from), this.abs(op.to));
      case 'symlink':
        return fs.symlink(op.target, this.abs(op.path));
      case 'unlink':
        return fs.unlink(this.abs(op.path));
      case 'mkdir':
        return void (await fs.mkdir(this.abs(op.path), { mode: op.mode }));
      case 'rmdir':
        return fs.rmdir(this.abs(op.path));
      case 'chmod':
        return fs.chmod(this.abs(op.path), op.mode);
      case 'utimes': {
        await fs.utimes(this.abs(op.path), op.atimeSec, op.mtimeSec);
        // What the application reads back at once (later, caches may keep their own mtime).
        const st = await fs.stat(this.abs(op.path));
        return `mtime=${Math.floor(st.mtimeMs / 1000)}`;
      }
    }
  }
}

/** Why `answer` (undefined: ENXIO) cannot be lseek's for a file with `content`; undefined if it can. */
export function seekProblem(content: Buffer, whence: number, offset: number, answer: number | undefined): string | undefined {
  const size = content.length;
  if (offset >= size) return answer === undefined ? undefined : 'the offset is at or past the end of the file';
  const zeros = (from: number, to: number): boolean => content.subarray(from, to).every((b) => b === 0);
  if (whence === SEEK_DATA) {
    // Data may start anywhere a hole is not provably: every byte skipped must read as zero.
    if (answer === undefined) return zeros(offset, size) ? undefined : 'there are non-zero bytes after the offset';
    if (answer < offset || answer >= size) return 'outside [offset, size)';
    return zeros(offset, answer) ? undefined : 'it skips non-zero bytes';
  }
  // SEEK_HOLE: the end of the file always counts as a hole; any other must read as zeros (to the
  // end of its page at least: holes are made of whole blocks).
  if (answer === undefined) return 'a hole always exists at the end of the file';
  if (answer < offset || answer > size) return 'outside [offset, size]';
  return answer === size || zeros(answer, Math.min(size, (Math.floor(answer / 4096) + 1) * 4096)) ? undefined : 'its hole holds non-zero bytes';
}
