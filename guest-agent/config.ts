// /etc/dirvisor/guest.yaml: where the host agent is and how to mount what it offers.
import fs from 'node:fs/promises';
import YAML from 'yaml';
import { parseAddress } from '../shared/transport/index.js';
import { parseMountOptions } from './fuse/options.js';

export const DEFAULT_GUEST_CONFIG = '/etc/dirvisor/guest.yaml';
export const DEFAULT_HOST_URI = 'vsock://2:5252';

export interface StaticMount {
  /** Export name (as the host calls it). */
  export: string;
  /** Mount point; default: the target the host gives. */
  target?: string;
  options: string[];
}

export interface GuestConfig {
  host: string;
  token?: string;
  /** -o words for every mount. */
  mountOptions: string[];
  /** Mount every export the host offers (true), or only those in `mounts`. */
  mountAll: boolean;
  mounts: StaticMount[];
  /** How long file operations wait for a lost host agent before failing (ms). */
  reconnectWindowMs: number;
}

export class GuestConfigError extends Error {
  constructor(file: string, key: string, problem: string) {
    super(`${file}: ${key}: ${problem}`);
    this.name = 'GuestConfigError';
  }
}

export async function loadGuestConfig(file = DEFAULT_GUEST_CONFIG, missingOk = true): Promise<GuestConfig> {
  const text = await fs.readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' && missingOk) return '';
    throw new Error(`cannot read ${file}: ${err.message}`);
  });
  return parseGuestConfig(text, file);
}

export function parseGuestConfig(text: string, file = 'guest.yaml'): GuestConfig {
  let raw: unknown;
  try {
    raw = YAML.parse(text) ?? {};
  } catch (err) {
    throw new GuestConfigError(file, '(syntax)', (err as Error).message);
  }
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new GuestConfigError(file, '(top level)', 'must be a mapping');
  const r = raw as Record<string, unknown>;
  const known = ['host', 'token', 'mount_options', 'mount_all', 'mounts', 'reconnect_window'];
  for (const k of Object.keys(r)) if (!known.includes(k)) throw new GuestConfigError(file, k, `unknown key (known: ${known.join(', ')})`);
  const host = r.host ?? DEFAULT_HOST_URI;
  if (typeof host !== 'string') throw new GuestConfigError(file, 'host', 'must be a transport URI like vsock://2:5252');
  try {
    parseAddress(host);
  } catch (err) {
    throw new GuestConfigError(file, 'host', (err as Error).message);
  }
  const words = (v: unknown, key: string): string[] => {
    if (v === undefined || v === null) return [];
    const list = Array.isArray(v) ? v : String(v).split(',');
    const out = list.map((w) => String(w).trim()).filter(Boolean);
    try {
      parseMountOptions(out);
    } catch (err) {
      throw new GuestConfigError(file, key, (err as Error).message);
    }
    return out;
  };
  const mounts = (r.mounts ?? []) as unknown;
  if (!Array.isArray(mounts)) throw new GuestConfigError(file, 'mounts', 'must be a list');
  const window = r.reconnect_window ?? 30;
  if (typeof window !== 'number' || window < 0) throw new GuestConfigError(file, 'reconnect_window', 'must be a number of seconds');
  return {
    host,
    token: r.token === undefined ? undefined : String(r.token),
    mountOptions: words(r.mount_options, 'mount_options'),
    mountAll: r.mount_all === undefined ? true : r.mount_all === true,
    reconnectWindowMs: window * 1000,
    mounts: mounts.map((m, i) => {
      const key = `mounts[${i}]`;
      if (!m || typeof m !== 'object') throw new GuestConfigError(file, key, 'must be a mapping with export (and optionally target, options)');
      const e = m as Record<string, unknown>;
      if (typeof e.export !== 'string' || !e.export) throw new GuestConfigError(file, `${key}.export`, 'must name an export');
      if (e.target !== undefined && (typeof e.target !== 'string' || !e.target.startsWith('/'))) throw new GuestConfigError(file, `${key}.target`, 'must be an absolute path');
      return { export: e.export, target: e.target as string | undefined, options: words(e.options, `${key}.options`) };
    }),
  };
}
