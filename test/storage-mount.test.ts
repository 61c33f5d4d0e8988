// A storage node's filesystem disappears under the managed host agent (`umount -l` of its mount,
// as when a network mount is torn down or replaced), with real tmpfs mounts as storage nodes, a
// real guest agent and FUSE mounts, and applications in child processes:
//   - within the mount check interval, operations on that node's export fail with EIO, and an open
//     file fails too; nothing lands in the directory left below the mount point (the host's disk);
//   - the other node's export keeps working meanwhile;
//   - a filesystem mounted there again without the export's directory keeps it on EIO; once the
//     directory is there, service resumes by itself: files on the new filesystem are seen, new
//     files written through the guest land on it, and the file held open from before is ESTALE.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { createWorld, token, sh, shOk, q, waitFor, holdOpen } from './helpers/daemons.js';

/** Writes `text` to `file` through the guest mount in a child process; "ok" or the error it printed. */
async function tryWrite(file: string, text: string): Promise<string> {
  const r = await sh(`echo ${q(text)} > ${q(file)}`, { timeoutMs: 30_000 });
  return r.code === 0 ? 'ok' : r.stderr.trim();
}

test.serial('a storage node unmounted under its export (umount -l): EIO within the check interval, the other node unaffected, nothing on the host disk below it, and service resumes once it is mounted again', async (t) => {
  t.timeout(180_000);
  const w = await createWorld('dvm-');
  t.teardown(() => w.cleanup());
  const n1 = await w.addNode('n1', 16);
  const other = await w.addNode('other', 16);
  await w.writeHostConfig({
    storage: {
      placement: { reserve: '1MiB' },
      nodes: [{ name: 'n1', path: n1, prefixes: ['/one'] }, { name: 'other', path: other, prefixes: ['/other'] }],
      mount_check_interval: '1s',
    },
  });
  const tok = token('mnt');
  const a = w.target('a');
  const b = w.target('b');
  await w.writeVm('m.yaml', {
    name: 'm',
    identity: { token: tok },
    shares: [{ dir: '/one/data', target: a, name: 'a', create: true }, { dir: '/other/data', target: b, name: 'b', create: true }],
  });
  await w.startHost();
  await w.startGuest('m', tok);
  await shOk(`echo before > ${q(path.join(a, 'before.txt'))} && mkdir ${q(path.join(a, 'sub'))} && echo s > ${q(path.join(a, 'sub/s.txt'))}`);
  const app = await holdOpen(path.join(a, 'held.txt'), t);
  t.is(await app.write(), 'ok');

  // ---- the mount goes away ----
  await shOk(`umount -l ${q(n1)}`);
  const t0 = Date.now();
  let i = 0;
  let answer = 'ok';
  while (answer === 'ok' && Date.now() - t0 < 20_000) {
    answer = await tryWrite(path.join(a, `probe-${i++}.txt`), 'probe');
    if (answer === 'ok') await new Promise((r) => setTimeout(r, 100));
  }
  const failedAfter = Date.now() - t0;
  t.log(`first failure ${failedAfter} ms after umount -l (check interval 1 s): ${answer}`);
  t.regex(answer, /Input\/output error/, 'EIO reaches the application');
  t.true(failedAfter < 5000, `within a bounded time: ${failedAfter} ms`);
  t.regex((await sh(`cat ${q(path.join(a, 'before.txt'))}`)).stderr, /Input\/output error/, 'an existing file cannot be opened');
  t.regex((await sh(`ls ${q(path.join(a, 'sub'))}`)).stderr, /Input\/output error/, 'nor a directory listed');
  t.is(await app.write(), 'EIO', 'the file held open fails with EIO');
  const hostLog = await w.host!.lines();
  const lostLine = hostLog.find((l) => l.msg?.startsWith('storage node n1 is unavailable: the filesystem its exports were opened on was unmounted'));
  t.truthy(lostLine, 'the host logs the loss');
  t.is(lostLine?.level, 50);
  t.is(lostLine?.node, 'n1');
  t.is(lostLine?.path, n1);
  t.regex(lostLine?.msg ?? '', /its exports answer EIO until a filesystem is mounted at .* again \(remount it there; service then resumes by itself\)$/);

  // The other node's export works, and quickly.
  const o0 = Date.now();
  t.is(await tryWrite(path.join(b, 'during.txt'), 'during'), 'ok');
  t.is(await shOk(`cat ${q(path.join(b, 'during.txt'))}`), 'during\n');
  t.true(Date.now() - o0 < 3000, 'the other export is not held up');
  t.is(await fs.readFile(path.join(other, 'other/data/during.txt'), 'utf8'), 'during\n');

  // Nothing went to the directory below the mount point, on the host's own disk.
  await new Promise((r) => setTimeout(r, 1500));
  t.deepEqual(await fs.readdir(n1), [], 'the directory below the mount point stays empty');

  // ---- mounted again, without the export's directory ----
  await shOk(`mount -t tmpfs -o size=16m,mode=0755 tmpfs ${q(n1)}`);
  await w.host!.waitLog((l) => l.msg === 'export not reopened after its storage came back', 'the host to find the export directory missing', 10_000);
  t.regex(await tryWrite(path.join(a, 'too-early.txt'), 'x'), /Input\/output error/, 'still EIO while the export directory is missing on the new filesystem');

  // ---- the directory is there (as another client of the storage would have it) ----
  await fs.mkdir(path.join(n1, 'one/data/sub'), { recursive: true });
  await fs.writeFile(path.join(n1, 'one/data/fresh.txt'), 'fresh\n');
  const r0 = Date.now();
  await waitFor(async () => (await sh(`cat ${q(path.join(a, 'fresh.txt'))}`)).stdout === 'fresh\n', 'the guest to see the file on the new filesystem', { timeoutMs: 10_000, details: () => w.logs() });
  t.log(`service resumed ${Date.now() - r0} ms after the export directory appeared`);
  t.is(await tryWrite(path.join(a, 'after.txt'), 'after'), 'ok');
  t.is(await fs.readFile(path.join(n1, 'one/data/after.txt'), 'utf8'), 'after\n', 'a file written through the guest is on the new filesystem');
  t.is(await tryWrite(path.join(a, 'sub/deeper.txt'), 'deeper'), 'ok', 'below a directory the guest knew from the old filesystem too');
  t.is(await fs.readFile(path.join(n1, 'one/data/sub/deeper.txt'), 'utf8'), 'deeper\n');
  const listing = (await shOk(`ls ${q(a)}`)).split('\n').filter(Boolean).sort();
  t.deepEqual(listing, ['after.txt', 'fresh.txt', 'sub'], 'the guest lists the new filesystem, nothing cached from the old one');
  t.regex((await sh(`cat ${q(path.join(a, 'before.txt'))}`)).stderr, /No such file or directory/, 'what only the old filesystem had is gone');
  const stale = await app.write();
  t.log(`the file held open from before: ${stale}`);
  t.is(stale, 'ESTALE', 'the file held open on the old filesystem stays failed: its file was on the old filesystem');
  const fresh = await holdOpen(path.join(a, 'held.txt'), t);
  t.is(await fresh.write(), 'ok', 'opening it again works');
  t.is(await fs.readFile(path.join(n1, 'one/data/held.txt'), 'utf8'), 'held\n');
  t.truthy((await w.host!.lines()).find((l) => l.msg?.startsWith('storage node n1 is back')), 'the host logs the return');
  t.is(await shOk(`cat ${q(path.join(b, 'during.txt'))}`), 'during\n', 'the other export still works');
});
