import { afterEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { loadSesameYaml, parseSesameYaml } from '../src/config/sesame-yaml.js';
import { ConfigError } from '../src/config/model.js';
import { matchesAny } from '../src/config/address.js';
import { parseDoorsYaml } from '../src/knockd/doors-yaml.js';
import { chmodSync, readFileSync } from 'node:fs';
import { tmpFiles, type TmpFiles } from './fixtures/config/tmpfiles.js';

const EXAMPLE = fileURLToPath(new URL('./fixtures/config/example.yaml', import.meta.url));
const K = randomBytes(32).toString('base64');
const H = randomBytes(64).toString('base64');

let t: TmpFiles | undefined;
afterEach(() => {
  t?.cleanup();
  t = undefined;
});

/** A YAML file with one rule; `rule` lines are indented into the rule. */
function yaml(rule: string[] = [], top: string[] = []): string {
  return [...top, 'rules:', '  - name: r1', '    source: [any]', `    key_base64: ${K}`, `    hmac_key_base64: ${H}`, ...rule.map((l) => `    ${l}`), ''].join('\n');
}

function failure(text: string, dir?: string): ConfigError {
  try {
    parseSesameYaml(text, 'sesame.yaml', dir);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as Error).message.includes('\n'), (e as Error).message).toBe(false);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('sesame YAML: a complete file', () => {
  it('loads every section of the example', () => {
    chmodSync(EXAMPLE, 0o600); // it holds keys inline: git checks it out 0644, which sesame refuses
    const c = loadSesameYaml(EXAMPLE);
    expect(c.listeners).toEqual([{ address: '0.0.0.0', port: 62201 }, { address: '::', port: 62201 }]);
    expect([c.stateDir, c.maxPacketAgeSec, c.replayProtection]).toEqual(['/var/lib/sesame', 90, true]);
    expect(c.rateLimit).toEqual({ packetsPerSecond: 10, burst: 30 });
    expect(c.log).toEqual({ format: 'text', level: 'debug' });
    expect(c.backend).toEqual({ kind: 'nftables', mode: 'guard', table: 'sesame', guardPorts: [{ proto: 'tcp', port: 22 }, { proto: 'tcp', port: 443 }] });
    const [laptop, office] = c.rules;
    expect(laptop).toMatchObject({
      name: 'laptop', hmacType: 'sha512', encryptionMode: 'ctr', restrictPorts: [{ proto: 'tcp', port: 23 }],
      accessTimeoutSec: 45, maxTimeoutSec: 600, requireUsername: 'alice', requireSourceAddress: true,
      expiresAtSec: Date.UTC(2099, 0, 1) / 1000, enableCmdExec: false,
      nat: { forwarding: true, localNat: false, snat: false, forceMasquerade: false, disableDnat: false, forwardAll: false },
    });
    expect(laptop!.key.toString()).toBe('sesame-test-key-0123456789');
    expect(laptop!.openPorts).toEqual([{ proto: 'tcp', port: 22 }, { proto: 'udp', port: 53 }]);
    expect(office!.key.toString()).toBe('correct horse battery staple');
    expect(office!.hmacKey!.toString()).toBe('another passphrase entirely');
    expect(office!.hmacType).toBe('sha256');
    expect(office!.openPorts).toEqual([{ proto: 'tcp', port: 443 }]);
    expect(matchesAny(office!.sources, '2001:db8::7')).toBe(true);
    expect(matchesAny(office!.destinations!, '198.51.100.1')).toBe(true);
    expect(office!.cmdCycle).toEqual({ open: '/usr/local/bin/open $SRC', close: '/usr/local/bin/close $SRC', timerSec: 60 });
    expect(c.warnings).toEqual([]);
    expect(c.sources).toEqual([EXAMPLE]);
  });

  it('leaves doors: to the knock-door reader of the same file', () => {
    expect(parseDoorsYaml(readFileSync(EXAMPLE, 'utf8'), EXAMPLE).doors.map((d) => d.name)).toEqual(['ssh']);
  });

  it('fills the defaults of a minimal file', () => {
    const c = parseSesameYaml(yaml(['open_ports: [udp/1194]']), 'sesame.yaml');
    expect(c.listeners).toEqual([{ address: '0.0.0.0', port: 62201 }, { address: '::', port: 62201 }]);
    expect(c.backend).toEqual({ kind: 'nftables', mode: 'guard', table: 'sesame', guardPorts: [{ proto: 'udp', port: 1194 }] });
    expect([c.maxPacketAgeSec, c.replayProtection, c.stateDir]).toEqual([120, true, '/var/lib/sesame']);
    expect(c.rules[0]).toMatchObject({ encryptionMode: 'cbc', hmacType: 'sha256', accessTimeoutSec: 30, maxTimeoutSec: 300, restrictPorts: [], requireSourceAddress: false });
    expect(c.rules[0]!.openPorts).toEqual([{ proto: 'udp', port: 1194 }]);
    expect(parseSesameYaml(yaml(), 'sesame.yaml').backend).toMatchObject({ guardPorts: [{ proto: 'tcp', port: 22 }] });
  });

  it('reads the other backends', () => {
    const b = (lines: string[]) => parseSesameYaml(yaml([], ['backend:', ...lines.map((l) => `  ${l}`)]), 'sesame.yaml').backend;
    expect(b(['kind: iptables'])).toEqual({ kind: 'iptables', chain: 'SESAME_INPUT', jumpPosition: 1, iptables: '/usr/sbin/iptables', ip6tables: '/usr/sbin/ip6tables' });
    expect(b(['kind: command', 'open: /bin/open $SRC'])).toEqual({ kind: 'command', open: '/bin/open $SRC', timeoutMs: 5000 });
    expect(b(['kind: log'])).toEqual({ kind: 'log' });
    expect(b(['kind: nftables', 'mode: sets', 'sets: { family: inet, table: filter, set4: allowed4 }'])).toEqual({
      kind: 'nftables', mode: 'sets', table: 'sesame', sets: { family: 'inet', table: 'filter', set4: 'allowed4', set6: '' }, guardPorts: [{ proto: 'tcp', port: 22 }],
    });
    expect(b(['kind: routeros', 'routers:', '  - url: api-ssl://sesame@192.168.88.1', '    password_env: ROUTER_PW', `    fingerprint: "${'ab'.repeat(32)}"`])).toEqual({
      kind: 'routeros', routers: [{ url: 'api-ssl://sesame@192.168.88.1', password: { env: 'ROUTER_PW' }, fingerprint: 'ab'.repeat(32) }], listTemplate: 'sesame_{proto}_{port}',
    });
  });

  it('reads expiry dates, times with zones and epoch seconds', () => {
    const exp = (v: string) => parseSesameYaml(yaml([`expires: ${v}`]), 'sesame.yaml').rules[0]!.expiresAtSec;
    expect(exp('2099-01-01')).toBe(Date.UTC(2099, 0, 1) / 1000);
    expect(exp('2099-01-01T12:30:00Z')).toBe(Date.UTC(2099, 0, 1, 12, 30) / 1000);
    expect(exp('2099-01-01T12:30:00+02:00')).toBe(Date.UTC(2099, 0, 1, 10, 30) / 1000);
    expect(exp('4102444800')).toBe(4102444800);
    expect(failure(yaml(['expires: 2099-02-30'])).message).toMatch(/not a real date/);
  });
});

describe('sesame YAML: key files', () => {
  it('reads fwknop key-gen files and bare passphrase files (both must be mode 0600)', () => {
    const key = randomBytes(32);
    const hmac = randomBytes(64);
    t = tmpFiles({ 'keys/laptop.keys': `KEY_BASE64: ${key.toString('base64')}\nHMAC_KEY_BASE64: ${hmac.toString('base64')}\n`, 'pass.txt': 'a passphrase \n' });
    const text = ['rules:', '  - source: [any]', '    key_file: keys/laptop.keys', '    hmac_key_file: keys/laptop.keys', '  - name: two', '    source: [any]', '    key_file: pass.txt', `    hmac_key_base64: ${H}`, ''].join('\n');
    t.write('sesame.yaml', text);
    const c = loadSesameYaml(t.p('sesame.yaml'));
    expect(c.rules[0]!.key.equals(key)).toBe(true);
    expect(c.rules[0]!.hmacKey!.equals(hmac)).toBe(true);
    expect(c.rules[0]!.name).toBe('rules[0]');
    expect(c.rules[1]!.key.toString()).toBe('a passphrase ');
    expect(c.sources).toEqual([t.p('sesame.yaml'), t.p('keys/laptop.keys'), t.p('pass.txt')]);
  });

  it('refuses key files others can read, missing ones, and files without the asked-for line', () => {
    t = tmpFiles({ 'only-hmac.keys': `HMAC_KEY_BASE64: ${H}\n` });
    t.write('open.key', 'secret\n', 0o644);
    const keyFile = (f: string) => ['rules:', '  - source: [any]', `    key_file: ${f}`, `    hmac_key_base64: ${H}`, ''].join('\n');
    const open = failure(keyFile('open.key'), t.dir);
    expect(open.message).toMatch(/^sesame\.yaml:3: rules\[0\]\.key_file: "open\.key" is readable by group\/others \(mode 0644\).*chmod 600/);
    expect(failure(keyFile('missing.key'), t.dir).message).toBe('sesame.yaml:3: rules[0].key_file: cannot read "missing.key": no such file');
    expect(failure(keyFile('only-hmac.keys'), t.dir).message).toMatch(/has no KEY_BASE64: \(or KEY:\) line/);
  });
});

describe('sesame YAML: every error is one line with file:line, key and what is expected', () => {
  it('a bad port (the documented example)', () => {
    const text = ['# sesame', 'listen: ["0.0.0.0:62201"]', 'state_dir: /var/lib/sesame', 'max_packet_age: 120', 'replay_protection: true',
      'backend:', '  kind: nftables', 'rules:', '  - name: laptop', '    source: [any]', `    key_base64: ${K}`, `    hmac_key_base64: ${H}`,
      '    open_ports:', '      - tcp/22', '      - tcp/99999', ''].join('\n');
    expect(failure(text).message).toBe('sesame.yaml:15: rules[0].open_ports[1]: "tcp/99999" is not a valid port (expected tcp/N or udp/N with N in 1..65535)');
    expect(failure(yaml(['open_ports: [tcp/22, tcp/99999]'])).message).toBe('sesame.yaml:6: rules[0].open_ports[1]: "tcp/99999" is not a valid port (expected tcp/N or udp/N with N in 1..65535)');
  });

  it('unknown keys, with "did you mean"', () => {
    expect(failure(yaml([], ['rate_limt: { burst: 5 }'])).message).toBe('sesame.yaml:1: rate_limt: unknown key "rate_limt" (did you mean "rate_limit"?)');
    expect(failure(yaml(['sorce: [any]'])).message).toBe('sesame.yaml:6: rules[0].sorce: unknown key "sorce" (did you mean "source"?)');
    expect(failure(yaml(['nat: { forwarding: true, lcoal: true }'])).message).toMatch(/^sesame\.yaml:6: rules\[0\]\.nat\.lcoal: unknown key "lcoal" \(did you mean "local"\?\)/);
    expect(failure(yaml([], ['zzz: 1'])).message).toMatch(/unknown key "zzz" \(expected one of: listen, state_dir/);
  });

  it('missing keys name the enclosing line', () => {
    const text = ['rules:', '  - name: r1', `    key_base64: ${K}`, `    hmac_key_base64: ${H}`, ''].join('\n');
    expect(failure(text).message).toMatch(/^sesame\.yaml:2: rules\[0\]\.source: missing \(expected a list such as \[any\]/);
    const noKey = ['rules:', '  - name: r1', '    source: [any]', `    hmac_key_base64: ${H}`, ''].join('\n');
    expect(failure(noKey).message).toBe('sesame.yaml:2: rules[0]: no encryption key (expected one of key, key_base64, key_file)');
    const noHmac = ['rules:', '  - name: r1', '    source: [any]', `    key_base64: ${K}`, ''].join('\n');
    expect(failure(noHmac).message).toMatch(/^sesame\.yaml:2: rules\[0\]: no HMAC key \(expected one of hmac_key, hmac_key_base64, hmac_key_file/);
    expect(failure('listen: ["0.0.0.0:1"]\n').message).toMatch(/^sesame\.yaml:1: rules: no rules/);
  });

  it('bad addresses, base64, key lengths and equal keys', () => {
    expect(failure(yaml(['destination: [198.51.100.300]'])).message).toBe('sesame.yaml:6: rules[0].destination[0]: "198.51.100.300" is not an address (expected ANY, an IPv4/IPv6 address, ip/prefix or ipv4/dotted-mask)');
    expect(failure(yaml([], ['listen: ["example.org:62201"]'])).message).toMatch(/^sesame\.yaml:1: listen\[0\]: "example\.org" is not an IPv4 address/);
    const b64 = ['rules:', '  - source: [any]', '    key_base64: "not base64!"', `    hmac_key_base64: ${H}`, ''].join('\n');
    expect(failure(b64).message).toBe('sesame.yaml:3: rules[0].key_base64: is not valid base64 (expected standard base64 text such as the output of "sesame keygen")');
    const long = ['rules:', '  - source: [any]', `    key_base64: ${randomBytes(33).toString('base64')}`, `    hmac_key_base64: ${H}`, ''].join('\n');
    expect(failure(long).message).toBe('sesame.yaml:3: rules[0].key_base64: the key is 33 bytes (expected 8..32; sesame keygen makes a good one)');
    const legacy = ['rules:', '  - source: [any]', `    key: ${'x'.repeat(20)}`, '    insecure_no_hmac: true', '    encryption_mode: legacy', ''].join('\n');
    expect(failure(legacy).message).toMatch(/key is 20 bytes \(expected 8\.\.16 in legacy mode/);
    const same = ['rules:', '  - source: [any]', `    key_base64: ${K}`, `    hmac_key_base64: ${K}`, ''].join('\n');
    const e = failure(same);
    expect(e.message).toBe('sesame.yaml:4: rules[0].hmac_key_base64: the HMAC key must differ from the encryption key');
    expect(e.message).not.toContain(K);
    const two = ['rules:', '  - source: [any]', `    key_base64: ${K}`, '    key: x', `    hmac_key_base64: ${H}`, ''].join('\n');
    expect(failure(two).message).toMatch(/^sesame\.yaml:4: rules\[0\]\.key: give only one of key, key_base64, key_file/);
  });

  it('secrets are never repeated in messages', () => {
    const m1 = failure(['rules:', '  - source: [any]', '    key: 987654321', `    hmac_key_base64: ${H}`, ''].join('\n')).message;
    expect(m1).toBe('sesame.yaml:3: rules[0].key: expected the encryption passphrase, got a number (write it in quotes)');
    const m2 = failure(['rules:', '  - source: [any]', '    key_base64: 12345678', `    hmac_key_base64: ${H}`, ''].join('\n')).message;
    expect(m2).not.toContain('12345678');
    const m3 = failure(['rules:', '  - source: [any]', '    key_base64: "c2Vj cmV0!"', `    hmac_key_base64: ${H}`, ''].join('\n')).message;
    expect(m3).not.toContain('cmV0');
  });

  it('wrong types and values say what is expected', () => {
    expect(failure(yaml([], ['max_packet_age: abc'])).message).toBe('sesame.yaml:1: max_packet_age: expected seconds (0 turns packet aging off) (a whole number 0..100000), got "abc"');
    expect(failure(yaml([], ['max_packet_age: "120"'])).message).toMatch(/got the string "120" \(remove the quotes\)/);
    expect(failure(yaml([], ['replay_protection: yes'])).message).toBe('sesame.yaml:1: replay_protection: expected true or false, got "yes"');
    expect(failure(yaml(['hmac_digest: sha265'])).message).toMatch(/rules\[0\]\.hmac_digest: "sha265" is not one of md5, .* \(did you mean "sha256"\?\)/);
    expect(failure(yaml(['access_timeout: 0'])).message).toMatch(/rules\[0\]\.access_timeout: 0 is out of range/);
    expect(failure(yaml([], ['rate_limit: 5'])).message).toBe('sesame.yaml:1: rate_limit: expected a mapping (key: value lines), got 5');
    expect(failure('rules: {}\n').message).toBe('sesame.yaml:1: rules: expected a list, got a mapping');
    expect(failure(yaml(['key: 12345'].slice(0, 0), ['backend:', '  kind: nftable'])).message).toBe('sesame.yaml:2: backend.kind: "nftable" is not one of nftables, iptables, command, log, routeros (did you mean "nftables"?)');
    expect(failure(yaml([], ['backend:', '  mode: guard'])).message).toMatch(/^sesame\.yaml:2: backend\.kind: missing \(expected one of nftables/);
  });

  it('YAML syntax errors, duplicate keys and empty files', () => {
    expect(failure('rules:\n  - source: [any\n').message).toMatch(/^sesame\.yaml:\d+: YAML syntax: /);
    expect(failure('state_dir: /a\nstate_dir: /b\n').message).toMatch(/^sesame\.yaml:2: YAML syntax: Map keys must be unique/);
    expect(failure('').message).toMatch(/^sesame\.yaml: the file is empty/);
    expect(failure('- a\n- b\n').message).toBe('sesame.yaml:1: expected a mapping of settings (listen:, backend:, rules: ...), got a list');
  });

  it('NAT, command cycle, names and backend consistency', () => {
    expect(failure(yaml(['nat: { force_nat: { host: 198.51.100.5, port: 22 } }'])).message).toMatch(/rules\[0\]\.nat\.force_nat: needs forwarding: true or local: true/);
    expect(failure(yaml(['nat: { forwarding: true, force_masquerade: true }'])).message).toMatch(/nat\.force_masquerade: needs force_nat or forward_all: true/);
    expect(failure(yaml(['nat: { snat_address: 198.51.100.1 }'])).message).toMatch(/nat\.snat_address: needs snat: true/);
    expect(failure(yaml(['cmd_cycle: { open: /bin/o, close: /bin/c }'])).message).toMatch(/rules\[0\]\.cmd_cycle\.timer: missing/);
    const dup = `${yaml()}  - name: r1\n    source: [any]\n    key_base64: ${K}\n    hmac_key_base64: ${H}\n`;
    expect(failure(dup).message).toBe('sesame.yaml:6: rules[1].name: "r1" is used by an earlier rule (names must be unique)');
    expect(failure(yaml([], ['backend:', '  kind: nftables', '  mode: sets'])).message).toMatch(/backend\.mode: mode sets needs sets:/);
    expect(failure(yaml([], ['backend:', '  kind: nftables', '  table: 9bad'])).message).toMatch(/backend\.table: "9bad" is not a valid table name/);
    expect(failure(yaml([], ['backend:', '  kind: iptables', '  chain: WAY_TOO_LONG_CHAIN_NAME_FOR_IPTABLES'])).message).toMatch(/backend\.chain: .* max 28/);
  });

  it('routeros: URL, password source and list template are checked at load', () => {
    const ros = (lines: string[]) => yaml([], ['backend:', '  kind: routeros', ...lines.map((l) => `  ${l}`)]);
    expect(failure(ros(['routers:', '  - url: http://router', '    password_env: X'])).message).toMatch(/^sesame\.yaml:4: backend\.routers\[0\]\.url: router URL .* must start with api:\/\//);
    expect(failure(ros(['routers:', '  - url: api://sesame@192.168.88.1'])).message).toMatch(/backend\.routers\[0\]: no password/);
    expect(failure(ros(['routers: []'])).message).toMatch(/backend\.routers: the list is empty/);
    expect(failure(ros(['routers:', '  - url: api://sesame@192.168.88.1', '    password_env: X', 'list_template: sesame_{port}'])).message).toMatch(/backend\.list_template: .*\{proto\}/);
    t = tmpFiles();
    t.write('router.pass', 'pw\n', 0o640);
    expect(failure(ros(['routers:', '  - url: api://sesame@192.168.88.1', '    password_file: router.pass']), t.dir).message).toMatch(/password_file: "router\.pass" is readable by group\/others/);
    const inline = parseSesameYaml(ros(['routers:', '  - url: api://sesame@192.168.88.1', '    password: hunter2']), 'sesame.yaml');
    expect(inline.warnings.some((w) => w.includes('prefer password_file'))).toBe(true);
  });

  it('warnings name file:line and key', () => {
    const c = parseSesameYaml(yaml(['max_timeout: 10', 'expires: 2001-01-01'], ['max_packet_age: 0']), 'sesame.yaml');
    expect(c.warnings).toEqual([
      'sesame.yaml:7: rules[0].max_timeout: is below access_timeout (30)',
      'sesame.yaml:8: rules[0].expires: rule "r1" has already expired; it never matches',
      'sesame.yaml:1: max_packet_age: packet aging is off: old packets are accepted (replay protection still applies)',
    ]);
    const noHmac = parseSesameYaml(['rules:', '  - source: [any]', `    key_base64: ${K}`, '    insecure_no_hmac: true', ''].join('\n'), 'sesame.yaml');
    expect(noHmac.rules[0]!.hmacKey).toBeUndefined();
    expect(noHmac.warnings[0]).toMatch(/^sesame\.yaml:4: rules\[0\]\.insecure_no_hmac: .*not authenticated/);
  });

  it('an unreadable file is one line', () => {
    expect(() => loadSesameYaml('/nonexistent/sesame.yaml')).toThrow('/nonexistent/sesame.yaml: cannot read the file: no such file');
  });
});
