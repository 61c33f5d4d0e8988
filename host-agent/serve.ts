// `dirvisor-host serve DIR --listen URI`: the one-line host agent. One directory, one export named
// "default", offered to every guest that presents the token (or, on vsock/hvsock without a token,
// to any VM that can reach the port).
import fs from 'node:fs/promises';
import path from 'node:path';
import { FsError, E } from '../shared/fs/errors.js';
import { parseAddress, needsToken } from '../shared/transport/index.js';
import { tokenMatches } from '../shared/rpc/hello.js';
import type { Logger } from '../shared/log.js';
import { HostServer, type Authorizer, type ExportDef } from './server.js';
import { PosixBackend } from './backend/posix.js';
import { IdMap, withIdMap, type IdMapConfig } from './idmap.js';
import { NodeGuard, GuardedFs, DEFAULT_NODE_GUARD, guardedIdentity } from './storage/guard.js';

/** Open handles per connection (export view) for `serve`, as the managed agent's default. */
const SERVE_MAX_HANDLES = 4096;
import { CoherenceHub } from './coherence/hub.js';
import { withIdentity } from './coherence/identity.js';

export interface ServeOptions {
  dir: string;
  listen: string[];
  token?: string;
  readOnly?: boolean;
  /** Identity mapping for the one export (default: none). */
  idmap?: IdMapConfig;
  /** Per connection: maxInFlight, maxHandles; per VM: maxFds; per call on the storage: storageTimeoutMs. */
  limits?: { maxInFlight?: number; maxHandles?: number; maxFds?: number; storageTimeoutMs?: number };
  /** Directories the coherence hub watches at most (default: up to the kernel's limit). */
  maxWatches?: number;
  logger: Logger;
}

export async function serveDirectory(opts: ServeOptions): Promise<HostServer> {
  const dir = path.resolve(opts.dir);
  const st = await fs.stat(dir).catch(() => null);
  if (!st) throw new Error(`directory ${dir} does not exist; create it or name another`);
  if (!st.isDirectory()) throw new Error(`${dir} is not a directory`);
  for (const uri of opts.listen) {
    const addr = parseAddress(uri);
    if (!opts.token && (addr.transport === 'unix' || addr.transport === 'tcp')) {
      throw new Error(`${uri}: ${addr.transport}:// does not identify the guest, so it needs --token T (any secret; give the same to dirvisor-guest mount)`);
    }
  }
  const limits = opts.limits ?? {};
  const guard = new NodeGuard(dir, { ...DEFAULT_NODE_GUARD, ...(limits.storageTimeoutMs ? { timeoutMs: limits.storageTimeoutMs } : {}) });
  const def: ExportDef = {
    name: 'default',
    target: '',
    readOnly: !!opts.readOnly,
    // Guests cache for long: the host pushes what changes (coherence/), and the guest revalidates
    // after its revalidation interval what pushing cannot see.
    cacheMode: 'long',
    mountOptions: [],
    open: async () => {
      const backend = await PosixBackend.create(dir, { readOnly: !!opts.readOnly, logger: opts.logger, maxHandles: limits.maxHandles ?? SERVE_MAX_HANDLES });
      const guarded = new GuardedFs(backend, guard);
      return withIdentity(opts.idmap ? withIdMap(guarded, new IdMap(opts.idmap)) : guarded, guardedIdentity(backend, guard));
    },
  };
  const authorizer: Authorizer = {
    identify(peer, token) {
      if (opts.token ? !tokenMatches(token, opts.token) : needsToken(peer)) {
        throw new FsError(E.EACCES, token ? 'wrong token' : 'a token is required on this transport');
      }
      return { vmName: 'default', generation: 1, exports: () => [def] };
    },
  };
  const server = new HostServer(authorizer, opts.logger, { maxInFlight: limits.maxInFlight, vm: { maxFds: limits.maxFds } }, new CoherenceHub({ logger: opts.logger, maxWatches: opts.maxWatches }));
  for (const uri of opts.listen) await server.listen(uri);
  opts.logger.info({ dir, readOnly: !!opts.readOnly }, 'serving directory');
  return server;
}
