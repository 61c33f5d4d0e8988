import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { Session, type IncomingRequest, type Reply } from '../shared/rpc/session.js';
import { FsError, E } from '../shared/fs/errors.js';
import { silentLogger } from '../shared/log.js';
import { encodeFrame } from '../shared/rpc/framing.js';
import { unixSocketPair } from './helpers/sockets.js';
import { capturingLogger } from './helpers/log.js';

/** Polls until `cond` holds or the deadline passes; returns whether it held. */
async function eventually(cond: () => boolean, timeoutMs = 5000): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) return false;
    await sleep(10);
  }
  return true;
}

type Handler = (req: IncomingRequest) => Promise<Reply> | Reply;

async function pair(handler?: Handler, serverOpts: Partial<ConstructorParameters<typeof Session>[1]> = {}) {
  const [a, b, cleanup] = await unixSocketPair();
  const client = new Session(a, { logger: silentLogger(), keepaliveMs: 0 });
  const server = new Session(b, { logger: silentLogger(), keepaliveMs: 0, onRequest: handler, ...serverOpts });
  return { client, server, cleanup, a, b };
}

test('1,000 concurrent requests answered out of order are each matched to their caller', async (t) => {
  const { client, cleanup } = await pair(async (req) => {
    await sleep(Math.random() * 20);
    return { body: { size: { size: Number(req.envelope.getattr!.node) * 3 } } };
  });
  t.teardown(cleanup);
  const replies = await Promise.all(
    Array.from({ length: 1000 }, (_, i) => client.request({ getattr: { node: i + 1 } }).then((f) => Number(f.envelope.size!.size))),
  );
  t.deepEqual(replies, Array.from({ length: 1000 }, (_, i) => (i + 1) * 3));
});

test('an error reply rejects with FsError carrying the errno and message', async (t) => {
  const { client, cleanup } = await pair(() => {
    throw new FsError(E.ENOENT, 'no such file: x');
  });
  t.teardown(cleanup);
  const err = await t.throwsAsync(client.request({ lookup: { parent: 1, name: Buffer.from('x') } }), { instanceOf: FsError });
  t.is(err!.errno, E.ENOENT);
  t.is(err!.message, 'no such file: x');
});

test('payloads travel beside the envelope in both directions', async (t) => {
  const { client, cleanup } = await pair((req) => ({ body: { data: {} }, payload: Buffer.concat([req.payload!, Buffer.from('!')]) }));
  t.teardown(cleanup);
  const big = Buffer.alloc(1 << 20, 7);
  const reply = await client.request({ write: { node: 1, fh: 1, offset: 0 } }, { payload: big });
  t.is(reply.payload!.length, (1 << 20) + 1);
  t.is(reply.payload![(1 << 20) - 1], 7);
});

test('a request past its deadline fails with ETIMEDOUT and the server sees the cancellation', async (t) => {
  let serverSawAbort = false;
  const { client, cleanup } = await pair(async (req) => {
    await new Promise<void>((resolve) => req.signal.addEventListener('abort', () => resolve()));
    serverSawAbort = true;
    return { body: { ok: {} } };
  });
  t.teardown(cleanup);
  const started = Date.now();
  const err = await t.throwsAsync(client.request({ fsync: { node: 1, fh: 1 } }, { deadlineMs: 100 }), { instanceOf: FsError });
  t.is(err!.errno, E.ETIMEDOUT);
  t.regex(err!.message, /fsync request timed out after 100 ms/);
  t.true(Date.now() - started < 5000);
  t.true(await eventually(() => serverSawAbort), 'the server saw the cancellation');
  t.is(client.inFlight.outgoing, 0);
});

test('cancelling with an AbortSignal fails the request with ECANCELED at once', async (t) => {
  const { client, cleanup } = await pair(() => new Promise(() => {}));
  t.teardown(cleanup);
  const ac = new AbortController();
  const p = client.request({ read: { node: 1, fh: 1, offset: 0, size: 10 } }, { signal: ac.signal });
  setTimeout(() => ac.abort(), 20);
  const err = await t.throwsAsync(p, { instanceOf: FsError });
  t.is(err!.errno, E.ECANCELED);
});

test('closing fails every pending request with a clear ENOTCONN error', async (t) => {
  const { client, server, cleanup } = await pair(() => new Promise(() => {}));
  t.teardown(cleanup);
  const pending = Array.from({ length: 10 }, () => client.request({ getattr: { node: 1 } }));
  await sleep(20);
  server.close('host agent shutting down');
  for (const p of pending) {
    const err = await t.throwsAsync(p, { instanceOf: FsError });
    t.is(err!.errno, E.ENOTCONN);
    t.regex(err!.message, /session closed: peer closed the session: host agent shutting down/);
  }
  await t.throwsAsync(client.request({ getattr: { node: 1 } }), { message: /session closed/ });
});

test('keepalive closes a session whose peer stops answering', async (t) => {
  const [a, b, cleanup] = await unixSocketPair();
  t.teardown(cleanup);
  b.pause(); // the peer process is frozen: it never reads nor answers
  const s = new Session(a, { logger: silentLogger(), keepaliveMs: 50 });
  const reason = await new Promise<string>((resolve) => s.once('close', resolve));
  t.regex(reason, /peer unresponsive/);
});

test('keepalive keeps an idle but healthy session open', async (t) => {
  const [a, b, cleanup] = await unixSocketPair();
  t.teardown(cleanup);
  // Pings every 200 ms; a session would close after 600 ms without traffic. Idle for 1.5 s.
  const s1 = new Session(a, { logger: silentLogger(), keepaliveMs: 200 });
  const s2 = new Session(b, { logger: silentLogger(), keepaliveMs: 200 });
  await sleep(1500);
  t.false(s1.closed);
  t.false(s2.closed);
  s1.close();
});

test('garbage bytes close that session with a logged reason; other sessions and the process live on', async (t) => {
  const { logger, lines } = capturingLogger();
  const [a, b, cleanup] = await unixSocketPair();
  const good = await pair(() => ({ body: { ok: {} } }));
  t.teardown(() => {
    cleanup();
    good.cleanup();
  });
  const victim = new Session(b, { logger, keepaliveMs: 0, onRequest: () => ({ body: { ok: {} } }) });
  const closed = new Promise<string>((resolve) => victim.once('close', resolve));
  a.write(Buffer.from('GET / HTTP/1.1\r\nHost: example\r\n\r\n'));
  const reason = await closed;
  t.regex(reason, /protocol violation: frame envelope of \d+ bytes exceeds the limit/);
  t.true(lines.some((l) => l.msg === 'protocol violation; closing session' && /exceeds the limit/.test(String(l.reason))));
  // The other session is unaffected.
  const r = await good.client.request({ getattr: { node: 1 } });
  t.truthy(r.envelope.ok);
});

test('an unknown message type gets ENOSYS and the session stays up', async (t) => {
  const { a, server, cleanup } = await pair(() => ({ body: { ok: {} } }));
  t.teardown(cleanup);
  // Field 999 does not exist in this version of the protocol: a newer peer's request.
  const unknown = Buffer.from([0x08, 0x05, 0xba, 0x3e, 0x00]); // id=5, field 999 (len 0)
  const head = Buffer.alloc(8);
  head.writeUInt32BE(unknown.length, 0);
  const replies: Buffer[] = [];
  // Act as a raw peer on the client's socket (bypassing the client session's decoder).
  a.removeAllListeners('data');
  a.on('data', (d: Buffer) => replies.push(d));
  a.write(Buffer.concat([head, unknown]));
  t.true(await eventually(() => Buffer.concat(replies).includes(Buffer.from('unknown request type'))), 'an ENOSYS error reply arrives');
  t.false(server.closed);
});

test('a peer that does not read applies backpressure: the server stops taking requests, memory stays flat', async (t) => {
  let handled = 0;
  const reply = Buffer.alloc(1 << 20, 1);
  const { a, server, cleanup } = await pair(
    () => {
      handled++;
      return { body: { data: {} }, payload: reply };
    },
    { maxIncoming: 16 },
  );
  t.teardown(cleanup);
  // A raw client that writes 2,000 read requests (2 GiB of replies) but does not read.
  a.removeAllListeners('data');
  a.pause();
  const requests = Buffer.concat(Array.from({ length: 2000 }, (_, i) => Buffer.concat(encodeFrame({ id: i + 1, read: { node: 2, fh: 1, offset: 0, size: 1 << 20 } }))));
  a.write(requests);
  const rssBefore = process.memoryUsage().rss;
  await sleep(500);
  const handledWhileBlocked = handled;
  t.true(handledWhileBlocked < 100, `handled ${handledWhileBlocked} requests while the peer was not reading`);
  t.true(server.stream.writableLength < 64 << 20, `server buffered ${server.stream.writableLength} bytes`);
  t.true(process.memoryUsage().rss - rssBefore < 200 << 20);
  // Once the peer reads again, everything completes.
  let received = 0;
  a.on('data', (d: Buffer) => (received += d.length));
  a.resume();
  while (handled < 2000) await sleep(20);
  while (received < 2000 * (1 << 20)) await sleep(20);
  t.is(handled, 2000);
});

test('outgoing requests beyond maxOutgoing wait for a slot instead of piling up on the wire', async (t) => {
  let concurrent = 0;
  let peak = 0;
  const [a, b, cleanup] = await unixSocketPair();
  t.teardown(cleanup);
  const client = new Session(a, { logger: silentLogger(), keepaliveMs: 0, maxOutgoing: 8 });
  new Session(b, {
    logger: silentLogger(),
    keepaliveMs: 0,
    onRequest: async () => {
      peak = Math.max(peak, ++concurrent);
      await sleep(5);
      concurrent--;
      return { body: { ok: {} } };
    },
  });
  await Promise.all(Array.from({ length: 100 }, () => client.request({ getattr: { node: 1 } })));
  t.true(peak <= 8);
  t.true(peak >= 2);
});
