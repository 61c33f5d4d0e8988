// The host's VMs: definitions from vms.d and from the control API, where each share resolved on
// the storage map, and which VM a connection belongs to. Definitions made through the API (and
// every resolution) are saved to the state file, so a restarted host agent serves the same exports.
import { EventEmitter } from 'node:events';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../../shared/log.js';
import type { FileSystem } from '../../shared/fs/interface.js';
import { FsError, E } from '../../shared/fs/errors.js';
import { tokenMatches } from '../../shared/rpc/hello.js';
import { describePeer, type PeerIdentity } from '../../shared/transport/index.js';
import type { Authorizer, ExportDef, VmView } from '../server.js';
import { SpecError, checkUniqueShares, type ShareSpec, type VmSpec, type CacheMode } from './spec.js';

export interface Resolution {
  node: string;
  hostPath: string;
  created: boolean;
  reason: string;
}

export interface ShareState {
  share: ShareSpec;
  resolution?: Resolution;
  error?: string;
}

export interface VmRecord {
  spec: VmSpec;
  /** Bumped when the VM is (re)created or its identity changes; see VmView.generation. */
  generation: number;
  /** Shares attached through the API on top of the definition (kept when vms.d reloads it). */
  attached: ShareSpec[];
  shares: ShareState[];
}

export interface RegistryOptions {
  stateFile: string;
  logger: Logger;
  resolve(share: ShareSpec): Promise<Resolution>;
  /** Opens a view of a resolved share; `node` names the storage node that holds it. */
  openExport(hostPath: string, share: ShareSpec, node: string): Promise<FileSystem>;
  defaultCache: CacheMode;
}

interface SavedState {
  version: 1;
  vms: Array<{ spec: VmSpec; attached: ShareSpec[]; resolutions: Record<string, Resolution>; errors?: Record<string, string> }>;
}

export class VmRegistry extends EventEmitter implements Authorizer {
  private readonly vms = new Map<string, VmRecord>();
  private saving: Promise<void> = Promise.resolve();
  private nextGeneration = 1;

  constructor(private readonly opts: RegistryOptions) {
    super();
  }

  list(): VmRecord[] {
    return [...this.vms.values()].sort((a, b) => a.spec.name.localeCompare(b.spec.name));
  }

  get(name: string): VmRecord | undefined {
    return this.vms.get(name);
  }

  /** Restores what the last run saved (API-defined VMs, attached shares, resolutions). */
  async load(): Promise<void> {
    const text = await fs.readFile(this.opts.stateFile, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null;
      throw new Error(`cannot read state file ${this.opts.stateFile}: ${err.message}`);
    });
    if (!text) return;
    let saved: SavedState;
    try {
      saved = JSON.parse(text) as SavedState;
    } catch (err) {
      // Keep the damaged file for inspection rather than overwrite what an operator may need.
      const kept = `${this.opts.stateFile}.corrupt-${Date.now()}`;
      await fs.rename(this.opts.stateFile, kept);
      this.opts.logger.error({ kept, err: (err as Error).message }, 'state file is not valid JSON; moved aside, starting empty');
      return;
    }
    for (const v of saved.vms ?? []) {
      const record: VmRecord = { spec: v.spec, generation: this.nextGeneration++, attached: v.attached ?? [], shares: [] };
      record.shares = allShares(record).map((share) => ({ share, resolution: v.resolutions?.[share.name], error: v.errors?.[share.name] }));
      this.vms.set(v.spec.name, record);
    }
    this.opts.logger.info({ vms: this.vms.size, file: this.opts.stateFile }, 'state restored');
    // Shares that could not be resolved last time (storage node down, directory missing) get
    // another chance now.
    for (const record of this.vms.values()) {
      if (!record.shares.some((s) => !s.resolution)) continue;
      record.shares = await Promise.all(record.shares.map((s) => (s.resolution ? s : this.resolveShare(record.spec.name, s.share))));
    }
  }

  /** Creates or replaces a VM definition, resolving its shares. */
  async define(spec: VmSpec): Promise<VmRecord> {
    const existing = this.vms.get(spec.name);
    if (existing && existing.spec.source !== spec.source && spec.source === 'api') {
      throw new FsError(E.EEXIST, `VM ${spec.name} is already defined (by ${existing.spec.source})`);
    }
    this.checkIdentityFree(spec);
    const attached = existing?.attached.filter((a) => !spec.shares.some((s) => s.target === a.target || s.name === a.name)) ?? [];
    const sameIdentity = existing && JSON.stringify(existing.spec.identity) === JSON.stringify(spec.identity);
    const record: VmRecord = { spec, generation: sameIdentity ? existing.generation : this.nextGeneration++, attached, shares: [] };
    record.shares = await Promise.all(allShares(record).map((share) => this.resolveShare(spec.name, share, existing)));
    this.vms.set(spec.name, record);
    this.opts.logger.info({ vm: spec.name, source: spec.source, shares: record.shares.length }, existing ? 'VM redefined' : 'VM defined');
    await this.changed(spec.name);
    return record;
  }

  async remove(name: string, source?: string): Promise<void> {
    const record = this.vms.get(name);
    if (!record) throw new FsError(E.ENOENT, `no VM named ${name}`);
    if (source && record.spec.source !== source) {
      throw new FsError(E.EPERM, `VM ${name} is defined in ${record.spec.source}; remove it there`);
    }
    this.vms.delete(name);
    this.opts.logger.info({ vm: name }, 'VM deleted');
    await this.changed(name);
  }

  async attach(vmName: string, share: ShareSpec): Promise<ShareState> {
    const record = this.vms.get(vmName);
    if (!record) throw new FsError(E.ENOENT, `no VM named ${vmName}`);
    try {
      checkUniqueShares([...allShares(record), share], `VM ${vmName}`);
    } catch (err) {
      throw new FsError(E.EEXIST, (err as Error).message);
    }
    const state = await this.resolveShare(vmName, share);
    if (state.error) throw new FsError(E.ENOENT, state.error);
    record.attached.push(share);
    record.shares.push(state);
    this.opts.logger.info({ vm: vmName, share: share.name, dir: share.dir, target: share.target }, 'share attached');
    await this.changed(vmName);
    return state;
  }

  /** Detaches by target, export name or storage directory. */
  async detach(vmName: string, what: string): Promise<ShareSpec> {
    const record = this.vms.get(vmName);
    if (!record) throw new FsError(E.ENOENT, `no VM named ${vmName}`);
    const share = allShares(record).find((s) => s.target === what || s.name === what || s.dir === what);
    if (!share) throw new FsError(E.ENOENT, `VM ${vmName} has no share "${what}" (give its target, name or directory)`);
    if (!record.attached.includes(share)) {
      if (record.spec.source !== 'api') throw new FsError(E.EPERM, `share ${share.name} of VM ${vmName} is defined in ${record.spec.source}; remove it there`);
      record.spec = { ...record.spec, shares: record.spec.shares.filter((s) => s !== share) };
    }
    record.attached = record.attached.filter((s) => s !== share);
    record.shares = record.shares.filter((s) => s.share !== share);
    this.opts.logger.info({ vm: vmName, share: share.name }, 'share detached');
    await this.changed(vmName);
    return share;
  }

  // ---- Authorizer ----

  identify(peer: PeerIdentity, token: string): VmView {
    const record = this.findByPeer(peer, token);
    if (!record) throw new FsError(E.EACCES, `no VM is defined for ${describePeer(peer)}${peer.transport === 'unix' || peer.transport === 'tcp' ? ' with that token' : ''}`);
    const name = record.spec.name;
    return { vmName: name, generation: record.generation, exports: () => this.exportsOf(name) };
  }

  private findByPeer(peer: PeerIdentity, token: string): VmRecord | undefined {
    for (const r of this.vms.values()) {
      const id = r.spec.identity;
      if (peer.transport === 'vsock' && id.cid === peer.cid) return r;
      if (peer.transport === 'hvsock' && id.hvsock === peer.socketPath) return r;
      if ((peer.transport === 'unix' || peer.transport === 'tcp') && id.token && tokenMatches(token, id.token)) return r;
    }
    return undefined;
  }

  exportsOf(vmName: string): ExportDef[] {
    const record = this.vms.get(vmName);
    if (!record) return [];
    return record.shares
      .filter((s) => s.resolution)
      .map(({ share, resolution }) => ({
        name: share.name,
        target: share.target,
        readOnly: share.readOnly,
        cacheMode: share.cache ?? this.opts.defaultCache,
        mountOptions: [],
        open: () => this.opts.openExport(resolution!.hostPath, share, resolution!.node),
      }));
  }

  // ---- internals ----

  private checkIdentityFree(spec: VmSpec): void {
    for (const r of this.vms.values()) {
      if (r.spec.name === spec.name) continue;
      const a = r.spec.identity;
      const b = spec.identity;
      const clash = (a.cid !== undefined && a.cid === b.cid) || (a.hvsock !== undefined && a.hvsock === b.hvsock) || (a.token !== undefined && a.token === b.token);
      if (clash) throw new SpecError(spec.source, `identity is already used by VM ${r.spec.name}`);
    }
  }

  private async resolveShare(vmName: string, share: ShareSpec, previous?: VmRecord): Promise<ShareState> {
    const old = previous?.shares.find((s) => s.share.name === share.name && s.share.dir === share.dir && s.resolution);
    if (old?.resolution && (await isDirectory(old.resolution.hostPath))) return { share, resolution: old.resolution };
    try {
      const resolution = await this.opts.resolve(share);
      this.opts.logger.info({ vm: vmName, share: share.name, dir: share.dir, node: resolution.node, hostPath: resolution.hostPath, reason: resolution.reason }, 'share resolved');
      return { share, resolution };
    } catch (err) {
      const error = (err as Error).message;
      this.opts.logger.error({ vm: vmName, share: share.name, dir: share.dir, error }, 'share could not be resolved');
      return { share, error };
    }
  }

  private async changed(vmName: string): Promise<void> {
    await this.save();
    this.emit('changed', vmName);
  }

  /** Atomic save: write a temporary file, fsync it, rename over the old one. */
  private save(): Promise<void> {
    const run = async () => {
      const state: SavedState = {
        version: 1,
        vms: [...this.vms.values()].map((r) => ({
          spec: r.spec,
          attached: r.attached,
          resolutions: Object.fromEntries(r.shares.filter((s) => s.resolution).map((s) => [s.share.name, s.resolution!])),
          errors: Object.fromEntries(r.shares.filter((s) => s.error).map((s) => [s.share.name, s.error!])),
        })),
      };
      await fs.mkdir(path.dirname(this.opts.stateFile), { recursive: true, mode: 0o700 });
      const tmp = `${this.opts.stateFile}.tmp`;
      const fh = await fs.open(tmp, 'w', 0o600);
      try {
        await fh.writeFile(JSON.stringify(state, null, 2));
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fs.rename(tmp, this.opts.stateFile);
    };
    this.saving = this.saving.then(run, run);
    return this.saving;
  }
}

function allShares(r: VmRecord): ShareSpec[] {
  return [...r.spec.shares, ...r.attached];
}

async function isDirectory(p: string): Promise<boolean> {
  const st = await fs.lstat(p).catch(() => null);
  return !!st?.isDirectory();
}
