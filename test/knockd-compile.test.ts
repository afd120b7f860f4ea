// Door compilers as text: the nftables fragments the daemon installs, the
// RouterOS script (checked command by command; there is no router here), and
// the `sesame knockd compile` command wiring.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { afterAll, describe, expect, it } from 'vitest';
import { registerKnockd } from '../src/cli/knockd.js';
import { GRANTED4, GUARD_CHAIN } from '../src/backends/nftables-ruleset.js';
import type { Door } from '../src/knockd/door.js';
import { compileDoorFile } from '../src/knockd/compile.js';
import { compileDoorsNft, doorsNftFragments, KNOCK_CHAIN } from '../src/knockd/nftables.js';
import { compileDoorsRouteros } from '../src/knockd/routeros.js';

function door(name: string, seq: string[], open: Array<['tcp' | 'udp', number]>, extra: Partial<Door> = {}): Door {
  return {
    name,
    sequence: seq.map((s) => {
      const [port, proto] = s.split(':');
      return { port: Number(port), proto: (proto ?? 'tcp') as 'tcp' | 'udp' };
    }),
    seqTimeoutSec: 10,
    open: open.map(([proto, port]) => ({ proto, port })),
    openForSec: 90,
    tcpFlags: { set: ['syn'], unset: ['ack'] },
    origin: { file: 't', line: 1 },
    ...extra,
  };
}

describe('nftables fragments', () => {
  const ssh = door('ssh', ['7000', '8000:udp', '6500'], [['tcp', 22]]);
  const dns = door('dns', ['6000:udp'], [['udp', 53], ['tcp', 22]], { tcpFlags: { set: ['syn'], unset: [] } });

  it('gives per-door stage sets for both families, door chains and one knock chain', () => {
    const f = doorsNftFragments([ssh, dns]);
    const setNames = f.extraSets.map((s) => /^set (\S+) \{/.exec(s)?.[1]);
    expect(setNames).toEqual([
      'door_ssh_4_live', 'door_ssh_4_s1', 'door_ssh_4_s2', 'door_ssh_6_live', 'door_ssh_6_s1', 'door_ssh_6_s2',
    ]); // a one-knock door needs no progress
    for (const s of f.extraSets) expect(s).toContain('flags timeout');
    const chainNames = f.extraChains.map((c) => /^chain (\S+) \{/.exec(c)?.[1]);
    expect(chainNames).toEqual(['door_ssh_4', 'door_ssh_6', 'door_dns_4', 'door_dns_6', KNOCK_CHAIN]);
    expect(f.guardPorts).toEqual([{ proto: 'tcp', port: 22 }, { proto: 'udp', port: 53 }]);
  });

  it('tracks knocks before the guard chain, drops every knock packet, and grants into the shared granted sets', () => {
    const f = doorsNftFragments([ssh, dns]);
    const knock = f.extraChains.at(-1)!;
    expect(knock).toContain('type filter hook input priority filter - 20; policy accept;');
    expect(knock).toContain('meta nfproto ipv4 meta l4proto . th dport { tcp . 7000, udp . 8000, tcp . 6500 } jump door_ssh_4');
    expect(knock).toContain('meta nfproto ipv6 meta l4proto . th dport { udp . 6000 } jump door_dns_6');
    expect(knock.trim().split('\n').at(-2)!.trim()).toBe('meta l4proto . th dport { tcp . 7000, udp . 8000, tcp . 6500, udp . 6000 } drop');
    const ssh4 = f.extraChains[0]!;
    expect(ssh4).toContain('meta l4proto tcp tcp flags & (syn | ack) != syn return');
    expect(ssh4).toContain(`update @${GRANTED4} { ip saddr . 6 . 22 timeout 90s }`);
    expect(ssh4).toContain('update @door_ssh_4_live { ip saddr timeout 10s }');
    const dns6 = f.extraChains[3]!;
    expect(dns6).toContain('meta l4proto udp th dport 6000 update @granted6 { ip6 saddr . 17 . 53 timeout 90s } update @granted6 { ip6 saddr . 6 . 22 timeout 90s } return');
    expect(dns6).not.toContain('tcp flags'); // no TCP knocks
  });

  it('renders a whole table around them', () => {
    const text = compileDoorsNft([ssh], { table: 'doors', guardPorts: [{ proto: 'tcp', port: 443 }, { proto: 'tcp', port: 22 }] });
    expect(text.startsWith('#!/usr/sbin/nft -f\n')).toBe(true);
    expect(text).toContain('# door ssh: 7000:tcp 8000:udp 6500:tcp within 10s (tcpflags syn,!ack) opens tcp/22 for 90s');
    expect(text).toContain('add table inet doors\ndelete table inet doors\ntable inet doors {');
    expect(text).toContain('elements = { tcp . 22, tcp . 443 }');
    expect(text).toContain(`chain ${GUARD_CHAIN} {`);
  });

  it("puts compiled doors in a table of their own, not the daemon's inet sesame", () => {
    const text = compileDoorsNft([ssh]);
    expect(text).toContain('add table inet sesame_doors\ndelete table inet sesame_doors\ntable inet sesame_doors {');
    expect(text).not.toMatch(/table inet sesame\b(?!_)/);
  });

  it('lets loopback pass the knock chain and the guard chain', () => {
    const text = compileDoorsNft([ssh]);
    const knock = text.slice(text.indexOf(`chain ${KNOCK_CHAIN} {`));
    expect(knock.split('\n').slice(1, 3).map((l) => l.trim())).toEqual([`type filter hook input priority filter - 20; policy accept;`, 'iif "lo" accept']);
    const guard = text.slice(text.indexOf(`chain ${GUARD_CHAIN} {`));
    expect(guard.split('\n')[2]!.trim()).toBe('iif "lo" accept');
  });

  it('yields nothing for no doors', () => {
    expect(doorsNftFragments([])).toEqual({ extraSets: [], extraChains: [], guardPorts: [] });
  });
});

describe('RouterOS script', () => {
  it('emits the address-list knocking rules, command by command', () => {
    const web = door('web', ['7000', '8000:udp'], [['tcp', 443]], { seqTimeoutSec: 15, openForSec: 3600 });
    const script = compileDoorsRouteros([web], { ipv6: false, placeBefore4: '' });
    const c = (s: string): string => `comment="sesame-door:web ${s}"`;
    expect(script.split('\n').filter((l) => !l.startsWith('#'))).toEqual([
      '/ip firewall filter',
      'remove [find where comment~"^sesame-door:"]',
      `add chain=sesame-door-web action=return protocol=tcp tcp-flags=!syn ${c('ignore tcp without syn')}`,
      `add chain=sesame-door-web action=return protocol=tcp tcp-flags=ack ${c('ignore tcp with ack')}`,
      `add chain=sesame-door-web action=return src-address-list=sesame_door_web_reset ${c('hold after a wrong knock')}`,
      `add chain=sesame-door-web action=add-src-to-address-list address-list=sesame_tcp_443 address-list-timeout=1h protocol=udp dst-port=8000 src-address-list=sesame_door_web_1 ${c('knock 2 opens')}`,
      `add chain=sesame-door-web action=return protocol=udp dst-port=8000 src-address-list=sesame_door_web_1 ${c('knock 2 done')}`,
      `add chain=sesame-door-web action=return protocol=tcp dst-port=7000 src-address-list=sesame_door_web_1 ${c('repeat of knock 1')}`,
      `add chain=sesame-door-web action=add-src-to-address-list address-list=sesame_door_web_reset address-list-timeout=15s src-address-list=sesame_door_web_1 ${c('wrong knock after 1')}`,
      `add chain=sesame-door-web action=return src-address-list=sesame_door_web_1 ${c('wrong knock after 1 done')}`,
      `add chain=sesame-door-web action=add-src-to-address-list address-list=sesame_door_web_1 address-list-timeout=15s protocol=tcp dst-port=7000 ${c('knock 1')}`,
      'add chain=input action=jump jump-target=sesame-door-web protocol=tcp dst-port=7000 in-interface-list=WAN comment="sesame-door:web knocks"',
      'add chain=input action=jump jump-target=sesame-door-web protocol=udp dst-port=8000 in-interface-list=WAN comment="sesame-door:web knocks"',
      'add chain=input action=drop protocol=tcp dst-port=7000 in-interface-list=WAN comment="sesame-door: knock ports stay dark"',
      'add chain=input action=drop protocol=udp dst-port=8000 in-interface-list=WAN comment="sesame-door: knock ports stay dark"',
      'add chain=input action=accept protocol=tcp dst-port=443 src-address-list=sesame_tcp_443 in-interface-list=WAN comment="sesame-door: open tcp/443 to knockers"',
      '',
    ]);
  });

  it('places the input rules before the defconf drop rules of both families, and fails loudly without them', () => {
    const script = compileDoorsRouteros([door('ssh', ['7000', '9000', '8000'], [['tcp', 22]])]);
    const v4 = '[find where chain=input comment="defconf: drop all not coming from LAN"]';
    const v6 = '[find where chain=input comment="defconf: drop everything else not coming from LAN"]';
    const lines = script.split('\n');
    const ipv6At = lines.indexOf('/ipv6 firewall filter');
    expect(lines.indexOf('/ip firewall filter')).toBeLessThan(ipv6At);
    expect(lines[lines.indexOf('/ip firewall filter') + 1]).toBe(`:if ([:len ${v4}] = 0) do={ :error "sesame: /ip firewall filter has no input rule commented \\"defconf: drop all not coming from LAN\\" to place the door rules before (use --place-before COMMENT, or '' to append)" }`);
    for (const l of lines.slice(0, ipv6At).filter((x) => x.startsWith('add chain=input'))) expect(l.endsWith(` place-before=${v4}`)).toBe(true);
    for (const l of lines.slice(ipv6At).filter((x) => x.startsWith('add chain=input'))) expect(l.endsWith(` place-before=${v6}`)).toBe(true);
    expect(lines.filter((l) => l.startsWith('remove [find where comment~"^sesame-door:"]'))).toHaveLength(2);
    // The last knock of a three-knock door opens from stage list 2.
    expect(script).toContain('address-list=sesame_tcp_22 address-list-timeout=1m30s protocol=tcp dst-port=8000 src-address-list=sesame_door_ssh_2');
  });

  it('follows the list template, interface list and port-count limit', () => {
    const many = door('many', Array.from({ length: 17 }, (_, i) => String(7100 + ((i * 7) % 17))), [['udp', 51820]]);
    const script = compileDoorsRouteros([many], { listTemplate: 'FWKNOP_{protonum}_{port}', wanList: '', ipv6: false, placeBefore4: '' });
    expect(script).toContain('address-list=FWKNOP_17_51820 ');
    expect(script).not.toContain('in-interface-list');
    const jumps = script.split('\n').filter((l) => l.includes('action=jump'));
    expect(jumps).toHaveLength(2);
    expect(jumps[0]!.match(/dst-port=(\S+)/)![1]!.split(',')).toHaveLength(15);
    expect(jumps[1]!.match(/dst-port=(\S+)/)![1]!.split(',')).toHaveLength(2);
    expect(() => compileDoorsRouteros([many], { listTemplate: 'allow' })).toThrow(/must contain \{port\}/);
    expect(() => compileDoorsRouteros([many], { wanList: 'w a n' })).toThrow(/not a RouterOS list name/);
  });
});

describe('sesame knockd compile', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'sesame-knockd-cli-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const yamlFile = path.join(dir, 'sesame.yaml');
  writeFileSync(yamlFile, 'doors:\n  - name: ssh\n    sequence: [7000, "8000:udp", 6500]\n    open: [tcp/22]\n');
  const confFile = path.join(dir, 'knockd.conf');
  writeFileSync(confFile, '[options]\n  Interface = eth0\n[wake]\n  sequence = 7000,9000,8000\n  command = /usr/bin/wakeonlan %IP%\n');

  const run = async (...args: string[]): Promise<void> => {
    const program = new Command().exitOverride();
    registerKnockd(program);
    await program.parseAsync(['knockd', 'compile', ...args], { from: 'user' });
  };

  it('writes an nftables ruleset from sesame YAML', async () => {
    const out = path.join(dir, 'doors.nft');
    await run('--nftables', yamlFile, '--table', 'knock_t', '-o', out);
    const text = readFileSync(out, 'utf8');
    expect(text).toContain('table inet knock_t {');
    expect(text).toContain('chain door_ssh_4 {');
  });

  it('writes a RouterOS script from knockd.conf with --open, and reports what it did not apply', async () => {
    const out = path.join(dir, 'doors.rsc');
    await run('--routeros', confFile, '--open', 'tcp/3389', '--place-before', '', '--no-ipv6', '-o', out);
    const text = readFileSync(out, 'utf8');
    expect(text).toContain('src-address-list=sesame_tcp_3389');
    expect(text).not.toContain('/ipv6');
    expect(text).not.toContain('place-before');
    const r = await compileDoorFile({ target: 'routeros', file: confFile, open: 'tcp/3389' });
    expect(r.warnings).toContain(`${confFile}:2: [options] interface: ignored (knocks are matched on every interface at the input hook)`);
    expect(r.warnings.some((w) => w.includes('[wake] command: names no port'))).toBe(true);
  });

  it('refuses unclear requests with one-line errors', async () => {
    await expect(run()).rejects.toThrow(/give exactly one of --nftables FILE or --routeros FILE/);
    await expect(run('--nftables', yamlFile, '--routeros', yamlFile)).rejects.toThrow(/exactly one/);
    await expect(run('--nftables', confFile)).rejects.toThrow(/no door could be compiled/);
    await expect(run('--nftables', confFile, '--open', 'ssh')).rejects.toThrow(/^--open: open port "ssh" is not PROTO\/PORT/);
    await expect(run('--nftables', yamlFile, '--table', '1bad')).rejects.toThrow(/--table: "1bad" is not an nftables table name/);
    await expect(run('--nftables', path.join(dir, 'missing.yaml'))).rejects.toThrow(/missing\.yaml: cannot read the door file \(ENOENT\)/);
    // The daemon's table: loading the doors would wipe the daemon's guard and grants.
    await expect(run('--nftables', yamlFile, '--table', 'sesame')).rejects.toThrow(/^--table sesame: that is the sesame daemon's table; .*default sesame_doors/);
    const ownTable = path.join(dir, 'own-table.yaml');
    writeFileSync(ownTable, 'backend:\n  kind: nftables\n  table: gate\ndoors:\n  - name: ssh\n    sequence: [7000, 8000]\n    open: [tcp/22]\n');
    await expect(run('--nftables', ownTable, '--table', 'gate')).rejects.toThrow(/^--table gate: that is the sesame daemon's table/);
    await expect(run('--nftables', ownTable, '-o', path.join(dir, 'own.nft'))).resolves.toBeUndefined();
    const r = await compileDoorFile({ target: 'nftables', file: yamlFile, open: 'tcp/1' });
    expect(r.warnings[0]).toMatch(/--open\/--open-for apply to knockd\.conf files only/);
  });
});
