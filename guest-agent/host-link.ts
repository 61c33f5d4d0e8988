// The guest's connection to its host agent: connect, Hello (with the token where the transport
// needs one), list and mount exports. It is the SessionSource the remote file systems send through.
import { Session } from '../shared/rpc/session.js';
import { sendHello, AGENT_VERSION, type HelloResult } from '../shared/rpc/hello.js';
import { connect } from '../shared/transport/index.js';
import { FsError, E } from '../shared/fs/errors.js';
import { attrFromWire } from '../shared/fs/convert.js';
import type { Attr } from '../shared/fs/interface.js';
import type { Logger } from '../shared/log.js';
import type { SessionSource } from './remote-fs.js';

export interface ExportInfo {
  name: string;
  target: string;
  readOnly: boolean;
  cacheMode: string;
  mountOptions: string[];
}

export interface MountedExport {
  exportId: number;
  info: ExportInfo;
  root: Attr;
}

export interface HostLinkOptions {
  uri: string;
  token?: string;
  logger: Logger;
  connectTimeoutMs?: number;
  keepaliveMs?: number;
  /** vsock CIDs 0-2 are the hypervisor; a real guest connects to CID 2 (the host). */
  allowHostCid?: boolean;
}

export class HostLink implements SessionSource {
  private session: Session | null = null;
  hello: HelloResult | null = null;

  constructor(private readonly opts: HostLinkOptions) {}

  async connect(): Promise<HelloResult> {
    const { stream } = await connect(this.opts.uri, { timeoutMs: this.opts.connectTimeoutMs, allowHostCid: this.opts.allowHostCid });
    const session = new Session(stream, { logger: this.opts.logger, keepaliveMs: this.opts.keepaliveMs });
    try {
      this.hello = await sendHello(session, { token: this.opts.token, agent: `dirvisor-guest/${AGENT_VERSION}` });
    } catch (err) {
      session.close('hello failed');
      if (err instanceof FsError && err.errno === E.EACCES) {
        throw new FsError(E.EACCES, `host agent at ${this.opts.uri} refused this guest: ${err.message}`);
      }
      throw err;
    }
    this.session = session;
    session.once('close', (reason: string) => {
      this.opts.logger.warn({ reason, uri: this.opts.uri }, 'connection to the host agent closed');
      if (this.session === session) this.session = null;
    });
    return this.hello;
  }

  async current(): Promise<Session> {
    if (!this.session || this.session.closed) throw new FsError(E.ENOTCONN, `not connected to the host agent at ${this.opts.uri}`);
    return this.session;
  }

  async listExports(): Promise<ExportInfo[]> {
    const f = await (await this.current()).request({ listExports: {} });
    return (f.envelope.exportList?.exports ?? []).map(toInfo);
  }

  async mountExport(name: string): Promise<MountedExport> {
    const f = await (await this.current()).request({ mountExport: { name } });
    const r = f.envelope.mountReply!;
    return { exportId: r.exportId ?? 0, info: toInfo(r.info ?? {}), root: attrFromWire(r.root) };
  }

  close(reason = 'guest agent stopping'): void {
    this.session?.close(reason);
    this.session = null;
  }
}

function toInfo(e: { name?: string | null; target?: string | null; readOnly?: boolean | null; cacheMode?: string | null; mountOptions?: string[] | null }): ExportInfo {
  return { name: e.name ?? '', target: e.target ?? '', readOnly: !!e.readOnly, cacheMode: e.cacheMode || 'long', mountOptions: e.mountOptions ?? [] };
}
