// RouterOS binary API framing, durations, list names, URLs and password files.
// Spec: /work/shared/docs/routeros.md 2.2-2.6 (test vectors from 2.2 and 2.8).
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { challengeResponse } from '../src/backends/routeros/api-connection.js';
import { formatRouterosDuration, parseRouterosDuration } from '../src/backends/routeros/duration.js';
import { DEFAULT_LIST_TEMPLATE, listName, parseListName, validateListTemplate } from '../src/backends/routeros/list-name.js';
import { loadPassword, normalizeFingerprint, parseRouterUrl, readPasswordFile, redactUrl, Secret } from '../src/backends/routeros/target.js';
import {
  SentenceDecoder,
  decodeLength,
  encodeLength,
  encodeSentence,
  encodeWord,
  parseAttributeWord,
  parseReply,
} from '../src/backends/routeros/words.js';
import { WireReader, doubleFormatTime, evalQuery, wireLength, wireSentence } from './harness/routeros-double.js';

const VECTORS: [number, string][] = [
  [0, '00'],
  [0x7f, '7f'],
  [0x80, '8080'],
  [0x3fff, 'bfff'],
  [0x4000, 'c04000'],
  [0x1fffff, 'dfffff'],
  [0x200000, 'e0200000'],
  [0xfffffff, 'efffffff'],
  [0x10000000, 'f010000000'],
];

describe('word length encoding', () => {
  it.each(VECTORS)('length 0x%s encodes minimally as the spec vector', (n, hex) => {
    expect(encodeLength(n).toString('hex')).toBe(hex);
    expect(decodeLength(Buffer.from(hex, 'hex'))).toEqual({ length: n, size: hex.length / 2 });
    // The double's encoder was written separately from the same table.
    expect(wireLength(n).toString('hex')).toBe(hex);
  });

  it('every class boundary round-trips, one below and one above', () => {
    for (const b of [0x7f, 0x80, 0x3fff, 0x4000, 0x1fffff, 0x200000, 0xfffffff, 0x10000000, 0xffffffff]) {
      for (const n of [b - 1, b, b + 1].filter((x) => x >= 0 && x <= 0xffffffff)) {
        const enc = encodeLength(n);
        expect(decodeLength(enc)).toEqual({ length: n, size: enc.length });
      }
    }
  });

  it('any length round-trips (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), (n) => {
        const enc = encodeLength(n);
        expect(decodeLength(enc)?.length).toBe(n);
        expect(wireLength(n).equals(enc)).toBe(true);
      }),
    );
  });

  it('rejects control bytes 0xF1..0xFF and out-of-range lengths', () => {
    for (let b = 0xf1; b <= 0xff; b++) expect(() => decodeLength(Buffer.from([b, 0, 0, 0, 0]))).toThrow(/control/);
    expect(() => encodeLength(-1)).toThrow(RangeError);
    expect(() => encodeLength(0x100000000)).toThrow(RangeError);
  });

  it('a truncated prefix asks for more bytes', () => {
    expect(decodeLength(Buffer.from([0x80]))).toBeUndefined();
    expect(decodeLength(Buffer.from([0xf0, 1, 2, 3]))).toBeUndefined();
  });
});

describe('sentence decoding', () => {
  it('words of every length class survive byte-by-byte fragmentation', () => {
    const words = ['/ip/firewall/address-list/print', 'x'.repeat(0x7f), 'y'.repeat(0x80), 'z'.repeat(0x3fff), 'w'.repeat(0x4000)];
    const wire = encodeSentence(words);
    const dec = new SentenceDecoder();
    const got: string[][] = [];
    for (const byte of wire) got.push(...dec.push(Buffer.from([byte])));
    expect(got).toEqual([words]);
    expect(dec.idle).toBe(true);
  });

  it('words of 0x1FFFFF and 0x200000 bytes cross between the two codecs', () => {
    const big = ['a'.repeat(0x1fffff), 'b'.repeat(0x200000)];
    const fromClient = encodeSentence(big);
    expect(new WireReader().push(fromClient)).toEqual([big]);
    const fromDouble = wireSentence(big);
    expect(fromDouble.equals(fromClient)).toBe(true);
    const dec = new SentenceDecoder();
    const out: string[][] = [];
    for (let i = 0; i < fromDouble.length; i += 65536) out.push(...dec.push(fromDouble.subarray(i, i + 65536)));
    expect(out).toEqual([big]);
  });

  it('several sentences in one chunk, empty sentences ignored', () => {
    const wire = Buffer.concat([encodeSentence(['!re', '=a=1']), Buffer.from([0]), encodeSentence(['!done', '.tag=7'])]);
    expect(new SentenceDecoder().push(wire)).toEqual([['!re', '=a=1'], ['!done', '.tag=7']]);
  });

  it('random sentences round-trip through the double\'s reader and back (property)', () => {
    const word = fc.string({ minLength: 1, maxLength: 300 });
    fc.assert(
      fc.property(fc.array(fc.array(word, { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 4 }), fc.integer({ min: 1, max: 50 }), (sentences, step) => {
        const wire = Buffer.concat(sentences.map((s) => encodeSentence(s)));
        const r = new WireReader();
        const viaDouble: string[][] = [];
        for (let i = 0; i < wire.length; i += step) viaDouble.push(...r.push(wire.subarray(i, i + step)));
        expect(viaDouble).toEqual(sentences);
        const back = Buffer.concat(viaDouble.map(wireSentence));
        const d = new SentenceDecoder();
        expect(d.push(back)).toEqual(sentences);
      }),
      { numRuns: 200 },
    );
  });

  it('refuses a control byte and an oversized word before buffering it', () => {
    expect(() => new SentenceDecoder().push(Buffer.from([0xf8]))).toThrow(/control/);
    expect(() => new SentenceDecoder(1000).push(encodeLength(1001))).toThrow(/exceeds/);
    expect(() => new WireReader().push(Buffer.from([0xf7, 0, 0, 0, 0]))).toThrow(/control/);
  });

  it('encodeWord prefixes UTF-8 byte length', () => {
    expect(encodeWord('é').toString('hex')).toBe('02c3a9');
  });
});

describe('reply words', () => {
  it('attributes split at the second "=" only; empty values allowed', () => {
    expect(parseAttributeWord('=comment=a=b=c')).toEqual(['comment', 'a=b=c']);
    expect(parseAttributeWord('=comment=')).toEqual(['comment', '']);
    expect(parseAttributeWord('.tag=3')).toBeUndefined();
  });

  it('parses tag anywhere and keeps the !fatal reason as a plain word', () => {
    expect(parseReply(['!re', '.tag=5', '=.id=*1A', '=address=198.51.100.7'])).toEqual({
      type: '!re',
      tag: '5',
      attributes: { '.id': '*1A', address: '198.51.100.7' },
      plain: [],
    });
    expect(parseReply(['!fatal', 'not logged in'])).toMatchObject({ type: '!fatal', plain: ['not logged in'] });
  });
});

describe('login challenge', () => {
  it('reproduces the manual\'s transcript (admin, empty password)', () => {
    expect(challengeResponse('', '856780b7411eefd3abadee2058c149a3')).toBe('005062f7a5ef124d34675bf3e81f56c556');
  });
});

describe('queries in the double (section 2.5)', () => {
  const ether = { type: 'ether', name: 'ether1', mtu: '1500' };
  const vlan = { type: 'vlan', name: 'vlan5', mtu: '1496' };
  const bridge = { type: 'bridge', name: 'br' };
  it('equality AND, OR via ?#|, negation, presence and comparisons', () => {
    expect(evalQuery(['?type=ether', '?name=ether1'], ether)).toBe(true);
    expect(evalQuery(['?type=ether', '?name=ether2'], ether)).toBe(false);
    for (const [row, want] of [[ether, true], [vlan, true], [bridge, false]] as const) {
      expect(evalQuery(['?type=ether', '?type=vlan', '?#|'], row)).toBe(want);
      expect(evalQuery(['?type=ether', '?type=vlan', '?#|!'], row)).toBe(!want);
    }
    expect(evalQuery(['?mtu'], bridge)).toBe(false);
    expect(evalQuery(['?-mtu'], bridge)).toBe(true);
    expect(evalQuery(['?<mtu=1500'], vlan)).toBe(true);
    expect(evalQuery(['?>mtu=1500'], vlan)).toBe(false);
    expect(evalQuery(['?=name=br'], bridge)).toBe(true);
    // "0" at end of word replaces the stack with its top; "1" copies the element below.
    expect(evalQuery(['?type=vlan', '?type=ether', '?#0'], ether)).toBe(true);
    expect(evalQuery(['?type=ether', '?type=vlan', '?#1'], ether)).toBe(true);
  });
});

describe('RouterOS durations', () => {
  it.each([
    ['30s', 30], ['1m30s', 90], ['2h', 7200], ['1d2h3m4s', 93784], ['1w2d', 777600], ['00:01:30', 90],
    ['1d02:03:04', 93784], ['0d 01:00:00', 3600], ['35w3d13:13:56', 21474836], ['45', 45], ['500ms', 0.5], ['1m', 60],
  ])('parses %s', (text, sec) => {
    expect(parseRouterosDuration(text)).toBeCloseTo(sec, 6);
  });
  it.each(['', 'abc', '1x', '00:61:00', '1:2', 's'])('refuses %j', (t) => {
    expect(parseRouterosDuration(t)).toBeUndefined();
  });
  it('formats compactly and round-trips', () => {
    expect(formatRouterosDuration(30)).toBe('30s');
    expect(formatRouterosDuration(90)).toBe('1m30s');
    expect(formatRouterosDuration(93784)).toBe('1d2h3m4s');
    expect(formatRouterosDuration(3600)).toBe('1h');
    expect(formatRouterosDuration(0)).toBe('0s');
    fc.assert(fc.property(fc.integer({ min: 0, max: 40_000_000 }), (n) => {
      expect(parseRouterosDuration(formatRouterosDuration(n))).toBe(n);
      expect(parseRouterosDuration(doubleFormatTime(n, 'clock'))).toBe(n);
      expect(parseRouterosDuration(doubleFormatTime(n, 'units'))).toBe(n);
    }));
  });
});

describe('list names', () => {
  it('default and fwknop-compatible templates', () => {
    expect(listName(DEFAULT_LIST_TEMPLATE, 'tcp', 22)).toBe('sesame_tcp_22');
    expect(listName('FWKNOP_{protonum}_{port}', 'tcp', 22)).toBe('FWKNOP_6_22');
    expect(listName('FWKNOP_{protonum}_{port}', 'udp', 1194)).toBe('FWKNOP_17_1194');
  });
  it('parses names back, refusing foreign lists', () => {
    expect(parseListName(DEFAULT_LIST_TEMPLATE, 'sesame_udp_53')).toEqual({ proto: 'udp', port: 53 });
    expect(parseListName('FWKNOP_{protonum}_{port}', 'FWKNOP_6_22')).toEqual({ proto: 'tcp', port: 22 });
    expect(parseListName(DEFAULT_LIST_TEMPLATE, 'sesame_tcp_99999')).toBeUndefined();
    expect(parseListName(DEFAULT_LIST_TEMPLATE, 'blocklist')).toBeUndefined();
    expect(parseListName('a.{proto}.{port}', 'aXtcp.22')).toBeUndefined();
  });
  it('refuses templates without a port/proto or with odd characters', () => {
    expect(() => validateListTemplate('sesame_{proto}')).toThrow(/\{port\}/);
    expect(() => validateListTemplate('sesame_{port}')).toThrow(/\{proto\}/);
    expect(() => validateListTemplate('x {proto} {port}')).toThrow(/letters/);
    expect(() => validateListTemplate('x_{prot}_{port}')).toThrow(/placeholder/);
    expect(() => validateListTemplate('FWKNOP_{protonum}_{port}')).not.toThrow();
  });
});

describe('router URLs', () => {
  it('parses the three schemes with default ports', () => {
    expect(parseRouterUrl('api://sesame@192.168.88.1')).toMatchObject({ transport: 'api', port: 8728, user: 'sesame', host: '192.168.88.1' });
    expect(parseRouterUrl('api-ssl://sesame@192.168.88.1')).toMatchObject({ transport: 'api-ssl', port: 8729 });
    expect(parseRouterUrl('https://sesame@router.lan')).toMatchObject({ transport: 'rest', port: 443, host: 'router.lan' });
    expect(parseRouterUrl('api-ssl://ops@[2001:db8::1]:9000')).toMatchObject({ host: '2001:db8::1', port: 9000, display: 'api-ssl://ops@[2001:db8::1]:9000' });
  });
  it('refuses a password in the URL without repeating it', () => {
    for (const url of ['api://sesame:hunter2@192.168.88.1', 'api-ssl://sesame:hun@ter2@192.168.88.1', 'https://u:hunter2/x@h']) {
      let msg = '';
      try {
        parseRouterUrl(url);
      } catch (e) {
        msg = (e as Error).message;
      }
      expect(msg).toMatch(/contains a password.*password_file.*SESAME_ROUTEROS_PASSWORD/);
      expect(msg).not.toMatch(/hunter2|hun@|ter2/);
    }
    expect(redactUrl('api://a:b@c@h')).toBe('api://a:***@h');
  });
  it('names what is wrong', () => {
    expect(() => parseRouterUrl('ssh://a@h')).toThrow(/must start with api:\/\//);
    expect(() => parseRouterUrl('api://192.168.88.1')).toThrow(/names no user/);
    expect(() => parseRouterUrl('api://a@h:70000')).toThrow(/port must be/);
    expect(() => parseRouterUrl('api://a@h/path')).toThrow(/without a path/);
  });
  it('normalizes fingerprints', () => {
    const hex = 'ab'.repeat(32);
    expect(normalizeFingerprint(hex)).toBe(Array(32).fill('AB').join(':'));
    expect(normalizeFingerprint(`sha256:${Array(32).fill('ab').join(':')}`)).toBe(Array(32).fill('AB').join(':'));
    expect(() => normalizeFingerprint('abcd')).toThrow(/64 hex digits/);
  });
});

describe('password sources', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sesame-ros-pw-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads a 0600 file, strips one newline, and never prints the secret', () => {
    const f = join(dir, 'ok.pass');
    writeFileSync(f, 'p4ss word\n', { mode: 0o600 });
    const s = readPasswordFile(f);
    expect(s.reveal()).toBe('p4ss word');
    expect(String(s)).toBe('[redacted]');
    expect(JSON.stringify({ s })).not.toContain('p4ss');
    expect(inspect(s)).not.toContain('p4ss');
    expect(s).toBeInstanceOf(Secret);
  });
  it('refuses group/world-readable files with the chmod fix', () => {
    const f = join(dir, 'open.pass');
    writeFileSync(f, 'secret-x\n');
    chmodSync(f, 0o644);
    expect(() => readPasswordFile(f)).toThrow(/readable by group\/others \(mode 644\); run: chmod 600/);
    chmodSync(f, 0o640);
    expect(() => readPasswordFile(f)).toThrow(/mode 640/);
  });
  it('explains missing and empty files, and an unset env var', () => {
    expect(() => readPasswordFile(join(dir, 'none'))).toThrow(/does not exist: create it with mode 0600/);
    const f = join(dir, 'empty.pass');
    writeFileSync(f, '\n', { mode: 0o600 });
    expect(() => readPasswordFile(f)).toThrow(/is empty/);
    expect(() => loadPassword({ env: 'SESAME_ROUTEROS_PASSWORD' }, {})).toThrow(/\$SESAME_ROUTEROS_PASSWORD .* is not set/);
    expect(loadPassword({ env: 'X' }, { X: 'from-env' }).reveal()).toBe('from-env');
    expect(loadPassword({ value: 'v' }).reveal()).toBe('v');
  });
});
