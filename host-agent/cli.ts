// dirvisor-host: the host agent's command line.
import { createLogger } from '../shared/log.js';
import { parse, runMain, UsageError } from '../shared/cli.js';
import { serveDirectory } from './serve.js';
import { parseIdPairs, type IdMapConfig } from './idmap.js';
import { startHostDaemon } from './daemon.js';
import { DEFAULT_CONFIG_PATH } from './config.js';
import { parseDuration } from './storage/units.js';

const PROGRAM = 'dirvisor-host';

const USAGE = `Usage:
  ${PROGRAM} serve DIR --listen URI [--listen URI ...] [--token T] [--read-only]
      Serve one directory to guests (like "sshfs"'s server side, in one line).
  ${PROGRAM} run [--config /etc/dirvisor/host.yaml]
      The managed agent (systemd service dirvisor-host): storage map, VMs from vms.d and
      dirvisorctl, exports resolved on the storage nodes. See dirvisorctl --help.
  ${PROGRAM} --help | --version

Transport URIs:
  vsock://any:PORT            AF_VSOCK; the VM is identified by its CID
  hvsock:///path/vm.vsock:PORT  Firecracker / Cloud Hypervisor hybrid vsock (listens on <path>_<PORT>)
  unix:///path/to.sock        Unix socket (needs --token)
  tcp://HOST:PORT             TCP (needs --token; for development and chaining)

Options:
  --listen URI     where guests connect (repeatable)
  --token T        secret the guest must present (required on unix:// and tcp://)
  --read-only      refuse every change (EROFS)
  --squash MODE    none (default), root (guest root becomes the anonymous user) or all
  --anon-uid N     anonymous uid for squashing (default 65534); --anon-gid N likewise
  --uid-map G:H    map guest uid G to host uid H (repeatable); --gid-map G:H likewise
  --max-in-flight N   requests served at once per connection (default 256)
  --max-handles N     open files and directories per connection (default 4096; beyond: EMFILE)
  --max-fds N         host fds (known nodes + open handles) per VM, all its connections together
                      (default 16384; beyond: EMFILE/ENFILE). With serve, every guest that
                      presents the token is the same VM.
  --storage-timeout D  deadline of one call on the storage (default 60s; then ETIMEDOUT)

Logs are JSON lines on stdout; set DIRVISOR_LOG_LEVEL=debug for more.
Example:
  ${PROGRAM} serve /srv/share --listen unix:///run/dirvisor.sock --token s3cret
`;

async function main(argv: string[]): Promise<number | void> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  if (command === '--version') {
    process.stdout.write('dirvisor-host 0.1.0\n');
    return 0;
  }
  if (command === 'serve') return serve(rest);
  if (command === 'run') return run(rest);
  throw new UsageError(`unknown command "${command}"\nRun "${PROGRAM} --help" for usage.`);
}

async function serve(argv: string[]): Promise<void> {
  const { values, positionals } = parse(PROGRAM, argv, {
    options: {
      listen: { type: 'string', multiple: true },
      token: { type: 'string' },
      'read-only': { type: 'boolean' },
      squash: { type: 'string' },
      'anon-uid': { type: 'string' },
      'anon-gid': { type: 'string' },
      'uid-map': { type: 'string', multiple: true },
      'gid-map': { type: 'string', multiple: true },
      'max-in-flight': { type: 'string' },
      'max-handles': { type: 'string' },
      'max-fds': { type: 'string' },
      'storage-timeout': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  if (positionals.length !== 1) throw new UsageError(`serve takes exactly one directory\nRun "${PROGRAM} --help" for usage.`);
  if (!values.listen?.length) throw new UsageError(`serve needs --listen URI (e.g. --listen unix:///run/dirvisor.sock)\nRun "${PROGRAM} --help" for usage.`);
  const squash = values.squash ?? 'none';
  if (squash !== 'none' && squash !== 'root' && squash !== 'all') throw new UsageError(`--squash must be none, root or all, got "${squash}"`);
  const id = (v: string | undefined, flag: string) => {
    if (v === undefined) return 65534;
    if (!/^\d+$/.test(v)) throw new UsageError(`${flag} must be a numeric id, got "${v}"`);
    return Number(v);
  };
  let idmap: IdMapConfig | undefined;
  try {
    idmap = { squash, anonUid: id(values['anon-uid'], '--anon-uid'), anonGid: id(values['anon-gid'], '--anon-gid'), uidMap: parseIdPairs(values['uid-map'] ?? [], '--uid-map'), gidMap: parseIdPairs(values['gid-map'] ?? [], '--gid-map') };
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const count = (v: string | undefined, flag: string, max: number, min = 1) => {
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new UsageError(`${flag} must be a whole number from ${min} to ${max}, got "${v}"`);
    return Number(v);
  };
  let storageTimeoutMs: number | undefined;
  if (values['storage-timeout'] !== undefined) {
    const d = parseDuration(values['storage-timeout']);
    if (typeof d === 'string' || d < 100) throw new UsageError(`--storage-timeout must be a duration of at least 100ms such as 30s or 2m, got "${values['storage-timeout']}"`);
    storageTimeoutMs = d;
  }
  const limits = {
    maxInFlight: count(values['max-in-flight'], '--max-in-flight', 65536),
    maxHandles: count(values['max-handles'], '--max-handles', 1 << 20),
    maxFds: count(values['max-fds'], '--max-fds', 1 << 22, 16),
    storageTimeoutMs,
  };
  const logger = createLogger(PROGRAM);
  const server = await serveDirectory({ dir: positionals[0], listen: values.listen, token: values.token, readOnly: values['read-only'], idmap, limits, logger });
  const stop = (signal: string) => {
    logger.info({ signal }, 'stopping');
    server.close().finally(() => process.exit(0));
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

async function run(argv: string[]): Promise<void> {
  const { values } = parse(PROGRAM, argv, { options: { config: { type: 'string' } } });
  const logger = createLogger(PROGRAM);
  const daemon = await startHostDaemon(values.config ?? DEFAULT_CONFIG_PATH, logger);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping');
    daemon.stop().finally(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

runMain(PROGRAM, () => main(process.argv.slice(2)));
