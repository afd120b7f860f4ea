// iptables backend (fwknop layout) against the real kernel in a namespace lab:
// jump position, _exp_ rules, backend-owned expiry, refresh, IPv6, stale rules
// of a previous run, list() reconciliation, shutdown, NAT (DNAT + forward +
// masquerade, local redirect), and the watchdog that puts back what a flush removed.
import { afterAll, afterEach, beforeAll, beforeEach, expect, it } from 'vitest';
import { describeWith } from './harness/requirements.js';
import { Lab, sleep } from './harness/netns.js';
import type { Grant } from '../src/backends/backend.js';
import { createIptablesBackend, type IptablesBackend, type IptablesConfig } from '../src/backends/iptables.js';
import { grant, recorder } from './harness/backend-fixtures.js';
import { natLab, mustRun, SRV_BEHIND } from './harness/daemon.js';

const PORT = 2222;
const CHAIN = 'FWKNOP_INPUT';



const cfg = (jumpPosition = 1): IptablesConfig => ({ kind: 'iptables', chain: CHAIN, jumpPosition, iptables: 'iptables', ip6tables: 'ip6tables' });

describeWith('iptables backend in a namespace (real kernel)', ['netns', 'iptables', 'ip6tables'], () => {
  let lab: Lab;
  let gw: string;
  const backends: IptablesBackend[] = [];
  const make = (c = cfg()): IptablesBackend => {
    const b = createIptablesBackend(c, recorder(), { netns: lab.host('gw').ns });
    backends.push(b);
    return b;
  };
  const ipt = (tool: 'iptables' | 'ip6tables', ...args: string[]) => lab.exec('gw', tool, ['-w', ...args]);
  const rulesOf = async (tool: 'iptables' | 'ip6tables', chain: string, table = 'filter'): Promise<string[]> => {
    const r = await ipt(tool, '-t', table, '-S', chain);
    return r.code === 0 ? r.stdout.split('\n').filter((l) => l.startsWith('-A ')) : [];
  };

  beforeAll(async () => {
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'out', ip4: 3 }]);
    gw = lab.host('gw').ip4;
    lab.startTcpService('gw', PORT);
    await lab.waitListening('gw', 'tcp', PORT);
  });
  beforeEach(async () => {
    // The operator's own policy: the protected port is dropped for everyone.
    for (const tool of ['iptables', 'ip6tables'] as const) {
      await ipt(tool, '-A', 'INPUT', '-p', 'tcp', '--dport', String(PORT), '-j', 'DROP');
    }
  });
  afterEach(async () => {
    for (const b of backends.splice(0)) await b.shutdown();
    for (const tool of ['iptables', 'ip6tables'] as const) {
      for (const t of ['filter', 'nat']) { await ipt(tool, '-t', t, '-F'); await ipt(tool, '-t', t, '-X'); }
    }
  });
  afterAll(async () => { await lab?.destroy(); });

  it('inserts its chain at the jump position; the grant opens for the client only (IPv4 and IPv6)', async () => {
    for (const tool of ['iptables', 'ip6tables'] as const) await ipt(tool, '-I', 'INPUT', '1', '-p', 'udp', '--dport', '9', '-j', 'ACCEPT');
    const b = make(cfg(2));
    await b.init();
    const input = await rulesOf('iptables', 'INPUT');
    expect(input[1]).toBe(`-A INPUT -j ${CHAIN}`);
    expect((await rulesOf('ip6tables', 'INPUT'))[1]).toBe(`-A INPUT -j ${CHAIN}`);
    const gw6 = lab.host('gw').ip6;
    expect(await lab.canConnect('cl', gw, PORT)).toBe(false);
    expect(await lab.canConnect('cl', gw6, PORT)).toBe(false);
    await b.open(grant(lab.host('cl').ip4, PORT, 60));
    await b.open(grant(lab.host('cl').ip6, PORT, 60));
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    expect(await lab.canConnect('cl', gw6, PORT)).toBe(true);
    expect(await lab.canConnect('out', gw, PORT)).toBe(false);
    expect(await lab.canConnect('out', lab.host('gw').ip6, PORT)).toBe(false);
    const rule = (await rulesOf('iptables', CHAIN))[0]!;
    expect(rule).toMatch(new RegExp(`^-A ${CHAIN} -s 198\\.51\\.100\\.2/32 -p tcp -m tcp --dport ${PORT} -m comment --comment _exp_(\\d+) -j ACCEPT$`));
    // A second init (restart) keeps one jump at the same place.
    const again = make(cfg(2));
    await again.init();
    expect((await rulesOf('iptables', 'INPUT')).filter((l) => l.includes(CHAIN))).toEqual([`-A INPUT -j ${CHAIN}`]);
    expect((await rulesOf('iptables', 'INPUT'))[1]).toBe(`-A INPUT -j ${CHAIN}`);
  });

  it('closes on time by its own timer; repeated open replaces the rule (no duplicates)', async () => {
    const b = make();
    await b.init();
    const cl = lab.host('cl').ip4;
    await b.open(grant(cl, PORT, 30));
    const first = await rulesOf('iptables', CHAIN);
    await b.open(grant(cl, PORT, 2));
    const second = await rulesOf('iptables', CHAIN);
    expect(second).toHaveLength(1);
    expect(second[0]).not.toBe(first[0]);
    expect(Number(/_exp_(\d+)/.exec(second[0]!)![1])).toBeLessThan(Number(/_exp_(\d+)/.exec(first[0]!)![1]));
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    await sleep(2700);
    expect(await rulesOf('iptables', CHAIN)).toEqual([]);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(false);
  });

  it('adds concurrent opens together; a duplicate in the same burst refreshes instead of duplicating', async () => {
    const b = make();
    await b.init();
    const addrs = Array.from({ length: 20 }, (_, i) => `198.51.100.${60 + i}`);
    await Promise.all([...addrs.map((a) => b.open(grant(a, PORT, 20))), b.open(grant(addrs[3]!, PORT, 200))]);
    const rules = await rulesOf('iptables', CHAIN);
    expect(rules).toHaveLength(20);
    const exps = rules.map((r) => Number(/_exp_(\d+)/.exec(r)![1]));
    expect(Math.max(...exps) - Math.min(...exps)).toBeGreaterThan(150);
    expect(rules.filter((r) => r.includes(`${addrs[3]}/32`))).toHaveLength(1);
    expect(await b.list()).toHaveLength(20);
  });

  it('expires a burst of grants in one batch, also when one of their rules is already gone', async () => {
    const b = make();
    await b.init();
    const expiresAt = Date.now() + 1500;
    const addrs = Array.from({ length: 12 }, (_, i) => `198.51.100.${100 + i}`);
    for (const a of addrs) await b.open({ ...grant(a, PORT, 30), expiresAt });
    expect(await rulesOf('iptables', CHAIN)).toHaveLength(12);
    // Someone removed one rule by hand: the batch fails and the fallback deletes the rest.
    const one = (await rulesOf('iptables', CHAIN))[0]!.replace(/^-A /, '-D ').split(' ');
    expect((await ipt('iptables', ...one)).code).toBe(0);
    await sleep(2500);
    expect(await rulesOf('iptables', CHAIN)).toEqual([]);
    const c = make();
    await c.init();
    expect(await c.list()).toEqual([]);
  });

  it('expires hundreds of grants at once by rewriting the chain, keeping the grants still live', async () => {
    const b = make();
    await b.init();
    const expiresAt = Date.now() + 2500;
    const addrs = Array.from({ length: 200 }, (_, i) => `2001:db8::${(0x1000 + i).toString(16)}`);
    await Promise.all(addrs.map((a) => b.open({ ...grant(a, PORT, 30), family: 6, expiresAt })));
    const cl = lab.host('cl').ip4;
    await b.open(grant(cl, PORT, 30));
    expect(await rulesOf('ip6tables', CHAIN)).toHaveLength(200);
    await sleep(3500);
    expect(await rulesOf('ip6tables', CHAIN)).toEqual([]);
    expect(await rulesOf('iptables', CHAIN)).toHaveLength(1);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
  });

  it('init removes stale rules of a previous run, adopts live ones, and list() reports them', async () => {
    await ipt('iptables', '-N', CHAIN);
    await ipt('iptables', '-I', 'INPUT', '1', '-j', CHAIN);
    const now = Math.round(Date.now() / 1000);
    const add = (src: string, exp: number | undefined) =>
      ipt('iptables', '-A', CHAIN, '-s', src, '-p', 'tcp', '--dport', String(PORT), ...(exp ? ['-m', 'comment', '--comment', `_exp_${exp}`] : []), '-j', 'ACCEPT');
    await add('198.51.100.3', now - 5); // expired
    await add('198.51.100.9', undefined); // not ours in form
    await add(lab.host('cl').ip4, now + 3); // live: kept, then expired by the new run
    const b = make();
    await b.init();
    const rules = await rulesOf('iptables', CHAIN);
    expect(rules).toHaveLength(1);
    expect(rules[0]).toContain('198.51.100.2/32');
    const listed = await b.list();
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ address: lab.host('cl').ip4, family: 4, proto: 'tcp', port: PORT });
    expect(listed[0]!.expiresAt).toBe((now + 3) * 1000);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    expect(await lab.canConnect('out', gw, PORT)).toBe(false);
    await sleep((now + 3) * 1000 - Date.now() + 700);
    expect(await rulesOf('iptables', CHAIN)).toEqual([]);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(false);
  });

  it('close() of a grant this run did not open (reconciliation) removes the matching rule', async () => {
    const first = make();
    await first.init();
    await first.open(grant(lab.host('cl').ip4, PORT, 60));
    // A crash: the chain stays with its rule. A new run takes over.
    const second = make();
    await second.init();
    const [g] = await second.list();
    expect(g).toBeDefined();
    const fresh = make();
    await fresh.close(g!); // no init, no memory of it
    expect(await rulesOf('iptables', CHAIN)).toEqual([]);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(false);
  });

  it('shutdown removes its chains and jumps (the grants close, the operator policy drops again)', async () => {
    const b = make();
    await b.init();
    await b.open(grant(lab.host('cl').ip4, PORT, 60));
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    await b.shutdown();
    expect((await ipt('iptables', '-S', CHAIN)).code).not.toBe(0);
    expect((await rulesOf('iptables', 'INPUT')).some((l) => l.includes(CHAIN))).toBe(false);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(false);
  });

  it('its watchdog puts back what a flush removed (grant rules, jump, chain); the client gets in again, nobody else', async () => {
    // Checks run by hand here (no timer), so each one sees exactly what was removed.
    const b = createIptablesBackend(cfg(), recorder(), { netns: lab.host('gw').ns, watchEveryMs: 0 });
    backends.push(b);
    await b.init();
    await b.open(grant(lab.host('cl').ip4, PORT, 60));
    await b.open(grant(lab.host('cl').ip6, PORT, 60));
    expect(await b.watchOnce()).toEqual([]);
    // The operator's `iptables -F CHAIN`: the grant rules go (the operator's DROP stays).
    await ipt('iptables', '-F', CHAIN);
    await ipt('ip6tables', '-F', CHAIN);
    expect(await lab.canConnect('cl', gw, PORT, 300)).toBe(false);
    expect(await b.watchOnce()).toEqual(['iptables 1 grant rule(s) in FWKNOP_INPUT', 'ip6tables 1 grant rule(s) in FWKNOP_INPUT']);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    expect(await lab.canConnect('cl', lab.host('gw').ip6, PORT)).toBe(true);
    // A firewall reload that rebuilds INPUT without sesame's jump and deletes its chain.
    await ipt('iptables', '-D', 'INPUT', '-j', CHAIN);
    await ipt('iptables', '-F', CHAIN);
    await ipt('iptables', '-X', CHAIN);
    expect(await lab.canConnect('cl', gw, PORT, 300)).toBe(false);
    expect(await b.watchOnce()).toEqual([`iptables chain ${CHAIN}`, 'iptables 1 grant rule(s) in FWKNOP_INPUT']);
    expect((await rulesOf('iptables', 'INPUT')).filter((l) => l.includes(CHAIN))).toEqual([`-A INPUT -j ${CHAIN}`]);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    expect(await lab.canConnect('out', gw, PORT)).toBe(false);
    // Nothing missing: nothing done, no duplicate rule.
    expect(await b.watchOnce()).toEqual([]);
    expect(await rulesOf('iptables', CHAIN)).toHaveLength(1);
  });

  it('the watchdog runs by itself: after a flush the grant works again within a few of its periods', async () => {
    const log = recorder();
    const b = createIptablesBackend(cfg(), log, { netns: lab.host('gw').ns, watchEveryMs: 250 });
    backends.push(b);
    await b.init();
    await b.open(grant(lab.host('cl').ip4, PORT, 60));
    await ipt('iptables', '-F', CHAIN);
    let back = false;
    // The rule is back before the check has looked at IPv6 too and logged what it did: wait for both.
    for (let i = 0; i < 40 && !back; i++) { await sleep(100); back = (await rulesOf('iptables', CHAIN)).length === 1 && log.events.includes('iptables_repaired'); }
    expect(back, JSON.stringify(log.lines.slice(-3))).toBe(true);
    expect(log.events).toContain('iptables_repaired');
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
  });

  it('refuses hostile or inconsistent grants without running iptables on them', async () => {
    const b = make();
    await b.init();
    await expect(b.open(grant('198.51.100.2 -j ACCEPT', PORT, 60))).rejects.toThrow(/not an IPv4 or IPv6 address/);
    await expect(b.open(grant('-F', PORT, 60))).rejects.toThrow(/not an IPv4 or IPv6 address/);
    await expect(b.open({ ...grant('198.51.100.2', PORT, 60), proto: 'icmp' as 'tcp' })).rejects.toThrow(/not tcp or udp/);
    expect(await rulesOf('iptables', CHAIN)).toEqual([]);
  });
});

describeWith('iptables backend NAT in a namespace (real kernel)', ['netns', 'iptables'], () => {
  let lab: Lab;
  const SRV = SRV_BEHIND;
  const backends: IptablesBackend[] = [];
  const make = (): IptablesBackend => {
    const b = createIptablesBackend(cfg(), recorder(), { netns: lab.host('gw').ns });
    backends.push(b);
    return b;
  };
  const run = (host: string, cmd: string, ...args: string[]) => mustRun(lab, host, cmd, ...args);

  beforeAll(async () => {
    lab = await natLab();
    lab.startTcpService('gw', PORT);
    await lab.waitListening('gw', 'tcp', PORT);
    // Operator policy: nothing is forwarded unless accepted; replies pass; tcp/2222 dropped.
    await run('gw', 'iptables', '-w', '-P', 'FORWARD', 'DROP');
    await run('gw', 'iptables', '-w', '-A', 'FORWARD', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT');
    await run('gw', 'iptables', '-w', '-A', 'INPUT', '-p', 'tcp', '--dport', String(PORT), '-j', 'DROP');
  });
  afterEach(async () => { for (const b of backends.splice(0)) await b.shutdown(); });
  afterAll(async () => { await lab?.destroy(); });

  it('DNAT + forward accept + masquerade reach the internal host for the granted client only', async () => {
    const b = make();
    await b.init();
    const nat = { host: SRV, port: 22, local: false, masquerade: true } as Grant['nat'];
    expect(await lab.canConnect('cl', '198.51.100.1', 2200)).toBe(false);
    await b.open(grant(lab.host('cl').ip4, 2200, 60, { nat }));
    expect(await lab.canConnect('cl', '198.51.100.1', 2200)).toBe(true);
    expect(await lab.canConnect('out', '198.51.100.1', 2200)).toBe(false);
    const listed = await b.list();
    expect(listed).toHaveLength(1);
    expect(listed[0]!.nat).toMatchObject({ host: SRV, port: 22, local: false, masquerade: true });
    // The rules of a crashed run are adopted as one grant and closed together.
    const next = make();
    await next.init();
    await next.close(listed[0]!);
    expect(await lab.canConnect('cl', '198.51.100.1', 2200)).toBe(false);
    for (const [table, chain] of [['nat', 'FWKNOP_PREROUTING'], ['filter', 'FWKNOP_FORWARD'], ['nat', 'FWKNOP_POSTROUTING']]) {
      const r = await lab.exec('gw', 'iptables', ['-w', '-t', table!, '-S', chain!]);
      expect(r.stdout.split('\n').filter((l) => l.startsWith('-A '))).toEqual([]);
    }
  });

  it('local NAT redirects the external port to the local service for the granted client only', async () => {
    const b = make();
    await b.init();
    await b.open(grant(lab.host('cl').ip4, 55000, 60, { nat: { host: '', port: PORT, local: true } }));
    expect(await lab.canConnect('cl', '198.51.100.1', 55000)).toBe(true);
    expect(await lab.canConnect('out', '198.51.100.1', 55000)).toBe(false);
    expect(await lab.canConnect('out', '198.51.100.1', PORT)).toBe(false);
    const listed = await b.list();
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ port: 55000, nat: { port: PORT, local: true } });
  });
});
