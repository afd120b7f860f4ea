// The host-firewall analysis of `sesame doctor` as pure functions (issue 9,
// deliverable 4), over listings captured from the real nft 1.0.6
// (test/fixtures/doctor/*.json, made by capture.sh there) and iptables-save
// texts: proved drops are reported with their fix; chains on other hooks, an
// accept before the drop and sesame's own table are not; what the rules
// cannot tell is a warning, never a problem.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseSesameYaml } from '../src/config/sesame-yaml.js';
import type { GatewayConfig } from '../src/config/model.js';
import { parseNftTable, type NftTableDump } from '../src/doctor/nft-analysis.js';
import { analyzeIptables, parseIptablesSave } from '../src/doctor/iptables-analysis.js';
import { analyzeHostFirewall, probesFor, type RulesetSnapshot } from '../src/doctor/host-firewall.js';
import { clockCheck, listeningPorts, secretFileChecks, stateDirChecks } from '../src/doctor/checks.js';
import { formatLine } from '../src/doctor/report.js';
import { mkdtempSync, writeFileSync, mkdirSync, chmodSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const KEY = 'wR2T2b0n5DaKmAqt3nJ6fH9p1uCqBwRk3XoQ+pN4dE8=';
const HMAC = 'Zk9iVwq3S3Q0c1I4Yl8xZUh6bVd3R2pPcGtTbXlKN3hzWnQ1VnFrUmJ3SmhNTnFmS2R4Yk93ZkJmY1A0cQ==';

function config(backend: string, extra = ''): GatewayConfig {
  return parseSesameYaml([
    'listen: ["0.0.0.0:62201", "[::]:62201"]',
    `backend: ${backend}`,
    'rules:',
    '  - name: a',
    '    source: [any]',
    `    key_base64: ${KEY}`,
    `    hmac_key_base64: ${HMAC}`,
    '    open_ports: [tcp/2222]',
    extra,
  ].join('\n'), 'test.yaml');
}

const GUARD = config('{ kind: nftables, mode: guard, guard_ports: [tcp/2222] }');
const SETS = config('{ kind: nftables, mode: sets, sets: { family: inet, table: filter, set4: sesame4, set6: sesame6 } }');
const IPT = config('{ kind: iptables, chain: SESAME_INPUT, jump_position: 1 }');

function fixture(name: string): NftTableDump[] {
  const listings = JSON.parse(readFileSync(new URL(`./fixtures/doctor/${name}.json`, import.meta.url), 'utf8')) as unknown[][];
  return listings.map((l) => parseNftTable(l)!).filter(Boolean);
}

function snap(nft: NftTableDump[], ipt4?: string, ipt6?: string): RulesetSnapshot {
  return { nft, ...(ipt4 ? { ipt4: parseIptablesSave(ipt4)! } : {}), ...(ipt6 ? { ipt6: parseIptablesSave(ipt6)! } : {}), read: [], errors: [] };
}

describe('doctor: nftables analysis', () => {
  it('a typical host firewall (input policy drop, ssh accepted) drops the SPA port and the guarded port, with the fixes', () => {
    const f = analyzeHostFirewall(GUARD, snap(fixture('typical')));
    const spa = f.find((x) => x.port === 'udp/62201');
    expect(spa?.severity).toBe('problem');
    expect(spa?.what).toContain('IPv4 and IPv6');
    expect(spa?.where).toBe('chain inet filter input');
    expect(spa?.fix).toContain('add "udp dport 62201 accept" to chain inet filter input before its drop');
    expect(spa?.fix).toContain('nft insert rule inet filter input udp dport 62201 accept');
    const guarded = f.find((x) => x.port === 'tcp/2222');
    expect(guarded?.severity).toBe('problem');
    expect(guarded?.fix).toContain("sesame's guard already drops unknown sources");
    expect(guarded?.fix).toContain('nft insert rule inet filter input tcp dport 2222 accept');
    expect(guarded?.fix).toContain('sets mode');
    expect(guarded?.snippet).toContain('ip saddr . meta l4proto . th dport @sesame4 accept');
    // The forward chain with policy drop is on another hook: nothing about it.
    expect(f.every((x) => !x.where.includes('forward'))).toBe(true);
    expect(f).toHaveLength(2);
  });

  it('reports nothing when the ports are accepted before the drop (a rule and a named set)', () => {
    expect(analyzeHostFirewall(GUARD, snap(fixture('accepting')))).toEqual([]);
  });

  it('ignores chains on other hooks, regular chains nobody jumps to, and nat chains', () => {
    expect(analyzeHostFirewall(GUARD, snap(fixture('other-hooks')))).toEqual([]);
  });

  it('finds an explicit reject in an ip6-only table and a drop in a jumped-to chain of another table', () => {
    const f = analyzeHostFirewall(GUARD, snap(fixture('explicit')));
    const spa = f.find((x) => x.port === 'udp/62201')!;
    expect(spa.where).toBe('chain ip6 v6only input');
    expect(spa.what).toMatch(/IPv6\)/);
    expect(spa.what).toContain('reject');
    const guarded = f.find((x) => x.port === 'tcp/2222')!;
    expect(guarded.where).toBe('chain ip blocker input');
    expect(guarded.what).toContain('in chain sub');
    expect(guarded.what).toContain('IPv4)');
    expect(f).toHaveLength(2);
  });

  it('says "cannot tell" (a warning) for an accept limited to some sources and for a verdict map it cannot read, and reads a plain one', () => {
    const f = analyzeHostFirewall(GUARD, snap(fixture('unclear')));
    expect(f.every((x) => x.severity === 'warn')).toBe(true);
    const spa = f.find((x) => x.port === 'udp/62201')!;
    expect(spa.what).toContain('cannot tell');
    expect(spa.what).toContain('198.51.100.0/24');
    // tcp dport vmap { 2222 : accept } is read: the guarded port is accepted.
    expect(f.find((x) => x.port === 'tcp/2222')).toBeUndefined();
  });

  it('sets mode: sesame\'s own sets in the operator\'s chain let granted clients in', () => {
    expect(analyzeHostFirewall(SETS, snap(fixture('sets-mode')))).toEqual([]);
    // Without the SPA accept, the set lines do not hide the drop of knocks: a problem, not "cannot tell".
    const noSpa = fixture('sets-mode').map((t) => ({ ...t, chains: new Map([...t.chains].map(([n, c]) => [n, { ...c, rules: c.rules.filter((r) => !JSON.stringify(r.expr).includes('62201')) }])) }));
    const spa = analyzeHostFirewall(SETS, snap(noSpa));
    expect(spa.map((x) => `${x.severity} ${x.port}`)).toEqual(['problem udp/62201']);
    // The same config over a table without those lines: the fix names them.
    const f = analyzeHostFirewall(SETS, snap(fixture('typical')));
    const g = f.find((x) => x.port === 'tcp/2222')!;
    expect(g.fix).toContain('"ip saddr . meta l4proto . th dport @sesame4 accept"');
  });

  it('never analyses sesame\'s own guard table (it drops unknown sources on purpose)', () => {
    expect(analyzeHostFirewall(GUARD, snap(fixture('with-sesame')))).toEqual([]);
    // With another backend, a leftover sesame table is someone else's: it is looked at.
    expect(analyzeHostFirewall(IPT, snap(fixture('with-sesame'))).length).toBeGreaterThan(0);
  });
});

const DENY_ALL = `# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p icmp -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
`;

describe('doctor: iptables analysis', () => {
  it('INPUT policy DROP without an accept for the SPA port: a problem with the iptables -I line', () => {
    const f = analyzeHostFirewall(GUARD, snap([], DENY_ALL));
    const spa = f.find((x) => x.port === 'udp/62201')!;
    expect(spa.where).toBe('iptables INPUT');
    expect(spa.fix).toContain('iptables -I INPUT 1 -p udp --dport 62201 -j ACCEPT');
    const g = f.find((x) => x.port === 'tcp/2222')!;
    expect(g.fix).toContain('iptables -I INPUT 1 -p tcp --dport 2222 -j ACCEPT');
    expect(g.fix).toContain('iptables backend');
  });

  it('an accept before the drop, multiport and a chain that returns are followed', () => {
    const text = DENY_ALL.replace('COMMIT', [
      ':CHECKS - [0:0]',
      '-A INPUT -j CHECKS',
      '-A INPUT -p udp -m multiport --dports 53,62000:62300 -j ACCEPT',
      '-A INPUT -p tcp -m tcp --dport 2222 -j ACCEPT',
      '-A CHECKS -p udp --dport 9 -j DROP',
      '-A CHECKS -j RETURN',
      'COMMIT',
    ].join('\n'));
    expect(analyzeHostFirewall(GUARD, snap([], text))).toEqual([]);
  });

  it('a DROP rule matching the port, but not one for another port, protocol or for loopback only', () => {
    const text = DENY_ALL.replace(':INPUT DROP', ':INPUT ACCEPT').replace('COMMIT', [
      '-A INPUT -i lo -p udp --dport 62201 -j DROP',
      '-A INPUT -p tcp --dport 62201 -j DROP',
      '-A INPUT -p udp --dport 62202 -j DROP',
      '-A INPUT ! -i lo -p udp --dport 62201 -j REJECT --reject-with icmp-port-unreachable',
      'COMMIT',
    ].join('\n'));
    const f = analyzeHostFirewall(GUARD, snap([], text));
    expect(f).toHaveLength(1);
    expect(f[0]!.what).toContain('! -i lo -p udp --dport 62201 -j REJECT');
  });

  it('iptables backend: a drop above sesame\'s jump defeats it; placed where the backend inserts it when missing', () => {
    const base = DENY_ALL.replace('-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT', '-A INPUT -p tcp -m tcp --dport 2222 -j DROP\n-A INPUT -p udp --dport 62201 -j ACCEPT');
    // jump position 1 (the default): the jump comes before the DROP: fine.
    expect(analyzeHostFirewall(IPT, snap([], base))).toEqual([]);
    const late = config('{ kind: iptables, chain: SESAME_INPUT, jump_position: 5 }');
    const f = analyzeHostFirewall(late, snap([], base));
    expect(f).toHaveLength(1);
    expect(f[0]!.what).toContain("before sesame's jump to SESAME_INPUT");
    expect(f[0]!.fix).toContain('iptables -I INPUT 1 -j SESAME_INPUT');
    // The jump already in place at the top wins over the configured position.
    const jumped = base.replace('-A INPUT -i lo -j ACCEPT', '-A INPUT -j SESAME_INPUT\n-A INPUT -i lo -j ACCEPT');
    expect(analyzeHostFirewall(late, snap([], jumped))).toEqual([]);
  });

  it('iptables backend: a guarded port nothing drops is open to everyone', () => {
    const open = DENY_ALL.replace(':INPUT DROP', ':INPUT ACCEPT');
    const f = analyzeHostFirewall(IPT, snap([], open));
    const exposed = f.filter((x) => x.what.includes('open to everyone'));
    expect(exposed).toHaveLength(1);
    expect(exposed[0]!.fix).toContain('iptables -A INPUT -p tcp --dport 2222 -j DROP');
  });

  it('parses iptables-save: policies, user chains, quoted comments; only the filter table', () => {
    const f = parseIptablesSave('*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j DROP\nCOMMIT\n*filter\n:INPUT DROP [1:2]\n:X - [0:0]\n-A X -m comment --comment "a b" -j RETURN\nCOMMIT\n')!;
    expect(f.get('INPUT')!.policy).toBe('DROP');
    expect(f.get('X')!.rules[0]).toEqual(['-m', 'comment', '--comment', 'a b', '-j', 'RETURN']);
    expect(f.has('PREROUTING')).toBe(false);
    const o = analyzeIptables(f, { family: 4, proto: 'udp', port: 1, purpose: 'spa' });
    expect(o.kind).toBe('drop');
  });
});

describe('doctor: probes', () => {
  it('SPA port per listened family, guarded ports for both families; none for backends without a host firewall', () => {
    expect(probesFor(GUARD).map((p) => `${p.purpose} ${p.proto}/${p.port} v${p.family}`).sort()).toEqual([
      'guarded tcp/2222 v4', 'guarded tcp/2222 v6', 'spa udp/62201 v4', 'spa udp/62201 v6']);
    const log = config('{ kind: log }');
    expect(probesFor(log).every((p) => p.purpose === 'spa')).toBe(true);
  });
});

describe('doctor: the other checks as functions', () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'sesame-doctor-unit-'));

  it('a 0644 YAML with inline keys is a problem; 0600 is ok; a key_file of mode 0644 is a problem', () => {
    const file = path.join(tmp, 'a.yaml');
    writeFileSync(file, `rules:\n  - key_base64: ${KEY}\n`, { mode: 0o644 });
    chmodSync(file, 0o644);
    const bad = secretFileChecks({ config: file });
    expect(bad.some((l) => l.status === 'problem' && l.what.includes('holds keys') && l.fix === `chmod 600 ${file} (and make new keys: others may have read them: sesame keygen)`)).toBe(true);
    chmodSync(file, 0o600);
    expect(secretFileChecks({ config: file }).map((l) => l.status)).toEqual(['ok']);
    const kf = path.join(tmp, 'k.key');
    writeFileSync(kf, 'KEY_BASE64: x\n', { mode: 0o644 });
    chmodSync(kf, 0o644);
    writeFileSync(file, 'rules:\n  - key_file: k.key\n', { mode: 0o600 });
    expect(secretFileChecks({ config: file }).some((l) => l.status === 'problem' && l.what.includes(kf))).toBe(true);
  });

  it('a group-writable state dir is a problem; a 0700 one is ok with its free space', () => {
    const d = path.join(tmp, 'state');
    mkdirSync(d, { mode: 0o700 });
    expect(stateDirChecks(d).map((l) => l.status)).toEqual(['ok']);
    chmodSync(d, 0o770);
    const lines = stateDirChecks(d);
    expect(lines.some((l) => l.status === 'problem' && l.what.includes('writable by group/others') && l.fix === `chmod 700 ${d}`)).toBe(true);
  });

  it('clock: timedatectl, the timesyncd flag, chrony, else unknown with the fix', async () => {
    const none = async () => ({ code: null, stdout: '', stderr: '', spawnError: 'ENOENT' });
    const unknown = await clockCheck(none, tmp, 120);
    expect(unknown.status).toBe('warn');
    expect(unknown.what).toContain('unknown');
    expect(unknown.what).toContain('120 s');
    expect(unknown.fix).toContain('systemd-timesyncd');
    const yes = await clockCheck(async (f) => (f === 'timedatectl' ? { code: 0, stdout: 'yes\n', stderr: '' } : none()), tmp, 120);
    expect(yes.status).toBe('ok');
    const chrony = await clockCheck(async (f) => (f === 'chronyc' ? { code: 0, stdout: 'Leap status     : Normal\n', stderr: '' } : none()), tmp, 120);
    expect(chrony.status).toBe('ok');
    mkdirSync(path.join(tmp, 'run/systemd/timesync'), { recursive: true });
    writeFileSync(path.join(tmp, 'run/systemd/timesync/synchronized'), '');
    expect((await clockCheck(none, tmp, 120)).status).toBe('ok');
  });

  it('reads bound UDP ports from /proc/net/udp and udp6', () => {
    mkdirSync(path.join(tmp, 'proc/net'), { recursive: true });
    writeFileSync(path.join(tmp, 'proc/net/udp'), '  sl  local_address rem_address   st\n  12: 00000000:F2F9 00000000:0000 07 00000000:00000000\n');
    const ports = listeningPorts(tmp);
    expect(ports.has(62201)).toBe(true);
    expect(ports.has(22)).toBe(false);
  });

  it('formats one line per check', () => {
    expect(formatLine({ status: 'problem', check: 'x', what: 'a\nb', fix: 'c' })).toBe('problem x: a b; fix: c');
    rmSync(tmp, { recursive: true, force: true });
  });
});

describe('doctor: chain walking', () => {
  it('a return in a base chain ends it with its policy (drop); a goto whose chain returns does too', () => {
    const f = parseIptablesSave('*filter\n:INPUT DROP [0:0]\n:G - [0:0]\n-A INPUT -p tcp -j RETURN\n-A INPUT -p udp -g G\n-A INPUT -j ACCEPT\n-A G -j RETURN\nCOMMIT\n')!;
    expect(analyzeIptables(f, { family: 4, proto: 'tcp', port: 22, purpose: 'guarded' }).kind).toBe('drop');
    expect(analyzeIptables(f, { family: 4, proto: 'udp', port: 62201, purpose: 'spa' }).kind).toBe('drop');
  });

  it('jump loops are bounded and give "unknown", not a hang', () => {
    const f = parseIptablesSave('*filter\n:INPUT DROP [0:0]\n:A - [0:0]\n-A INPUT -j A\n-A A -j A\nCOMMIT\n')!;
    const o = analyzeIptables(f, { family: 4, proto: 'tcp', port: 22, purpose: 'guarded' });
    expect(o.kind).toBe('unknown');
  });
});
