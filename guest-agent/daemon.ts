// `dirvisor-guest run`: the managed guest agent. Connects to the host agent (retrying with backoff
// until it answers), mounts every export of this VM at its target, follows attach/detach events
// from the host within a second, and keeps its mounts across host-agent restarts.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Logger } from '../shared/log.js';
import { HostLink, type ExportInfo } from './host-link.js';
import { coherentExport } from './coherence/index.js';
import { mountFileSystem, type Mount } from './fuse/adapter.js';
import { parseMountOptions } from './fuse/options.js';
import { checkMountpoint } from './mountpoint.js';
import type { GuestConfig } from './config.js';

interface Active {
  name: string;
  target: string;
  mount: Mount;
}

export class GuestDaemon {
  readonly link: HostLink;
  private readonly active = new Map<string, Active>();
  private reconciling: Promise<void> = Promise.resolve();
  private again = false;
  private timer?: NodeJS.Timeout;
  private stopped = false;

  constructor(private readonly config: GuestConfig, private readonly log: Logger, linkOptions: { allowHostCid?: boolean } = {}) {
    this.link = new HostLink({ uri: config.host, token: config.token, logger: log, allowHostCid: linkOptions.allowHostCid, retryMaxMs: 2000 });
    this.link.on('connected', () => this.schedule());
    // Refused on reconnecting: the VM was deleted or its identity changed. Its exports are gone.
    this.link.on('refused', (reason: string) => {
      if (this.active.size === 0) return;
      this.log.warn({ reason }, 'the host agent no longer accepts this VM; unmounting its exports');
      this.reconciling = this.reconciling.then(() => this.reconcile([]));
    });
    this.link.on('event', (frame: { kind: string }) => {
      if (frame.kind === 'exportsChanged') this.schedule();
    });
  }

  /** Resolves once the first reconciliation after connecting is done (mounts are up). */
  async start(): Promise<void> {
    await this.link.connectWithRetry();
    await this.schedule();
    // A safety net for a missed event: look again now and then.
    this.timer = setInterval(() => void this.schedule(), 30_000);
    this.timer.unref();
  }

  mounts(): Array<{ name: string; target: string }> {
    return [...this.active.values()].map(({ name, target }) => ({ name, target }));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.reconciling;
    await Promise.all([...this.active.values()].map((a) => this.unmount(a)));
    this.link.close();
  }

  /** Runs a reconciliation; calls made while one runs fold into one more run after it. */
  private schedule(): Promise<void> {
    if (this.again) return this.reconciling;
    this.again = true;
    this.reconciling = this.reconciling.then(async () => {
      this.again = false;
      if (this.stopped || !this.link.connected) return;
      try {
        await this.reconcile(await this.link.listExports());
      } catch (err) {
        this.log.error({ error: (err as Error).message }, 'could not bring mounts up to date; will retry');
        setTimeout(() => void this.schedule(), 1000).unref();
      }
    });
    return this.reconciling;
  }

  private desired(exports: ExportInfo[]): Map<string, { info: ExportInfo; target: string; options: string[] }> {
    const out = new Map<string, { info: ExportInfo; target: string; options: string[] }>();
    for (const info of exports) {
      const fixed = this.config.mounts.find((m) => m.export === info.name);
      if (!fixed && !this.config.mountAll) continue;
      const target = fixed?.target ?? info.target;
      if (!target) {
        this.log.warn({ export: info.name }, 'export has no target directory and none is configured in guest.yaml; not mounted');
        continue;
      }
      out.set(info.name, { info, target, options: [...this.config.mountOptions, ...info.mountOptions, ...(fixed?.options ?? [])] });
    }
    return out;
  }

  private async reconcile(exports: ExportInfo[]): Promise<void> {
    const want = this.desired(exports);
    for (const a of [...this.active.values()]) {
      const w = want.get(a.name);
      if (!w || w.target !== a.target) await this.unmount(a);
    }
    for (const [name, w] of want) {
      if (this.active.has(name)) continue;
      try {
        await this.mount(name, w.info, w.target, w.options);
      } catch (err) {
        this.log.error({ export: name, target: w.target, error: (err as Error).message }, 'mount failed');
      }
    }
  }

  private async mount(name: string, info: ExportInfo, target: string, options: string[]): Promise<void> {
    const mountpoint = await checkMountpoint(target, { create: true });
    const { fuse, agent } = parseMountOptions(options);
    if (info.readOnly) fuse.readOnly = true;
    fuse.cache ??= info.cacheMode as 'long' | 'auto' | 'none';
    const log = this.log.child({ export: name, target: mountpoint });
    const { remote, coherence } = coherentExport(this.link, name, {
      logger: log,
      retryWindowMs: agent.reconnectWindow !== undefined ? agent.reconnectWindow * 1000 : this.config.reconnectWindowMs,
      requestDeadlineMs: agent.timeout !== undefined ? agent.timeout * 1000 : undefined,
      readOnly: fuse.readOnly,
      inotify: fuse.inotify,
      writeback: fuse.writeback,
    });
    await remote.getattr({ uid: 0, gid: 0, pid: 0 }, 1);
    // auto_unmount unless the options say no_auto_unmount: if the agent dies (even by SIGKILL), its
    // mounts go with it instead of staying as "Transport endpoint is not connected"; systemd then
    // restarts it and it mounts again.
    const mount = await mountFileSystem(remote, mountpoint, {
      ...fuse, autoUnmount: fuse.autoUnmount ?? true, fsname: `dirvisor:${name}`, logger: log, coherence,
    });
    coherence.attach(mount);
    const active: Active = { name, target: mountpoint, mount };
    this.active.set(name, active);
    mount.closed.then(() => {
      if (this.active.get(name) === active) this.active.delete(name);
    });
    log.info('export mounted');
  }

  private async unmount(a: Active): Promise<void> {
    this.active.delete(a.name);
    const log = this.log.child({ export: a.name, target: a.target });
    try {
      await a.mount.unmount();
      log.info('export unmounted');
    } catch (err) {
      // Busy (a shell's cwd, an open file): detach it now, it goes away when the last user leaves.
      log.warn({ error: (err as Error).message }, 'mount point is busy; unmounting lazily (it disappears when the last process using it lets go)');
      await a.mount.unmount({ lazy: true }).catch(async () => {
        await promisify(execFile)('fusermount3', ['-uz', a.target]).catch((e) => log.error({ error: (e as Error).message }, 'lazy unmount failed'));
      });
    }
  }
}
