// The inner SPA digest (fwknop-protocol.md 1.5) and the HMAC (section 3).
// The digest type is not signalled in the packet: the receiver infers it from
// the base64 length of the last field, trying SHA-2 before SHA-3 where the
// lengths collide, as libfko does.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { b64encode } from './base64.js';
import type { DigestType } from './types.js';

const NODE_NAME: Record<DigestType, string> = {
  md5: 'md5',
  sha1: 'sha1',
  sha256: 'sha256',
  sha384: 'sha384',
  sha512: 'sha512',
  sha3_256: 'sha3-256',
  sha3_512: 'sha3-512',
};

/** Base64 length (no '=') of each digest / HMAC type. */
export const B64_LENGTH: Record<DigestType, number> = {
  md5: 22,
  sha1: 27,
  sha256: 43,
  sha384: 64,
  sha512: 86,
  sha3_256: 43,
  sha3_512: 86,
};

/** Candidates by base64 length, in the order libfko tries them. */
const BY_LENGTH = new Map<number, DigestType[]>([
  [22, ['md5']],
  [27, ['sha1']],
  [43, ['sha256', 'sha3_256']],
  [64, ['sha384']],
  [86, ['sha512', 'sha3_512']],
]);

export function digestCandidates(b64Length: number): DigestType[] {
  return BY_LENGTH.get(b64Length) ?? [];
}

export function digestB64(type: DigestType, data: string | Uint8Array): string {
  return b64encode(createHash(NODE_NAME[type]).update(data).digest());
}

export function hmacB64(type: DigestType, key: Uint8Array, data: string | Uint8Array): string {
  return b64encode(createHmac(NODE_NAME[type], key).update(data).digest());
}

/** HMAC over the concatenation of two ASCII strings, without building it. */
export function hmacB64Parts(type: DigestType, key: Uint8Array, a: string, b: string): string {
  const s = createHmac(NODE_NAME[type], key).update(a, 'latin1').update(b, 'latin1').digest('base64');
  const eq = s.indexOf('=');
  return eq === -1 ? s : s.slice(0, eq);
}

/** Constant-time equality of two ASCII strings (length leak only). */
export function constantTimeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a, 'latin1');
  const bb = Buffer.from(b, 'latin1');
  if (ab.length !== bb.length) return false;
  return timingSafeEqual(ab, bb);
}
