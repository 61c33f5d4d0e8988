// sd_notify(3) from the addon (native/systemd.ts): datagrams reach a real AF_UNIX SOCK_DGRAM socket,
// as systemd's would. Node has no Unix datagram sockets, so the receiving end is a small python3
// child. These tests change process.env (NOTIFY_SOCKET, WATCHDOG_*), hence serial.
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import fs from 'node:fs';
import readline from 'node:readline';
import { sdNotify, sdNotifyQuiet, startWatchdog, watchdogIntervalMs } from '../native/systemd.js';
import { tempDir } from './helpers/sockets.js';

const RECEIVER = `
import json, socket, sys
addr = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind('\\0' + addr[1:] if addr.startswith('@') else addr)
s.settimeout(20)
print('BOUND', flush=True)
while True:
    try:
        d = s.recv(65536)
    except socket.timeout:
        break
    print(json.dumps(d.decode()), flush=True)
`;

interface Receiver {
  child: ChildProcess;
  /** Resolves with the next datagram (in order of arrival). */
  next(timeoutMs?: number): Promise<string>;
  close(): void;
}

async function receiver(addr: string): Promise<Receiver> {
  const child = spawn('python3', ['-c', RECEIVER, addr], { stdio: ['ignore', 'pipe', 'inherit'] });
  const rl = readline.createInterface({ input: child.stdout! });
  const queue: string[] = [];
  const waiters: Array<(s: string) => void> = [];
  let bound!: () => void;
  const isBound = new Promise<void>((resolve) => (bound = resolve));
  rl.on('line', (line) => {
    if (line === 'BOUND') return bound();
    const msg = JSON.parse(line) as string;
    const w = waiters.shift();
    if (w) w(msg);
    else queue.push(msg);
  });
  const exited = once(child, 'exit').then(() => {
    throw new Error('the python3 receiver exited before binding');
  });
  await Promise.race([isBound, exited]);
  return {
    child,
    next(timeoutMs = 5000) {
      const queued = queue.shift();
      if (queued !== undefined) return Promise.resolve(queued);
      return new Promise<string>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('no datagram within ' + timeoutMs + ' ms')), timeoutMs);
        waiters.push((s) => {
          clearTimeout(t);
          resolve(s);
        });
      });
    },
    close() {
      child.kill();
    },
  };
}

function withEnv<T>(vars: Record<string, string | undefined>, fn: () => T): T {
  const saved: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(vars)) {
    saved[k] = process.env[k];
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  try {
    return fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

test.serial('without NOTIFY_SOCKET sdNotify returns false and the watchdog is off', (t) => {
  withEnv({ NOTIFY_SOCKET: undefined, WATCHDOG_USEC: undefined, WATCHDOG_PID: undefined }, () => {
    t.false(sdNotify('READY=1'));
    t.false(sdNotifyQuiet('READY=1'));
    t.is(watchdogIntervalMs(), 0);
    const wd = startWatchdog();
    t.is(wd.periodMs, 0);
    wd.stop();
  });
});

test.serial('READY=1 reaches a socket named by a path in NOTIFY_SOCKET', async (t) => {
  const dir = tempDir();
  const sock = path.join(dir, 'notify');
  const r = await receiver(sock);
  try {
    t.true(withEnv({ NOTIFY_SOCKET: sock }, () => sdNotify('READY=1')));
    t.is(await r.next(), 'READY=1');
    // several assignments in one datagram, as systemd accepts them
    t.true(withEnv({ NOTIFY_SOCKET: sock }, () => sdNotify('STATUS=serving 2 exports\nMAINPID=' + process.pid)));
    t.is(await r.next(), `STATUS=serving 2 exports\nMAINPID=${process.pid}`);
  } finally {
    r.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.serial('an "@name" NOTIFY_SOCKET is in the abstract namespace', async (t) => {
  const name = `@dirvisor-test-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const r = await receiver(name);
  try {
    t.true(withEnv({ NOTIFY_SOCKET: name }, () => sdNotify('READY=1')));
    t.is(await r.next(), 'READY=1');
    // the explicit socketPath argument works as well
    t.true(sdNotify('STOPPING=1', name));
    t.is(await r.next(), 'STOPPING=1');
  } finally {
    r.close();
  }
});

test.serial('a socket nobody listens on is a system error, and sdNotifyQuiet swallows it', (t) => {
  const dir = tempDir();
  try {
    const sock = path.join(dir, 'nobody');
    const err = t.throws(() => sdNotify('READY=1', sock)) as Error & { code: string; syscall: string; errno: number };
    t.is(err.code, 'ENOENT');
    t.is(err.syscall, 'sendto');
    t.true(err.errno < 0);
    t.false(withEnv({ NOTIFY_SOCKET: sock }, () => sdNotifyQuiet('READY=1')));
    t.throws(() => sdNotify('READY=1', 'vsock:2:1234'), { code: 'EAFNOSUPPORT' } as never);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.serial('watchdogIntervalMs follows WATCHDOG_USEC and WATCHDOG_PID', (t) => {
  withEnv({ WATCHDOG_USEC: '20000000', WATCHDOG_PID: undefined }, () => t.is(watchdogIntervalMs(), 20000));
  withEnv({ WATCHDOG_USEC: '20000000', WATCHDOG_PID: String(process.pid) }, () => t.is(watchdogIntervalMs(), 20000));
  withEnv({ WATCHDOG_USEC: '20000000', WATCHDOG_PID: String(process.pid + 1) }, () => t.is(watchdogIntervalMs(), 0));
  withEnv({ WATCHDOG_USEC: 'junk', WATCHDOG_PID: undefined }, () => t.is(watchdogIntervalMs(), 0));
  withEnv({ WATCHDOG_USEC: '0', WATCHDOG_PID: undefined }, () => t.is(watchdogIntervalMs(), 0));
});

test.serial('startWatchdog pings WATCHDOG=1 at half the interval', async (t) => {
  const dir = tempDir();
  const sock = path.join(dir, 'notify');
  const r = await receiver(sock);
  const saved = { ...process.env };
  try {
    process.env.NOTIFY_SOCKET = sock;
    process.env.WATCHDOG_USEC = '400000'; // 400 ms: a ping every 200 ms
    process.env.WATCHDOG_PID = String(process.pid);
    const started = Date.now();
    const wd = startWatchdog();
    t.is(wd.periodMs, 200);
    try {
      t.is(await r.next(), 'WATCHDOG=1'); // at once
      t.is(await r.next(), 'WATCHDOG=1');
      t.is(await r.next(), 'WATCHDOG=1');
    } finally {
      wd.stop();
    }
    const elapsed = Date.now() - started;
    t.true(elapsed >= 350 && elapsed < 10_000, `3 pings took ${elapsed} ms`);
  } finally {
    for (const k of ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID']) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
    r.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
