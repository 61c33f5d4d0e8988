// The stream path (native UvStream + UvStreamDuplex) on AF_UNIX socketpairs: it is the same code
// that drives accepted/connected vsock fds, and it can run anywhere.
import test from 'ava';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { constants } from 'node:os';
import { promisify } from 'node:util';
import { native } from '../native/index.js';
import { UvStreamDuplex, socketpair, type VsockError } from '../native/vsock.js';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function pair(opts?: ConstructorParameters<typeof UvStreamDuplex>[1]): [UvStreamDuplex, UvStreamDuplex] {
  const [x, y] = socketpair();
  return [new UvStreamDuplex(x, opts), new UvStreamDuplex(y, opts)];
}

/** Everything until EOF. (Not `for await`: the iterator destroys the stream at the end.) */
function readAll(s: UvStreamDuplex): Promise<Buffer> {
  const parts: Buffer[] = [];
  return new Promise((resolve, reject) => {
    s.on('data', (chunk: Buffer) => parts.push(chunk));
    s.once('end', () => resolve(Buffer.concat(parts)));
    s.once('error', reject);
  });
}

/** Runs an ESM snippet in a child node; `MOD` in the snippet is the compiled native/vsock.js. */
async function child(script: string, nodeArgs: string[] = []) {
  const mod = JSON.stringify(new URL('../native/vsock.js', import.meta.url).href);
  const code = script.replaceAll('MOD', mod);
  try {
    const { stdout, stderr } = await run(
      process.execPath,
      [...nodeArgs, '--input-type=module', '-e', code],
      { timeout: 30_000 },
    );
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout: string; stderr: string; killed?: boolean };
    if (e.killed) throw new Error(`child timed out: ${e.stderr}`);
    return { code: e.code ?? -1, stdout: e.stdout, stderr: e.stderr };
  }
}

test('bytes round-trip both ways', async (t) => {
  const [a, b] = pair({ allowHalfOpen: true });
  a.write('hello from a');
  const [fromA] = await once(b, 'data');
  t.is(fromA.toString(), 'hello from a');
  b.write(Buffer.from('hello from b'));
  const [fromB] = await once(a, 'data');
  t.is(fromB.toString(), 'hello from b');
  a.destroy();
  b.destroy();
  await Promise.all([once(a, 'close'), once(b, 'close')]);
  t.is(a.fd, -1);
});

test('a corked [header, payload] goes down as one writev', async (t) => {
  const [a, b] = pair();
  const batches: number[] = [];
  const orig = a._writev!.bind(a);
  a._writev = (chunks, cb) => {
    batches.push(chunks.length);
    orig(chunks, cb);
  };
  const header = Buffer.alloc(4);
  const payload = randomBytes(100_000);
  header.writeUInt32BE(payload.length);
  a.cork();
  a.write(header);
  a.write(payload);
  process.nextTick(() => a.uncork());
  a.end();
  const got = await readAll(b);
  t.deepEqual(batches, [2]);
  t.true(got.equals(Buffer.concat([header, payload])));
});

test('many small writes keep their order', async (t) => {
  const [a, b] = pair();
  const expected: Buffer[] = [];
  for (let i = 0; i < 2000; i++) {
    const buf = Buffer.from(`#${i};`);
    expected.push(buf);
    a.write(buf);
  }
  a.end();
  t.is((await readAll(b)).toString(), Buffer.concat(expected).toString());
});

test('64 MiB with a slow reader: backpressure on both sides keeps buffers bounded', async (t) => {
  const [a, b] = pair();
  const chunk = randomBytes(1 << 20);
  const total = 64 << 20;
  const sent = createHash('sha256');
  const got = createHash('sha256');
  let writesRefused = 0;
  let maxWritable = 0;
  let maxQueue = 0;
  let queueSeenWhileReaderPaused = 0;
  let maxReadableWhilePaused = 0;

  const writer = (async () => {
    for (let n = 0; n < total; n += chunk.length) {
      sent.update(chunk);
      const ok = a.write(chunk);
      maxWritable = Math.max(maxWritable, a.writableLength);
      maxQueue = Math.max(maxQueue, a.writeQueueSize);
      if (!ok) {
        writesRefused++;
        await once(a, 'drain');
      }
    }
    a.end();
  })();

  let received = 0;
  let sincePause = 0;
  const reader = new Promise<void>((resolve, reject) => {
    b.on('data', (d: Buffer) => {
      got.update(d);
      received += d.length;
      sincePause += d.length;
      if (sincePause >= 4 << 20) {
        // Slow reader: stop for a while, then look at what piled up meanwhile.
        sincePause = 0;
        b.pause();
        setTimeout(() => {
          maxReadableWhilePaused = Math.max(maxReadableWhilePaused, b.readableLength);
          queueSeenWhileReaderPaused = Math.max(queueSeenWhileReaderPaused, a.writeQueueSize);
          b.resume();
        }, 30);
      }
    });
    b.on('end', resolve);
    b.on('error', reject);
  });

  await Promise.all([writer, reader]);
  t.is(received, total);
  t.is(got.digest('hex'), sent.digest('hex'));
  t.true(writesRefused > 0, 'write() returned false');
  t.true(maxWritable <= chunk.length, `writableLength stayed <= one chunk (max ${maxWritable})`);
  t.true(maxQueue <= chunk.length, `libuv write queue stayed <= one chunk (max ${maxQueue})`);
  // While the reader sleeps, the kernel buffer fills and the writer's bytes wait in libuv...
  t.true(queueSeenWhileReaderPaused > 0, 'writer was held back while the reader slept');
  // ...and the reader stops reading the fd instead of slurping everything into memory.
  const bound = b.readableHighWaterMark + 65536;
  t.true(maxReadableWhilePaused <= bound, `readableLength ${maxReadableWhilePaused} <= ${bound}`);
  t.log({ writesRefused, maxWritable, maxQueue, queueSeenWhileReaderPaused, maxReadableWhilePaused });
});

test('end() half-closes: the peer sees EOF and can still answer', async (t) => {
  const [a, b] = pair({ allowHalfOpen: true });
  const closed = Promise.all([once(a, 'close'), once(b, 'close')]);
  a.end('ping');
  t.is((await readAll(b)).toString(), 'ping');
  t.false(b.writableEnded);
  b.end('pong');
  t.is((await readAll(a)).toString(), 'pong');
  await closed;
});

test('without allowHalfOpen, the peer EOF ends and closes both sides', async (t) => {
  const [a, b] = pair();
  b.resume();
  a.resume();
  a.end();
  await Promise.all([once(a, 'close'), once(b, 'close')]);
  t.true(a.destroyed && b.destroyed);
});

test('destroy closes the fd; the peer sees EOF; later writes fail without a crash', async (t) => {
  const [a, b] = pair();
  const bEnded = once(b, 'end');
  b.resume();
  a.write('some bytes that may or may not arrive');
  a.destroy();
  await once(a, 'close');
  t.is(a.fd, -1);
  await bEnded;
  const err = await new Promise<Error | null | undefined>((resolve) => a.write('late', resolve));
  t.is((err as VsockError).code, 'ERR_STREAM_DESTROYED');
});

test('destroy with writes in flight: their callbacks fail, nothing crashes', async (t) => {
  const [a, b] = pair();
  const big = randomBytes(8 << 20); // more than the socket buffer: stays queued in libuv
  const result = new Promise<Error | null | undefined>((resolve) => a.write(big, resolve));
  await sleep(10);
  t.true(a.writeQueueSize > 0);
  const closed = once(a, 'close');
  a.destroy();
  const err = await result;
  t.truthy(err, 'the pending write did not report success');
  await closed;
  b.destroy();
});

test('writing after the peer closed surfaces EPIPE as a stream error', async (t) => {
  const [a, b] = pair();
  b.destroy();
  await once(b, 'close');
  // `a` never reads, so it cannot notice the EOF first: the write itself must fail.
  const errP = once(a, 'error');
  const closed = new Promise((r) => a.once('close', r)); // right after 'error'
  a.write(Buffer.alloc(1024));
  const [err] = (await errP) as [VsockError];
  t.true(['EPIPE', 'ECONNRESET'].includes(err.code), err.code);
  t.is(err.syscall, 'write');
  t.regex(err.message, /write failed: E\w+ \(/);
  await closed;
});

test('peer closing with unread data surfaces ECONNRESET on read', async (t) => {
  const [a, b] = pair();
  await new Promise<void>((resolve, reject) => a.write('unread', (err) => (err ? reject(err) : resolve())));
  b.destroy(); // b never read: the kernel resets the connection
  await once(b, 'close');
  const errP = once(a, 'error');
  const closed = new Promise((r) => a.once('close', r)); // once() would reject on 'error'
  a.resume();
  const [err] = (await errP) as [VsockError];
  t.is(err.code, 'ECONNRESET');
  t.is(err.syscall, 'read');
  await closed;
});

test('the native primitive: EOF is onRead(null), close is idempotent, bad input throws', async (t) => {
  const [x, y] = socketpair();
  const reads: Array<Buffer | null> = [];
  const eof = new Promise<void>((resolve) => {
    const s = new native.UvStream(x, (buf: Buffer | null) => {
      reads.push(buf);
      if (buf === null) {
        s.close(() => resolve());
        s.close(() => t.fail('second close callback must not run'));
      }
    });
    t.is(s.writeQueueSize, 0);
    t.is(s.fd, x);
    t.is(s.readStart(), 0);
    t.throws(() => s.write('not an array', () => {}), { instanceOf: TypeError });
    t.throws(() => s.write(['a string'], () => {}), { instanceOf: TypeError });
  });
  const other = new native.UvStream(y, () => {});
  other.write([Buffer.from('ab'), new Uint8Array([99])], (err: Error | null) => {
    t.is(err, null);
    other.shutdown((err2: Error | null) => {
      t.is(err2, null);
      other.close();
    });
  });
  await eof;
  // Once closed, operations report EBADF as a negative errno (and never call back).
  const closed = new native.UvStream(socketpair()[0], () => t.fail());
  await new Promise((resolve) => closed.close(resolve));
  t.true(closed.closed);
  t.is(closed.fd, -1);
  t.is(closed.write([Buffer.from('x')], () => t.fail()), -constants.errno.EBADF);
  t.is(closed.shutdown(() => t.fail()), -constants.errno.EBADF);
  t.is(closed.readStart(), -constants.errno.EBADF);
  t.is(Buffer.concat(reads.filter((r): r is Buffer => r !== null)).toString(), 'abc');
  t.is(reads.at(-1), null);
  t.throws(() => new native.UvStream(-1, () => {}), { instanceOf: TypeError });
  t.throws(() => new native.UvStream(1 << 20, () => {}), { message: /EBADF|EINVAL/ });
});

test('an exception thrown in a data handler is an uncaught exception', async (t) => {
  const r = await child(`
    import { UvStreamDuplex, socketpair } from MOD;
    const [x, y] = socketpair();
    const a = new UvStreamDuplex(x), b = new UvStreamDuplex(y);
    b.on('data', () => { throw new Error('boom-in-data-handler'); });
    a.write('hi');
  `);
  t.not(r.code, 0);
  t.regex(r.stderr, /boom-in-data-handler/);
});

test('an exception thrown in a native onRead / write callback is an uncaught exception', async (t) => {
  const onRead = await child(`
    import { socketpair } from MOD;
    import { native } from ${JSON.stringify(new URL('../native/index.js', import.meta.url).href)};
    const [x, y] = socketpair();
    const s = new native.UvStream(x, () => { throw new Error('boom-in-onRead'); });
    s.readStart();
    new native.UvStream(y, () => {}).write([Buffer.from('x')], () => {});
  `);
  t.not(onRead.code, 0);
  t.regex(onRead.stderr, /boom-in-onRead/);

  const onWrite = await child(`
    import { UvStreamDuplex, socketpair } from MOD;
    const [x, y] = socketpair();
    const a = new UvStreamDuplex(x);
    a.write('x', () => { throw new Error('boom-in-write-callback'); });
  `);
  t.not(onWrite.code, 0);
  t.regex(onWrite.stderr, /boom-in-write-callback/);
});

test('such an exception reaches process.on("uncaughtException"), and life goes on', async (t) => {
  const r = await child(`
    import { UvStreamDuplex, socketpair } from MOD;
    let n = 0;
    const [x, y] = socketpair();
    const a = new UvStreamDuplex(x, { allowHalfOpen: true }), b = new UvStreamDuplex(y);
    // The stream keeps working after the handler ran: the next message still arrives.
    process.on('uncaughtException', (err) => { console.log('caught', err.message); a.write('two'); });
    b.on('data', (d) => { if (++n === 1) throw new Error('first'); console.log('then', d.toString()); b.destroy(); a.destroy(); });
    a.write('one');
  `);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /caught first\nthen two/);
});

test('open streams and pending reads do not keep an unref()ed process alive', async (t) => {
  const r = await child(`
    import { UvStreamDuplex, socketpair } from MOD;
    const [x, y] = socketpair();
    const a = new UvStreamDuplex(x), b = new UvStreamDuplex(y);
    a.resume(); b.resume();
    a.unref(); b.unref();
    console.log('done');
  `);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /done/);
});

test('many streams created, used, destroyed and garbage-collected', async (t) => {
  const r = await child(
    `
    import { UvStreamDuplex, socketpair } from MOD;
    import { once } from 'node:events';
import { constants } from 'node:os';
    for (let round = 0; round < 20; round++) {
      const pairs = [];
      for (let i = 0; i < 25; i++) {
        const [x, y] = socketpair();
        pairs.push([new UvStreamDuplex(x), new UvStreamDuplex(y)]);
      }
      await Promise.all(pairs.map(async ([a, b]) => {
        a.write('x'.repeat(1000));
        await once(b, 'data');
        if (round % 2) a.destroy(); else a.end();
        a.resume();
        b.resume();
        await Promise.all([once(a, 'close'), once(b, 'close')]);
      }));
      globalThis.gc();
      await new Promise((r) => setImmediate(r));
    }
    globalThis.gc();
    console.log('ok');
  `,
    ['--expose-gc'],
  );
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /ok/);
});

test('Worker.terminate() and process.exit() with streams, listener and connect in flight', async (t) => {
  // Each worker is torn down while its handles are busy: a read armed on an idle stream, 10 MiB of
  // writes queued in libuv (the peer does not read), a listener, a connect. The addon must close
  // them without calling JS and without aborting. The worker is idle in its event loop when
  // terminated: a JS call into *any* node-addon-api method during termination is a separate,
  // addon-wide matter (see NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS in the report).
  const r = await child(`
    import { Worker } from 'node:worker_threads';
    const code = \`
      const { UvStreamDuplex, socketpair, vsockListen, vsockConnect, localCid, VMADDR_PORT_ANY } =
        await import(MOD);
      const { parentPort } = await import('node:worker_threads');
      const [x, y] = socketpair();
      const idle = new UvStreamDuplex(x), silent = new UvStreamDuplex(y);
      idle.resume();                        // read armed, nothing ever comes
      const [p, q] = socketpair();
      const writer = new UvStreamDuplex(p), sink = new UvStreamDuplex(q);
      writer.write(Buffer.alloc(10 << 20)); // sink never reads: stays queued in libuv
      vsockListen({ port: VMADDR_PORT_ANY }, () => {});
      vsockConnect(localCid(), 1024).catch(() => {});
      setTimeout(() => parentPort.postMessage({ queued: writer.writeQueueSize }), 50);
    \`;
    for (let i = 0; i < 10; i++) {
      const w = new Worker(code, { eval: true });
      const { queued } = await new Promise((resolve) => w.once('message', resolve));
      if (!(queued > 0)) throw new Error('expected a queued write');
      await w.terminate();
    }
    const { UvStreamDuplex, socketpair } = await import(MOD);
    const [x, y] = socketpair();
    const a = new UvStreamDuplex(x), b = new UvStreamDuplex(y);
    a.resume(); b.write(Buffer.alloc(10 << 20));
    console.log('workers done');
    setTimeout(() => process.exit(7), 5);
  `);
  t.is(r.code, 7, r.stderr);
  t.regex(r.stdout, /workers done/);
});
