// A VM definition: its name, how a connection proves it is that VM, and its shares (storage
// directory -> guest target). The same shape comes from vms.d/*.yaml files and from the control API.
import path from 'node:path';
import { createHash } from 'node:crypto';

export type CacheMode = 'long' | 'auto' | 'none';

export interface VmIdentity {
  /** AF_VSOCK context id (QEMU/KVM vhost-vsock). */
  cid?: number;
  /** Firecracker / Cloud Hypervisor hybrid-vsock socket path. */
  hvsock?: string;
  /** Secret for unix:// and tcp:// connections. */
  token?: string;
}

export interface ShareSpec {
  /** Directory in the storage system, e.g. /projects/alpha. */
  dir: string;
  /** Mount point in the guest, e.g. /srv/alpha. */
  target: string;
  /** Export name the guest sees; defaults to the target without slashes ("srv-alpha"). */
  name: string;
  readOnly: boolean;
  /** Create the directory (on the node with the most room) when it exists nowhere. */
  create: boolean;
  owner?: { uid: number; gid: number };
  mode?: number;
  cache?: CacheMode;
  /** Identity mapping (host.yaml defaults apply where absent). */
  squash?: 'none' | 'root' | 'all';
  anonUid?: number;
  anonGid?: number;
  /** GUEST:HOST id pairs. */
  uidMap?: Array<[number, number]>;
  gidMap?: Array<[number, number]>;
}

export interface VmSpec {
  name: string;
  identity: VmIdentity;
  shares: ShareSpec[];
  /** Where the definition came from: "vms.d/web-1.yaml" or "api". */
  source: string;
}

export class SpecError extends Error {
  constructor(where: string, message: string) {
    super(`${where}: ${message}`);
    this.name = 'SpecError';
  }
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export function defaultExportName(target: string): string {
  const name = target.replace(/^\/+|\/+$/g, '').replace(/\/+/g, '-').replace(/[^A-Za-z0-9._-]/g, '_') || 'root';
  if (name.length <= 63) return name;
  // Long targets: keep the end (the most specific part) and a short hash of the whole.
  const hash = createHash('sha256').update(target).digest('hex').slice(0, 8);
  return `${hash}-${name.slice(-(63 - 9))}`.replace(/^([^A-Za-z0-9])/, 'x$1');
}

export function checkAbsolute(where: string, p: unknown): string {
  if (typeof p !== 'string' || !p.startsWith('/')) throw new SpecError(where, `must be an absolute path, got ${JSON.stringify(p)}`);
  if (p.split('/').some((c) => c === '..' || c === '.')) throw new SpecError(where, `must not contain "." or ".." components, got "${p}"`);
  if (p.includes('\0')) throw new SpecError(where, 'must not contain NUL');
  return path.posix.normalize(p).replace(/(.)\/$/, '$1');
}

/** Validates an untrusted object (parsed YAML or control request) as a VM spec. */
export function parseVmSpec(raw: unknown, source: string): VmSpec {
  const where = source;
  if (!raw || typeof raw !== 'object') throw new SpecError(where, 'must be a mapping with name, identity and shares');
  const r = raw as Record<string, unknown>;
  if (typeof r.name !== 'string' || !NAME_RE.test(r.name)) throw new SpecError(`${where}: name`, `must be 1-63 letters, digits, ".", "_" or "-", got ${JSON.stringify(r.name)}`);
  const identity = parseIdentity(r.identity, `${where}: identity`);
  const sharesRaw = r.shares ?? [];
  if (!Array.isArray(sharesRaw)) throw new SpecError(`${where}: shares`, 'must be a list');
  const shares = sharesRaw.map((s, i) => parseShare(s, `${where}: shares[${i}]`));
  checkUniqueShares(shares, where);
  return { name: r.name, identity, shares, source };
}

function parseIdentity(raw: unknown, where: string): VmIdentity {
  if (!raw || typeof raw !== 'object') throw new SpecError(where, 'must give one of cid, hvsock or token');
  const r = raw as Record<string, unknown>;
  const id: VmIdentity = {};
  if (r.cid !== undefined) {
    // 0 and 2 are the hypervisor; 1 is the local CID, which only a VM talking to itself uses (tests).
    const cid = r.cid as number;
    if (!Number.isInteger(cid) || cid === 0 || cid === 2 || cid < 0 || cid > 0xfffffffe) throw new SpecError(`${where}.cid`, `must be a guest CID (3 or more; 1 for a VM talking to itself), got ${JSON.stringify(r.cid)}`);
    id.cid = r.cid as number;
  }
  if (r.hvsock !== undefined) id.hvsock = checkAbsolute(`${where}.hvsock`, r.hvsock);
  if (r.token !== undefined) {
    if (typeof r.token !== 'string' || r.token.length < 8) throw new SpecError(`${where}.token`, 'must be a string of at least 8 characters');
    id.token = r.token;
  }
  const unknown = Object.keys(r).filter((k) => !['cid', 'hvsock', 'token'].includes(k));
  if (unknown.length) throw new SpecError(where, `unknown key "${unknown[0]}" (expected cid, hvsock or token)`);
  if (id.cid === undefined && id.hvsock === undefined && id.token === undefined) throw new SpecError(where, 'must give one of cid, hvsock or token');
  return id;
}

export function parseShare(raw: unknown, where: string): ShareSpec {
  if (!raw || typeof raw !== 'object') throw new SpecError(where, 'must be a mapping with dir and target');
  const r = raw as Record<string, unknown>;
  const dir = checkAbsolute(`${where}.dir`, r.dir);
  const target = checkAbsolute(`${where}.target`, r.target);
  if (target === '/') throw new SpecError(`${where}.target`, 'cannot be / (the guest root)');
  const name = r.name === undefined ? defaultExportName(target) : r.name;
  if (typeof name !== 'string' || !NAME_RE.test(name)) throw new SpecError(`${where}.name`, `must be 1-63 letters, digits, ".", "_" or "-", got ${JSON.stringify(name)}`);
  const share: ShareSpec = { dir, target, name, readOnly: bool(r.read_only ?? r.readOnly, false, `${where}.read_only`), create: bool(r.create, false, `${where}.create`) };
  if (r.owner !== undefined) {
    const m = /^(\d+):(\d+)$/.exec(String(r.owner));
    if (!m) throw new SpecError(`${where}.owner`, `must be UID:GID, got ${JSON.stringify(r.owner)}`);
    share.owner = { uid: Number(m[1]), gid: Number(m[2]) };
  }
  if (r.mode !== undefined) {
    const mode = typeof r.mode === 'number' ? r.mode : /^0?[0-7]{3,4}$/.test(String(r.mode)) ? parseInt(String(r.mode), 8) : NaN;
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) throw new SpecError(`${where}.mode`, `must be an octal mode like "0755", got ${JSON.stringify(r.mode)}`);
    share.mode = mode;
  }
  if (r.cache !== undefined) {
    if (r.cache !== 'long' && r.cache !== 'auto' && r.cache !== 'none') throw new SpecError(`${where}.cache`, `must be long, auto or none, got ${JSON.stringify(r.cache)}`);
    share.cache = r.cache;
  }
  if (r.squash !== undefined) {
    if (r.squash !== 'none' && r.squash !== 'root' && r.squash !== 'all') throw new SpecError(`${where}.squash`, `must be none, root or all, got ${JSON.stringify(r.squash)}`);
    share.squash = r.squash;
  }
  for (const [key, field] of [['anon_uid', 'anonUid'], ['anon_gid', 'anonGid']] as const) {
    const v = r[key];
    if (v === undefined) continue;
    if (!Number.isInteger(v) || (v as number) < 0 || (v as number) > 0xfffffffe) throw new SpecError(`${where}.${key}`, `must be a numeric id, got ${JSON.stringify(v)}`);
    share[field] = v as number;
  }
  for (const [key, field] of [['uid_map', 'uidMap'], ['gid_map', 'gidMap']] as const) {
    const v = r[key];
    if (v === undefined) continue;
    if (!Array.isArray(v)) throw new SpecError(`${where}.${key}`, 'must be a list of "GUEST:HOST" pairs');
    share[field] = v.map((pair) => {
      const m = /^(\d+):(\d+)$/.exec(String(pair));
      if (!m) throw new SpecError(`${where}.${key}`, `"${pair}" is not GUEST:HOST (two numeric ids)`);
      return [Number(m[1]), Number(m[2])] as [number, number];
    });
  }
  return share;
}

function bool(v: unknown, dflt: boolean, where: string): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw new SpecError(where, `must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

export function checkUniqueShares(shares: ShareSpec[], where: string): void {
  const names = new Set<string>();
  const targets = new Set<string>();
  for (const s of shares) {
    // The target first: it is what the operator wrote; a name is often derived from it.
    if (targets.has(s.target)) throw new SpecError(where, `two shares mount at ${s.target}`);
    if (names.has(s.name)) throw new SpecError(where, `two shares are named "${s.name}"`);
    names.add(s.name);
    targets.add(s.target);
  }
}

/** Parses the CLI form DIR:TARGET[:ro]. */
export function parseShareArg(arg: string): ShareSpec {
  const parts = arg.split(':');
  if (parts.length < 2 || parts.length > 3 || (parts.length === 3 && parts[2] !== 'ro' && parts[2] !== 'rw')) {
    throw new SpecError(`--share ${arg}`, 'expected DIR:TARGET or DIR:TARGET:ro');
  }
  const [dir, target] = parts;
  for (const [label, value] of [['DIR', dir], ['TARGET', target]] as const) {
    if (!value.startsWith('/')) throw new SpecError(`--share ${arg}`, `${label} must be an absolute path, got "${value}"`);
  }
  if (target === '/') throw new SpecError(`--share ${arg}`, 'TARGET cannot be / (the guest root)');
  return parseShare({ dir, target, read_only: parts[2] === 'ro' }, `--share ${arg}`);
}
