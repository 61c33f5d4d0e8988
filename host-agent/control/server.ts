// Serves the control API for dirvisorctl: VM definitions, attach/detach, list and status.
import net from 'node:net';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../../shared/log.js';
import { FsError, errnoName } from '../../shared/fs/errors.js';
import type { VmRegistry } from '../vms/registry.js';
import type { HostServer } from '../server.js';
import type { StorageMap } from '../storage/index.js';
import { parseVmSpec, parseShare, type ShareSpec } from '../vms/spec.js';
import { MAX_CONTROL_LINE, type ControlReply, type ControlRequest } from './protocol.js';
import { statusReport, listReport } from './status.js';

export interface ControlContext {
  registry: VmRegistry;
  server: HostServer;
  storage?: StorageMap;
  logger: Logger;
  startedAt: Date;
}

export async function listenControl(socketPath: string, ctx: ControlContext): Promise<{ close(): Promise<void> }> {
  await fs.mkdir(path.dirname(socketPath), { recursive: true, mode: 0o700 });
  await fs.unlink(socketPath).catch(() => {});
  const server = net.createServer((sock) => serveClient(sock, ctx));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  await fs.chmod(socketPath, 0o600); // root only
  ctx.logger.info({ socket: socketPath }, 'control socket ready');
  return {
    close: () => new Promise<void>((resolve) => server.close(() => resolve())).then(() => fs.unlink(socketPath).catch(() => {})),
  };
}

function serveClient(sock: net.Socket, ctx: ControlContext): void {
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (chunk: string) => {
    buf += chunk;
    if (buf.length > MAX_CONTROL_LINE) {
      sock.end(JSON.stringify({ id: 0, ok: false, error: 'request too large' }) + '\n');
      return;
    }
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      handleLine(line, ctx).then((reply) => sock.write(JSON.stringify(reply) + '\n'));
    }
  });
  sock.on('error', () => {});
}

async function handleLine(line: string, ctx: ControlContext): Promise<ControlReply> {
  let req: ControlRequest;
  try {
    req = JSON.parse(line) as ControlRequest;
  } catch {
    return { id: 0, ok: false, error: 'request is not JSON' };
  }
  try {
    const result = await execute(req, ctx);
    return { id: req.id, ok: true, result };
  } catch (err) {
    const e = err as Error & { errno?: number };
    if (!(err instanceof FsError) && e.name !== 'SpecError') ctx.logger.error({ err, op: req.op }, 'control request failed');
    return { id: req.id, ok: false, error: e.message, code: err instanceof FsError ? errnoName(err.errno) : e.name === 'SpecError' ? 'EINVAL' : undefined };
  }
}

async function execute(req: ControlRequest, ctx: ControlContext): Promise<unknown> {
  const a = req.args ?? {};
  const { registry } = ctx;
  switch (req.op) {
    case 'vm.create': {
      const spec = parseVmSpec(a, 'api');
      const record = await registry.define(spec);
      return listReport([record]);
    }
    case 'vm.delete':
      await registry.remove(String(a.name), 'api');
      return { deleted: a.name };
    case 'attach': {
      const share: ShareSpec = parseShare(a.share, 'attach');
      const state = await registry.attach(String(a.vm), share);
      return { vm: a.vm, share: state.share, resolution: state.resolution };
    }
    case 'detach':
      return { vm: a.vm, detached: await registry.detach(String(a.vm), String(a.what)) };
    case 'list':
      return listReport(registry.list());
    case 'status':
      return await statusReport(ctx);
    default:
      throw new FsError(22, `unknown control operation "${String(req.op)}"`);
  }
}
