// dirvisorctl: the operator's command line against the host agent's control socket.
import net from 'node:net';
import { parse, runMain, UsageError } from '../shared/cli.js';
import { parseShareArg } from './vms/spec.js';
import type { ControlOp, ControlReply } from './control/protocol.js';

const PROGRAM = 'dirvisorctl';
const DEFAULT_SOCKET = process.env.DIRVISOR_CONTROL_SOCKET ?? '/run/dirvisor/control.sock';

const USAGE = `Usage: ${PROGRAM} [--socket PATH] COMMAND ...

  vm create NAME (--cid N | --hvsock PATH | --token T) [--share DIR:TARGET[:ro] ...]
        Define a VM and the storage directories it gets (DIR on the storage system, TARGET in the guest).
  vm delete NAME
  attach VM DIR TARGET [--create] [--ro] [--name NAME] [--owner UID:GID] [--mode 0755]
        Give a running VM one more directory; its guest agent mounts it within a second.
        --create makes DIR on the storage node with the most free space if it exists nowhere.
  detach VM TARGET|NAME|DIR
        Take it away; the guest unmounts it (lazily if busy).
  list [--json]      VMs, their shares, and where each resolved
  status [--json]    also connections, exports in use, requests in flight, bytes, errors,
                     and per VM its host fds and requests against its limits

An operator's day:
  1. Describe the storage nodes in /etc/dirvisor/host.yaml (storage.nodes: name, path, prefixes)
     and start the host agent (systemctl start dirvisor-host).
  2. ${PROGRAM} vm create web-1 --cid 42 --share /projects/alpha:/srv/alpha
  3. ${PROGRAM} attach web-1 /projects/logs /var/log/shared --create
  4. ${PROGRAM} status
  5. ${PROGRAM} detach web-1 /var/log/shared
VMs can also be defined as files in /etc/dirvisor/vms.d/*.yaml, which the host agent watches.

The control socket is ${DEFAULT_SOCKET} (root only; DIRVISOR_CONTROL_SOCKET or --socket to change).
`;

async function call(socketPath: string, op: ControlOp, args: Record<string, unknown> = {}): Promise<unknown> {
  const sock = net.connect(socketPath);
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', () => resolve());
    sock.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(`cannot reach the host agent's control socket ${socketPath}: ${err.code ?? err.message}${err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? ' (is dirvisor-host running? systemctl status dirvisor-host)' : err.code === 'EACCES' ? ' (run as root)' : ''}`)),
    );
  });
  sock.write(JSON.stringify({ id: 1, op, args }) + '\n');
  let buf = '';
  for await (const chunk of sock) {
    buf += chunk;
    if (buf.includes('\n')) break;
  }
  sock.destroy();
  const reply = JSON.parse(buf.slice(0, buf.indexOf('\n'))) as ControlReply;
  if (!reply.ok) throw new Error(reply.error);
  return reply.result;
}

interface ShareRow { name: string; dir: string; target: string; readOnly: boolean; node?: string; hostPath?: string; reason?: string; error?: string }
interface VmUsage { fds: number; maxFds: number; running: number; waiting: number; maxInFlight: number }
interface VmRow { name: string; source: string; identity: Record<string, unknown>; shares: ShareRow[]; connections?: number; usage?: VmUsage }

function identityText(id: Record<string, unknown>): string {
  if (id.cid !== undefined) return `cid ${id.cid}`;
  if (id.hvsock) return `hvsock ${id.hvsock}`;
  return 'token';
}

function printVms(vms: VmRow[]): void {
  if (vms.length === 0) {
    console.log('no VMs defined');
    return;
  }
  for (const vm of vms) {
    const conn = vm.connections === undefined ? '' : `, ${vm.connections} connection${vm.connections === 1 ? '' : 's'}`;
    console.log(`${vm.name}  (${identityText(vm.identity)}, from ${vm.source}${conn})`);
    const u = vm.usage;
    if (u) console.log(`  host fds ${u.fds}/${u.maxFds}, requests ${u.running}/${u.maxInFlight} running, ${u.waiting} waiting`);
    for (const s of vm.shares) {
      const where = s.error ? `UNRESOLVED: ${s.error}` : `${s.node}:${s.hostPath}  (${s.reason})`;
      console.log(`  ${s.target.padEnd(20)} <- ${s.dir}${s.readOnly ? ' [ro]' : ''}  ${where}`);
    }
  }
}

async function main(argv: string[]): Promise<number | void> {
  const { values, positionals } = parse(PROGRAM, argv, {
    options: {
      socket: { type: 'string' },
      json: { type: 'boolean' },
      cid: { type: 'string' },
      hvsock: { type: 'string' },
      token: { type: 'string' },
      share: { type: 'string', multiple: true },
      create: { type: 'boolean' },
      ro: { type: 'boolean' },
      name: { type: 'string' },
      owner: { type: 'string' },
      mode: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help || positionals.length === 0 || positionals[0] === 'help') {
    process.stdout.write(USAGE);
    return positionals.length === 0 && !values.help ? 2 : 0;
  }
  const socket = values.socket ?? DEFAULT_SOCKET;
  const [cmd, ...rest] = positionals;
  const out = (result: unknown, human: () => void) => (values.json ? console.log(JSON.stringify(result, null, 2)) : human());
  const need = (n: number, form: string) => {
    if (rest.length !== n) throw new UsageError(`usage: ${PROGRAM} ${form}\nRun "${PROGRAM} --help" for more.`);
  };
  switch (cmd) {
    case 'vm': {
      const [sub, name] = rest;
      if (sub === 'create') {
        if (!name) throw new UsageError(`usage: ${PROGRAM} vm create NAME (--cid N | --hvsock PATH | --token T) --share DIR:TARGET[:ro] ...`);
        const identity: Record<string, unknown> = {};
        if (values.cid !== undefined) identity.cid = Number(values.cid);
        if (values.hvsock !== undefined) identity.hvsock = values.hvsock;
        if (values.token !== undefined) identity.token = values.token;
        if (Object.keys(identity).length !== 1) throw new UsageError('vm create needs exactly one of --cid, --hvsock or --token');
        const shares = (values.share ?? []).map(parseShareArg).map((s) => ({ dir: s.dir, target: s.target, read_only: s.readOnly, name: s.name, create: !!values.create }));
        const result = (await call(socket, 'vm.create', { name, identity, shares })) as VmRow[];
        return out(result, () => printVms(result));
      }
      if (sub === 'delete') {
        if (!name || rest.length !== 2) throw new UsageError(`usage: ${PROGRAM} vm delete NAME`);
        await call(socket, 'vm.delete', { name });
        return out({ deleted: name }, () => console.log(`deleted VM ${name}`));
      }
      throw new UsageError(`unknown "vm ${sub ?? ''}": use "vm create" or "vm delete"`);
    }
    case 'attach': {
      need(3, 'attach VM DIR TARGET [--create] [--ro]');
      const [vm, dir, target] = rest;
      const share: Record<string, unknown> = { dir, target, read_only: !!values.ro, create: !!values.create };
      if (values.name) share.name = values.name;
      if (values.owner) share.owner = values.owner;
      if (values.mode) share.mode = values.mode;
      const r = (await call(socket, 'attach', { vm, share })) as { resolution?: { node: string; hostPath: string; reason: string } };
      return out(r, () => console.log(`attached ${dir} to ${vm} at ${target}: ${r.resolution?.node}:${r.resolution?.hostPath} (${r.resolution?.reason})`));
    }
    case 'detach': {
      need(2, 'detach VM TARGET|NAME|DIR');
      const r = await call(socket, 'detach', { vm: rest[0], what: rest[1] });
      return out(r, () => console.log(`detached ${rest[1]} from ${rest[0]}`));
    }
    case 'list': {
      const r = (await call(socket, 'list')) as VmRow[];
      return out(r, () => printVms(r));
    }
    case 'status': {
      const r = (await call(socket, 'status')) as { uptimeSeconds: number; vms: VmRow[]; connections: Array<Record<string, unknown>> };
      return out(r, () => {
        console.log(`host agent up ${r.uptimeSeconds}s, ${r.vms.length} VMs, ${r.connections.length} connections`);
        printVms(r.vms);
        if (r.connections.length) console.log('\nconnections:');
        for (const c of r.connections) {
          console.log(`  #${c.id} ${c.vm ?? '(unidentified)'} via ${c.peer} since ${c.since}: exports [${(c.exports as string[]).join(', ')}], ${c.inFlight} in flight, ${c.requests} requests, ${c.bytesIn} B in, ${c.bytesOut} B out, ${c.errors} errors`);
        }
      });
    }
    default:
      throw new UsageError(`unknown command "${cmd}"\nRun "${PROGRAM} --help" for usage.`);
  }
}

runMain(PROGRAM, () => main(process.argv.slice(2)));
