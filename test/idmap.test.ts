// Identity mapping enforced on the host: squashing and uid/gid maps, checked on real files.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { PosixBackend } from '../host-agent/backend/posix.js';
import { IdMap, withIdMap, type IdMapConfig } from '../host-agent/idmap.js';
import { ROOT_ID, type Caller } from '../shared/fs/interface.js';
import { FsError } from '../shared/fs/errors.js';
import { tempDir } from './helpers/sockets.js';

const root: Caller = { uid: 0, gid: 0, pid: 1 };
const alice: Caller = { uid: 1000, gid: 1000, pid: 2 };

async function mapped(config: IdMapConfig) {
  const dir = tempDir('dirvisor-idmap-');
  await fs.chmod(dir, 0o777);
  const backend = await PosixBackend.create(dir);
  return { dir, fs: withIdMap(backend, new IdMap(config)) };
}

test('root squashing: guest root creates files as the anonymous user; others keep their ids', async (t) => {
  const { dir, fs: m } = await mapped({ squash: 'root', anonUid: 65534, anonGid: 65533 });
  await m.create(root, ROOT_ID, Buffer.from('by-root'), 0o644, 0o101);
  await m.create(alice, ROOT_ID, Buffer.from('by-alice'), 0o644, 0o101);
  const r = await fs.stat(path.join(dir, 'by-root'));
  const a = await fs.stat(path.join(dir, 'by-alice'));
  t.deepEqual([r.uid, r.gid], [65534, 65533]);
  t.deepEqual([a.uid, a.gid], [1000, 1000]);
});

test('root squashing takes root\'s powers away: chown of someone else\'s file is refused', async (t) => {
  const { dir, fs: m } = await mapped({ squash: 'root', anonUid: 65534, anonGid: 65534 });
  const e = await m.create(alice, ROOT_ID, Buffer.from('f'), 0o600, 0o101);
  const err = await t.throwsAsync(m.setattr(root, e.entry.nodeId, { uid: 0 }), { instanceOf: FsError });
  t.is(err!.code, 'EPERM');
  // And a 0600 file of alice is not readable by the squashed root.
  await t.throwsAsync(m.open(root, e.entry.nodeId, 0), { instanceOf: FsError, code: 'EACCES' } as never);
  t.is((await fs.stat(path.join(dir, 'f'))).uid, 1000);
});

test('all squashing: every guest user becomes the anonymous user', async (t) => {
  const { dir, fs: m } = await mapped({ squash: 'all', anonUid: 4242, anonGid: 4243 });
  await m.mkdir(alice, ROOT_ID, Buffer.from('d'), 0o755);
  const st = await fs.stat(path.join(dir, 'd'));
  t.deepEqual([st.uid, st.gid], [4242, 4243]);
});

test('uid/gid maps: guest 1000 is host 2000 on the storage, and shows as 1000 in the guest', async (t) => {
  const { dir, fs: m } = await mapped({ squash: 'none', anonUid: 65534, anonGid: 65534, uidMap: [[1000, 2000]], gidMap: [[1000, 3000]] });
  const c = await m.create(alice, ROOT_ID, Buffer.from('mapped'), 0o644, 0o101);
  const st = await fs.stat(path.join(dir, 'mapped'));
  t.deepEqual([st.uid, st.gid], [2000, 3000]);
  t.deepEqual([c.entry.attr.uid, c.entry.attr.gid], [1000, 1000]);
  const attr = await m.getattr(alice, c.entry.nodeId);
  t.deepEqual([attr.uid, attr.gid], [1000, 1000]);
  // chown to a mapped id by root lands as the host id.
  await m.setattr(root, c.entry.nodeId, { uid: 1000, gid: 1000 });
  t.is((await fs.stat(path.join(dir, 'mapped'))).uid, 2000);
});
