// `sesame routeros setup-script` / `check`: the exact script commands, and the
// check against the RouterOS double before and after the pieces exist.
// Spec: /work/shared/docs/routeros.md 2.1, 4.1-4.2.
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { DEFAULT_CLIENT_TIMEOUTS, type RouterosClient } from '../src/backends/routeros/client.js';
import { createRouterosClient } from '../src/backends/routeros/factory.js';
import { buildSetupPlan, checkRouter, formatCheckReport, parseServiceSpec, pieceCommand, renderSetupScript, type SetupPlan } from '../src/backends/routeros/setup.js';
import { Secret } from '../src/backends/routeros/target.js';
import { registerRouteros } from '../src/cli/routeros.js';
import { RouterosDouble, SESAME_PASSWORD, startRouterosDouble } from './harness/routeros-double.js';

const quiet = { info() {}, warn() {}, error() {} };
const dir = mkdtempSync(join(tmpdir(), 'sesame-ros-setup-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function commands(script: string): string[] {
  return script.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
}

const SPA_NAT = '/ip firewall nat add chain=dstnat action=dst-nat protocol=udp dst-port=62201 in-interface=ether1 to-addresses=192.168.88.2 to-ports=62201 comment="sesame:spa"';
const placed = (menu: string, chain: string, props: string): string =>
  `:if ([:len [${menu} find where chain=${chain} action=drop]] > 0) do={ ${menu} add ${props} place-before=[:pick [${menu} find where chain=${chain} action=drop] 0] } else={ ${menu} add ${props} }`;

describe('setup-script', () => {
  it('emits the exact commands for a router service and a NATed one', () => {
    const plan = buildSetupPlan({
      sesameHost: '192.168.88.2',
      wanInterface: 'ether1',
      services: [parseServiceSpec('tcp/22'), parseServiceSpec('tcp/2222@192.168.88.10:22')],
      listTemplate: 'FWKNOP_{protonum}_{port}',
    });
    expect(commands(renderSetupScript(plan))).toEqual([
      SPA_NAT,
      placed('/ip firewall filter', 'forward', 'chain=forward action=accept protocol=udp dst-address=192.168.88.2 dst-port=62201 in-interface=ether1 comment="sesame:spa"'),
      placed('/ip firewall filter', 'input', 'chain=input action=accept protocol=tcp dst-port=22 in-interface=ether1 src-address-list=FWKNOP_6_22 comment="sesame:tcp/22"'),
      '/ip firewall nat add chain=dstnat action=dst-nat protocol=tcp dst-port=2222 in-interface=ether1 src-address-list=FWKNOP_6_2222 to-addresses=192.168.88.10 to-ports=22 comment="sesame:tcp/2222->192.168.88.10:22"',
      placed(
        '/ip firewall filter',
        'forward',
        'chain=forward action=accept protocol=tcp dst-address=192.168.88.10 dst-port=22 in-interface=ether1 src-address-list=FWKNOP_6_2222 connection-nat-state=dstnat comment="sesame:tcp/2222->192.168.88.10:22"',
      ),
      '/user group add name=sesame policy=api,read,write comment="sesame:api"',
      '/user add name=sesame group=sesame address=192.168.88.2/32 disabled=yes comment="sesame:api"',
      '/ip service set api-ssl disabled=no address=192.168.88.2/32',
      '/certificate add name=sesame-api common-name=sesame-api days-valid=3650 key-usage=digital-signature,key-encipherment,tls-server',
      '/certificate sign sesame-api',
      '/ip service set api-ssl certificate=sesame-api',
    ]);
  });

  it('REST transport, interface list, custom port, IPv6 input rule and an embedded password', () => {
    const plan = buildSetupPlan({
      sesameHost: '192.168.88.2',
      wanInterfaceList: 'WAN',
      services: [parseServiceSpec('udp/51820')],
      spaPort: 40000,
      transport: 'rest',
      ipv6: true,
      password: new Secret('pa"ss$word'),
    });
    const script = renderSetupScript(plan);
    const cmds = commands(script);
    expect(cmds[0]).toBe('/ip firewall nat add chain=dstnat action=dst-nat protocol=udp dst-port=40000 in-interface-list=WAN to-addresses=192.168.88.2 to-ports=40000 comment="sesame:spa"');
    expect(cmds).toContain(placed('/ipv6 firewall filter', 'input', 'chain=input action=accept protocol=udp dst-port=51820 in-interface-list=WAN src-address-list=sesame_udp_51820 comment="sesame:udp/51820"'));
    expect(cmds).toContain('/user group add name=sesame policy=rest-api,read,write comment="sesame:api"');
    expect(cmds).toContain('/user add name=sesame group=sesame address=192.168.88.2/32 password="pa\\"ss\\$word" comment="sesame:api"');
    expect(cmds).toContain('/ip service set www-ssl disabled=no address=192.168.88.2/32');
    expect(script).toContain('# This script contains the API password: delete it after the import.');
  });

  it('refuses bad options with a line that names the fix', () => {
    expect(() => parseServiceSpec('ssh')).toThrow(/PROTO\/PORT@HOST\[:PORT\]/);
    expect(() => parseServiceSpec('tcp/70000')).toThrow(/service "tcp\/70000"/);
    expect(() => buildSetupPlan({ sesameHost: 'pi.lan', services: [parseServiceSpec('tcp/22')] })).toThrow(/IPv4 address of the machine running sesame serve/);
    expect(() => buildSetupPlan({ sesameHost: '192.168.88.2', services: [] })).toThrow(/at least one --service/);
    expect(() => buildSetupPlan({ sesameHost: '192.168.88.2', wanInterface: 'ether1; /system reset', services: [parseServiceSpec('tcp/22')] })).toThrow(/letters, digits/);
  });

  it('the CLI generates a 0600 password file and writes the script 0600', async () => {
    const program = new Command('sesame').exitOverride();
    registerRouteros(program);
    const pass = join(dir, 'router.pass');
    const out = join(dir, 'sesame.rsc');
    const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      await program.parseAsync(['routeros', 'setup-script', '--sesame-host', '192.168.88.2', '--service', 'tcp/22', '--password-file', pass, '-o', out], { from: 'user' });
    } finally {
      err.mockRestore();
    }
    expect(statSync(pass).mode & 0o777).toBe(0o600);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    const pw = readFileSync(pass, 'utf8').trim();
    expect(pw).toMatch(/^[A-Za-z0-9_-]{24}$/);
    expect(readFileSync(out, 'utf8')).toContain(`/user add name=sesame group=sesame address=192.168.88.2/32 password=${pw} comment="sesame:api"`);
  });
});

describe('check against the double', () => {
  let d: RouterosDouble;
  let client: RouterosClient;
  let plan: SetupPlan;
  const admin = { user: 'admin', policies: new Set(['read', 'write', 'policy']) };
  const run = (command: string, attrs: Record<string, string>): string => {
    let ret = '';
    d.model.execute(admin, { command, attrs: new Map(Object.entries(attrs)), queries: [] }, { re() {}, trap(t) { throw new Error(t.message); }, empty() {}, done(a) { ret = a?.['ret'] ?? ''; } });
    return ret;
  };

  beforeAll(async () => {
    d = await startRouterosDouble();
    d.model.setByName('/user/group', 'sesame', { policy: 'api,read,write' });
    // A defconf-like input chain.
    run('/ip/firewall/filter/add', { chain: 'input', action: 'accept', 'connection-state': 'established,related,untracked', comment: 'defconf: accept established,related,untracked' });
    run('/ip/firewall/filter/add', { chain: 'input', action: 'drop', 'connection-state': 'invalid', comment: 'defconf: drop invalid' });
    run('/ip/firewall/filter/add', { chain: 'input', action: 'drop', 'in-interface-list': '!LAN', comment: 'defconf: drop all not coming from LAN' });
    client = createRouterosClient({ url: d.url(), password: { value: SESAME_PASSWORD } }, { log: quiet, timeouts: DEFAULT_CLIENT_TIMEOUTS });
    plan = buildSetupPlan({ sesameHost: '192.168.88.2', services: [parseServiceSpec('tcp/22'), parseServiceSpec('tcp/2222@192.168.88.10:22')], transport: 'api' });
  });
  afterAll(async () => {
    await client.close();
    await d.close();
  });

  it('reports the missing pieces with the command that adds each', async () => {
    const r = await checkRouter(client, plan);
    expect(r.version).toMatch(/^7\.18/);
    const status = Object.fromEntries(r.items.map((i) => [i.id, i.status]));
    expect(status).toEqual({
      'spa-dstnat': 'missing',
      'spa-forward': 'missing',
      'input-tcp/22': 'missing',
      'dstnat-tcp/2222': 'missing',
      'forward-tcp/2222': 'missing',
      'api-group': 'ok',
      'api-user': 'ok',
      'api-service': 'warning',
      write: 'ok',
    });
    expect(r.ok).toBe(false);
    const byId = new Map(r.items.map((i) => [i.id, i]));
    expect(byId.get('spa-dstnat')!.fix).toBe(SPA_NAT);
    expect(byId.get('input-tcp/22')!.fix).toBe(pieceCommand(plan.pieces.find((p) => p.id === 'input-tcp/22')!));
    const text = formatCheckReport(r);
    expect(text).toContain(`router api://sesame@127.0.0.1:${d.port} (RouterOS 7.18.2 (stable))`);
    expect(text).toContain(`  MISSING   SPA packets udp/62201 from the WAN go to sesame at 192.168.88.2\n            fix: ${SPA_NAT}`);
    expect(text).toContain('5 of 9 pieces need attention');
    expect(d.model.addressList('sesame_check')).toEqual([]); // the write test cleaned up
  });

  it('after adding the pieces (accept rules above the drop rules) everything is ok; a rule below a drop is misplaced', async () => {
    for (const p of plan.pieces) {
      if (p.setByName || p.id.startsWith('api-')) continue;
      const menu = `/${p.menu.slice(1).replace(/ /g, '/')}`;
      const attrs: Record<string, string> = Object.fromEntries(p.props);
      if (p.placeBeforeDropIn) {
        const drop = d.model.rows(menu).find((r) => r['chain'] === p.placeBeforeDropIn && r['action'] === 'drop');
        if (drop) attrs['place-before'] = drop['.id']!;
      }
      run(`${menu}/add`, attrs);
    }
    const r = await checkRouter(client, plan);
    expect(r.items.filter((i) => i.status !== 'ok').map((i) => i.id)).toEqual(['api-service']);
    expect(r.ok).toBe(true);
    expect(formatCheckReport(r)).toContain('all pieces present');

    const late = buildSetupPlan({ sesameHost: '192.168.88.2', services: [parseServiceSpec('tcp/8291')], transport: 'api' });
    const piece = late.pieces.find((p) => p.id === 'input-tcp/8291')!;
    const id = run('/ip/firewall/filter/add', Object.fromEntries(piece.props));
    const r2 = await checkRouter(client, late, { writeTest: false });
    const item = r2.items.find((i) => i.id === 'input-tcp/8291')!;
    expect(item.status).toBe('misplaced');
    expect(item.detail).toMatch(new RegExp(`rule \\${id} comes after drop rule \\*[0-9A-F]+ \\("defconf: drop all not coming from LAN"\\), so it never matches`));
    expect(item.fix).toMatch(new RegExp(`^/ip firewall filter move \\${id} destination=\\*[0-9A-F]+$`));
  });

  it('a group lacking "write" is reported with the policy fix, and the write test fails', async () => {
    d.model.setByName('/user/group', 'sesame', { policy: 'api,read' });
    const fresh = createRouterosClient({ url: d.url(), password: { value: SESAME_PASSWORD } }, { log: quiet, timeouts: DEFAULT_CLIENT_TIMEOUTS });
    try {
      const r = await checkRouter(fresh, plan);
      const group = r.items.find((i) => i.id === 'api-group')!;
      expect(group).toMatchObject({ status: 'missing', detail: 'group lacks write', fix: '/user group set sesame policy=api,read,write' });
      const write = r.items.find((i) => i.id === 'write')!;
      expect(write.status).toBe('error');
      expect(write.detail).toMatch(/not enough permissions \(9\)/);
      expect(write.fix).toBe('/user group set sesame policy=api,read,write');
    } finally {
      await fresh.close();
      d.model.setByName('/user/group', 'sesame', { policy: 'api,read,write' });
    }
  });

  it('the CLI check exits 1 and prints the report; a wrong password is one error item', async () => {
    const pass = join(dir, 'check.pass');
    writeFileSync(pass, `${SESAME_PASSWORD}\n`, { mode: 0o600 });
    const program = new Command('sesame').exitOverride();
    registerRouteros(program);
    const chunks: string[] = [];
    const out = vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => {
      chunks.push(String(c));
      return true;
    });
    const before = process.exitCode;
    try {
      await program.parseAsync(
        ['routeros', 'check', '--routeros', d.url(), '--routeros-password-file', pass, '--sesame-host', '192.168.88.2', '--service', 'tcp/443', '--no-write-test'],
        { from: 'user' },
      );
      expect(process.exitCode).toBe(1);
    } finally {
      out.mockRestore();
      process.exitCode = before;
    }
    const text = chunks.join('');
    expect(text).toMatch(/MISSING {3}router service tcp\/443 accepts addresses in sesame_tcp_443\n {12}fix: :if /);
    expect(text).not.toContain(SESAME_PASSWORD);

    const bad = createRouterosClient({ url: d.url(), password: { value: 'bad-pw-xyz' } }, { log: quiet, timeouts: DEFAULT_CLIENT_TIMEOUTS });
    const r = await checkRouter(bad, plan);
    await bad.close();
    expect(r.items).toHaveLength(1);
    expect(r.items[0]).toMatchObject({ id: 'login', status: 'error' });
    expect(r.items[0]!.detail).toMatch(/invalid user name or password \(6\)/);
  });
});
