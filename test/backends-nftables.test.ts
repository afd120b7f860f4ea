// nftables backend against the real kernel, inside a namespace lab: guard,
// timed grants, refresh, IPv4/IPv6, fail-closed shutdown, flush watchdog,
// sets mode and NAT (DNAT to an internal host, local redirect, masquerade).
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { describeWith } from './harness/requirements.js';
import { Lab, sleep } from './harness/netns.js';
import type { Grant } from '../src/backends/backend.js';
import { createNftablesBackend, operatorSnippet, type NftablesBackend, type NftablesConfig, type NftablesOptions } from '../src/backends/nftables.js';
import { grant, recorder } from './harness/backend-fixtures.js';
import { natLab, mustRun, SRV_BEHIND } from './harness/daemon.js';

const PORT = 2222;



const guardCfg = (ports = [PORT]): NftablesConfig => ({
  kind: 'nftables', mode: 'guard', table: 'sesame', guardPorts: ports.map((port) => ({ proto: 'tcp' as const, port })),
});

describeWith('nftables backend in a namespace (real kernel)', ['netns', 'nft'], () => {
  let lab: Lab;
  let gw: string;
  const backends: NftablesBackend[] = [];
  const make = (cfg: NftablesConfig, log = recorder(), opts: NftablesOptions = {}): NftablesBackend => {
    const b = createNftablesBackend(cfg, log, { netns: lab.host('gw').ns, ...opts });
    backends.push(b);
    return b;
  };
  const nft = async (...args: string[]) => lab.exec('gw', 'nft', args);
  const elementsOf = async (set: string): Promise<Array<{ key: unknown; expires?: number }>> => {
    const r = await nft('-j', 'list', 'set', 'inet', 'sesame', set);
    expect(r.code).toBe(0);
    const objs = (JSON.parse(r.stdout) as { nftables: Array<{ set?: { elem?: unknown[] } }> }).nftables;
    const elem = objs.find((o) => o.set)?.set?.elem ?? [];
    return elem.map((e) => {
      const x = (e as { elem?: { val: unknown; expires?: number } }).elem;
      return x ? { key: x.val, expires: x.expires } : { key: e };
    });
  };

  beforeAll(async () => {
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'out', ip4: 3 }]);
    gw = lab.host('gw').ip4;
    lab.startTcpService('gw', PORT);
    await lab.waitListening('gw', 'tcp', PORT);
  });
  afterEach(async () => {
    for (const b of backends.splice(0)) await b.shutdown();
    await nft('flush', 'ruleset');
  });
  afterAll(async () => { await lab?.destroy(); });

  it('guards the port for everyone, then lets exactly the granted source in (IPv4 and IPv6)', async () => {
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true); // open before sesame: the probe itself works
    const b = make(guardCfg());
    await b.init();
    const gw6 = lab.host('gw').ip6;
    for (const [host, dst] of [['cl', gw], ['out', gw], ['cl', gw6], ['out', gw6]] as const) {
      expect(await lab.canConnect(host, dst, PORT), `${host} -> ${dst}`).toBe(false);
    }
    await b.open(grant(lab.host('cl').ip4, PORT, 60));
    await b.open(grant(lab.host('cl').ip6, PORT, 60));
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    expect(await lab.canConnect('cl', gw6, PORT)).toBe(true);
    expect(await lab.canConnect('out', gw, PORT)).toBe(false);
    expect(await lab.canConnect('out', gw6, PORT)).toBe(false);
    const listed = await b.list();
    expect(listed.map((g) => `${g.address}/${g.proto}/${g.port}`).sort()).toEqual([`${lab.host('cl').ip4}/tcp/${PORT}`, `${lab.host('cl').ip6}/tcp/${PORT}`].sort());
    for (const g of listed) expect(g.expiresAt - Date.now()).toBeGreaterThan(50_000);
  });

  it('the kernel closes the grant on time: no new connection after the timeout', async () => {
    const b = make(guardCfg());
    await b.init();
    await b.open(grant(lab.host('cl').ip4, PORT, 2));
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    await sleep(2600);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(false);
    expect(await elementsOf('granted4')).toEqual([]);
    expect(await b.list()).toEqual([]);
  });

  it('repeated open refreshes the element (one element, expiry moved, also shorter)', async () => {
    const b = make(guardCfg());
    await b.init();
    const cl = lab.host('cl').ip4;
    await b.open(grant(cl, PORT, 20));
    await b.open(grant(cl, PORT, 200));
    let els = await elementsOf('granted4');
    expect(els).toHaveLength(1);
    expect(els[0]!.expires).toBeGreaterThan(150);
    await b.open(grant(cl, PORT, 3));
    els = await elementsOf('granted4');
    expect(els).toHaveLength(1);
    expect(els[0]!.expires).toBeLessThanOrEqual(3);
    await sleep(3600);
    expect(await elementsOf('granted4')).toEqual([]);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(false);
  });

  it('concurrent opens are applied together, duplicates refresh instead of duplicating', async () => {
    const b = make(guardCfg());
    await b.init();
    const addrs = Array.from({ length: 30 }, (_, i) => `198.51.100.${150 + i}`);
    await Promise.all([...addrs.map((a) => b.open(grant(a, PORT, 20))), b.open(grant(addrs[0]!, PORT, 200))]);
    const els = await elementsOf('granted4');
    expect(els).toHaveLength(30);
    expect(els.filter((e) => (e.expires ?? 0) > 150)).toHaveLength(1);
    expect(b.liveGrants()).toHaveLength(30);
  });

  it('recovers when its long-lived nft process dies: the next open still lands', async () => {
    const b = make(guardCfg());
    await b.init();
    await b.open(grant('198.51.100.201', PORT, 30));
    // End the interactive nft (the one reading commands on stdin) behind the backend's back.
    // Only this lab's: the processes inside its gateway namespace (other suites may run their own).
    const inLab = new Set((await lab.exec('gw', 'ip', ['netns', 'pids', lab.host('gw').ns])).stdout.split('\n').filter(Boolean));
    const pids = (await lab.exec('gw', 'pgrep', ['-f', '^nft -i$'])).stdout.split('\n').filter((p) => inLab.has(p));
    expect(pids.length).toBeGreaterThan(0);
    for (const pid of pids) process.kill(Number(pid), 'SIGKILL');
    // Not stalled until the 10 s command time limit: the dead process is noticed at once.
    const t0 = Date.now();
    await b.open(grant('198.51.100.202', PORT, 30));
    expect(Date.now() - t0).toBeLessThan(5000);
    const keys = (await elementsOf('granted4')).map((e) => JSON.stringify(e.key));
    expect(keys.join()).toContain('198.51.100.202');
    expect(keys.join()).toContain('198.51.100.201');
  });

  it('close removes a grant at once; closing it again is not an error', async () => {
    const b = make(guardCfg());
    await b.init();
    const g = grant(lab.host('cl').ip4, PORT, 60);
    await b.open(g);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    await b.close(g);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(false);
    await b.close(g);
    expect(await elementsOf('granted4')).toEqual([]);
  });

  it('the guard and live grants stay after shutdown (fail closed); a new run recovers them', async () => {
    const b = make(guardCfg());
    await b.init();
    await b.open(grant(lab.host('cl').ip4, PORT, 60));
    await b.shutdown();
    expect(await lab.canConnect('out', gw, PORT)).toBe(false);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    const again = make(guardCfg());
    await again.init();
    const listed = await again.list();
    expect(listed).toHaveLength(1);
    expect(listed[0]!.address).toBe(lab.host('cl').ip4);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    expect(await lab.canConnect('out', gw, PORT)).toBe(false);
  });

  it('restores the table and the live grant within 2 s after `nft flush ruleset`', async () => {
    const log = recorder();
    const restored: string[] = [];
    const b = make(guardCfg(), log, { onRestored: (i) => restored.push(i.reason) });
    await b.init();
    await b.open(grant(lab.host('cl').ip4, PORT, 60));
    const t0 = Date.now();
    expect((await nft('flush', 'ruleset')).code).toBe(0);
    // Guard gone for a moment: wait until it is back, then check both sides.
    let back = false;
    while (Date.now() - t0 < 2000 && !back) {
      back = (await nft('list', 'table', 'inet', 'sesame')).code === 0 && (await elementsOf('granted4')).length === 1;
      if (!back) await sleep(50);
    }
    expect(back).toBe(true);
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    expect(await lab.canConnect('out', gw, PORT)).toBe(false);
    expect(restored.length).toBeGreaterThan(0);
    expect(log.lines.some((l) => l.event === 'nft_restored')).toBe(true);
    // The restored element keeps its remaining time (not a fresh 60 s, not permanent).
    const els = await elementsOf('granted4');
    expect(els[0]!.expires).toBeGreaterThan(50);
    expect(els[0]!.expires).toBeLessThanOrEqual(60);
  });

  it('nft monitor alone (no periodic check) notices a deleted table', async () => {
    const b = make(guardCfg(), recorder(), { watchdogIntervalMs: 0 });
    await b.init();
    await b.open(grant(lab.host('cl').ip4, PORT, 60));
    await sleep(300); // let the monitor child start listening
    expect((await nft('delete', 'table', 'inet', 'sesame')).code).toBe(0);
    expect(await lab.waitOpen('cl', gw, PORT, 2000)).toBeGreaterThanOrEqual(0);
    expect(await lab.canConnect('out', gw, PORT)).toBe(false);
  });

  it('periodic check alone (no monitor) re-adds grants flushed out of the set', async () => {
    const b = make(guardCfg(), recorder(), { monitor: false, watchdogIntervalMs: 300 });
    await b.init();
    await b.open(grant(lab.host('cl').ip4, PORT, 60));
    expect((await nft('flush', 'set', 'inet', 'sesame', 'granted4')).code).toBe(0);
    expect(await lab.waitOpen('cl', gw, PORT, 2000)).toBeGreaterThanOrEqual(0);
    expect(await elementsOf('granted4')).toHaveLength(1);
    // An expired grant is not brought back.
    await b.open(grant(lab.host('cl').ip4, PORT, 1));
    await sleep(1500);
    expect(await elementsOf('granted4')).toEqual([]);
  });

  it('rejects bad grants with a clear message and never touches the table', async () => {
    const b = make(guardCfg());
    await b.init();
    await expect(b.open(grant('198.51.100.2 } ; flush ruleset ; add element inet sesame granted4 { 198.51.100.3', PORT, 60))).rejects.toThrow(/not an IPv4 or IPv6 address/);
    await expect(b.open({ ...grant('198.51.100.2', PORT, 60), family: 6 })).rejects.toThrow(/not IPv6/);
    await expect(b.open(grant('198.51.100.2', 70000, 60))).rejects.toThrow(/port/);
    expect(await elementsOf('granted4')).toEqual([]);
  });

  it('sets mode: adds timed elements to the operator table and nothing else', async () => {
    const cfg: NftablesConfig = { kind: 'nftables', mode: 'sets', table: 'sesame', guardPorts: [], sets: { family: 'inet', table: 'filter', set4: 'sesame4', set6: 'sesame6' } };
    const snippet = operatorSnippet(cfg).replace('# ... the rest of your input policy', `tcp dport ${PORT} drop\n\t\taccept`);
    expect((await lab.exec('gw', 'nft', ['-f', '-'], { input: snippet })).code).toBe(0);
    const before = (await nft('list', 'ruleset')).stdout;
    const b = make(cfg);
    await b.init();
    expect(await lab.canConnect('cl', gw, PORT)).toBe(false);
    await b.open(grant(lab.host('cl').ip4, PORT, 60));
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true);
    expect(await lab.canConnect('out', gw, PORT)).toBe(false);
    expect((await nft('list', 'tables')).stdout.trim()).toBe('table inet filter');
    await expect(b.open(grant(lab.host('cl').ip4, 22, 60, { nat: { host: '198.51.100.130', port: 22, local: false } }))).rejects.toThrow(/sets mode cannot do NAT/);
    // The operator's firewall reloads its table (fw4 reload, nft -f ruleset): sesame re-adds the grant.
    expect((await nft('delete', 'table', 'inet', 'filter')).code).toBe(0);
    expect((await lab.exec('gw', 'nft', ['-f', '-'], { input: snippet })).code).toBe(0);
    expect(await lab.waitOpen('cl', gw, PORT, 2000)).toBeGreaterThanOrEqual(0);
    expect(await lab.canConnect('out', gw, PORT)).toBe(false);
    await b.shutdown();
    expect(await lab.canConnect('cl', gw, PORT)).toBe(true); // element stays, the kernel expires it
    await nft('flush', 'set', 'inet', 'filter', 'sesame4');
    expect((await nft('list', 'ruleset')).stdout).toBe(before);
  });

  it('sets mode: init explains a missing or mistyped set', async () => {
    const cfg: NftablesConfig = { kind: 'nftables', mode: 'sets', table: 'sesame', guardPorts: [], sets: { family: 'inet', table: 'filter', set4: 'sesame4', set6: 'sesame6' } };
    await expect(make(cfg).init()).rejects.toThrow(/set "sesame4" not found in table inet filter/);
    await lab.exec('gw', 'nft', ['-f', '-'], { input: 'table inet filter {\n set sesame4 { type ipv4_addr; flags timeout; }\n set sesame6 { type ipv6_addr . inet_proto . inet_service; flags timeout; }\n}\n' });
    await expect(make(cfg).init()).rejects.toThrow(/must be "type ipv4_addr \. inet_proto \. inet_service; flags timeout;"/);
  });
});

describeWith('nftables backend NAT in a namespace (real kernel)', ['netns', 'nft'], () => {
  // gw: 198.51.100.1 on the bridge, 198.51.100.129/25 on a private link to srv.
  // srv: 198.51.100.130/25 only on that link, its service on tcp/22.
  let lab: Lab;
  const SRV = SRV_BEHIND;
  const backends: NftablesBackend[] = [];
  const make = (opts: NftablesOptions = {}): NftablesBackend => {
    const b = createNftablesBackend(guardCfg([PORT]), recorder(), { netns: lab.host('gw').ns, ...opts });
    backends.push(b);
    return b;
  };
  const run = (host: string, cmd: string, ...args: string[]) => mustRun(lab, host, cmd, ...args);

  beforeAll(async () => {
    lab = await natLab();
    // The outsider knows the way to the internal network (it could route through gw).
    await run('out', 'ip', 'route', 'add', '198.51.100.128/25', 'via', '198.51.100.1');
    lab.startTcpService('gw', PORT);
    await lab.waitListening('gw', 'tcp', PORT);
  });
  afterEach(async () => {
    for (const b of backends.splice(0)) await b.shutdown();
    await lab.exec('gw', 'nft', ['flush', 'ruleset']);
  });
  afterAll(async () => { await lab?.destroy(); });

  it('DNAT: the granted client reaches the internal host through gw:2200; others do not', async () => {
    await run('srv', 'ip', 'route', 'replace', 'default', 'via', '198.51.100.129');
    try {
      const b = make();
      await b.init();
      expect(await lab.canConnect('cl', '198.51.100.1', 2200)).toBe(false);
      await b.open(grant(lab.host('cl').ip4, 2200, 60, { nat: { host: SRV, port: 22, local: false } }));
      expect(await lab.canConnect('cl', '198.51.100.1', 2200)).toBe(true);
      expect(await lab.canConnect('out', '198.51.100.1', 2200)).toBe(false);
      // Forward guard: a NAT target is not reachable by routing around the DNAT.
      expect(await lab.canConnect('out', SRV, 22)).toBe(false);
      const listed = await b.list();
      expect(listed).toHaveLength(1);
      expect(listed[0]!.nat).toMatchObject({ host: SRV, port: 22, local: false });
      // Survives a flush like plain grants.
      await lab.exec('gw', 'nft', ['flush', 'ruleset']);
      expect(await lab.waitOpen('cl', '198.51.100.1', 2200, 2000)).toBeGreaterThanOrEqual(0);
      expect(await lab.canConnect('out', SRV, 22)).toBe(false);
      await b.close(listed[0]!);
      expect(await lab.canConnect('cl', '198.51.100.1', 2200)).toBe(false);
    } finally {
      await run('srv', 'ip', 'route', 'del', 'default');
    }
  });

  it('masquerade: works although the internal host has no route back to the client', async () => {
    const b = make();
    await b.init();
    const nat = { host: SRV, port: 22, local: false };
    await b.open(grant(lab.host('cl').ip4, 2201, 60, { nat }));
    expect(await lab.canConnect('cl', '198.51.100.1', 2201)).toBe(false); // no way back without SNAT
    await b.open(grant(lab.host('cl').ip4, 2201, 60, { nat: { ...nat, masquerade: true } as Grant['nat'] }));
    expect(await lab.canConnect('cl', '198.51.100.1', 2201)).toBe(true);
    expect(await lab.canConnect('out', '198.51.100.1', 2201)).toBe(false);
  });

  it('local NAT: the external port is redirected to the guarded local service for the granted source only', async () => {
    const b = make();
    await b.init();
    expect(await lab.canConnect('cl', '198.51.100.1', PORT)).toBe(false);
    await b.open(grant(lab.host('cl').ip4, 55000, 60, { nat: { host: '', port: PORT, local: true } }));
    expect(await lab.canConnect('cl', '198.51.100.1', 55000)).toBe(true);
    expect(await lab.canConnect('out', '198.51.100.1', 55000)).toBe(false);
    expect(await lab.canConnect('out', '198.51.100.1', PORT)).toBe(false);
    const listed = await b.list();
    expect(listed).toHaveLength(1);
    expect(listed[0]!.nat).toMatchObject({ port: PORT, local: true });
    expect(listed[0]!.port).toBe(55000);
  });
});
