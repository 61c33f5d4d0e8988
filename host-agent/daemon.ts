// `dirvisor-host run`: the managed host agent (systemd service dirvisor-host). Wires the pieces:
// configuration -> storage map -> VM registry (vms.d + control API + saved state) -> protocol server.
import path from 'node:path';
import type { Logger } from '../shared/log.js';
import { loadConfig, type HostConfig } from './config.js';
import { StorageMap } from './storage/index.js';
import { VmRegistry } from './vms/registry.js';
import { VmsDirWatcher } from './vms/watch.js';
import { HostServer } from './server.js';
import { listenControl } from './control/server.js';
import { NodeGuard, GuardedFs, guardedIdentity } from './storage/guard.js';
import { MountWatch } from './storage/mount-watch.js';
import { PosixBackend } from './backend/posix.js';
import { IdMap, withIdMap } from './idmap.js';
import { CoherenceHub } from './coherence/hub.js';
import { withIdentity } from './coherence/identity.js';
import { sdNotify, startWatchdog } from '../native/systemd.js';

export interface HostDaemon {
  config: HostConfig;
  registry: VmRegistry;
  server: HostServer;
  storage: StorageMap;
  stop(): Promise<void>;
}

export async function startHostDaemon(configFile: string, logger: Logger, opts: { missingOk?: boolean } = {}): Promise<HostDaemon> {
  const config = await loadConfig(configFile, { missingOk: opts.missingOk });
  logger.info({ config: config.source, nodes: config.storage.nodes.map((n) => n.name), listen: config.listen }, 'configuration loaded');
  const storage = new StorageMap(config.storage, logger.child({ component: 'storage' }));
  // One mount watch per storage node: notices its filesystem being unmounted or replaced, and
  // brings its exports back when it is mounted again (storage/mount-watch.ts).
  const mounts = new Map(config.storage.nodes.map((n) => [n.name, new MountWatch(n, logger.child({ component: 'storage' }), {
    intervalMs: config.storage.mountCheckIntervalMs,
    timeoutMs: config.storage.timeoutMs,
  })]));
  await Promise.all([...mounts.values()].map((m) => m.start()));
  storage.setAvailability((node) => mounts.get(node)?.problem?.message);
  // One guard per storage node, shared by every export view on it (storage/guard.ts).
  const guards = new Map<string, NodeGuard>();
  const guardOf = (node: string): NodeGuard => {
    let g = guards.get(node);
    if (!g) {
      g = new NodeGuard(node, { maxCalls: config.storage.maxCallsPerNode, timeoutMs: config.storage.ioTimeoutMs });
      g.mount = mounts.get(node);
      guards.set(node, g);
    }
    return g;
  };
  const registry = new VmRegistry({
    stateFile: path.join(config.stateDir, 'state.json'),
    logger: logger.child({ component: 'vms' }),
    defaultCache: config.defaults.cache,
    resolve: (share) => storage.resolve(share.dir, { create: share.create, owner: share.owner, mode: share.mode }),
    openExport: async (hostPath, share, node) => {
      // Never on whatever lies below the mount point of a node whose filesystem is gone.
      const mount = mounts.get(node);
      const generation = mount?.openable();
      const backend = await PosixBackend.create(hostPath, { readOnly: share.readOnly || config.defaults.readOnly, logger, maxHandles: config.limits.maxHandles });
      if (mount) mount.track(backend, generation!);
      const d = config.defaults;
      const guard = guardOf(node);
      return withIdentity(withIdMap(new GuardedFs(backend, guard), new IdMap({
        squash: share.squash ?? d.squash,
        anonUid: share.anonUid ?? d.anonUid,
        anonGid: share.anonGid ?? d.anonGid,
        uidMap: share.uidMap,
        gidMap: share.gidMap,
      })), guardedIdentity(backend, guard));
    },
  });
  await registry.load();
  const server = new HostServer(
    registry,
    logger,
    { maxInFlight: config.limits.maxInFlight, vm: { maxFds: config.limits.maxFds, maxInFlight: config.limits.maxVmInFlight } },
    new CoherenceHub({ logger }),
  );
  registry.on('changed', (vm: string) => server.exportsChanged(vm, registry.exportsOf(vm)));
  const watcher = new VmsDirWatcher(config.vmsDir, registry, logger.child({ component: 'vms.d' }));
  await watcher.start();
  for (const uri of config.listen) await server.listen(uri);
  const control = await listenControl(config.controlSocket, { registry, server, storage, logger: logger.child({ component: 'control' }), startedAt: new Date() });
  const watchdog = startWatchdog();
  sdNotify('READY=1');
  logger.info({ vms: registry.list().length }, 'host agent ready');
  return {
    config,
    registry,
    server,
    storage,
    async stop() {
      sdNotify('STOPPING=1');
      watchdog.stop();
      await watcher.stop();
      await control.close();
      await server.close();
      for (const m of mounts.values()) m.stop();
    },
  };
}
