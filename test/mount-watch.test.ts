// The mount watch of one storage node (host-agent/storage/mount-watch.ts) on real tmpfs mounts made
// here, with recording views in place of export backends: when a node counts as lost (unmounted,
// replaced, not mounted at all), what its views are told, and when it serves again.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { MountWatch, type MountedView } from '../host-agent/storage/mount-watch.js';
import type { StorageNodeConfig } from '../host-agent/config.js';
import { E } from '../shared/fs/errors.js';
import { capturingLogger } from './helpers/log.js';
import { tempDir } from './helpers/sockets.js';

const base = tempDir('dirvisor-mount-watch-');
const used: string[] = [];

function mountTmpfs(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m,mode=0755', 'tmpfs', dir]);
  used.push(dir);
}

const isMountPoint = (dir: string) => spawnSync('mountpoint', ['-q', dir]).status === 0;

test.after.always(() => {
  for (const dir of used.reverse()) {
    while (isMountPoint(dir)) execFileSync('umount', ['-l', dir]);
  }
  fs.rmSync(base, { recursive: true, force: true });
});

class RecordingView implements MountedView {
  closed = false;
  events: string[] = [];
  reason = '';
  /** errno code storageBack() fails with, if set. */
  failBack?: string;

  storageGone(reason: string): void {
    this.events.push('gone');
    this.reason = reason;
  }

  async storageBack(): Promise<void> {
    if (this.failBack) throw Object.assign(new Error(`${this.failBack}: cannot open`), { code: this.failBack });
    this.events.push('back');
  }
}

function watch(t: ExecutionContext, name: string, dir: string, extra: Partial<StorageNodeConfig> = {}) {
  const { logger, lines } = capturingLogger();
  const node: StorageNodeConfig = { name, backend: 'posix', path: dir, prefixes: [], placement: true, requireMount: true, ...extra };
  // A long interval: the test drives the checks.
  const w = new MountWatch(node, logger, { intervalMs: 600_000, timeoutMs: 5000 });
  t.teardown(() => w.stop());
  return { w, lines };
}

test.serial('a node whose path is on the root filesystem is not available (require_mount) until something is mounted there', async (t) => {
  const dir = path.join(base, 'later');
  fs.mkdirSync(dir);
  used.push(dir);
  const { w } = watch(t, 'later', dir);
  await w.start();
  t.is(w.status().state, 'lost');
  t.regex(w.status().reason ?? '', /is on the host's root filesystem, so its network filesystem is not mounted/);
  const err = t.throws(() => w.openable());
  t.is((err as { errno?: number }).errno, E.EIO);
  t.regex(err!.message, /^storage node later \(.*\/later\) is not available: /);
  mountTmpfs(dir);
  await w.check();
  t.is(w.status().state, 'serving');
  t.is(w.status().mountPoint, dir);
  t.is(typeof w.openable(), 'number');
});

test.serial('umount -l: the views drop everything and answer EIO; the directory left below does not count, even with require_mount: false; a new mount there brings them back', async (t) => {
  const dir = path.join(base, 'gone');
  mountTmpfs(dir);
  const { w, lines } = watch(t, 'gone', dir, { requireMount: false });
  await w.start();
  const view = new RecordingView();
  w.track(view, w.openable());
  await w.check();
  t.deepEqual(view.events, [], 'nothing happens while it stays mounted');

  execFileSync('umount', ['-l', dir]);
  await w.check();
  t.deepEqual(view.events, ['gone']);
  t.regex(view.reason, /the filesystem its exports were opened on was unmounted from .*\/gone; its exports answer EIO until a filesystem is mounted at .*\/gone again$/);
  t.is(w.problem?.errno, E.EIO);
  const error = lines.find((l) => l.level === 50);
  t.is(error?.node, 'gone');
  t.is(error?.path, dir);

  // What is left below the mount point is a directory on another filesystem, readable: not enough.
  await w.check();
  t.is(w.status().state, 'lost');
  t.regex(w.status().reason ?? '', /^nothing is mounted at .*\/gone$/);
  t.deepEqual(view.events, ['gone']);

  mountTmpfs(dir);
  await w.check();
  t.is(w.status().state, 'serving');
  t.deepEqual(view.events, ['gone', 'back'], 'the view is opened again on the new filesystem');
  t.truthy(lines.find((l) => /^storage node gone is back/.test(String(l.msg))));
});

test.serial('another filesystem mounted over it is a replacement, taken over in the same check', async (t) => {
  const dir = path.join(base, 'stacked');
  mountTmpfs(dir);
  const { w, lines } = watch(t, 'stacked', dir);
  await w.start();
  const view = new RecordingView();
  w.track(view, w.openable());
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'replacement', dir]);
  await w.check();
  t.deepEqual(view.events, ['gone', 'back']);
  t.is(w.status().state, 'serving');
  t.regex(String(lines.find((l) => l.level === 50)?.reason), /^another filesystem \(tmpfs replacement\) was mounted at .*\/stacked in place of the one its exports were opened on$/);
});

test.serial('a view whose directory is missing on the new filesystem stays on EIO, and is tried again at every check', async (t) => {
  const dir = path.join(base, 'missing');
  mountTmpfs(dir);
  const { w, lines } = watch(t, 'missing', dir);
  await w.start();
  const view = new RecordingView();
  w.track(view, w.openable());
  view.failBack = 'ENOENT';
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', dir]);
  await w.check();
  t.deepEqual(view.events, ['gone', 'gone']);
  t.regex(view.reason, /is mounted again, but this export's directory cannot be opened there: ENOENT/);
  await w.check();
  t.is(lines.filter((l) => l.msg === 'export not reopened after its storage came back').length, 1, 'warned once');
  view.failBack = undefined;
  await w.check();
  t.deepEqual(view.events.slice(-1), ['back']);
});

test.serial('a view opened on a filesystem that went away meanwhile is dropped when it is tracked', async (t) => {
  const dir = path.join(base, 'race');
  mountTmpfs(dir);
  const { w } = watch(t, 'race', dir);
  await w.start();
  const generation = w.openable();
  execFileSync('umount', ['-l', dir]);
  await w.check();
  const view = new RecordingView();
  w.track(view, generation);
  t.deepEqual(view.events, ['gone']);
  mountTmpfs(dir);
  await w.check();
  t.deepEqual(view.events, ['gone', 'back']);
  // Opened on the old filesystem, tracked after the new one serves: dropped, then opened again.
  const late = new RecordingView();
  w.track(late, generation);
  await w.check();
  t.deepEqual(late.events, ['gone', 'back']);
});
