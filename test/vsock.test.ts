// AF_VSOCK sockets on this machine. SAFETY: this machine is itself a VM guest, so CIDs 0..2 reach
// the real host. Tests only bind/listen, and the only connect is to our OWN local CID (no vsock
// loopback here, so the kernel answers ENODEV). CIDs 0..2 are tested against the addon's refusal,
// which happens before any socket exists. Tests that count open sockets run serially.
import test from 'ava';
import { execFile } from 'node:child_process';
import { closeSync, readdirSync, readlinkSync } from 'node:fs';
import { promisify } from 'node:util';
import { native } from '../native/index.js';
import {
  VMADDR_CID_ANY,
  VMADDR_PORT_ANY,
  localCid,
  vsockConnect,
  vsockListen,
  type VsockError,
  type VsockListener,
} from '../native/vsock.js';
import { connectVsock, listenVsock } from '../shared/transport/vsock.js';

const run = promisify(execFile);

function socketFds(): number {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).startsWith('socket:');
    } catch {
      return false;
    }
  }).length;
}

/** Listens on a random free port (retrying on EADDRINUSE). */
function listenSomewhere(onConnection = () => {}): VsockListener {
  for (let attempt = 0; ; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 40000);
    try {
      return vsockListen({ port }, onConnection);
    } catch (err) {
      if ((err as VsockError).code !== 'EADDRINUSE' || attempt > 20) throw err;
    }
  }
}

const closeListener = (l: VsockListener) => new Promise<void>((resolve) => l.close(resolve));

/** The one CID we may connect to: our own. Never 0..2, never any. */
function ownCid(): number {
  const cid = localCid();
  if (!(cid > 2 && cid !== VMADDR_CID_ANY)) throw new Error(`unexpected local CID ${cid}`);
  return cid;
}

test('localCid reads this machine CID from /dev/vsock', (t) => {
  const cid = localCid();
  t.is(typeof cid, 'number');
  t.true(Number.isInteger(cid));
  t.true(cid > 2, 'a guest CID is above the reserved 0..2');
  t.not(cid, VMADDR_CID_ANY);
});

test('listen on vsock://any:PORT reports the port; close frees it', async (t) => {
  const l = listenSomewhere();
  t.true(l.port >= 20000 && l.port < 60000);
  t.is(l.cid, VMADDR_CID_ANY);
  await closeListener(l);
  // The port is free again.
  const again = vsockListen({ port: l.port }, () => {});
  t.is(again.port, l.port);
  await closeListener(again);
});

test('listen on port any gets a real port from the kernel', async (t) => {
  const l = vsockListen({ port: VMADDR_PORT_ANY }, () => {});
  t.true(Number.isInteger(l.port));
  t.not(l.port, VMADDR_PORT_ANY);
  await closeListener(l);
});

test('listen on a taken port fails with EADDRINUSE naming the port', async (t) => {
  const l = listenSomewhere();
  const err = t.throws(() => vsockListen({ port: l.port }, () => {})) as VsockError;
  t.is(err.code, 'EADDRINUSE');
  t.is(err.syscall, 'bind');
  t.is(typeof err.errno, 'number');
  t.regex(err.message, new RegExp(`CID any port ${l.port}`));
  await closeListener(l);
});

test('closing a listener twice is harmless and the close callback runs once', async (t) => {
  const l = listenSomewhere();
  let calls = 0;
  await new Promise<void>((resolve) => {
    l.close(() => {
      calls++;
      resolve();
    });
    l.close(() => calls++);
  });
  l.close();
  await new Promise((r) => setTimeout(r, 20));
  t.is(calls, 1);
});

test('listenVsock (transport) listens and closes', async (t) => {
  const server = await listenVsock(VMADDR_PORT_ANY, undefined, () => t.fail('no one can connect'));
  t.true(server.port > 0 && server.port !== VMADDR_PORT_ANY);
  await server.close();
  await server.close(); // idempotent
});

test.serial('connect to our own CID fails cleanly (no vsock loopback here)', async (t) => {
  const cid = ownCid();
  const before = socketFds();
  const err = (await t.throwsAsync(vsockConnect(cid, 1024))) as VsockError;
  t.true(err instanceof Error);
  t.is(typeof err.code, 'string');
  t.is(err.syscall, 'connect');
  t.true((err.errno ?? 0) < 0);
  t.regex(err.message, new RegExp(`CID ${cid} port 1024`));
  t.log(err.message);
  t.is(socketFds(), before, 'the failed socket is closed');
});

test('connect with a timeout option still reports the kernel error', async (t) => {
  const cid = ownCid();
  const err = (await t.throwsAsync(vsockConnect(cid, 1025, { timeoutMs: 300 }))) as VsockError;
  t.is(typeof err.code, 'string');
  t.regex(err.message, new RegExp(`CID ${cid} port 1025`));
});

test('connectVsock (transport) rejects with the same error', async (t) => {
  const cid = ownCid();
  const err = (await t.throwsAsync(connectVsock(cid, 1026))) as VsockError;
  t.is(typeof err.code, 'string');
  t.regex(err.message, new RegExp(`CID ${cid} port 1026`));
});

test.serial('CIDs 0, 1, 2 are refused before any socket is created', async (t) => {
  for (const cid of [0, 1, 2]) {
    const before = socketFds();
    let called = false;
    const err = t.throws(() =>
      native.vsockConnect(cid, 1024, {}, () => {
        called = true;
      }),
    ) as VsockError;
    t.is(err.code, 'ERR_VSOCK_HOST_CID');
    t.regex(err.message, new RegExp(`CID ${cid} port 1024 refused`));
    t.is(socketFds(), before, 'no socket was even created');
    await new Promise((r) => setImmediate(r));
    t.false(called, 'the callback never runs');
    // The promise APIs refuse the same way.
    const viaPromise = (await t.throwsAsync(vsockConnect(cid, 1024))) as VsockError;
    t.is(viaPromise.code, 'ERR_VSOCK_HOST_CID');
    const viaTransport = (await t.throwsAsync(connectVsock(cid, 1024))) as VsockError;
    t.is(viaTransport.code, 'ERR_VSOCK_HOST_CID');
    // Only a literal `true` lifts the refusal (and no test here ever passes it).
    for (const allowHostCid of [1, 'true', {}, null]) {
      const e = t.throws(() => native.vsockConnect(cid, 1024, { allowHostCid }, () => {})) as VsockError;
      t.is(e.code, 'ERR_VSOCK_HOST_CID');
    }
    t.is(socketFds(), before);
  }
});

test('CID any and port any are not connect destinations', async (t) => {
  const cid = ownCid();
  t.is(
    ((await t.throwsAsync(vsockConnect(VMADDR_CID_ANY, 1024))) as VsockError).code,
    'ERR_VSOCK_BAD_CID',
  );
  t.is(((await t.throwsAsync(vsockConnect(-1, 1024))) as VsockError).code, 'ERR_VSOCK_BAD_CID');
  t.is(
    ((await t.throwsAsync(vsockConnect(cid, VMADDR_PORT_ANY))) as VsockError).code,
    'ERR_VSOCK_BAD_PORT',
  );
});

test('bad arguments are type/range errors', (t) => {
  // All rejected before a socket exists; the CID is our own anyway.
  const cid = ownCid();
  t.throws(() => native.vsockConnect(String(cid), 1024, {}, () => {}), { instanceOf: TypeError });
  t.throws(() => native.vsockConnect(cid, 2 ** 32, {}, () => {}), { instanceOf: RangeError });
  t.throws(() => native.vsockConnect(cid, 1.5, {}, () => {}), { instanceOf: RangeError });
  t.throws(() => native.vsockConnect(cid, 1024, {}), { instanceOf: TypeError });
  t.throws(() => native.vsockListen(VMADDR_CID_ANY, 1024, 16), { instanceOf: TypeError });
});

test('peerAddress / localAddress refuse non-vsock fds', (t) => {
  const [a, b] = native.socketpair() as [number, number];
  try {
    t.is((t.throws(() => native.peerAddress(a)) as VsockError).code, 'EAFNOSUPPORT');
    t.is((t.throws(() => native.localAddress(a)) as VsockError).code, 'EAFNOSUPPORT');
    t.is((t.throws(() => native.peerAddress(1 << 20)) as VsockError).code, 'EBADF');
  } finally {
    closeSync(a);
    closeSync(b);
  }
});

test('an unref()ed listener does not keep the process alive', async (t) => {
  const mod = new URL('../native/vsock.js', import.meta.url).href;
  const script = `
    import { vsockListen, VMADDR_PORT_ANY } from ${JSON.stringify(mod)};
    const l = vsockListen({ port: VMADDR_PORT_ANY }, () => {});
    l.unref();
    console.log('listening', l.port);
  `;
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], {
    timeout: 10_000,
  });
  t.regex(stdout, /listening \d+/);
});
