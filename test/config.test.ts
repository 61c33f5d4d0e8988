// host.yaml: a valid file loads with defaults filled in; every kind of mistake is refused with a
// message naming the file, the line, the key path and the problem. The packaged, commented file
// documents exactly the defaults the code uses.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseConfig, loadConfig, defaultConfig, ConfigError, type HostConfig } from '../host-agent/config.js';
import { tempDir } from './helpers/sockets.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PACKAGED = path.join(repoRoot, 'packaging/config/host.yaml');

function withoutSource(c: HostConfig): Omit<HostConfig, 'source'> {
  const { source: _source, ...rest } = c;
  return rest;
}

/** Asserts that `yaml` is refused and that one problem's line reads exactly `expected`. */
function refuses(t: import('ava').ExecutionContext, yaml: string, expected: string | RegExp): ConfigError {
  const err = t.throws(() => parseConfig(yaml, 'host.yaml'), { instanceOf: ConfigError }) as ConfigError;
  const lines = err.message.split('\n');
  if (typeof expected === 'string') t.true(lines.includes(expected), `expected the line\n  ${expected}\ngot\n  ${lines.join('\n  ')}`);
  else t.true(lines.some((l) => expected.test(l)), `expected a line matching ${expected}\ngot\n  ${lines.join('\n  ')}`);
  return err;
}

test('an empty file gives the defaults', (t) => {
  const c = parseConfig('', 'host.yaml');
  t.deepEqual(withoutSource(c), withoutSource(defaultConfig()));
  t.deepEqual(c.listen, ['vsock://any:5252']);
  t.is(c.controlSocket, '/run/dirvisor/control.sock');
  t.is(c.stateDir, '/var/lib/dirvisor');
  t.is(c.vmsDir, '/etc/dirvisor/vms.d');
  t.deepEqual(c.storage, { nodes: [], placement: { reserve: { percent: 10 }, skipUnreachable: false }, timeoutMs: 5000, ioTimeoutMs: 30_000, maxCallsPerNode: 8, mountCheckIntervalMs: 1000 });
  t.deepEqual(c.defaults, { readOnly: false, squash: 'none', anonUid: 65534, anonGid: 65534, cache: 'long', mountOptions: [] });
  t.deepEqual(c.limits, { maxInFlight: 256, maxHandles: 4096, maxFds: 16384, maxVmInFlight: 512 });
});

test('the packaged host.yaml loads as the defaults, and its commented settings are exactly the defaults', async (t) => {
  const packaged = await loadConfig(PACKAGED);
  t.is(packaged.source, PACKAGED);
  t.deepEqual(withoutSource(packaged), withoutSource(defaultConfig()));

  // Uncomment every commented-out setting (a "#" followed by "key:" or "- item"); prose stays.
  const text = fs.readFileSync(PACKAGED, 'utf8')
    .split('\n')
    .map((l) => (/^#(\s*)([a-z_]+:(\s.*)?|- .*)$/.test(l) ? l.slice(1) : l))
    .join('\n');
  const uncommented = parseConfig(text, 'uncommented host.yaml');
  t.deepEqual(withoutSource({ ...uncommented, storage: { ...uncommented.storage, nodes: [] } }), withoutSource(defaultConfig()));
  t.deepEqual(uncommented.storage.nodes.map((n) => [n.name, n.path, n.prefixes, n.placement, n.reserve]), [
    ['ceph-a', '/mnt/cephfs', ['/projects'], true, undefined],
    ['nfs-b', '/mnt/nfs-b', [], true, undefined],
    ['nfs-c', '/mnt/nfs-c', [], true, { bytes: 50 * 2 ** 30 }],
    ['archive', '/mnt/archive', [], false, undefined],
  ]);
});

test('a full configuration is read as written', (t) => {
  const c = parseConfig(`
listen: [ "vsock://any:6000", "unix:///run/dirvisor/guests.sock", "hvsock:///var/lib/fc/vm1.vsock:6000" ]
control_socket: /run/dv/ctl.sock
state_dir: /srv/dv/state
vms_dir: /srv/dv/vms.d
storage:
  nodes:
    - name: ceph-a
      backend: posix
      path: /mnt/cephfs
      prefixes: [ /projects, /teams/infra ]
      placement: false
      reserve: 1.5GiB
      require_mount: false
    - name: nfs_b.2
      path: /mnt/nfs-b
      reserve: 5%
  placement:
    reserve: 500MB
    skip_unreachable: true
  timeout: 750ms
  io_timeout: 2m
  max_calls_per_node: 4
defaults:
  read_only: true
  squash: root
  anon_uid: 1000
  anon_gid: 0
  cache: none
  mount_options: [ allow_other, max_read=131072 ]
limits:
  max_in_flight: 64
  max_handles: 100
  max_fds: 2000
  max_vm_in_flight: 32
`, '/etc/dirvisor/host.yaml');
  t.is(c.source, '/etc/dirvisor/host.yaml');
  t.deepEqual(c.listen, ['vsock://any:6000', 'unix:///run/dirvisor/guests.sock', 'hvsock:///var/lib/fc/vm1.vsock:6000']);
  t.is(c.controlSocket, '/run/dv/ctl.sock');
  t.is(c.stateDir, '/srv/dv/state');
  t.is(c.vmsDir, '/srv/dv/vms.d');
  t.deepEqual(c.storage.nodes, [
    { name: 'ceph-a', backend: 'posix', path: '/mnt/cephfs', prefixes: ['/projects', '/teams/infra'], placement: false, reserve: { bytes: 1.5 * 2 ** 30 }, requireMount: false },
    { name: 'nfs_b.2', backend: 'posix', path: '/mnt/nfs-b', prefixes: [], placement: true, reserve: { percent: 5 }, requireMount: true },
  ]);
  t.deepEqual(c.storage.placement, { reserve: { bytes: 500e6 }, skipUnreachable: true });
  t.is(c.storage.timeoutMs, 750);
  t.is(c.storage.ioTimeoutMs, 120_000);
  t.is(c.storage.maxCallsPerNode, 4);
  t.deepEqual(c.defaults, { readOnly: true, squash: 'root', anonUid: 1000, anonGid: 0, cache: 'none', mountOptions: ['allow_other', 'max_read=131072'] });
  t.deepEqual(c.limits, { maxInFlight: 64, maxHandles: 100, maxFds: 2000, maxVmInFlight: 32 });
});

test('small conveniences: one listener as a string, a reserve in bytes, "/" as a catch-all prefix, a timeout in seconds', (t) => {
  const c = parseConfig('listen: tcp://127.0.0.1:7000\nstorage:\n  nodes:\n    - {name: all, path: /srv/all, prefixes: [/], reserve: 1048576}\n  timeout: 2\n');
  t.deepEqual(c.listen, ['tcp://127.0.0.1:7000']);
  t.deepEqual(c.storage.nodes[0].prefixes, ['/']);
  t.deepEqual(c.storage.nodes[0].reserve, { bytes: 1048576 });
  t.is(c.storage.timeoutMs, 2000);
});

const nodes = (body: string) => `storage:\n  nodes:\n${body}`;

test('storage directory prefixes must be absolute, normalized, without ".."', (t) => {
  const err = refuses(t, nodes(`    - name: ceph-a\n      path: /mnt/a\n    - name: ceph-b\n      path: /mnt/b\n      prefixes: [ projects ]\n`),
    'host.yaml:7: storage.nodes[1].prefixes[0]: must be an absolute path, got "projects"');
  t.deepEqual(err.problems, [{ path: 'storage.nodes[1].prefixes[0]', message: 'must be an absolute path, got "projects"', line: 7 }]);
  t.is(err.file, 'host.yaml');
  refuses(t, nodes(`    - name: a\n      path: /mnt/a\n      prefixes: [ /projects/../etc ]\n`), /^host\.yaml:5: storage\.nodes\[0\]\.prefixes\[0\]: must not contain "\.\." components, got "\/projects\/\.\.\/etc"$/);
  refuses(t, nodes(`    - name: a\n      path: /mnt/a\n      prefixes: [ /projects/ ]\n`), 'host.yaml:5: storage.nodes[0].prefixes[0]: must be normalized (no "//", "." or trailing "/"), got "/projects/"; did you mean "/projects"?');
  refuses(t, nodes(`    - name: a\n      path: /mnt/a\n      prefixes: [ "/a//b", /a/./c ]\n`), /storage\.nodes\[0\]\.prefixes\[1\]: must be normalized .*did you mean "\/a\/c"\?$/);
  refuses(t, nodes(`    - name: a\n      path: /mnt/a\n      prefixes: /projects\n`), 'host.yaml:5: storage.nodes[0].prefixes: must be a list, got "/projects"');
  refuses(t, nodes(`    - name: a\n      path: /mnt/a\n      prefixes: [ 42 ]\n`), 'host.yaml:5: storage.nodes[0].prefixes[0]: must be an absolute path (a string), got 42');
});

test('a prefix belongs to one node, and once', (t) => {
  refuses(t, nodes(`    - {name: a, path: /mnt/a, prefixes: [/p]}\n    - {name: b, path: /mnt/b, prefixes: [/q, /p]}\n`),
    'host.yaml:4: storage.nodes[1].prefixes[1]: "/p" is already a prefix of storage.nodes[0]; a prefix belongs to one node');
  refuses(t, nodes(`    - {name: a, path: /mnt/a, prefixes: [/p, /p]}\n`), /storage\.nodes\[0\]\.prefixes\[1\]: "\/p" is listed twice$/);
  refuses(t, nodes(`    - {name: a, path: /mnt/a, prefixes: [/p, /p/q]}\n`), /storage\.nodes\[0\]\.prefixes\[1\]: "\/p\/q" is already covered by "\/p" of the same node$/);
  // Nested prefixes on different nodes are fine: the longest wins.
  t.notThrows(() => parseConfig(nodes(`    - {name: a, path: /mnt/a, prefixes: [/p]}\n    - {name: b, path: /mnt/b, prefixes: [/p/q]}\n`)));
});

test('storage nodes need a unique name and a unique absolute path', (t) => {
  refuses(t, nodes(`    - path: /mnt/a\n`), 'host.yaml:3: storage.nodes[0].name: is required (a short unique name such as ceph-a)');
  refuses(t, nodes(`    - name: a\n`), 'host.yaml:3: storage.nodes[0].path: is required (the host mount point of the network filesystem, e.g. /mnt/cephfs)');
  refuses(t, nodes(`    - {name: a, path: /mnt/a}\n    - {name: a, path: /mnt/b}\n`), 'host.yaml:4: storage.nodes[1].name: "a" is already the name of storage.nodes[0]');
  refuses(t, nodes(`    - {name: a, path: /mnt/a}\n    - {name: b, path: /mnt/a}\n`), 'host.yaml:4: storage.nodes[1].path: "/mnt/a" is already the path of storage.nodes[0]');
  refuses(t, nodes(`    - {name: "ceph a", path: /mnt/a}\n`), /storage\.nodes\[0\]\.name: must be 1-63 letters, digits, "\.", "_" or "-", starting with a letter or digit, got "ceph a"$/);
  refuses(t, nodes(`    - {name: a, path: mnt/a}\n`), 'host.yaml:3: storage.nodes[0].path: must be an absolute path, got "mnt/a"');
  refuses(t, nodes(`    - {name: a, path: /mnt/a/}\n`), /storage\.nodes\[0\]\.path: must be normalized .*did you mean "\/mnt\/a"\?$/);
  refuses(t, nodes(`    - just-a-name\n`), 'host.yaml:3: storage.nodes[0]: must be a mapping of name, backend, path, prefixes, placement, reserve, require_mount, got "just-a-name"');
  refuses(t, 'storage:\n  nodes: {name: a}\n', 'host.yaml:2: storage.nodes: must be a list, got a mapping');
});

test('node options are checked: backend, placement, reserve, require_mount', (t) => {
  refuses(t, nodes(`    - {name: a, path: /mnt/a, backend: s3}\n`), 'host.yaml:3: storage.nodes[0].backend: must be one of posix, got "s3"');
  refuses(t, nodes(`    - name: a\n      path: /mnt/a\n      placement: yes\n`), 'host.yaml:5: storage.nodes[0].placement: must be true or false, got "yes"');
  refuses(t, nodes(`    - name: a\n      path: /mnt/a\n      reserve: lots\n`), 'host.yaml:5: storage.nodes[0].reserve: must be a percentage like 10% or a size like 5GiB; must be a size like 5GiB, 500MB or 1048576 (bytes), got "lots"');
  refuses(t, nodes(`    - name: a\n      path: /mnt/a\n      reserve: 100%\n`), 'host.yaml:5: storage.nodes[0].reserve: must be below 100%, got "100%"');
  refuses(t, nodes(`    - name: a\n      path: /mnt/a\n      reserve: -5\n`), 'host.yaml:5: storage.nodes[0].reserve: must be a percentage like 10% or a size like 5GiB, got -5');
  refuses(t, nodes(`    - name: a\n      path: /mnt/a\n      require_mount: 1\n`), 'host.yaml:5: storage.nodes[0].require_mount: must be true or false, got 1');
  refuses(t, 'storage:\n  placement:\n    reserve: 10 percent\n', /^host\.yaml:3: storage\.placement\.reserve: must be a percentage like 10% or a size like 5GiB;/);
  refuses(t, 'storage:\n  placement:\n    skip_unreachable: maybe\n', 'host.yaml:3: storage.placement.skip_unreachable: must be true or false, got "maybe"');
  refuses(t, 'storage:\n  timeout: fast\n', 'host.yaml:2: storage.timeout: must be a duration like 5s or 500ms, got "fast"');
  refuses(t, 'storage:\n  timeout: 1ms\n', 'host.yaml:2: storage.timeout: must be between 100ms and 10m, got "1ms"');
});

test('unknown keys are refused, with a suggestion for a near miss', (t) => {
  refuses(t, nodes(`    - name: a\n      path: /mnt/a\n      prefix: [ /p ]\n`),
    'host.yaml:5: storage.nodes[0].prefix: unknown key (did you mean "prefixes"?); expected one of name, backend, path, prefixes, placement, reserve, require_mount');
  refuses(t, 'listen: [ "vsock://any:1" ]\ncontrol-socket: /run/x.sock\n', /^host\.yaml:2: control-socket: unknown key \(did you mean "control_socket"\?\); expected one of listen, control_socket,/);
  refuses(t, 'defaults:\n  readonly: true\n', /^host\.yaml:2: defaults\.readonly: unknown key \(did you mean "read_only"\?\)/);
  refuses(t, 'colour: blue\n', 'host.yaml:1: colour: unknown key; expected one of listen, control_socket, state_dir, vms_dir, storage, defaults, limits');
});

test('listeners, sockets and directories are checked', (t) => {
  refuses(t, 'listen:\n  - vsock://any:5252\n  - vsock://host:5252\n', /^host\.yaml:3: listen\[1\]: invalid transport URI "vsock:\/\/host:5252": CID "host" is not a number or "any"/);
  refuses(t, 'listen:\n  - "ftp://x"\n', /^host\.yaml:2: listen\[0\]: invalid transport URI "ftp:\/\/x": unknown scheme "ftp"/);
  refuses(t, 'listen: []\n', 'host.yaml:1: listen: must name at least one listener, e.g. vsock://any:5252');
  refuses(t, 'listen: [ "vsock://any:1", "vsock://any:1" ]\n', 'host.yaml:1: listen[1]: "vsock://any:1" is listed twice');
  refuses(t, 'listen: [ 5252 ]\n', 'host.yaml:1: listen[0]: must be a transport URI, got 5252');
  refuses(t, 'control_socket: run/control.sock\n', 'host.yaml:1: control_socket: must be an absolute path, got "run/control.sock"');
  refuses(t, 'state_dir: /var/lib/../lib/dirvisor\n', /^host\.yaml:1: state_dir: must be normalized .*did you mean "\/var\/lib\/dirvisor"\?$/);
  refuses(t, 'vms_dir: [ /etc ]\n', 'host.yaml:1: vms_dir: must be an absolute path (a string), got ["/etc"]');
});

test('share defaults and limits are checked', (t) => {
  refuses(t, 'defaults:\n  squash: some\n', 'host.yaml:2: defaults.squash: must be one of none, root, all, got "some"');
  refuses(t, 'defaults:\n  cache: forever\n', 'host.yaml:2: defaults.cache: must be one of long, auto, none, got "forever"');
  refuses(t, 'defaults:\n  anon_uid: -1\n', 'host.yaml:2: defaults.anon_uid: must be a whole number from 0 to 4294967294, got -1');
  refuses(t, 'defaults:\n  anon_gid: "100"\n', 'host.yaml:2: defaults.anon_gid: must be a whole number from 0 to 4294967294, got "100"');
  refuses(t, 'defaults:\n  read_only: "false"\n', 'host.yaml:2: defaults.read_only: must be true or false, got "false"');
  refuses(t, 'defaults:\n  mount_options: [ "allow_other,ro" ]\n', /^host\.yaml:2: defaults\.mount_options\[0\]: must be one mount option such as allow_other/);
  refuses(t, 'limits:\n  max_in_flight: 0\n', 'host.yaml:2: limits.max_in_flight: must be a whole number from 1 to 65536, got 0');
  refuses(t, 'limits:\n  max_fds: 3\n', 'host.yaml:2: limits.max_fds: must be a whole number from 16 to 4194304, got 3');
  refuses(t, 'storage:\n  io_timeout: 10ms\n', 'host.yaml:2: storage.io_timeout: must be between 100ms and 1h, got "10ms"');
  refuses(t, 'limits:\n  max_handles: 1.5\n', 'host.yaml:2: limits.max_handles: must be a whole number from 1 to 1048576, got 1.5');
  refuses(t, 'limits: 10\n', 'host.yaml:1: limits: must be a mapping of max_in_flight, max_handles, max_fds, max_vm_in_flight, got 10');
});

test('YAML mistakes are reported with their line', (t) => {
  refuses(t, 'listen: [ "vsock://any:1"\nstate_dir: /x\n', /^host\.yaml:\d+: not valid YAML: /);
  refuses(t, 'state_dir: /a\nvms_dir: /b\nstate_dir: /c\n', /^host\.yaml:3: not valid YAML: Map keys must be unique/);
  refuses(t, '- listen\n- storage\n', /^host\.yaml:1: must be a mapping of listen, control_socket, .*, got a list$/);
});

test('every problem is reported at once, one per line', (t) => {
  const err = refuses(t, 'listen: [ "bogus" ]\ndefaults:\n  squash: x\nlimits:\n  max_handles: 0\n', /listen\[0\]/);
  t.deepEqual(err.problems.map((p) => [p.path, p.line]), [['listen[0]', 1], ['defaults.squash', 3], ['limits.max_handles', 5]]);
  t.is(err.message.split('\n').length, 3);
});

test('loadConfig: a missing file is an error naming it, unless missingOk; the file name is in every message', async (t) => {
  const dir = tempDir();
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'host.yaml');
  await t.throwsAsync(loadConfig(file), { instanceOf: ConfigError, message: `${file}: cannot read the configuration: ENOENT: no such file or directory, open '${file}'` });
  const fallback = await loadConfig(file, { missingOk: true });
  t.deepEqual(withoutSource(fallback), withoutSource(defaultConfig()));
  t.regex(fallback.source, /missing: defaults/);

  fs.writeFileSync(file, 'storage:\n  nodes:\n    - name: a\n      path: /mnt/a\n      prefixes: [ projects ]\n');
  await t.throwsAsync(loadConfig(file), { message: `${file}:5: storage.nodes[0].prefixes[0]: must be an absolute path, got "projects"` });
});
