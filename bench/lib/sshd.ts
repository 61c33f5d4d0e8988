// A private sshd for the sshfs comparison: 127.0.0.1 on a free high port, a temporary host key,
// a temporary client key authorized for root, no PAM, no passwords. Nothing of the system's ssh
// configuration is used or changed (only /run/sshd, sshd's privilege-separation directory, is
// created when missing).
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Daemon, runOk, waitFor, which } from './proc.js';

export interface Sshd {
  port: number;
  clientKey: string;
  daemon: Daemon;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

const canConnect = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });

/** Starts sshd; throws with the reason when it cannot run here. */
export async function startSshd(dir: string): Promise<Sshd> {
  const sshd = which('/usr/sbin/sshd') ?? which('sshd');
  if (!sshd) throw new Error('no sshd (apt-get install openssh-server)');
  if (!which('ssh-keygen')) throw new Error('no ssh-keygen');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const hostKey = path.join(dir, 'host_ed25519');
  const clientKey = path.join(dir, 'client_ed25519');
  for (const k of [hostKey, clientKey]) {
    fs.rmSync(k, { force: true });
    fs.rmSync(`${k}.pub`, { force: true });
    await runOk('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'dirvisor-bench', '-f', k], { timeoutMs: 20_000 });
  }
  fs.writeFileSync(path.join(dir, 'authorized_keys'), fs.readFileSync(`${clientKey}.pub`), { mode: 0o600 });
  const sftp = ['/usr/lib/openssh/sftp-server', '/usr/libexec/openssh/sftp-server', '/usr/libexec/sftp-server'].find((p) => fs.existsSync(p)) ?? 'internal-sftp';
  const port = await freePort();
  const config = path.join(dir, 'sshd_config');
  fs.writeFileSync(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey}`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
      'PermitRootLogin prohibit-password',
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      'UseDNS no',
      `Subsystem sftp ${sftp}`,
      'LogLevel ERROR',
      '',
    ].join('\n'),
  );
  fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const daemon = new Daemon('sshd', sshd, ['-D', '-e', '-f', config], path.join(dir, 'sshd.log'));
  try {
    await waitFor('sshd to listen', async () => {
      if (!daemon.running) throw new Error(`sshd exited: ${daemon.logTail(400)}`);
      return canConnect(port);
    }, 10_000, 100);
  } catch (err) {
    await daemon.stop();
    throw err;
  }
  return { port, clientKey, daemon };
}
