// Mount options as the CLI and fstab give them: sshfs-like `-o` words, comma separated.
//
//   allow_other  default_permissions  ro | rw  auto_unmount | no_auto_unmount  debug
//   fsname=NAME  max_read=N  max_write=N  max_readahead=N  max_background=N
//   entry_timeout=SEC  attr_timeout=SEC  negative_timeout=SEC  cache=none|auto|long  revalidate=SEC
//   inotify | noinotify
//   writeback | writeback_cache | no_writeback | no_writeback_cache
//   nodev nosuid noexec dev suid exec sync async dirsync noatime nodiratime relatime norelatime strictatime
//   export=NAME (for the agent, not FUSE: which of the host's exports to mount)
// Words that only matter to mount(8)/systemd (defaults, noauto, nofail, _netdev, x-*, ...) are ignored.

/**
 * How long the kernel may trust what it cached. In every mode the host pushes what changes
 * (guest-agent/coherence/) and the agent drops exactly that from the kernel's caches.
 * - none: nothing cached (timeouts 0, direct I/O): every access asks the host;
 * - auto: 1 s for names and attributes, page cache dropped on open when the file changed;
 * - long: names, attributes, file data and directory listings are kept
 *   until the host says they changed, and at most `revalidate` seconds (default 60): the bound on
 *   how stale a change the host could not see (another host of a network file system, a directory
 *   beyond the inotify watch limit) can be.
 */
export type CacheMode = 'none' | 'auto' | 'long';

export interface MountOptions {
  fsname?: string;
  allowOther?: boolean;
  defaultPermissions?: boolean;
  readOnly?: boolean;
  autoUnmount?: boolean;
  debug?: boolean;
  maxRead?: number;
  maxWrite?: number;
  maxReadahead?: number;
  maxBackground?: number;
  /** Seconds; default from `cache`. */
  entryTimeout?: number;
  attrTimeout?: number;
  negativeTimeout?: number;
  cache?: CacheMode;
  /** Seconds a cached name or attribute is trusted in cache=long (default 60; 0: no bound). */
  revalidate?: number;
  /** Raise inotify events in the guest for changes made elsewhere (default true). */
  inotify?: boolean;
  writeback?: boolean;
  /** Generic mount flags passed to the kernel (nodev, nosuid, noatime...). */
  flags?: string[];
}

/** Options for the guest agent itself rather than the FUSE mount. */
export interface AgentOptions {
  /** Which export to mount (default: the first the host offers). */
  export?: string;
  /** Seconds an operation waits for a lost host agent before failing with ENOTCONN. */
  reconnectWindow?: number;
  /** Seconds one request may take on the wire before failing with ETIMEDOUT (fsync, copy 4x). */
  timeout?: number;
}

export interface ParsedOptions {
  fuse: MountOptions;
  agent: AgentOptions;
}

/** The -o words, for --help. */
export const OPTION_HELP = `  allow_other            let other users than the mounting one use the mount
  default_permissions    let the kernel check permissions from file modes
  ro | rw                read-only / read-write mount
  auto_unmount           unmount by itself if the agent dies, even by SIGKILL (the default of
                         \`dirvisor-guest mount\`; no_auto_unmount keeps a dead mount in place)
  cache=none|auto|long   kernel caching: none; 1 s; long (the host's default), kept coherent by
                         invalidations the host pushes
  revalidate=SEC         cache=long: revalidate cached names and attributes after SEC seconds
                         anyway (default 60; 0: never), for changes the host cannot see
  noinotify              do not raise inotify events in the guest for changes made elsewhere
  entry_timeout=SEC      how long names are cached (overrides cache=)
  attr_timeout=SEC       how long attributes are cached (overrides cache=)
  negative_timeout=SEC   how long "no such file" is cached (default 0; cache=long: as revalidate)
  writeback              let the kernel cache writes and send them later (writeback_cache)
  max_read=N  max_write=N  max_background=N
                         transfer sizes in bytes (max_read, max_write at most 1 MiB) / background requests
  max_readahead=N        kernel read-ahead window in bytes (default 4 MiB; needs root)
  fsname=NAME            source shown in /proc/mounts and df
  export=NAME            which of the host's exports to mount (default: the first)
  reconnect_window=SEC   how long operations wait for a lost host agent, then ENOTCONN (default 30)
  timeout=SEC            deadline of one request to the host, then ETIMEDOUT (default 60;
                         fsync and copy_file_range 4x)
  debug                  libfuse request trace on stderr
  nodev nosuid noexec noatime relatime sync dirsync ...
                         generic mount flags, passed to the kernel
  defaults noauto nofail _netdev x-*   fstab words, ignored
`;

export class MountOptionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MountOptionError';
  }
}

const BOOLEANS: Record<string, [keyof MountOptions, boolean]> = {
  allow_other: ['allowOther', true],
  default_permissions: ['defaultPermissions', true],
  ro: ['readOnly', true],
  rw: ['readOnly', false],
  auto_unmount: ['autoUnmount', true],
  no_auto_unmount: ['autoUnmount', false],
  debug: ['debug', true],
  writeback: ['writeback', true],
  writeback_cache: ['writeback', true],
  no_writeback: ['writeback', false],
  no_writeback_cache: ['writeback', false],
  inotify: ['inotify', true],
  noinotify: ['inotify', false],
};

const INTEGERS: Record<string, keyof MountOptions> = {
  max_read: 'maxRead',
  max_write: 'maxWrite',
  max_readahead: 'maxReadahead',
  max_background: 'maxBackground',
};

const SECONDS: Record<string, keyof MountOptions> = {
  entry_timeout: 'entryTimeout',
  attr_timeout: 'attrTimeout',
  negative_timeout: 'negativeTimeout',
  revalidate: 'revalidate',
};

const PASSTHROUGH = new Set([
  'nodev', 'nosuid', 'noexec', 'dev', 'suid', 'exec', 'sync', 'async', 'dirsync',
  'noatime', 'nodiratime', 'relatime', 'norelatime', 'strictatime',
]);

const IGNORED = new Set(['defaults', 'auto', 'noauto', 'nofail', '_netdev', 'user', 'users', 'nouser', 'owner']);

const CACHE_MODES: readonly CacheMode[] = ['none', 'auto', 'long'];

/** Splits "a,b=c\,d" into words; a backslash escapes the next character (commas in fsname). */
export function splitOptions(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '\\' && i + 1 < s.length) cur += s[++i];
    else if (c === ',') {
      if (cur) out.push(cur);
      cur = '';
    } else cur += c;
  }
  if (cur) out.push(cur);
  return out;
}

/**
 * Parses option strings (each like an `-o` argument, or single words) on top of `base`.
 * Throws MountOptionError naming the first bad word.
 */
export function parseMountOptions(input: string | readonly string[], base: MountOptions = {}): ParsedOptions {
  const opts: MountOptions = { ...base, flags: [...(base.flags ?? [])] };
  const agent: AgentOptions = {};
  const words = (typeof input === 'string' ? [input] : input).flatMap(splitOptions);
  for (const word of words) {
    const eq = word.indexOf('=');
    const key = eq < 0 ? word : word.slice(0, eq);
    const value = eq < 0 ? undefined : word.slice(eq + 1);
    const needValue = (): string => {
      if (value === undefined || value === '') throw new MountOptionError(`mount option '${key}' needs a value (${key}=...)`);
      return value;
    };
    const noValue = (): void => {
      if (value !== undefined) throw new MountOptionError(`mount option '${key}' takes no value`);
    };
    if (key in BOOLEANS) {
      noValue();
      const [field, v] = BOOLEANS[key];
      (opts as Record<string, unknown>)[field] = v;
    } else if (key in INTEGERS) {
      const v = needValue();
      if (!/^\d+$/.test(v) || Number(v) <= 0 || !Number.isSafeInteger(Number(v)))
        throw new MountOptionError(`mount option '${key}' must be a positive integer, got '${v}'`);
      (opts as Record<string, unknown>)[INTEGERS[key]] = Number(v);
    } else if (key in SECONDS) {
      const v = needValue();
      const n = Number(v);
      if (!/^\d+(\.\d+)?$/.test(v) || !Number.isFinite(n))
        throw new MountOptionError(`mount option '${key}' must be a number of seconds >= 0, got '${v}'`);
      (opts as Record<string, unknown>)[SECONDS[key]] = n;
    } else if (key === 'cache') {
      const v = needValue();
      if (!CACHE_MODES.includes(v as CacheMode))
        throw new MountOptionError(`mount option 'cache' must be one of ${CACHE_MODES.join(', ')}, got '${v}'`);
      opts.cache = v as CacheMode;
    } else if (key === 'fsname') {
      opts.fsname = needValue();
    } else if (key === 'export') {
      agent.export = needValue();
    } else if (key === 'reconnect_window' || key === 'timeout') {
      const v = needValue();
      const n = Number(v);
      if (!/^\d+(\.\d+)?$/.test(v) || !Number.isFinite(n) || (key === 'timeout' && n < 0.1))
        throw new MountOptionError(`mount option '${key}' must be a number of seconds${key === 'timeout' ? ' of at least 0.1' : ' >= 0'}, got '${v}'`);
      agent[key === 'timeout' ? 'timeout' : 'reconnectWindow'] = n;
    } else if (PASSTHROUGH.has(key)) {
      noValue();
      if (!opts.flags!.includes(key)) opts.flags!.push(key);
    } else if (IGNORED.has(key) || key.startsWith('x-') || key === 'comment') {
      // mount(8) / systemd options: not ours.
    } else {
      throw new MountOptionError(`unknown mount option '${word}'`);
    }
  }
  // One request's payload must fit libfuse's 1 MiB receive buffer (and the kernel's 256 pages).
  for (const [key, v] of [['max_write', opts.maxWrite], ['max_read', opts.maxRead]] as const) {
    if (v !== undefined && v > 1 << 20) throw new MountOptionError(`mount option '${key}' is at most ${1 << 20}`);
  }
  if (opts.flags!.length === 0) delete opts.flags;
  return { fuse: opts, agent };
}

export interface Timeouts {
  entry: number;
  attr: number;
  negative: number;
  /** Keep the page cache across opens (FOPEN_KEEP_CACHE) unless the file system says otherwise. */
  keepCache: boolean;
  /** Bypass the page cache (FOPEN_DIRECT_IO) unless the file system says otherwise. */
  directIo: boolean;
}

/**
 * Whether the kernel keeps directory listings across opens (FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE; the
 * adapter then answers opendir itself and opens on the host only when a listing is read): cache=long.
 */
export function cachesDirectories(opts: MountOptions): boolean {
  return opts.cache === 'long';
}

/** Default bound on staleness in cache=long, in seconds (as NFS's acregmax/acdirmax). */
export const DEFAULT_REVALIDATE = 60;

/** The cache behaviour implied by the options: `cache` gives defaults, explicit timeouts win. */
export function cacheTimeouts(opts: MountOptions): Timeouts {
  const mode = opts.cache ?? 'auto';
  const bound = opts.revalidate === 0 ? 86400 * 365 : opts.revalidate ?? DEFAULT_REVALIDATE;
  const base: Timeouts =
    mode === 'none' ? { entry: 0, attr: 0, negative: 0, keepCache: false, directIo: true }
    // Absent names too: a create elsewhere is pushed as an invalidation of that name, like any change.
    : mode === 'long' ? { entry: bound, attr: bound, negative: bound, keepCache: true, directIo: false }
    : { entry: 1, attr: 1, negative: 0, keepCache: false, directIo: false };
  return {
    ...base,
    entry: opts.entryTimeout ?? base.entry,
    attr: opts.attrTimeout ?? base.attr,
    negative: opts.negativeTimeout ?? base.negative,
  };
}
