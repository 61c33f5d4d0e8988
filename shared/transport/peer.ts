// Who is on the other end of a connection, as far as the transport (not the peer) can tell.
export type PeerIdentity =
  /** The kernel reports the VM's CID; a guest cannot forge it. */
  | { transport: 'vsock'; cid: number; port: number }
  /** The VMM's per-VM Unix socket identifies the VM. */
  | { transport: 'hvsock'; socketPath: string }
  /** Nothing identifies the peer: it must present a token in Hello. */
  | { transport: 'unix'; path: string }
  | { transport: 'tcp'; address: string; port: number };

export function needsToken(peer: PeerIdentity): boolean {
  return peer.transport === 'unix' || peer.transport === 'tcp';
}

export function describePeer(peer: PeerIdentity): string {
  switch (peer.transport) {
    case 'vsock': return `vsock CID ${peer.cid}`;
    case 'hvsock': return `hvsock ${peer.socketPath}`;
    case 'unix': return `unix ${peer.path}`;
    case 'tcp': return `tcp ${peer.address}:${peer.port}`;
  }
}
