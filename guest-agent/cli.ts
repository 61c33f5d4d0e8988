// dirvisor-guest: the guest agent's command line.
import { spawn, execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { createLogger } from '../shared/log.js';
import { parse, runMain, UsageError } from '../shared/cli.js';
import { mountRemote } from './mount-command.js';
import { OPTION_HELP } from './fuse/options.js';
import { unmountAll } from './fuse/signals.js';
import { loadGuestConfig, DEFAULT_GUEST_CONFIG } from './config.js';
import { GuestDaemon } from './daemon.js';
import { sdNotify } from '../native/systemd.js';

const PROGRAM = 'dirvisor-guest';

const USAGE = `Usage:
  ${PROGRAM} mount URI MOUNTPOINT [--token T] [-o OPTIONS] [--foreground] [--log-file FILE]
      Mount the directory a host agent serves at URI (like sshfs).
  ${PROGRAM} umount MOUNTPOINT
      Unmount it; the background process exits cleanly.
  ${PROGRAM} run [--config /etc/dirvisor/guest.yaml]
      The managed agent (systemd service dirvisor-guest): mounts every export of this VM at its
      target, follows attach/detach live, keeps mounts across host-agent restarts.
  ${PROGRAM} --help | --version

URI is the host agent's address: vsock://2:PORT inside a VM, unix:///path or tcp://host:port
for development (those need --token).

Mount options (-o, comma-separated, repeatable):
${OPTION_HELP}
Without --foreground the command returns once the mount is usable and keeps serving it in the
background; its logs go to --log-file (default: discarded).
`;

async function main(argv: string[]): Promise<number | void> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  if (command === '--version') {
    process.stdout.write('dirvisor-guest 0.1.0\n');
    return 0;
  }
  if (command === 'mount') return mount(rest);
  if (command === 'umount' || command === 'unmount') return umount(rest);
  if (command === 'run') return run(rest);
  throw new UsageError(`unknown command "${command}"\nRun "${PROGRAM} --help" for usage.`);
}

async function mount(argv: string[]): Promise<number | void> {
  const { values, positionals } = parse(PROGRAM, argv, {
    options: {
      token: { type: 'string' },
      o: { type: 'string', short: 'o', multiple: true },
      foreground: { type: 'boolean', short: 'f' },
      'log-file': { type: 'string' },
      'notify-parent': { type: 'boolean' },
      'allow-host-cid': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (positionals.length !== 2) throw new UsageError(`mount takes URI and MOUNTPOINT\nRun "${PROGRAM} --help" for usage.`);
  const [uri, mountpoint] = positionals;
  const options = (values.o ?? []).flatMap((o) => o.split(',')).filter(Boolean);
  if (!values.foreground) return daemonize(argv, values['log-file']);

  const logger = createLogger(PROGRAM);
  const notify = values['notify-parent'] && process.send ? (msg: object) => process.send!(msg) : null;
  let running;
  try {
    running = await mountRemote({ uri, mountpoint, token: values.token, options, logger, allowHostCid: values['allow-host-cid'] });
  } catch (err) {
    notify?.({ error: (err as Error).message });
    throw err;
  }
  notify?.({ ready: true });
  if (notify) process.disconnect();
  const stop = (signal: string) => {
    logger.info({ signal }, 'unmounting');
    // Busy (a process inside, or a passing find): retried for a few seconds, then detached lazily,
    // so the agent always ends; it keeps serving the last users of a lazy unmount until they let go.
    void unmountAll([running.mount], 5000, logger);
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  await running.done;
  return 0;
}

/** Starts the same command in the foreground in a detached child; returns once it has mounted. */
async function daemonize(argv: string[], logFile?: string): Promise<number> {
  const out = logFile ? fs.openSync(path.resolve(logFile), 'a') : 'ignore';
  const cli = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, [cli, 'mount', ...argv, '--foreground', '--notify-parent'], {
    detached: true,
    stdio: ['ignore', out, out, 'ipc'],
  });
  const result = await new Promise<{ ready?: boolean; error?: string }>((resolve) => {
    child.once('message', (m) => resolve(m as { ready?: boolean; error?: string }));
    child.once('exit', (code) => resolve({ error: `the mount process exited (status ${code}) before the mount was ready` }));
  });
  if (result.error) {
    process.stderr.write(`${PROGRAM}: ${result.error}\n`);
    return 1;
  }
  child.unref();
  child.disconnect?.();
  return 0;
}

async function run(argv: string[]): Promise<number> {
  const { values } = parse(PROGRAM, argv, { options: { config: { type: 'string' }, 'allow-host-cid': { type: 'boolean' } } });
  const configFile = values.config ?? DEFAULT_GUEST_CONFIG;
  const config = await loadGuestConfig(configFile, values.config === undefined);
  const logger = createLogger(PROGRAM);
  logger.info({ config: configFile, host: config.host }, 'starting');
  // Inside a VM the host is CID 2, which a guest must reach. Only an installed configuration (or an
  // explicit flag) allows it, so a stray run on a machine that is not our guest connects nowhere.
  const haveFile = await fs.promises.access(configFile).then(() => true, () => false);
  const daemon = new GuestDaemon(config, logger, { allowHostCid: values['allow-host-cid'] ?? haveFile });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    sdNotify('STOPPING=1');
    logger.info({ signal }, 'stopping; unmounting');
    daemon.stop().finally(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // Ready once the mounts are up, so services ordered after remote-fs.target find them; but never
  // hold the boot longer than 20 s for a host agent that does not answer (mounts follow later).
  const notReadyYet = setTimeout(() => {
    logger.warn('the host agent has not answered yet; telling systemd we are up, mounts will follow');
    sdNotify('READY=1');
  }, 20_000);
  await daemon.start();
  clearTimeout(notReadyYet);
  sdNotify('READY=1');
  logger.info({ mounts: daemon.mounts() }, 'ready');
  await new Promise(() => {}); // runs until signalled
  return 0;
}

async function umount(argv: string[]): Promise<number> {
  const { values, positionals } = parse(PROGRAM, argv, { options: { lazy: { type: 'boolean', short: 'z' } } });
  if (positionals.length !== 1) throw new UsageError(`umount takes MOUNTPOINT\nRun "${PROGRAM} --help" for usage.`);
  // The agent replays changes made elsewhere through its own mount (guest-agent/coherence/), which
  // keeps the mount busy for the moment of one syscall: EBUSY is tried again for a short while.
  const deadline = Date.now() + 2000;
  for (;;) {
    try {
      await promisify(execFile)('fusermount3', [values.lazy ? '-uz' : '-u', path.resolve(positionals[0])]);
      return 0;
    } catch (err) {
      const msg = ((err as { stderr?: string }).stderr ?? (err as Error).message).trim().replace(/^fusermount3: /, '');
      if (/busy/i.test(msg) && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      throw new Error(`cannot unmount ${path.resolve(positionals[0])}: ${msg}`);
    }
  }
}

runMain(PROGRAM, () => main(process.argv.slice(2)));
