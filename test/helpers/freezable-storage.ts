// A storage node that can be frozen on demand, for the frozen-storage tests: a FUSE mount of a
// directory (our POSIX backend behind our FUSE adapter) whose daemon, once frozen, stops answering.
// Calls into it then block in the kernel with no timeout of their own, exactly like a hard NFS
// mount or a CephFS whose OSDs stopped; unlike a stopped Ceph OSD, thawing always works.
//
//   node dist/test/helpers/freezable-storage.js BACKING_DIR MOUNTPOINT
//
// SIGUSR1 freezes, SIGUSR2 thaws, SIGTERM thaws and unmounts. Each state change is one line of
// JSON on stdout ({"state":"ready"|"frozen"|"thawed"}); on thawing, "waiting" counts the calls
// that were held, "threads" those a thread was blocked in, and "held" says what they were.
import { readFileSync } from 'node:fs';
import { PosixBackend } from '../../host-agent/backend/posix.js';
import { mountFileSystem } from '../../guest-agent/fuse/adapter.js';
import type { FileSystem } from '../../shared/fs/interface.js';

let frozen = false;
let thawers: Array<() => void> = [];
/** What the held calls are (by FileSystem method), for the test's log. */
let held: Record<string, number> = {};
/** Held calls made by a thread (not by the kernel itself, like a RELEASE after close): threads blocked. */
let threadsHeld = 0;

function say(state: string, waiting = thawers.length): void {
  process.stdout.write(`${JSON.stringify({ state, waiting, threads: threadsHeld, held })}\n`);
}

/** `fs` with every call (but forget, which has no answer) held while frozen. */
function freezable(fs: FileSystem): FileSystem {
  return new Proxy(fs, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function' || prop === 'forget' || prop === 'destroy') return value;
      return async (...args: unknown[]) => {
        if (frozen) {
          if ((args[0] as { pid?: number } | undefined)?.pid) threadsHeld++;
          const key = `${String(prop)} by ${threadName((args[0] as { pid?: number } | undefined)?.pid)}`;
          held[key] = (held[key] ?? 0) + 1;
          await new Promise<void>((resolve) => thawers.push(resolve));
        }
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

/** The calling thread (FUSE tells its id) and its program, e.g. "dirvisor-io of dirvisor-host.js run". */
function threadName(tid?: number): string {
  if (!tid) return 'the kernel';
  try {
    const comm = readFileSync(`/proc/${tid}/comm`, 'utf8').trim();
    const tgid = /^Tgid:\s*(\d+)/m.exec(readFileSync(`/proc/${tid}/status`, 'utf8'))?.[1];
    const argv = readFileSync(`/proc/${tgid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    return `${Number(tgid) === tid ? 'the main thread' : comm} of ${argv.slice(1, 3).map((a) => a.split('/').pop()).join(' ') || argv[0]}`;
  } catch {
    return 'a thread gone since';
  }
}

function thaw(): void {
  frozen = false;
  const waiting = thawers;
  thawers = [];
  for (const resume of waiting) resume();
}

const [backing, mountpoint] = process.argv.slice(2);
if (!backing || !mountpoint) {
  process.stderr.write('usage: freezable-storage BACKING_DIR MOUNTPOINT\n');
  process.exit(2);
}
const backend = await PosixBackend.create(backing);
const mount = await mountFileSystem(freezable(backend), mountpoint, {
  allowOther: true, defaultPermissions: true, autoUnmount: true, fsname: 'freezable',
});
process.on('SIGUSR1', () => {
  frozen = true;
  say('frozen');
});
process.on('SIGUSR2', () => {
  const waiting = thawers.length;
  thaw();
  say('thawed', waiting); // how many calls were held
  held = {};
  threadsHeld = 0;
});
process.on('SIGTERM', () => {
  thaw();
  void mount.unmount({ lazy: true }).catch(() => undefined);
});
say('ready');
await mount.closed;
