// The STUN codec of web knocks (src/spa/stun.ts, docs/web-knock.md): the
// RFC 5769 test vectors (sample request 2.1, IPv4 response 2.2, IPv6 response
// 2.3), datagrams shaped like the ones Chromium and Firefox send (the doc's
// table), malformed messages with their named reasons, the ack key W, and a
// property test: no input makes the parser throw or answer without a reason.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  ATTR_GOOG_NETWORK_INFO, ATTR_ICE_CONTROLLING, ATTR_MESSAGE_INTEGRITY, ATTR_PRIORITY, ATTR_SOFTWARE, ATTR_USE_CANDIDATE, ATTR_USERNAME,
  BINDING_SUCCESS, buildBindingRequest, buildBindingSuccess, looksLikeStun, parseBindingRequest, parseStun, readXorMappedAddress,
  verifyFingerprint, verifyMessageIntegrity, type StunAttribute,
} from '../src/spa/stun.js';
import { MAX_WEB_PACKET, webAckKey } from '../src/spa/web-ack.js';
import { REJECTION_REASONS } from '../src/spa/result.js';
import { encodePacket } from '../src/spa/packet.js';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const PASSWORD = 'VOkJxbRl1RmTxUk/WvJxBt';
const TXID = hex('b7e7a701bc34d686fa87dfae');
// RFC 5769 section 2.1 (SOFTWARE "STUN test client", PRIORITY, ICE-CONTROLLED, USERNAME "evtj:h6vY", MI, FINGERPRINT).
const REQUEST_2_1 = hex(`000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74002400046e0001ff
  80290008932ff9b151263b36000600096576746a3a68367659202020000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf`);
// 2.2: Binding Success, SOFTWARE "test vector", XOR-MAPPED-ADDRESS 192.0.2.1:32853.
const RESPONSE_2_2 = hex(`0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220002000080001a147e112a643
  000800142b91f599fd9e90c38c7489f92af9ba53f06be7d780280004c07d4c96`);
// 2.3: the same with XOR-MAPPED-ADDRESS [2001:db8:1234:5678:11:2233:4455:6677]:32853.
const RESPONSE_2_3 = hex(`010100482112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220002000140002a1470113a9fa
  a5d3f179bc25f4b5bed2b9d900080014a382954e4be67bf11784c97c8292c275bfe3ed4180280004c8fb0b4c`);

const software = (s: string): StunAttribute => ({ type: ATTR_SOFTWARE, value: new TextEncoder().encode(s) });
const u32 = (n: number): Uint8Array => { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, n); return b; };
const u64 = (): Uint8Array => hex('0123456789abcdef');

/** An ICE connectivity check as Chromium 156 sends it (the doc's table). */
function chromiumCheck(packet: string, txid = TXID): Uint8Array {
  return buildBindingRequest({
    transactionId: txid, username: `${packet}:Ab3d`, password: 'chromium-local-ice-password-0123',
    extra: [
      { type: ATTR_GOOG_NETWORK_INFO, value: hex('00010032') },
      { type: ATTR_ICE_CONTROLLING, value: u64() },
      { type: ATTR_USE_CANDIDATE, value: new Uint8Array(0) },
      { type: ATTR_PRIORITY, value: u32(0x6e7f1eff) },
    ],
  });
}

/** The same from Firefox ESR 153: no GOOG attribute, an 8-character local ufrag. */
function firefoxCheck(packet: string, txid = TXID): Uint8Array {
  return buildBindingRequest({
    transactionId: txid, username: `${packet}:9f3c2a1b`, password: 'firefox-local-ice-password-01234',
    extra: [
      { type: ATTR_ICE_CONTROLLING, value: u64() },
      { type: ATTR_USE_CANDIDATE, value: new Uint8Array(0) },
      { type: ATTR_PRIORITY, value: u32(0x7e7f1eff) },
    ],
  });
}

const KEY = Buffer.from('nu1zufkWsUyhDzpS19syGD5JdHwdCV0zjpDxiq3FJ7E=', 'base64');
const HMAC = Buffer.from('AvLBQ0PFePAf6JyLUA21P2fX5PofcTufS31NnJBgtwL3cnaxQ22aOTPBpxnrapKwCMorEcoWhVhJShyyxuWKxg==', 'base64');
/** A real 204-character SPA packet (one port, allow-IP 0.0.0.0, sha256 digest and HMAC). */
const PACKET = encodePacket({ random: '1234567890123456', username: 'phone', timestamp: 1_800_000_000, type: 1, message: '0.0.0.0,tcp/22', digestType: 'sha256' },
  { key: KEY, hmacKey: HMAC, hmacType: 'sha256' }, Buffer.from('0011223344556677', 'hex')).wire;

describe('RFC 5769 test vectors', () => {
  it('2.1 sample request: parses as a Binding request, integrity and fingerprint verify, USERNAME unwraps', () => {
    const r = parseBindingRequest(REQUEST_2_1);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value.username).toBe('evtj:h6vY');
    expect(r.value.packet).toBe('evtj');
    expect(Buffer.from(r.value.transactionId).toString('hex')).toBe('b7e7a701bc34d686fa87dfae');
    expect(verifyMessageIntegrity(REQUEST_2_1, PASSWORD)).toBe(true);
    expect(verifyMessageIntegrity(REQUEST_2_1, PASSWORD + 'x')).toBe(false);
    expect(verifyFingerprint(REQUEST_2_1)).toBe(true);
  });

  for (const [name, vector, mapped] of [
    ['2.2 IPv4 response', RESPONSE_2_2, { family: 4 as const, address: '192.0.2.1', port: 32853 }],
    ['2.3 IPv6 response', RESPONSE_2_3, { family: 6 as const, address: '2001:db8:1234:5678:11:2233:4455:6677', port: 32853 }],
  ] as const) {
    it(`${name}: parses, verifies, decodes XOR-MAPPED-ADDRESS, and the builder reproduces it exactly`, () => {
      const m = parseStun(vector);
      expect(m.ok).toBe(true);
      if (!m.ok) return;
      expect(m.value.type).toBe(BINDING_SUCCESS);
      expect(readXorMappedAddress(m.value)).toEqual(mapped);
      expect(verifyMessageIntegrity(vector, PASSWORD)).toBe(true);
      expect(verifyFingerprint(vector)).toBe(true);
      const built = buildBindingSuccess({ transactionId: TXID, mapped, password: PASSWORD, extra: [software('test vector')], padByte: 0x20 });
      expect(Buffer.from(built).toString('hex')).toBe(Buffer.from(vector).toString('hex'));
    });
  }
});

describe('browser-shaped connectivity checks (docs/web-knock.md table)', () => {
  for (const [browser, make, size] of [['Chromium 156', chromiumCheck, 300], ['Firefox ESR 153', firefoxCheck, 296]] as const) {
    it(`${browser}: a ${PACKET.length}-character packet makes a ${size}-byte check that unwraps to the packet`, () => {
      expect(PACKET.length).toBe(204);
      const d = make(PACKET);
      expect(d.length).toBe(size);
      expect(looksLikeStun(d)).toBe(true);
      const r = parseBindingRequest(d);
      expect(r.ok).toBe(true);
      if (!r.ok) return;
      expect(r.value.packet).toBe(PACKET);
      expect(verifyFingerprint(d)).toBe(true);
    });
  }

  it('Chromium and Firefox checks carry the attribute sets of the table, in order', () => {
    const types = (d: Uint8Array) => { const m = parseStun(d); if (!m.ok) throw new Error(m.detail); return m.value.attributes.map((a) => a.type); };
    expect(types(chromiumCheck(PACKET))).toEqual([ATTR_USERNAME, ATTR_GOOG_NETWORK_INFO, ATTR_ICE_CONTROLLING, ATTR_USE_CANDIDATE, ATTR_PRIORITY, ATTR_MESSAGE_INTEGRITY, 0x8028]);
    expect(types(firefoxCheck(PACKET))).toEqual([ATTR_USERNAME, ATTR_ICE_CONTROLLING, ATTR_USE_CANDIDATE, ATTR_PRIORITY, ATTR_MESSAGE_INTEGRITY, 0x8028]);
  });

  it('a fwknop packet sent as plain UDP is never taken for STUN', () => {
    expect(looksLikeStun(Buffer.from(PACKET, 'latin1'))).toBe(false);
  });

  it('the acknowledgement for a check: our Binding Success verifies with W and maps the sender (IPv4 and IPv6)', () => {
    const w = webAckKey(HMAC, PACKET);
    expect(w).toMatch(/^[A-Za-z0-9+/]{43}$/);
    for (const mapped of [{ family: 4 as const, address: '198.51.100.2', port: 50123 }, { family: 6 as const, address: '2001:db8::2', port: 443 }]) {
      const req = parseBindingRequest(chromiumCheck(PACKET));
      if (!req.ok) throw new Error(req.detail);
      const ack = buildBindingSuccess({ transactionId: req.value.transactionId, mapped, password: w });
      expect(verifyMessageIntegrity(ack, w)).toBe(true);
      expect(verifyMessageIntegrity(ack, webAckKey(HMAC, PACKET.slice(0, -1) + 'A'))).toBe(false);
      expect(verifyFingerprint(ack)).toBe(true);
      const m = parseStun(ack);
      if (!m.ok) throw new Error(m.detail);
      expect(m.value.type).toBe(BINDING_SUCCESS);
      expect(Buffer.from(m.value.transactionId)).toEqual(Buffer.from(req.value.transactionId));
      expect(readXorMappedAddress(m.value)).toEqual(mapped);
    }
  });

  it('W is base64(HMAC-SHA256(hmac key, "sesame-ack-v1" || P)) without padding', async () => {
    const { createHmac } = await import('node:crypto');
    const expected = createHmac('sha256', HMAC).update('sesame-ack-v1' + PACKET).digest('base64').replace(/=+$/, '');
    expect(webAckKey(HMAC, PACKET)).toBe(expected);
    expect(MAX_WEB_PACKET).toBe(255);
  });
});

describe('malformed and other STUN messages get named reasons', () => {
  const good = () => Uint8Array.from(firefoxCheck(PACKET));
  const reasonOf = (d: Uint8Array) => { const r = parseBindingRequest(d); return r.ok ? 'ok' : r.reason; };

  it('bad length field, bad padding, truncated attribute, wrong cookie, bad leading bits', () => {
    const longer = good(); longer[3]! += 4;
    expect(reasonOf(longer)).toBe('stun_malformed');
    const cut = good().subarray(0, 200);
    expect(reasonOf(cut)).toBe('stun_malformed');
    // Length and datagram agree but are not a multiple of 4.
    const odd = new Uint8Array(good().length + 2); odd.set(good()); odd[3] = (odd.length - 20) & 255; odd[2] = (odd.length - 20) >> 8;
    expect(reasonOf(odd)).toBe('stun_malformed');
    // An attribute whose length runs past the end.
    const trunc = good(); trunc[22] = 0x01; trunc[23] = 0xff;
    expect(reasonOf(trunc)).toBe('stun_malformed');
    const cookie = good(); cookie[7] = 0x43;
    expect(reasonOf(cookie)).toBe('stun_malformed');
    const bits = good(); bits[0] = 0x40;
    expect(reasonOf(bits)).toBe('stun_malformed');
    expect(reasonOf(good().subarray(0, 12))).toBe('stun_malformed');
  });

  it('a FINGERPRINT that does not match, or that is not last', () => {
    const d = good(); d[d.length - 1]! ^= 1;
    expect(reasonOf(d)).toBe('stun_bad_fingerprint');
    const flipped = good(); flipped[40]! ^= 0x20;
    expect(reasonOf(flipped)).toBe('stun_bad_fingerprint');
    const notLast = buildBindingRequest({ transactionId: TXID, username: PACKET, fingerprint: true, extra: [] });
    const extended = new Uint8Array(notLast.length + 8);
    extended.set(notLast); extended.set([0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4], notLast.length);
    extended[2] = (extended.length - 20) >> 8; extended[3] = (extended.length - 20) & 255;
    expect(reasonOf(extended)).toBe('stun_malformed');
  });

  it('other message types, and a Binding request without USERNAME', () => {
    const success = buildBindingSuccess({ transactionId: TXID, mapped: { family: 4, address: '198.51.100.9', port: 1 }, password: 'x' });
    expect(reasonOf(success)).toBe('stun_not_binding_request');
    // A Binding indication (0x0011); FINGERPRINT covers the type, so a flipped type alone is a bad fingerprint.
    const flippedType = good(); flippedType[1] = 0x11;
    expect(reasonOf(flippedType)).toBe('stun_bad_fingerprint');
    const indication = buildBindingRequest({ transactionId: TXID, username: PACKET, fingerprint: false });
    indication[1] = 0x11;
    expect(reasonOf(indication)).toBe('stun_not_binding_request');
    // A Binding request with nothing to unwrap.
    const noUser = buildBindingRequest({ transactionId: TXID, username: '', fingerprint: false });
    noUser[20] = 0x80; noUser[21] = 0x22; // USERNAME becomes SOFTWARE
    expect(reasonOf(noUser)).toBe('stun_no_username');
  });

  it('MESSAGE-INTEGRITY of the wrong size, or an attribute after it other than FINGERPRINT', () => {
    const base = buildBindingRequest({ transactionId: TXID, username: PACKET, password: 'p', fingerprint: false });
    const badMi = Uint8Array.from(base); badMi[badMi.length - 21] = 19;
    expect(reasonOf(badMi)).toBe('stun_malformed');
    const after = new Uint8Array(base.length + 8);
    after.set(base); after.set([0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4], base.length);
    after[2] = (after.length - 20) >> 8; after[3] = (after.length - 20) & 255;
    expect(reasonOf(after)).toBe('stun_malformed');
  });

  it('PRIORITY, USE-CANDIDATE, ICE-CONTROLLING with a wrong length are malformed', () => {
    for (const [type, len] of [[ATTR_PRIORITY, 8], [ATTR_USE_CANDIDATE, 4], [ATTR_ICE_CONTROLLING, 4]] as const) {
      const d = buildBindingRequest({ transactionId: TXID, username: PACKET, extra: [{ type, value: new Uint8Array(len) }] });
      expect(reasonOf(d)).toBe('stun_malformed');
    }
  });

  it('property: arbitrary bytes, and mutations of a real check, never throw and always answer with a named reason', () => {
    const named = (d: Uint8Array) => {
      const r = parseBindingRequest(d);
      return r.ok || ((REJECTION_REASONS as readonly string[]).includes(r.reason) && r.reason.startsWith('stun_') && r.detail.length > 0);
    };
    fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), (d) => named(d)), { numRuns: 3000 });
    const withCookie = fc.uint8Array({ minLength: 0, maxLength: 400 }).map((tail) => {
      const d = new Uint8Array(20 + tail.length);
      d.set([0, 1, (tail.length >> 8) & 255, tail.length & 255, 0x21, 0x12, 0xa4, 0x42], 0);
      d.set(tail, 20);
      return d;
    });
    fc.assert(fc.property(withCookie, (d) => named(d)), { numRuns: 3000 });
    const base = firefoxCheck(PACKET);
    fc.assert(fc.property(fc.integer({ min: 0, max: base.length - 1 }), fc.integer({ min: 1, max: 255 }), (at, x) => {
      const d = Uint8Array.from(base); d[at]! ^= x;
      // FINGERPRINT catches nearly every change; one that re-frames the tail into a well-formed message may still parse.
      return named(d);
    }), { numRuns: 2000 });
  });
});
