// Authorization end to end: one `dirvisor-host run`, two VMs with their own tokens, two
// `dirvisor-guest run` daemons. Each guest sees and touches only its VM's exports; a raw protocol
// session holding one VM's token cannot reach the other's; an unknown token is refused with the
// reason in the host log; and dirvisorctl's errors are clear, with a non-zero exit.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { connect } from '../shared/transport/index.js';
import { Session } from '../shared/rpc/session.js';
import { sendHello } from '../shared/rpc/hello.js';
import { FsError, E } from '../shared/fs/errors.js';
import { ROOT_ID } from '../shared/fs/interface.js';
import { silentLogger } from '../shared/log.js';
import { RemoteFileSystem } from '../guest-agent/remote-fs.js';
import {
  createWorld, token, waitFor, isMounted, mountTable, sh, shOk, q, run, CTL_BIN, type World, type Daemon,
} from './helpers/daemons.js';

const ROOT_CALLER = { uid: 0, gid: 0, pid: 0 };

async function world(t: ExecutionContext): Promise<World> {
  const w = await createWorld('dva-');
  t.teardown(() => w.cleanup());
  return w;
}

const exists = (p: string) => fs.access(p).then(() => true, () => false);

/** A raw protocol session to the host with `tok`; closed at teardown. */
async function rawSession(t: ExecutionContext, w: World, tok: string) {
  const { stream } = await connect(w.hostUri);
  const session = new Session(stream, { logger: silentLogger(), keepaliveMs: 0, defaultDeadlineMs: 10_000 });
  t.teardown(() => session.close('test done'));
  const hello = () => sendHello(session, { token: tok, agent: 'authorization-test' });
  return { session, hello };
}

async function errnoOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'no error';
  } catch (err) {
    return err instanceof FsError ? err.code : `not an FsError: ${(err as Error).message}`;
  }
}

async function mountExport(session: Session, name: string): Promise<number> {
  const f = await session.request({ mountExport: { name } });
  return f.envelope.mountReply!.exportId ?? 0;
}

async function listExports(session: Session): Promise<string[]> {
  const f = await session.request({ listExports: {} });
  return (f.envelope.exportList?.exports ?? []).map((e) => e.name ?? '').sort();
}

interface TwoVms {
  w: World;
  node: string;
  tokA: string;
  tokB: string;
  aData: string;
  bData: string;
  bSecret: string;
  guestA: Daemon;
  guestB: Daemon;
}

/** VM a: share "data". VM b: shares "data" (same export name, another directory) and "secret". */
async function twoVms(t: ExecutionContext): Promise<TwoVms> {
  const w = await world(t);
  const node = await w.addNode('n1', 64);
  await w.writeHostConfig();
  const tokA = token('vm-a');
  const tokB = token('vm-b');
  const aData = w.target('a/data');
  const bData = w.target('b/data');
  const bSecret = w.target('b/secret');
  await w.writeVm('a.yaml', { name: 'a', identity: { token: tokA }, shares: [{ dir: '/vms/a/data', target: aData, name: 'data', create: true }] });
  await w.writeVm('b.yaml', {
    name: 'b',
    identity: { token: tokB },
    shares: [
      { dir: '/vms/b/data', target: bData, name: 'data', create: true },
      { dir: '/vms/b/secret', target: bSecret, name: 'secret', create: true },
    ],
  });
  await w.startHost();
  await fs.writeFile(path.join(node, 'vms/b/secret/key'), 'b-only secret\n');
  const [guestA, guestB] = await Promise.all([w.startGuest('a', tokA), w.startGuest('b', tokB)]);
  return { w, node, tokA, tokB, aData, bData, bSecret, guestA, guestB };
}

test.serial('two guest agents with different tokens each mount and touch only their own VM\'s exports', async (t) => {
  const { w, node, aData, bData, bSecret, guestA, guestB } = await twoVms(t);

  // What each guest agent mounted, by its own account.
  const readyA = await guestA.waitLog((l) => l.msg === 'ready', 'guest a ready');
  const readyB = await guestB.waitLog((l) => l.msg === 'ready', 'guest b ready');
  t.deepEqual(readyA.mounts, [{ name: 'data', target: aData }]);
  t.deepEqual(
    (readyB.mounts as Array<{ name: string; target: string }>).sort((x, y) => x.name.localeCompare(y.name)),
    [{ name: 'data', target: bData }, { name: 'secret', target: bSecret }],
  );
  const connA = await guestA.waitLog((l) => l.msg === 'connected to the host agent', 'guest a connected');
  t.is(connA.vm, 'a');
  t.false((await guestA.lines()).some((l) => l.msg === 'export mounted' && l.target !== aData), 'guest a mounted nothing else');

  // And by the host's account.
  const st = await w.status();
  const byVm = Object.fromEntries(st.connections.map((c) => [c.vm, [...c.exports].sort()]));
  t.deepEqual(byVm, { a: ['data'], b: ['data', 'secret'] });

  // Same export name "data", two directories: each guest writes into its own.
  await shOk(`echo from-a > ${q(path.join(aData, 'a.txt'))}`);
  await shOk(`echo from-b > ${q(path.join(bData, 'b.txt'))}`);
  t.is((await shOk(`ls -A ${q(aData)}`)).trim(), 'a.txt', 'guest a sees only its own file');
  t.is((await shOk(`ls -A ${q(bData)}`)).trim(), 'b.txt', 'guest b sees only its own file');
  t.is(await fs.readFile(path.join(node, 'vms/a/data/a.txt'), 'utf8'), 'from-a\n');
  t.is(await fs.readFile(path.join(node, 'vms/b/data/b.txt'), 'utf8'), 'from-b\n');
  t.false(await exists(path.join(node, 'vms/b/data/a.txt')));
  t.false(await exists(path.join(node, 'vms/a/data/b.txt')));
});

test.serial('a raw session with VM a\'s token cannot list, mount or use VM b\'s exports', async (t) => {
  const { w, tokA } = await twoVms(t);
  const { session, hello } = await rawSession(t, w, tokA);

  // Before Hello nothing is served.
  t.is(await errnoOf(session.request({ listExports: {} })), 'EACCES');
  t.is(await errnoOf(mountExport(session, 'data')), 'EACCES');

  const h = await hello();
  t.is(h.vmName, 'a');
  t.deepEqual(await listExports(session), ['data'], 'only a\'s exports are listed');

  const mountB = await errnoOf(mountExport(session, 'secret'));
  t.true(mountB === 'ENOENT' || mountB === 'EACCES', `mounting b's export "secret" fails with ENOENT or EACCES, got ${mountB}`);
  for (const name of ['b/secret', '../b', 'b:secret', '']) {
    const r = await errnoOf(mountExport(session, name));
    t.true(r === 'ENOENT' || r === 'EACCES' || r === 'EINVAL', `mountExport(${JSON.stringify(name)}) is refused (${r})`);
  }

  // Export ids are per connection: ids that b's guest holds on its own connection mean nothing here.
  const remoteBefore = new RemoteFileSystem(() => ({ session, exportId: 1 }));
  t.is(await errnoOf(remoteBefore.getattr(ROOT_CALLER, ROOT_ID)), 'EBADF', 'an export id not mounted on this connection is refused');
  t.is(await errnoOf(new RemoteFileSystem(() => ({ session, exportId: 2 })).lookup(ROOT_CALLER, ROOT_ID, Buffer.from('key'))), 'EBADF');

  // "data" on this connection is a's directory, never b's.
  await shOk(`echo mine > ${q(path.join(w.target('a/data'), 'a.txt'))} && echo theirs > ${q(path.join(w.target('b/data'), 'b.txt'))}`);
  const id = await mountExport(session, 'data');
  const remote = new RemoteFileSystem(() => ({ session, exportId: id }));
  const a = await remote.lookup(ROOT_CALLER, ROOT_ID, Buffer.from('a.txt'));
  t.is(a.attr.size, 5);
  t.is(await errnoOf(remote.lookup(ROOT_CALLER, ROOT_ID, Buffer.from('b.txt'))), 'ENOENT');
  const dotdot = await errnoOf(remote.lookup(ROOT_CALLER, ROOT_ID, Buffer.from('..')));
  t.not(dotdot, 'no error', `".." out of the export root is refused (${dotdot})`);
  t.is(await errnoOf(remote.getattr(ROOT_CALLER, ROOT_ID)), 'no error', 'the session is still usable after the refusals');
});

test.serial('an unknown token is refused, with the reason in the host log; the guest agent mounts nothing and keeps retrying', async (t) => {
  const { w } = await twoVms(t);
  const bad = token('nobody');

  // Raw Hello with an unknown token and with none.
  for (const tok of [bad, '']) {
    const { session, hello } = await rawSession(t, w, tok);
    t.is(await errnoOf(hello()), 'EACCES', `Hello with ${tok ? 'an unknown token' : 'no token'} is refused`);
    // The host answers the refusal and hangs up: nothing more can be asked on that connection.
    t.true(['ENOTCONN', 'EACCES'].includes(await errnoOf(session.request({ listExports: {} }))), 'and the connection cannot list exports');
  }
  const refusals = await w.host!.waitLog((l) => l.msg === 'connection refused', 'a refusal in the host log');
  t.regex(String(refusals.reason), /no VM is defined for unix .* with that token/);
  t.is(refusals.level, 40);
  t.false((await w.host!.log()).includes(bad), 'the host log does not repeat the token');

  // A guest agent with an unknown token.
  const intruder = await w.startGuest('intruder', bad, { wait: false });
  const line = await intruder.waitLog((l) => l.msg === 'cannot reach the host agent yet', 'the intruder to be refused');
  t.regex(String(line.error), /refused this guest: no VM is defined/);
  await waitFor(async () => (await w.host!.lines()).filter((l) => l.msg === 'connection refused' && l.agent === 'dirvisor-guest/0.1.0').length >= 1, 'the host to log the guest agent\'s refusal');
  t.false((await intruder.lines()).some((l) => l.msg === 'export mounted'), 'the intruder mounted nothing');
  t.false((await mountTable()).some((m) => m.target.startsWith(w.target('intruder'))));
  const st = await w.status();
  t.deepEqual(st.connections.filter((c) => c.vm !== null).map((c) => c.vm).sort(), ['a', 'b'], 'only the two legitimate guests are identified');
  t.deepEqual(st.vms.map((v) => [v.name, v.connections]), [['a', 1], ['b', 1]]);
  t.true(intruder.running, 'the refused guest agent keeps retrying (the VM may be defined later)');
});

// A refused Hello ends the connection: an unidentified peer must not keep a connection (and a
// slot in status) open, nor try one token after another on it.
test.serial('the host closes a connection whose Hello it refused', async (t) => {
  const w = await world(t);
  await w.addNode('n1', 16);
  await w.writeHostConfig();
  await w.writeVm('a.yaml', { name: 'a', identity: { token: token('vm-a') } });
  await w.startHost();
  const { session, hello } = await rawSession(t, w, token('nobody'));
  const closed = new Promise<string>((resolve) => session.once('close', (reason: string) => resolve(reason)));
  t.is(await errnoOf(hello()), 'EACCES');
  const outcome = await Promise.race([closed.then((r) => `closed: ${r}`), new Promise<string>((r) => setTimeout(() => r('still open after 3 s'), 3000))]);
  t.regex(outcome, /^closed/, `the refused connection is closed by the host (${outcome})`);
  const st = await w.status();
  t.deepEqual(st.connections, [], `status lists no unidentified connection (${JSON.stringify(st.connections)})`);
});

// A connection is bound to a VM identity. When the identity is withdrawn (the VM deleted, its token
// changed), a connection made with the old credentials must not keep, or gain, access.
test.serial('a deleted VM\'s connection loses its exports, and does not inherit a new VM of the same name', async (t) => {
  const w = await world(t);
  const node = await w.addNode('n1', 64);
  await w.writeHostConfig();
  await w.startHost();
  const oldTok = token('old');
  const target = w.target('c/data');
  t.is((await w.ctl('vm', 'create', 'c', '--token', oldTok, '--share', `/vms/c-old:${target}`, '--create')).code, 0);
  const guest = await w.startGuest('c', oldTok);
  t.true(await isMounted(target));
  const { session, hello } = await rawSession(t, w, oldTok);
  t.is((await hello()).vmName, 'c');

  // Deleted: the guest unmounts, and the old connection has nothing left.
  const del = await w.ctl('vm', 'delete', 'c');
  t.is(del.code, 0, del.stderr);
  await waitFor(async () => !(await isMounted(target)), 'the deleted VM\'s mount to go', { details: () => w.logs() });
  // The host hangs up on the deleted VM's connections: nothing can be listed on them any more.
  const afterDelete = await listExports(session).catch((e: Error) => e.message);
  t.true(Array.isArray(afterDelete) ? afterDelete.length === 0 : /session closed/.test(afterDelete), `after delete: ${JSON.stringify(afterDelete)}`);
  const { hello: helloAgain } = await rawSession(t, w, oldTok);
  t.is(await errnoOf(helloAgain()), 'EACCES', 'a new connection with the deleted VM\'s token is refused');

  // A new VM named "c", with another token and another directory.
  const newTok = token('new');
  t.is((await w.ctl('vm', 'create', 'c', '--token', newTok, '--share', `/vms/c-new:${w.target('c/new')}`, '--create')).code, 0);
  await fs.writeFile(path.join(node, 'vms/c-new/private'), 'new VM only\n');
  const newExport = w.target('c/new').slice(1).replace(/\//g, '-');
  // Observe everything first, then judge (a failed assertion ends the test).
  const seen = await listExports(session).catch((e: Error) => [`error ${e.message}`]);
  const mounted = await errnoOf(mountExport(session, newExport));
  // The old guest agent (old token) is told its exports changed; it must not mount the new VM's
  // share. Give it the time an attach takes (under 3 s, see lifecycle.test.ts) to do the wrong thing.
  const leaked = await waitFor(() => isMounted(w.target('c/new')), 'a leak', { timeoutMs: 3000 }).then(() => true, () => false);
  let readThrough = '(not tried)';
  if (leaked) readThrough = (await sh(`cat ${q(path.join(w.target('c/new'), 'private'))}`)).stdout.trim();
  t.log(`old connection (deleted VM's token) lists ${JSON.stringify(seen)}; mountExport(${newExport}) -> ${mounted}`);
  t.log(`old guest agent mounted the new VM's share: ${leaked}; read the new VM's private file through it: ${JSON.stringify(readThrough)}`);
  t.true(seen.length === 0 || /^error .*session closed/.test(String(seen[0])), 'the old connection must not see the new VM\'s exports');
  t.not(mounted, 'no error', 'the old connection must not mount the new VM\'s export');
  t.false(leaked, `the old guest agent must not mount the new VM's share at ${w.target('c/new')}`);
  t.true(guest.running);
});

test.serial('changing a VM\'s token in vms.d cuts off connections made with the old token', async (t) => {
  const w = await world(t);
  await w.addNode('n1', 64);
  await w.writeHostConfig();
  const oldTok = token('old');
  const newTok = token('new');
  const target = w.target('d/data');
  const spec = (tok: string) => ({ name: 'd', identity: { token: tok }, shares: [{ dir: '/vms/d', target, name: 'data', create: true }] });
  await w.writeVm('d.yaml', spec(oldTok));
  await w.startHost();
  const { session, hello } = await rawSession(t, w, oldTok);
  t.is((await hello()).vmName, 'd');
  t.deepEqual(await listExports(session), ['data']);

  await w.writeVm('d.yaml', spec(newTok));
  await w.host!.waitLog((l) => l.msg === 'VM redefined' && l.vm === 'd', 'the new definition to be applied');
  const { hello: helloOld } = await rawSession(t, w, oldTok);
  t.is(await errnoOf(helloOld()), 'EACCES', 'a new connection with the old token is refused');
  const { hello: helloNew } = await rawSession(t, w, newTok);
  t.is((await helloNew()).vmName, 'd', 'the new token is accepted');
  // The connection made with the revoked token.
  const stillLists = await listExports(session).catch((e: Error) => [`error ${(e as FsError).code ?? e.message}`]);
  t.log(`listExports on the connection made with the revoked token: ${JSON.stringify(stillLists)}`);
  const stillMounts = await errnoOf(mountExport(session, 'data'));
  t.log(`mountExport("data") on the connection made with the revoked token: ${stillMounts}`);
  t.not(stillMounts, 'no error', 'a connection made with the revoked token can no longer mount the VM\'s exports');
});

// ---- dirvisorctl's errors -----------------------------------------------------------------------

test.serial('dirvisorctl errors are clear and exit non-zero: unknown VM, duplicate target, bad share syntax, and more', async (t) => {
  const w = await world(t);
  await w.addNode('n1', 64);
  await w.writeHostConfig();
  const tokA = token('vm-a');
  const aData = w.target('a/data');
  const aLogs = w.target('a/logs');
  await w.writeVm('a.yaml', { name: 'a', identity: { token: tokA }, shares: [{ dir: '/vms/a/data', target: aData, name: 'data', create: true }] });
  await w.startHost();
  t.is((await w.ctl('attach', 'a', '/vms/a/logs', aLogs, '--create')).code, 0, 'an attach with the default export name');

  const check = async (args: string[], code: number, pattern: RegExp, what: string) => {
    const r = await w.ctl(...args);
    t.is(r.code, code, `${what}: exit ${code} (got ${r.code}; stderr: ${r.stderr.trim()})`);
    t.regex(r.stderr, pattern, `${what}: ${r.stderr.trim()}`);
    t.regex(r.stderr, /^dirvisorctl: /, `${what}: the message names the program`);
    t.is(r.stderr.trim().split('\n').length <= 2, true, `${what}: one short message, no stack trace`);
    t.log(`${what}: ${r.stderr.trim().replace(/\n/g, ' / ')}`);
    return r;
  };

  // Unknown VM.
  await check(['attach', 'nosuch', '/vms/x', w.target('x'), '--create'], 1, /no VM named nosuch/, 'attach to an unknown VM');
  await check(['detach', 'nosuch', w.target('x')], 1, /no VM named nosuch/, 'detach from an unknown VM');
  await check(['vm', 'delete', 'nosuch'], 1, /no VM named nosuch/, 'delete an unknown VM');
  await check(['detach', 'a', w.target('nothing-here')], 1, /VM a has no share ".*nothing-here"/, 'detach of a share the VM does not have');

  // Duplicate target: with another export name, and with the default name (derived from the target).
  await check(['attach', 'a', '/vms/a/other', aData, '--create', '--name', 'other'], 1, new RegExp(`${aData}`), 'attach at a target already in use (explicit name)');
  await check(['attach', 'a', '/vms/a/other', w.target('a/other'), '--create', '--name', 'data'], 1, /named "data"/, 'attach with an export name already in use');

  // Bad share syntax.
  await check(['vm', 'create', 'bad', '--token', token('bad'), '--share', 'nocolon'], 1, /--share nocolon: expected DIR:TARGET or DIR:TARGET:ro/, 'a --share without a colon');
  await check(['vm', 'create', 'bad', '--token', token('bad'), '--share', '/a:/b:rx'], 1, /expected DIR:TARGET or DIR:TARGET:ro/, 'a --share with a bad mode');
  await check(['vm', 'create', 'bad', '--token', token('bad'), '--share', 'relative:/t'], 1, /must be an absolute path, got "relative"/, 'a --share with a relative directory');
  await check(['vm', 'create', 'bad', '--token', token('bad'), '--share', '/a/../etc:/t'], 1, /must not contain "\." or "\.\." components/, 'a --share with ".."');
  await check(['vm', 'create', 'bad', '--token', token('bad'), '--share', '/vms/x:/'], 1, /cannot be \/ \(the guest root\)/, 'a --share onto the guest root');
  await check(['attach', 'a', 'relative', w.target('r')], 1, /must be an absolute path/, 'attach with a relative directory');
  await check(['attach', 'a', '/vms/a/x'], 2, /usage: dirvisorctl attach VM DIR TARGET/, 'attach without a target');

  // VM definitions.
  await check(['vm', 'create', 'bad', '--share', '/a:/b'], 2, /exactly one of --cid, --hvsock or --token/, 'vm create without an identity');
  await check(['vm', 'create', 'bad', '--token', 'short'], 1, /token.*at least 8 characters/, 'vm create with a short token');
  await check(['vm', 'create', 'bad', '--cid', '2'], 1, /cid.*3 or more/, 'vm create with a host CID');
  await check(['vm', 'create', 'bad', '--token', tokA], 1, /identity is already used by VM a/, 'vm create with a token another VM uses');
  await check(['vm', 'create', 'a', '--token', token('other')], 1, /VM a is already defined \(by vms\.d\/a\.yaml\)/, 'vm create of a name vms.d defines');
  await check(['vm', 'delete', 'a'], 1, /VM a is defined in vms\.d\/a\.yaml; remove it there/, 'vm delete of a vms.d VM');
  await check(['detach', 'a', aData], 1, /defined in vms\.d\/a\.yaml; remove it there/, 'detach of a share vms.d defines');
  await check(['vm', 'create', 'bad name', '--token', token('bad')], 1, /name.*letters, digits/, 'vm create with a bad name');

  // Resolution failures.
  await check(['attach', 'a', '/vms/missing', w.target('missing')], 1, /\/vms\/missing does not exist on any storage node .*creation was not asked for/, 'attach of a missing directory without --create');
  t.false((await w.list())[0].shares.some((s) => s.dir === '/vms/missing'), 'a failed attach adds nothing');

  // The command line itself.
  await check(['frobnicate'], 2, /unknown command "frobnicate"/, 'an unknown command');
  await check(['list', '--bogus'], 2, /Unknown option '--bogus'/, 'an unknown option');
  await check(['vm', 'rename', 'a'], 2, /use "vm create" or "vm delete"/, 'an unknown vm subcommand');

  // Nothing above changed the host's state.
  const list = await w.list();
  t.deepEqual(list.map((v) => v.name), ['a']);
  t.deepEqual(list[0].shares.map((s) => s.target).sort(), [aData, aLogs].sort());
});

// Messages must speak the operator's words. Two cases where they do not (yet): the same target
// again without --name (the export name derived from the target clashes first, and the message
// talks about a name the operator never gave), and --share errors that glue ".dir"/".target" onto
// the operator's argument (so "/t" reads as "/t.dir" and "/" as "/.target").
test.serial('dirvisorctl error messages quote what the operator typed: the taken target, the --share argument as given', async (t) => {
  const w = await world(t);
  await w.addNode('n1', 16);
  await w.writeHostConfig();
  await w.writeVm('a.yaml', { name: 'a', identity: { token: token('vm-a') } });
  await w.startHost();
  const logs = w.target('a/logs');
  t.is((await w.ctl('attach', 'a', '/vms/a/logs', logs, '--create')).code, 0);
  // Observe first, judge after (a failed assertion ends the test).
  const dup = await w.ctl('attach', 'a', '/vms/a/other', logs, '--create');
  const rel = await w.ctl('vm', 'create', 'b', '--token', token('vm-b'), '--share', 'relative:/t');
  const root = await w.ctl('vm', 'create', 'b', '--token', token('vm-b'), '--share', '/vms/x:/');
  for (const [what, r] of [['same target, default name', dup], ['--share relative:/t', rel], ['--share /vms/x:/', root]] as const) {
    t.log(`${what}: exit ${r.code}: ${r.stderr.trim()}`);
    t.is(r.code, 1, what);
  }
  t.true(dup.stderr.includes(logs), `the message names the taken target ${logs}: ${dup.stderr.trim()}`);
  t.false(/\/t\.dir|\/\.target/.test(rel.stderr + root.stderr), `the --share argument is quoted as given, not as "/t.dir" or "/.target":\n${rel.stderr}${root.stderr}`);
});

test.serial('dirvisorctl without a reachable host agent, or without root, says so clearly', async (t) => {
  const w = await world(t);
  await w.addNode('n1', 16);
  await w.writeHostConfig();
  // No host agent yet.
  const none = await w.ctl('list');
  t.is(none.code, 1);
  t.regex(none.stderr, /cannot reach the host agent's control socket .*control\.sock: ENOENT \(is dirvisor-host running\? systemctl status dirvisor-host\)/);

  await w.startHost();
  const st = await fs.stat(w.controlSocket);
  t.is(st.mode & 0o777, 0o600, 'the control socket is root only');
  // An unprivileged user: the socket refuses it.
  await fs.chmod(w.root, 0o755);
  const user = await run([process.execPath, CTL_BIN, '--socket', w.controlSocket, 'list'], { uid: 1000, cwd: '/' });
  t.is(user.code, 1);
  t.regex(user.stderr, /EACCES \(run as root\)/);
  t.log(`as uid 1000: ${user.stderr.trim()}`);
});
