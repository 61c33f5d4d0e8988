// The storage map: which storage node holds a storage directory (such as /projects/alpha), and
// where to create one that exists nowhere yet.
//
//   1. Prefix rules. A node with `prefixes` serves exactly those subtrees; the longest prefix that
//      covers the directory names its node, without probing anything else. A missing directory is
//      created there when asked (the operator chose the node: no placement, no reserve check).
//   2. Probing. Otherwise every node of the general pool (nodes without prefixes) is asked whether
//      it holds the directory (a real directory at every component; symlinks are never followed).
//      One holds it: that one. Several: the first in host.yaml, and the reason says so.
//   3. Placement. Found nowhere and creation asked for: the eligible pool node (placement: true)
//      holding the deepest ancestor of the directory, then the one with the most free space after
//      its reserve; a node at or under its reserve is not eligible. The directory is created with
//      mkdir -p semantics, each new component owned by `owner` with `mode`.
//
// A node that cannot be reached (path missing, not mounted, a call failing or missing its deadline)
// is skipped with a reason. When such a node might hold the directory, the answer depends on it:
// lookups fail with EHOSTUNREACH rather than ENOENT, and creation is refused (a second, empty copy
// elsewhere would split the data) unless storage.placement.skip_unreachable is set.
//
// Every decision is logged and kept (decisions()) for `status`. Resolutions run one at a time, so
// two requests for the same new directory cannot create it on two nodes.
import fsp from 'node:fs/promises';
import type { Logger } from '../../shared/log.js';
import type { HostConfig, StorageConfig, StorageNodeConfig } from '../config.js';
import { StorageError, fromSystemError } from './errors.js';
import { NodeFs, type WalkResult } from './node-io.js';
import { components, hostPathOf, isUnder, storageDirProblem } from './paths.js';
import { describeSpace, pickNode, reserveBytes, type Candidate } from './placement.js';

export interface ResolveOptions {
  /** Create the directory when no node holds it. */
  create?: boolean;
  /** Owner of each directory component created (default: left as created, i.e. root:root). */
  owner?: { uid: number; gid: number };
  /** Mode of each directory component created, exactly (no umask). Default 0o755. */
  mode?: number;
}

/** What was learnt about one node while resolving. */
export interface NodeNote {
  node: string;
  note: string;
}

export interface Resolution {
  dir: string;
  node: string;
  /** The directory on the host: the node's path joined with dir. */
  hostPath: string;
  created: boolean;
  /** One sentence: "prefix /projects of node ceph-a", "found on node nfs-b", "created on nfs-b: ..." */
  reason: string;
  considered: NodeNote[];
}

export interface Decision {
  /** ISO time. */
  at: string;
  dir: string;
  create: boolean;
  outcome: 'found' | 'created' | 'failed';
  node?: string;
  hostPath?: string;
  /** The Resolution's reason, or the error message. */
  reason: string;
  code?: string;
  considered: NodeNote[];
}

export interface NodeStatus {
  name: string;
  backend: string;
  path: string;
  prefixes: string[];
  placement: boolean;
  reachable: boolean;
  /** Why it is not reachable. */
  problem?: string;
  totalBytes?: number;
  freeBytes?: number;
  reserveBytes?: number;
}

type Probe =
  | { nfs: NodeFs; order: number; state: 'found' | 'missing'; walk: WalkResult }
  | { nfs: NodeFs; order: number; state: 'blocked' | 'unreachable'; error: StorageError };

const DEFAULT_MODE = 0o755;
const ID_MAX = 0xfffffffe;

export class StorageMap {
  private readonly nodeFs: NodeFs[];
  private readonly history: Decision[] = [];
  private queue: Promise<unknown> = Promise.resolve();
  private rootDev?: number;
  private unavailable?: (node: string) => string | undefined;

  constructor(private readonly config: StorageConfig, private readonly log: Logger, private readonly historySize = 200) {
    this.nodeFs = config.nodes.map((n) => new NodeFs(n, config.timeoutMs));
  }

  static fromConfig(cfg: HostConfig, log: Logger): StorageMap {
    return new StorageMap(cfg.storage, log.child({ component: 'storage' }));
  }

  get nodes(): readonly StorageNodeConfig[] {
    return this.config.nodes;
  }

  /**
   * Tells the map why a node cannot be used at the moment, as its mount watch knows
   * (mount-watch.ts): its filesystem was unmounted or replaced, or its client was cut off.
   */
  setAvailability(unavailable: (node: string) => string | undefined): void {
    this.unavailable = unavailable;
  }

  /** The node whose longest prefix covers `dir`, if any (no filesystem access). */
  ruleFor(dir: string): { node: StorageNodeConfig; prefix: string } | undefined {
    let best: { node: StorageNodeConfig; prefix: string } | undefined;
    for (const node of this.config.nodes) {
      for (const prefix of node.prefixes) {
        if (isUnder(dir, prefix) && (!best || prefix.length > best.prefix.length)) best = { node, prefix };
      }
    }
    return best;
  }

  /** Finds (or creates) the storage directory `dir`. Throws StorageError with an errno code. */
  async resolve(dir: string, opts: ResolveOptions = {}): Promise<Resolution> {
    const create = !!opts.create;
    try {
      checkRequest(dir, opts);
      const res = await this.serialized(() => this.decide(dir, opts));
      this.remember({ at: new Date().toISOString(), dir, create, outcome: res.created ? 'created' : 'found', node: res.node, hostPath: res.hostPath, reason: res.reason, considered: res.considered });
      this.log.info({ dir, create, node: res.node, hostPath: res.hostPath, created: res.created, reason: res.reason, considered: res.considered }, res.created ? 'storage directory created' : 'storage directory resolved');
      return res;
    } catch (err) {
      const e = err instanceof StorageError ? err : fromSystemError(err, `cannot resolve ${dir}`);
      const considered = (err as { considered?: NodeNote[] }).considered ?? [];
      this.remember({ at: new Date().toISOString(), dir: String(dir), create, outcome: 'failed', reason: e.message, code: e.code, considered });
      this.log.warn({ dir, create, code: e.code, reason: e.message, considered }, 'storage directory not resolved');
      throw e;
    }
  }

  /** The latest decisions, oldest first. */
  decisions(): Decision[] {
    return [...this.history];
  }

  /** Reachability and space of every node (for `status`). */
  async nodeStatus(): Promise<NodeStatus[]> {
    const rootDev = await this.rootDevice();
    return Promise.all(this.nodeFs.map(async (nfs) => {
      const n = nfs.config;
      const base: NodeStatus = { name: n.name, backend: n.backend, path: n.path, prefixes: [...n.prefixes], placement: n.placement, reachable: false };
      try {
        nfs.close(await this.openRoot(nfs, rootDev));
        const cap = await nfs.capacity();
        return { ...base, reachable: true, totalBytes: cap.totalBytes, freeBytes: cap.freeBytes, reserveBytes: reserveBytes(this.reserveOf(n), cap.totalBytes) };
      } catch (err) {
        return { ...base, problem: (err as Error).message };
      }
    }));
  }

  // ---- decisions -------------------------------------------------------------------------------

  private async decide(dir: string, opts: ResolveOptions): Promise<Resolution> {
    const rule = this.ruleFor(dir);
    return rule ? this.byPrefix(dir, rule.node, rule.prefix, opts) : this.byPool(dir, opts);
  }

  private async byPrefix(dir: string, node: StorageNodeConfig, prefix: string, opts: ResolveOptions): Promise<Resolution> {
    const nfs = this.nodeFs[this.config.nodes.indexOf(node)];
    const why = `prefix ${prefix} of node ${node.name}`;
    const names = components(dir);
    const rootFd = await this.openRoot(nfs, await this.rootDevice()).catch((err: StorageError) => {
      throw noted(new StorageError('EHOSTUNREACH', `${dir} belongs to node ${node.name} by its prefix ${prefix}, but the node is unreachable: ${err.message}`), [{ node: node.name, note: `unreachable: ${err.message}` }]);
    });
    const fds = [rootFd];
    try {
      const walk = await nfs.walk(rootFd, names).catch((err) => {
        throw noted(using(dir, err), [{ node: node.name, note: (err as Error).message }]);
      });
      fds.push(walk.fd);
      const result = (created: boolean, reason: string, note: string): Resolution => ({
        dir, node: node.name, hostPath: hostPathOf(node.path, dir), created, reason, considered: [{ node: node.name, note }],
      });
      if (walk.found) return result(false, why, 'holds it (prefix rule)');
      if (!opts.create) {
        throw noted(new StorageError('ENOENT', `${dir} does not exist on node ${node.name}, which serves it by its prefix ${prefix}; creation was not asked for`), [{ node: node.name, note: 'does not hold it' }]);
      }
      const made = await nfs.mkdirs(walk.fd, names, walk.depth, opts.mode ?? DEFAULT_MODE, opts.owner).catch((err) => {
        throw using(dir, err);
      });
      fds.push(made.fd);
      return made.created
        ? result(true, `created on ${node.name}: ${why}`, 'created it (prefix rule)')
        : result(false, `${why} (it appeared while being created)`, 'holds it (prefix rule)');
    } finally {
      for (const fd of fds) nfs.close(fd);
    }
  }

  private async byPool(dir: string, opts: ResolveOptions): Promise<Resolution> {
    const pool = this.nodeFs.map((nfs, order) => ({ nfs, order })).filter((p) => !p.nfs.config.prefixes.length);
    if (!pool.length) {
      const claimed = this.config.nodes.map((n) => `${n.name}: ${n.prefixes.join(', ')}`).join('; ');
      throw new StorageError('ENOENT', this.config.nodes.length
        ? `no storage node serves ${dir}: it is under no node's prefixes (${claimed}), and no node is in the general pool (a node without prefixes)`
        : `no storage node serves ${dir}: host.yaml defines no storage.nodes`);
    }
    const names = components(dir);
    const rootDev = await this.rootDevice();
    const probes = await Promise.all(pool.map((p) => this.probe(p.nfs, p.order, rootDev, names)));
    const considered: NodeNote[] = probes.map((p) => ({ node: p.nfs.name, note: describeProbe(p, names) }));
    const fail = (code: StorageError['code'], message: string) => noted(new StorageError(code, message), considered);
    const opened: Array<{ nfs: NodeFs; fd: number }> = [];
    for (const p of probes) if ('walk' in p) opened.push({ nfs: p.nfs, fd: p.walk.fd });
    try {
      const unreachable = probes.filter((p) => p.state === 'unreachable');
      const unreachableText = unreachable.map((p) => `${p.nfs.name} (${'error' in p ? p.error.message : ''})`).join(', ');
      const found = probes.filter((p) => p.state === 'found');
      if (found.length) {
        const chosen = found[0];
        let reason = found.length === 1 ? `found on node ${chosen.nfs.name}` : `found on nodes ${found.map((p) => p.nfs.name).join(', ')}; using ${chosen.nfs.name}, the first in host.yaml`;
        if (unreachable.length) reason += `; not checked: ${unreachable.map((p) => p.nfs.name).join(', ')} (unreachable)`;
        if (found.length > 1) this.log.warn({ dir, nodes: found.map((p) => p.nfs.name), using: chosen.nfs.name }, 'storage directory exists on several nodes');
        return { dir, node: chosen.nfs.name, hostPath: hostPathOf(chosen.nfs.config.path, dir), created: false, reason, considered };
      }
      const blocked = probes.filter((p) => p.state === 'blocked');
      if (blocked.length) {
        const first = blocked[0] as Extract<Probe, { error: StorageError }>;
        throw fail(first.error.code, `cannot use ${dir}: ${blocked.map((p) => ('error' in p ? p.error.message : '')).join('; ')}`);
      }
      for (const p of unreachable) this.log.warn({ dir, node: p.nfs.name, reason: 'error' in p ? p.error.message : '' }, 'storage node skipped');
      if (!opts.create) {
        if (unreachable.length) {
          throw fail('EHOSTUNREACH', `${dir} was not found on ${listNames(probes.filter((p) => p.state === 'missing'))}, and ${unreachableText} could not be checked`);
        }
        throw fail('ENOENT', `${dir} does not exist on any storage node (looked on ${listNames(probes)}); creation was not asked for`);
      }
      if (unreachable.length && !this.config.placement.skipUnreachable) {
        throw fail('EHOSTUNREACH', `${dir} was not created: no reachable node holds it, but ${unreachableText} could not be checked and may hold it; retry when it is back (or set storage.placement.skip_unreachable: true)`);
      }
      return await this.place(dir, names, probes, considered, opts);
    } finally {
      for (const o of opened) o.nfs.close(o.fd);
    }
  }

  private async place(dir: string, names: string[], probes: Probe[], considered: NodeNote[], opts: ResolveOptions): Promise<Resolution> {
    const missing = probes.filter((p): p is Extract<Probe, { walk: WalkResult }> => p.state === 'missing');
    const spaceNotes = new Map<string, string>();
    const candidates: Array<Candidate & { probe: (typeof missing)[number] }> = [];
    await Promise.all(missing.map(async (p) => {
      const n = p.nfs.config;
      if (!n.placement) return spaceNotes.set(n.name, 'not eligible (placement: false)');
      try {
        const cap = await p.nfs.capacity();
        const c = { name: n.name, order: p.order, ...cap, reserveBytes: reserveBytes(this.reserveOf(n), cap.totalBytes), depth: p.walk.found ? names.length : p.walk.depth, probe: p };
        candidates.push(c);
        spaceNotes.set(n.name, describeSpace(c));
      } catch (err) {
        spaceNotes.set(n.name, `unreachable (${(err as Error).message})`);
        this.log.warn({ dir, node: n.name, reason: (err as Error).message }, 'storage node skipped');
      }
    }));
    for (const note of considered) if (spaceNotes.has(note.node)) note.note += `; ${spaceNotes.get(note.node)}`;
    candidates.sort((a, b) => a.order - b.order);
    const pick = pickNode(candidates);
    if (!pick) {
      const parts = probes.map((p) => `${p.nfs.name} ${spaceNotes.get(p.nfs.name) ?? (p.state === 'unreachable' ? `unreachable (${'error' in p ? p.error.message : ''})` : '')}`);
      throw noted(new StorageError('ENOSPC', `no storage node has room for ${dir}: ${parts.join(', ')}`), considered);
    }
    const chosen = candidates.find((c) => c === pick.chosen)!;
    const { nfs, walk } = chosen.probe;
    const made = await nfs.mkdirs(walk.fd, names, chosen.depth, opts.mode ?? DEFAULT_MODE, opts.owner).catch((err) => {
      throw noted(using(dir, err), considered);
    });
    nfs.close(made.fd);
    const ancestor = `/${names.slice(0, pick.affinityDepth).join('/')}`;
    let reason = pick.affinityDepth > 0
      ? `created on ${nfs.name}: it holds ${ancestor} and has room, ${describeSpace(chosen)}`
      : `created on ${nfs.name}: ${pick.others.length ? 'most free space' : 'the only node with room'}, ${describeSpace(chosen)}`;
    if (pick.others.length) reason += `; also had room: ${pick.others.map((o) => `${o.name} ${describeSpace(o)}`).join(', ')}`;
    const roomy = new Set([nfs.name, ...pick.others.map((o) => o.name)]);
    const notChosen = probes.filter((p) => !roomy.has(p.nfs.name)).map((p) => `${p.nfs.name} ${spaceNotes.get(p.nfs.name) ?? 'unreachable'}`);
    if (notChosen.length) reason += `; not eligible: ${notChosen.join(', ')}`;
    if (!made.created) reason = `found on node ${nfs.name} (another client created it at the same moment)`;
    for (const note of considered) if (note.node === nfs.name) note.note += made.created ? '; created it here' : '';
    return { dir, node: nfs.name, hostPath: hostPathOf(nfs.config.path, dir), created: made.created, reason, considered };
  }

  private async probe(nfs: NodeFs, order: number, rootDev: number, names: string[]): Promise<Probe> {
    let rootFd: number;
    try {
      rootFd = await this.openRoot(nfs, rootDev);
    } catch (err) {
      return { nfs, order, state: 'unreachable', error: err as StorageError };
    }
    try {
      const walk = await nfs.walk(rootFd, names);
      return { nfs, order, state: walk.found ? 'found' : 'missing', walk };
    } catch (err) {
      const e = err instanceof StorageError ? err : fromSystemError(err, `node ${nfs.name}`);
      const state = e.code === 'ELOOP' || e.code === 'ENOTDIR' ? 'blocked' : 'unreachable';
      return { nfs, order, state, error: e };
    } finally {
      nfs.close(rootFd);
    }
  }

  // ---- plumbing --------------------------------------------------------------------------------

  private async openRoot(nfs: NodeFs, rootDev: number): Promise<number> {
    const why = this.unavailable?.(nfs.name);
    if (why) throw new StorageError('EHOSTUNREACH', why);
    return nfs.openRoot(rootDev);
  }

  private reserveOf(n: StorageNodeConfig) {
    return n.reserve ?? this.config.placement.reserve;
  }

  private async rootDevice(): Promise<number> {
    this.rootDev ??= (await fsp.stat('/')).dev;
    return this.rootDev;
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.queue.then(fn);
    this.queue = result.catch(() => undefined);
    return result;
  }

  private remember(d: Decision): void {
    this.history.push(d);
    if (this.history.length > this.historySize) this.history.splice(0, this.history.length - this.historySize);
  }
}

function checkRequest(dir: string, opts: ResolveOptions): void {
  const problem = storageDirProblem(dir);
  if (problem) throw new StorageError('EINVAL', `storage directory ${problem}`);
  if (opts.mode !== undefined && (!Number.isInteger(opts.mode) || opts.mode < 0 || opts.mode > 0o7777)) {
    throw new StorageError('EINVAL', `mode must be from 0 to 0o7777, got ${opts.mode}`);
  }
  if (opts.owner) {
    for (const id of [opts.owner.uid, opts.owner.gid]) {
      if (!Number.isInteger(id) || id < 0 || id > ID_MAX) throw new StorageError('EINVAL', `owner ids must be from 0 to ${ID_MAX}, got ${id}`);
    }
  }
}

/** A failure on a node while resolving dir, as one sentence about dir. */
function using(dir: string, err: unknown): StorageError {
  const e = err instanceof StorageError ? err : fromSystemError(err, 'storage call failed');
  return new StorageError(e.code, `cannot use ${dir}: ${e.message}`);
}

function noted(err: StorageError, considered: NodeNote[]): StorageError {
  return Object.assign(err, { considered });
}

function listNames(probes: Probe[]): string {
  return probes.map((p) => p.nfs.name).join(', ') || 'no node';
}

function describeProbe(p: Probe, names: string[]): string {
  switch (p.state) {
    case 'found':
      return 'holds it';
    case 'missing':
      return p.walk.found || p.walk.depth === 0 ? 'does not hold it' : `does not hold it (holds /${names.slice(0, p.walk.depth).join('/')})`;
    case 'blocked':
      return p.error.message;
    case 'unreachable':
      return `unreachable: ${p.error.message}`;
  }
}
