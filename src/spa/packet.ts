// The SPA wire packet (fwknop-protocol.md sections 0, 2.4, 2.6, 3, 9):
//   wire = b64(Salted__ || salt || AES(P)) without its first 10 chars ("U2FsdGVkX1")
//          || b64(HMAC(hmac_key, "U2FsdGVkX1" || CT))
// Encrypt-then-MAC; the receiver checks the HMAC before it decrypts anything.
// The gateway uses the staged functions (wire sanity, HMAC per candidate rule,
// then decrypt) so that its cheapest checks come first; decodePacket() runs
// them all for one key set.
import { createHash } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import { b64decode, b64encode } from './base64.js';
import { B64_LENGTH, constantTimeEqual, hmacB64, hmacB64Parts } from './digest.js';
import { decodeMessage, encodeMessage, SpaInputError, type SpaMessage, type SpaMessageInput } from './message.js';
import { accept, reject, type Result } from './result.js';
import { rijndaelDecrypt, rijndaelEncrypt, validateKey } from './rijndael.js';
import type { EncryptionMode, HmacType } from './types.js';

export const RIJNDAEL_PREFIX = 'U2FsdGVkX1';
export const MIN_WIRE = 140;
export const MAX_WIRE = 1500;
/** fwknop's 400-character gates (section 2.6). */
export const LONG_PACKET = 400;

export interface SpaKeys {
  /** Rijndael passphrase bytes (1..32). */
  key: Uint8Array;
  mode?: EncryptionMode;
  /** HMAC key; without it no HMAC is added or checked (fwknop without --use-hmac). */
  hmacKey?: Uint8Array;
  hmacType?: HmacType;
}

const WIRE_ALPHABET = /^[A-Za-z0-9+/=]*$/;

/** Cheapest checks of a received payload, before any crypto (section 4 steps 3, 4, 6). */
export function checkWire(wire: string): Result<string> {
  if (wire.length < MIN_WIRE) return reject('too_short', `${wire.length} bytes; an SPA packet has at least ${MIN_WIRE}`);
  if (wire.length > MAX_WIRE) return reject('too_long', `${wire.length} bytes; an SPA packet has at most ${MAX_WIRE}`);
  if (wire.startsWith(RIJNDAEL_PREFIX)) return reject('prefixed', 'the packet starts with the prefix senders strip');
  if (!WIRE_ALPHABET.test(wire)) return reject('not_base64', 'the packet contains a character outside base64');
  return accept(wire);
}

/** Check the HMAC of a sane wire string; on success returns the ciphertext part (prefix restored). */
export function verifyHmac(wire: string, hmacKey: Uint8Array, hmacType: HmacType): Result<string> {
  const n = B64_LENGTH[hmacType];
  if (wire.length <= n) return reject('hmac_mismatch', 'the packet is too short to carry an HMAC');
  // The MAC covers prefix + body; feed them separately so junk costs no string copy.
  const body = wire.slice(0, wire.length - n);
  if (!constantTimeEqual(hmacB64Parts(hmacType, hmacKey, RIJNDAEL_PREFIX, body), wire.slice(wire.length - n))) {
    return reject('hmac_mismatch', 'the HMAC does not match (wrong HMAC key or type, or a modified packet)');
  }
  return accept(RIJNDAEL_PREFIX + body);
}

/** Decrypt and decode the restored ciphertext `full`. */
export function decryptAndDecode(full: string, key: Uint8Array, mode: EncryptionMode = 'cbc'): Result<SpaMessage> {
  if (full.length >= LONG_PACKET) return reject('not_rijndael', `${full.length} characters of ciphertext; fwknop reads that as GPG`);
  const raw = b64decode(full);
  if (!raw) return reject('not_base64', 'the ciphertext is not base64');
  // Only the canonical text of these bytes is accepted: otherwise spare bits in
  // the last character would give one packet several spellings, and each
  // spelling a fresh replay digest (matters for rules without an HMAC).
  if (b64encode(raw) !== full) return reject('not_base64', 'the ciphertext is not canonical base64');
  const dec = rijndaelDecrypt(raw, key, mode);
  if (!dec.ok) return dec;
  const plain = dec.value;
  // libfko's "did decryption work" heuristic: 16 digits then ':'.
  if (plain.length < 17 || plain[16] !== 0x3a || !/^[0-9]{16}$/.test(plain.subarray(0, 16).toString('latin1'))) {
    return reject('decryption_failed', 'decryption failed (wrong key or encryption mode)');
  }
  for (const b of plain) {
    if (b < 0x20 || b > 0x7e) return reject('non_printable', 'the decrypted message contains non-printable bytes');
  }
  return decodeMessage(plain.toString('latin1'));
}

export interface DecodeOptions {
  /** The rule allows command messages: packets of 400+ characters are tried too (fwknop ENABLE_CMD_EXEC). */
  allowLong?: boolean;
}

/** Every step for one key set. Never throws. */
export function decodePacket(wire: string, keys: SpaKeys, opts: DecodeOptions = {}): Result<SpaMessage> {
  const sane = checkWire(wire);
  if (!sane.ok) return sane;
  let full: string;
  if (keys.hmacKey && keys.hmacKey.length > 0) {
    const mac = verifyHmac(wire, keys.hmacKey, keys.hmacType ?? 'sha256');
    if (!mac.ok) return mac;
    full = mac.value;
  } else {
    full = RIJNDAEL_PREFIX + wire;
  }
  if (wire.length >= LONG_PACKET && !opts.allowLong) {
    return reject('too_long_for_stanza', `${wire.length} characters; only rules that allow commands accept packets of ${LONG_PACKET} or more`);
  }
  return decryptAndDecode(full, keys.key, keys.mode ?? 'cbc');
}

export interface EncodedPacket {
  wire: string;
  /** Plaintext length, for diagnostics. */
  plaintextLength: number;
  /** Things a server may refuse (e.g. 400+ characters needs ENABLE_CMD_EXEC on the server). */
  warnings: string[];
}

/** Build a wire packet. Throws SpaInputError on invalid input or a packet no server could decode. */
export function encodePacket(input: SpaMessageInput, keys: SpaKeys, salt: Uint8Array = randomBytes(8)): EncodedPacket {
  const keyProblem = validateKey(keys.key);
  if (keyProblem) throw new SpaInputError(keyProblem);
  const mode = keys.mode ?? 'cbc';
  const hasHmac = !!keys.hmacKey && keys.hmacKey.length > 0;
  if (hasHmac && mode === 'legacy') throw new SpaInputError('legacy encryption mode cannot be used with an HMAC key (fwknop forbids it)');
  if (hasHmac && Buffer.compare(Buffer.from(keys.hmacKey!), Buffer.from(keys.key)) === 0) {
    throw new SpaInputError('the HMAC key must differ from the encryption key');
  }
  if (hasHmac && keys.hmacKey!.length > 128) throw new SpaInputError('the HMAC key is longer than 128 bytes');
  const plain = encodeMessage(input);
  const raw = rijndaelEncrypt(Buffer.from(plain, 'latin1'), keys.key, mode, salt);
  const full = b64encode(raw);
  if (!full.startsWith(RIJNDAEL_PREFIX)) throw new Error('internal: ciphertext lacks the Salted__ prefix');
  if (full.length >= LONG_PACKET) {
    throw new SpaInputError(`the message is too long: its ciphertext is ${full.length} characters and no fwknop server decodes ${LONG_PACKET} or more; shorten the command or port list`);
  }
  const body = full.slice(RIJNDAEL_PREFIX.length);
  const wire = body + (hasHmac ? hmacB64(keys.hmacType ?? 'sha256', keys.hmacKey!, full) : '');
  if (wire.length < MIN_WIRE) throw new SpaInputError(`the packet is ${wire.length} bytes; servers drop packets under ${MIN_WIRE}`);
  if (wire.length > MAX_WIRE) throw new SpaInputError(`the packet is ${wire.length} bytes; servers drop packets over ${MAX_WIRE}`);
  const warnings: string[] = [];
  if (wire.length >= LONG_PACKET) {
    warnings.push(`the packet is ${wire.length} characters: fwknopd only tries it on stanzas with ENABLE_CMD_EXEC (under ${LONG_PACKET} always works)`);
  }
  return { wire, plaintextLength: plain.length, warnings };
}

/** The replay-cache digest of a received payload: b64(SHA-256(wire)), '=' stripped (section 8). */
export function replayDigest(wire: string): string {
  return b64encode(createHash('sha256').update(wire, 'latin1').digest());
}
