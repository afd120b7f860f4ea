// Key generation as `fwknop --key-gen` does it (fwknop-protocol.md 3, 6.7):
// 32 random bytes for Rijndael, an HMAC key sized for its digest, padded
// base64, plus the ~/.fwknoprc stanza and the text Fwknop2 imports from a QR code.
import { randomBytes } from 'node:crypto';
import type { DigestType } from '../spa/types.js';

const DEFAULT_HMAC_LEN: Partial<Record<DigestType, number>> = { md5: 16, sha1: 20, sha256: 64, sha384: 128, sha512: 128, sha3_256: 64, sha3_512: 128 };

export interface GeneratedKeys { keyBase64: string; hmacKeyBase64: string; hmacType: DigestType }

export function generateKeys(opts: { keyLen?: number; hmacKeyLen?: number; hmacType?: DigestType } = {}): GeneratedKeys {
  const hmacType = opts.hmacType ?? 'sha256';
  const keyLen = opts.keyLen ?? 32;
  const hmacLen = opts.hmacKeyLen ?? DEFAULT_HMAC_LEN[hmacType] ?? 64;
  if (!Number.isInteger(keyLen) || keyLen < 1 || keyLen > 32) throw new Error(`--key-len ${keyLen} is out of range (expected 1..32)`);
  if (!Number.isInteger(hmacLen) || hmacLen < 1 || hmacLen > 128) throw new Error(`--hmac-key-len ${hmacLen} is out of range (expected 1..128)`);
  let key = randomBytes(keyLen);
  let hmac = randomBytes(hmacLen);
  while (hmac.equals(key)) hmac = randomBytes(hmacLen);
  const out = { keyBase64: key.toString('base64'), hmacKeyBase64: hmac.toString('base64'), hmacType };
  key = Buffer.alloc(0);
  hmac = Buffer.alloc(0);
  return out;
}

export function keygenLines(k: GeneratedKeys): string {
  return `KEY_BASE64: ${k.keyBase64}\nHMAC_KEY_BASE64: ${k.hmacKeyBase64}\n`;
}

/** The text the Fwknop2 Android app reads from a QR code. */
export function qrPayload(k: GeneratedKeys): string {
  return `KEY_BASE64:${k.keyBase64} HMAC_KEY_BASE64:${k.hmacKeyBase64}`;
}

export function rcStanza(k: GeneratedKeys, name: string, server?: string, access = 'tcp/22'): string {
  if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(name)) throw new Error(`--rc: "${name}" is not a usable stanza name (letters, digits, _ . : -)`);
  const lines = [
    `[${name}]`,
    ...(server ? [`SPA_SERVER          ${server}`] : []),
    `ACCESS              ${access}`,
    `ALLOW_IP            source`,
    `KEY_BASE64          ${k.keyBase64}`,
    `HMAC_KEY_BASE64     ${k.hmacKeyBase64}`,
    `HMAC_DIGEST_TYPE    ${k.hmacType}`,
    `USE_HMAC            Y`,
  ];
  return lines.join('\n') + '\n';
}
