// One entry point for every transport: connect(uri) and listen(uri, onConnection) give a duplex
// byte stream plus what the transport says about the peer's identity.
import type { Duplex } from 'node:stream';
import { parseAddress, formatAddress } from './uri.js';
import { connectSocket, listenSocket, closeServer, type Listener, type OnConnection } from './net.js';
import { connectHvsock, listenHvsock } from './hvsock.js';
import { connectVsock, listenVsock } from './vsock.js';
import type { PeerIdentity } from './peer.js';

export type { Listener, OnConnection, PeerIdentity };
export { parseAddress, formatAddress };
export { needsToken, describePeer } from './peer.js';

export interface ConnectOptions {
  timeoutMs?: number;
  /** Allow vsock CIDs 0-2 (the hypervisor host). Only inside a test VM or a real guest. */
  allowHostCid?: boolean;
}

export interface Connection {
  stream: Duplex;
  peer: PeerIdentity;
}

export async function connect(uri: string, options: ConnectOptions = {}): Promise<Connection> {
  const addr = parseAddress(uri);
  const timeoutMs = options.timeoutMs ?? 10_000;
  switch (addr.transport) {
    case 'unix': {
      const stream = await connectSocket({ path: addr.path }, uri, timeoutMs);
      return { stream, peer: { transport: 'unix', path: addr.path } };
    }
    case 'tcp': {
      const stream = await connectSocket({ host: addr.host, port: addr.port, noDelay: true }, uri, timeoutMs);
      return { stream, peer: { transport: 'tcp', address: addr.host, port: addr.port } };
    }
    case 'hvsock': {
      const stream = await connectHvsock(addr.path, addr.port, timeoutMs);
      return { stream, peer: { transport: 'hvsock', socketPath: addr.path } };
    }
    case 'vsock': {
      if (addr.cid === 'any') throw new Error(`cannot connect to ${uri}: "any" is only for listening`);
      const { stream, peer } = await connectVsock(addr.cid, addr.port, { allowHostCid: options.allowHostCid, timeoutMs });
      return { stream, peer: { transport: 'vsock', cid: peer.cid, port: peer.port } };
    }
  }
}

export async function listen(uri: string, onConnection: OnConnection): Promise<Listener> {
  const addr = parseAddress(uri);
  switch (addr.transport) {
    case 'unix': {
      const { server, uri: bound } = await listenSocket({ path: addr.path }, () => ({ transport: 'unix', path: addr.path }), onConnection);
      return { uri: bound, close: () => closeServer(server, addr.path) };
    }
    case 'tcp': {
      const { server, uri: bound } = await listenSocket(
        { host: addr.host, port: addr.port },
        (s) => ({ transport: 'tcp', address: s.remoteAddress ?? '?', port: s.remotePort ?? 0 }),
        onConnection,
      );
      return { uri: bound, close: () => closeServer(server) };
    }
    case 'hvsock':
      return listenHvsock(addr.path, addr.port, onConnection);
    case 'vsock': {
      const l = await listenVsock(addr.port, addr.cid, (stream, peer) => onConnection(stream, { transport: 'vsock', cid: peer.cid, port: peer.port }));
      return { uri: formatAddress({ transport: 'vsock', cid: addr.cid, port: l.port }), close: () => l.close() };
    }
  }
}
