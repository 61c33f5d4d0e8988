// What both end-to-end helper modules (agents.ts for the one-liners, daemons.ts for the managed
// agents) need from the system: polling for a condition, the mount table, and ending child processes.
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** Polls `cond` until it returns a truthy value; throws `what` (plus `details()`) at the deadline. */
export async function waitFor<T>(
  cond: () => Promise<T> | T,
  what: string,
  opts: { timeoutMs?: number; intervalMs?: number; details?: () => Promise<string> | string } = {},
): Promise<NonNullable<T>> {
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const deadline = Date.now() + timeoutMs;
  let interval = opts.intervalMs ?? 10;
  for (;;) {
    const v = await cond();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) {
      const more = opts.details ? `\n${await opts.details()}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${more}`);
    }
    await sleep(interval);
    interval = Math.min(interval * 2, Math.max(opts.intervalMs ?? 0, 100));
  }
}

// ---- the mount table ----

export interface MountEntry {
  source: string;
  target: string;
  fstype: string;
  options: string[];
}

/** /proc/mounts fields encode spaces and the like as octal escapes. */
export const unescapeMountField = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

export function parseMounts(text: string): MountEntry[] {
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [source, target, fstype, options] = l.split(' ');
      return { source: unescapeMountField(source), target: unescapeMountField(target), fstype, options: (options ?? '').split(',') };
    });
}

export async function mountTable(): Promise<MountEntry[]> {
  return parseMounts(await fs.readFile('/proc/mounts', 'utf8'));
}

export async function mountEntry(mnt: string): Promise<MountEntry | undefined> {
  const abs = path.resolve(mnt);
  return (await mountTable()).find((m) => m.target === abs);
}

export async function isMounted(mnt: string): Promise<boolean> {
  return (await mountEntry(mnt)) !== undefined;
}

/** Mounts at or below `dir`. */
export async function mountsUnder(dir: string): Promise<MountEntry[]> {
  const abs = path.resolve(dir);
  return (await mountTable()).filter((m) => m.target === abs || m.target.startsWith(abs + '/'));
}

// ---- child processes ----

export function exited(p: ChildProcess): boolean {
  return p.exitCode !== null || p.signalCode !== null;
}

/** Resolves when `p` has exited (true) or after `ms` (false). */
export function waitExit(p: ChildProcess, ms: number): Promise<boolean> {
  if (exited(p)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      p.off('exit', onExit);
      resolve(false);
    }, ms);
    const onExit = () => {
      clearTimeout(timer);
      resolve(true);
    };
    p.once('exit', onExit);
  });
}

/** SIGTERM, then SIGKILL if it is still there after `graceMs`. */
export async function terminate(p: ChildProcess, graceMs: number): Promise<void> {
  if (exited(p)) return;
  p.kill('SIGTERM');
  if (await waitExit(p, graceMs)) return;
  p.kill('SIGKILL');
  await waitExit(p, 5000);
}
