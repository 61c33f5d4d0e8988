// A misbehaving VM in its own process, for the fairness test: it mounts the export and floods the
// host with one kind of request, reading the replies, until it is killed.
//   node dist/test/fuzz/flooder.js SOCKET TOKEN KIND [MAX_IN_FLIGHT]
// KIND: getattr | read1m | read4k. MAX_IN_FLIGHT 0 (default) pipelines without any limit.
// Prints "ready" once flooding, and a JSON summary line on SIGTERM.
import { RawClient } from './raw-client.js';

async function main(): Promise<void> {
  const [socketPath, token, kind, cap] = process.argv.slice(2);
  const maxInFlight = Number(cap ?? 0);
  const c = await RawClient.mounted(socketPath, token);
  const name = kind === 'getattr' ? 'f0' : 'sparse';
  const node = Number((await c.call({ lookup: { parent: 1, name: Buffer.from(name) } })).envelope.entry!.entry!.nodeId);
  const fh = Number((await c.call({ open: { node, flags: 0 } })).envelope.opened!.fh);
  const body = kind === 'read1m' ? { read: { node, fh, offset: 0, size: 1 << 20 } } : kind === 'read4k' ? { read: { node, fh, offset: 0, size: 4096 } } : { getattr: { node: 1 } };
  let sent = 0;
  const started = Date.now();
  process.once('SIGTERM', () => {
    process.stdout.write(`${JSON.stringify({ kind, sent, replies: c.replies, errnos: Object.fromEntries(c.errnos), closed: c.closed, seconds: (Date.now() - started) / 1000 })}\n`);
    process.exit(0);
  });
  process.stdout.write('ready\n');
  const batch = 200;
  while (!c.closed) {
    if (maxInFlight > 0 && sent - c.replies + batch > maxInFlight) {
      await new Promise((r) => setImmediate(r));
      continue;
    }
    const chunk = Buffer.concat(Array.from({ length: batch }, () => c.frame(body)));
    sent += batch;
    if (!c.write(chunk)) await new Promise((r) => c.socket.once('drain', r));
  }
  process.stdout.write(`${JSON.stringify({ kind, sent, replies: c.replies, closed: true })}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`flooder: ${(err as Error).stack}\n`);
  process.exit(1);
});
