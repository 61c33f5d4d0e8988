// vsock transport: AF_VSOCK connections as Duplex streams (`vsock://CID:PORT`, `vsock://any:PORT`).
// On the host, the peer CID of an accepted connection identifies the VM; the guest cannot forge it.
import { closeSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import {
  UvStreamDuplex,
  VMADDR_CID_ANY,
  vsockConnect,
  vsockListen,
  type VsockAddress,
  type VsockConnectOptions,
} from '../../native/vsock.js';

export { VMADDR_CID_ANY, VMADDR_PORT_ANY, localCid } from '../../native/vsock.js';
export type { VsockAddress, VsockConnectOptions } from '../../native/vsock.js';

export interface VsockServer {
  /** The bound port (the kernel's pick if VMADDR_PORT_ANY was asked). */
  port: number;
  /** Stops accepting. Connections already handed out stay open. */
  close(): Promise<void>;
}

/**
 * Listens on `cid` (default any: 'any' or VMADDR_CID_ANY) and `port` (VMADDR_PORT_ANY: the kernel
 * picks). Every accepted connection is handed over as a Duplex with the kernel-given peer
 * address. Accept errors (e.g. EMFILE) go to `onError`, by default a process warning; the server
 * keeps listening.
 */
export async function listenVsock(
  port: number,
  cid: number | 'any' = VMADDR_CID_ANY,
  onConnection: (stream: Duplex, peer: VsockAddress) => void,
  onError: (err: Error) => void = (err) => process.emitWarning(err),
): Promise<VsockServer> {
  let closed: Promise<void> | undefined;
  const bindCid = cid === 'any' ? VMADDR_CID_ANY : cid;
  const listener = vsockListen({ cid: bindCid, port }, (err, fd, peer) => {
    if (err) return onError(err);
    let stream: Duplex;
    try {
      stream = adopt(fd!);
    } catch (e) {
      return onError(e as Error);
    }
    onConnection(stream, peer!);
  });
  return {
    port: listener.port,
    close: () => (closed ??= new Promise<void>((resolve) => listener.close(resolve))),
  };
}

/** Connects to `cid`:`port`. CIDs 0..2 need `allowHostCid: true` (see native/vsock.ts). */
export async function connectVsock(
  cid: number,
  port: number,
  opts: VsockConnectOptions = {},
): Promise<{ stream: Duplex; peer: VsockAddress }> {
  const { fd } = await vsockConnect(cid, port, opts);
  return { stream: adopt(fd), peer: { cid, port } };
}

/** Wraps a connected fd; if that fails the fd is closed, not leaked. */
function adopt(fd: number): Duplex {
  try {
    return new UvStreamDuplex(fd);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}
