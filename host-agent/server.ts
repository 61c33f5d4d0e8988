// The host agent's protocol server: accepts connections on its listeners, runs the Hello exchange
// (identifying the VM from the transport or the token), lets the guest list and mount the exports
// of its own VM, and serves file operations on them through the FileSystem interface.
import type { Duplex } from 'node:stream';
import type { Logger } from '../shared/log.js';
import type { FileSystem } from '../shared/fs/interface.js';
import { FsError, E } from '../shared/fs/errors.js';
import { Session, type IncomingRequest, type Reply } from '../shared/rpc/session.js';
import { negotiate, AGENT_VERSION } from '../shared/rpc/hello.js';
import { listen, describePeer, type Listener, type PeerIdentity } from '../shared/transport/index.js';
import { attrToWire } from '../shared/fs/convert.js';
import { ROOT_ID } from '../shared/fs/interface.js';
import { dispatchFsRequest, dispatchForget, callerFromWire, unknownExport } from './fs-dispatch.js';
import type { pb } from '../shared/rpc/wire.js';
import { VmLimiter, FdBudgetFs, DEFAULT_VM_LIMITS, type VmLimitOptions } from './limits.js';
import type { CoherenceHub, Subscription } from './coherence/hub.js';
import { identityOf, withIdentity } from './coherence/identity.js';

export type CacheMode = 'long' | 'auto' | 'none';

export interface ExportDef {
  name: string;
  /** Where the guest mounts it ('' when the guest chooses, as with `dirvisor-guest mount`). */
  target: string;
  readOnly: boolean;
  cacheMode: CacheMode;
  mountOptions: string[];
  /** Opens a fresh view of the export for one connection (its own node and handle tables). */
  open(): Promise<FileSystem>;
}

export interface VmView {
  vmName: string;
  /**
   * Changes when the VM is deleted and defined again, or its identity changes: a connection
   * identified under one generation must not act for the next (it is dropped and must say Hello
   * again).
   */
  generation: number;
  exports(): ExportDef[];
}

/** Decides who a connection is. Returns the VM it may act for, or throws FsError with the reason. */
export interface Authorizer {
  identify(peer: PeerIdentity, token: string): VmView;
}

interface Mounted {
  def: ExportDef;
  fs: FileSystem;
  /** Told what this connection changes; pushes other changes to it (coherence/hub.ts). */
  sub?: Subscription;
}

export interface Connection {
  id: number;
  peer: PeerIdentity;
  vmName?: string;
  view?: VmView;
  /** The token given in Hello, to check the connection again when VM definitions change. */
  token: string;
  session: Session;
  mounts: Map<number, Mounted>;
  connectedAt: Date;
}

export class HostServer {
  private readonly listeners: Listener[] = [];
  private readonly connections = new Set<Connection>();
  private nextConnId = 1;
  private readonly vmLimiters = new Map<string, VmLimiter>();

  constructor(
    private readonly authorizer: Authorizer,
    private readonly log: Logger,
    /** maxInFlight: per connection; vm: per VM across its connections (host-agent/limits.ts). */
    private readonly limits: { maxInFlight?: number; vm?: Partial<VmLimitOptions> } = {},
    /** Pushes changes between the connections sharing storage (closed with the server). */
    private readonly coherence?: CoherenceHub,
  ) {}

  /** The limits and counters of one VM (created on first use; VMs are few). */
  vmLimiter(vmName: string): VmLimiter {
    let l = this.vmLimiters.get(vmName);
    if (!l) {
      const given = Object.fromEntries(Object.entries(this.limits.vm ?? {}).filter(([, v]) => v !== undefined));
      l = new VmLimiter(vmName, { ...DEFAULT_VM_LIMITS, ...given });
      this.vmLimiters.set(vmName, l);
    }
    return l;
  }

  /** What a VM holds now against its limits: host fds (nodes + open files), requests served and waiting. */
  vmUsage(vmName: string): { fds: number; maxFds: number; running: number; waiting: number; maxInFlight: number } {
    const l = this.vmLimiter(vmName);
    return { fds: l.fdsInUse, maxFds: l.limits.maxFds, ...l.inFlight, maxInFlight: l.limits.maxInFlight };
  }

  async listen(uri: string): Promise<Listener> {
    const l = await listen(uri, (stream, peer) => this.accept(stream, peer));
    this.listeners.push(l);
    this.log.info({ uri: l.uri }, 'listening');
    return l;
  }

  get activeConnections(): ReadonlySet<Connection> {
    return this.connections;
  }

  /**
   * Tells the guests of a VM that its exports changed (attach, detach, redefinition), and releases
   * the views of exports it no longer has, so a detached export cannot be used any more.
   */
  exportsChanged(vmName: string, current: ExportDef[]): void {
    const names = new Set(current.map((e) => e.name));
    for (const c of this.connections) {
      if (c.vmName !== vmName || !this.stillIdentified(c)) continue;
      for (const [id, m] of c.mounts) {
        if (names.has(m.def.name)) continue;
        c.mounts.delete(id);
        m.sub?.close();
        m.fs.destroy().catch(() => {});
        this.log.info({ conn: c.id, vm: vmName, export: m.def.name }, 'export withdrawn from a connected guest');
      }
      c.session.notify({ exportsChanged: {} });
    }
  }

  /**
   * Checks a connection's identity again (after VM definitions changed). A connection whose VM was
   * deleted, recreated or given another identity is closed: it may not act for what replaced it.
   */
  private stillIdentified(c: Connection): boolean {
    if (!c.view) return false;
    let now: VmView | null = null;
    try {
      now = this.authorizer.identify(c.peer, c.token);
    } catch {
      now = null;
    }
    if (now && now.vmName === c.view.vmName && now.generation === c.view.generation) return true;
    this.log.warn({ conn: c.id, vm: c.vmName, peer: describePeer(c.peer) }, 'VM deleted or its identity changed; closing its connection');
    c.session.close('this VM was deleted or its identity changed');
    return false;
  }

  /** Drops every connection at once (tests of transport resets use it too). */
  dropAll(reason: string): void {
    for (const c of this.connections) {
      c.session.close(reason);
      c.session.stream.destroy();
    }
  }

  async close(): Promise<void> {
    // Stop accepting, then drop the connections: closing a listener waits for its connections.
    const closing = Promise.all(this.listeners.splice(0).map((l) => l.close()));
    this.dropAll('host agent stopping');
    this.coherence?.close();
    await closing;
  }

  private accept(stream: Duplex, peer: PeerIdentity): void {
    const id = this.nextConnId++;
    const log = this.log.child({ conn: id, peer: describePeer(peer) });
    const conn: Connection = { id, peer, token: '', mounts: new Map(), connectedAt: new Date(), session: undefined as unknown as Session };
    let view: VmView | null = null;
    let nextExportId = 1;

    conn.session = new Session(stream, {
      logger: log,
      maxIncoming: this.limits.maxInFlight,
      onRequest: async (req) => {
        if (req.kind === 'hello') {
          try {
            view = this.hello(req.envelope.hello!, peer, log);
          } catch (err) {
            // Refused: answer, then hang up, so a peer cannot keep guessing on one connection (and
            // cannot keep it open either).
            setImmediate(() => {
              conn.session.close('refused');
              setTimeout(() => stream.destroy(), 500).unref();
            });
            throw err;
          }
          conn.vmName = view.vmName;
          conn.view = view;
          conn.token = req.envelope.hello!.token ?? '';
          return { body: { helloReply: { ...negotiate(req.envelope.hello!), agent: `dirvisor-host/${AGENT_VERSION}`, vmName: view.vmName } } };
        }
        if (!view) throw new FsError(E.EACCES, 'Hello first: the connection is not identified yet');
        return this.serve(req, view, conn, () => nextExportId++, log);
      },
      onEvent: (frame) => {
        if (frame.kind === 'forget') {
          const m = conn.mounts.get(frame.envelope.exportId);
          if (m) dispatchForget(m.fs, frame.envelope.forget!);
        }
      },
    });
    this.connections.add(conn);
    log.info('connection accepted');
    conn.session.once('close', (reason: string) => {
      this.connections.delete(conn);
      log.info({ reason, vm: conn.vmName }, 'connection closed');
      for (const m of conn.mounts.values()) m.sub?.close();
      for (const m of conn.mounts.values()) m.fs.destroy().catch((err) => log.warn({ err }, 'releasing an export view failed'));
      conn.mounts.clear();
    });
  }

  private hello(hello: pb.Hello.$Properties, peer: PeerIdentity, log: Logger): VmView {
    try {
      const view = this.authorizer.identify(peer, hello.token ?? '');
      log.info({ vm: view.vmName, agent: hello.agent }, 'peer identified');
      return view;
    } catch (err) {
      log.warn({ reason: (err as Error).message, agent: hello.agent }, 'connection refused');
      throw err;
    }
  }

  private async serve(req: IncomingRequest, view: VmView, conn: Connection, allocId: () => number, log: Logger): Promise<Reply> {
    // A VM redefinition reaches exportsChanged() only after the registry has saved it (an fsync):
    // until then, the control calls check the connection's identity themselves.
    if ((req.kind === 'listExports' || req.kind === 'mountExport') && !this.stillIdentified(conn)) {
      throw new FsError(E.EACCES, 'this VM was deleted or its identity changed');
    }
    switch (req.kind) {
      case 'listExports':
        return { body: { exportList: { exports: view.exports().map(exportInfo) } } };
      case 'mountExport': {
        const name = req.envelope.mountExport!.name ?? '';
        const def = view.exports().find((e) => e.name === name);
        if (!def) throw new FsError(E.ENOENT, `VM ${view.vmName} has no export named "${name}"`);
        const opened = await def.open();
        let fs: FileSystem;
        try {
          fs = new FdBudgetFs(opened, this.vmLimiter(view.vmName));
          // The wrapper has the opened view's node identities (coherence finds them on it).
          const identity = identityOf(opened);
          if (identity) withIdentity(fs, identity);
        } catch (err) {
          await opened.destroy().catch(() => {});
          throw err;
        }
        let root;
        try {
          root = await fs.getattr({ uid: 0, gid: 0, pid: 0 }, ROOT_ID);
        } catch (err) {
          await fs.destroy().catch(() => {});
          throw err;
        }
        if (conn.session.closed) {
          // The guest went away while the export was being opened (checked after the last await,
          // since the close handler has already released `conn.mounts`): release it, nobody will.
          await fs.destroy();
          throw new FsError(E.ENOTCONN, 'connection closed');
        }
        const exportId = allocId();
        conn.mounts.set(exportId, { def, fs, sub: this.coherence?.subscribe(fs, conn.session, exportId) });
        log.info({ export: name, exportId }, 'export mounted');
        return { body: { mountReply: { exportId, info: exportInfo(def), root: attrToWire(root) } } };
      }
      case 'unmountExport': {
        const exportId = req.envelope.unmountExport!.exportId ?? 0;
        const m = conn.mounts.get(exportId);
        if (!m) throw unknownExport(exportId);
        conn.mounts.delete(exportId);
        m.sub?.close();
        await m.fs.destroy();
        return { body: { ok: {} } };
      }
      default: {
        const m = conn.mounts.get(req.envelope.exportId);
        if (!m) throw unknownExport(req.envelope.exportId);
        // Coherence learns what the request changed (and holds back storage events meanwhile).
        const op = m.sub?.begin(req);
        let reply: Reply | null = null;
        try {
          reply = await this.vmLimiter(view.vmName).run(() => dispatchFsRequest(m.fs, req, callerFromWire(req.envelope.caller)));
        } finally {
          op?.end(reply);
        }
        if (!reply) throw new FsError(E.ENOSYS, `${req.kind} is not a request the host serves`);
        return reply;
      }
    }
  }
}

function exportInfo(def: ExportDef): pb.ExportInfo.$Properties {
  return { name: def.name, target: def.target, readOnly: def.readOnly, cacheMode: def.cacheMode, mountOptions: def.mountOptions };
}
