// The STUN side of a web knock (../shared/docs/web-knock.md, "The sesame
// web-knock protocol"; RFC 8489 sections 5, 6, 14.2, 14.5, 14.7; RFC 8445
// section 7.2.2 for the USERNAME shape). A browser's ICE connectivity check is
// a STUN Binding request whose USERNAME is `<remote ufrag>:<local ufrag>`; the
// page puts the SPA packet in the remote ufrag. This module recognises such a
// request, unwraps the packet, and builds the authenticated Binding Success
// that acknowledges a granted knock. Pure: bytes in, typed results or named
// rejection reasons out; no I/O, no clock. Only createHmac from node:crypto is
// used (the browser bundle maps it), and plain Uint8Arrays (no Buffer).
import { createHmac } from 'node:crypto';
import { accept, reject, type Result } from './result.js';

export const STUN_MAGIC_COOKIE = 0x2112a442;
export const STUN_HEADER_LENGTH = 20;
export const BINDING_REQUEST = 0x0001;
export const BINDING_SUCCESS = 0x0101;

export const ATTR_USERNAME = 0x0006;
export const ATTR_MESSAGE_INTEGRITY = 0x0008;
export const ATTR_XOR_MAPPED_ADDRESS = 0x0020;
export const ATTR_PRIORITY = 0x0024;
export const ATTR_USE_CANDIDATE = 0x0025;
export const ATTR_SOFTWARE = 0x8022;
export const ATTR_FINGERPRINT = 0x8028;
export const ATTR_ICE_CONTROLLED = 0x8029;
export const ATTR_ICE_CONTROLLING = 0x802a;
/** Chromium's GOOG-NETWORK-INFO (network id and cost). */
export const ATTR_GOOG_NETWORK_INFO = 0xc057;

const FINGERPRINT_XOR = 0x5354554e;

/** Value lengths fixed by the RFCs (8489 section 14, 8445 section 16.1): any other is malformed. */
const FIXED_LENGTH = new Map<number, readonly number[]>([
  [ATTR_MESSAGE_INTEGRITY, [20]],
  [ATTR_FINGERPRINT, [4]],
  [ATTR_PRIORITY, [4]],
  [ATTR_USE_CANDIDATE, [0]],
  [ATTR_ICE_CONTROLLED, [8]],
  [ATTR_ICE_CONTROLLING, [8]],
  [ATTR_XOR_MAPPED_ADDRESS, [8, 20]],
]);
const MI_LENGTH = 20;
/** RFC 8489 14.3: USERNAME is under 513 bytes. */
const MAX_USERNAME = 512;

export interface StunAttribute { type: number; value: Uint8Array }

export interface StunMessage {
  type: number;
  transactionId: Uint8Array;
  attributes: StunAttribute[];
}

export interface BindingRequest extends StunMessage {
  /** USERNAME as text (latin1: every byte one character, so no decoder can fail). */
  username: string;
  /** The SPA packet a web knock carries: USERNAME before its first ':'. */
  packet: string;
}

/**
 * Cheap test: could this datagram be STUN at all? The magic cookie's 0xA4
 * byte is outside base64, so no fwknop packet ever passes it; anything that
 * passes and then fails the full parse is a malformed STUN message.
 */
export function looksLikeStun(d: Uint8Array): boolean {
  return d.length >= STUN_HEADER_LENGTH && readU32(d, 4) === STUN_MAGIC_COOKIE;
}

/** Parse any STUN message: header, attribute framing, FINGERPRINT when present. */
export function parseStun(d: Uint8Array): Result<StunMessage> {
  if (d.length < STUN_HEADER_LENGTH) return reject('stun_malformed', `${d.length} bytes; a STUN header has ${STUN_HEADER_LENGTH}`);
  if (readU32(d, 4) !== STUN_MAGIC_COOKIE) return reject('stun_malformed', 'the magic cookie is not 0x2112A442');
  const type = readU16(d, 0);
  if (type & 0xc000) return reject('stun_malformed', 'the two leading bits of the message type are not zero');
  const length = readU16(d, 2);
  if (length !== d.length - STUN_HEADER_LENGTH) {
    return reject('stun_malformed', `the length field says ${length} bytes of attributes, the datagram carries ${d.length - STUN_HEADER_LENGTH}`);
  }
  if (length % 4 !== 0) return reject('stun_malformed', `${length} bytes of attributes is not a multiple of 4 (bad padding)`);
  const attributes: StunAttribute[] = [];
  let at = STUN_HEADER_LENGTH;
  let sawIntegrity = false;
  while (at < d.length) {
    if (d.length - at < 4) return reject('stun_malformed', `a truncated attribute header at byte ${at}`);
    const aType = readU16(d, at);
    const aLen = readU16(d, at + 2);
    const padded = (aLen + 3) & ~3;
    if (at + 4 + padded > d.length) return reject('stun_malformed', `attribute 0x${hex16(aType)} at byte ${at} runs past the end of the message`);
    const value = d.subarray(at + 4, at + 4 + aLen);
    const fixed = FIXED_LENGTH.get(aType);
    if (fixed && !fixed.includes(aLen)) return reject('stun_malformed', `attribute 0x${hex16(aType)} has ${aLen} bytes instead of ${fixed.join(' or ')}`);
    if (aType === ATTR_FINGERPRINT) {
      if (at + 8 !== d.length) return reject('stun_malformed', 'FINGERPRINT is not the last attribute');
      if (readU32(value, 0) !== fingerprintOf(d.subarray(0, at))) return reject('stun_bad_fingerprint', 'the FINGERPRINT does not match the message (corrupted in transit)');
    } else if (aType === ATTR_MESSAGE_INTEGRITY) {
      sawIntegrity = true;
    } else if (sawIntegrity && aType !== ATTR_FINGERPRINT) {
      // RFC 8489 14.5: only FINGERPRINT may follow MESSAGE-INTEGRITY (others are unprotected).
      return reject('stun_malformed', `attribute 0x${hex16(aType)} follows MESSAGE-INTEGRITY`);
    }
    attributes.push({ type: aType, value });
    at += 4 + padded;
  }
  return accept({ type, transactionId: d.subarray(8, 20), attributes });
}

/** A Binding request carrying a USERNAME, unwrapped; any other STUN message is a named rejection. */
export function parseBindingRequest(d: Uint8Array): Result<BindingRequest> {
  const m = parseStun(d);
  if (!m.ok) return m;
  if (m.value.type !== BINDING_REQUEST) return reject('stun_not_binding_request', `STUN message type 0x${hex16(m.value.type)} is not a Binding request (0x0001)`);
  const user = m.value.attributes.find((a) => a.type === ATTR_USERNAME);
  if (!user) return reject('stun_no_username', 'the Binding request has no USERNAME attribute (no web knock in it)');
  if (user.value.length > MAX_USERNAME) return reject('stun_malformed', `USERNAME has ${user.value.length} bytes; STUN allows at most ${MAX_USERNAME}`);
  const username = latin1(user.value);
  const colon = username.indexOf(':');
  return accept({ ...m.value, username, packet: colon === -1 ? username : username.slice(0, colon) });
}

export interface MappedAddress { family: 4 | 6; address: string; port: number }

export interface BindingSuccessOptions {
  transactionId: Uint8Array;
  /** The request's source: becomes XOR-MAPPED-ADDRESS. */
  mapped: MappedAddress;
  /** The short-term password (the web knock's W); its UTF-8 bytes key MESSAGE-INTEGRITY. */
  password: string;
  /** Attributes placed before XOR-MAPPED-ADDRESS (the RFC 5769 vectors carry SOFTWARE). */
  extra?: StunAttribute[];
  /** Padding byte value (RFC 5769 uses spaces; receivers ignore it). */
  padByte?: number;
}

/** Binding Success: [extra], XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT. */
export function buildBindingSuccess(o: BindingSuccessOptions): Uint8Array {
  const attrs = [...(o.extra ?? []), { type: ATTR_XOR_MAPPED_ADDRESS, value: xorMappedAddress(o.mapped, o.transactionId) }];
  return finishMessage(BINDING_SUCCESS, o.transactionId, attrs, o.password, o.padByte ?? 0);
}

export interface BindingRequestOptions {
  transactionId: Uint8Array;
  username: string;
  /** Attributes after USERNAME (PRIORITY, ICE-CONTROLLING, ...). */
  extra?: StunAttribute[];
  /** The check's short-term password; without it no MESSAGE-INTEGRITY is added. */
  password?: string;
  fingerprint?: boolean;
  padByte?: number;
}

/** A Binding request as an ICE agent sends it (tests and clients other than browsers). */
export function buildBindingRequest(o: BindingRequestOptions): Uint8Array {
  const attrs = [{ type: ATTR_USERNAME, value: latin1Bytes(o.username) }, ...(o.extra ?? [])];
  return finishMessage(BINDING_REQUEST, o.transactionId, attrs, o.password, o.padByte ?? 0, o.fingerprint ?? true);
}

/** RFC 8489 14.5: does MESSAGE-INTEGRITY verify with this password? false when absent. */
export function verifyMessageIntegrity(d: Uint8Array, password: string): boolean {
  const at = findAttributeOffset(d, ATTR_MESSAGE_INTEGRITY);
  if (at === undefined || readU16(d, at + 2) !== MI_LENGTH) return false;
  const expected = integrityOf(d.subarray(0, at), password);
  return equalBytes(expected, d.subarray(at + 4, at + 4 + MI_LENGTH));
}

/** RFC 8489 14.7: is the FINGERPRINT present, last and right? */
export function verifyFingerprint(d: Uint8Array): boolean {
  const at = findAttributeOffset(d, ATTR_FINGERPRINT);
  if (at === undefined || at + 8 !== d.length) return false;
  return readU32(d, at + 4) === fingerprintOf(d.subarray(0, at));
}

/** XOR-MAPPED-ADDRESS of a parsed message, decoded. */
export function readXorMappedAddress(m: StunMessage): MappedAddress | undefined {
  const a = m.attributes.find((x) => x.type === ATTR_XOR_MAPPED_ADDRESS);
  if (!a || a.value.length < 8) return undefined;
  const fam = a.value[1];
  const port = readU16(a.value, 2) ^ (STUN_MAGIC_COOKIE >>> 16);
  const mask = xorMask(m.transactionId);
  if (fam === 0x01 && a.value.length === 8) {
    const b = a.value.subarray(4, 8).map((x, i) => x ^ mask[i]!);
    return { family: 4, address: [...b].join('.'), port };
  }
  if (fam === 0x02 && a.value.length === 20) {
    const b = a.value.subarray(4, 20).map((x, i) => x ^ mask[i]!);
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(((b[i]! << 8) | b[i + 1]!).toString(16));
    return { family: 6, address: compressIPv6(groups), port };
  }
  return undefined;
}

// ---- internals ----

/** Lays out header + attributes, then MESSAGE-INTEGRITY and FINGERPRINT with the length adjustments of RFC 8489 14.5/14.7. */
function finishMessage(type: number, txid: Uint8Array, attrs: StunAttribute[], password: string | undefined, padByte: number, fingerprint = true): Uint8Array {
  if (txid.length !== 12) throw new RangeError('a STUN transaction id has 12 bytes');
  const bodyLen = attrs.reduce((n, a) => n + 4 + ((a.value.length + 3) & ~3), 0);
  const total = STUN_HEADER_LENGTH + bodyLen + (password !== undefined ? 4 + MI_LENGTH : 0) + (fingerprint ? 8 : 0);
  const out = new Uint8Array(total);
  writeU16(out, 0, type);
  writeU32(out, 4, STUN_MAGIC_COOKIE);
  out.set(txid, 8);
  let at = STUN_HEADER_LENGTH;
  for (const a of attrs) {
    writeU16(out, at, a.type);
    writeU16(out, at + 2, a.value.length);
    out.set(a.value, at + 4);
    const padded = (a.value.length + 3) & ~3;
    out.fill(padByte, at + 4 + a.value.length, at + 4 + padded);
    at += 4 + padded;
  }
  if (password !== undefined) {
    // The length covers the message up to the end of MESSAGE-INTEGRITY, not FINGERPRINT.
    writeU16(out, 2, at + 4 + MI_LENGTH - STUN_HEADER_LENGTH);
    const mac = integrityOf(out.subarray(0, at), password, false);
    writeU16(out, at, ATTR_MESSAGE_INTEGRITY);
    writeU16(out, at + 2, MI_LENGTH);
    out.set(mac, at + 4);
    at += 4 + MI_LENGTH;
  }
  if (fingerprint) {
    writeU16(out, 2, total - STUN_HEADER_LENGTH);
    const crc = fingerprintOf(out.subarray(0, at), false);
    writeU16(out, at, ATTR_FINGERPRINT);
    writeU16(out, at + 2, 4);
    writeU32(out, at + 4, crc);
    at += 8;
  }
  writeU16(out, 2, total - STUN_HEADER_LENGTH);
  return out;
}

/**
 * HMAC-SHA1 over the message before MESSAGE-INTEGRITY (`prefix`), its length
 * field set as if the message ended with MESSAGE-INTEGRITY (RFC 8489 14.5).
 * `adjust` false: the caller has already set the length field.
 */
function integrityOf(prefix: Uint8Array, password: string, adjust = true): Uint8Array {
  const head = prefix.slice(0, STUN_HEADER_LENGTH);
  if (adjust) writeU16(head, 2, prefix.length + 4 + MI_LENGTH - STUN_HEADER_LENGTH);
  const mac = createHmac('sha1', utf8Bytes(password)).update(head).update(prefix.subarray(STUN_HEADER_LENGTH)).digest();
  return new Uint8Array(mac.buffer, mac.byteOffset, mac.byteLength);
}

/** CRC-32 of the message before FINGERPRINT, length field covering FINGERPRINT (RFC 8489 14.7), XOR 0x5354554e. */
function fingerprintOf(prefix: Uint8Array, adjust = true): number {
  let crc = 0xffffffff;
  const head = prefix.slice(0, STUN_HEADER_LENGTH);
  if (adjust) writeU16(head, 2, prefix.length + 8 - STUN_HEADER_LENGTH);
  crc = crc32Update(crc, head);
  crc = crc32Update(crc, prefix.subarray(STUN_HEADER_LENGTH));
  return ((crc ^ 0xffffffff) ^ FINGERPRINT_XOR) >>> 0;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32Update(crc: number, data: Uint8Array): number {
  let c = crc;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}

/** Offset of the first attribute of this type, walking a well-framed message. */
function findAttributeOffset(d: Uint8Array, type: number): number | undefined {
  let at = STUN_HEADER_LENGTH;
  while (at + 4 <= d.length) {
    const t = readU16(d, at);
    const len = readU16(d, at + 2);
    if (t === type) return at + 4 + len <= d.length ? at : undefined;
    at += 4 + ((len + 3) & ~3);
  }
  return undefined;
}

function xorMask(txid: Uint8Array): Uint8Array {
  const m = new Uint8Array(16);
  writeU32(m, 0, STUN_MAGIC_COOKIE);
  m.set(txid, 4);
  return m;
}

function xorMappedAddress(a: MappedAddress, txid: Uint8Array): Uint8Array {
  const raw = a.family === 4 ? parseIPv4Bytes(a.address) : parseIPv6Bytes(a.address);
  if (!raw) throw new RangeError(`XOR-MAPPED-ADDRESS: "${a.address}" is not an IPv${a.family} address`);
  const v = new Uint8Array(4 + raw.length);
  v[1] = a.family === 4 ? 0x01 : 0x02;
  writeU16(v, 2, a.port ^ (STUN_MAGIC_COOKIE >>> 16));
  const mask = xorMask(txid);
  for (let i = 0; i < raw.length; i++) v[4 + i] = raw[i]! ^ mask[i]!;
  return v;
}

function parseIPv4Bytes(s: string): Uint8Array | undefined {
  const parts = s.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^[0-9]{1,3}$/.test(p) && Number(p) <= 255)) return undefined;
  return Uint8Array.from(parts.map(Number));
}

function parseIPv6Bytes(s: string): Uint8Array | undefined {
  let text = s;
  let tail: number[] = [];
  const v4 = /^(.*:)([0-9.]+)$/.exec(text);
  if (v4 && v4[2]!.includes('.')) {
    const b = parseIPv4Bytes(v4[2]!);
    if (!b) return undefined;
    tail = [(b[0]! << 8) | b[1]!, (b[2]! << 8) | b[3]!];
    text = v4[1]!.endsWith('::') ? v4[1]! : v4[1]!.slice(0, -1);
  }
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const groups = (h: string) => (h === '' ? [] : h.split(':'));
  const head = groups(halves[0]!);
  const rest = halves.length === 2 ? groups(halves[1]!) : [];
  if (![...head, ...rest].every((g) => /^[0-9a-fA-F]{1,4}$/.test(g))) return undefined;
  const known = head.length + rest.length + tail.length;
  if (halves.length === 1 ? known !== 8 : known > 7) return undefined;
  const words = [...head.map((g) => parseInt(g, 16)), ...new Array<number>(8 - known).fill(0), ...rest.map((g) => parseInt(g, 16)), ...tail];
  const out = new Uint8Array(16);
  words.forEach((w, i) => writeU16(out, i * 2, w));
  return out;
}

function compressIPv6(groups: string[]): string {
  // RFC 5952: the longest run (2+) of zero groups becomes '::'.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best === -1) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  // Constant time for equal lengths (the MACs compared here are always 20 bytes).
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

// fromCharCode.apply takes the typed array as it is (spreading it is ten times slower); USERNAME is at most 512 bytes.
const latin1 = (b: Uint8Array): string => String.fromCharCode.apply(null, b as unknown as number[]);
const latin1Bytes = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff);
const utf8Bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const hex16 = (n: number): string => n.toString(16).padStart(4, '0');
const readU16 = (d: Uint8Array, at: number): number => (d[at]! << 8) | d[at + 1]!;
const readU32 = (d: Uint8Array, at: number): number => ((d[at]! << 24) | (d[at + 1]! << 16) | (d[at + 2]! << 8) | d[at + 3]!) >>> 0;
function writeU16(d: Uint8Array, at: number, v: number): void { d[at] = (v >>> 8) & 0xff; d[at + 1] = v & 0xff; }
function writeU32(d: Uint8Array, at: number, v: number): void { writeU16(d, at, v >>> 16); writeU16(d, at + 2, v & 0xffff); }
