// The host agent's configuration: /etc/dirvisor/host.yaml (path overridable). Loaded once at start
// and validated as a whole; every problem names the file, the line, the key path and what is wrong:
//   /etc/dirvisor/host.yaml:14: storage.nodes[1].prefixes[0]: must be an absolute path, got "projects"
// Everything is optional; packaging/config/host.yaml documents each key with its default.
import fs from 'node:fs/promises';
import { parseDocument, LineCounter, isMap, isSeq, isPair, isScalar, type Document, type Node as YamlNode } from 'yaml';
import { parseAddress } from '../shared/transport/uri.js';
import type { CacheMode } from './server.js';
import { storageDirProblem, hostPathProblem, isUnder } from './storage/paths.js';
import { parseBytes, parseDuration } from './storage/units.js';

export const DEFAULT_CONFIG_PATH = '/etc/dirvisor/host.yaml';

/** Space to keep free on a storage node: a share of its size, or a byte count. */
export type Reserve = { percent: number } | { bytes: number };
export type SquashMode = 'none' | 'root' | 'all';

export interface StorageNodeConfig {
  /** Unique, used in logs, `status` and errors. */
  name: string;
  /** Only 'posix' for now: a directory tree on a host mount of NFS, CephFS, GlusterFS, Lustre... */
  backend: 'posix';
  /** Host path of the node's root (a mount point or a directory on one); absolute, normalized. */
  path: string;
  /**
   * Storage directories this node serves. Empty: the node is in the general pool (probed for
   * existing directories, eligible for new ones). Non-empty: it serves only these subtrees, and a
   * directory under one of them resolves to this node without probing (longest prefix wins).
   */
  prefixes: string[];
  /** Eligible for new directories that no prefix claims. */
  placement: boolean;
  /** Overrides storage.placement.reserve for this node. */
  reserve?: Reserve;
  /**
   * Refuse the node when its path is on the same filesystem as "/" (the network filesystem is not
   * mounted and the path is just an empty directory on the host's disk).
   */
  requireMount: boolean;
}

export interface StorageConfig {
  nodes: StorageNodeConfig[];
  placement: {
    reserve: Reserve;
    /** Create a directory even when some pool node could not be checked (it might hold it). */
    skipUnreachable: boolean;
  };
  /** Deadline of one filesystem call on a node (stat, statfs, mkdir...), in ms. */
  timeoutMs: number;
  /** Deadline of one file operation a guest makes on a node (storage/guard.ts), in ms. */
  ioTimeoutMs: number;
  /** File operations on one node at once, all VMs together (a frozen node holds at most these threads). */
  maxCallsPerNode: number;
  /** How often each node's mount is checked for being unmounted or replaced (storage/mount-watch.ts), in ms. */
  mountCheckIntervalMs: number;
}

export interface ShareDefaults {
  readOnly: boolean;
  squash: SquashMode;
  anonUid: number;
  anonGid: number;
  cache: CacheMode;
  /** Extra FUSE mount options for the guest (e.g. allow_other). */
  mountOptions: string[];
}

export interface VmLimits {
  /** Requests served at once per connection. */
  maxInFlight: number;
  /** Open handles per export view (connection). */
  maxHandles: number;
  /** Host fds (known nodes + open handles) per VM, all its connections together. */
  maxFds: number;
  /** Requests served at once per VM, all its connections together. */
  maxVmInFlight: number;
}

export interface HostConfig {
  /** The file it came from (or a note that defaults were used). */
  source: string;
  listen: string[];
  controlSocket: string;
  stateDir: string;
  vmsDir: string;
  storage: StorageConfig;
  defaults: ShareDefaults;
  limits: VmLimits;
}

export interface ConfigProblem {
  /** Key path such as "storage.nodes[1].prefixes[0]" ('' for the file as a whole). */
  path: string;
  message: string;
  /** 1-based line in the file, when known. */
  line?: number;
}

export class ConfigError extends Error {
  constructor(readonly file: string, readonly problems: ConfigProblem[]) {
    super(problems.map((p) => `${file}${p.line ? `:${p.line}` : ''}: ${p.path ? `${p.path}: ` : ''}${p.message}`).join('\n'));
    this.name = 'ConfigError';
  }
}

const CACHE_MODES: readonly CacheMode[] = ['long', 'auto', 'none'];
const SQUASH_MODES: readonly SquashMode[] = ['none', 'root', 'all'];
const ID_MAX = 0xfffffffe; // (uid_t)-1 means "no change" to the kernel
const NODE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export function defaultConfig(source = '(defaults)'): HostConfig {
  return {
    source,
    listen: ['vsock://any:5252'],
    controlSocket: '/run/dirvisor/control.sock',
    stateDir: '/var/lib/dirvisor',
    vmsDir: '/etc/dirvisor/vms.d',
    storage: { nodes: [], placement: { reserve: { percent: 10 }, skipUnreachable: false }, timeoutMs: 5000, ioTimeoutMs: 30_000, maxCallsPerNode: 8, mountCheckIntervalMs: 1000 },
    defaults: { readOnly: false, squash: 'none', anonUid: 65534, anonGid: 65534, cache: 'long', mountOptions: [] },
    limits: { maxInFlight: 256, maxHandles: 4096, maxFds: 16384, maxVmInFlight: 512 },
  };
}

/**
 * Reads and validates a host.yaml. A missing file is an error unless `missingOk` (then: defaults).
 * Throws ConfigError listing every problem found.
 */
export async function loadConfig(file = DEFAULT_CONFIG_PATH, opts: { missingOk?: boolean } = {}): Promise<HostConfig> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT' && opts.missingOk) return defaultConfig(`${file} (missing: defaults)`);
    throw new ConfigError(file, [{ path: '', message: `cannot read the configuration: ${e.message}` }]);
  }
  return parseConfig(text, file);
}

/** Validates host.yaml text; `file` is only used in messages. */
export function parseConfig(text: string, file = 'host.yaml'): HostConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length) {
    throw new ConfigError(file, doc.errors.map((e) => ({
      path: '',
      message: `not valid YAML: ${e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '')}`,
      line: e.linePos?.[0].line,
    })));
  }
  const c = new Checker(doc, lineCounter);
  const cfg = check(c, doc.toJS({ maxAliasCount: 100 }) as unknown, file);
  if (c.problems.length) throw new ConfigError(file, c.problems.sort((x, y) => (x.line ?? 0) - (y.line ?? 0)));
  return cfg;
}

type KeyPath = Array<string | number>;

function formatPath(p: KeyPath): string {
  return p.map((s, i) => (typeof s === 'number' ? `[${s}]` : i ? `.${s}` : s)).join('');
}

class Checker {
  readonly problems: ConfigProblem[] = [];
  constructor(private readonly doc: Document, private readonly lines: LineCounter) {}

  fail(at: KeyPath, message: string): void {
    this.problems.push({ path: formatPath(at), message, line: this.lineOf(at) });
  }

  /** Line of the value at `at`, or of its key, or of the nearest ancestor found in the document. */
  private lineOf(at: KeyPath): number | undefined {
    let node: unknown = this.doc.contents;
    let line = rangeLine(node, this.lines);
    for (const seg of at) {
      if (isMap(node)) {
        const pair = node.items.find((p) => isPair(p) && (isScalar(p.key) ? p.key.value : p.key) === seg);
        if (!pair) break;
        line = rangeLine(pair.key, this.lines) ?? line;
        node = pair.value;
        line = rangeLine(node, this.lines) ?? line;
      } else if (isSeq(node) && typeof seg === 'number' && node.items[seg] !== undefined) {
        node = node.items[seg];
        line = rangeLine(node, this.lines) ?? line;
      } else break;
    }
    return line;
  }
}

function rangeLine(node: unknown, lines: LineCounter): number | undefined {
  const range = (node as YamlNode | null)?.range;
  return range ? lines.linePos(range[0]).line : undefined;
}

// ---- small typed readers: report the problem and return the fallback -------------------------

type Obj = Record<string, unknown>;

function mapping(c: Checker, v: unknown, at: KeyPath, keys: readonly string[]): Obj {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) {
    c.fail(at, `must be a mapping of ${keys.join(', ')}, got ${describe(v)}`);
    return {};
  }
  for (const k of Object.keys(v)) {
    if (!keys.includes(k)) {
      const near = closest(k, keys);
      c.fail([...at, k], `unknown key${near ? ` (did you mean "${near}"?)` : ''}; expected one of ${keys.join(', ')}`);
    }
  }
  return v as Obj;
}

function list(c: Checker, v: unknown, at: KeyPath): unknown[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) {
    c.fail(at, `must be a list, got ${describe(v)}`);
    return undefined;
  }
  return v;
}

function bool(c: Checker, v: unknown, at: KeyPath, fallback: boolean): boolean {
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'boolean') {
    c.fail(at, `must be true or false, got ${describe(v)}`);
    return fallback;
  }
  return v;
}

function int(c: Checker, v: unknown, at: KeyPath, fallback: number, min: number, max: number): number {
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    c.fail(at, `must be a whole number from ${min} to ${max}, got ${describe(v)}`);
    return fallback;
  }
  return v;
}

function oneOf<T extends string>(c: Checker, v: unknown, at: KeyPath, fallback: T, allowed: readonly T[]): T {
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'string' || !allowed.includes(v as T)) {
    c.fail(at, `must be one of ${allowed.join(', ')}, got ${describe(v)}`);
    return fallback;
  }
  return v as T;
}

function hostPath(c: Checker, v: unknown, at: KeyPath, fallback: string): string {
  if (v === undefined || v === null) return fallback;
  const problem = hostPathProblem(v);
  if (problem) {
    c.fail(at, problem);
    return fallback;
  }
  return v as string;
}

function reserve(c: Checker, v: unknown, at: KeyPath): Reserve | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return { bytes: v };
  if (typeof v === 'string') {
    const pct = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(v);
    if (pct) {
      const percent = Number(pct[1]);
      if (percent < 100) return { percent };
      c.fail(at, `must be below 100%, got "${v}"`);
      return undefined;
    }
    const bytes = parseBytes(v);
    if (typeof bytes === 'number') return { bytes };
    c.fail(at, `must be a percentage like 10% or a size like 5GiB; ${bytes}`);
    return undefined;
  }
  c.fail(at, `must be a percentage like 10% or a size like 5GiB, got ${describe(v)}`);
  return undefined;
}

function describe(v: unknown): string {
  if (v === null) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return JSON.stringify(v);
  return String(v);
}

/** The allowed key within edit distance 2 of a misspelt one, if any. */
function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = 3;
  for (const cand of candidates) {
    const d = editDistance(word.toLowerCase(), cand);
    if (d < bestD) [best, bestD] = [cand, d];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length];
}

// ---- the schema ------------------------------------------------------------------------------

function check(c: Checker, raw: unknown, file: string): HostConfig {
  const d = defaultConfig(file);
  const top = mapping(c, raw, [], ['listen', 'control_socket', 'state_dir', 'vms_dir', 'storage', 'defaults', 'limits']);
  return {
    source: file,
    listen: listeners(c, top.listen, d.listen),
    controlSocket: hostPath(c, top.control_socket, ['control_socket'], d.controlSocket),
    stateDir: hostPath(c, top.state_dir, ['state_dir'], d.stateDir),
    vmsDir: hostPath(c, top.vms_dir, ['vms_dir'], d.vmsDir),
    storage: storage(c, top.storage, d.storage),
    defaults: shareDefaults(c, top.defaults, d.defaults),
    limits: limits(c, top.limits, d.limits),
  };
}

function listeners(c: Checker, v: unknown, fallback: string[]): string[] {
  const items = typeof v === 'string' ? [v] : list(c, v, ['listen']);
  if (!items) return fallback;
  if (!items.length) c.fail(['listen'], 'must name at least one listener, e.g. vsock://any:5252');
  const seen = new Set<string>();
  items.forEach((uri, i) => {
    const at: KeyPath = typeof v === 'string' ? ['listen'] : ['listen', i];
    if (typeof uri !== 'string') return c.fail(at, `must be a transport URI, got ${describe(uri)}`);
    try {
      parseAddress(uri);
    } catch (err) {
      return c.fail(at, (err as Error).message);
    }
    if (seen.has(uri)) c.fail(at, `"${uri}" is listed twice`);
    seen.add(uri);
  });
  return items.filter((u): u is string => typeof u === 'string');
}

function storage(c: Checker, v: unknown, d: StorageConfig): StorageConfig {
  const s = mapping(c, v, ['storage'], ['nodes', 'placement', 'timeout', 'io_timeout', 'max_calls_per_node', 'mount_check_interval']);
  const p = mapping(c, s.placement, ['storage', 'placement'], ['reserve', 'skip_unreachable']);
  let timeoutMs = d.timeoutMs;
  if (s.timeout !== undefined && s.timeout !== null) {
    const t = parseDuration(s.timeout);
    if (typeof t === 'string') c.fail(['storage', 'timeout'], t);
    else if (t < 100 || t > 600_000) c.fail(['storage', 'timeout'], `must be between 100ms and 10m, got ${JSON.stringify(s.timeout)}`);
    else timeoutMs = t;
  }
  let ioTimeoutMs = d.ioTimeoutMs;
  if (s.io_timeout !== undefined && s.io_timeout !== null) {
    const t = parseDuration(s.io_timeout);
    if (typeof t === 'string') c.fail(['storage', 'io_timeout'], t);
    else if (t < 100 || t > 3_600_000) c.fail(['storage', 'io_timeout'], `must be between 100ms and 1h, got ${JSON.stringify(s.io_timeout)}`);
    else ioTimeoutMs = t;
  }
  let mountCheckIntervalMs = d.mountCheckIntervalMs;
  if (s.mount_check_interval !== undefined && s.mount_check_interval !== null) {
    const t = parseDuration(s.mount_check_interval);
    if (typeof t === 'string') c.fail(['storage', 'mount_check_interval'], t);
    else if (t < 100 || t > 600_000) c.fail(['storage', 'mount_check_interval'], `must be between 100ms and 10m, got ${JSON.stringify(s.mount_check_interval)}`);
    else mountCheckIntervalMs = t;
  }
  return {
    nodes: storageNodes(c, s.nodes),
    placement: {
      reserve: reserve(c, p.reserve, ['storage', 'placement', 'reserve']) ?? d.placement.reserve,
      skipUnreachable: bool(c, p.skip_unreachable, ['storage', 'placement', 'skip_unreachable'], d.placement.skipUnreachable),
    },
    timeoutMs,
    ioTimeoutMs,
    maxCallsPerNode: int(c, s.max_calls_per_node, ['storage', 'max_calls_per_node'], d.maxCallsPerNode, 1, 1024),
    mountCheckIntervalMs,
  };
}

const NODE_KEYS = ['name', 'backend', 'path', 'prefixes', 'placement', 'reserve', 'require_mount'] as const;

function storageNodes(c: Checker, v: unknown): StorageNodeConfig[] {
  const items = list(c, v, ['storage', 'nodes']) ?? [];
  const nodes: StorageNodeConfig[] = [];
  const names = new Map<string, number>();
  const paths = new Map<string, number>();
  const prefixOwner = new Map<string, number>();
  items.forEach((item, i) => {
    const at: KeyPath = ['storage', 'nodes', i];
    const n = mapping(c, item, at, NODE_KEYS);
    if (item === null || typeof item !== 'object' || Array.isArray(item)) return;

    let name = '';
    if (n.name === undefined || n.name === null) c.fail([...at, 'name'], 'is required (a short unique name such as ceph-a)');
    else if (typeof n.name !== 'string' || !NODE_NAME.test(n.name)) {
      c.fail([...at, 'name'], `must be 1-63 letters, digits, ".", "_" or "-", starting with a letter or digit, got ${describe(n.name)}`);
    } else if (names.has(n.name)) c.fail([...at, 'name'], `"${n.name}" is already the name of storage.nodes[${names.get(n.name)}]`);
    else {
      name = n.name;
      names.set(name, i);
    }

    let nodePath = '';
    if (n.path === undefined || n.path === null) c.fail([...at, 'path'], 'is required (the host mount point of the network filesystem, e.g. /mnt/cephfs)');
    else {
      nodePath = hostPath(c, n.path, [...at, 'path'], '');
      if (nodePath && paths.has(nodePath)) {
        c.fail([...at, 'path'], `"${nodePath}" is already the path of storage.nodes[${paths.get(nodePath)}]`);
      } else if (nodePath) paths.set(nodePath, i);
    }

    const prefixes: string[] = [];
    (list(c, n.prefixes, [...at, 'prefixes']) ?? []).forEach((pfx, j) => {
      const pat: KeyPath = [...at, 'prefixes', j];
      const problem = storageDirProblem(pfx, true);
      if (problem) return c.fail(pat, problem);
      const prefix = pfx as string;
      const owner = prefixOwner.get(prefix);
      if (owner === i) return c.fail(pat, `"${prefix}" is listed twice`);
      if (owner !== undefined) return c.fail(pat, `"${prefix}" is already a prefix of storage.nodes[${owner}]; a prefix belongs to one node`);
      prefixOwner.set(prefix, i);
      prefixes.push(prefix);
    });

    nodes.push({
      name,
      backend: oneOf(c, n.backend, [...at, 'backend'], 'posix', ['posix'] as const),
      path: nodePath,
      prefixes,
      placement: bool(c, n.placement, [...at, 'placement'], true),
      reserve: reserve(c, n.reserve, [...at, 'reserve']),
      requireMount: bool(c, n.require_mount, [...at, 'require_mount'], true),
    });
  });
  // A prefix nested in another node's prefix is fine (longest wins), but a node must not claim a
  // prefix below one of its own: that is a typo or a no-op.
  for (const [i, node] of nodes.entries()) {
    for (const [j, pfx] of node.prefixes.entries()) {
      const outer = node.prefixes.find((o) => o !== pfx && isUnder(pfx, o));
      if (outer) c.fail(['storage', 'nodes', i, 'prefixes', j], `"${pfx}" is already covered by "${outer}" of the same node`);
    }
  }
  return nodes;
}

function shareDefaults(c: Checker, v: unknown, d: ShareDefaults): ShareDefaults {
  const at = ['defaults'];
  const s = mapping(c, v, at, ['read_only', 'squash', 'anon_uid', 'anon_gid', 'cache', 'mount_options']);
  const mountOptions: string[] = [];
  (list(c, s.mount_options, [...at, 'mount_options']) ?? []).forEach((o, i) => {
    if (typeof o !== 'string' || !/^[A-Za-z0-9_.-]+(=[^,\s]*)?$/.test(o)) {
      c.fail([...at, 'mount_options', i], `must be one mount option such as allow_other or max_read=131072 (no commas or spaces), got ${describe(o)}`);
    } else mountOptions.push(o);
  });
  return {
    readOnly: bool(c, s.read_only, [...at, 'read_only'], d.readOnly),
    squash: oneOf(c, s.squash, [...at, 'squash'], d.squash, SQUASH_MODES),
    anonUid: int(c, s.anon_uid, [...at, 'anon_uid'], d.anonUid, 0, ID_MAX),
    anonGid: int(c, s.anon_gid, [...at, 'anon_gid'], d.anonGid, 0, ID_MAX),
    cache: oneOf(c, s.cache, [...at, 'cache'], d.cache, CACHE_MODES),
    mountOptions,
  };
}

function limits(c: Checker, v: unknown, d: VmLimits): VmLimits {
  const s = mapping(c, v, ['limits'], ['max_in_flight', 'max_handles', 'max_fds', 'max_vm_in_flight']);
  return {
    maxInFlight: int(c, s.max_in_flight, ['limits', 'max_in_flight'], d.maxInFlight, 1, 65536),
    maxHandles: int(c, s.max_handles, ['limits', 'max_handles'], d.maxHandles, 1, 1 << 20),
    maxFds: int(c, s.max_fds, ['limits', 'max_fds'], d.maxFds, 16, 1 << 22),
    maxVmInFlight: int(c, s.max_vm_in_flight, ['limits', 'max_vm_in_flight'], d.maxVmInFlight, 1, 1 << 20),
  };
}
