// npm run bench:rpc — round trips per second and MB/s of the RPC session over a unix socket, for
// 4 KiB and 1 MiB payloads, against a raw length-prefixed socket echo measured in the same run.
// The server side runs in a child process, as the host agent would.
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Session } from '../shared/rpc/session.js';
import { silentLogger } from '../shared/log.js';

const here = fileURLToPath(import.meta.url);

// ---------- servers (child process) ----------

function serveRaw(sockPath: string): void {
  net.createServer((sock) => {
    let buf: Buffer = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      while (buf.length >= 4) {
        const n = buf.readUInt32BE(0);
        if (buf.length < 4 + n) break;
        sock.write(buf.subarray(0, 4 + n));
        buf = buf.subarray(4 + n);
      }
    });
  }).listen(sockPath, () => process.send!('ready'));
}

function serveRpc(sockPath: string): void {
  net.createServer((sock) => {
    new Session(sock, { logger: silentLogger(), keepaliveMs: 0, maxIncoming: 1024, onRequest: (r) => ({ body: { data: {} }, payload: r.payload }) });
  }).listen(sockPath, () => process.send!('ready'));
}

// ---------- clients ----------

interface Result { roundTrips: number; seconds: number }

async function runRaw(sockPath: string, size: number, inFlight: number, seconds: number): Promise<Result> {
  const sock = net.connect(sockPath);
  await new Promise((r) => sock.once('connect', r));
  const msg: Buffer = Buffer.alloc(4 + size, 0x5a);
  msg.writeUInt32BE(size, 0);
  let done = 0;
  let buffered = 0;
  const end = Date.now() + seconds * 1000;
  const start = process.hrtime.bigint();
  return new Promise((resolve) => {
    let outstanding = 0;
    const send = () => {
      while (outstanding < inFlight && Date.now() < end) {
        sock.write(msg);
        outstanding++;
      }
      if (outstanding === 0) {
        sock.destroy();
        resolve({ roundTrips: done, seconds: Number(process.hrtime.bigint() - start) / 1e9 });
      }
    };
    sock.on('data', (d: Buffer) => {
      buffered += d.length;
      while (buffered >= msg.length) {
        buffered -= msg.length;
        done++;
        outstanding--;
      }
      send();
    });
    send();
  });
}

async function runRpc(sockPath: string, size: number, inFlight: number, seconds: number): Promise<Result> {
  const sock = net.connect(sockPath);
  await new Promise((r) => sock.once('connect', r));
  const session = new Session(sock, { logger: silentLogger(), keepaliveMs: 0 });
  const payload = Buffer.alloc(size, 0x5a);
  let done = 0;
  const end = Date.now() + seconds * 1000;
  const start = process.hrtime.bigint();
  const worker = async () => {
    while (Date.now() < end) {
      const r = await session.request({ write: { node: 2, fh: 1, offset: 0 } }, { payload });
      if (r.payload!.length !== size) throw new Error('short echo');
      done++;
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  session.close();
  return { roundTrips: done, seconds: secs };
}

async function startServer(kind: 'raw' | 'rpc', sockPath: string) {
  const child = spawn(process.execPath, [here, `--serve-${kind}`, sockPath], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  await new Promise((r) => child.once('message', r));
  return child;
}

async function main(): Promise<void> {
  const arg = process.argv[2];
  if (arg === '--serve-raw') return serveRaw(process.argv[3]);
  if (arg === '--serve-rpc') return serveRpc(process.argv[3]);

  const seconds = Number(process.env.BENCH_SECONDS ?? 3);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dirvisor-bench-'));
  const cases = [
    { label: '4 KiB, 1 in flight', size: 4096, inFlight: 1 },
    { label: '4 KiB, 32 in flight', size: 4096, inFlight: 32 },
    { label: '1 MiB, 1 in flight', size: 1 << 20, inFlight: 1 },
    { label: '1 MiB, 8 in flight', size: 1 << 20, inFlight: 8 },
  ];
  console.log(`dirvisor bench:rpc — unix socket, server in a child process, ${seconds}s per case, ${os.cpus().length} CPUs, Node ${process.version}`);
  console.log('payload/in-flight        | raw echo: rt/s      MB/s | dirvisor RPC: rt/s      MB/s | ratio');
  console.log('-------------------------+--------------------------+------------------------------+------');
  const raw = await startServer('raw', path.join(dir, 'raw.sock'));
  const rpc = await startServer('rpc', path.join(dir, 'rpc.sock'));
  try {
    for (const c of cases) {
      const a = await runRaw(path.join(dir, 'raw.sock'), c.size, c.inFlight, seconds);
      const b = await runRpc(path.join(dir, 'rpc.sock'), c.size, c.inFlight, seconds);
      const rtA = a.roundTrips / a.seconds;
      const rtB = b.roundTrips / b.seconds;
      // Each round trip moves the payload both ways.
      const mbA = (rtA * c.size * 2) / 1e6;
      const mbB = (rtB * c.size * 2) / 1e6;
      console.log(
        `${c.label.padEnd(24)} | ${rtA.toFixed(0).padStart(12)} ${mbA.toFixed(1).padStart(9)} | ${rtB.toFixed(0).padStart(16)} ${mbB.toFixed(1).padStart(9)} | ${(rtB / rtA).toFixed(2)}`,
      );
    }
  } finally {
    raw.kill();
    rpc.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
