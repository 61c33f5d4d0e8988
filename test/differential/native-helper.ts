// Builds and runs fs-helper.c: the operations of the differential test Node has no call for
// (mmap writes, renameat2 flags, truncate(2), fallocate). Built once per source version with the
// system's cc into the temp dir; each operation is one short child process.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { errnoName } from '../../shared/fs/errors.js';
import { REPO, run } from '../helpers/agents.js';

const SOURCE = path.join(REPO, 'test/differential/fs-helper.c');

/** What one helper run said: success with its printed values, or the errno name. */
export type HelperResult = { ok: true; values: string[] } | { ok: false; errno: string };

let built: Promise<string> | undefined;

/** The path of the compiled helper (compiled on first use). */
export function fsHelper(): Promise<string> {
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

/** Runs one helper operation; `input` goes to its stdin. Throws only if the helper itself failed. */
export async function runHelper(args: string[], input?: Buffer, timeoutMs = 60_000): Promise<HelperResult> {
  const bin = await fsHelper();
  const { code, signal, stdout, stderr } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>(
    (resolve, reject) => {
      const p = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      p.stdout.on('data', (c: Buffer) => out.push(c));
      p.stderr.on('data', (c: Buffer) => err.push(c));
      p.stdin.on('error', () => {}); // it may exit before reading (open failed)
      p.stdin.end(input ?? Buffer.alloc(0));
      const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
      p.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      p.once('close', (c, s) => {
        clearTimeout(timer);
        resolve({ code: c, signal: s, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
      });
    },
  );
  const words = stdout.trim().split(/\s+/);
  if (code === 0 && words[0] === 'ok') return { ok: true, values: words.slice(1) };
  if (code === 0 && words[0] === 'errno' && words.length === 2) return { ok: false, errno: errnoName(Number(words[1])) };
  throw new Error(`fs-helper ${args.join(' ')} failed (${signal ?? `exit ${code}`}): ${stdout}${stderr}`);
}
