// The page's protocol core, without a browser (docs/web-knock-page.md):
//  - the SPA codec as the page ships it (bundled by esbuild with the node:crypto
//    and node:net shims over @noble/*, scripts/web-bundle-options.mjs) builds
//    byte-identical packets to the Node codec in every mode and digest, and each
//    side decodes the other's;
//  - a web knock is <= 255 characters, decodes under the profile's keys, and
//    its ice-pwd is the gateway's W; longer ones are refused with what to change;
//  - the fabricated SDP answer; the passphrase vault.
import { build } from 'esbuild';
import { createHmac } from 'node:crypto';
import { isIPv4 as nodeIsIPv4, isIPv6 as nodeIsIPv6 } from 'node:net';
import path from 'node:path';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { encodePacket, decodePacket } from '../src/spa/packet.js';
import { DIGEST_TYPES, type DigestType, type EncryptionMode } from '../src/spa/types.js';
import { buildWebKnock, fabricatedAnswer, offerMid, WebKnockError } from '../src/web/knock.js';
import type { WebProfile } from '../src/web/link.js';
import { isIPv4, isIPv6 } from '../src/web/browser/shims/net.js';
import { readVault, unlockVault, upsertProfile, writeVault, VaultError, STORAGE_KEY, type KeyValueStore } from '../src/web/browser/vault.js';
import { REPO_DIR } from './harness/netns.js';
// @ts-expect-error plain ESM helper without types
import { webBundleOptions } from '../scripts/web-bundle-options.mjs';

type Codec = { encodePacket: typeof encodePacket; decodePacket: typeof decodePacket; buildWebKnock: typeof buildWebKnock; usesShims: () => boolean };
let shimmed: Codec;

const KEY = Buffer.from('nu1zufkWsUyhDzpS19syGD5JdHwdCV0zjpDxiq3FJ7E=', 'base64');
const HMAC = Buffer.from('AvLBQ0PFePAf6JyLUA21P2fX5PofcTufS31NnJBgtwL3cnaxQ22aOTPBpxnrapKwCMorEcoWhVhJShyyxuWKxg==', 'base64');
const MODES: EncryptionMode[] = ['cbc', 'ctr', 'cfb', 'ofb', 'ecb'];

const profile: WebProfile = { name: 'home', hosts: ['198.51.100.1'], port: 62201, access: ['tcp/22'], keyB64: KEY.toString('base64'), hmacKeyB64: HMAC.toString('base64'), hmacDigest: 'sha256', digest: 'sha256', mode: 'cbc' };

function message(digestType: DigestType, random = '1234567890123456') {
  return { random, username: 'web', timestamp: 1_800_000_000, type: 1 as const, digestType, message: '0.0.0.0,tcp/22' };
}

class MemoryStore implements KeyValueStore {
  readonly map = new Map<string, string>();
  getItem(k: string) { return this.map.get(k) ?? null; }
  setItem(k: string, v: string) { this.map.set(k, v); }
  removeItem(k: string) { this.map.delete(k); }
}

beforeAll(async () => {
  const opts = webBundleOptions(REPO_DIR) as Record<string, unknown>;
  const r = await build({
    ...opts,
    minify: false,
    format: 'esm',
    stdin: {
      resolveDir: REPO_DIR,
      loader: 'ts',
      contents: `export { encodePacket, decodePacket } from './src/spa/packet.ts';
        export { buildWebKnock } from './src/web/knock.ts';
        import * as c from 'node:crypto';
        export const usesShims = () => typeof c.createHash === 'function' && !('webcrypto' in c);`,
    },
  });
  const text = r.outputFiles![0]!.text;
  expect(text).not.toMatch(/from\s*["']node:/);
  shimmed = (await import(`data:text/javascript;base64,${Buffer.from(text).toString('base64')}`)) as Codec;
  expect(shimmed.usesShims()).toBe(true);
}, 60_000);

describe('the codec as bundled for the page (noble shims)', () => {
  it('builds byte-identical packets to the Node codec in every mode and HMAC digest, and each side decodes the other', () => {
    const salt = Buffer.from('0123456789abcdef', 'hex');
    for (const mode of MODES) {
      for (const hmacType of DIGEST_TYPES) {
        const keys = { key: KEY, mode, hmacKey: HMAC, hmacType };
        const a = encodePacket(message('sha256'), keys, salt).wire;
        const b = shimmed.encodePacket(message('sha256'), keys, salt).wire;
        expect(b, `${mode}/${hmacType}`).toBe(a);
        const fresh = shimmed.encodePacket(message('sha256'), keys).wire;
        const d1 = decodePacket(fresh, keys);
        expect(d1.ok && d1.value.message, `${mode}/${hmacType}`).toBe('0.0.0.0,tcp/22');
        const d2 = shimmed.decodePacket(encodePacket(message('sha256'), keys).wire, keys);
        expect(d2.ok && d2.value.message, `${mode}/${hmacType}`).toBe('0.0.0.0,tcp/22');
        const wrong = shimmed.decodePacket(a, { ...keys, hmacKey: KEY });
        expect(wrong.ok || wrong.reason).toBe('hmac_mismatch');
      }
    }
    for (const digestType of DIGEST_TYPES) {
      const keys = { key: KEY, hmacKey: HMAC, hmacType: 'sha256' as const };
      expect(shimmed.encodePacket(message(digestType), keys, salt).wire, digestType).toBe(encodePacket(message(digestType), keys, salt).wire);
    }
  });

  it('checks IP text like node:net (shims/net.ts)', () => {
    const samples = ['0.0.0.0', '198.51.100.1', '255.255.255.255', '256.1.1.1', '01.2.3.4', '1.2.3', '1.2.3.4.5', '::', '::1', '2001:db8::1', '2001:db8:0:0:0:0:0:1',
      '1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8:9', '1::2::3', ':1::', '1::', '::ffff:198.51.100.1', '::ffff:256.1.1.1', 'fe80::1%eth0', 'g::1', '12345::', '1:2:3:4:5:6:1.2.3.4', '1:2:3:4:5:6:7:1.2.3.4', ''];
    for (const s of samples) {
      expect(isIPv4(s), s).toBe(nodeIsIPv4(s));
      expect(isIPv6(s), s).toBe(nodeIsIPv6(s));
    }
    fc.assert(fc.property(fc.stringMatching(/^[0-9a-f:.]{0,20}$/), (s) => {
      expect(isIPv4(s)).toBe(nodeIsIPv4(s));
      expect(isIPv6(s)).toBe(nodeIsIPv6(s));
    }), { numRuns: 2000 });
  });
});

describe('web knock builder', () => {
  it('builds a fresh packet of at most 255 characters that decodes under the profile keys, with W as ice-pwd', () => {
    for (const codec of [{ buildWebKnock }, shimmed]) {
      const k = codec.buildWebKnock(profile, 1_800_000_000);
      expect(k.packet.length).toBeLessThanOrEqual(255);
      const d = decodePacket(k.packet, { key: KEY, hmacKey: HMAC, hmacType: 'sha256' });
      expect(d.ok && d.value.request).toEqual({ kind: 'access', allowIp: '0.0.0.0', ports: [{ proto: 'tcp', port: 22 }] });
      expect(d.ok && d.value.timestamp).toBe(1_800_000_000);
      const w = createHmac('sha256', HMAC).update('sesame-ack-v1').update(k.packet).digest('base64').replace(/=+$/, '');
      expect(k.icePwd).toBe(w);
      expect(codec.buildWebKnock(profile, 1_800_000_000).packet).not.toBe(k.packet);
    }
  });

  it('refuses a packet over 255 characters before sending, naming what to change', () => {
    const long = { ...profile, access: ['tcp/22', 'tcp/80', 'tcp/443'], hmacDigest: 'sha512' as const };
    expect(() => buildWebKnock(long, 1_800_000_000)).toThrow(WebKnockError);
    expect(() => buildWebKnock(long, 1_800_000_000)).toThrow(/^the packet would be 2\d\d characters; a web knock carries at most 255: ask for fewer ports \(3 now; one gives 204 characters\), use a shorter HMAC digest \(sha512 now; sha256 or sha1\), no client timeout$/);
    expect(buildWebKnock({ ...profile, access: ['tcp/22', 'udp/53'] }, 1_800_000_000).packet.length).toBeLessThanOrEqual(255);
  });

  it('writes an SDP answer with P as ufrag, W as pwd, the offer\'s mid and one host candidate per gateway address', () => {
    const k = buildWebKnock(profile, 1_800_000_000);
    const offer = 'v=0\r\na=group:BUNDLE data\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:data\r\n';
    expect(offerMid(offer)).toBe('data');
    const sdp = fabricatedAnswer(offer, k, ['198.51.100.1', '2001:db8::1'], 62201);
    expect(sdp).toContain(`\r\na=ice-ufrag:${k.packet}\r\n`);
    expect(sdp).toContain(`\r\na=ice-pwd:${k.icePwd}\r\n`);
    expect(sdp).toContain('\r\na=mid:data\r\n');
    expect(sdp).toContain('a=setup:active');
    expect(sdp).toMatch(/a=fingerprint:sha-256 ([0-9A-F]{2}:){31}[0-9A-F]{2}\r\n/);
    expect(sdp.match(/^a=candidate:[^\r\n]*/gm)).toEqual([
      'a=candidate:1 1 udp 2130706431 198.51.100.1 62201 typ host',
      'a=candidate:2 1 udp 2130706430 2001:db8::1 62201 typ host',
    ]);
    expect(() => fabricatedAnswer(offer, k, [], 62201)).toThrow(/no gateway address/);
  });
});

describe('profile vault (localStorage)', () => {
  it('stores profiles in clear without a passphrase, replaces by name', async () => {
    const store = new MemoryStore();
    expect(readVault(store)).toEqual({ kind: 'empty' });
    const list = upsertProfile(upsertProfile([], profile), { ...profile, port: 4500 });
    expect(list).toHaveLength(1);
    await writeVault(store, list);
    expect(readVault(store)).toEqual({ kind: 'open', profiles: [{ ...profile, port: 4500 }] });
  });

  it('seals profiles with a passphrase: no key in storage, the right passphrase opens, a wrong one or a modified box does not', async () => {
    const store = new MemoryStore();
    await writeVault(store, [profile], 'correct horse battery');
    const text = store.map.get(STORAGE_KEY)!;
    expect(text).not.toContain(profile.keyB64.slice(0, 20));
    expect(text).not.toContain(profile.hmacKeyB64.slice(0, 20));
    expect(text).not.toContain('198.51.100.1');
    const v = readVault(store);
    expect(v.kind).toBe('locked');
    if (v.kind !== 'locked') return;
    expect(await unlockVault(v.sealed, 'correct horse battery')).toEqual([profile]);
    await expect(unlockVault(v.sealed, 'wrong horse')).rejects.toThrow(/^wrong passphrase \(the profiles stay locked\); try again$/);
    const box = Buffer.from(v.sealed.box, 'base64');
    box[5] = box[5]! ^ 1;
    await expect(unlockVault({ ...v.sealed, box: box.toString('base64') }, 'correct horse battery')).rejects.toThrow(VaultError);
    await expect(unlockVault(v.sealed, '')).rejects.toThrow(/passphrase is empty/);
  }, 30_000);

  it('reports a damaged entry instead of dropping it', () => {
    const store = new MemoryStore();
    store.setItem(STORAGE_KEY, '{not json');
    expect(() => readVault(store)).toThrow(/^the stored profiles are not valid JSON; remove them/);
    store.setItem(STORAGE_KEY, JSON.stringify({ v: 7 }));
    expect(() => readVault(store)).toThrow(/format 7; this page reads format 1/);
    store.setItem(STORAGE_KEY, JSON.stringify({ v: 1, profiles: [{ ...profile, port: 0 }] }));
    expect(() => readVault(store)).toThrow(/^port: 0 is out of range/);
  });
});
