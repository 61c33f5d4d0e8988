// unix://, tcp:// and hvsock:// transports with a real session on top; hvsock against a fake VMM
// socket in the test that speaks the documented CONNECT handshake.
import test from 'ava';
import net from 'node:net';
import path from 'node:path';
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, listen, parseAddress, type PeerIdentity } from '../shared/transport/index.js';
import { connectHvsock } from '../shared/transport/hvsock.js';
import { Session } from '../shared/rpc/session.js';
import { silentLogger } from '../shared/log.js';
import { tempDir } from './helpers/sockets.js';
import { setStreamBuffers } from '../native/vsock.js';
import { SOCKET_BUFFER_BYTES } from '../shared/transport/net.js';

async function echoOverSession(uri: string, t: import('ava').ExecutionContext): Promise<PeerIdentity> {
  let seenPeer: PeerIdentity | undefined;
  const listener = await listen(uri, (stream, peer) => {
    seenPeer = peer;
    new Session(stream, { logger: silentLogger(), keepaliveMs: 0, onRequest: (r) => ({ body: { data: {} }, payload: r.payload }) });
  });
  t.teardown(() => listener.close());
  const { stream } = await connect(listener.uri);
  const s = new Session(stream, { logger: silentLogger(), keepaliveMs: 0 });
  const reply = await s.request({ write: { node: 1, fh: 1, offset: 0 } }, { payload: Buffer.from('ping over ' + uri) });
  t.is(reply.payload!.toString(), 'ping over ' + uri);
  s.close();
  return seenPeer!;
}

test('unix:// carries a session; the peer is identified only by the socket path', async (t) => {
  const dir = tempDir();
  const peer = await echoOverSession(`unix://${dir}/host.sock`, t);
  t.deepEqual(peer, { transport: 'unix', path: `${dir}/host.sock` });
});

test('tcp:// carries a session on an ephemeral port of 127.0.0.1', async (t) => {
  const peer = await echoOverSession('tcp://127.0.0.1:0', t);
  t.is(peer.transport, 'tcp');
});

for (const uri of ['unix://DIR/buf.sock', 'tcp://127.0.0.1:0']) {
  test(`${uri.split(':')[0]}:// sockets get ${SOCKET_BUFFER_BYTES >> 20} MiB kernel buffers on both ends (a 1 MiB frame crosses in one go)`, async (t) => {
    const fdOf = (s: unknown) => (s as { _handle: { fd: number } })._handle.fd;
    let accepted: number | undefined;
    const listener = await listen(uri.replace('DIR', tempDir()), (stream) => {
      accepted = fdOf(stream);
    });
    t.teardown(() => listener.close());
    const { stream } = await connect(listener.uri);
    t.teardown(() => stream.destroy());
    while (accepted === undefined) await sleep(5);
    for (const [side, fd] of [['connecting', fdOf(stream)], ['accepted', accepted]] as const) {
      const { send, recv } = setStreamBuffers(fd, 0);
      t.true(send >= SOCKET_BUFFER_BYTES && recv >= SOCKET_BUFFER_BYTES, `${side} socket: send ${send}, recv ${recv} bytes`);
    }
  });
}

test('a unix listener replaces a stale socket file but refuses a live one', async (t) => {
  const dir = tempDir();
  const p = `${dir}/stale.sock`;
  const first = await listen(`unix://${p}`, () => {});
  await t.throwsAsync(listen(`unix://${p}`, () => {}), { message: /another process is listening/ });
  await first.close();
  // Leave a socket file behind with nobody listening, as a killed agent would.
  execFileSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', p]);
  t.true(fs.existsSync(p));
  const second = await listen(`unix://${p}`, () => {});
  await second.close();
  t.pass();
});

test('connecting to nothing gives an error naming the address', async (t) => {
  const dir = tempDir();
  await t.throwsAsync(connect(`unix://${dir}/none.sock`), { message: new RegExp(`cannot connect to unix://${dir}/none.sock: ENOENT`) });
});

test('URIs are parsed strictly with errors that show the expected forms', (t) => {
  t.deepEqual(parseAddress('vsock://3:1024'), { transport: 'vsock', cid: 3, port: 1024 });
  t.deepEqual(parseAddress('vsock://any:5000'), { transport: 'vsock', cid: 'any', port: 5000 });
  t.deepEqual(parseAddress('hvsock:///run/fc/vm1.vsock:52'), { transport: 'hvsock', path: '/run/fc/vm1.vsock', port: 52 });
  t.deepEqual(parseAddress('tcp://[::1]:80'), { transport: 'tcp', host: '::1', port: 80 });
  t.throws(() => parseAddress('vsock://x:1'), { message: /CID "x" is not a number/ });
  t.throws(() => parseAddress('tcp://host:99999'), { message: /out of range/ });
  t.throws(() => parseAddress('unix://relative'), { message: /absolute path/ });
  t.throws(() => parseAddress('ftp://x'), { message: /unknown scheme "ftp".*expected vsock/ });
});

// ---- hybrid vsock ----

/** A stand-in for Firecracker's vsock Unix socket: answers CONNECT as told. */
async function fakeVmm(dir: string, behave: (sock: net.Socket, line: string) => void): Promise<{ path: string; close(): void }> {
  const p = path.join(dir, 'vm.vsock');
  const server = net.createServer((sock) => {
    let buf = '';
    const onData = (d: Buffer) => {
      buf += d.toString('latin1');
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        sock.off('data', onData);
        behave(sock, buf.slice(0, nl));
      }
    };
    sock.on('data', onData);
  });
  await new Promise<void>((r) => server.listen(p, r));
  return { path: p, close: () => server.close() };
}

test('hvsock: host-initiated CONNECT handshake, then the stream (bytes right after OK are kept)', async (t) => {
  const vmm = await fakeVmm(tempDir(), (sock, line) => {
    t.is(line, 'CONNECT 5000');
    sock.write('OK 1073741824\nfirst-bytes');
    sock.on('data', (d) => sock.write(d)); // the "guest" echoes
  });
  t.teardown(vmm.close);
  const { stream, peer } = await connect(`hvsock://${vmm.path}:5000`);
  t.deepEqual(peer, { transport: 'hvsock', socketPath: vmm.path });
  const got: Buffer[] = [];
  stream.on('data', (d: Buffer) => got.push(d));
  stream.write('echo me');
  await sleep(100);
  t.is(Buffer.concat(got).toString(), 'first-bytesecho me');
  stream.destroy();
});

test('hvsock: a wrong reply is a clear error', async (t) => {
  const vmm = await fakeVmm(tempDir(), (sock) => sock.write('NOPE\n'));
  t.teardown(vmm.close);
  const err = await t.throwsAsync(connectHvsock(vmm.path, 5000));
  t.regex(err!.message, /expected "OK <port>" after CONNECT, got "NOPE"/);
  t.is((err as NodeJS.ErrnoException).code, 'ECONNREFUSED');
});

test('hvsock: the VMM closing the socket during the handshake is a clear error', async (t) => {
  const vmm = await fakeVmm(tempDir(), (sock) => sock.end());
  t.teardown(vmm.close);
  const err = await t.throwsAsync(connectHvsock(vmm.path, 5000));
  t.regex(err!.message, /closed the socket during the CONNECT handshake/);
});

test('hvsock: no answer is a handshake timeout', async (t) => {
  const vmm = await fakeVmm(tempDir(), () => {});
  t.teardown(vmm.close);
  const started = Date.now();
  const err = await t.throwsAsync(connectHvsock(vmm.path, 5000, 200));
  t.regex(err!.message, /no reply to CONNECT within 200 ms/);
  t.is((err as NodeJS.ErrnoException).code, 'ETIMEDOUT');
  t.true(Date.now() - started < 2000);
});

test('hvsock: an endless line without newline is refused, not buffered forever', async (t) => {
  const vmm = await fakeVmm(tempDir(), (sock) => sock.write('X'.repeat(500)));
  t.teardown(vmm.close);
  await t.throwsAsync(connectHvsock(vmm.path, 5000), { message: /is not a line/ });
});

test('hvsock: guest-initiated connections arrive on <path>_<port> and identify the VM by its socket path', async (t) => {
  const dir = tempDir();
  const vmSock = path.join(dir, 'vm1.vsock');
  const peers: PeerIdentity[] = [];
  const listener = await listen(`hvsock://${vmSock}:1024`, (stream, peer) => {
    peers.push(peer);
    stream.end('hi');
  });
  t.teardown(() => listener.close());
  t.true(fs.existsSync(`${vmSock}_1024`));
  // The VMM forwards the guest's connection to the host's listener.
  const s = net.connect(`${vmSock}_1024`);
  const data = await new Promise<string>((resolve) => {
    let got = '';
    s.on('data', (d) => (got += d));
    s.on('end', () => resolve(got));
  });
  t.is(data, 'hi');
  t.deepEqual(peers, [{ transport: 'hvsock', socketPath: vmSock }]);
});
