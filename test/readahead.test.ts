// The guest agent widens the kernel's read-ahead window on its mounts (sequential reads go 3-4x
// faster; see guest-agent/fuse/readahead.ts), and max_readahead= sets it. What a user would check:
// /sys/class/bdi/<the mount's device>/read_ahead_kb, and that a big file still reads back intact.
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fuseDeviceOf } from '../guest-agent/fuse/readahead.js';
import { mountGuest, removeTree, startHost, tempDir, waitFor } from './helpers/agents.js';

async function served(t: import('ava').ExecutionContext, options?: string) {
  const work = await tempDir('dirvisor-readahead-');
  const storage = path.join(work, 'storage');
  await fs.mkdir(storage);
  const host = await startHost({ dir: storage, workDir: work });
  const guest = await mountGuest(host.uri, { token: host.token, mnt: path.join(work, 'mnt'), options });
  t.teardown(async () => {
    await guest.unmount();
    await host.stop();
    await removeTree(work);
  });
  const dev = await fuseDeviceOf(guest.mnt);
  if (!dev) throw new Error(`${guest.mnt} is not in /proc/self/mountinfo`);
  const readahead = () => fs.readFile(`/sys/class/bdi/${dev}/read_ahead_kb`, 'utf8').then((s) => Number(s.trim()));
  return { storage, mnt: guest.mnt, readahead };
}

test('a mount reads ahead 4 MiB by default, and a 40 MiB file reads back intact', async (t) => {
  const { storage, mnt, readahead } = await served(t);
  await waitFor(async () => (await readahead()) === 4096, 'read_ahead_kb to become 4096', {
    details: async () => `read_ahead_kb is ${await readahead()}`,
  });
  const data = randomBytes(40 << 20);
  await fs.writeFile(path.join(storage, 'big'), data);
  const back = await fs.readFile(path.join(mnt, 'big'));
  t.is(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(data).digest('hex'));
});

test('max_readahead= sets the window (in bytes)', async (t) => {
  const { readahead } = await served(t, 'max_readahead=262144');
  await waitFor(async () => (await readahead()) === 256, 'read_ahead_kb to become 256', {
    details: async () => `read_ahead_kb is ${await readahead()}`,
  });
  t.is(await readahead(), 256);
});
