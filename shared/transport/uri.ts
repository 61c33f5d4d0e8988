// Transport addresses, one URI each:
//   vsock://CID:PORT  vsock://any:PORT        AF_VSOCK (peer identified by its CID)
//   hvsock:///path/vm.vsock:PORT              Firecracker / Cloud Hypervisor hybrid vsock
//   unix:///path/to.sock                      development, tests, chaining (token required)
//   tcp://host:port                           development, tests, chaining (token required)

export type Address =
  | { transport: 'vsock'; cid: number | 'any'; port: number }
  | { transport: 'hvsock'; path: string; port: number }
  | { transport: 'unix'; path: string }
  | { transport: 'tcp'; host: string; port: number };

export class AddressError extends Error {
  constructor(uri: string, problem: string) {
    super(`invalid transport URI "${uri}": ${problem} (expected vsock://CID:PORT, vsock://any:PORT, hvsock:///path:PORT, unix:///path or tcp://host:port)`);
    this.name = 'AddressError';
  }
}

const U32_MAX = 0xffffffff;

function parsePort(uri: string, text: string, max = U32_MAX): number {
  if (!/^\d+$/.test(text)) throw new AddressError(uri, `port "${text}" is not a number`);
  const port = Number(text);
  if (port > max) throw new AddressError(uri, `port ${port} is out of range`);
  return port;
}

export function parseAddress(uri: string): Address {
  const m = /^([a-z]+):\/\/(.*)$/.exec(uri);
  if (!m) throw new AddressError(uri, 'no scheme');
  const [, scheme, rest] = m;
  switch (scheme) {
    case 'vsock': {
      const v = /^([^:]+):([^:]+)$/.exec(rest);
      if (!v) throw new AddressError(uri, 'vsock needs CID:PORT');
      const cid = v[1] === 'any' ? 'any' : /^\d+$/.test(v[1]) ? Number(v[1]) : NaN;
      if (Number.isNaN(cid) || (typeof cid === 'number' && cid > U32_MAX)) throw new AddressError(uri, `CID "${v[1]}" is not a number or "any"`);
      return { transport: 'vsock', cid, port: parsePort(uri, v[2]) };
    }
    case 'hvsock': {
      const i = rest.lastIndexOf(':');
      if (i < 0 || !rest.startsWith('/')) throw new AddressError(uri, 'hvsock needs an absolute socket path and :PORT');
      return { transport: 'hvsock', path: rest.slice(0, i), port: parsePort(uri, rest.slice(i + 1)) };
    }
    case 'unix':
      if (!rest.startsWith('/')) throw new AddressError(uri, 'unix needs an absolute path (unix:///run/x.sock)');
      return { transport: 'unix', path: rest };
    case 'tcp': {
      const t = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(rest);
      if (!t) throw new AddressError(uri, 'tcp needs host:port');
      return { transport: 'tcp', host: t[1].replace(/^\[|\]$/g, ''), port: parsePort(uri, t[2], 65535) };
    }
    default:
      throw new AddressError(uri, `unknown scheme "${scheme}"`);
  }
}

export function formatAddress(a: Address): string {
  switch (a.transport) {
    case 'vsock': return `vsock://${a.cid}:${a.port}`;
    case 'hvsock': return `hvsock://${a.path}:${a.port}`;
    case 'unix': return `unix://${a.path}`;
    case 'tcp': return `tcp://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;
  }
}
