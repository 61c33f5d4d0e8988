// A differential run against a real dirvisor mount: `dirvisor-host serve` of a storage directory,
// `dirvisor-guest mount` of it, and a reference directory beside them on the local file system.
// Optionally the host agent is SIGKILLed and started again on the same URI every so often.
import fs from 'node:fs/promises';
import path from 'node:path';
import { mountGuest, tempDir, removeTree, type GuestMount } from '../helpers/agents.js';
import { RestartableHost } from './restartable-host.js';
import { runDifferential, type DifferentialOptions, type DifferentialResult } from './runner.js';

export interface MountedRunOptions extends Omit<DifferentialOptions, 'reference' | 'subject' | 'backing' | 'backingAtCheckpoints' | 'interrupt'> {
  /** -o words of the guest mount ('' for the defaults). */
  mountOptions: string;
  /** Where to copy the agents' logs when the run fails. */
  logsDir?: string;
}

export interface MountedRunResult extends DifferentialResult {
  /** A failed run's agent logs: where they were copied, and their last lines. */
  logs?: string[];
  logTail?: string;
}

export async function runAgainstMount(o: MountedRunOptions): Promise<MountedRunResult> {
  const writeback = o.mountOptions.split(',').some((w) => w === 'writeback' || w === 'writeback_cache');
  const work = await tempDir('dirvisor-diff-');
  const storage = path.join(work, 'storage');
  const reference = path.join(work, 'reference');
  let host: RestartableHost | undefined;
  let guest: GuestMount | undefined;
  try {
    for (const d of [storage, path.join(storage, 'diff'), reference, path.join(work, 'guest')]) await fs.mkdir(d, { mode: 0o755 });
    const h = (host = await RestartableHost.start(storage, work));
    guest = await mountGuest(h.uri, { token: h.token, options: o.mountOptions || undefined, mnt: path.join(work, 'guest', 'mnt') });
    const result: MountedRunResult = await runDifferential({
      ...o,
      reference,
      subject: path.join(guest.mnt, 'diff'),
      backing: path.join(storage, 'diff'),
      // With the writeback cache the guest may hold written data until close or fsync.
      backingAtCheckpoints: !writeback,
      interrupt: async () => {
        await h.restart();
        return `host agent SIGKILLed and started again (restart ${h.restarts})`;
      },
    });
    if (result.failure) {
      const g = guest;
      result.logTail = `--- host log (${h.logFile}) ---\n${await h.log()}\n--- guest log (${g.logFile}) ---\n${await g.log()}`;
      if (o.logsDir) {
        await fs.mkdir(o.logsDir, { recursive: true });
        result.logs = [];
        for (const [name, file] of [['host.log', h.logFile], ['guest.log', g.logFile]]) {
          const to = path.join(o.logsDir, name);
          await fs.copyFile(file, to).then(() => result.logs!.push(to), () => undefined);
        }
      }
    }
    return result;
  } finally {
    await guest?.unmount();
    await host?.stop();
    await removeTree(work);
  }
}
