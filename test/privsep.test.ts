// Privilege separation (issue 9, deliverable 2 and the state-dir part of 5;
// docs/privsep.md). The process that owns the SPA socket is found through the
// kernel (/proc/PID/net/udp inode -> /proc/*/fd) and its /proc/PID/status is
// read: not root, no capabilities, no_new_privs, and not the monitor. What a
// process with the worker's credentials can and cannot do is measured with
// probes started through the same setpriv flags. The monitor's validator is
// checked as a pure function and over the real channel (a forging worker);
// worker and monitor deaths; and the state directory's owner/mode checks and
// symlink-proof files.
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadFwknopConfig } from '../src/config/fwknop.js';
import type { Grant } from '../src/backends/backend.js';
import { resolveWorkerUser, setprivArgs, parsePasswdLine, passwdSources, findInPasswd } from '../src/gateway/privsep/identity.js';
import { loadRequestSchema, policyFromConfig, validateRequest, type MonitorPolicy } from '../src/gateway/privsep/validate.js';
import { ensureStateDir, openStateAppend, stateDirProblem, writeFileAtomic } from '../src/gateway/state.js';
import {
  SERVICE_PORT, SPA_PORT, SESAME_BIN, events, startDaemon, fwknopKnockFrom, nftSetElements, scratchPath, startSesame, waitForEvents, writeFwknopConfig, type RunningDaemon,
} from './harness/daemon.js';
import { HARNESS_DIR, Lab, sleep, processAlive } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';

const GW4 = '198.51.100.1';
const CL4 = '198.51.100.2';

// ---------------------------------------------------------------- helpers

function status(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

/** PIDs holding the UDP socket bound to `port` in the network namespace of `nsPid`. */
function udpSocketOwners(nsPid: number, port: number): number[] {
  const inodes = new Set<string>();
  const hexPort = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const f of ['udp', 'udp6']) {
    for (const line of readFileSync(`/proc/${nsPid}/net/${f}`, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 9 && cols[1]!.endsWith(hexPort)) inodes.add(cols[9]!);
    }
  }
  const owners = new Set<number>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let fds: string[];
    try { fds = readdirSync(`/proc/${d}/fd`); } catch { continue; }
    for (const fd of fds) {
      let link: string;
      try { link = readlinkSync(`/proc/${d}/fd/${fd}`); } catch { continue; }
      const m = /^socket:\[(\d+)\]$/.exec(link);
      if (m && inodes.has(m[1]!)) owners.add(Number(d));
    }
  }
  return [...owners];
}

async function waitFor<T>(what: string, boundMs: number, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
  const t0 = Date.now();
  while (Date.now() - t0 < boundMs) {
    const v = await probe();
    if (v !== undefined) return v;
    await sleep(50);
  }
  throw new Error(`${what}: not within ${boundMs} ms`);
}

function workerOf(d: RunningDaemon): number {
  const owners = udpSocketOwners(d.child.pid!, SPA_PORT);
  if (owners.length !== 1) throw new Error(`expected one owner of udp/${SPA_PORT}, found ${owners.join(',') || 'none'}`);
  return owners[0]!;
}

// ---------------------------------------------------------------- the validator, pure

describe('privsep validator (pure)', () => {
  let policy: MonitorPolicy;
  let ruleName: string;
  let files: ReturnType<typeof writeFwknopConfig>;
  const now = 1_800_000_000_000;
  const good = (over: Partial<Grant> & Record<string, unknown> = {}): Grant => ({
    address: '198.51.100.2', family: 4, proto: 'tcp', port: SERVICE_PORT, expiresAt: now + 30_000, timeoutSec: 30, clientTimeoutSec: 0, rule: 'r', ...over,
  } as Grant);
  const check = (req: Record<string, unknown>) => validateRequest({ t: 'req', id: 7, ...req }, policy, now);
  const reason = (req: Record<string, unknown>) => { const v = check(req); return v.ok ? 'accepted' : v.reason; };

  beforeAll(async () => {
    files = writeFwknopConfig({ accessTimeout: 30 });
    const cfg = loadFwknopConfig(files.conf, files.access, { backend: 'nftables' });
    ruleName = cfg.rules[0]!.name;
    policy = policyFromConfig(cfg);
    await loadRequestSchema();
  });
  afterAll(() => rmSync(files.dir, { recursive: true, force: true }));

  it('refuses every request as not_ready until its schema is loaded (the monitor loads it after sending listen)', async () => {
    vi.resetModules();
    const fresh = await import('../src/gateway/privsep/validate.js');
    const req = { t: 'req', id: 3, op: 'open', backend: 'main', grant: good() };
    expect(fresh.validateRequest(req, policy, now)).toMatchObject({ ok: false, reason: 'not_ready', id: 3 });
    await fresh.loadRequestSchema();
    expect(fresh.validateRequest(req, policy, now).ok).toBe(true);
  });

  it('accepts what the configuration allows (so the refusals below mean something)', () => {
    expect(reason({ op: 'open', backend: 'main', grant: good() })).toBe('accepted');
    expect(reason({ op: 'open', backend: 'main', grant: good({ address: '2001:db8::2', family: 6 }) })).toBe('accepted');
    // An IPv4 knock asking for an IPv6 allow address (sesame's extension): source and destination only describe the packet.
    expect(reason({ op: 'open', backend: 'main', grant: good({ address: '2001:db8::2', family: 6, packetSource: '198.51.100.2', destination: '198.51.100.1' }) })).toBe('accepted');
    expect(reason({ op: 'list', backend: 'main' })).toBe('accepted');
    expect(reason({ op: 'open', backend: 'main', grant: good({ timeoutSec: 300, expiresAt: now + 300_000 }) })).toBe('accepted');
  });

  it('refuses a port no rule opens, a non-IP address and a family mismatch', () => {
    expect(reason({ op: 'open', backend: 'main', grant: good({ port: 22 }) })).toBe('port_not_allowed');
    expect(reason({ op: 'open', backend: 'main', grant: good({ proto: 'udp' }) })).toBe('port_not_allowed');
    expect(reason({ op: 'open', backend: 'main', grant: good({ address: 'example.com' }) })).toBe('malformed');
    expect(reason({ op: 'open', backend: 'main', grant: good({ address: '198.51.100.2 . tcp . 22 }; flush ruleset' }) })).toBe('malformed');
    expect(reason({ op: 'open', backend: 'main', grant: good({ address: '2001:db8::2', family: 4 }) })).toBe('family_mismatch');
    expect(reason({ op: 'open', backend: 'main', grant: good({ port: 0 }) })).toBe('malformed');
    expect(reason({ op: 'open', backend: 'main', grant: good({ proto: 'icmp' as never }) })).toBe('malformed');
  });

  it('refuses an over-long timeout and an expiry beyond the timeout', () => {
    expect(reason({ op: 'open', backend: 'main', grant: good({ timeoutSec: 100_000, expiresAt: now + 100_000_000 }) })).toBe('timeout_too_long');
    expect(reason({ op: 'open', backend: 'main', grant: good({ expiresAt: now + 1e9 }) })).toBe('expiry_inconsistent');
  });

  it('refuses unknown operations and backends, extra fields, NAT the config does not allow', () => {
    expect(reason({ op: 'flush', backend: 'main' })).toBe('unknown_op');
    expect(reason({ op: 'exec', argv: ['nft', 'flush', 'ruleset'] })).toBe('unknown_op');
    expect(validateRequest('open', policy, now)).toMatchObject({ ok: false, reason: 'unknown_op' });
    expect(validateRequest(null, policy, now)).toMatchObject({ ok: false, reason: 'unknown_op' });
    expect(reason({ op: 'open', backend: 'cmd:nope', grant: good() })).toBe('unknown_backend');
    expect(reason({ op: 'open', backend: 'routeros', grant: good() })).toBe('unknown_backend');
    expect(reason({ op: 'open', backend: 'main', grant: good({ script: 'flush ruleset' }) })).toBe('malformed');
    expect(reason({ op: 'open', backend: 'main', grant: good(), argv: ['x'] })).toBe('malformed');
    expect(reason({ op: 'open', backend: 'main', grant: good({ nat: { host: '198.51.100.9', port: 22, local: false } }) })).toBe('nat_not_allowed');
    expect(reason({ op: 'open', backend: 'main', grant: good({ nat: { host: '0.0.0.0', port: 22, local: true } }) })).toBe('nat_not_allowed');
  });

  it('refuses a command for a rule without command execution; accepts it where the rule enables it', () => {
    expect(reason({ op: 'command', rule: ruleName, command: 'touch /tmp/x' })).toBe('command_not_allowed');
    expect(reason({ op: 'command', rule: 'no such rule', command: 'touch /tmp/x' })).toBe('command_not_allowed');
    const withExec = { ...policy, commandRules: new Set([ruleName]) };
    expect(validateRequest({ t: 'req', id: 1, op: 'command', rule: ruleName, command: 'touch /tmp/x' }, withExec, now).ok).toBe(true);
  });

  it('lets a well-formed close through even for a port no longer configured (closing only takes access away), never a malformed one', () => {
    expect(reason({ op: 'close', backend: 'main', grant: good({ port: 22 }) })).toBe('accepted');
    expect(reason({ op: 'close', backend: 'main', grant: good({ address: 'not-an-ip' }) })).toBe('malformed');
    expect(reason({ op: 'close', backend: 'cmd:nope', grant: good() })).toBe('unknown_backend');
  });

  it('builds the setpriv options that drop everything, and parses passwd lines', () => {
    const args = setprivArgs({ uid: 999, gid: 995, name: 'sesame', switchUser: true }, true);
    expect(args).toEqual(['--reuid=999', '--regid=995', '--clear-groups', '--inh-caps=-all', '--ambient-caps=-all', '--bounding-set=-all', '--no-new-privs', '--pdeathsig=KILL', '--']);
    expect(setprivArgs({ uid: 999, gid: 995, name: 'sesame', switchUser: false }, false)).not.toContain('--reuid=999');
    expect(parsePasswdLine('sesame:x:999:995::/nonexistent:/usr/sbin/nologin\n')).toEqual({ name: 'sesame', uid: 999, gid: 995 });
    expect(parsePasswdLine('garbage')).toBeUndefined();
  });

  it('reads the user from /etc/passwd only when NSS asks it first, and takes its first entry', () => {
    expect(passwdSources('# c\npasswd:         files systemd\ngroup: files\n')).toEqual(['files', 'systemd']);
    expect(passwdSources('passwd: ldap [NOTFOUND=return] files\n')).toEqual(['ldap', 'files']);
    expect(passwdSources('passwd: compat\n')).toEqual(['compat']);
    expect(passwdSources('group: files\n')).toEqual([]);
    const passwd = 'root:x:0:0:root:/root:/bin/bash\nsesamex:x:5:5::/:/bin/false\nsesame:x:999:995::/nonexistent:/usr/sbin/nologin\nsesame:x:7:7::/:/bin/false\n';
    expect(findInPasswd(passwd, 'sesame')).toEqual({ name: 'sesame', uid: 999, gid: 995 });
    expect(findInPasswd(passwd, 'sesam')).toBeUndefined();
    expect(findInPasswd(passwd, 'nobody-here')).toBeUndefined();
  });
});

describeWith('privsep: the worker user', ['root'], () => {
  it('resolves the worker user to what getent answers', () => {
    const viaGetent = parsePasswdLine(execFileSync('getent', ['passwd', 'sesame'], { encoding: 'utf8' }));
    const id = resolveWorkerUser('sesame', true);
    expect({ name: id.name, uid: id.uid, gid: id.gid }).toEqual(viaGetent);
    expect(() => resolveWorkerUser('no-such-user-sesame', true)).toThrow(/user no-such-user-sesame does not exist; .*useradd/);
  });
});

// ---------------------------------------------------------------- state directory

describeWith('privsep: state directory owner, mode and symlinks', ['root'], () => {
  const tmp = scratchPath('sesame-psd-');
  let owner: { uid: number; gid: number; name: string };

  beforeAll(() => {
    mkdirSync(tmp, { mode: 0o711 });
    const id = resolveWorkerUser('sesame', true);
    owner = { uid: id.uid, gid: id.gid, name: id.name };
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('creates a missing state dir 0700, owned by the worker user', () => {
    const d = path.join(tmp, 'new');
    ensureStateDir(d, { owner });
    const st = statSync(d);
    expect([st.uid, st.mode & 0o777]).toEqual([owner.uid, 0o700]);
  });

  it('refuses a group- or other-writable state dir with the fix', () => {
    const d = path.join(tmp, 'gw');
    mkdirSync(d);
    chownSync(d, owner.uid, owner.gid);
    chmodSync(d, 0o770);
    expect(() => ensureStateDir(d, { owner })).toThrow(/writable by group or others \(mode 0770\); fix: chmod 700/);
    expect(stateDirProblem(d, owner)).toMatch(/writable by group or others/);
    chmodSync(d, 0o703);
    expect(() => ensureStateDir(d, { owner })).toThrow(/writable by group or others/);
  });

  it('refuses a state dir owned by another user with the fix', () => {
    const d = path.join(tmp, 'other');
    mkdirSync(d, { mode: 0o700 });
    chownSync(d, 65534, 65534);
    expect(() => ensureStateDir(d, { owner })).toThrow(/owned by uid 65534, not by sesame's user sesame .*fix: chown sesame:/);
    expect(stateDirProblem(d, owner)).toMatch(/owned by uid 65534/);
    expect(stateDirProblem(path.join(tmp, 'missing'), owner)).toBeUndefined();
    // Not adopted: its owner did not change.
    expect(statSync(d).uid).toBe(65534);
  });

  it('refuses a root-owned state dir that others can enter/write instead of adopting it', () => {
    const d = path.join(tmp, 'rootopen');
    mkdirSync(d);
    chmodSync(d, 0o777);
    expect(() => ensureStateDir(d, { owner })).toThrow(/owned by uid 0/);
    expect(statSync(d).uid).toBe(0);
  });

  it('adopts a root-owned 0700 dir: it and its state files, never a link, never a config file', () => {
    const d = path.join(tmp, 'adopt');
    mkdirSync(d, { mode: 0o700 });
    writeFileSync(path.join(d, 'replay.log'), '', { mode: 0o600 });
    writeFileSync(path.join(d, 'access.conf'), 'KEY x\n', { mode: 0o600 });
    const victim = path.join(tmp, 'victim-adopt');
    writeFileSync(victim, 'root file\n', { mode: 0o600 });
    symlinkSync(victim, path.join(d, 'grants.log'));
    const seen: Record<string, unknown>[] = [];
    ensureStateDir(d, { owner, onAdopt: (f) => seen.push(f) });
    expect(statSync(d).uid).toBe(owner.uid);
    expect(statSync(path.join(d, 'replay.log')).uid).toBe(owner.uid);
    expect(statSync(path.join(d, 'access.conf')).uid).toBe(0);
    expect(statSync(victim).uid).toBe(0);
    expect(lstatSync(path.join(d, 'grants.log')).uid).toBe(0);
    expect(seen).toHaveLength(1);
  });

  it('refuses a symlinked state dir', () => {
    const real = path.join(tmp, 'real');
    mkdirSync(real, { mode: 0o700 });
    chownSync(real, owner.uid, owner.gid);
    const link = path.join(tmp, 'link');
    symlinkSync(real, link);
    expect(() => ensureStateDir(link, { owner })).toThrow(/is a symbolic link/);
  });

  it('never follows a symlink planted at the old predictable temp name or at a state file', () => {
    const d = path.join(tmp, 'links');
    mkdirSync(d, { mode: 0o700 });
    const victim = path.join(tmp, 'victim');
    writeFileSync(victim, 'precious\n', { mode: 0o644 });
    const file = path.join(d, 'replay.log');
    // Before: `.replay.log.<pid>.tmp` was opened with 'w' (following links); plant it for this pid.
    symlinkSync(victim, path.join(d, `.replay.log.${process.pid}.tmp`));
    writeFileAtomic(file, 'new content\n');
    expect(readFileSync(victim, 'utf8')).toBe('precious\n');
    expect(readFileSync(file, 'utf8')).toBe('new content\n');
    expect(readdirSync(d).filter((n) => n.endsWith('.tmp') && !n.includes(String(process.pid)))).toEqual([]);
    // A link in place of the append-only journal is refused, not followed.
    const journal = path.join(d, 'grants.log');
    symlinkSync(victim, journal);
    expect(() => openStateAppend(journal)).toThrow(/ELOOP/);
    expect(readFileSync(victim, 'utf8')).toBe('precious\n');
  });
});

// ---------------------------------------------------------------- the daemon, separated

describeWith('privsep: the packet parser has no privileges (nftables guard, real fwknop)', ['netns', 'nft', 'fwknop', 'setpriv'], () => {
  let lab: Lab;
  let daemon: RunningDaemon | undefined;
  let files: ReturnType<typeof writeFwknopConfig>;
  const tmp = scratchPath('sesame-priv-');
  const stateDir = path.join(tmp, 'state');
  let n = 0;
  const knock = async (): Promise<void> => {
    await fwknopKnockFrom(lab, 'cl', ['-A', `tcp/${SERVICE_PORT}`, '-a', CL4, '-D', GW4], path.join(tmp, `k${++n}.txt`));
  };

  beforeAll(async () => {
    mkdirSync(tmp, { mode: 0o700 });
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'x', ip4: 3 }]);
    lab.startTcpService('gw', SERVICE_PORT);
    await lab.waitListening('gw', 'tcp', SERVICE_PORT);
    files = writeFwknopConfig({ accessTimeout: 2 });
    daemon = startSesame(lab, 'gw', ['serve', '--fwknopd-conf', files.conf, '--access-conf', files.access, '--backend', 'nftables', '--state-dir', stateDir, '--log-format', 'json'],
    { ...process.env, SESAME_ROUTEROS_PASSWORD: 'privsep-env-secret' });
    await waitForEvents(daemon, 'ready', 1, 20_000);
  });

  afterAll(async () => {
    if (daemon) await lab.stop(daemon.child);
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
    if (files) rmSync(files.dir, { recursive: true, force: true });
  });

  it('the SPA socket belongs to a process that is not root, has no capabilities and no_new_privs, and is not the monitor', () => {
    const monitor = daemon!.child.pid!;
    expect(readFileSync(`/proc/${monitor}/cmdline`, 'utf8')).toContain(path.basename(SESAME_BIN));
    const worker = workerOf(daemon!);
    expect(worker).not.toBe(monitor);
    const s = status(worker);
    const uids = s.Uid!.split(/\s+/).map(Number);
    expect(uids).toHaveLength(4);
    for (const u of uids) expect(u).not.toBe(0);
    for (const g of s.Gid!.split(/\s+/).map(Number)) expect(g).not.toBe(0);
    expect(s.Groups ?? '').toBe('');
    for (const k of ['CapEff', 'CapPrm', 'CapInh', 'CapBnd', 'CapAmb']) expect([k, s[k]]).toEqual([k, '0000000000000000']);
    expect(s.NoNewPrivs).toBe('1');
    expect(Number(s.PPid)).toBe(monitor);
    expect(events(daemon!, 'ready')).toHaveLength(1);
    expect(events(daemon!, 'ready')[0]).toMatchObject({ worker_pid: worker, worker_user: 'sesame' });
    // The monitor's environment (which may hold a router password) is not passed on.
    expect(readFileSync(`/proc/${monitor}/environ`, 'utf8')).toContain('privsep-env-secret');
    expect(readFileSync(`/proc/${worker}/environ`, 'utf8')).not.toContain('privsep-env-secret');
    // The state dir was adopted by the worker's user (it was created root-owned inside a private temp dir).
    expect(statSync(stateDir).uid).toBe(uids[0]);
  });

  it('a real fwknop knock still opens the port (the monitor applied it)', async () => {
    expect(await lab.canConnect('cl', GW4, SERVICE_PORT)).toBe(false);
    await knock();
    expect(await lab.waitOpen('cl', GW4, SERVICE_PORT, 2000)).toBeGreaterThanOrEqual(0);
    expect(await lab.canConnect('x', GW4, SERVICE_PORT)).toBe(false);
  });

  it('with the worker\'s credentials a process cannot change the firewall, read root-only files, write /etc, or signal/trace the monitor', async () => {
    const worker = workerOf(daemon!);
    const s = status(worker);
    const uid = Number(s.Uid!.split(/\s+/)[0]);
    const gid = Number(s.Gid!.split(/\s+/)[0]);
    const flags = setprivArgs({ uid, gid, name: 'sesame', switchUser: true }, true);
    const asWorker = (cmd: string, ...args: string[]) => lab.exec('gw', 'setpriv', [...flags, cmd, ...args], { timeoutMs: 10_000 });
    const monitor = daemon!.child.pid!;
    const etcProbe = `/etc/sesame-privsep-probe-${process.pid}-${Date.now()}`;
    // The probe really has the worker's credentials.
    const me = await asWorker('grep', '-E', '^(Uid|CapEff|CapBnd|NoNewPrivs):', '/proc/self/status');
    expect(me.stdout).toMatch(new RegExp(`Uid:\\s+${uid}\\s`));
    expect(me.stdout).toMatch(/CapEff:\s+0{16}/);
    expect(me.stdout).toMatch(/NoNewPrivs:\s+1/);
    const cannot = {
      nft_add_table: await asWorker('nft', 'add', 'table', 'inet', 'probe'),
      nft_flush_sesame: await asWorker('nft', 'flush', 'table', 'inet', 'sesame'),
      read_key_file: await asWorker('cat', files.access),
      write_etc: await asWorker('touch', etcProbe),
      signal_monitor: await asWorker('kill', '-0', String(monitor)),
      read_monitor_memory: await asWorker('dd', `if=/proc/${monitor}/mem`, 'bs=1', 'count=1', 'skip=4194304', 'status=none'),
      read_monitor_environ: await asWorker('cat', `/proc/${monitor}/environ`),
      bind_low_port: await asWorker(process.execPath, '-e', "require('node:net').createServer().listen(80, () => process.exit(0)).on('error', () => process.exit(13))"),
    };
    for (const [what, r] of Object.entries(cannot)) expect([what, r.code]).not.toEqual([what, 0]);
    expect(cannot.nft_add_table.stderr).toMatch(/Operation not permitted/);
    const wrote = existsSync(etcProbe);
    rmSync(etcProbe, { force: true });
    expect(wrote).toBe(false);
    const list = await lab.exec('gw', 'nft', ['list', 'tables']);
    expect(list.stdout).not.toMatch(/probe/);
    expect(list.stdout).toMatch(/inet sesame/);
    const can = {
      read_passwd: await asWorker('cat', '/etc/passwd'),
      bind_high_udp: await asWorker(process.execPath, '-e', "const s = require('node:dgram').createSocket('udp4'); s.bind(40999, () => process.exit(0)); s.on('error', () => process.exit(13))"),
    };
    for (const [what, r] of Object.entries(can)) expect([what, r.code]).toEqual([what, 0]);
  });

  it('a SIGKILLed worker is restarted while the guard holds, and a knock works again', async () => {
    const before = workerOf(daemon!);
    const restartedBefore = events(daemon!, 'worker_restarted').length;
    process.kill(before, 'SIGKILL');
    await waitForEvents(daemon!, 'worker_exited', 1, 5000);
    // The guard stays: nobody gets in while the parser is down.
    expect(await lab.canConnect('x', GW4, SERVICE_PORT)).toBe(false);
    await waitForEvents(daemon!, 'worker_restarted', restartedBefore + 1, 10_000);
    const after = workerOf(daemon!);
    expect(after).not.toBe(before);
    expect(status(after).CapEff).toBe('0000000000000000');
    await sleep(2200); // the earlier grant (2 s) has expired
    expect(await lab.canConnect('cl', GW4, SERVICE_PORT)).toBe(false);
    await knock();
    expect(await lab.waitOpen('cl', GW4, SERVICE_PORT, 2000)).toBeGreaterThanOrEqual(0);
    expect(events(daemon!, 'ready')).toHaveLength(1);
  });

  it('a SIGKILLed monitor takes the worker with it (parent-death signal)', async () => {
    const worker = workerOf(daemon!);
    await lab.stop(daemon!.child, 'SIGKILL');
    daemon = undefined;
    // Bounded wait, not a timing assertion: without the parent-death signal the worker lives on.
    await waitFor('worker gone', 3000, () => (processAlive(worker) ? undefined : true));
  });

  it('forged requests over the real channel are refused and nothing reaches the firewall', async () => {
    const forgeState = path.join(tmp, 'forge-state');
    const r = await lab.exec('gw', process.execPath, [path.join(HARNESS_DIR, 'privsep-forge-driver.mjs'), files.conf, files.access, forgeState], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    const line = r.stdout.split('\n').find((l) => l.startsWith('FORGE '));
    expect(line, r.stdout + r.stderr).toBeDefined();
    const answers = JSON.parse(line!.slice(6)) as Record<string, { ok: boolean; error?: string }>;
    expect(answers.legit).toEqual({ ok: true });
    const forged = Object.entries(answers).filter(([k]) => k !== 'legit');
    expect(forged.length).toBeGreaterThanOrEqual(10);
    for (const [k, a] of forged) expect([k, a.ok, a.error]).toEqual([k, false, expect.stringMatching(/^refused by the monitor \(/)]);
    expect(answers.command!.error).toMatch(/command_not_allowed/);
    expect(answers.wrong_port!.error).toMatch(/port_not_allowed/);
    expect(r.stdout).toContain(`REFUSED ${forged.length}`);
    // Refusals are logged once per reason, not once per request.
    const refusedLines = r.stderr.split('\n').filter((l) => l.includes('"privsep_refused"'));
    const reasons = new Set(refusedLines.map((l) => (JSON.parse(l) as { reason: string }).reason));
    expect(refusedLines.length).toBe(reasons.size);
    // Only the legitimate grant is in the kernel; the table survived the forged flushes.
    const keys = (await nftSetElements(lab, 'gw', 'granted4')).map((e) => e.key);
    expect(keys.some((k) => k.startsWith('198.51.100.50 '))).toBe(true);
    for (const k of keys) expect(k).not.toMatch(/^198\.51\.100\.6\d /);
    const ruleset = await lab.exec('gw', 'nft', ['list', 'ruleset']);
    expect(ruleset.stdout).toMatch(/table inet sesame/);
    expect(ruleset.stdout).not.toMatch(/198\.51\.100\.6\d|2001:db8::61/);
  });

  it('refuses to start as root when the worker user does not exist, naming the fix', async () => {
    const r = await lab.exec('gw', process.execPath, [SESAME_BIN, 'serve', '--fwknopd-conf', files.conf, '--access-conf', files.access, '--backend', 'log', '--state-dir', path.join(tmp, 's2'), '--user', 'no-such-sesame-user'], { timeoutMs: 15_000 });
    expect(r.code).not.toBe(0);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/user no-such-sesame-user does not exist.*useradd --system --no-create-home --home-dir \/nonexistent --shell \/usr\/sbin\/nologin no-such-sesame-user.*--user/);
  });

  it('refuses to start on a group-writable state dir, with the fix, leaving nothing running', async () => {
    const bad = path.join(tmp, 'badstate');
    mkdirSync(bad, { mode: 0o770 });
    const id = resolveWorkerUser('sesame', true);
    chownSync(bad, id.uid, id.gid);
    chmodSync(bad, 0o770);
    const r = await lab.exec('gw', process.execPath, [SESAME_BIN, 'serve', '--fwknopd-conf', files.conf, '--access-conf', files.access, '--backend', 'log', '--state-dir', bad], { timeoutMs: 15_000 });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/writable by group or others \(mode 0770\); fix: chmod 700/);
  });

  it('a first worker that cannot bind its port makes serve exit non-zero with the reason, without restart attempts', async () => {
    const blocker = lab.spawn('gw', process.execPath, ['-e', `const s = require('node:dgram').createSocket('udp4'); s.bind(${SPA_PORT}, '0.0.0.0', () => console.log('bound')); setTimeout(() => process.exit(0), 30000)`]);
    try {
      await lab.waitListening('gw', 'udp', SPA_PORT);
      const r = await lab.exec('gw', process.execPath, [SESAME_BIN, 'serve', '--fwknopd-conf', files.conf, '--access-conf', files.access, '--backend', 'log', '--state-dir', path.join(tmp, 's3'), '--log-format', 'json'], { timeoutMs: 20_000 });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/cannot listen on 0\.0\.0\.0:62201: EADDRINUSE/);
      expect(r.stderr).not.toMatch(/worker_exited|"ready"/);
    } finally {
      await lab.stop(blocker, 'SIGKILL');
    }
  });
});

// ---------------------------------------------------------------- as systemd runs it: User=sesame, ambient CAP_NET_ADMIN

describeWith('privsep: monitor as an unprivileged user with only ambient CAP_NET_ADMIN (the systemd unit\'s shape)', ['netns', 'nft', 'fwknop', 'setpriv'], () => {
  let lab: Lab;
  let daemon: RunningDaemon | undefined;
  const tmp = scratchPath('sesame-privnr-');
  let id: ReturnType<typeof resolveWorkerUser>;

  beforeAll(async () => {
    id = resolveWorkerUser('sesame', true);
    mkdirSync(tmp, { mode: 0o711 });
    for (const d of ['conf', 'state']) {
      mkdirSync(path.join(tmp, d), { mode: 0o700 });
      chownSync(path.join(tmp, d), id.uid, id.gid);
    }
    const { KEY_B64, HMAC_B64 } = await import('./harness/fwknop.js');
    const yaml = path.join(tmp, 'conf', 'sesame.yaml');
    writeFileSync(yaml, [
      `listen: ["0.0.0.0:${SPA_PORT}"]`, `state_dir: ${path.join(tmp, 'state')}`,
      `backend: { kind: nftables, mode: guard, guard_ports: [tcp/${SERVICE_PORT}] }`,
      'rules:', '  - name: default', '    source: [any]', `    key_base64: ${KEY_B64}`, `    hmac_key_base64: ${HMAC_B64}`,
      '    hmac_digest: sha256', `    open_ports: [tcp/${SERVICE_PORT}]`, '    access_timeout: 3', '',
    ].join('\n'), { mode: 0o600 });
    chownSync(yaml, id.uid, id.gid);
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }]);
    lab.startTcpService('gw', SERVICE_PORT);
    await lab.waitListening('gw', 'tcp', SERVICE_PORT);
    // As the systemd unit runs it: setpriv gives the monitor uid sesame + ambient CAP_NET_ADMIN only.
    daemon = startDaemon(lab, 'gw', 'setpriv', [`--reuid=${id.uid}`, `--regid=${id.gid}`, '--clear-groups', '--inh-caps=+net_admin', '--ambient-caps=+net_admin', '--',
      process.execPath, SESAME_BIN, 'serve', '-c', yaml, '--log-format', 'json']);
    await waitForEvents(daemon, 'ready', 1, 20_000);
  });

  afterAll(async () => {
    if (daemon) await lab.stop(daemon.child);
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('the worker keeps the uid but holds no capabilities; the monitor holds only CAP_NET_ADMIN; a knock opens the port', async () => {
    const monitor = daemon!.child.pid!;
    const m = status(monitor);
    expect(m.Uid!.split(/\s+/).map(Number)).toEqual([id.uid, id.uid, id.uid, id.uid]);
    expect(m.CapEff).toBe('0000000000001000'); // CAP_NET_ADMIN only
    const worker = workerOf(daemon!);
    expect(worker).not.toBe(monitor);
    const w = status(worker);
    expect(w.Uid!.split(/\s+/).map(Number)).toEqual([id.uid, id.uid, id.uid, id.uid]);
    for (const k of ['CapEff', 'CapPrm', 'CapInh', 'CapAmb']) expect([k, w[k]]).toEqual([k, '0000000000000000']);
    expect(w.NoNewPrivs).toBe('1');
    expect(await lab.canConnect('cl', GW4, SERVICE_PORT)).toBe(false);
    await fwknopKnockFrom(lab, 'cl', ['-A', `tcp/${SERVICE_PORT}`, '-a', CL4, '-D', GW4], path.join(tmp, 'k.txt'));
    expect(await lab.waitOpen('cl', GW4, SERVICE_PORT, 2000)).toBeGreaterThanOrEqual(0);
  });

  it('SIGTERM stops monitor and worker', async () => {
    const worker = workerOf(daemon!);
    const t0 = Date.now();
    await lab.stop(daemon!.child, 'SIGTERM');
    const ms = Date.now() - t0;
    expect(daemon!.child.exitCode).toBe(0);
    const d = daemon!;
    daemon = undefined;
    await waitFor('worker gone', 1000, () => (processAlive(worker) ? undefined : true));
    process.stderr.write(`privsep: SIGTERM to exit (non-root monitor): ${ms} ms\n${events(d, 'signal').concat(events(d, 'stopped')).map((e) => JSON.stringify(e)).join('\n')}\n`);
  });
});

// ---------------------------------------------------------------- a port below 1024

describeWith('privsep: an SPA port below 1024 (the monitor binds it, the worker gets the socket)', ['netns', 'nft', 'fwknop', 'setpriv'], () => {
  const LOW = 500;
  let lab: Lab;
  let daemon: RunningDaemon | undefined;
  const tmp = scratchPath('sesame-lowport-');
  const lowWorker = (): number => {
    const owners = udpSocketOwners(daemon!.child.pid!, LOW);
    if (owners.length !== 1) throw new Error(`expected one owner of udp/${LOW}, found ${owners.join(',') || 'none'}`);
    return owners[0]!;
  };

  beforeAll(async () => {
    const { KEY_B64, HMAC_B64 } = await import('./harness/fwknop.js');
    mkdirSync(tmp, { mode: 0o700 });
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'x', ip4: 3 }]);
    lab.startTcpService('gw', SERVICE_PORT);
    await lab.waitListening('gw', 'tcp', SERVICE_PORT);
    const file = path.join(tmp, 'sesame.yaml');
    writeFileSync(file, [`listen: ["0.0.0.0:${LOW}", "[::]:${LOW}"]`, `state_dir: ${path.join(tmp, 'state')}`, 'backend: { kind: nftables, mode: guard }',
      'rules:', '  - name: cl', `    source: [${CL4}]`, `    key_base64: ${KEY_B64}`, `    hmac_key_base64: ${HMAC_B64}`, `    open_ports: [tcp/${SERVICE_PORT}]`, '    access_timeout: 30', ''].join('\n'), { mode: 0o600 });
    daemon = startSesame(lab, 'gw', ['serve', '-c', file, '--log-format', 'json']);
    await waitForEvents(daemon, 'ready', 1, 20_000).catch((e) => { throw new Error(`${(e as Error).message}\n${daemon!.logText()}`); });
  });

  afterAll(async () => {
    if (daemon) await lab.stop(daemon.child);
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('only the worker holds the udp/500 sockets (IPv4 and IPv6), with no capability; a real fwknop knock to port 500 opens', async () => {
    const { KEY_B64, HMAC_B64 } = await import('./harness/fwknop.js');
    const worker = lowWorker();
    const ss = await lab.exec('gw', 'ss', ['-H', '-u', '-l', '-n', '-p', 'sport', '=', `:${LOW}`]);
    expect(ss.stdout.trim().split('\n'), ss.stdout).toHaveLength(2);
    const holders = new Set([...ss.stdout.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1])));
    expect([...holders]).toEqual([worker]);
    for (const k of ['CapEff', 'CapPrm', 'CapBnd', 'CapAmb']) expect([k, status(worker)[k]]).toEqual([k, '0000000000000000']);
    expect(await lab.canConnect('cl', GW4, SERVICE_PORT, 400)).toBe(false);
    const home = mkdtempSync(path.join(tmp, 'home-'));
    const r = await lab.exec('cl', 'fwknop', ['-A', `tcp/${SERVICE_PORT}`, '-a', CL4, '-D', GW4, '-p', String(LOW), '--use-hmac', '--key-base64-rijndael', KEY_B64,
      '--key-base64-hmac', HMAC_B64, '--hmac-digest-type', 'sha256', '--no-rc-file', '--no-save-args'], { env: { ...process.env, HOME: home } });
    expect(r.code, r.stderr).toBe(0);
    expect(await lab.waitOpen('cl', GW4, SERVICE_PORT, 5000)).toBeGreaterThanOrEqual(0);
    expect(await lab.canConnect('x', GW4, SERVICE_PORT, 400)).toBe(false);
  });

  it('a restarted worker gets the sockets again from the monitor', async () => {
    const before = lowWorker();
    process.kill(before, 'SIGKILL');
    await waitForEvents(daemon!, 'worker_restarted', 1, 20_000);
    let after = 0;
    for (let i = 0; i < 100; i++) {
      try { after = lowWorker(); } catch { after = 0; }
      const ss = await lab.exec('gw', 'ss', ['-H', '-u', '-l', '-n', '-p', 'sport', '=', `:${LOW}`]);
      if (after && after !== before && [...ss.stdout.matchAll(/pid=(\d+)/g)].every((m) => Number(m[1]) === after) && ss.stdout.trim().split('\n').length === 2) break;
      await sleep(100);
    }
    expect(after).not.toBe(before);
    const ss = await lab.exec('gw', 'ss', ['-H', '-u', '-l', '-n', '-p', 'sport', '=', `:${LOW}`]);
    expect(new Set([...ss.stdout.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1])))).toEqual(new Set([after]));
  });

  it('a low port the monitor cannot bind fails the start in one line, and nothing stays behind', async () => {
    const { KEY_B64, HMAC_B64 } = await import('./harness/fwknop.js');
    const TAKEN = 501;
    const blocker = lab.spawn('gw', process.execPath, ['-e', `const s = require('node:dgram').createSocket('udp4'); s.bind(${TAKEN}, '0.0.0.0', () => console.log('bound')); setTimeout(() => process.exit(0), 30000)`]);
    try {
      await lab.waitListening('gw', 'udp', TAKEN);
      const file = path.join(tmp, 'taken.yaml');
      writeFileSync(file, [`listen: ["0.0.0.0:${TAKEN}"]`, `state_dir: ${path.join(tmp, 'state-taken')}`, 'backend: { kind: log }',
        'rules:', '  - name: cl', `    source: [${CL4}]`, `    key_base64: ${KEY_B64}`, `    hmac_key_base64: ${HMAC_B64}`, `    open_ports: [tcp/${SERVICE_PORT}]`, ''].join('\n'), { mode: 0o600 });
      const r = await lab.exec('gw', process.execPath, [SESAME_BIN, 'serve', '-c', file, '--log-format', 'json'], { timeoutMs: 20_000 });
      expect(r.code).not.toBe(0);
      expect(r.code).not.toBeNull();
      expect(r.stderr).toMatch(new RegExp(`cannot listen on 0\\.0\\.0\\.0:${TAKEN}: EADDRINUSE`));
      // Only the blocker holds the port: no copy left in a monitor that should be gone.
      const ss = await lab.exec('gw', 'ss', ['-H', '-u', '-l', '-n', '-p', 'sport', '=', `:${TAKEN}`]);
      expect(new Set([...ss.stdout.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1])))).toEqual(new Set([blocker.pid]));
    } finally {
      await lab.stop(blocker);
    }
  });
});
