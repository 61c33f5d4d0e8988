// unix:// and tcp:// transports over node:net.
import net from 'node:net';
import fs from 'node:fs/promises';
import type { Duplex } from 'node:stream';
import type { PeerIdentity } from './peer.js';
import { setStreamBuffers } from '../../native/vsock.js';

/** Kernel socket buffers: a whole 1 MiB write frame crosses without waiting for the reader. */
export const SOCKET_BUFFER_BYTES = 4 << 20;

/** Widens a connected socket's kernel buffers (best effort: defaults are slower, not wrong). */
function widenBuffers(socket: net.Socket): void {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return;
  try {
    setStreamBuffers(fd, SOCKET_BUFFER_BYTES);
  } catch {
    // keep the defaults
  }
}

export interface Listener {
  /** The address actually bound (a tcp port of 0 becomes the real port). */
  readonly uri: string;
  close(): Promise<void>;
}

export type OnConnection = (stream: Duplex, peer: PeerIdentity) => void;

export function connectSocket(options: net.NetConnectOpts, what: string, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(options);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(Object.assign(new Error(`connecting to ${what} timed out after ${timeoutMs} ms`), { code: 'ETIMEDOUT' }));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      widenBuffers(socket);
      resolve(socket);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(Object.assign(new Error(`cannot connect to ${what}: ${err.code ?? err.message}`), { code: err.code, cause: err }));
    });
  });
}

/** Removes a leftover socket file that no process listens on any more; never a live one. */
async function removeStaleSocket(path: string): Promise<void> {
  const st = await fs.lstat(path).catch(() => null);
  if (!st) return;
  if (!st.isSocket()) throw Object.assign(new Error(`cannot listen on ${path}: it exists and is not a socket`), { code: 'EEXIST' });
  const alive = await connectSocket({ path }, path, 1000).then((s) => (s.destroy(), true), () => false);
  if (alive) throw Object.assign(new Error(`cannot listen on ${path}: another process is listening there`), { code: 'EADDRINUSE' });
  await fs.unlink(path);
}

export async function listenSocket(
  options: { path: string } | { host: string; port: number },
  identify: (socket: net.Socket) => PeerIdentity,
  onConnection: OnConnection,
): Promise<{ server: net.Server; uri: string }> {
  if ('path' in options) await removeStaleSocket(options.path);
  const server = net.createServer((socket) => {
    socket.setNoDelay?.(true);
    widenBuffers(socket);
    onConnection(socket, identify(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(Object.assign(new Error(`cannot listen on ${'path' in options ? options.path : `${options.host}:${options.port}`}: ${err.code ?? err.message}`), { code: err.code })));
    server.listen('path' in options ? { path: options.path } : { host: options.host, port: options.port }, () => resolve());
  });
  const addr = server.address();
  const uri = typeof addr === 'string' ? `unix://${addr}` : `tcp://${addr!.address.includes(':') ? `[${addr!.address}]` : addr!.address}:${addr!.port}`;
  return { server, uri };
}

export function closeServer(server: net.Server, path?: string): Promise<void> {
  return new Promise<void>((resolve) => server.close(() => resolve())).then(async () => {
    if (path) await fs.unlink(path).catch(() => {});
  });
}
