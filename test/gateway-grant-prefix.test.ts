// grant_prefix (issue 11, deliverable 4; docs/grant-prefix.md): a rule that
// grants the allowed address's network instead of the address. A real
// `sesame serve` (nftables guard, privilege separation) in a namespace lab:
// a knock from 198.51.100.2 under `grant_prefix: { ipv4: 30, ipv6: 126 }`
// opens the port for .3 (same /30) but not for .5, over IPv4 and IPv6, the
// kernel's interval set holds `network/len . proto . port` with a timeout and
// expires it; a rule without grant_prefix still grants one address. Backends
// that cannot hold prefixes are refused in one line (config and start).
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { events, nftSetElements, scratchPath, SERVICE_PORT, SESAME_BIN, SPA_PORT, startSesame, waitForEvents, type RunningDaemon } from './harness/daemon.js';
import { HMAC_B64, KEY_B64 } from './harness/fwknop.js';
import { Lab, sleep } from './harness/netns.js';
import { describeWith } from './harness/requirements.js';
import { parseSesameYaml } from '../src/config/sesame-yaml.js';
import { applyGrantPrefix, grantPrefixProblem, networkOf } from '../src/gateway/grant-prefix.js';
import { loadRequestSchema, validateRequest, policyFromConfig } from '../src/gateway/privsep/validate.js';

await loadRequestSchema();

const GW4 = '198.51.100.1';
const GW6 = '2001:db8::1';

const yaml = (state: string, extra: string[] = [], backend = 'backend: { kind: nftables, mode: guard }'): string => [
  'listen: ["0.0.0.0:62201", "[::]:62201"]',
  `state_dir: ${state}`,
  backend,
  'rules:',
  '  - name: phone',
  '    source: [198.51.100.2, "2001:db8::2"]',
  `    key_base64: ${KEY_B64}`,
  `    hmac_key_base64: ${HMAC_B64}`,
  `    open_ports: [tcp/${SERVICE_PORT}]`,
  '    access_timeout: 4',
  '    grant_prefix: { ipv4: 30, ipv6: 126 }',
  '  - name: laptop',
  '    source: [198.51.100.6]',
  `    key_base64: ${KEY_B64}`,
  `    hmac_key_base64: ${HMAC_B64}`,
  `    open_ports: [tcp/${SERVICE_PORT}]`,
  '    access_timeout: 30',
  ...extra,
  '',
].join('\n');

describe('grant_prefix: config and pure parts', () => {
  it('widens a grant to the network, v4 and v6; a full-length prefix is one address', () => {
    expect(networkOf('198.51.100.77', 4, 24)).toBe('198.51.100.0');
    expect(networkOf('2001:db8::1234:5678', 6, 64)).toBe('2001:db8::');
    const cfg = parseSesameYaml(yaml('/tmp/x'), 'sesame.yaml');
    const g = { address: '198.51.100.2', family: 4 as const, proto: 'tcp' as const, port: 1, expiresAt: 0, timeoutSec: 1, clientTimeoutSec: 0, rule: 'phone' };
    expect(applyGrantPrefix([g], cfg.rules[0]!)[0]).toMatchObject({ address: '198.51.100.0', prefix: 30 });
    expect(applyGrantPrefix([{ ...g, address: '2001:db8::2', family: 6 }], cfg.rules[0]!)[0]).toMatchObject({ address: '2001:db8::', prefix: 126 });
    expect(applyGrantPrefix([g], cfg.rules[1]!)[0]).toEqual(g);
    expect(applyGrantPrefix([g], { ...cfg.rules[0]!, grantPrefix: { ipv4: 32 } })[0]).toEqual(g);
  });

  it('backends that grant single addresses are refused in one line, in the config and at start', () => {
    const fail = (text: string) => { try { parseSesameYaml(text, 'sesame.yaml'); } catch (e) { return (e as Error).message; } return 'no error'; };
    const msg = fail(yaml('/tmp/x', [], 'backend: { kind: iptables }'));
    expect(msg).toMatch(/^sesame\.yaml:\d+: rules\[0\]\.grant_prefix: rule phone: grant_prefix needs the nftables backend in guard mode/);
    expect(msg).not.toMatch(/\n/);
    expect(fail(yaml('/tmp/x', [], 'backend: { kind: log }'))).toMatch(/grant_prefix needs the nftables backend/);
    expect(fail(yaml('/tmp/x').replace('    grant_prefix: { ipv4: 30, ipv6: 126 }', '    grant_prefix: { ipv4: 33 }'))).toMatch(/33 is out of range/);
    const cfg = parseSesameYaml(yaml('/tmp/x'), 'sesame.yaml');
    // `--backend iptables` overrides the file's backend after parsing: the start check catches it.
    expect(grantPrefixProblem({ ...cfg, backend: { kind: 'iptables', chain: 'S', jumpPosition: 1, iptables: 'iptables', ip6tables: 'ip6tables' } })).toMatch(/needs the nftables backend in guard mode/);
    expect(grantPrefixProblem({ ...cfg, rules: [{ ...cfg.rules[0]!, nat: { ...cfg.rules[0]!.nat, forwarding: true } }] })).toMatch(/cannot be combined with NAT/);
    expect(grantPrefixProblem(cfg)).toBeUndefined();
  });

  it('the monitor refuses prefix grants no rule allows, and non-network addresses', () => {
    const cfg = parseSesameYaml(yaml('/tmp/x'), 'sesame.yaml');
    const policy = policyFromConfig(cfg);
    const now = Date.now();
    const grant = (address: string, prefix: number, family: 4 | 6 = 4) => ({ t: 'req', id: 1, op: 'open', backend: 'main',
      grant: { address, family, proto: 'tcp', port: SERVICE_PORT, expiresAt: now + 4000, timeoutSec: 4, clientTimeoutSec: 0, rule: 'phone', prefix } });
    expect(validateRequest(grant('198.51.100.0', 30), policy, now).ok).toBe(true);
    expect(validateRequest(grant('2001:db8::', 126, 6), policy, now).ok).toBe(true);
    expect(validateRequest(grant('198.51.100.0', 16), policy, now)).toMatchObject({ ok: false, reason: 'prefix_not_allowed' });
    expect(validateRequest(grant('198.51.100.2', 30), policy, now)).toMatchObject({ ok: false, reason: 'malformed' });
    const none = policyFromConfig({ ...cfg, rules: cfg.rules.slice(1) });
    expect(validateRequest(grant('198.51.100.0', 30), none, now)).toMatchObject({ ok: false, reason: 'prefix_not_allowed' });
  });
});

describeWith('grant_prefix: the nftables guard opens the network, not only the address', ['netns', 'nft'], () => {
  let lab: Lab;
  let daemon: RunningDaemon;
  const tmp = scratchPath('sesame-prefix-');

  const knock = async (host: string, dst: string, timeout: string[] = []): Promise<void> => {
    const r = await lab.exec(host, process.execPath, [SESAME_BIN, 'knock', '-A', `tcp/${SERVICE_PORT}`, '-s', '-D', dst, '-p', String(SPA_PORT), ...timeout,
      '--key-base64-rijndael', KEY_B64, '--key-base64-hmac', HMAC_B64, '--no-rc-file']);
    if (r.code !== 0) throw new Error(`knock failed: ${r.stderr}`);
  };

  beforeAll(async () => {
    mkdirSync(tmp, { mode: 0o700 });
    lab = await Lab.create([{ name: 'gw', ip4: 1 }, { name: 'cl', ip4: 2 }, { name: 'nb', ip4: 3 }, { name: 'far', ip4: 5 }, { name: 'lap', ip4: 6 }]);
    lab.startTcpService('gw', SERVICE_PORT);
    await lab.waitListening('gw', 'tcp', SERVICE_PORT);
    writeFileSync(path.join(tmp, 'sesame.yaml'), yaml(path.join(tmp, 'state')), { mode: 0o600 });
    daemon = startSesame(lab, 'gw', ['serve', '-c', path.join(tmp, 'sesame.yaml'), '--log-format', 'json']);
    await waitForEvents(daemon, 'ready', 1, 20_000);
  });

  afterAll(async () => {
    if (daemon) await lab.stop(daemon.child);
    await lab?.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('IPv4: a knock from .2 opens the /30 (.3 too), not .5; the interval element is timed and expires', async () => {
    for (const h of ['cl', 'nb', 'far']) expect(await lab.canConnect(h, GW4, SERVICE_PORT, 300)).toBe(false);
    await knock('cl', GW4);
    const g = await waitForEvents(daemon, 'grant', 1, 5000);
    expect(g[0]).toMatchObject({ src: '198.51.100.2', allow: '198.51.100.2', prefix: '198.51.100.0/30' });
    expect(await lab.waitOpen('cl', GW4, SERVICE_PORT, 2000)).toBeGreaterThanOrEqual(0);
    expect(await lab.canConnect('nb', GW4, SERVICE_PORT, 1000)).toBe(true);
    expect(await lab.canConnect('far', GW4, SERVICE_PORT, 300)).toBe(false);
    const elems = await nftSetElements(lab, 'gw', 'granted4_net');
    expect(elems).toEqual([expect.objectContaining({ key: `198.51.100.0/30 . tcp . ${SERVICE_PORT}` })]);
    expect(elems[0]!.expiresSec).toBeLessThanOrEqual(4);
    expect(await nftSetElements(lab, 'gw', 'granted4')).toEqual([]);
    // The kernel expires it (access_timeout 4 s).
    await sleep(5000);
    expect(await nftSetElements(lab, 'gw', 'granted4_net')).toEqual([]);
    expect(await lab.canConnect('nb', GW4, SERVICE_PORT, 300)).toBe(false);
  });

  it('IPv6: a knock from ::2 opens ::/126 (::3 too), not ::5', async () => {
    await knock('cl', GW6, ['-f', '60']);
    await waitForEvents(daemon, 'grant', 2, 5000);
    expect(events(daemon, 'grant').at(-1)).toMatchObject({ src: '2001:db8::2', prefix: '2001:db8::/126' });
    expect(await lab.waitOpen('cl', GW6, SERVICE_PORT, 2000)).toBeGreaterThanOrEqual(0);
    expect(await lab.canConnect('nb', GW6, SERVICE_PORT, 1000)).toBe(true);
    expect(await lab.canConnect('far', GW6, SERVICE_PORT, 300)).toBe(false);
    expect(await nftSetElements(lab, 'gw', 'granted6_net')).toEqual([expect.objectContaining({ key: `2001:db8::/126 . tcp . ${SERVICE_PORT}` })]);
  });

  it('a rule without grant_prefix still grants one address', async () => {
    await knock('lap', GW4);
    await waitForEvents(daemon, 'grant', 3, 5000);
    expect(events(daemon, 'grant').at(-1)!.prefix).toBeUndefined();
    expect(await lab.waitOpen('lap', GW4, SERVICE_PORT, 2000)).toBeGreaterThanOrEqual(0);
    expect(await nftSetElements(lab, 'gw', 'granted4')).toEqual([expect.objectContaining({ key: `198.51.100.6 . tcp . ${SERVICE_PORT}` })]);
    expect(await lab.canConnect('far', GW4, SERVICE_PORT, 300)).toBe(false);
  });

  it('a restart keeps the live prefix grant (journal and kernel listing agree): ::3 still gets in, nothing opened twice', async () => {
    await lab.stop(daemon.child);
    daemon = startSesame(lab, 'gw', ['serve', '-c', path.join(tmp, 'sesame.yaml'), '--log-format', 'json']);
    await waitForEvents(daemon, 'ready', 1, 20_000);
    const restored = await waitForEvents(daemon, 'grants_restored', 1, 5000);
    // The v6 prefix grant and the laptop's; adopted 0: the kernel's interval element read back as the journal's grant.
    expect(restored[0]).toMatchObject({ restored: 2, adopted: 0 });
    expect(await nftSetElements(lab, 'gw', 'granted6_net')).toEqual([expect.objectContaining({ key: `2001:db8::/126 . tcp . ${SERVICE_PORT}` })]);
    expect(await lab.canConnect('nb', GW6, SERVICE_PORT, 1000)).toBe(true);
    expect(await lab.canConnect('far', GW6, SERVICE_PORT, 300)).toBe(false);
    expect(daemon.logText()).not.toMatch(/grant_failed|nft_watchdog_error/);
  });
});
