// The codec's rules one by one: each way a packet can be wrong has its own
// named reason; known-answer checks of the key derivation against OpenSSL.
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { b64decode, b64encode } from '../src/spa/base64.js';
import { digestB64, hmacB64 } from '../src/spa/digest.js';
import { decodeMessage, encodeMessage, isIPv6, SpaInputError, type SpaMessageInput } from '../src/spa/message.js';
import { checkWire, decodePacket, encodePacket, RIJNDAEL_PREFIX, replayDigest, verifyHmac, type SpaKeys } from '../src/spa/packet.js';
import { bytesToKey, rijndaelEncrypt } from '../src/spa/rijndael.js';
import { findTool } from './harness/requirements.js';

const keys: SpaKeys = { key: Buffer.from('k'.repeat(32)), hmacKey: Buffer.from('h'.repeat(64)), hmacType: 'sha256' };
const base: SpaMessageInput = { random: '1234567890123456', username: 'alice', timestamp: 1795645689, type: 1, message: '198.51.100.2,tcp/22' };

/** Encrypt an arbitrary plaintext with valid framing and HMAC, to reach the field checks. */
function sealed(plain: string, k = keys): string {
  const full = b64encode(rijndaelEncrypt(Buffer.from(plain, 'latin1'), k.key, 'cbc', Buffer.alloc(8, 1)));
  return full.slice(RIJNDAEL_PREFIX.length) + hmacB64('sha256', k.hmacKey!, full);
}
function withDigest(enc: string): string {
  return `${enc}:${digestB64('sha256', enc)}`;
}
const b = (s: string) => b64encode(s);

describe('base64 as libfko', () => {
  it('strips every = on encode and decodes unpadded, stopping at =', () => {
    expect(b64encode('a')).toBe('YQ');
    expect(b64decode('YQ')!.toString()).toBe('a');
    expect(b64decode('YQ==garbage')!.toString()).toBe('a');
    expect(b64decode('Y')!.length).toBe(0);
    expect(b64decode('Y$Q')).toBeUndefined();
  });
});

describe('key derivation', () => {
  it('matches OpenSSL EVP_BytesToKey(MD5, 1 round)', () => {
    const openssl = findTool('openssl');
    if (!openssl) return expect.fail('openssl missing (scripts/install-test-deps.sh installs it)');
    const out = execFileSync(openssl, ['enc', '-aes-256-cbc', '-md', 'md5', '-P', '-S', '0102030405060708', '-pass', 'pass:secret'], { encoding: 'utf8' });
    const key = /key=([0-9A-F]+)/.exec(out)![1]!;
    const iv = /iv\s*=([0-9A-F]+)/.exec(out)![1]!;
    const d = bytesToKey(Buffer.from('secret'), Buffer.from('0102030405060708', 'hex'));
    expect(d.key.toString('hex').toUpperCase()).toBe(key);
    expect(d.iv.toString('hex').toUpperCase()).toBe(iv);
  });
  it('OpenSSL decrypts what sesame encrypts (prefix restored)', () => {
    const openssl = findTool('openssl');
    if (!openssl) return expect.fail('openssl missing');
    const full = b64encode(rijndaelEncrypt(Buffer.from('hello fwknop'), Buffer.from('secret'), 'cbc', Buffer.alloc(8, 5)));
    const padded = full + '='.repeat((4 - (full.length % 4)) % 4);
    const out = execFileSync(openssl, ['enc', '-d', '-a', '-A', '-aes-256-cbc', '-md', 'md5', '-pass', 'pass:secret'], { input: padded + '\n' });
    expect(out.toString()).toBe('hello fwknop');
  });
});

describe('wire gates', () => {
  it('names each cheap rejection', () => {
    expect(checkWire('A'.repeat(139))).toMatchObject({ reason: 'too_short' });
    expect(checkWire('A'.repeat(1501))).toMatchObject({ reason: 'too_long' });
    expect(checkWire('U2FsdGVkX1' + 'A'.repeat(200))).toMatchObject({ reason: 'prefixed' });
    expect(checkWire('A'.repeat(150) + '!')).toMatchObject({ reason: 'not_base64' });
    expect(checkWire('A'.repeat(200)).ok).toBe(true);
  });
  it('checks the HMAC before decrypting, over the restored prefix', () => {
    const w = encodePacket(base, keys).wire;
    expect(verifyHmac(w, keys.hmacKey!, 'sha256').ok).toBe(true);
    expect(verifyHmac(w, keys.hmacKey!, 'sha512')).toMatchObject({ reason: 'hmac_mismatch' });
    expect(decodePacket(w, { ...keys, key: Buffer.from('other') })).toMatchObject({ reason: 'decryption_failed' });
    expect(decodePacket(w, { ...keys, hmacKey: Buffer.from('other') })).toMatchObject({ reason: 'hmac_mismatch' });
  });
  it('refuses 400+ character packets unless the rule allows commands', () => {
    const longMsg = { ...base, type: 0 as const, message: '198.51.100.2,' + 'x'.repeat(115) };
    const enc = encodePacket(longMsg, keys);
    expect(enc.wire.length).toBeGreaterThanOrEqual(400);
    expect(enc.warnings.join()).toMatch(/ENABLE_CMD_EXEC/);
    expect(decodePacket(enc.wire, keys)).toMatchObject({ reason: 'too_long_for_stanza' });
    expect(decodePacket(enc.wire, keys, { allowLong: true }).ok).toBe(true);
  });
  it('refuses to build a packet no fwknop server can decode', () => {
    expect(() => encodePacket({ ...base, type: 0, message: '198.51.100.2,' + 'x'.repeat(200) }, keys)).toThrow(/too long/);
  });
  it('accepts only the canonical spelling of a packet without HMAC (no replay through spare bits)', () => {
    const k: SpaKeys = { key: Buffer.from('k'.repeat(32)) };
    const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
    // Find a packet whose last character carries spare bits, then set one of them.
    for (let i = 0; i < 50; i++) {
      const w = encodePacket({ ...base, username: 'u'.repeat(1 + i) }, k).wire;
      if ((RIJNDAEL_PREFIX + w).length % 4 === 0) continue;
      const last = B64.indexOf(w[w.length - 1]!);
      const twin = w.slice(0, -1) + B64[last ^ 1];
      expect(decodePacket(w, k).ok).toBe(true);
      expect(decodePacket(twin, k)).toMatchObject({ ok: false, reason: 'not_base64' });
      return;
    }
    throw new Error('no packet with spare bits found');
  });
  it('replay digest is SHA-256 of the wire, base64 without =', () => {
    expect(replayDigest('abc')).toBe('ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0');
  });
});

describe('plaintext field rules, each with its reason', () => {
  const enc = (fields: string[]) => withDigest(fields.join(':'));
  const ok = ['1234567890123456', b('alice'), '1795645689', '3.0.0', '1', b('198.51.100.2,tcp/22')];
  const cases: [string, string, string][] = [
    ['decryption heuristic', 'x'.repeat(120), 'decryption_failed'],
    ['random value not digits', enc(['123456789012345x', ...ok.slice(1)]), 'decryption_failed'],
    ['too few fields', enc(ok.slice(0, 5)), 'bad_field_count'],
    ['digest of unknown length', `${ok.join(':')}:abcdef`, 'bad_digest_type'],
    ['digest mismatch', `${ok.join(':')}:${digestB64('sha256', 'other')}`, 'digest_mismatch'],
    ['username with a forbidden char', enc([ok[0]!, b('a,b'), ...ok.slice(2)]), 'bad_username'],
    ['username too long in base64', enc([ok[0]!, b('u'.repeat(49)), ...ok.slice(2)]), 'bad_username'],
    ['timestamp not digits', enc([...ok.slice(0, 2), '17x', ...ok.slice(3)]), 'bad_timestamp'],
    ['timestamp 13 digits', enc([...ok.slice(0, 2), '1'.repeat(13), ...ok.slice(3)]), 'bad_timestamp'],
    ['version too long', enc([...ok.slice(0, 3), '123456789', ...ok.slice(4)]), 'bad_version'],
    ['message type 7', enc([...ok.slice(0, 4), '7', ok[5]!]), 'bad_message_type'],
    ['icmp port', enc([...ok.slice(0, 5), b('198.51.100.2,icmp/1')]), 'bad_access_string'],
    ['port 0', enc([...ok.slice(0, 5), b('198.51.100.2,tcp/0')]), 'bad_access_string'],
    ['port 65536', enc([...ok.slice(0, 5), b('198.51.100.2,tcp/65536')]), 'bad_access_string'],
    ['upper-case proto', enc([...ok.slice(0, 5), b('198.51.100.2,TCP/22')]), 'bad_access_string'],
    ['bad allow-IP', enc([...ok.slice(0, 5), b('198.51.100.256,tcp/22')]), 'bad_access_string'],
    ['octal-looking allow-IP', enc([...ok.slice(0, 5), b('198.051.100.2,tcp/22')]), 'bad_access_string'],
    ['empty command', enc([...ok.slice(0, 4), '0', b('198.51.100.2,')]), 'bad_command'],
    ['NAT type without NAT', enc([...ok.slice(0, 4), '2', ok[5]!]), 'bad_nat_access'],
    ['NAT without port', enc([...ok.slice(0, 4), '2', ok[5]!, b('198.51.100.9')]), 'bad_nat_access'],
    ['timeout type without timeout', enc([...ok.slice(0, 4), '3', ok[5]!]), 'bad_client_timeout'],
    ['timeout above 65536', enc([...ok.slice(0, 4), '3', ok[5]!, '65537']), 'bad_client_timeout'],
    ['too many fields for type 1', enc([...ok, b('sa'), b('x')]), 'bad_field_count'],
    ['server_auth not base64', enc([...ok, 'a$b']), 'bad_server_auth'],
  ];
  for (const [name, plain, reason] of cases) {
    it(`${name} -> ${reason}`, () => {
      expect(decodePacket(sealed(plain), keys, { allowLong: true })).toMatchObject({ ok: false, reason });
    });
  }
  it('non-printable plaintext -> non_printable', () => {
    expect(decodePacket(sealed(enc([...ok.slice(0, 2), '1795645689\x01', ...ok.slice(3)])), keys)).toMatchObject({ reason: 'non_printable' });
  });
  it('accepts server_auth on any type and a timeout of 0 on decode', () => {
    const r = decodeMessage(enc([...ok.slice(0, 4), '3', ok[5]!, b('token'), '0']));
    expect(r).toMatchObject({ ok: true, value: { serverAuth: 'token', clientTimeout: 0 } });
  });
});

describe('encoding validates its input', () => {
  const bad: [string, Partial<SpaMessageInput>][] = [
    ['random', { random: '12' }],
    ['user name', { username: 'a:b' }],
    ['type', { type: 9 as SpaMessageInput['type'] }],
    ['access string', { message: '198.51.100.2,tcp/99999' }],
    ['NAT on type 1', { nat: { host: '198.51.100.9', port: 22 } }],
    ['timeout on type 1', { clientTimeout: 5 }],
    ['missing timeout on type 3', { type: 3 }],
  ];
  for (const [what, patch] of bad) {
    it(`refuses a bad ${what}`, () => expect(() => encodeMessage({ ...base, ...patch })).toThrow(SpaInputError));
  }
  it('refuses legacy mode with HMAC, equal keys and long keys', () => {
    expect(() => encodePacket(base, { ...keys, mode: 'legacy' })).toThrow(/legacy/);
    expect(() => encodePacket(base, { key: Buffer.from('same'), hmacKey: Buffer.from('same') })).toThrow(/differ/);
    expect(() => encodePacket(base, { key: Buffer.alloc(33, 1) })).toThrow(/at most 32/);
  });
  it('legacy mode pads short keys with 0 and truncates long ones to 16', () => {
    const a = encodePacket(base, { key: Buffer.from('abc'), mode: 'legacy' }, Buffer.alloc(8, 1)).wire;
    const b2 = encodePacket(base, { key: Buffer.from('abc0000000000000'), mode: 'legacy' }, Buffer.alloc(8, 1)).wire;
    expect(a).toBe(b2);
    const long = encodePacket(base, { key: Buffer.from('0123456789abcdefXYZ'), mode: 'legacy' }, Buffer.alloc(8, 1)).wire;
    expect(decodePacket(long, { key: Buffer.from('0123456789abcdef'), mode: 'legacy' }).ok).toBe(true);
  });
  it('accepts IPv6 allow addresses (sesame extension)', () => {
    expect(isIPv6('2001:db8::2')).toBe(true);
    expect(isIPv6('2001:db8::g')).toBe(false);
    const w = encodePacket({ ...base, message: '2001:db8::2,tcp/22' }, keys).wire;
    expect(decodePacket(w, keys)).toMatchObject({ ok: true, value: { request: { allowIp: '2001:db8::2' } } });
  });
});
