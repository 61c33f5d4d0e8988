// Hybrid vsock (Firecracker, Cloud Hypervisor): the VMM exposes a guest's vsock device as a Unix
// socket on the host.
// - Host to guest: connect to the socket, send "CONNECT <port>\n", read "OK <hostport>\n", then the
//   stream is connected to the guest's listener on <port>.
// - Guest to host: the VMM connects to the Unix socket "<path>_<port>", on which the host listens.
// The socket path identifies the VM.
import type net from 'node:net';
import { connectSocket, listenSocket, closeServer, type Listener, type OnConnection } from './net.js';

export const HANDSHAKE_TIMEOUT_MS = 5000;
const MAX_REPLY_LINE = 64;

export class HvsockError extends Error {
  constructor(message: string, readonly code: string) {
    super(message);
    this.name = 'HvsockError';
  }
}

export async function connectHvsock(path: string, port: number, timeoutMs = HANDSHAKE_TIMEOUT_MS): Promise<net.Socket> {
  const what = `hybrid vsock ${path} port ${port}`;
  const socket = await connectSocket({ path }, what, timeoutMs);
  socket.write(`CONNECT ${port}\n`);
  // Read the reply line in paused mode ('readable' + read()), so whatever follows it stays in the
  // socket's buffer for the real consumer; a flowing-mode reader would drop it.
  return new Promise((resolve, reject) => {
    let line: Buffer = Buffer.alloc(0);
    const fail = (message: string, code: string) => {
      cleanup();
      socket.destroy();
      reject(new HvsockError(`${what}: ${message}`, code));
    };
    const timer = setTimeout(() => fail(`no reply to CONNECT within ${timeoutMs} ms`, 'ETIMEDOUT'), timeoutMs);
    const onReadable = () => {
      let chunk: Buffer | null;
      while ((chunk = socket.read() as Buffer | null) !== null) {
        line = Buffer.concat([line, chunk]);
        const nl = line.indexOf(0x0a);
        if (nl < 0) {
          if (line.length > MAX_REPLY_LINE) return fail(`reply to CONNECT is not a line: "${printable(line)}"`, 'EPROTO');
          continue;
        }
        const reply = line.subarray(0, nl).toString('latin1');
        if (!/^OK \d+$/.test(reply)) return fail(`expected "OK <port>" after CONNECT, got "${printable(line.subarray(0, nl))}" (is a guest listening on port ${port}?)`, 'ECONNREFUSED');
        cleanup();
        if (line.length > nl + 1) socket.unshift(line.subarray(nl + 1));
        return resolve(socket);
      }
    };
    const onEnd = () => fail('the VMM closed the socket during the CONNECT handshake (no guest listener on that port, or the VM is gone)', 'ECONNRESET');
    const onError = (err: NodeJS.ErrnoException) => fail(`socket error during handshake: ${err.code ?? err.message}`, err.code ?? 'EIO');
    const cleanup = () => {
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      socket.off('error', onError);
    };
    socket.on('readable', onReadable);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
    socket.on('error', onError);
  });
}

/** Listens for guest-initiated connections, which the VMM delivers on "<path>_<port>". */
export async function listenHvsock(path: string, port: number, onConnection: OnConnection): Promise<Listener> {
  const listenPath = `${path}_${port}`;
  const { server } = await listenSocket({ path: listenPath }, () => ({ transport: 'hvsock', socketPath: path }), onConnection);
  return { uri: `hvsock://${path}:${port}`, close: () => closeServer(server, listenPath) };
}

function printable(b: Buffer): string {
  return b.toString('latin1').replace(/[^\x20-\x7e]/g, '.').slice(0, MAX_REPLY_LINE);
}
