// iptables backend, ipset mode (src/backends/iptables-ipset.ts, ipset-stream.ts):
// the pure pieces of the ipset command stream (line building, per-command
// outcomes, `ipset save` parsing), then the real kernel in a namespace lab:
// a grant opens for the client only, the KERNEL closes it on time with no
// timer of ours (the backend is shut down), restart adoption with the
// remaining time, one bad element in a batch fails alone, a killed ipset
// process is replaced (between batches and in the middle of one), a chain
// rewrite of expiring NAT rules keeps the set rule, the fallback to the rules
// layout, sesame doctor's ipset lines, NAT through the rules path, and
// `sesame down` removes chains and sets. Also the mode in the configuration.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { describeWith } from './harness/requirements.js';
import { Lab, sleep } from './harness/netns.js';
import type { Grant } from '../src/backends/backend.js';
import { createBackend } from '../src/backends/index.js';
import { IptablesIpsetBackend, elementOf, ipsetNames, parseSave, setRuleArgs, timeoutSeconds } from '../src/backends/iptables-ipset.js';
import { IpsetStream, ipsetLine, splitOutcomes } from '../src/backends/ipset-stream.js';
import type { IptablesConfig } from '../src/backends/iptables.js';
import { removeGuard } from '../src/backends/teardown.js';
import { grant, recorder } from './harness/backend-fixtures.js';
import { natLab, mustRun, SRV_BEHIND } from './harness/daemon.js';
import { parseSesameYaml } from '../src/config/sesame-yaml.js';
import { gatewayConfigToYaml } from '../src/config/to-yaml.js';
import { loadServeConfig } from '../src/cli/serve.js';
import { runDoctor } from '../src/doctor/checks.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { lockSpecs } from '../src/gateway/instance-lock.js';
import type { GatewayConfig } from '../src/config/model.js';

const PORT = 2222;
const CHAIN = 'SESAME_INPUT';
const SET4 = `${CHAIN}_4`;
const SET6 = `${CHAIN}_6`;
const cfg = (extra: Partial<IptablesConfig> = {}): IptablesConfig => ({ kind: 'iptables', chain: CHAIN, jumpPosition: 1, iptables: 'iptables', ip6tables: 'ip6tables', ipset: 'ipset', ...extra });

describe('ipset command stream (pure parts)', () => {
  it('builds lines from plain tokens and refuses anything that could break the line format', () => {
    expect(ipsetLine(['add', '-exist', SET4, '198.51.100.2,tcp:22', 'timeout', '30'])).toBe(`add -exist ${SET4} 198.51.100.2,tcp:22 timeout 30`);
    expect(ipsetLine(['add', SET6, '2001:db8::2,udp:53'])).toBe(`add ${SET6} 2001:db8::2,udp:53`);
    for (const bad of ['a b', 'x\nflush', '#', 'a"b', "a'b", '', 'a;b', 'a\tb']) expect(() => ipsetLine(['add', bad])).toThrow(/refusing the token/);
    expect(() => ipsetLine([])).toThrow(/empty command/);
  });

  it('gives each command the stderr lines before its marker; a partial chunk waits for the rest', () => {
    const marker = "ipset v7.17: Syntax error: typename 'sesame_sync' is unknown";
    const text = `${marker}\nipset v7.17: Syntax error: cannot parse bogus: resolving to IPv4 address failed\n${marker}\n${marker}\nipset v7.17: The set with the given name does not exist\n`;
    const { outcomes, rest } = splitOutcomes(text);
    expect(outcomes).toEqual([undefined, 'Syntax error: cannot parse bogus: resolving to IPv4 address failed', undefined]);
    // The error of the fourth command came, its marker not yet: nothing decided about it.
    const more = splitOutcomes(`${rest}\n${marker.slice(0, 10)}`);
    expect(more.outcomes).toEqual([]);
    expect(splitOutcomes(`${more.rest}${marker.slice(10)}\n`).outcomes).toEqual(['The set with the given name does not exist']);
  });

  it('names elements, rounds timeouts up to whole seconds, and parses ipset save', () => {
    expect(elementOf('2001:DB8:0::2', 'tcp', 22)).toBe('2001:db8::2,tcp:22');
    expect(() => elementOf('198.51.100.2 -j', 'tcp', 22)).toThrow(/not an IPv4 or IPv6 address/);
    expect(timeoutSeconds(10_001, 0)).toBe(11);
    expect(timeoutSeconds(5, 10)).toBe(1);
    expect(timeoutSeconds(1e15, 0)).toBe(2_147_483);
    const save = [`create ${SET4} hash:ip,port family inet hashsize 1024 maxelem 1048576 timeout 1`, `add ${SET4} 198.51.100.2,tcp:22 timeout 27`, `add OTHER 198.51.100.3,tcp:22 timeout 5`, `add ${SET4} 198.51.100.4,udp:53`, 'garbage'].join('\n');
    expect(parseSave(save, SET4)).toEqual([
      { address: '198.51.100.2', proto: 'tcp', port: 22, remainingSec: 27 },
      { address: '198.51.100.4', proto: 'udp', port: 53, remainingSec: Infinity },
    ]);
    expect(ipsetNames('FWKNOP_INPUT')).toEqual({ 4: 'FWKNOP_INPUT_4', 6: 'FWKNOP_INPUT_6' });
    expect(setRuleArgs(SET4).join(' ')).toBe(`-m set --match-set ${SET4} src,dst -m comment --comment sesame_ipset -j ACCEPT`);
  });
});

describe('iptables mode in the configuration', () => {
  const key = Buffer.alloc(32, 1).toString('base64');
  const hmac = Buffer.alloc(64, 2).toString('base64');
  const yaml = (backend: string): string => [`backend: ${backend}`, 'rules:', '  - name: r1', '    source: [any]', `    key_base64: ${key}`, `    hmac_key_base64: ${hmac}`, ''].join('\n');

  it('reads mode and ipset, leaves mode unset by default, and refuses other modes in one line', () => {
    expect(parseSesameYaml(yaml('{ kind: iptables }'), 's.yaml').backend).not.toHaveProperty('mode');
    expect(parseSesameYaml(yaml('{ kind: iptables, mode: rules }'), 's.yaml').backend).toMatchObject({ kind: 'iptables', mode: 'rules' });
    expect(parseSesameYaml(yaml('{ kind: iptables, mode: ipset, ipset: /sbin/ipset }'), 's.yaml').backend).toMatchObject({ mode: 'ipset', ipset: '/sbin/ipset' });
    let msg = '';
    try { parseSesameYaml(yaml('{ kind: iptables, mode: sets }'), 's.yaml'); } catch (e) { msg = (e as Error).message; }
    expect(msg).toMatch(/mode/);
    expect(msg).not.toContain('\n');
  });

  it('writes the mode back when converting', () => {
    const cfg = parseSesameYaml(yaml('{ kind: iptables, mode: rules }'), 's.yaml');
    expect(gatewayConfigToYaml(cfg)).toMatch(/mode: rules/);
  });

  it('the instance lock of the chain names the sets it covers (they are named after the chain)', () => {
    const base = { stateDir: '/var/lib/sesame', listeners: [] } as unknown as GatewayConfig;
    const whats = (backend: IptablesConfig) => lockSpecs({ ...base, backend }, [], '/run/sesame', '7').map((x) => `${x.file} ${x.what}`);
    expect(whats(cfg())).toContain(`/run/sesame/fw-7-ipt-${CHAIN}.pid iptables chain ${CHAIN} and ipsets ${SET4}/${SET6}`);
    expect(whats(cfg({ mode: 'rules' }))).toContain(`/run/sesame/fw-7-ipt-${CHAIN}.pid iptables chain ${CHAIN}`);
  });

  it('serve --iptables-mode sets the mode of the iptables backend only', async () => {
    const dir = (await import('node:fs')).mkdtempSync('/tmp/sesame-ipset-cfg-');
    const fs = await import('node:fs');
    try {
      fs.writeFileSync(`${dir}/fwknopd.conf`, 'ENABLE_UDP_SERVER Y;\n', { mode: 0o600 });
      fs.writeFileSync(`${dir}/access.conf`, `SOURCE ANY\nKEY_BASE64 ${key}\nHMAC_KEY_BASE64 ${hmac}\n`, { mode: 0o600 });
      const base = { fwknopdConf: `${dir}/fwknopd.conf`, accessConf: `${dir}/access.conf`, stateDir: dir };
      expect((await loadServeConfig(base)).backend).not.toHaveProperty('mode');
      expect((await loadServeConfig({ ...base, iptablesMode: 'rules' })).backend).toMatchObject({ kind: 'iptables', mode: 'rules' });
      await expect(loadServeConfig({ ...base, iptablesMode: 'fast' })).rejects.toThrow(/--iptables-mode fast: expected ipset or rules/);
      await expect(loadServeConfig({ ...base, backend: 'nftables', iptablesMode: 'rules' })).rejects.toThrow(/applies to the iptables backend/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describeWith('iptables ipset mode in a namespace (real kernel)', ['netns', 'iptables', 'ip6tables', 'ipset'], () => {
  let lab: Lab;
  let gw: string;
  let ns: string;
  const backends: IptablesIpsetBackend[] = [];
  const make = (c = cfg()): IptablesIpsetBackend => {
    const b = new IptablesIpsetBackend(c, recorder(), { netns: ns });
    backends.push(b);
    return b;
  };
  const sh = (cmd: string, ...args: string[]) => lab.exec('gw', cmd, args);
  const rulesOf = async (tool: 'iptables' | 'ip6tables', chain: string): Promise<string[]> => {
    const r = await sh(tool, '-w', '-S', chain);
    return r.code === 0 ? r.stdout.split('\n').filter((l) => l.startsWith('-A ')) : [];
  };
  const members = async (set: string): Promise<string[]> => parseSave((await sh('ipset', 'save', set)).stdout, set).map((e) => `${e.address},${e.proto}:${e.port}`);

  beforeAll(async () => {
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'out', ip4: 3 }]);
    gw = lab.host('gw').ip4;
    ns = lab.host('gw').ns;
    lab.startTcpService('gw', PORT);
    await lab.waitListening('gw', 'tcp', PORT);
  });
  beforeEach(async () => {
    for (const tool of ['iptables', 'ip6tables'] as const) await sh(tool, '-w', '-A', 'INPUT', '-p', 'tcp', '--dport', String(PORT), '-j', 'DROP');
  });
  afterEach(async () => {
    for (const b of backends.splice(0)) await b.shutdown();
    await removeGuard(cfg(), { netns: ns });
    for (const tool of ['iptables', 'ip6tables'] as const) {
      for (const t of ['filter', 'nat']) { await sh(tool, '-w', '-t', t, '-F'); await sh(tool, '-w', '-t', t, '-X'); }
    }
  });
  afterAll(async () => { await lab?.destroy(); });

  it('is what the factory builds by default; one set rule per family, the grant opens for the client only', async () => {
    const b = createBackend(cfg(), recorder());
    expect(b).toBeInstanceOf(IptablesIpsetBackend);
    expect(createBackend(cfg({ mode: 'rules' }), recorder())).not.toBeInstanceOf(IptablesIpsetBackend);
    const m = make();
    await m.init();
    expect(m.expiresItself).toBe(true);
    expect(await rulesOf('iptables', 'INPUT')).toContain(`-A INPUT -j ${CHAIN}`);
    expect(await rulesOf('iptables', CHAIN)).toEqual([`-A ${CHAIN} ${setRuleArgs(SET4).join(' ')}`]);
    expect(await rulesOf('ip6tables', CHAIN)).toEqual([`-A ${CHAIN} ${setRuleArgs(SET6).join(' ')}`]);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(false);
    await m.open(grant(lab.host('cl').ip4, PORT, 60));
    await m.open(grant(lab.host('cl').ip6, PORT, 60));
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    expect(await lab.canConnect('cl', lab.host('gw').ip6, PORT)).toBe(true);
    expect(await lab.canConnect('out', gw, PORT)).toBe(false);
    expect(await lab.canConnect('out', lab.host('gw').ip6, PORT)).toBe(false);
    // One rule per family however many grants: the grants are set elements.
    expect(await rulesOf('iptables', CHAIN)).toHaveLength(1);
    expect(await members(SET4)).toEqual([`${lab.host('cl').ip4},tcp:${PORT}`]);
    expect(await members(SET6)).toEqual([`${lab.host('cl').ip6},tcp:${PORT}`]);
    await m.close(grant(lab.host('cl').ip4, PORT, 60));
    expect(await lab.canConnect('cl', gw, PORT)).toBe(false);
    expect(await lab.canConnect('cl', lab.host('gw').ip6, PORT)).toBe(true);
  });

  it('a flush of the filter table (iptables -F, a firewall reload) loses no grant: the watchdog puts the jump and the set rule back', async () => {
    const log = recorder();
    const b = new IptablesIpsetBackend(cfg(), log, { netns: ns, watchEveryMs: 250 });
    backends.push(b);
    await b.init();
    await b.open(grant(lab.host('cl').ip4, PORT, 60));
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    // What a firewall reload does: INPUT rebuilt (the operator's DROP again), sesame's chain emptied.
    await sh('iptables', '-w', '-F');
    await sh('iptables', '-w', '-A', 'INPUT', '-p', 'tcp', '--dport', String(PORT), '-j', 'DROP');
    let back = false;
    for (let i = 0; i < 40 && !back; i++) { await sleep(100); back = (await rulesOf('iptables', CHAIN)).length === 1 && (await rulesOf('iptables', 'INPUT')).includes(`-A INPUT -j ${CHAIN}`); }
    expect(back, JSON.stringify(log.lines.slice(-3))).toBe(true);
    expect(await rulesOf('iptables', CHAIN)).toEqual([`-A ${CHAIN} ${setRuleArgs(SET4).join(' ')}`]);
    // The element stayed in its set all along: the same grant, with its own timeout.
    expect(await members(SET4)).toEqual([`${lab.host('cl').ip4},tcp:${PORT}`]);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    expect(await lab.canConnect('out', gw, PORT)).toBe(false);
    expect(log.lines.filter((l) => l.event === 'iptables_repaired').flatMap((l) => l.fields!.restored as string[])).toEqual(expect.arrayContaining(['iptables jump INPUT -> ' + CHAIN, 'iptables 1 set rule(s)']));
  });

  it('the kernel closes a grant on time with the daemon side gone; shutdown leaves sets, rule and jump', async () => {
    const b = make();
    await b.init();
    await b.open(grant(lab.host('cl').ip4, PORT, 2));
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    await b.shutdown(); // no timer of ours runs any more, and the ipset process is gone
    expect(await rulesOf('iptables', CHAIN)).toHaveLength(1);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    await sleep(2600);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(false);
    expect(await members(SET4)).toEqual([]);
  });

  it('refresh rewrites the timeout (shorter too); a restart adopts live elements with the kernel\'s remaining time', async () => {
    const b = make();
    await b.init();
    const cl = lab.host('cl').ip4;
    await b.open(grant(cl, PORT, 300));
    await b.open(grant(cl, PORT, 20));
    await b.open(grant('198.51.100.77', 22, 40, { proto: 'udp' }));
    const save = parseSave((await sh('ipset', 'save', SET4)).stdout, SET4);
    expect(save.find((e) => e.address === cl)!.remainingSec).toBeLessThanOrEqual(20);
    await b.shutdown();
    const next = make();
    await next.init();
    const listed = await next.list();
    expect(listed.map((g) => `${g.address}|${g.proto}|${g.port}`).sort()).toEqual([`${cl}|tcp|${PORT}`, '198.51.100.77|udp|22']);
    const mine = listed.find((g) => g.address === cl)!;
    expect(mine.expiresAt - Date.now()).toBeGreaterThan(15_000);
    expect(mine.expiresAt - Date.now()).toBeLessThanOrEqual(20_000);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    // Still one jump and one set rule after the second init.
    expect((await rulesOf('iptables', 'INPUT')).filter((l) => l.includes(CHAIN))).toHaveLength(1);
    expect(await rulesOf('iptables', CHAIN)).toHaveLength(1);
  });

  it('a bad element in a batch fails alone: the stream stays in step', async () => {
    const b = make();
    await b.init();
    const stream = new IpsetStream({ ipset: 'ipset', prefix: ['ip', 'netns', 'exec', ns] });
    try {
      const out = await stream.run([
        ['add', '-exist', SET4, '198.51.100.50,tcp:22', 'timeout', '30'],
        ['add', '-exist', SET4, '2001:db8::50,tcp:22', 'timeout', '30'], // IPv6 into the IPv4 set
        ['add', '-exist', 'NO_SUCH_SET', '198.51.100.51,tcp:22', 'timeout', '30'],
        ['add', '-exist', SET4, '198.51.100.52,tcp:22', 'timeout', '30'],
      ]);
      expect(out[0]).toBeUndefined();
      expect(out[1]).toMatch(/cannot parse|resolving/);
      expect(out[2]).toMatch(/does not exist/);
      expect(out[3]).toBeUndefined();
      expect((await stream.run([['del', '-exist', SET4, '198.51.100.50,tcp:22']]))).toEqual([undefined]);
      expect((await members(SET4)).sort()).toEqual(['198.51.100.52,tcp:22']);
      expect(stream.starts).toBe(1);
    } finally {
      stream.close();
    }
  });

  it('a killed ipset process is replaced for the next grant; concurrent opens share one batch', async () => {
    const b = make();
    await b.init();
    await b.open(grant('198.51.100.60', PORT, 30));
    const pid = b.ipsetStream.pid!;
    expect(pid).toBeGreaterThan(0);
    process.kill(-pid, 'SIGKILL');
    await sleep(100);
    await b.open(grant(lab.host('cl').ip4, PORT, 30));
    expect(b.ipsetStream.starts).toBe(2);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    const addrs = Array.from({ length: 50 }, (_, i) => `198.51.100.${150 + i}`);
    await Promise.all(addrs.map((a) => b.open(grant(a, PORT, 30))));
    expect(await members(SET4)).toHaveLength(52);
  });

  it('a death in the middle of a batch fails that batch on the stream, and the backend retries it on a fresh process', async () => {
    const b = make();
    await b.init();
    const stream = new IpsetStream({ ipset: 'ipset', prefix: ['ip', 'netns', 'exec', ns] });
    try {
      await stream.run([['list', '-t', SET4]]);
      const big = Array.from({ length: 20_000 }, (_, i) => ['add', '-exist', SET4, `198.51.100.${i % 250 + 1},tcp:${1000 + i}`, 'timeout', '30']);
      const pending = stream.run(big);
      setTimeout(() => process.kill(-stream.pid!, 'SIGKILL'), 30);
      await expect(pending).rejects.toThrow(/ipset exited while commands were in flight/);
      expect(await stream.run([['del', '-exist', SET4, '198.51.100.1,tcp:1000']])).toEqual([undefined]);
      expect(stream.starts).toBe(2);
    } finally {
      stream.close();
    }
    await sh('ipset', 'flush', SET4);
    // The backend: a burst of opens whose ipset dies under it still ends with every grant in the set.
    await b.open(grant('198.51.100.9', PORT, 30));
    const addrs = Array.from({ length: 3000 }, (_, i) => `2001:db8::b:${i.toString(16)}`);
    const opens = Promise.all(addrs.map((a) => b.open(grant(a, PORT, 30))));
    setTimeout(() => process.kill(-b.ipsetStream.pid!, 'SIGKILL'), 20);
    await opens;
    expect(b.ipsetStream.starts).toBeGreaterThanOrEqual(2);
    expect(await members(SET6)).toHaveLength(3000);
  });

  it('a burst of NAT rules expiring at once (chain rewrite) keeps the set rule in place', async () => {
    const b = make();
    await b.init();
    await b.open(grant(lab.host('cl').ip4, PORT, 60));
    const expiresAt = Date.now() + 1500;
    const addrs = Array.from({ length: 80 }, (_, i) => `198.51.100.${100 + i}`);
    await Promise.all(addrs.map((a) => b.open({ ...grant(a, 40000, 30), expiresAt, nat: { host: '', port: PORT, local: true } })));
    expect((await rulesOf('iptables', CHAIN)).length).toBeGreaterThan(80);
    await sleep(2600);
    expect(await rulesOf('iptables', CHAIN)).toEqual([`-A ${CHAIN} ${setRuleArgs(SET4).join(' ')}`]);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
  });

  it('refuses hostile grants and prefix grants before ipset sees them', async () => {
    const b = make();
    await b.init();
    await expect(b.open(grant('198.51.100.2,tcp:1 timeout 0', PORT, 60))).rejects.toThrow(/not an IPv4 or IPv6 address/);
    await expect(b.open({ ...grant('198.51.100.2', PORT, 60), proto: 'icmp' as 'tcp' })).rejects.toThrow(/not tcp or udp/);
    await expect(b.open({ ...grant('198.51.100.0', PORT, 60), prefix: 24 })).rejects.toThrow(/prefix grant/);
    expect(await members(SET4)).toEqual([]);
  });

  it('mode ipset insists on a working ipset; mode unset falls back to the rules layout with a warning', async () => {
    await expect(make(cfg({ mode: 'ipset', ipset: '/nonexistent/ipset' })).init()).rejects.toThrow(/ipset mode: .*could not start.*apt-get install ipset, or set backend mode: rules/);
    const log = recorder();
    const b = new IptablesIpsetBackend(cfg({ ipset: '/nonexistent/ipset' }), log, { netns: ns });
    backends.push(b);
    await b.init();
    expect(log.events).toContain('iptables_ipset_unavailable');
    expect(b.expiresItself).toBe(false);
    await b.open(grant(lab.host('cl').ip4, PORT, 60));
    expect((await rulesOf('iptables', CHAIN))[0]).toMatch(/_exp_\d+ -j ACCEPT$/);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
  });

  it('refuses to adopt a set of the same name with another type', async () => {
    expect((await sh('ipset', 'create', SET4, 'hash:ip')).code).toBe(0);
    await expect(make().init()).rejects.toThrow(new RegExp(`ipset ${SET4} exists as hash:ip .*ipset destroy ${SET4}`));
  });

  it('sesame doctor reports the ipset program and the live grants of the set', async () => {
    const dir = mkdtempSync('/tmp/sesame-ipset-doctor-');
    const file = `${dir}/sesame.yaml`;
    const doctorFor = async (backend: string) => {
      writeFileSync(file, [`state_dir: ${dir}/state`, `backend: ${backend}`, 'rules:', '  - name: r1', '    source: [any]',
        `    key_base64: ${Buffer.alloc(32, 1).toString('base64')}`, `    hmac_key_base64: ${Buffer.alloc(64, 2).toString('base64')}`, ''].join('\n'), { mode: 0o600 });
      return (await runDoctor({ config: file, netns: ns })).filter((l) => l.check === 'backend' && /ipset/.test(l.what));
    };
    try {
      const b = make();
      await b.init();
      await b.open(grant(lab.host('cl').ip4, PORT, 60));
      expect(await doctorFor('{ kind: iptables }')).toEqual([expect.objectContaining({ status: 'ok', what: expect.stringMatching(new RegExp(`set ${SET4} holds 1 live IPv4 grant `)) })]);
      expect(await doctorFor('{ kind: iptables, ipset: /nonexistent/ipset }')).toEqual([expect.objectContaining({ status: 'warn', what: expect.stringMatching(/falls back to fwknop's rules layout/) })]);
      expect(await doctorFor('{ kind: iptables, mode: ipset, ipset: /nonexistent/ipset }')).toEqual([expect.objectContaining({ status: 'problem', fix: expect.stringMatching(/apt-get install ipset/) })]);
      expect(await doctorFor('{ kind: iptables, mode: rules }')).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('sesame down removes the chains, the jump and both sets', async () => {
    const b = make();
    await b.init();
    await b.open(grant(lab.host('cl').ip4, PORT, 60));
    await b.shutdown();
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    expect(await removeGuard(cfg(), { netns: ns })).toBe(`removed the iptables chains ${CHAIN} and their jumps and the ipsets ${SET4}, ${SET6}`);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(false);
    expect((await sh('ipset', 'list', '-t', SET4)).code).not.toBe(0);
    expect((await sh('ipset', 'list', '-t', SET6)).code).not.toBe(0);
    expect((await rulesOf('iptables', 'INPUT')).some((l) => l.includes(CHAIN))).toBe(false);
  });
});

describeWith('iptables ipset mode: NAT grants through the rules path (real kernel)', ['netns', 'iptables', 'ipset'], () => {
  let lab: Lab;
  const SRV = SRV_BEHIND;
  const backends: IptablesIpsetBackend[] = [];
  const make = (): IptablesIpsetBackend => {
    const b = new IptablesIpsetBackend(cfg(), recorder(), { netns: lab.host('gw').ns });
    backends.push(b);
    return b;
  };
  const run = (host: string, cmd: string, ...args: string[]) => mustRun(lab, host, cmd, ...args);

  beforeAll(async () => {
    lab = await natLab();
    await run('gw', 'iptables', '-w', '-P', 'FORWARD', 'DROP');
    await run('gw', 'iptables', '-w', '-A', 'FORWARD', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT');
  });
  afterEach(async () => { for (const b of backends.splice(0)) await b.shutdown(); });
  afterAll(async () => {
    if (lab) await removeGuard(cfg(), { netns: lab.host('gw').ns });
    await lab?.destroy();
  });

  it('forwards for the granted client only, lists the grant, and shutdown closes it (nothing would later)', async () => {
    const b = make();
    await b.init();
    const nat = { host: SRV, port: 22, local: false, masquerade: true } as Grant['nat'];
    expect(await lab.canConnect('cl', '198.51.100.1', 2200)).toBe(false);
    await b.open(grant(lab.host('cl').ip4, 2200, 60, { nat }));
    await b.open(grant(lab.host('cl').ip4, 2222, 60));
    expect(await lab.canConnect('cl', '198.51.100.1', 2200)).toBe(true);
    expect(await lab.canConnect('out', '198.51.100.1', 2200)).toBe(false);
    const listed = await b.list();
    expect(listed).toHaveLength(2);
    expect(listed.find((g) => g.nat)!.nat).toMatchObject({ host: SRV, port: 22, masquerade: true });
    await b.shutdown();
    expect(await lab.canConnect('cl', '198.51.100.1', 2200)).toBe(false);
    const pre = await lab.exec('gw', 'iptables', ['-w', '-t', 'nat', '-S', 'SESAME_PREROUTING']);
    expect(pre.stdout.split('\n').filter((l) => l.startsWith('-A '))).toEqual([]);
    // The set grant stays (the kernel expires it).
    expect(parseSave((await lab.exec('gw', 'ipset', ['save', SET4])).stdout, SET4)).toHaveLength(1);
  });
});
