// What `dirvisorctl list` and `status` show: VMs, their shares and where each resolved, and the
// live connections with their exports, requests in flight, bytes and errors.
import type { VmRecord } from '../vms/registry.js';
import type { ControlContext } from './server.js';
import { describePeer } from '../../shared/transport/index.js';

export function listReport(records: VmRecord[]) {
  return records.map((r) => ({
    name: r.spec.name,
    source: r.spec.source,
    identity: { ...r.spec.identity, token: r.spec.identity.token ? '(set)' : undefined },
    shares: r.shares.map((s) => ({
      name: s.share.name,
      dir: s.share.dir,
      target: s.share.target,
      readOnly: s.share.readOnly,
      node: s.resolution?.node,
      hostPath: s.resolution?.hostPath,
      reason: s.resolution?.reason,
      error: s.error,
    })),
  }));
}

export async function statusReport(ctx: ControlContext) {
  const connections = [...ctx.server.activeConnections].map((c) => ({
    id: c.id,
    vm: c.vmName ?? null,
    peer: describePeer(c.peer),
    since: c.connectedAt.toISOString(),
    exports: [...c.mounts.values()].map((m) => m.def.name),
    inFlight: c.session.inFlight.incoming,
    requests: c.session.stats.requestsIn,
    bytesIn: c.session.stats.bytesIn,
    bytesOut: c.session.stats.bytesOut,
    errors: c.session.stats.errors,
  }));
  return {
    uptimeSeconds: Math.round((Date.now() - ctx.startedAt.getTime()) / 1000),
    vms: listReport(ctx.registry.list()).map((vm) => ({
      ...vm,
      connections: connections.filter((c) => c.vm === vm.name).length,
      usage: ctx.server.vmUsage(vm.name),
    })),
    connections,
    storage: ctx.storage ? { nodes: await ctx.storage.nodeStatus(), decisions: ctx.storage.decisions().slice(-20) } : undefined,
  };
}
