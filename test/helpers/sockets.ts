// Real connected socket pairs for tests: a Unix socket in a fresh temporary directory.
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';

export function tempDir(prefix = 'dirvisor-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export async function unixSocketPair(): Promise<[net.Socket, net.Socket, () => void]> {
  const dir = tempDir();
  const sockPath = path.join(dir, 'pair.sock');
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(sockPath, resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const client = net.connect(sockPath);
  await new Promise<void>((resolve) => client.once('connect', () => resolve()));
  const other = await accepted;
  const cleanup = () => {
    client.destroy();
    other.destroy();
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return [client, other, cleanup];
}
