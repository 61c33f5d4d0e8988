// `dirvisor-guest mount URI MOUNTPOINT`: connect to a host agent, mount one export with FUSE, and
// serve it until unmounted (`dirvisor-guest umount`, `fusermount3 -u`) or signalled.
import { HostLink } from './host-link.js';
import { coherentExport } from './coherence/index.js';
import { mountFileSystem, type Mount } from './fuse/adapter.js';
import { parseMountOptions } from './fuse/options.js';
import { checkMountpoint } from './mountpoint.js';
import type { Logger } from '../shared/log.js';

export interface MountCommandOptions {
  uri: string;
  mountpoint: string;
  token?: string;
  options: string[]; // the -o words
  logger: Logger;
  /** Allow vsock CIDs 0-2: a real guest reaches its host at CID 2. */
  allowHostCid?: boolean;
}

export interface RunningMount {
  mount: Mount;
  link: HostLink;
  /** Resolves when the mount has gone away and everything is released. */
  done: Promise<void>;
  stop(): Promise<void>;
}

export async function mountRemote(opts: MountCommandOptions): Promise<RunningMount> {
  let { fuse, agent } = parseMountOptions(opts.options);
  const mountpoint = await checkMountpoint(opts.mountpoint);
  const log = opts.logger.child({ mountpoint });
  const deadlineMs = agent.timeout !== undefined ? agent.timeout * 1000 : undefined;
  const link = new HostLink({ uri: opts.uri, token: opts.token, logger: log, allowHostCid: opts.allowHostCid, requestDeadlineMs: deadlineMs });
  const hello = await link.connect();
  log.info({ host: hello.agent, vm: hello.vmName, version: hello.version }, 'connected to host agent');
  let mount: Mount;
  try {
    const exports = await link.listExports();
    const name = agent.export ?? exports[0]?.name;
    if (!name) throw new Error(`the host agent at ${opts.uri} offers no export to this guest`);
    const info = exports.find((e) => e.name === name);
    if (!info) throw new Error(`the host agent at ${opts.uri} has no export named "${name}" for this guest (it offers: ${exports.map((e) => e.name).join(', ') || 'none'})`);
    // The host's options for the export (its cache mode too) apply unless -o says otherwise.
    fuse = parseMountOptions(opts.options, parseMountOptions(info.mountOptions).fuse).fuse;
    fuse.cache ??= info.cacheMode as 'long' | 'auto' | 'none';
    if (info.readOnly) fuse.readOnly = true;
    const { remote, coherence } = coherentExport(link, name, {
      logger: log,
      retryWindowMs: agent.reconnectWindow !== undefined ? agent.reconnectWindow * 1000 : undefined,
      requestDeadlineMs: deadlineMs,
      readOnly: fuse.readOnly,
      inotify: fuse.inotify,
      writeback: fuse.writeback,
    });
    // Mount it on the host now, so a wrong name or a storage problem is reported before FUSE mounts.
    await remote.getattr({ uid: 0, gid: 0, pid: 0 }, 1);
    // auto_unmount by default: if this process dies (even by SIGKILL) the mount goes with it, rather
    // than staying behind as "Transport endpoint is not connected".
    mount = await mountFileSystem(remote, mountpoint, {
      ...fuse, autoUnmount: fuse.autoUnmount ?? true, fsname: fuse.fsname ?? `dirvisor:${name}`, logger: log, coherence,
    });
    coherence.attach(mount);
    log.info({ export: name }, 'mounted');
  } catch (err) {
    link.close('mount failed');
    throw err;
  }
  const done = mount.closed.then(() => {
    link.close('unmounted');
    log.info('unmounted');
  });
  return {
    mount,
    link,
    done,
    async stop() {
      await mount.unmount();
      await done;
    },
  };
}
