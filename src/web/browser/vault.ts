// Where the page keeps its gateway profiles (docs/web-knock-page.md "Storage"):
// one localStorage entry, either the profiles in clear or, when the user set a
// passphrase, sealed with XChaCha20-Poly1305 (@noble/ciphers) under a key from
// scrypt (@noble/hashes; N=2^15, r=8, p=1, a fresh 16-byte salt and 24-byte
// nonce per save). The associated data binds the box to this format version.
// Keys never leave this entry: no cookie, no network, no log.
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { scryptAsync } from '@noble/hashes/scrypt.js';
import { Buffer } from 'buffer';
import { checkProfile, type WebProfile } from '../link.js';

export const STORAGE_KEY = 'sesame-web-v1';
const AAD = new TextEncoder().encode(STORAGE_KEY);
const SCRYPT = { N: 2 ** 15, r: 8, p: 1, dkLen: 32 } as const;

/** The part of the Web Storage API the vault needs (tests pass a Map-backed one). */
export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface SealedBox { kdf: 'scrypt'; N: number; r: number; p: number; salt: string; nonce: string; box: string }

export type VaultState =
  | { kind: 'empty' }
  | { kind: 'open'; profiles: WebProfile[] }
  | { kind: 'locked'; sealed: SealedBox };

export class VaultError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VaultError';
  }
}

const b64 = (u: Uint8Array): string => Buffer.from(u).toString('base64');
const unb64 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64'));

function profilesFrom(value: unknown): WebProfile[] {
  if (!Array.isArray(value)) throw new VaultError('the stored profiles are damaged; remove them (Forget all) and import the links again');
  return value.map((p) => checkProfile(p as WebProfile));
}

/** Read the stored state. A damaged entry is a VaultError, never silently dropped. */
export function readVault(store: KeyValueStore): VaultState {
  const text = store.getItem(STORAGE_KEY);
  if (text === null) return { kind: 'empty' };
  let doc: { v?: number; profiles?: unknown; sealed?: SealedBox };
  try {
    doc = JSON.parse(text) as typeof doc;
  } catch {
    throw new VaultError('the stored profiles are not valid JSON; remove them (Forget all) and import the links again');
  }
  if (doc.v !== 1) throw new VaultError(`the stored profiles have format ${String(doc.v)}; this page reads format 1 (update the page)`);
  if (doc.sealed) return { kind: 'locked', sealed: doc.sealed };
  return { kind: 'open', profiles: profilesFrom(doc.profiles) };
}

async function keyFor(passphrase: string, salt: Uint8Array, params: { N: number; r: number; p: number }): Promise<Uint8Array> {
  if (passphrase.length === 0) throw new VaultError('the passphrase is empty; type it');
  return scryptAsync(new TextEncoder().encode(passphrase.normalize('NFKC')), salt, { ...params, dkLen: 32 });
}

/** Open a sealed box; a wrong passphrase (or a modified box) is a VaultError. */
export async function unlockVault(sealed: SealedBox, passphrase: string): Promise<WebProfile[]> {
  if (sealed.kdf !== 'scrypt' || sealed.N > 2 ** 20 || sealed.r > 16 || sealed.p > 4) throw new VaultError('the stored profiles use an unknown lock; remove them and import the links again');
  const key = await keyFor(passphrase, unb64(sealed.salt), sealed);
  let plain: Uint8Array;
  try {
    plain = xchacha20poly1305(key, unb64(sealed.nonce), AAD).decrypt(unb64(sealed.box));
  } catch {
    throw new VaultError('wrong passphrase (the profiles stay locked); try again');
  } finally {
    key.fill(0);
  }
  return profilesFrom(JSON.parse(new TextDecoder().decode(plain)));
}

/** Store the profiles, sealed when a passphrase is given. */
export async function writeVault(store: KeyValueStore, profiles: WebProfile[], passphrase?: string): Promise<void> {
  const checked = profiles.map(checkProfile);
  if (passphrase === undefined) {
    store.setItem(STORAGE_KEY, JSON.stringify({ v: 1, profiles: checked }));
    return;
  }
  const salt = globalThis.crypto.getRandomValues(new Uint8Array(16));
  const nonce = globalThis.crypto.getRandomValues(new Uint8Array(24));
  const key = await keyFor(passphrase, salt, SCRYPT);
  const box = xchacha20poly1305(key, nonce, AAD).encrypt(new TextEncoder().encode(JSON.stringify(checked)));
  key.fill(0);
  const sealed: SealedBox = { kdf: 'scrypt', N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p, salt: b64(salt), nonce: b64(nonce), box: b64(box) };
  store.setItem(STORAGE_KEY, JSON.stringify({ v: 1, sealed }));
}

/** Add or replace (by name) one profile in a list, keeping the order. */
export function upsertProfile(list: WebProfile[], profile: WebProfile): WebProfile[] {
  const i = list.findIndex((p) => p.name === profile.name);
  if (i === -1) return [...list, profile];
  const copy = list.slice();
  copy[i] = profile;
  return copy;
}
