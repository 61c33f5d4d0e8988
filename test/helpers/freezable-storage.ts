// A storage node that can be frozen on demand, for the frozen-storage tests: a FUSE mount of a
// directory (our POSIX backend behind our FUSE adapter) whose daemon, once frozen, stops answering.
// Calls into it then block in the kernel with no timeout of their own, exactly like a hard NFS
// mount or a CephFS whose OSDs stopped; unlike a stopped Ceph OSD, thawing always works.
//
//   node dist/test/helpers/freezable-storage.js BACKING_DIR MOUNTPOINT
//
// SIGUSR1 freezes, SIGUSR2 thaws, SIGTERM thaws and unmounts. Each state change is one line of
// JSON on stdout ({"state":"ready"|"frozen"|"thawed"}); "waiting" counts the calls held.
import { PosixBackend } from '../../host-agent/backend/posix.js';
import { mountFileSystem } from '../../guest-agent/fuse/adapter.js';
import type { FileSystem } from '../../shared/fs/interface.js';

let frozen = false;
let thawers: Array<() => void> = [];

function say(state: string): void {
  process.stdout.write(`${JSON.stringify({ state, waiting: thawers.length })}\n`);
}

/** `fs` with every call (but forget, which has no answer) held while frozen. */
function freezable(fs: FileSystem): FileSystem {
  return new Proxy(fs, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function' || prop === 'forget' || prop === 'destroy') return value;
      return async (...args: unknown[]) => {
        if (frozen) await new Promise<void>((resolve) => thawers.push(resolve));
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
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
  thaw();
  say('thawed');
});
process.on('SIGTERM', () => {
  thaw();
  void mount.unmount({ lazy: true }).catch(() => undefined);
});
say('ready');
await mount.closed;
