// Property tests of the codec: encode/decode round trips for arbitrary valid
// messages, and no input at all (random bytes, mutated packets, arbitrary
// plaintexts under valid keys) can make it throw, hang or answer without a
// named reason.
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { b64encode } from '../src/spa/base64.js';
import { hmacB64 } from '../src/spa/digest.js';
import { decodeMessage, type SpaMessageInput } from '../src/spa/message.js';
import { decodePacket, decryptAndDecode, encodePacket, RIJNDAEL_PREFIX, type SpaKeys } from '../src/spa/packet.js';
import { REJECTION_REASONS } from '../src/spa/result.js';
import { rijndaelEncrypt } from '../src/spa/rijndael.js';
import { DIGEST_TYPES, ENCRYPTION_MODES } from '../src/spa/types.js';

const USER_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@ #$%&()~!';
const octet = fc.integer({ min: 0, max: 255 });
const ipv4 = fc.tuple(octet, octet, octet, octet).map((o) => o.join('.')).filter((s) => s.length >= 7);
const ipv6 = fc.ipV6().filter((s) => !s.includes('.'));
const port = fc.record({ proto: fc.constantFrom('tcp', 'udp'), port: fc.integer({ min: 1, max: 65535 }) });
const user = fc.string({ unit: fc.constantFrom(...USER_CHARS.split('')), minLength: 1, maxLength: 30 });
const digits16 = fc.array(fc.integer({ min: 0, max: 9 }), { minLength: 16, maxLength: 16 }).map((d) => d.join(''));

const messageArb: fc.Arbitrary<SpaMessageInput> = fc
  .record({
    random: digits16,
    username: user,
    timestamp: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    type: fc.integer({ min: 0, max: 6 }),
    allowIp: fc.oneof(ipv4, ipv6),
    ports: fc.array(port, { minLength: 1, maxLength: 3 }),
    command: fc.string({ unit: fc.constantFrom(...'abc xyz-/._=0123'.split('')), minLength: 1, maxLength: 40 }),
    nat: fc.record({ host: ipv4, port: fc.integer({ min: 1, max: 65535 }) }),
    serverAuth: fc.option(fc.string({ unit: fc.constantFrom(...'abcXYZ 019'.split('')), minLength: 1, maxLength: 20 }), { nil: undefined }),
    timeout: fc.integer({ min: 1, max: 65536 }),
    digestType: fc.constantFrom(...DIGEST_TYPES),
  })
  .map((r) => {
    const natType = [2, 4, 5, 6].includes(r.type);
    const ports = natType ? r.ports.slice(0, 1) : r.ports;
    const body = r.type === 0 ? r.command : ports.map((p) => `${p.proto}/${p.port}`).join(',');
    return {
      random: r.random,
      username: r.username,
      timestamp: r.timestamp,
      type: r.type as SpaMessageInput['type'],
      message: `${r.allowIp},${body}`,
      ...(natType ? { nat: r.nat } : {}),
      ...(r.serverAuth !== undefined ? { serverAuth: r.serverAuth } : {}),
      ...([3, 4, 6].includes(r.type) ? { clientTimeout: r.timeout } : {}),
      digestType: r.digestType,
    };
  });

const keysArb: fc.Arbitrary<SpaKeys> = fc
  .record({
    key: fc.uint8Array({ minLength: 1, maxLength: 32 }),
    mode: fc.constantFrom(...ENCRYPTION_MODES),
    hmacKey: fc.uint8Array({ minLength: 1, maxLength: 128 }),
    hmacType: fc.constantFrom(...DIGEST_TYPES),
  })
  .filter((k) => Buffer.compare(Buffer.from(k.key), Buffer.from(k.hmacKey)) !== 0)
  .map((k) => (k.mode === 'legacy' ? { key: k.key, mode: k.mode } : k));

function isNamedRejection(r: ReturnType<typeof decodePacket>): boolean {
  return !r.ok && (REJECTION_REASONS as readonly string[]).includes(r.reason) && r.detail.length > 0;
}

describe('SPA codec properties', () => {
  it('decode(encode(m)) == m for arbitrary valid messages, keys and algorithms', () => {
    fc.assert(
      fc.property(messageArb, keysArb, fc.uint8Array({ minLength: 8, maxLength: 8 }), (msg, keys, salt) => {
        let enc;
        try {
          enc = encodePacket(msg, keys, salt);
        } catch (e) {
          // Only one refusal is legitimate: a message too long for any fwknop server.
          expect((e as Error).message).toMatch(/too long|drop packets/);
          return;
        }
        const res = decodePacket(enc.wire, keys, { allowLong: true });
        if (!res.ok) throw new Error(`${res.reason}: ${res.detail}`);
        const m = res.value;
        expect(m.random).toBe(msg.random);
        expect(m.username).toBe(msg.username);
        expect(m.timestamp).toBe(msg.timestamp);
        expect(m.type).toBe(msg.type);
        expect(m.message).toBe(msg.message);
        expect(m.nat).toEqual(msg.nat);
        expect(m.serverAuth).toBe(msg.serverAuth);
        expect(m.clientTimeout).toBe(msg.clientTimeout);
        // SHA-256 and SHA3-256 (and 512s) share a length; the first match is reported, as in libfko.
        const same = { sha3_256: 'sha256', sha3_512: 'sha512' } as Record<string, string>;
        expect([msg.digestType, same[msg.digestType!]]).toContain(m.digestType);
      }),
      { numRuns: 400 },
    );
  });

  it('arbitrary strings never throw and always give a named reason', () => {
    const keys: SpaKeys = { key: Buffer.alloc(32, 1), hmacKey: Buffer.alloc(64, 2), hmacType: 'sha256' };
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 1600 }), fc.base64String({ minLength: 100, maxLength: 1600 })), (s) => {
        const r = decodePacket(s, keys);
        expect(isNamedRejection(r)).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it('arbitrary mutations of a valid packet never throw and are rejected by name', () => {
    const keys: SpaKeys = { key: Buffer.alloc(32, 1), hmacKey: Buffer.alloc(64, 2), hmacType: 'sha256' };
    const noHmac: SpaKeys = { key: Buffer.alloc(32, 1) };
    const msg: SpaMessageInput = { random: '1234567890123456', username: 'u', timestamp: 1700000000, type: 1, message: '198.51.100.2,tcp/22' };
    const wire = encodePacket(msg, keys).wire;
    const wireNoHmac = encodePacket(msg, noHmac).wire;
    const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/='.split('');
    const mutation = fc.record({ at: fc.nat(), ch: fc.constantFrom(...B64, ':', ' ', '\n', '\0'), kind: fc.constantFrom('replace', 'insert', 'delete', 'truncate') });
    const apply = (w: string, m: { at: number; ch: string; kind: string }): string => {
      const i = m.at % w.length;
      if (m.kind === 'replace') return w.slice(0, i) + m.ch + w.slice(i + 1);
      if (m.kind === 'insert') return w.slice(0, i) + m.ch + w.slice(i);
      if (m.kind === 'delete') return w.slice(0, i) + w.slice(i + 1);
      return w.slice(0, i);
    };
    fc.assert(
      fc.property(fc.array(mutation, { minLength: 1, maxLength: 5 }), (ms) => {
        for (const [w, k] of [[wire, keys], [wireNoHmac, noHmac]] as const) {
          const mutated = ms.reduce(apply, w);
          const r = decodePacket(mutated, k);
          if (mutated === w) expect(r.ok).toBe(true);
          else if (r.ok) {
            // Without an HMAC a change in the last base64 character's spare bits can survive; the message must be intact.
            expect(k.hmacKey).toBeUndefined();
            expect(r.value.message).toBe(msg.message);
          } else expect(isNamedRejection(r)).toBe(true);
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('arbitrary plaintexts under valid keys and HMAC never throw and are rejected or parsed', () => {
    const key = Buffer.alloc(32, 3);
    const hmacKey = Buffer.alloc(64, 4);
    const pieces = ['1234567890123456', ':', 'dQ', '1700000000', '3.0.0', '1', '3', '5', 'MTk4LjUxLjEwMC4yLHRjcC8yMg', 'MTk4LjUxLjEwMC45LDIy', '77', 'xx', '', '=', '\x01', 'é'];
    const plainArb = fc.oneof(
      fc.array(fc.constantFrom(...pieces), { maxLength: 24 }).map((a) => a.join('')),
      fc.string({ maxLength: 300 }),
    );
    fc.assert(
      fc.property(plainArb, fc.boolean(), (plain, withDigest) => {
        const p = withDigest ? `${plain}:${b64encode(require256(plain))}` : plain;
        const full = b64encode(rijndaelEncrypt(Buffer.from(p, 'utf8'), key, 'cbc', Buffer.alloc(8, 9)));
        const body = full.slice(RIJNDAEL_PREFIX.length);
        const wire = body + hmacB64('sha256', hmacKey, full);
        const r = decodePacket(wire, { key, hmacKey }, { allowLong: true });
        if (!r.ok) expect(isNamedRejection(r)).toBe(true);
        const direct = decryptAndDecode(full, key);
        expect(direct.ok || (REJECTION_REASONS as readonly string[]).includes(direct.reason)).toBe(true);
        const m = decodeMessage(p);
        expect(m.ok || (REJECTION_REASONS as readonly string[]).includes(m.reason)).toBe(true);
      }),
      { numRuns: 3000 },
    );
  });
});

function require256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}
