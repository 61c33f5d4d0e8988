// In-VM only (test/vm/boot-checks.sh runs it with the packaged runtime):
//   /usr/lib/dirvisor/guest/node vsock-smoke.mjs /usr/lib/dirvisor/guest/dirvisor_native.node
// The packaged addon over real AF_VSOCK through vsock_loopback: listen on CID any, connect to
// CID 1 (VMADDR_CID_LOCAL), echo 4 MiB back, check the bytes and the peer CID the kernel gives.
// SAFETY: connects to CID 1 only, and refuses to run unless it is inside the test VM.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';

if (!/\bharness\.run=1\b/.test(readFileSync('/proc/cmdline', 'utf8'))) {
  console.error('vsock-smoke: not inside the test VM (no harness.run=1 on the kernel command line); refusing to connect');
  process.exit(2);
}
const native = createRequire(import.meta.url)(process.argv[2]);
const { UvStream } = native;
const PORT = 7000 + Math.floor(Math.random() * 1000);
const payload = randomBytes(4 << 20);

const fail = (msg) => {
  console.error(`vsock-smoke: ${msg}`);
  process.exit(1);
};
setTimeout(() => fail('timed out after 60 s'), 60_000).unref();

let peer;
const listener = native.vsockListen(0xffffffff, PORT, 16, (err, fd, cid, port) => {
  if (err) fail(`accept: ${err.message}`);
  peer = { cid, port };
  // echo server
  const s = new UvStream(fd, (chunk, e) => {
    if (e) fail(`server read: ${e.message}`);
    if (chunk === null) return s.shutdown(() => s.close());
    s.write([Buffer.from(chunk)], (we) => we && fail(`server write: ${we.message}`));
  });
  s.readStart();
});

const t0 = process.hrtime.bigint();
native.vsockConnect(1, PORT, { allowHostCid: true, timeoutMs: 5000 }, (err, fd, localCid) => {
  if (err) fail(`connect to vsock://1:${PORT}: ${err.message}`);
  const got = [];
  let n = 0;
  const c = new UvStream(fd, (chunk, e) => {
    if (e) fail(`client read: ${e.message}`);
    if (chunk === null) {
      const back = Buffer.concat(got);
      if (!back.equals(payload)) fail(`echo differs: sent ${payload.length} bytes, got ${back.length}`);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      console.log(`vsock-smoke: ok, ${payload.length} bytes echoed over AF_VSOCK CID 1 in ${ms.toFixed(0)} ms; local CID ${localCid}, peer seen by the listener: cid ${peer?.cid} port ${peer?.port}`);
      if (peer?.cid !== 1) fail(`the listener saw peer CID ${peer?.cid}, expected 1`);
      c.close();
      listener.close(() => process.exit(0));
      return;
    }
    got.push(Buffer.from(chunk));
    n += chunk.length;
  });
  c.readStart();
  c.write([payload], (we) => {
    if (we) fail(`client write: ${we.message}`);
    c.shutdown((se) => se && fail(`shutdown: ${se.message}`));
  });
});
