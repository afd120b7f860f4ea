// When the host's own firewall defeats sesame (issue 9, deliverable 4), in
// network namespaces with the real kernel firewall: a typical host ruleset
// beside a running sesame makes every knock fail; the daemon says so at start
// (host_firewall_conflict), `sesame doctor` names the problem and the exact
// fix and exits non-zero; after the fix it names is applied, doctor is happy
// and a real knock opens the port. Variants: nftables host table, iptables
// INPUT policy DROP with the nftables backend, and with the iptables backend
// (also with its jump below a DROP of the guarded port).
// Also the other doctor checks: a readable config with keys, a group-writable
// state dir, and a clean setup where every line is ok.
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SESAME_BIN, SPA_PORT, events, scratchPath, startSesame, waitForEvents, type RunningDaemon } from './harness/daemon.js';
import { HMAC_B64, KEY_B64 } from './harness/fwknop.js';
import { HARNESS_DIR, Lab, sleep } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';

const GW4 = '198.51.100.1';
const CL4 = '198.51.100.2';
const PORT = 2222;

const HOST_NFT = `table inet filter {
  chain input {
    type filter hook input priority filter; policy drop;
    ct state established,related accept
    iif lo accept
    meta l4proto { icmp, ipv6-icmp } accept
    tcp dport 22 accept
  }
}
`;

function hostIptables(icmp: string): string {
  return ['*filter', ':INPUT DROP [0:0]', ':FORWARD DROP [0:0]', ':OUTPUT ACCEPT [0:0]', '-A INPUT -i lo -j ACCEPT',
    '-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT', `-A INPUT -p ${icmp} -j ACCEPT`,
    '-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT', 'COMMIT', ''].join('\n');
}

function yaml(stateDir: string, backend: string): string {
  return [
    `listen: ["0.0.0.0:${SPA_PORT}", "[::]:${SPA_PORT}"]`,
    `state_dir: ${stateDir}`,
    `backend: ${backend}`,
    'rules:',
    '  - name: laptop',
    '    source: [any]',
    `    key_base64: ${KEY_B64}`,
    `    hmac_key_base64: ${HMAC_B64}`,
    `    open_ports: [tcp/${PORT}]`,
    '    access_timeout: 30',
    '',
  ].join('\n');
}

interface Doctor { code: number; out: string; lines: string[] }

async function doctor(lab: Lab, args: string[], opts: { timesync?: boolean } = {}): Promise<Doctor> {
  const cmd = [process.execPath, SESAME_BIN, 'doctor', ...args];
  const r = opts.timesync
    ? await lab.exec('gw', 'unshare', ['--mount', '--propagation', 'private', process.execPath, path.join(HARNESS_DIR, 'with-timesync.mjs'), ...cmd], { timeoutMs: 60_000 })
    : await lab.exec('gw', cmd[0]!, cmd.slice(1), { timeoutMs: 60_000 });
  return { code: r.code, out: r.stdout + r.stderr, lines: r.stdout.split('\n').filter((l) => /^(ok|problem|warn) /.test(l)) };
}

/** A real knock from the client with sesame's own client; true when the port opened within 2 s. */
async function knock(lab: Lab, from = 'cl', allow = CL4): Promise<boolean> {
  const r = await lab.exec(from, process.execPath, [SESAME_BIN, 'knock', '-A', `tcp/${PORT}`, '-a', allow, '-D', GW4,
    '--key-base64-rijndael', KEY_B64, '--key-base64-hmac', HMAC_B64, '--no-rc-file', '--wait', '2'], { timeoutMs: 20_000 });
  return r.code === 0;
}

/** Run every command of this shape found in a fix text, in the gateway (argv, no shell). */
async function applyFix(lab: Lab, fix: string, re: RegExp): Promise<string[]> {
  const cmds = [...fix.matchAll(re)].map((m) => m[0]);
  expect(cmds.length).toBeGreaterThan(0);
  for (const c of cmds) {
    const [tool, ...args] = c.split(' ');
    const r = await lab.exec('gw', tool!, args);
    expect(r.code, `${c}: ${r.stderr}`).toBe(0);
  }
  return cmds;
}

function firewallProblem(d: Doctor, port: string): string | undefined {
  return d.lines.find((l) => l.startsWith(`problem host_firewall: ${port} `));
}

interface Setup { lab: Lab; daemon: RunningDaemon; cfgFile: string; stateDir: string; tmp: string }

function scenario(name: string, backend: string, loadHostFirewall: (lab: Lab) => Promise<void>, body: (s: () => Setup) => void): void {
  describeWith(name, ['netns', 'nft', 'iptables-restore', 'unshare', 'mount'], () => {
    let s: Setup | undefined;
    beforeAll(async () => {
      const tmp = scratchPath('sesame-doctor-');
      mkdirSync(tmp, { mode: 0o700 });
      const lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'x', ip4: 3 }]);
      lab.startTcpService('gw', PORT);
      await lab.waitListening('gw', 'tcp', PORT);
      await loadHostFirewall(lab);
      const stateDir = path.join(tmp, 'state');
      const cfgFile = path.join(tmp, 'sesame.yaml');
      writeFileSync(cfgFile, yaml(stateDir, backend), { mode: 0o600 });
      const daemon = startSesame(lab, 'gw', ['serve', '-c', cfgFile, '--log-format', 'json']);
      // Known to afterAll before the wait: a daemon that is slow to get ready is still stopped and the lab removed.
      s = { lab, daemon, cfgFile, stateDir, tmp };
      await waitForEvents(daemon, 'ready', 1, 30_000);
    });
    afterAll(async () => {
      if (s) await s.lab.stop(s.daemon.child);
      await s?.lab.destroy();
      if (s) rmSync(s.tmp, { recursive: true, force: true });
    });
    body(() => s!);
  });
}

async function loadNft(lab: Lab): Promise<void> {
  const r = await lab.exec('gw', 'nft', ['-f', '-'], { input: HOST_NFT });
  if (r.code !== 0) throw new Error(`nft -f failed: ${r.stderr}`);
}

async function loadIptables(lab: Lab): Promise<void> {
  for (const [tool, icmp] of [['iptables-restore', 'icmp'], ['ip6tables-restore', 'ipv6-icmp']] as const) {
    const r = await lab.exec('gw', tool, [], { input: hostIptables(icmp) });
    if (r.code !== 0) throw new Error(`${tool} failed: ${r.stderr}`);
  }
}

const NFT_FIX = /nft insert rule inet filter input (?:udp|tcp) dport \d+ accept/g;
const IPT_FIX = /ip6?tables -I INPUT 1 -p (?:udp|tcp) --dport \d+ -j ACCEPT/g;

scenario('doctor: a host nftables table drops the SPA port and the guarded port (nftables guard)', '{ kind: nftables, mode: guard }', loadNft, (setup) => {
  it('the daemon logged host_firewall_conflict at start, with the fix, and kept running', async () => {
    const { daemon } = setup();
    const found = await waitForEvents(daemon, 'host_firewall_conflict', 2, 15_000);
    const spa = found.find((e) => e.port === `udp/${SPA_PORT}`);
    expect(spa?.level).toBe('warn');
    expect(String(spa?.fix)).toContain(`nft insert rule inet filter input udp dport ${SPA_PORT} accept`);
    expect(found.find((e) => e.port === `tcp/${PORT}`)?.fix).toMatch(/guard already drops unknown sources/);
    expect(daemon.child.exitCode).toBeNull();
    // Beside the start, not before it: the daemon was ready first.
    const at = (event: string) => daemon.lines.findIndex((l) => l.includes(`"event":"${event}"`));
    expect(at('ready')).toBeGreaterThanOrEqual(0);
    expect(at('ready')).toBeLessThan(at('host_firewall_checked'));
  });

  it('doctor reports the SPA port problem with its fix and exits non-zero', async () => {
    const { lab, cfgFile } = setup();
    const d = await doctor(lab, ['-c', cfgFile]);
    expect(d.code).toBe(1);
    expect(firewallProblem(d, `udp/${SPA_PORT}`)).toMatch(new RegExp(`dropped by chain inet filter input .*fix: add "udp dport ${SPA_PORT} accept" to chain inet filter input before its drop`));
    expect(firewallProblem(d, `tcp/${PORT}`)).toContain('dropped for granted clients');
    // The sets-mode snippet is printed under the guarded-port line.
    expect(d.out).toContain('ip saddr . meta l4proto . th dport @sesame4 accept');
  });

  it('a real knock indeed fails: the packet never reaches sesame', async () => {
    const { lab, daemon } = setup();
    const before = daemon.lines.length;
    expect(await knock(lab)).toBe(false);
    expect(daemon.lines.slice(before).some((l) => l.includes('"event":"grant"'))).toBe(false);
  });

  it('after the SPA fix: knocks arrive (a grant is logged) but the other table still drops the guarded port', async () => {
    const { lab, cfgFile, daemon } = setup();
    const d0 = await doctor(lab, ['-c', cfgFile]);
    await applyFix(lab, firewallProblem(d0, `udp/${SPA_PORT}`)!, NFT_FIX);
    const d = await doctor(lab, ['-c', cfgFile]);
    expect(firewallProblem(d, `udp/${SPA_PORT}`)).toBeUndefined();
    expect(firewallProblem(d, `tcp/${PORT}`)).toBeDefined();
    const grants = events(daemon, 'grant').length;
    expect(await knock(lab)).toBe(false);
    expect(events(daemon, 'grant').length).toBe(grants + 1);
  });

  it('after the guarded-port fix: doctor\'s firewall check is ok, a knock opens the port, a stranger stays out', async () => {
    const { lab, cfgFile } = setup();
    const d0 = await doctor(lab, ['-c', cfgFile]);
    await applyFix(lab, firewallProblem(d0, `tcp/${PORT}`)!, NFT_FIX);
    const d = await doctor(lab, ['-c', cfgFile]);
    expect(d.lines.filter((l) => l.includes('host_firewall'))).toEqual([expect.stringMatching(/^ok\s+host_firewall: nothing else drops/)]);
    expect(await knock(lab)).toBe(true);
    expect(await lab.canConnect('x', GW4, PORT, 400)).toBe(false);
  });

  it('a clean setup: every line ok and exit 0', async () => {
    const { lab, cfgFile } = setup();
    const d = await doctor(lab, ['-c', cfgFile], { timesync: true });
    expect(d.lines.length).toBeGreaterThanOrEqual(7);
    expect(d.lines.filter((l) => !l.startsWith('ok '))).toEqual([]);
    for (const check of ['config', 'clock', 'secrets', 'state_dir', 'backend', 'spa_port', 'host_firewall']) expect(d.out).toContain(`ok      ${check}:`);
    expect(d.code).toBe(0);
  });

  it('a config with inline keys readable by others and a group-writable state dir are problems', async () => {
    const { lab, cfgFile, stateDir } = setup();
    chmodSync(cfgFile, 0o644);
    chmodSync(stateDir, 0o770);
    try {
      const d = await doctor(lab, ['-c', cfgFile, '--json']);
      expect(d.code).toBe(1);
      const lines = JSON.parse(d.out.slice(0, d.out.lastIndexOf(']') + 1)) as { status: string; check: string; what: string; fix?: string }[];
      expect(lines).toContainEqual(expect.objectContaining({ status: 'problem', check: 'secrets', fix: expect.stringContaining(`chmod 600 ${cfgFile}`) }));
      expect(lines).toContainEqual(expect.objectContaining({ status: 'problem', check: 'state_dir', fix: `chmod 700 ${stateDir}` }));
    } finally {
      chmodSync(cfgFile, 0o600);
      chmodSync(stateDir, 0o700);
    }
  });

  it('a firewall reload that wipes sesame\'s table and brings back the dropping rules is reported again', async () => {
    const { lab, daemon } = setup();
    const before = events(daemon, 'host_firewall_conflict').length;
    // What `nft -f /etc/nftables.conf` with `flush ruleset` at its top does, in the lab's namespace.
    const r = await lab.exec('gw', 'nft', ['-f', '-'], { input: `flush ruleset\n${HOST_NFT}` });
    expect(r.code, r.stderr).toBe(0);
    await waitForEvents(daemon, 'nft_restored', 1, 10_000);
    const found = await waitForEvents(daemon, 'host_firewall_conflict', before + 2, 10_000);
    expect(found.slice(before).map((e) => e.port).sort()).toEqual([`tcp/${PORT}`, `udp/${SPA_PORT}`]);
  });
});

scenario('doctor: iptables INPUT policy DROP beside the nftables backend', '{ kind: nftables, mode: guard }', loadIptables, (setup) => {
  it('is logged at start, reported with the iptables -I lines, and the knock fails', async () => {
    const { lab, cfgFile, daemon } = setup();
    const found = await waitForEvents(daemon, 'host_firewall_conflict', 2, 15_000);
    expect(found.map((e) => e.where)).toContain('iptables and ip6tables INPUT');
    const d = await doctor(lab, ['-c', cfgFile]);
    expect(d.code).toBe(1);
    expect(firewallProblem(d, `udp/${SPA_PORT}`)).toContain(`fix: iptables -I INPUT 1 -p udp --dport ${SPA_PORT} -j ACCEPT`);
    expect(firewallProblem(d, `tcp/${PORT}`)).toContain("an accept in sesame's nftables table cannot override it");
    expect(await knock(lab)).toBe(false);
  });

  it('after the lines the fixes name, the firewall check is ok and a knock opens the port', async () => {
    const { lab, cfgFile } = setup();
    const d0 = await doctor(lab, ['-c', cfgFile]);
    for (const port of [`udp/${SPA_PORT}`, `tcp/${PORT}`]) {
      for (const l of d0.lines.filter((x) => x.startsWith(`problem host_firewall: ${port} `))) await applyFix(lab, l, IPT_FIX);
    }
    const d = await doctor(lab, ['-c', cfgFile]);
    expect(d.lines.filter((l) => l.includes('host_firewall'))).toEqual([expect.stringMatching(/^ok\s+host_firewall/)]);
    expect(await knock(lab)).toBe(true);
    expect(await lab.canConnect('x', GW4, PORT, 400)).toBe(false);
  });
});

scenario('doctor: iptables INPUT policy DROP with the iptables backend', '{ kind: iptables }', loadIptables, (setup) => {
  it('the SPA port is reported (not the guarded port: sesame\'s jump comes first), the knock fails', async () => {
    const { lab, cfgFile, daemon } = setup();
    const found = await waitForEvents(daemon, 'host_firewall_conflict', 1, 15_000);
    await sleep(300);
    expect(events(daemon, 'host_firewall_conflict').every((e) => e.port === `udp/${SPA_PORT}`)).toBe(true);
    expect(found[0]!.fix).toContain(`iptables -I INPUT 1 -p udp --dport ${SPA_PORT} -j ACCEPT`);
    const d = await doctor(lab, ['-c', cfgFile]);
    expect(d.code).toBe(1);
    expect(firewallProblem(d, `tcp/${PORT}`)).toBeUndefined();
    expect(await knock(lab)).toBe(false);
  });

  it('after the fix: the firewall check is ok and a knock opens the port, for the client only', async () => {
    const { lab, cfgFile } = setup();
    const d0 = await doctor(lab, ['-c', cfgFile]);
    await applyFix(lab, firewallProblem(d0, `udp/${SPA_PORT}`)!, IPT_FIX);
    const d = await doctor(lab, ['-c', cfgFile]);
    expect(d.lines.filter((l) => l.includes('host_firewall'))).toEqual([expect.stringMatching(/^ok\s+host_firewall/)]);
    expect(await knock(lab)).toBe(true);
    expect(await lab.canConnect('x', GW4, PORT, 400)).toBe(false);
  });
});

describeWith('doctor: sesame up says when the host firewall defeats it', ['netns', 'nft'], () => {
  let lab: Lab;
  let up: RunningDaemon | undefined;
  const tmp = scratchPath('sesame-doctor-up-');

  beforeAll(async () => {
    mkdirSync(tmp, { mode: 0o700 });
    lab = await Lab.create([{ name: 'gw', ip4: 1 }]);
    await loadNft(lab);
  });
  afterAll(async () => {
    if (up) await lab.stop(up.child);
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('prints each problem with its fix after the instructions', async () => {
    up = startSesame(lab, 'gw', ['up', `tcp/${PORT}`, '--config-dir', path.join(tmp, 'etc'), '--state-dir', path.join(tmp, 'state'), '--server', GW4]);
    let out = '';
    up.child.stdout?.on('data', (b: Buffer) => { out += b.toString(); });
    const t0 = Date.now();
    while (!out.includes('sesame doctor') && Date.now() - t0 < 20_000) await sleep(50);
    expect(out).toContain("WARNING: this host's own firewall defeats sesame (2 problems)");
    expect(out).toMatch(new RegExp(`problem host_firewall: udp/${SPA_PORT} .*fix: add "udp dport ${SPA_PORT} accept" to chain inet filter input`));
    expect(out).toMatch(new RegExp(`problem host_firewall: tcp/${PORT} .*dropped for granted clients`));
  });
});

describeWith('doctor: a large operator table (sets mode) is read whole', ['netns', 'nft'], () => {
  let lab: Lab;
  const tmp = scratchPath('sesame-doctor-big-');
  const ELEMENTS = 12_000;

  beforeAll(async () => {
    mkdirSync(tmp, { mode: 0o700 });
    lab = await Lab.create([{ name: 'gw', ip4: 1 }]);
    // More than 1 MiB of `nft -j` output: the default output cap of runProgram would cut it.
    const elems = Array.from({ length: ELEMENTS }, (_, i) => `10.${i >> 16}.${(i >> 8) & 255}.${i & 255} . tcp . ${PORT} timeout 1h`).join(',\n');
    const ruleset = [
      'table inet filter {',
      ' set sesame6 { type ipv6_addr . inet_proto . inet_service; flags timeout; }',
      ` set sesame4 { type ipv4_addr . inet_proto . inet_service; flags timeout; elements = { ${elems} } }`,
      ' chain input {',
      '  type filter hook input priority filter; policy drop;',
      '  ct state established,related accept',
      `  udp dport ${SPA_PORT} accept`,
      '  ip saddr . meta l4proto . th dport @sesame4 accept',
      '  ip6 saddr . meta l4proto . th dport @sesame6 accept',
      ' }',
      '}',
      '',
    ].join('\n');
    const r = await lab.exec('gw', 'nft', ['-f', '-'], { input: ruleset, timeoutMs: 60_000 });
    if (r.code !== 0) throw new Error(`nft -f failed: ${r.stderr}`);
  });
  afterAll(async () => {
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('finds sesame\'s sets in the operator\'s chain: the firewall check is ok', async () => {
    const size = (await lab.exec('gw', 'nft', ['-j', 'list', 'table', 'inet', 'filter'], { timeoutMs: 60_000 })).stdout.length;
    expect(size).toBeGreaterThan(1 << 20);
    const cfgFile = path.join(tmp, 'sesame.yaml');
    writeFileSync(cfgFile, yaml(path.join(tmp, 'state'), '{ kind: nftables, mode: sets, sets: { family: inet, table: filter, set4: sesame4, set6: sesame6 } }'), { mode: 0o600 });
    const d = await doctor(lab, ['-c', cfgFile]);
    expect(d.lines.filter((l) => l.includes('host_firewall'))).toEqual([expect.stringMatching(/^ok\s+host_firewall: .*nft table inet filter/)]);
    expect(d.lines).toContainEqual(expect.stringMatching(/^ok\s+backend: nftables sets mode/));
  });
});

async function loadDropAboveJump(lab: Lab): Promise<void> {
  for (const [tool, icmp] of [['iptables-restore', 'icmp'], ['ip6tables-restore', 'ipv6-icmp']] as const) {
    const rules = ['*filter', ':INPUT DROP [0:0]', ':FORWARD DROP [0:0]', ':OUTPUT ACCEPT [0:0]', '-A INPUT -i lo -j ACCEPT',
      `-A INPUT -p tcp -m tcp --dport ${PORT} -j DROP`, '-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
      `-A INPUT -p ${icmp} -j ACCEPT`, `-A INPUT -p udp -m udp --dport ${SPA_PORT} -j ACCEPT`, 'COMMIT', ''].join('\n');
    const r = await lab.exec('gw', tool, [], { input: rules });
    if (r.code !== 0) throw new Error(`${tool} failed: ${r.stderr}`);
  }
}

scenario('doctor: iptables backend whose jump sits below a DROP of the guarded port', '{ kind: iptables, jump_position: 3 }', loadDropAboveJump, (setup) => {
  it('is reported with the jump fix; a knock is granted but cannot get through', async () => {
    const { lab, cfgFile, daemon } = setup();
    const found = await waitForEvents(daemon, 'host_firewall_conflict', 1, 15_000);
    expect(found[0]!.port).toBe(`tcp/${PORT}`);
    const d = await doctor(lab, ['-c', cfgFile]);
    expect(d.code).toBe(1);
    expect(firewallProblem(d, `tcp/${PORT}`)).toMatch(/before sesame's jump to SESAME_INPUT.*fix: put sesame's jump first/);
    const grants = events(daemon, 'grant').length;
    expect(await knock(lab)).toBe(false);
    expect(events(daemon, 'grant').length).toBe(grants + 1);
  });

  it('after the jump is put first, the firewall check is ok and a knock opens the port', async () => {
    const { lab, cfgFile } = setup();
    const d0 = await doctor(lab, ['-c', cfgFile]);
    await applyFix(lab, firewallProblem(d0, `tcp/${PORT}`)!, /ip6?tables -I INPUT 1 -j SESAME_INPUT/g);
    const d = await doctor(lab, ['-c', cfgFile]);
    expect(d.lines.filter((l) => l.includes('host_firewall'))).toEqual([expect.stringMatching(/^ok\s+host_firewall/)]);
    expect(await knock(lab)).toBe(true);
    expect(await lab.canConnect('x', GW4, PORT, 400)).toBe(false);
  });
});
