// A `dirvisor-host serve` that can be SIGKILLed and started again on the same URI in the middle of a
// differential run. The next host process is always started ahead, while the current one serves,
// and waits on its stdin: a process started while the host is down would inherit the test's
// descriptors on the mount, and closing them at its exec sends FLUSH requests that wait for a host
// agent — the very one this exec is about to become (a deadlock, until the guest gives up).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, closeSync } from 'node:fs';
import { HOST_BIN, REPO, canConnect, startHost, waitFor, type HostAgent } from '../helpers/agents.js';
import { exited, terminate, waitExit } from '../helpers/system.js';

const HAVE_SETPRIV = existsSync('/usr/bin/setpriv') || existsSync('/bin/setpriv');

export class RestartableHost {
  private current: ChildProcess;
  private standby: ChildProcess;
  restarts = 0;

  private constructor(private readonly first: HostAgent, private readonly args: string[]) {
    this.current = first.proc;
    this.standby = this.spawnStandby();
  }

  /** Serves `dir` (like startHost), with the next process already waiting. */
  static async start(dir: string, workDir: string): Promise<RestartableHost> {
    const first = await startHost({ dir, workDir });
    return new RestartableHost(first, [HOST_BIN, 'serve', dir, '--listen', first.uri, '--token', first.token]);
  }

  get uri(): string {
    return this.first.uri;
  }

  get token(): string {
    return this.first.token;
  }

  get logFile(): string {
    return this.first.logFile;
  }

  log(): Promise<string> {
    return this.first.log();
  }

  /** SIGKILL (nothing flushed on the way out), then the standby process takes over the socket. */
  async restart(): Promise<void> {
    this.current.kill('SIGKILL');
    if (!(await waitExit(this.current, 10_000))) throw new Error('the host agent did not die on SIGKILL');
    const next = this.standby;
    next.stdin!.end('go\n');
    this.current = next;
    await waitFor(
      async () => {
        if (exited(next)) throw new Error(`the restarted dirvisor-host exited (${next.exitCode ?? next.signalCode}):\n${await this.log()}`);
        return canConnect(this.first.socketPath);
      },
      'the restarted dirvisor-host to serve',
      { timeoutMs: 20_000, details: () => this.log() },
    );
    this.restarts++;
    this.standby = this.spawnStandby(); // now, while a host serves
  }

  async stop(): Promise<void> {
    this.standby.stdin!.end(); // read fails: the standby exits without starting a host
    await waitExit(this.standby, 5000);
    await terminate(this.current, 5000);
    await this.first.stop();
  }

  private spawnStandby(): ChildProcess {
    const fd = openSync(this.first.logFile, 'a');
    try {
      // setpriv (where there is one): the host gets SIGTERM if this process dies, however it dies.
      const argv = ['bash', '-c', 'read -r _ || exit 0; exec "$@"', 'bash', process.execPath, ...this.args];
      const [cmd, ...args] = HAVE_SETPRIV ? ['setpriv', '--pdeathsig=SIGTERM', ...argv] : argv;
      const p = spawn(cmd, args, {
        cwd: REPO,
        stdio: ['pipe', fd, fd],
      });
      p.stdin!.on('error', () => {});
      return p;
    } finally {
      closeSync(fd);
    }
  }
}
