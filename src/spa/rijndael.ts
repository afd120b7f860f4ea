// fwknop's Rijndael layer (fwknop-protocol.md 2.1-2.4): always AES-256; key
// and IV from one MD5 round of OpenSSL's EVP_BytesToKey over passphrase||salt;
// "Salted__" || salt || E(PKCS7(P)) framing with PKCS#7 in every mode, and a
// lenient unpad on decrypt. Legacy mode: passphrase cut/padded to 16 bytes
// with '0'. Ciphers come from node:crypto; nothing here implements one.
import { createCipheriv, createDecipheriv, createHash } from 'node:crypto';
import { accept, reject, type Result } from './result.js';
import type { EncryptionMode } from './types.js';

export const SALTED_MAGIC = Buffer.from('Salted__', 'latin1');
export const MAX_KEY_LENGTH = 32;

const CIPHER: Record<EncryptionMode, string> = {
  cbc: 'aes-256-cbc',
  legacy: 'aes-256-cbc',
  ctr: 'aes-256-ctr',
  cfb: 'aes-256-cfb',
  ofb: 'aes-256-ofb',
  ecb: 'aes-256-ecb',
};

/** The passphrase bytes actually used: legacy mode truncates/pads to 16 with '0'. */
export function effectivePassphrase(key: Uint8Array, mode: EncryptionMode): Buffer {
  const k = Buffer.from(key);
  if (mode !== 'legacy') return k;
  const out = Buffer.alloc(16, 0x30);
  k.copy(out, 0, 0, Math.min(16, k.length));
  return out;
}

/** EVP_BytesToKey(MD5, count = 1): 32-byte key and 16-byte IV. */
export function bytesToKey(passphrase: Uint8Array, salt: Uint8Array): { key: Buffer; iv: Buffer } {
  const parts: Buffer[] = [];
  let prev = Buffer.alloc(0);
  while (parts.reduce((n, p) => n + p.length, 0) < 48) {
    prev = createHash('md5').update(prev).update(passphrase).update(salt).digest();
    parts.push(prev);
  }
  const all = Buffer.concat(parts);
  return { key: all.subarray(0, 32), iv: all.subarray(32, 48) };
}

function pkcs7Pad(data: Buffer): Buffer {
  const n = 16 - (data.length % 16);
  return Buffer.concat([data, Buffer.alloc(n, n)]);
}

/** libfko's lenient unpad: strip only a valid padding, never fail. */
function pkcs7UnpadLenient(data: Buffer): Buffer {
  if (data.length === 0) return data;
  const n = data[data.length - 1]!;
  if (n === 0 || n > 16 || n > data.length) return data;
  for (let i = data.length - n; i < data.length; i++) if (data[i] !== n) return data;
  return data.subarray(0, data.length - n);
}

export function validateKey(key: Uint8Array): string | undefined {
  if (key.length === 0) return 'the encryption key is empty';
  if (key.length > MAX_KEY_LENGTH) return `the encryption key is ${key.length} bytes; fwknop allows at most ${MAX_KEY_LENGTH}`;
  return undefined;
}

/** Encrypt to the raw "Salted__" frame. Throws only on programmer error (bad key/salt length). */
export function rijndaelEncrypt(plaintext: Buffer, key: Uint8Array, mode: EncryptionMode, salt: Uint8Array): Buffer {
  const problem = validateKey(key);
  if (problem) throw new RangeError(problem);
  if (salt.length !== 8) throw new RangeError('salt must be 8 bytes');
  const { key: aesKey, iv } = bytesToKey(effectivePassphrase(key, mode), salt);
  const cipher = createCipheriv(CIPHER[mode], aesKey, mode === 'ecb' ? null : iv);
  cipher.setAutoPadding(false);
  const body = Buffer.concat([cipher.update(pkcs7Pad(plaintext)), cipher.final()]);
  return Buffer.concat([SALTED_MAGIC, salt, body]);
}

/** Decrypt a raw frame (magic not checked, as libfko). */
export function rijndaelDecrypt(raw: Buffer, key: Uint8Array, mode: EncryptionMode): Result<Buffer> {
  if (raw.length <= 16 || raw.length % 16 !== 0) {
    return reject('bad_ciphertext_length', `ciphertext is ${raw.length} bytes; expected a multiple of 16 above 16`);
  }
  const problem = validateKey(key);
  if (problem) return reject('decryption_failed', problem);
  const { key: aesKey, iv } = bytesToKey(effectivePassphrase(key, mode), raw.subarray(8, 16));
  try {
    const decipher = createDecipheriv(CIPHER[mode], aesKey, mode === 'ecb' ? null : iv);
    decipher.setAutoPadding(false);
    const out = Buffer.concat([decipher.update(raw.subarray(16)), decipher.final()]);
    return accept(pkcs7UnpadLenient(out));
  } catch (e) {
    return reject('decryption_failed', `cipher error: ${(e as Error).message}`);
  }
}
