// Browser stand-in for the few node:crypto calls the SPA codec (src/spa/) makes,
// over audited primitives: @noble/hashes (MD5 for fwknop's key derivation, SHA-1/2/3,
// HMAC) and @noble/ciphers (AES-256 in fwknop's modes). The page bundle maps
// `node:crypto` here (scripts/build-web.mjs) so the browser runs the very codec
// the gateway runs. Web Crypto is not used: it lacks MD5 and is absent outside
// a secure context (plain http://), where the page must still work.
import { md5, sha1 } from '@noble/hashes/legacy.js';
import { sha256, sha384, sha512 } from '@noble/hashes/sha2.js';
import { sha3_256, sha3_512 } from '@noble/hashes/sha3.js';
import { hmac } from '@noble/hashes/hmac.js';
import { cbc, cfb, ctr, ecb } from '@noble/ciphers/aes.js';
import { Buffer } from 'buffer';
import type { CHash } from '@noble/hashes/utils.js';

type Hash = CHash;
const HASHES: Record<string, Hash> = {
  md5, sha1, sha256, sha384, sha512, 'sha3-256': sha3_256, 'sha3-512': sha3_512,
};
type Data = string | Uint8Array;
type Encoding = 'utf8' | 'latin1' | 'base64' | 'hex';

function hashFor(name: string): Hash {
  const h = HASHES[name];
  if (!h) throw new Error(`crypto shim: unsupported hash ${name}`);
  return h;
}

function bytes(data: Data, encoding?: Encoding): Uint8Array {
  return typeof data === 'string' ? Buffer.from(data, encoding ?? 'utf8') : data;
}

interface Updatable { update(b: Uint8Array): void; digest(): Uint8Array }

class Digester {
  constructor(private readonly inner: Updatable) {}
  update(data: Data, encoding?: Encoding): this {
    this.inner.update(bytes(data, encoding));
    return this;
  }
  digest(): Buffer;
  digest(encoding: Encoding): string;
  digest(encoding?: Encoding): Buffer | string {
    const out = Buffer.from(this.inner.digest());
    return encoding ? out.toString(encoding) : out;
  }
}

export function createHash(name: string): Digester {
  return new Digester(hashFor(name).create());
}

export function createHmac(name: string, key: Data): Digester {
  return new Digester(hmac.create(hashFor(name), bytes(key)));
}

export function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) throw new RangeError('Input buffers must have the same byte length');
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

export function randomBytes(n: number): Buffer {
  const out = Buffer.alloc(n);
  globalThis.crypto.getRandomValues(out);
  return out;
}

/** Uniform integer in [min, max), by rejection sampling. */
export function randomInt(min: number, max: number): number {
  const range = max - min;
  if (!Number.isSafeInteger(range) || range <= 0 || range > 2 ** 32) throw new RangeError('crypto shim: randomInt range');
  const limit = Math.floor(2 ** 32 / range) * range;
  const word = new Uint32Array(1);
  for (;;) {
    globalThis.crypto.getRandomValues(word);
    if (word[0]! < limit) return min + (word[0]! % range);
  }
}

/** OFB keystream from single-block ECB encryptions (noble has no OFB mode; its cipher objects are single-use). */
function ofbCrypt(key: Uint8Array, iv: Uint8Array, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(data.length);
  let feedback = Uint8Array.from(iv);
  for (let off = 0; off < data.length; off += 16) {
    feedback = ecb(key, { disablePadding: true }).encrypt(feedback);
    for (let i = 0; i < 16 && off + i < data.length; i++) out[off + i] = data[off + i]! ^ feedback[i]!;
  }
  return out;
}

function run(name: string, key: Uint8Array, iv: Uint8Array | null, data: Uint8Array, decrypt: boolean): Uint8Array {
  const m = /^aes-256-(cbc|ctr|cfb|ofb|ecb)$/.exec(name);
  if (!m || key.length !== 32) throw new Error(`crypto shim: unsupported cipher ${name}`);
  const mode = m[1]!;
  if (mode !== 'ecb' && (!iv || iv.length !== 16)) throw new Error('crypto shim: a 16-byte IV is needed');
  if ((mode === 'cbc' || mode === 'ecb') && data.length % 16 !== 0) throw new Error('wrong final block length');
  switch (mode) {
    case 'cbc': { const c = cbc(key, iv!, { disablePadding: true }); return decrypt ? c.decrypt(data) : c.encrypt(data); }
    case 'ecb': { const c = ecb(key, { disablePadding: true }); return decrypt ? c.decrypt(data) : c.encrypt(data); }
    case 'ctr': return ctr(key, iv!).encrypt(data);
    case 'cfb': { const c = cfb(key, iv!); return decrypt ? c.decrypt(data) : c.encrypt(data); }
    default: return ofbCrypt(key, iv!, data);
  }
}

/** node's streaming cipher shape; the codec only calls setAutoPadding(false), one update() and final(). */
class Cipher {
  private readonly chunks: Uint8Array[] = [];
  constructor(private readonly name: string, private readonly key: Uint8Array, private readonly iv: Uint8Array | null, private readonly decrypt: boolean) {}
  setAutoPadding(on: boolean): this {
    if (on) throw new Error('crypto shim: automatic padding is not supported (the codec pads itself)');
    return this;
  }
  update(data: Uint8Array): Buffer {
    this.chunks.push(data);
    return Buffer.alloc(0);
  }
  final(): Buffer {
    return Buffer.from(run(this.name, this.key, this.iv, Buffer.concat(this.chunks), this.decrypt));
  }
}

export function createCipheriv(name: string, key: Uint8Array, iv: Uint8Array | null): Cipher {
  return new Cipher(name, key, iv, false);
}

export function createDecipheriv(name: string, key: Uint8Array, iv: Uint8Array | null): Cipher {
  return new Cipher(name, key, iv, true);
}
