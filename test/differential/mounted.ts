// A differential run against a real dirvisor mount: `dirvisor-host serve` of a storage directory,
// `dirvisor-guest mount` of it, and a reference directory beside them on the local file system.
import fs from 'node:fs/promises';
import path from 'node:path';
import { startExport, tempDir, removeTree } from '../helpers/agents.js';
import { runDifferential, type DifferentialOptions, type DifferentialResult } from './runner.js';

export interface MountedRunOptions extends Omit<DifferentialOptions, 'reference' | 'subject' | 'backing' | 'backingAtCheckpoints'> {
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
  const ex = await startExport({ options: o.mountOptions ? o.mountOptions : undefined });
  const reference = await tempDir('dirvisor-diff-ref-');
  try {
    const d = await ex.subdir('diff');
    // Both roots alike (the runner does not compare the roots themselves, but modes are inherited).
    await fs.chmod(reference, (await fs.stat(d.s)).mode & 0o7777);
    const result: MountedRunResult = await runDifferential({
      ...o,
      // With the writeback cache, the guest kernel answers SEEK_DATA/SEEK_HOLE itself as if the
      // file had no holes (the host may not have the latest writes yet; guest-agent/fuse/adapter.ts):
      // allowed by POSIX, but not what the reference says.
      skip: writeback ? [...(o.skip ?? []), 'seek'] : o.skip,
      reference,
      subject: d.m,
      backing: d.s,
      // With the writeback cache the guest may hold written data until close or fsync.
      backingAtCheckpoints: !writeback,
    });
    if (result.failure) result.logTail = await ex.logs();
    if (result.failure && o.logsDir) {
      await fs.mkdir(o.logsDir, { recursive: true });
      result.logs = [];
      for (const [name, file] of [['host.log', ex.host.logFile], ['guest.log', ex.guest.logFile]]) {
        const to = path.join(o.logsDir, name);
        await fs.copyFile(file, to).then(() => result.logs!.push(to), () => undefined);
      }
    }
    return result;
  } finally {
    await ex.cleanup();
    await removeTree(reference);
  }
}
