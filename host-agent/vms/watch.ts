// Keeps the registry in step with /etc/dirvisor/vms.d: each *.yaml file defines one VM. Adding,
// changing or removing a file defines, redefines or deletes that VM, live.
import path from 'node:path';
import fs from 'node:fs/promises';
import { watch, type FSWatcher } from 'chokidar';
import YAML from 'yaml';
import type { Logger } from '../../shared/log.js';
import type { VmRegistry } from './registry.js';
import { parseVmSpec } from './spec.js';

export class VmsDirWatcher {
  private watcher?: FSWatcher;
  /** File -> VM name it defined, so removing (or renaming inside) a file removes the right VM. */
  private readonly defined = new Map<string, string>();
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly dir: string, private readonly registry: VmRegistry, private readonly log: Logger) {}

  /** Loads every file once, then watches. Resolves when the initial scan is reconciled. */
  async start(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true });
    const files = (await fs.readdir(this.dir)).filter(isSpecFile).sort();
    for (const f of files) await this.reconcile(path.join(this.dir, f));
    await this.dropVanished(new Set(files.map((f) => path.join(this.dir, f))));
    this.watcher = watch(this.dir, { ignoreInitial: true, depth: 0, awaitWriteFinish: { stabilityThreshold: 100, pollInterval: 25 } });
    const enqueue = (file: string) => {
      if (!isSpecFile(path.basename(file))) return;
      this.queue = this.queue.then(() => this.reconcile(file));
    };
    this.watcher.on('add', enqueue).on('change', enqueue).on('unlink', enqueue);
    await new Promise<void>((resolve) => this.watcher!.once('ready', () => resolve()));
    this.log.info({ dir: this.dir, vms: this.defined.size }, 'watching VM definitions');
  }

  async stop(): Promise<void> {
    await this.watcher?.close();
    await this.queue;
  }

  /** Waits for changes already seen to be applied (tests use it). */
  settled(): Promise<void> {
    return this.queue;
  }

  private async reconcile(file: string): Promise<void> {
    const source = `vms.d/${path.basename(file)}`;
    const previous = this.defined.get(file);
    const text = await fs.readFile(file, 'utf8').catch(() => null);
    try {
      if (text === null) {
        if (previous) {
          this.defined.delete(file);
          await this.registry.remove(previous, source);
        }
        return;
      }
      const spec = parseVmSpec(YAML.parse(text), source);
      if (previous && previous !== spec.name) await this.registry.remove(previous, source).catch(() => {});
      await this.registry.define(spec);
      this.defined.set(file, spec.name);
    } catch (err) {
      // A broken file leaves the VM as it was: an operator's typo must not cut a running guest off.
      this.log.error({ file, error: (err as Error).message }, 'VM definition rejected; keeping the previous one');
    }
  }

  /** VMs the state file remembers from vms.d files that no longer exist. */
  private async dropVanished(present: Set<string>): Promise<void> {
    for (const r of this.registry.list()) {
      if (!r.spec.source.startsWith('vms.d/')) continue;
      const file = path.join(this.dir, r.spec.source.slice('vms.d/'.length));
      if (!present.has(file)) await this.registry.remove(r.spec.name).catch(() => {});
    }
  }
}

function isSpecFile(name: string): boolean {
  return /\.ya?ml$/.test(name) && !name.startsWith('.');
}
