import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { chmodSync, readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { loadFwknopConfig } from '../src/config/fwknop.js';
import { parseSesameYaml } from '../src/config/sesame-yaml.js';
import { gatewayConfigToYaml } from '../src/config/to-yaml.js';
import { configCheck, configConvert } from '../src/config/commands.js';
import { registerConfig } from '../src/cli/config.js';
import { formatAddressRange, ipText } from '../src/config/address.js';
import { ConfigError, type AccessRule, type AddressRange, type BackendConfig, type GatewayConfig, type NatPolicy } from '../src/config/model.js';
import { DIGEST_TYPES, ENCRYPTION_MODES, type PortSpec } from '../src/spa/types.js';
import { defaultGuardPorts } from '../src/config/defaults.js';
import { tmpFiles, type TmpFiles } from './fixtures/config/tmpfiles.js';

const FIX = (f: string) => fileURLToPath(new URL(`./fixtures/config/${f}`, import.meta.url));

let t: TmpFiles | undefined;
afterEach(() => {
  t?.cleanup();
  t = undefined;
});

/** The fixtures copied with mode 0600, as a real installation has them. */
function fixturePair(): { conf: string; access: string } {
  t = tmpFiles({ 'fwknopd.conf': readFileSync(FIX('fwknopd.conf')), 'access.conf': readFileSync(FIX('access.conf')) });
  return { conf: t.p('fwknopd.conf'), access: t.p('access.conf') };
}

const comparable = (c: GatewayConfig) => ({ ...c, sources: [], warnings: [] });

describe('config convert: fwknop files -> sesame YAML -> the same GatewayConfig', () => {
  it('round-trips the fixture pair (NAT, command cycle, legacy, expiry, IPv6, trailing-blank key)', () => {
    const { conf, access } = fixturePair();
    const cfg = loadFwknopConfig(conf, access);
    expect(cfg.rules).toHaveLength(3);
    expect(cfg.rules[1]!.key.toString()).toBe('pass with blanks   ');
    const yaml = gatewayConfigToYaml(cfg);
    expect(comparable(parseSesameYaml(yaml, 'converted.yaml'))).toEqual(comparable(cfg));
  });

  it('round-trips with another backend and a state dir', () => {
    const { conf, access } = fixturePair();
    for (const backend of ['nftables', 'log', 'iptables'] as const) {
      const cfg = loadFwknopConfig(conf, access, { backend, stateDir: '/srv/sesame' });
      expect(comparable(parseSesameYaml(gatewayConfigToYaml(cfg), 'c.yaml'))).toEqual(comparable(cfg));
    }
  });

  it('configConvert writes the warnings as comments and the result loads', () => {
    const { conf, access } = fixturePair();
    const { yaml, warnings } = configConvert({ fwknopdConf: conf, accessConf: access });
    expect(warnings.some((w) => /stanza #4 .*GPG only/.test(w))).toBe(true);
    expect(yaml).toMatch(/^# sesame configuration converted from /);
    expect(yaml).toContain('# warning: ');
    expect(yaml).toContain('chmod 600');
    const back = parseSesameYaml(yaml, 'c.yaml');
    expect(back.rules.map((r) => r.name)).toEqual(loadFwknopConfig(conf, access).rules.map((r) => r.name));
  });

  it('any GatewayConfig the YAML can express survives the round trip (property)', () => {
    fc.assert(fc.property(gatewayConfigArb(), (cfg) => {
      const yaml = gatewayConfigToYaml(cfg);
      expect(comparable(parseSesameYaml(yaml, 'p.yaml'))).toEqual(comparable(cfg));
    }), { numRuns: 150 });
  });
});

describe('config check / convert commands', () => {
  async function run(args: string[]): Promise<{ out: string; err: string }> {
    let out = '';
    let err = '';
    const program = new Command('sesame').exitOverride();
    registerConfig(program, { out: (s) => { out += s; }, err: (s) => { err += s; } });
    for (const c of program.commands) c.exitOverride();
    await program.parseAsync(args, { from: 'user' });
    return { out, err };
  }

  it('check -c FILE prints ok', async () => {
    chmodSync(FIX('example.yaml'), 0o600); // it holds keys inline: git checks it out 0644, which sesame refuses
    const { out } = await run(['config', 'check', '-c', FIX('example.yaml')]);
    expect(out).toBe('ok: 2 rules, backend nftables, listening on 0.0.0.0:62201, [::]:62201\n');
  });

  it('check with the fwknop pair prints ok and the warnings', async () => {
    const { conf, access } = fixturePair();
    const { out } = await run(['config', 'check', '--fwknopd-conf', conf, '--access-conf', access]);
    const lines = out.trimEnd().split('\n');
    expect(lines[0]).toBe('ok: 3 rules, backend iptables, listening on 0.0.0.0:62201, [::]:62201');
    expect(lines.slice(1).every((l) => l.startsWith('warning: '))).toBe(true);
    expect(lines.some((l) => l.includes('GPG only'))).toBe(true);
    expect(configCheck({ fwknopdConf: conf, accessConf: access, backend: 'nftables' })[0]).toMatch(/backend nftables/);
  });

  it('check of a broken file fails with the one-line error', async () => {
    t = tmpFiles({ 'bad.yaml': 'rules:\n  - source: [any]\n    key: abcdefgh\n    hmac_key: abcdefgh\n' });
    const err = await run(['config', 'check', '-c', t.p('bad.yaml')]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toBe(`${t.p('bad.yaml')}:4: rules[0].hmac_key: the HMAC key must differ from the encryption key`);
  });

  it('check refuses mixed sources and unknown backends as usage errors', () => {
    expect(() => configCheck({ config: 'a.yaml', accessConf: 'b' })).toThrow(/either -c FILE or --fwknopd-conf/);
    expect(() => configCheck({ fwknopdConf: 'x', backend: 'nftable' })).toThrow(/unknown backend .*did you mean "nftables"/);
  });

  it('convert prints YAML (warnings on stderr) or writes a new 0600 file', async () => {
    const { conf, access } = fixturePair();
    const { out, err } = await run(['config', 'convert', '--fwknopd-conf', conf, '--access-conf', access]);
    expect(parseSesameYaml(out, 'x.yaml').rules).toHaveLength(3);
    expect(err).toMatch(/^sesame: warning: /m);
    const target = t!.p('out/sesame.yaml');
    t!.write('out/.keep', '');
    await run(['config', 'convert', '--fwknopd-conf', conf, '--access-conf', access, '-o', target]);
    expect(statSync(target).mode & 0o777).toBe(0o600);
    expect(readFileSync(target, 'utf8')).toBe(out);
    await expect(run(['config', 'convert', '--fwknopd-conf', conf, '--access-conf', access, '-o', target])).rejects.toThrow(/already exists/);
    await run(['config', 'convert', '--fwknopd-conf', conf, '--access-conf', access, '-o', target, '--force']);
  });
});

// ---- arbitraries for the property test ----

const bytes = (min: number, max: number) => fc.uint8Array({ minLength: min, maxLength: max }).map((a) => Buffer.from(a));
const text = fc.string({ minLength: 1, maxLength: 16 }).filter((s) => s.trim() !== '');
/** A command template: its program (first word) is never a $VARIABLE (config check refuses that). */
const command = text.filter((s) => !s.trim().split(/\s+/)[0]!.includes('$'));
const port: fc.Arbitrary<PortSpec> = fc.record({ proto: fc.constantFrom('tcp' as const, 'udp' as const), port: fc.integer({ min: 1, max: 65535 }) });
const portList = fc.uniqueArray(port, { minLength: 1, maxLength: 4, selector: (p) => `${p.proto}/${p.port}` });

const range: fc.Arbitrary<AddressRange[]> = fc.oneof(
  fc.constant<AddressRange[]>([{ family: 4, network: 0n, prefix: 0, text: 'ANY' }, { family: 6, network: 0n, prefix: 0, text: 'ANY' }]),
  fc.tuple(fc.bigInt({ min: 0n, max: (1n << 32n) - 1n }), fc.integer({ min: 1, max: 32 })).map(([v, p]): AddressRange[] => {
    const network = v & (((1n << 32n) - 1n) ^ ((1n << BigInt(32 - p)) - 1n));
    const r: AddressRange = { family: 4, network, prefix: p, text: '' };
    return [{ ...r, text: formatAddressRange(r) }];
  }),
  fc.tuple(fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), fc.integer({ min: 1, max: 128 }))
    .filter(([v]) => v >> 32n !== 0xffffn)
    .map(([v, p]): AddressRange[] => {
      const network = v & (((1n << 128n) - 1n) ^ ((1n << BigInt(128 - p)) - 1n));
      const r: AddressRange = { family: 6, network, prefix: p, text: '' };
      return [{ ...r, text: formatAddressRange(r) }];
    }),
);
const ranges = fc.array(range, { minLength: 1, maxLength: 3 }).map((a) => a.flat());
const ip4 = fc.bigInt({ min: 1n, max: (1n << 32n) - 1n }).map((v) => ipText(4, v));

const nat: fc.Arbitrary<NatPolicy> = fc.record({
  forwarding: fc.boolean(), localNat: fc.boolean(), snat: fc.boolean(), snatAddress: fc.option(ip4, { nil: undefined }),
  forceNat: fc.option(fc.record({ host: ip4, port: fc.integer({ min: 1, max: 65535 }) }), { nil: undefined }),
  forceSnat: fc.option(ip4, { nil: undefined }), forceMasquerade: fc.boolean(), disableDnat: fc.boolean(), forwardAll: fc.boolean(),
}).map((n) => {
  // Keep only combinations the loader accepts.
  const out: NatPolicy = { ...n };
  if (!out.snat) delete out.snatAddress;
  if (!out.forwarding && !out.localNat) delete out.forceNat;
  if (!out.forceNat && !out.forwardAll) { delete out.forceSnat; out.forceMasquerade = false; }
  for (const k of Object.keys(out) as (keyof NatPolicy)[]) if (out[k] === undefined) delete out[k];
  return out;
});

const rule = (i: number): fc.Arbitrary<AccessRule> => fc.record({
  mode: fc.constantFrom(...ENCRYPTION_MODES), key: bytes(8, 32), hmac: fc.option(bytes(8, 128), { nil: undefined }),
  hmacType: fc.constantFrom(...DIGEST_TYPES), sources: ranges, destinations: fc.option(ranges, { nil: undefined }),
  openPorts: fc.option(portList, { nil: undefined }), restrictPorts: fc.oneof(fc.constant([]), portList),
  access: fc.integer({ min: 1, max: 8388608 }), max: fc.integer({ min: 1, max: 8388608 }),
  expires: fc.option(fc.integer({ min: 0, max: 4_000_000_000 }), { nil: undefined }), user: fc.option(text, { nil: undefined }),
  requireSource: fc.boolean(), cmdExec: fc.boolean(),
  cycle: fc.option(fc.record({ open: command, close: fc.option(command, { nil: undefined }), timer: fc.integer({ min: 0, max: 8388608 }) }), { nil: undefined }),
  nat,
}).map((r): AccessRule => {
  const key = r.mode === 'legacy' ? r.key.subarray(0, 16) : r.key;
  const hmacKey = r.hmac && !r.hmac.equals(key) ? r.hmac : undefined;
  const cycle = r.cycle ? { open: r.cycle.open, ...(r.cycle.close !== undefined ? { close: r.cycle.close } : {}), timerSec: r.cycle.close !== undefined ? Math.max(1, r.cycle.timer) : r.cycle.timer } : undefined;
  return {
    name: `rule-${i}`, sources: r.sources, ...(r.destinations ? { destinations: r.destinations } : {}), key, encryptionMode: r.mode,
    ...(hmacKey ? { hmacKey } : {}), hmacType: r.hmacType, ...(r.openPorts ? { openPorts: r.openPorts } : {}), restrictPorts: r.restrictPorts,
    accessTimeoutSec: r.access, maxTimeoutSec: r.max, ...(r.expires !== undefined ? { expiresAtSec: r.expires } : {}),
    ...(r.user !== undefined ? { requireUsername: r.user } : {}), requireSourceAddress: r.requireSource, enableCmdExec: r.cmdExec,
    ...(cycle ? { cmdCycle: cycle } : {}), nat: r.nat,
  };
});

const nftName = fc.stringMatching(/^[A-Za-z][A-Za-z0-9_]{0,10}$/);
const backend: fc.Arbitrary<BackendConfig> = fc.oneof(
  fc.record({ table: nftName, guardPorts: portList }).map((b): BackendConfig => ({ kind: 'nftables', mode: 'guard', ...b })),
  fc.record({ table: nftName, family: fc.constantFrom('inet', 'ip', 'ip6'), st: nftName, s4: nftName, s6: fc.option(nftName, { nil: undefined }), guardPorts: portList })
    .map((b): BackendConfig => ({ kind: 'nftables', mode: 'sets', table: b.table, sets: { family: b.family, table: b.st, set4: b.s4, set6: b.s6 ?? '' }, guardPorts: b.guardPorts })),
  fc.record({ chain: nftName, jumpPosition: fc.integer({ min: 1, max: 100 }) }).map((b): BackendConfig => ({ kind: 'iptables', ...b, iptables: '/usr/sbin/iptables', ip6tables: '/sbin/ip6tables' })),
  fc.record({ open: command, close: fc.option(command, { nil: undefined }), timeoutMs: fc.integer({ min: 1, max: 600000 }) })
    .map((b): BackendConfig => ({ kind: 'command', open: b.open, ...(b.close !== undefined ? { close: b.close } : {}), timeoutMs: b.timeoutMs })),
  fc.constant<BackendConfig>({ kind: 'log' }),
  fc.record({ env: fc.stringMatching(/^[A-Z_][A-Z0-9_]{0,8}$/), insecure: fc.option(fc.boolean(), { nil: undefined }) })
    .map((b): BackendConfig => ({ kind: 'routeros', routers: [{ url: 'api-ssl://sesame@192.168.88.1:8729', password: { env: b.env }, ...(b.insecure !== undefined ? { insecure: b.insecure } : {}) }], listTemplate: 'FWKNOP_{protonum}_{port}' })),
);

const listener = fc.oneof(
  fc.tuple(ip4, fc.integer({ min: 1, max: 65535 })).map(([address, p]) => ({ address, port: p })),
  fc.tuple(fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), fc.integer({ min: 1, max: 65535 })).map(([v, p]) => ({ address: ipText(6, v), port: p })),
);

function gatewayConfigArb(): fc.Arbitrary<GatewayConfig> {
  return fc.record({
    listeners: fc.uniqueArray(listener, { minLength: 1, maxLength: 3, selector: (l) => `${l.address}|${l.port}` }),
    backend,
    rules: fc.integer({ min: 1, max: 3 }).chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => rule(i)))),
    maxPacketAgeSec: fc.integer({ min: 0, max: 100000 }),
    replayProtection: fc.boolean(),
    stateDir: fc.constantFrom('/var/lib/sesame', '/srv/state dir'),
    rateLimit: fc.record({ packetsPerSecond: fc.integer({ min: 1, max: 1_000_000 }), burst: fc.integer({ min: 1, max: 1_000_000 }) }),
    log: fc.record({ format: fc.constantFrom('json' as const, 'text' as const), level: fc.constantFrom('debug' as const, 'info' as const, 'warn' as const, 'error' as const) }),
  }).map((c) => {
    // In sets mode guard ports are not configurable: they are derived from the rules.
    const b = c.backend.kind === 'nftables' && c.backend.mode === 'sets' ? { ...c.backend, guardPorts: defaultGuardPorts(c.rules) } : c.backend;
    return { ...c, backend: b, sources: [], warnings: [] };
  });
}
