// Typed access to the addon's AF_VSOCK functions (native/src/vsock.cc) and a stream.Duplex over
// its UvStream primitive (native/src/uv_stream.cc). Nothing vsock-specific happens in the Duplex:
// it drives any connected stream fd, so tests can run it on a socketpair.
import { constants } from 'node:os';
import { Duplex, type DuplexOptions } from 'node:stream';
import { getSystemErrorMap } from 'node:util';
import { native } from './index.js';

/** VMADDR_CID_ANY / VMADDR_PORT_ANY: bind to every CID, or let the kernel pick the port. */
export const VMADDR_CID_ANY = 0xffffffff;
export const VMADDR_PORT_ANY = 0xffffffff;
/** The hypervisor host. Connecting to CIDs 0..2 needs `allowHostCid: true`. */
export const VMADDR_CID_HOST = 2;

export interface VsockAddress {
  cid: number;
  port: number;
}

/** An Error as the addon throws it: Node system-error shape. */
export interface VsockError extends Error {
  code: string;
  errno?: number;
  syscall?: string;
}

/** readStart/write/shutdown return 0 or a negative errno (then the callback never runs). */
interface NativeUvStream {
  readStart(): number;
  readStop(): void;
  write(chunks: Uint8Array[], cb: (err: VsockError | null) => void): number;
  shutdown(cb: (err: VsockError | null) => void): number;
  close(cb?: () => void): void;
  ref(): void;
  unref(): void;
  readonly writeQueueSize: number;
  readonly fd: number;
  readonly closed: boolean;
}

type NativeUvStreamCtor = new (
  fd: number,
  onRead: (chunk: Buffer | null, err?: VsockError) => void,
) => NativeUvStream;

export interface VsockListener {
  /** The bound port: the kernel's choice when VMADDR_PORT_ANY was asked. */
  readonly port: number;
  readonly cid: number;
  /** Stops accepting and closes the socket; `cb` runs once it is closed. Idempotent. */
  close(cb?: () => void): void;
  ref(): void;
  unref(): void;
}

export interface VsockConnectOptions {
  /** Permit CIDs 0..2 (hypervisor, loopback, host). Off by default: a safety net. */
  allowHostCid?: boolean;
  /** The kernel's connect timeout (SO_VM_SOCKETS_CONNECT_TIMEOUT); kernel default is 2 s. */
  timeoutMs?: number;
}

const UvStream = native.UvStream as NativeUvStreamCtor;

/** A negative errno returned by the addon, as the same Error shape its callbacks deliver. */
function statusError(status: number, syscall: string): VsockError {
  const [code, description] = getSystemErrorMap().get(status) ?? [`E${-status}`, 'unknown error'];
  return Object.assign(new Error(`${syscall} failed: ${code} (${description})`), {
    code,
    errno: status,
    syscall,
  });
}

/** This machine's CID (ioctl on /dev/vsock). Throws ENOENT with a hint if vsock is absent. */
export function localCid(): number {
  return native.localCid() as number;
}

/** Peer and local address of a connected AF_VSOCK fd. */
export function peerAddress(fd: number): VsockAddress {
  return native.peerAddress(fd) as VsockAddress;
}
export function localAddress(fd: number): VsockAddress {
  return native.localAddress(fd) as VsockAddress;
}

/** Two connected AF_UNIX stream fds (tests of the stream path). */
/**
 * Sets a unix/tcp socket's kernel send and receive buffers to `bytes` (0: leaves them) and returns
 * the sizes in effect (the kernel doubles what it is given, for its bookkeeping).
 */
export function setStreamBuffers(fd: number, bytes: number): { send: number; recv: number } {
  return native.setStreamBuffers(fd, bytes) as { send: number; recv: number };
}

export function socketpair(): [number, number] {
  return native.socketpair() as [number, number];
}

/**
 * Binds and listens (synchronously; throws e.g. EADDRINUSE). Accepted fds are non-blocking,
 * close-on-exec and belong to the callee of `onConnection`. `err` reports accept failures
 * (e.g. EMFILE, after which accepting pauses briefly); the listener keeps running.
 */
export function vsockListen(
  opts: { cid?: number; port: number; backlog?: number },
  onConnection: (err: VsockError | null, fd?: number, peer?: VsockAddress) => void,
): VsockListener {
  return native.vsockListen(
    opts.cid ?? VMADDR_CID_ANY,
    opts.port,
    opts.backlog ?? 128,
    (err: VsockError | null, fd?: number, cid?: number, port?: number) => {
      if (err) onConnection(err);
      else onConnection(null, fd, { cid: cid!, port: port! });
    },
  ) as VsockListener;
}

/**
 * Connects without blocking the loop. Resolves with the connected fd (the caller owns it) and
 * the local address. CIDs 0..2 are refused before any socket exists unless allowHostCid is set.
 */
export function vsockConnect(
  cid: number,
  port: number,
  opts: VsockConnectOptions = {},
): Promise<{ fd: number; local: VsockAddress }> {
  return new Promise((resolve, reject) => {
    native.vsockConnect(
      cid,
      port,
      opts,
      (err: VsockError | null, fd?: number, localCid?: number, localPort?: number) => {
        if (err) reject(err);
        else resolve({ fd: fd!, local: { cid: localCid!, port: localPort! } });
      },
    );
  });
}

/**
 * A Duplex over a connected stream fd, which it takes over (closed on destroy).
 * - reading follows push() backpressure: the fd is read only while the readable side wants data;
 * - writes go straight to libuv: a corked [header, payload] pair becomes one writev, no copy;
 * - end() half-closes (shutdown SHUT_WR); destroy() closes the fd.
 * allowHalfOpen defaults to false, as for net.Socket: the peer's EOF ends our side too.
 */
export class UvStreamDuplex extends Duplex {
  #handle: NativeUvStream | null;
  #reading = false;

  constructor(fd: number, opts: DuplexOptions = {}) {
    super({ allowHalfOpen: false, ...opts, objectMode: false, decodeStrings: true });
    this.#handle = new UvStream(fd, (chunk, err) => this.#onRead(chunk, err));
  }

  /** Bytes handed to libuv but not yet written to the kernel. */
  get writeQueueSize(): number {
    return this.#handle?.writeQueueSize ?? 0;
  }

  /** The underlying fd, or -1 once closed. */
  get fd(): number {
    return this.#handle?.fd ?? -1;
  }

  /** Let the process exit while this stream is open (like net.Socket.unref()). */
  unref(): this {
    this.#handle?.unref();
    return this;
  }

  ref(): this {
    this.#handle?.ref();
    return this;
  }

  #onRead(chunk: Buffer | null, err?: VsockError): void {
    if (this.destroyed) return;
    if (err) {
      this.destroy(err);
      return;
    }
    if (chunk === null) {
      this.#stopReading();
      this.push(null);
      return;
    }
    if (!this.push(chunk)) this.#stopReading();
  }

  #stopReading(): void {
    if (this.#reading) {
      this.#reading = false;
      this.#handle?.readStop();
    }
  }

  override _read(): void {
    if (this.#reading || !this.#handle) return;
    this.#reading = true;
    const status = this.#handle.readStart();
    if (status < 0) this.destroy(statusError(status, 'read'));
  }

  #send(chunks: Buffer[], cb: (err?: Error | null) => void): void {
    const status = this.#handle
      ? this.#handle.write(chunks, (err) => cb(err))
      : -constants.errno.EBADF;
    if (status < 0) cb(statusError(status, 'write'));
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.#send([chunk], cb);
  }

  override _writev(
    chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>,
    cb: (err?: Error | null) => void,
  ): void {
    this.#send(
      chunks.map((c) => c.chunk),
      cb,
    );
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (!this.#handle) {
      cb();
      return;
    }
    // ENOTCONN: the peer is already gone; there is nothing left to half-close.
    const done = (err: VsockError | null) => cb(err && err.code !== 'ENOTCONN' ? err : null);
    const status = this.#handle.shutdown(done);
    if (status < 0) done(statusError(status, 'shutdown'));
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const handle = this.#handle;
    this.#handle = null;
    this.#reading = false;
    if (!handle) {
      cb(err);
      return;
    }
    handle.close(() => cb(err));
  }
}
