// Builds fs-helper.c and talks to it: the operations of the differential test Node has no call for
// (mmap writes, renameat2 flags, truncate(2), fallocate, O_DIRECT, lseek, xattrs). Built once per
// source version with the system's cc into the temp dir. One helper process per directory, started
// before the test opens anything there and kept for the whole run (see fs-helper.c for why).
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { errnoName } from '../../shared/fs/errors.js';
import { REPO, run } from '../helpers/agents.js';
import { waitExit } from '../helpers/system.js';

const SOURCE = path.join(REPO, 'test/differential/fs-helper.c');
const CALL_TIMEOUT_MS = 120_000;

/** What one helper command said: success with its printed values, or the errno name. */
export type HelperResult = { ok: true; values: string[] } | { ok: false; errno: string };

let built: Promise<string> | undefined;

/** The path of the compiled helper (compiled on first use). */
export function fsHelperBinary(): Promise<string> {
  return (built ??= build());
}

async function build(): Promise<string> {
  const source = await fs.readFile(SOURCE);
  const hash = crypto.createHash('sha256').update(source).digest('hex').slice(0, 16);
  const bin = path.join(os.tmpdir(), `dirvisor-fs-helper-${hash}`);
  if (await fs.access(bin).then(() => true, () => false)) return bin;
  // A private name, then rename: test files running at once may build it together.
  const tmp = `${bin}.${process.pid}.${crypto.randomBytes(4).toString('hex')}`;
  const r = await run(['cc', '-O2', '-Wall', '-Werror', '-o', tmp, SOURCE], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`cc failed to build ${SOURCE}:\n${r.stderr}`);
  await fs.rename(tmp, bin);
  return bin;
}

/** A running `fs-helper serve`: one command at a time, answers in order. */
export class FsHelper {
  private output = '';
  private stderr = '';
  private waiting: Array<(line: string | Error) => void> = [];
  private queue: Promise<unknown> = Promise.resolve();
  private dead?: Error;

  private constructor(private readonly proc: ChildProcess) {
    proc.stdout!.setEncoding('utf8');
    proc.stdout!.on('data', (chunk: string) => {
      this.output += chunk;
      let nl: number;
      while ((nl = this.output.indexOf('\n')) >= 0) {
        const line = this.output.slice(0, nl);
        this.output = this.output.slice(nl + 1);
        this.waiting.shift()?.(line);
      }
    });
    proc.stderr!.on('data', (c: Buffer) => (this.stderr += c.toString()));
    proc.stdin!.on('error', () => {}); // reported by 'exit' below
    proc.once('exit', (code, signal) => {
      this.dead = new Error(`fs-helper exited (${signal ?? `status ${code}`}): ${this.stderr}`);
      for (const w of this.waiting.splice(0)) w(this.dead);
    });
  }

  static async start(): Promise<FsHelper> {
    const proc = spawn(await fsHelperBinary(), ['serve'], { stdio: ['pipe', 'pipe', 'pipe'] });
    await new Promise<void>((resolve, reject) => {
      proc.once('spawn', resolve);
      proc.once('error', reject);
    });
    return new FsHelper(proc);
  }

  /** Runs one command (`data` follows its line); throws only if the helper itself failed. */
  call(args: string[], data?: Buffer): Promise<HelperResult> {
    const result = this.queue.then(() => this.exchange(args, data));
    this.queue = result.catch(() => undefined);
    return result;
  }

  async stop(): Promise<void> {
    this.proc.stdin!.end();
    if (!(await waitExit(this.proc, 10_000))) this.proc.kill('SIGKILL');
  }

  private async exchange(args: string[], data?: Buffer): Promise<HelperResult> {
    if (this.dead) throw this.dead;
    if (args.some((a) => /\s/.test(a) || a === '')) throw new Error(`fs-helper arguments must be words: ${JSON.stringify(args)}`);
    const line = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.proc.kill('SIGKILL');
        reject(new Error(`fs-helper ${args.join(' ')}: no answer in ${CALL_TIMEOUT_MS} ms`));
      }, CALL_TIMEOUT_MS);
      this.waiting.push((l) => {
        clearTimeout(timer);
        if (l instanceof Error) reject(l);
        else resolve(l);
      });
      this.proc.stdin!.write(`${args.join(' ')}\n`);
      if (data?.length) this.proc.stdin!.write(data);
    });
    const words = line.trim().split(/\s+/);
    if (words[0] === 'ok') return { ok: true, values: words.slice(1) };
    if (words[0] === 'errno' && words.length === 2) return { ok: false, errno: errnoName(Number(words[1])) };
    throw new Error(`fs-helper ${args.join(' ')}: unexpected answer "${line}"`);
  }
}
